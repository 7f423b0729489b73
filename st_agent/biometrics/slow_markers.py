"""Heart, breathing and EDA markers on their own cadence, beside the 0.5 s EEG hops.

:class:`SlowMarkers` recomputes each of them at most every ``hr_update_sec``
(heart, belt) or ``eda_update_sec`` (EDA tonic level) of stream time; windows in
between reuse the last values. Streaming (one window per push) at most one of
them is recomputed per hop, so that no hop pays for all; offline (many windows
per push) the beat search runs once over the whole batch.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np

from st_agent.biometrics.cardiac import BeatTracker, belt_rate, eda_tonic, preload_neurokit
from st_agent.biometrics.montage import Montage

__all__ = ["SlowMarkers"]

logger = logging.getLogger(__name__)


class SlowMarkers:
    """The slow markers of one stream layout.

    Parameters
    ----------
    cfg : EstimatorConfig
        Windows and cadences.
    mont : Montage
        Which rows are heart, EDA and respiration.
    sfreq : float
        Sampling rate, Hz.
    """

    def __init__(self, cfg: Any, mont: Montage, sfreq: float) -> None:
        self.cfg, self.mont, self.sfreq = cfg, mont, float(sfreq)
        self.tracker: BeatTracker | None = None
        if mont.cardiac_type is not None:
            self.tracker = BeatTracker(mont.cardiac_type, sfreq, cfg.hr_window_sec,
                                       cfg.hrv_window_sec, cfg.min_hrv_sfreq,
                                       hrv_update_sec=getattr(cfg, "hrv_update_sec", 0.0))
        self._last: dict[str, tuple[int, dict[str, float]]] = {}  # name -> (end, values)
        self.tasks = [name for name, ok in (("heart", self.tracker is not None),
                                            ("eda", mont.eda.size > 0),
                                            ("belt", mont.resp.size > 0)) if ok]
        if {"heart", "eda"} & set(self.tasks):
            # NeuroKit2 takes seconds to import: load it in the background; live pushes
            # compute heart and EDA markers once it is ready (they need seconds of data
            # anyway), batch pushes wait for it
            if importlib.util.find_spec("neurokit2") is None:
                logger.warning("neurokit2 is not installed (pip install neurokit2): no heart "
                               "or EDA markers")
            else:
                preload_neurokit()

    def update_beats(self, buf: np.ndarray, buf_start: int, r: int, block: bool = True) -> None:
        """Search the heart channel for beats up to buffer position ``r``."""
        tr = self.tracker
        lo = 0 if tr.done is None else max(0, tr.done - tr.margin - buf_start)
        tr.update(buf[self.mont.cardiac[0], lo:r], buf_start + lo, block)

    def features(self, buf: np.ndarray, buf_start: int, end: int, streaming: bool,
                 ) -> dict[str, float]:
        """Markers of the window ending at absolute sample ``end``.

        Parameters
        ----------
        buf : ndarray, shape (n_channels, n_times)
            The estimator's buffer; ``buf[:, 0]`` is sample ``buf_start``.
        buf_start, end : int
            Absolute sample indices.
        streaming : bool
            One window in this push: recompute at most one marker.
        """
        cfg, sfreq = self.cfg, self.sfreq
        every = {"heart": cfg.hr_update_sec, "eda": cfg.eda_update_sec,
                 "belt": cfg.hr_update_sec}
        budget = 1 if streaming else len(self.tasks)
        out: dict[str, float] = {}
        for name in self.tasks:
            last = self._last.get(name)
            due = last is None or not 0 <= end - last[0] < max(1, round(every[name] * sfreq))
            if due and budget > 0:
                budget -= 1
                values = self._compute(name, buf, buf_start, end, streaming)
                last = self._last[name] = (end, values)
            if last is not None:
                out.update(last[1])
        return out

    def _compute(self, name: str, buf: np.ndarray, buf_start: int, end: int, streaming: bool,
                 ) -> dict[str, float]:
        cfg, sfreq, r = self.cfg, self.sfreq, end - buf_start
        if name == "heart":
            if streaming:
                self.update_beats(buf, buf_start, r, block=False)
            return self.tracker.features(end)
        if name == "eda":
            n = round(cfg.eda_window_sec * sfreq)
            tonic = eda_tonic(buf[self.mont.eda[0], max(0, r - n):r], sfreq, block=not streaming)
            return {} if tonic is None else {"eda/tonic_us": tonic}
        n = round(cfg.hrv_window_sec * sfreq)
        rate = belt_rate(buf[self.mont.resp[0], max(0, r - n):r], sfreq)
        return {} if rate is None else {"resp/rate_bpm": rate}
