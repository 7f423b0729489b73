"""Cardiac, respiration and EDA markers: NeuroKit2 for the signal work, numpy for the rest.

Beats
-----
:class:`BeatTracker` finds the beats of one ECG or PPG channel *incrementally*:
every call cleans and searches only the samples that arrived since the last
one, plus ``margin_sec`` of context on each side, with NeuroKit2 (Makowski et
al. 2021): the filters of ``ecg_clean`` then ``ecg_findpeaks`` (method
``"neurokit"``; what ``ecg_peaks`` calls), or those of ``ppg_clean`` then
``ppg_findpeaks`` (Elgendi et al. 2013). The cleaning filters are NeuroKit2's own, designed once
(:mod:`~st_agent.biometrics.filters`; NeuroKit2 designs them on every call). Beats in the last
``margin_sec`` wait for the next call (filter edges), so markers lag the signal
by that much. The estimator calls it every ``hr_update_sec``; one call on 3 s
of 250-500 Hz ECG costs about 3 ms, where NeuroKit2 on the whole 32 s buffer
every hop would cost 15-30 ms and break the 10 ms decision budget.

Markers (from the beats before the window's end)
------------------------------------------------
==========================  ==========================================================
``hr/bpm``                  60 / mean RR over the last ``hr_window_sec``
``hr/rmssd_ms``             RMSSD over the last ``hrv_window_sec``;
                            ``hr/ln_rmssd`` its natural log (arousal uses it)
``hr/hf_ms2``               high-frequency (0.15-0.40 Hz) power of the RR series
                            (Task Force 1996), ``hr/ln_hf`` its log
``resp/rate_bpm``           breaths per minute: the peak in 0.12-0.5 Hz of the mean
                            normalised spectrum of the RR series (respiratory sinus
                            arrhythmia) and of the beat amplitudes (respiratory
                            amplitude modulation); fusing both modulations is more
                            robust than either (Charlton et al. 2016). From a
                            respiration belt (type ``resp``) when the montage has one
``eda/tonic_us``            tonic skin conductance, µS: NeuroKit2 ``eda_clean`` +
                            ``eda_phasic(method="smoothmedian")`` over the last
                            ``eda_window_sec``, mean of the last 2 s
==========================  ==========================================================

RR intervals outside 0.33-1.5 s (40-180 bpm), or more than 20 % from the
median of the window (missed or extra beats; Malik et al. 1989), or spanning a
gap, are left out. The spectra use the RR series interpolated at 4 Hz, linearly
detrended, Hann-windowed. 0.12 Hz (7 breaths/min), not 0.1 Hz, is the floor of
the breathing search, so that the 0.1 Hz Mayer wave in heart rate is not taken
for breathing (assumption: slower breathing than 7/min is not measured).

Beat-to-beat markers (RMSSD, HF, breathing) need beat times finer than their
size: a peak time quantised at ``1/fs`` adds an error of SD ``0.71/fs`` to each
successive RR difference, 7 ms at 100 Hz, 28 ms at 25 Hz, as large as a resting
RMSSD (20-50 ms). So below ``min_hrv_sfreq`` (100 Hz) only ``hr/bpm`` is
computed, and the tracker says why.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from collections import deque
from typing import Any

import numpy as np

from st_agent.biometrics.filters import neurokit_clean

__all__ = ["BeatTracker", "belt_rate", "eda_tonic", "rr_spectrum"]

logger = logging.getLogger(__name__)

RESP_BAND = (0.12, 0.5)
HF_BAND = (0.15, 0.40)
RR_RANGE = (0.33, 1.5)


@functools.lru_cache(maxsize=1)
def _neurokit() -> Any:
    """NeuroKit2, imported once (it takes seconds: only when a heart channel appears)."""
    import neurokit2

    return neurokit2


class NeuroKitLoading(RuntimeError):
    """NeuroKit2 is still being imported in the background (a live stream must not wait)."""


_PRELOAD: list[threading.Thread] = []


def preload_neurokit() -> None:
    """Start importing NeuroKit2 in a background thread (idempotent).

    Its import takes seconds; a live estimator starts it when a heart or EDA
    channel appears and computes those markers once it is ready, so the loop
    never stalls on it.
    """
    if not _PRELOAD:
        def load() -> None:
            try:
                _neurokit()
            except ImportError:  # reported by the first caller that needs it
                pass

        thread = threading.Thread(target=load, name="neurokit2-import", daemon=True)
        _PRELOAD.append(thread)
        thread.start()


def neurokit(block: bool = True) -> Any:
    """NeuroKit2; with ``block=False`` raise :class:`NeuroKitLoading` while it is loading.

    Raises
    ------
    ImportError
        When NeuroKit2 is not installed.
    NeuroKitLoading
        ``block=False`` and the background import has not finished.
    """
    if _PRELOAD and _PRELOAD[0].is_alive():
        if not block:
            raise NeuroKitLoading("NeuroKit2 is loading")
        # wait for the background import rather than import beside it: two threads
        # importing the same package can be handed a half-initialised module (Python's
        # import-deadlock escape), seen as "neurokit2 has no attribute ecg_findpeaks"
        _PRELOAD[0].join()
    return _neurokit()


def neurokit_version() -> str | None:
    """The installed NeuroKit2 version, or None."""
    try:
        return str(_neurokit().__version__)
    except ImportError:
        return None


def rr_spectrum(t_sec: np.ndarray, values: np.ndarray, fs: float = 4.0, n_fft: int = 1024,
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Power spectrum of an unevenly sampled beat series.

    Parameters
    ----------
    t_sec : ndarray, shape (n,)
        Beat times, s, increasing.
    values : ndarray, shape (n,)
        One value per beat (RR interval in ms, or beat amplitude).
    fs : float
        Interpolation rate, Hz.
    n_fft : int
        FFT length (zero-padded; the true resolution is 1 / duration).

    Returns
    -------
    (freqs, psd) or None
        Hz and units² per Hz (one-sided); None for fewer than 4 beats or under 8 s.
    """
    if t_sec.size < 4 or t_sec[-1] - t_sec[0] < 8.0:
        return None
    grid = np.arange(t_sec[0], t_sec[-1], 1.0 / fs)
    y = np.interp(grid, t_sec, values)
    x = grid - grid[0]  # least-squares line (np.polyfit's, in closed form: 4x cheaper)
    xc = x - x.mean()
    y = y - (y.mean() + xc * (xc @ (y - y.mean())) / max(float(xc @ xc), 1e-300))
    w = np.hanning(y.size)
    n = max(n_fft, y.size)
    spec = np.abs(np.fft.rfft(y * w, n)) ** 2 / (fs * (w ** 2).sum())
    spec[1:] *= 2.0
    return np.fft.rfftfreq(n, 1.0 / fs), spec


