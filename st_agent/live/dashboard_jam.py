"""The live dashboard of a jam (``st-agent jam --dashboard``).

The page of :mod:`st_agent.live.dashboard_server` with one row per performer: their
estimated state against their target region, their signal and their knobs (a
``performer`` message per performer, twice a second of session time), the phrases as
they play with the score of the current one (all voices), and two controls: **fade
out and stop** (the loop ends at its next turn; the live player fades out) and
**markers/notes** (recorded in every performer's recording and sent to the outputs).
Knob overrides, target changes and pause are single-listener controls: a jam refuses
them (400, naming the two it takes). Each applied action is a ``control`` event in
every performer's recording (``source="dashboard"``), so each performer's report lists
it.

:class:`~st_agent.live.jam_loop.JamLoop` calls :func:`jam_dashboard_step` once per turn
and :func:`publish_jam_phrase` when a phrase starts (where the jam loop publishes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from st_agent.live.dashboard import DashboardHub
from st_agent.live.dashboard_feed import as_number, publish_config, region_of
from st_agent.targets import TARGET_REGIONS

__all__ = ["JAM_ACTIONS", "jam_dashboard_step", "publish_jam_phrase", "start_jam_dashboard",
           "stop_jam_dashboard"]

logger = logging.getLogger(__name__)

#: What a jam's dashboard can do.
JAM_ACTIONS = ("stop", "marker")
_EVERY_SEC = 0.5


def start_jam_dashboard(cfg: Any, loop: Any, name: str,
                        on_dashboard: Callable[[str], None] | None = None) -> Any:
    """Serve the jam's dashboard (``cfg.dashboard``): set ``loop.hub``; return the server.

    Returns None (and does nothing) without ``cfg.dashboard``.
    """
    if not cfg.dashboard:
        return None
    from st_agent.contract import SafetyBounds
    from st_agent.live.dashboard_server import DashboardServer, is_loopback

    n = len(loop.perf)
    hub = DashboardHub(performers=n, actions=JAM_ACTIONS)
    publish_config(hub, channels=[], types=[], bounds=SafetyBounds(max_delta=cfg.max_delta),
                   target=cfg.targets, targets=list(TARGET_REGIONS),
                   accelerated=cfg.accelerated, minutes=cfg.minutes, performers=n,
                   actions=list(JAM_ACTIONS), session=name)
    server = DashboardServer(hub, cfg.dashboard_host, cfg.dashboard_port,
                             allow_remote=not is_loopback(cfg.dashboard_host),
                             title=f"st-agent jam {name}")
    url = server.start()
    loop.hub = hub
    loop.dash_next = 0.0
    if on_dashboard is not None:
        on_dashboard(url)
    return server


def stop_jam_dashboard(loop: Any, server: Any) -> None:
    """The jam closes: the page gets ``end``, then the server stops."""
    if server is None:
        return
    loop.hub.close(loop.stop_reason)
    server.stop()


def jam_dashboard_step(loop: Any, now: float) -> None:
    """One turn: apply the controls waiting (record them), publish each performer."""
    hub = loop.hub
    for a in hub.drain():
        delay_ms = (time.time() - a.received_wall) * 1e3
        for p in loop.perf:
            p.recorder.write_event("control", None, t_session=now, action=a.action,
                                   value=a.value, source="dashboard", delay_ms=delay_ms)
        if a.action == "stop":
            loop.stop_reason = "stopped from the dashboard (fade out)"
            loop.dash_stop = True
        else:
            loop._output_failures(loop.outputs.marker(now, f"note: {a.value}"))
        hub.publish("control", t=round(now, 3), action=a.action, value=a.value)
        logger.info("t=%.1fs jam dashboard: %s %s", now, a.action, a.value or "")
    if now < loop.dash_next:
        return
    loop.dash_next = now + _EVERY_SEC
    t_rel = now - (loop.calibrated_at if loop.calibrated_at is not None else now)
    for i, p in enumerate(loop.perf):
        s = p.latest
        target = loop.targets[i].at(t_rel)
        hub.publish("performer", t=as_number(now, 3), performer=i,
                    valence=as_number(s.valence) if s is not None else None,
                    arousal=as_number(s.arousal) if s is not None else None,
                    confidence=as_number(s.confidence, 3) if s is not None else None,
                    signal=p.signal, knobs=[as_number(k) for k in loop.knobs[i]],
                    target=[as_number(x) for x in tuple(target)[:2]],
                    region=region_of(target), target_name=loop.targets[i].name,
                    phase="calibrating" if loop.calibrated_at is None else "music")


def publish_jam_phrase(loop: Any, t: float, phrase: Any, reasons: list[list[str]]) -> None:
    """A jam phrase starts: its time, each performer's knobs and reasons, the score."""
    loop.hub.publish("phrase", index=len(loop.played) - 1, t=as_number(t, 3), end=None,
                     knobs=[as_number(k) for k in loop.knobs.mean(axis=0)],
                     reason=" | ".join(f"{i}: {'; '.join(r)}" for i, r in enumerate(reasons)),
                     abc=str(phrase.abc), performer=None)
