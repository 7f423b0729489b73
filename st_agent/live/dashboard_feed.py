"""What a session publishes to its dashboard (:class:`~st_agent.live.dashboard.DashboardHub`).

Each function turns one thing the loop has at hand (a chunk, an estimate, a phrase, a
decision, a status) into one small message of plain JSON values and publishes it.
They run in the loop's thread, so they stay cheap: the raw signals are decimated to
about 60 samples per second and at most :data:`SIGNAL_RATE_HZ` chunks per wall second
are sent (an accelerated session reads far more), floats are rounded, non-finite
numbers become ``null`` (the page's ``JSON.parse`` accepts no NaN).

Message kinds: ``config`` (once), ``signal``, ``estimate``, ``calibration``,
``decision``, ``phrase``, ``status``, ``control`` and ``end``; the page
(:mod:`st_agent.live.dashboard_page`) draws each.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from st_agent.live.dashboard import DashboardHub

__all__ = ["SIGNAL_RATE_HZ", "SignalThrottle", "as_number", "publish_chunk", "publish_config",
           "publish_decision", "publish_estimate", "publish_phrase", "publish_status",
           "region_of"]

#: Most raw-signal messages per wall-clock second (the rest are skipped for the page).
SIGNAL_RATE_HZ = 20.0
_DISPLAY_HZ = 62.5  # raw samples per second the page draws
_QUALITY_FLAGS = ("blink", "spikes", "muscle", "emg_burst", "bad_channels", "nonfinite")


def _f(x: Any, nd: int = 4) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, nd) if math.isfinite(x) else None


def as_number(x: Any, nd: int = 4) -> float | None:
    """``x`` rounded to ``nd`` decimals, or None when it is not a finite number."""
    return _f(x, nd)


def region_of(target: Any) -> list[float] | None:
    """``[v_lo, v_hi, a_lo, a_hi]`` of a target point's region, or None for a bare point."""
    region = getattr(target, "region", None)
    return None if region is None else [_f(x) for x in region]


def publish_config(hub: DashboardHub, *, channels: list[str], types: list[str],
                   bounds: Any, target: str, targets: list[str], accelerated: bool,
                   minutes: float, read_only: bool = False, **extra: Any) -> None:
    """The session's fixed facts: channels, the therapist's bounds, targets, clock."""
    hub.publish("config", channels=list(channels), types=list(types),
                ranges=[list(map(_f, r)) for r in (bounds.valence, bounds.tempo,
                                                    bounds.energy)],
                max_delta=_f(bounds.max_delta), target=target, targets=list(targets),
                accelerated=bool(accelerated), minutes=_f(minutes), read_only=read_only,
                **extra)


class SignalThrottle:
    """At most :data:`SIGNAL_RATE_HZ` signal messages per wall second."""

    def __init__(self) -> None:
        self._next = 0.0

    def due(self) -> bool:
        """Whether a signal message may go now (and count it)."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 1.0 / SIGNAL_RATE_HZ
        return True


def publish_chunk(hub: DashboardHub, data: np.ndarray, sfreq: float, t_end: float) -> None:
    """The raw signals of one chunk, decimated (µV; one list per channel).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        The chunk, µV (BrainFlow units).
    sfreq : float
        Sampling rate, Hz.
    t_end : float
        Session time at the chunk's end, s.
    """
    step = max(1, round(sfreq / _DISPLAY_HZ))
    dec = np.asarray(data, dtype=np.float64)[:, ::step]
    dec = np.where(np.isfinite(dec), np.round(dec, 1), np.nan)
    chans = [[None if math.isnan(x) else x for x in row] for row in dec.tolist()]
    hub.publish("signal", t=_f(t_end, 3), dt=_f(step / sfreq, 5), chans=chans)


def publish_estimate(hub: DashboardHub, est: Any, t_session: float,
                     calibration: Any = None) -> None:
    """One estimate: state, its quality, band powers, heart and breathing rate.

    ``calibration`` (a :class:`~st_agent.biometrics.calibration.CalibrationStatus`,
    while calibrating) is published as a ``calibration`` message too.
    """
    s, q, f = est.state, est.quality, est.features
    quality = {k: bool(q.get(k)) for k in _QUALITY_FLAGS}
    quality["flat"] = [str(c) for c in q.get("flat", [])]
    quality["saturated"] = [str(c) for c in q.get("saturated", [])]
    quality["good_fraction"] = _f(q.get("good_fraction"), 3)
    hub.publish("estimate", t=_f(t_session, 3), valence=_f(s.valence), arousal=_f(s.arousal),
                confidence=_f(s.confidence, 3), bad=bool(est.bad),
                calibrating=bool(q.get("calibrating")), quality=quality,
                bands={b: _f(f.get(f"eeg/{b}_power"), 3) for b in ("theta", "alpha", "beta")},
                hr=_f(f.get("hr/bpm"), 2), br=_f(f.get("resp/rate_bpm"), 2))
    if calibration is not None:
        hub.publish("calibration", t=_f(t_session, 3), phase=calibration.phase,
                    progress=_f(calibration.progress, 3), message=calibration.message)


def publish_decision(hub: DashboardHub, t_session: float, knobs: Any, target: Any,
                     reasons: list[str], controller: str) -> None:
    """A decision: the next knobs, the target (point and region) and why."""
    hub.publish("decision", t=_f(t_session, 3), knobs=[_f(k) for k in knobs.as_tuple()],
                target=[_f(x) for x in tuple(target)[:2]], region=region_of(target),
                reasons=[str(w) for w in reasons], controller=controller)


def publish_phrase(hub: DashboardHub, index: int, start: float, end: float, knobs: Any,
                   reason: str, abc: str, performer: int | None = None) -> None:
    """A phrase starts: its time, knobs, reason and ABC score (rendered by the page)."""
    hub.publish("phrase", index=int(index), t=_f(start, 3), end=_f(end, 3),
                knobs=[_f(k) for k in knobs.as_tuple()], reason=str(reason), abc=str(abc),
                performer=performer)


def publish_status(hub: DashboardHub, t_session: float, *, phase: str, signal: str,
                   knobs: Any, target_name: str, target: Any, controller: str,
                   paused: bool, override: dict[str, float] | None, phrases: int,
                   performer: int | None = None) -> None:
    """Once per status tick: where the session stands, and what the controls hold."""
    hub.publish("status", t=_f(t_session, 3), phase=phase, signal=signal,
                knobs=[_f(k) for k in knobs.as_tuple()], target_name=target_name,
                target=[_f(x) for x in tuple(target)[:2]], region=region_of(target),
                controller=controller, paused=bool(paused), override=override,
                phrases=int(phrases), performer=performer)