def _band_power(freqs: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> float:
    mask = (freqs >= lo) & (freqs < hi)
    return float(psd[mask].sum() * (freqs[1] - freqs[0]))


def _resp_peak(spectra: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """Breathing rate (per minute) from the mean of normalised spectra in RESP_BAND."""
    acc = None
    for freqs, psd in spectra:
        mask = (freqs >= RESP_BAND[0]) & (freqs <= RESP_BAND[1])
        part = psd[mask]
        if part.sum() <= 0:
            continue
        part = part / part.sum()
        acc = part if acc is None else acc + part
    if acc is None:
        return None
    return float(spectra[0][0][mask][int(np.argmax(acc))] * 60.0)


class BeatTracker:
    """Beats of one ECG or PPG channel, found incrementally (module docstring).

    Parameters
    ----------
    kind : {"ecg", "ppg"}
        Signal type.
    sfreq : float
        Sampling rate, Hz.
    hr_window_sec, hrv_window_sec : float
        Windows of ``hr/bpm`` and of the beat-to-beat markers, s.
    min_hrv_sfreq : float
        Least sampling rate for the beat-to-beat markers, Hz.
    margin_sec : float
        Context on each side of the new samples, s.
    """

    def __init__(self, kind: str, sfreq: float, hr_window_sec: float = 8.0,
                 hrv_window_sec: float = 32.0, min_hrv_sfreq: float = 100.0,
                 margin_sec: float = 1.0, hrv_update_sec: float = 0.0) -> None:
        if kind not in ("ecg", "ppg"):
            raise ValueError(f"kind must be 'ecg' or 'ppg', got {kind!r}")
        self.kind, self.sfreq = kind, float(sfreq)
        self.hr_window_sec, self.hrv_window_sec = hr_window_sec, hrv_window_sec
        self.hrv_ok = self.sfreq >= min_hrv_sfreq
        self.margin = round(margin_sec * sfreq)
        self.peaks: deque[tuple[int, float]] = deque()  # (sample, amplitude)
        self.breaks: deque[int] = deque()  # samples where a gap or bad stretch ended
        self.done: int | None = None  # beats before this sample are final
        self._sign = 0.0  # ECG polarity (+1 upright, -1 inverted), fixed on first use
        self.unavailable: dict[str, str] = {}
        # beat-to-beat markers over hrv_window_sec change slowly: recomputed at most every
        # hrv_update_sec (0: every call), the calls between reuse them (issue 20)
        self.hrv_every = max(0, round(hrv_update_sec * sfreq))
        self._hrv: tuple[int, dict[str, float]] | None = None
        if not self.hrv_ok:
            why = (f"{kind.upper()} at {sfreq:g} Hz: beat timing needs >= {min_hrv_sfreq:g} Hz "
                   "for beat-to-beat markers")
            for k in ("hr/rmssd_ms", "hr/hf_ms2", "resp/rate_bpm"):
                self.unavailable[k] = why

    # ---------------------------------------------------------------- beats
    def _signal_problem(self, x: np.ndarray) -> str | None:
        spread = float(np.std(x))
        if spread == 0.0 or (self.kind == "ecg" and spread < 5e-6):
            return f"{self.kind.upper()} channel flat"
        hi, lo, med = x.max(), x.min(), np.median(x)
        # a plateau at (or next to) the median is the baseline between beats, not a rail
        near = 0.05 * (hi - lo)
        rail = max(float((x >= hi).mean()) if hi - med > near else 0.0,
                   float((x <= lo).mean()) if med - lo > near else 0.0)
        if rail >= 0.05:
            return f"{self.kind.upper()} channel saturated (>= 5 % of samples at a rail)"
        return None

    def _detect(self, x: np.ndarray, block: bool) -> tuple[np.ndarray, np.ndarray]:
        nk = neurokit(block)
        fs = round(self.sfreq)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = neurokit_clean(self.kind, x, fs)  # = nk.ecg_clean / nk.ppg_clean, cached
            if self.kind == "ecg":
                if self._sign == 0.0 and y.size >= 4 * fs:
                    skew = float(np.mean((y - y.mean()) ** 3))
                    self._sign = 1.0 if skew >= 0 else -1.0
                y = y * (self._sign or 1.0)
                # ecg_findpeaks: ecg_peaks without building its pandas table
                peaks = np.asarray(nk.ecg_findpeaks(y, sampling_rate=fs)["ECG_R_Peaks"],
                                   dtype=int)
            else:
                peaks = np.asarray(nk.ppg_findpeaks(y, sampling_rate=fs)["PPG_Peaks"], dtype=int)
        return peaks, y[peaks] if peaks.size else np.empty(0)

    def update(self, x: np.ndarray, start: int, block: bool = True) -> None:
        """Search the samples ``x`` (starting at absolute sample ``start``) for new beats.

        Parameters
        ----------
        x : ndarray, shape (n_times,)
            The channel's latest samples (volts for ECG), including at least the
            samples since the previous call plus ``margin_sec`` before them.
        start : int
            Absolute index of ``x[0]``.
        block : bool
            Wait for NeuroKit2's import; ``False`` (live streams) leaves the
            samples for a later call while it is still loading.
        """
        end = start + x.size
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:  # a gap: beats on either side never make an interval
            self.breaks.append(start + int(bad[-1]) + 1)
            x, start = x[bad[-1] + 1:], start + int(bad[-1]) + 1
            self.done = start
        if x.size < 2 * self.sfreq:
            return
        problem = self._signal_problem(x)
        if problem is not None:
            self.unavailable["hr/bpm"] = problem
            self.breaks.append(end)
            self.done = end
            return
        self.unavailable.pop("hr/bpm", None)
        try:
            peaks, amps = self._detect(x, block)
        except NeuroKitLoading:
            self.unavailable["hr/bpm"] = "NeuroKit2 is loading"
            return
        except ImportError:
            self.unavailable["hr/bpm"] = "neurokit2 is not installed (pip install neurokit2)"
            return
        except (ValueError, IndexError, ZeroDivisionError) as e:  # NeuroKit2 on odd input
            logger.debug("beat detection failed on %d samples: %s", x.size, e)
            return
        # beats before `done` were final already; the first 0.2 s and the last margin
        # of the segment sit on filter edges (the last margin is searched again next time)
        lo = max(start + round(0.2 * self.sfreq), self.done if self.done is not None else start)
        hi = end - self.margin
        last = self.peaks[-1][0] if self.peaks else -(10 ** 12)
        min_gap = round(RR_RANGE[0] * self.sfreq)
        for p, a in zip(peaks + start, amps, strict=True):
            if lo <= p < hi and p - last >= min_gap:
                self.peaks.append((int(p), float(a)))
                last = p
        self.done = max(hi, self.done or hi)
        keep_from = end - round(2 * self.hrv_window_sec * self.sfreq)
        while self.peaks and self.peaks[0][0] < keep_from:
            self.peaks.popleft()
        while self.breaks and self.breaks[0] < keep_from:
            self.breaks.popleft()

    # ---------------------------------------------------------------- markers
    def _intervals(self, end: int, window_sec: float) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
        """Beat times (s), RR (s) and amplitudes of the valid intervals before ``end``."""
        lo = end - window_sec * self.sfreq
        pk = [(p, a) for p, a in self.peaks if lo <= p <= end]
        if len(pk) < 3:
            return np.empty(0), np.empty(0), np.empty(0)
        s = np.array([p for p, _ in pk], dtype=float)
        amp = np.array([a for _, a in pk])
        rr = np.diff(s) / self.sfreq
        ok = (rr > RR_RANGE[0]) & (rr < RR_RANGE[1])
        for b in self.breaks:
            ok &= ~((s[:-1] < b) & (s[1:] >= b))
        if ok.sum() >= 3:
            med = np.median(rr[ok])
            ok &= np.abs(rr - med) <= 0.2 * med
        return s[1:][ok] / self.sfreq, rr[ok], amp[1:][ok]

    def features(self, end: int) -> dict[str, float]:
        """Markers from the beats before absolute sample ``end`` (module docstring)."""
        if self.done is None:
            return {}
        out: dict[str, float] = {}
        _, rr, _ = self._intervals(end, self.hr_window_sec)
        if rr.size >= 2:
            out["hr/bpm"] = float(60.0 / rr.mean())
        if not self.hrv_ok:
            return out
        last = self._hrv
        if last is None or not 0 <= end - last[0] < max(1, self.hrv_every):
            last = self._hrv = (end, self._hrv_features(end))
        out.update(last[1])
        return out

    def _hrv_features(self, end: int) -> dict[str, float]:
        """RMSSD, HF power and breathing rate from the beats before sample ``end``."""
        out: dict[str, float] = {}
        t, rr, amp = self._intervals(end, self.hrv_window_sec)
        if rr.size >= 5:
            d = np.diff(rr)[np.diff(t) < 1.6]  # successive intervals only
            if d.size >= 4:
                rmssd = float(np.sqrt(np.mean(d ** 2)) * 1e3)
                out["hr/rmssd_ms"] = rmssd
                out["hr/ln_rmssd"] = math.log(max(rmssd, 1e-3))
        if t.size >= 8 and t[-1] - t[0] >= 0.6 * self.hrv_window_sec:
            spec_rr = rr_spectrum(t, rr * 1e3)
            spec_amp = rr_spectrum(t, amp)
            if spec_rr is not None:
                hf = _band_power(*spec_rr, *HF_BAND)
                out["hr/hf_ms2"] = hf
                out["hr/ln_hf"] = math.log(max(hf, 1e-6))
                rate = _resp_peak([s for s in (spec_rr, spec_amp) if s is not None])
                if rate is not None:
                    out["resp/rate_bpm"] = rate
        return out


def eda_tonic(x_siemens: np.ndarray, sfreq: float, block: bool = True) -> float | None:
    """Tonic skin conductance (µS) of the last 2 s of an EDA trace (module docstring).

    Parameters
    ----------
    x_siemens : ndarray, shape (n_times,)
        Skin conductance, S (at least 6 s).
    sfreq : float
        Sampling rate, Hz.
    block : bool
        Wait for NeuroKit2's import; ``False`` returns None while it is loading.

    Returns
    -------
    tonic_us : float or None
        None when the trace is too short, not finite or NeuroKit2 is missing (or loading).
    """
    if x_siemens.size < 6 * sfreq or not np.isfinite(x_siemens).all():
        return None
    step = max(1, int(sfreq // 32))  # EDA is slow: 32 Hz is plenty, and 10x cheaper
    x = x_siemens[::step] * 1e6
    fs = sfreq / step
    try:
        nk = neurokit(block)
    except (ImportError, NeuroKitLoading):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = neurokit_clean("eda", x, fs)  # = nk.eda_clean, with a cached design
        comp = nk.eda_phasic(cleaned, sampling_rate=round(fs), method="smoothmedian")
    tonic = np.asarray(comp["EDA_Tonic"], dtype=float)
    return float(tonic[-max(1, round(2 * fs)):].mean())


def belt_rate(x: np.ndarray, sfreq: float) -> float | None:
    """Breaths per minute of a respiration belt trace: its spectral peak in 0.12-0.5 Hz.

    Parameters
    ----------
    x : ndarray, shape (n_times,)
        Belt signal (any units), at least 16 s.
    sfreq : float
        Sampling rate, Hz.
    """
    if x.size < 16 * sfreq or not np.isfinite(x).all() or np.std(x) == 0:
        return None
    step = max(1, int(sfreq // 8))
    y = x[::step]
    fs = sfreq / step
    t = np.arange(y.size) / fs
    spec = rr_spectrum(t, y, fs=fs)
    return None if spec is None else _resp_peak([spec])
