"""``st-agent dashboard FOLDER``: review a finished session on the dashboard page.

The page of the live dashboard (:mod:`st_agent.live.dashboard_server`), read-only:
every message is rebuilt from the recording
(:func:`st_agent.biometrics.recording.read_session`) and published once, so the plots
show the whole session: the state against the target region, the knobs, band powers
and heart rate (8 s windows every 2 s, as in the report), the phrases (click one to
see its score), the decisions and the control actions. The raw signals are those of
the last :data:`RAW_TAIL_SEC` seconds of the recording (the whole recording at
display rate would be megabytes). Every control is refused (403). Same security as
the live one (loopback, token, cookie, Host/Origin checks).
"""

from __future__ import annotations

import bisect
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tyro

__all__ = ["RAW_TAIL_SEC", "DashboardConfig", "review_hub", "run_dashboard", "serve_review"]

logger = logging.getLogger(__name__)

#: Seconds of raw signal at the end of the recording that the review shows.
RAW_TAIL_SEC = 30.0


@dataclass
class DashboardConfig:
    """Review a finished session on the dashboard page (``st-agent dashboard``)."""

    folder: Annotated[Path, tyro.conf.Positional]
    """Session folder (with session.json)."""
    key_file: Path | None = None
    """Key file of an encrypted session."""
    dashboard_host: str = "127.0.0.1"
    """Address to bind; another than this machine's is allowed, with a warning."""
    dashboard_port: int = 0
    """TCP port; 0 picks a free one."""
    minutes: float = 0.0
    """Serve this long, then exit; 0: until Ctrl-C."""

    def __post_init__(self) -> None:
        from st_agent.live.dashboard import check_dashboard_flags

        if not (Path(self.folder) / "session.json").is_file():
            raise ValueError(f"{self.folder} is not a session folder (no session.json); give "
                             "the folder that `st-agent session` or `st-agent demo` wrote")
        check_dashboard_flags(True, self.dashboard_host, self.dashboard_port)
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, int | float) \
                or not 0 <= self.minutes <= 24 * 60:
            raise ValueError(f"--minutes must be a number in [0, 1440] (0: until Ctrl-C), "
                             f"got {self.minutes!r}")


def _start_onset(events: list[dict[str, Any]]) -> float:
    for e in events:
        if e["kind"] == "marker" and e["payload"].get("label") == "session_start":
            return float(e["onset_sec"])
    return 0.0


def review_hub(folder: str | Path, key_file: str | Path | None = None) -> Any:
    """A read-only :class:`~st_agent.live.dashboard.DashboardHub` holding a recording.

    Parameters
    ----------
    folder : str or Path
        A session folder.
    key_file : str or Path, optional
        Key file of an encrypted session.

    Returns
    -------
    hub : DashboardHub
        Its messages: config, the raw tail, estimates, decisions, phrases, controls,
        a final status and ``end``.
    """
    from st_agent.biometrics.recording import read_session
    from st_agent.contract import SafetyBounds
    from st_agent.live.dashboard import DashboardHub
    from st_agent.live.dashboard_feed import publish_chunk, publish_config
    from st_agent.targets import TARGET_REGIONS

    sess = read_session(folder, key=key_file)
    events, raw = sess.events, sess.raw
    start = _start_onset(events)
    marker = next((e["payload"] for e in events if e["kind"] == "marker"
                   and e["payload"].get("label") == "session_start"), {})
    b = marker.get("bounds", {})
    bounds = SafetyBounds(tuple(b.get("valence", (0, 1))), tuple(b.get("tempo", (0, 1))),
                          tuple(b.get("energy", (0, 1))), float(b.get("max_delta", 0.25)))
    hub = DashboardHub((bounds.valence, bounds.tempo, bounds.energy), ring=200_000,
                       read_only=True)
    names = list(raw.ch_names) if raw is not None else []
    publish_config(hub, channels=names,
                   types=list(raw.get_channel_types()) if raw is not None else [],
                   bounds=bounds, target=str(marker.get("target", "")),
                   targets=list(TARGET_REGIONS), accelerated=False, minutes=0.0,
                   read_only=True, session=Path(folder).name)
    if raw is not None:
        sfreq = float(raw.info["sfreq"])
        data = raw.get_data() * 1e6  # V -> µV, as the live stream
        n_tail = min(data.shape[1], round(RAW_TAIL_SEC * sfreq))
        # the recording starts with the session (its first chunk): t = samples / sfreq
        publish_chunk(hub, data[:, data.shape[1] - n_tail:], sfreq, data.shape[1] / sfreq)
    _publish_estimates(hub, events, raw, start)
    _publish_events(hub, events, start)
    hub.close("review of a finished session")
    return hub


