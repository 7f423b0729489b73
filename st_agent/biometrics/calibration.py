"""Rest calibration that cannot fail silently: baseline, alpha band, marker weights.

The first ``calibration_sec`` of *good* windows (a rest baseline) give each
marker's mean and standard deviation for this listener, the listener's peak
alpha frequency, and the weights of the arousal markers. While that is not
complete, :class:`Calibrator` knows why:

- every ``calibration_warn_sec`` of stream time in which it fell behind (less
  than 80 % of the windows good), it logs a warning naming the gate that
  rejected most windows and its share, e.g. ``calibration 12 of 60 s after
  45 s: 54 % of windows rejected by blink``, and queues the same as an event;
- after ``calibration_timeout_sec`` (default twice ``calibration_sec``) it
  stops waiting: it calibrates on the best data it has, the good windows plus
  the least-bad windows that only failed a *soft* gate (blink, muscle, EMG
  burst: the signal is there, partly covered) ranked by how much of them was
  clean, up to ``calibration_sec``, provided that is at least
  ``min_calibration_sec``. That baseline is marked ``fallback`` and its
  ``confidence`` (good seconds, soft ones counting half, over the seconds
  wanted) multiplies every state's confidence from then on.

:meth:`Calibrator.status` returns a :class:`CalibrationStatus` at any time.

Arousal weights
---------------
Each arousal marker has a prior signed weight (literature direction and size,
:data:`~st_agent.biometrics.estimator.AROUSAL_PRIORS`). What a rest calibration
can justify is which markers enter (those computed in at least half of its
windows) and their scale (each is z-scored by its own rest SD). It cannot tell
which markers *track arousal*: that needs labelled calm and energetic excerpts
(:mod:`~st_agent.biometrics.supervised`). With ``weighting="reliability"`` the
calibration also scales each prior by the marker's rest *reliability*, the
correlation of the marker with itself one marker-window later (non-overlapping
windows); under a one-factor model, z-scored marker = λ·state + noise, that is
about λ² times the state's own autocorrelation, so a marker that is mostly
estimation noise gets a small weight (clipped to [0.1, 1]; with fewer than 10
pairs the factor is 0.5). It is off by default: on simulated listeners
(``benchmarks/bench_listener.py``) it lowered the recovery of arousal, because
at rest the state barely moves and reliability then measures nuisance
fluctuations (heart-rate waves) more than arousal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from st_agent.biometrics.artifacts import GateCounter
from st_agent.biometrics.eeg_markers import alpha_markers, peak_alpha_frequency

__all__ = ["Baseline", "CalibrationStatus", "Calibrator", "EstimatorEvent",
           "reliability_weights"]

logger = logging.getLogger(__name__)

#: Gates whose windows still carry usable signal (used, half-weighted, in a fallback).
SOFT_GATES = ("blink", "muscle", "emg_burst")


@dataclass(frozen=True)
class Baseline:
    """Per-listener marker statistics from the rest calibration.

    Parameters
    ----------
    mean, std : dict of str to float
        Mean and standard deviation of each marker over the rest windows.
    n_windows : int
        Number of windows they come from.
    weights : dict of str to float, optional
        Signed arousal weight per marker (empty: the estimator's priors).
    alpha_band : (float, float), optional
        The listener's alpha band, Hz (None: the default band).
    paf_hz : float, optional
        Peak alpha frequency found in the calibration.
    confidence : float
        Multiplier of every state's confidence: 1 for a complete calibration,
        less after a fallback.
    fallback : bool
        Whether the timeout fallback produced it.
    """

    mean: dict[str, float]
    std: dict[str, float]
    n_windows: int
    weights: dict[str, float] = field(default_factory=dict)
    alpha_band: tuple[float, float] | None = None
    paf_hz: float | None = None
    confidence: float = 1.0
    fallback: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")

    def z(self, name: str, value: float) -> float:
        """z-score of one marker; NaN if the marker has no baseline."""
        mu, sd = self.mean.get(name), self.std.get(name)
        if mu is None or sd is None or not math.isfinite(value):
            return math.nan
        return (value - mu) / sd


@dataclass(frozen=True)
class EstimatorEvent:
    """Something the session should record and show (``StateEstimator.pop_events``).

    ``kind`` is one of ``calibration_warning``, ``calibration_done``,
    ``calibration_fallback``, ``marker_unavailable``; ``detail`` is one
    readable line; ``payload`` JSON-ready numbers.
    """

    kind: str
    t_sec: float
    detail: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationStatus:
    """Where the calibration stands (:meth:`Calibrator.status`).

    ``phase`` is ``calibrating``, ``done``, ``fallback`` (done on the best data
    after the timeout), ``stored`` (a baseline given by the caller) or
    ``disabled`` (``calibration_sec = 0``).
    """

    phase: str
    progress: float
    """Good seconds collected / seconds needed, in [0, 1]."""
    good_sec: float
    needed_sec: float
    elapsed_sec: float
    """Stream seconds since calibration started."""
    rejected_share: float
    """Share of the calibration's windows that the gates rejected."""
    blocking_gate: str | None
    """The gate that rejected most of them (None if none did)."""
    blocking_share: float
    confidence: float
    """Multiplier of the states' confidence this calibration implies."""
    paf_hz: float | None
    alpha_band: tuple[float, float]
    message: str

    @property
    def complete(self) -> bool:
        """Whether states are z-scored against a baseline (or calibration is off)."""
        return self.phase != "calibrating"


def _pair_corr(t: np.ndarray, v: np.ndarray, lag: float, hop: float) -> tuple[float, int]:
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size < 4:
        return math.nan, 0
    j = np.searchsorted(t, t + lag - hop / 2)
    valid = (j < t.size)
    j = np.minimum(j, t.size - 1)
    valid &= np.abs(t[j] - t - lag) <= hop / 2
    if valid.sum() < 3:
        return math.nan, int(valid.sum())
    a, b = v[valid], v[j[valid]]
    if a.std() == 0 or b.std() == 0:
        return math.nan, int(valid.sum())
    return float(np.corrcoef(a, b)[0, 1]), int(valid.sum())


def reliability_weights(rows: list[dict[str, float]], t_sec: Iterable[float],
                        priors: dict[str, float], lags_sec: dict[str, float], hop_sec: float,
                        use_reliability: bool = True,
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """Scale prior arousal weights by each marker's reliability at rest (module docstring).

    Parameters
    ----------
    rows : list of dict
        Marker values of the calibration windows, in time order.
    t_sec : iterable of float
        Window end times, s, one per row.
    priors : dict of str to float
        Signed prior weight per marker.
    lags_sec : dict of str to float
        Each marker's own window length (the lag of its reliability), s.
    hop_sec : float
        Spacing of the windows, s.
    use_reliability : bool
        False: keep the priors (markers absent from the calibration still drop out).

    Returns
    -------
    weights : dict of str to float
        Markers present in at least half the windows, with their weights.
    notes : dict of str to str
        Per marker, how its weight was set (or why it was left out).
    """
    t = np.asarray(list(t_sec), dtype=float)
    weights, notes = {}, {}
    for key, prior in priors.items():
        v = np.array([r.get(key, math.nan) for r in rows], dtype=float)
        if prior == 0:
            notes[key] = "prior weight 0"
            continue
        if v.size == 0 or np.isfinite(v).mean() < 0.5:
            notes[key] = "absent from most calibration windows: not in arousal"
            continue
        r, n = _pair_corr(t, v, lags_sec.get(key, hop_sec), hop_sec)
        if not use_reliability:
            factor = 1.0
            notes[key] = (f"prior weight (rest reliability r = {r:.2f} over {n} pairs, "
                          "not used)")
        elif n < 10 or not math.isfinite(r):
            factor = 0.5
            notes[key] = f"prior x 0.5 (only {n} window pairs to estimate reliability)"
        else:
            factor = float(np.clip(r, 0.1, 1.0))
            notes[key] = f"prior x {factor:.2f} (rest reliability r = {r:.2f}, {n} pairs)"
        weights[key] = prior * factor
    return weights, notes


@dataclass
class _Window:
    t_sec: float
    features: dict[str, float]
    alpha_psd: np.ndarray | None
    score: float  # clean share for soft-rejected windows, 1 for good ones


class Calibrator:
    """Collects rest windows and builds a :class:`Baseline` (module docstring).

    Parameters
    ----------
    cfg : EstimatorConfig
        ``calibration_sec``, ``calibration_timeout_sec``, ``min_calibration_sec``,
        ``calibration_warn_sec``, ``hop_sec`` and the marker windows.
    priors : dict of str to float
        Signed prior arousal weights.
    lags_sec : dict of str to float
        Each marker's own window length, s.
    """

    def __init__(self, cfg: Any, priors: dict[str, float], lags_sec: dict[str, float]) -> None:
        self.cfg, self.priors, self.lags = cfg, priors, lags_sec
        self.good: list[_Window] = []
        self.soft: list[_Window] = []
        self.gates = GateCounter()
        self.t_first: float | None = None
        self.t_last = 0.0
        self._next_warn: float | None = None
        self.events: list[EstimatorEvent] = []
        self.notes: dict[str, str] = {}
        self.freqs: np.ndarray | None = None

    @property
    def needed(self) -> int:
        """Good windows needed."""
        return max(2, math.ceil(self.cfg.calibration_sec / self.cfg.hop_sec))

    @property
    def timeout_sec(self) -> float:
        """Stream seconds after which the fallback applies."""
        t = self.cfg.calibration_timeout_sec
        return 2.0 * self.cfg.calibration_sec if t is None else t

    def add(self, t_sec: float, features: dict[str, float], quality: dict[str, Any], bad: bool,
            alpha_psd: np.ndarray | None, freqs: np.ndarray | None) -> Baseline | None:
        """Take one window; return the baseline when calibration completes."""
        if self.t_first is None:
            self.t_first = t_sec - self.cfg.window_sec
            self._next_warn = t_sec + self.cfg.calibration_warn_sec
        self.t_last = t_sec
        self.freqs = freqs if freqs is not None else self.freqs
        self.gates.add(quality)
        if not bad:
            self.good.append(_Window(t_sec, features, alpha_psd, 1.0))
        elif not any(quality.get(g) for g in ("nonfinite", "bad_channels")):
            self.soft.append(_Window(t_sec, features, alpha_psd,
                                     1.0 - float(quality.get("eye_excluded", 0.0))))
        if len(self.good) >= self.needed:
            return self._finish(self.good, fallback=False)
        elapsed = t_sec - self.t_first
        n_min = math.ceil(self.cfg.min_calibration_sec / self.cfg.hop_sec)
        if elapsed >= self.timeout_sec and len(self.good) + len(self.soft) >= max(n_min, 2):
            best = sorted(self.soft, key=lambda w: -w.score)[:self.needed - len(self.good)]
            return self._finish(sorted(self.good + best, key=lambda w: w.t_sec), fallback=True)
        if self._next_warn is not None and t_sec >= self._next_warn:
            self._next_warn = t_sec + self.cfg.calibration_warn_sec
            self._warn_if_behind(t_sec, elapsed)
        return None

    def _warn_if_behind(self, t_sec: float, elapsed: float) -> None:
        rep = self.gates.report()
        if rep.n_windows == 0 or len(self.good) >= 0.8 * rep.n_windows:
            return
        st = self.status()
        logger.warning("%s", st.message)
        self.events.append(EstimatorEvent("calibration_warning", t_sec, st.message, {
            "progress": round(st.progress, 3), "elapsed_sec": round(elapsed, 1),
            "gates": rep.as_dict()}))

    def _alpha_band(self, windows: list[_Window]) -> tuple[tuple[float, float] | None,
                                                           float | None]:
        rows = [w.alpha_psd for w in windows if w.alpha_psd is not None]
        if not self.cfg.individual_alpha or not rows or self.freqs is None:
            return None, None
        mean = np.nanmean(np.vstack(rows), axis=0)
        paf, why = peak_alpha_frequency(self.freqs, mean)
        if paf is None:
            self.notes["eeg/paf_hz"] = why + "; alpha band stays 8-13 Hz"
            logger.warning("peak alpha frequency: %s", self.notes["eeg/paf_hz"])
            return None, None
        self.notes["eeg/paf_hz"] = f"{paf:.2f} Hz ({why})"
        return (paf - 2.0, paf + 2.0), paf

    def _finish(self, windows: list[_Window], fallback: bool) -> Baseline:
        band, paf = self._alpha_band(windows)
        rows = [dict(w.features) for w in windows]
        if band is not None:
            for row, w in zip(rows, windows, strict=True):
                if w.alpha_psd is not None:
                    for k, v in alpha_markers(w.alpha_psd[None], self.freqs, band).items():
                        row[k] = float(v[0])
        mean, std = {}, {}
        for k in sorted(set().union(*rows)):
            v = np.array([r[k] for r in rows if k in r and math.isfinite(r[k])])
            if v.size >= 2:
                mean[k] = float(v.mean())
                std[k] = float(max(v.std(ddof=1), 1e-6 * abs(v.mean()), 1e-12))
        weights, notes = reliability_weights(rows, [w.t_sec for w in windows], self.priors,
                                             self.lags, self.cfg.hop_sec,
                                             self.cfg.weighting == "reliability")
        self.notes.update(notes)
        good_ids = {id(w) for w in self.good}
        n_good = sum(id(w) in good_ids for w in windows)
        conf = 1.0 if not fallback else min(1.0, (n_good + 0.5 * (len(windows) - n_good))
                                            / self.needed)
        base = Baseline(mean, std, len(windows), weights, band, paf, float(conf), fallback)
        kind = "calibration_fallback" if fallback else "calibration_done"
        rep = self.gates.report()
        msg = (f"calibration {'fallback' if fallback else 'done'}: {len(windows)} windows "
               f"({len(windows) * self.cfg.hop_sec:.0f} s) after {self.t_last - self.t_first:.0f}"
               f" s; {rep.summary()}; confidence x {conf:.2f}; alpha band "
               f"{(band or self.cfg.bands['alpha'])[0]:.1f}-"
               f"{(band or self.cfg.bands['alpha'])[1]:.1f} Hz")
        (logger.warning if fallback else logger.info)("%s", msg)
        self.events.append(EstimatorEvent(kind, self.t_last, msg, {
            "n_windows": len(windows), "confidence": round(conf, 3), "paf_hz": paf,
            "weights": {k: round(v, 3) for k, v in weights.items()}, "gates": rep.as_dict()}))
        return base

    def status(self, baseline: Baseline | None = None, phase: str | None = None,
               ) -> CalibrationStatus:
        """Progress, what blocks it, and the confidence it implies.

        Parameters
        ----------
        baseline : Baseline, optional
            The baseline in use, once there is one.
        phase : str, optional
            ``stored`` or ``disabled`` when the caller knows better.
        """
        if baseline is not None or phase == "disabled":
            return self._done_status(baseline, phase)
        cfg = self.cfg
        rep = self.gates.report()
        gate = rep.worst_gate()
        good_sec = len(self.good) * cfg.hop_sec
        needed = self.needed * cfg.hop_sec
        elapsed = (self.t_last - self.t_first) if self.t_first is not None else 0.0
        msg = (f"calibration {good_sec:.0f} of {needed:.0f} s after {elapsed:.0f} s")
        if gate is not None:
            msg += (f": {100 * rep.rejected_share:.0f} % of windows rejected, most by {gate} "
                    f"({100 * rep.share(gate):.0f} %)")
        left = self.timeout_sec - elapsed
        msg += (f"; falls back to the best {needed:.0f} s available in {left:.0f} s"
                if left > 0 else "; waiting for at least "
                f"{cfg.min_calibration_sec:g} s of usable windows")
        return CalibrationStatus("calibrating", min(1.0, good_sec / needed), good_sec, needed,
                                 elapsed, rep.rejected_share, gate,
                                 rep.share(gate) if gate else 0.0, 0.0, None,
                                 tuple(cfg.bands["alpha"]), msg)

    def _done_status(self, baseline: Baseline | None, phase: str | None) -> CalibrationStatus:
        cfg = self.cfg
        rep = self.gates.report()
        gate = rep.worst_gate()
        band = tuple(cfg.bands["alpha"])
        if baseline is None:
            return CalibrationStatus("disabled", 1.0, 0.0, 0.0, 0.0, 0.0, None, 0.0, 1.0, None,
                                     band, "calibration disabled (calibration_sec = 0): "
                                     "states are not relative to a rest baseline")
        phase = phase or ("fallback" if baseline.fallback else "done")
        band = baseline.alpha_band or band
        sec = baseline.n_windows * cfg.hop_sec
        msg = {"stored": f"stored baseline of {baseline.n_windows} windows",
               "fallback": f"calibrated on the best {sec:.0f} s available after the timeout "
                           f"({rep.summary()}); confidence x {baseline.confidence:.2f}",
               "done": f"calibrated on {sec:.0f} s of rest ({rep.summary()})"}[phase]
        return CalibrationStatus(phase, 1.0, sec, self.needed * cfg.hop_sec,
                                 (self.t_last - self.t_first) if self.t_first is not None else 0.0,
                                 rep.rejected_share, gate, rep.share(gate) if gate else 0.0,
                                 baseline.confidence, baseline.paf_hz, band, msg)