def _publish_estimates(hub: Any, events: list[dict[str, Any]], raw: Any, start: float) -> None:
    """The recorded states, with band powers and heart rate of 8 s windows every 2 s."""
    from st_agent.live.report import _window_features

    states = [e for e in events if e["kind"] == "state"]
    ts = [float(e["onset_sec"]) - start for e in states]
    tw, wf = _window_features(raw) if raw is not None else ([], {})
    calib = next((float(e["onset_sec"]) - start for e in events if e["kind"] == "marker"
                  and e["payload"].get("label") == "calibration_done"), 0.0)

    def num(x: Any) -> float | None:
        x = float(x)
        return round(x, 4) if x == x and abs(x) != float("inf") else None

    for i, t in enumerate(list(tw)):
        t = float(t)
        j = max(0, bisect.bisect_right(ts, t) - 1)
        p = states[j]["payload"] if states else {}
        hub.publish("estimate", t=round(t, 3), valence=num(p.get("valence", 0.0)),
                    arousal=num(p.get("arousal", 0.0)),
                    confidence=num(p.get("confidence", 0.0)), bad=False,
                    calibrating=t < calib, quality=None,
                    bands={k: num(wf[f"eeg/{k}_power"][i]) for k in ("theta", "alpha", "beta")},
                    hr=num(wf["hr/bpm"][i]), br=None)


def _publish_events(hub: Any, events: list[dict[str, Any]], start: float) -> None:
    """Decisions, phrases (with their ABC), controls and the last status."""
    from st_agent.live.dashboard_feed import as_number as _f

    abcs = [e["payload"].get("abc", "") for e in events if e["kind"] == "phrase"]
    last: dict[str, Any] = {}
    for e in events:
        p, t = e["payload"], float(e["onset_sec"]) - start
        if e["kind"] == "decision":
            last = p
            hub.publish("decision", t=_f(t, 3), knobs=[_f(k) for k in p.get("knobs", [])],
                        target=[_f(x) for x in p.get("target", [])[:2]],
                        region=p.get("target_region"), reasons=p.get("reasons", []),
                        controller=p.get("controller", ""))
        elif e["kind"] == "phrase_start":
            i = int(p.get("index", 0))
            hub.publish("phrase", index=i, t=_f(t, 3), end=None,
                        knobs=[_f(k) for k in p.get("knobs", [])], reason=p.get("reason", ""),
                        abc=abcs[i] if i < len(abcs) else "", performer=None)
        elif e["kind"] == "control":
            hub.publish("control", t=_f(p.get("t_session", t), 3), action=p.get("action"),
                        value=p.get("value"))
    end_t = float(events[-1]["onset_sec"]) - start if events else 0.0
    hub.publish("status", t=_f(end_t, 3), phase="ended", signal="-",
                knobs=[_f(k) for k in last.get("knobs", [0.5, 0.5, 0.5])],
                target_name="", target=last.get("target", [0, 0])[:2],
                region=last.get("target_region"), controller=last.get("controller", ""),
                paused=False, override=None, phrases=len(abcs), performer=None)


def serve_review(cfg: DashboardConfig) -> Any:
    """Start serving the review of ``cfg.folder``; return the running server."""
    from st_agent.live.dashboard_server import DashboardServer, is_loopback

    hub = review_hub(cfg.folder, cfg.key_file)
    server = DashboardServer(hub, cfg.dashboard_host, cfg.dashboard_port,
                             allow_remote=not is_loopback(cfg.dashboard_host),
                             title=f"st-agent review {Path(cfg.folder).name}")
    server.start()
    return server


def run_dashboard(cfg: DashboardConfig) -> None:
    """``st-agent dashboard``: print the URL, serve until Ctrl-C (or ``--minutes``)."""
    server = serve_review(cfg)
    sys.stdout.write(f"dashboard: {server.url}\n(review of {cfg.folder}; Ctrl-C ends)\n")
    sys.stdout.flush()
    done = threading.Event()
    try:
        done.wait(timeout=cfg.minutes * 60.0 if cfg.minutes > 0 else None)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace_sec=0.0)
