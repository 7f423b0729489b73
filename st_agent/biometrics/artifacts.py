"""Artifacts: bad channels, eye artifacts that cost samples (not windows), gate counts.

Three levels, from cheapest to costliest for the estimate:

1. **Samples.** Blinks and eye movements (:func:`eye_artifact_mask`) are found
   on two electro-oculogram (EOG) proxies built from the EEG itself:
   *vertical* = mean of the frontal sites minus the mean of the non-frontal
   ones (blinks and vertical movements are largest at Fp/AF and fall off
   backwards; subtracting the rest of the scalp removes slow activity common to
   all channels), and *horizontal* = left minus right lateral-frontal site
   (F7 - F8, AF7 - AF8, FT7 - FT8: saccades are a dipole across the eyes).
   Both are low-passed at 5 Hz and their slow drift is removed with a robust
   line (through the medians of the window's first and last quarters; a 0.5 Hz
   high-pass would ring at the window's edges). A sample is an eye artifact
   where a proxy departs from that line by more than ``max(blink_uv,
   min(blink_z · σ, blink_cap_uv))``, σ being a running robust (MAD) standard
   deviation of that proxy over the last minute of windows; the marks are
   widened by ``blink_pad_sec`` on each side (a blink lasts 300-400 ms, and its
   flanks are below threshold).
   Those samples get zero weight in the spectrum (:func:`masked_welch`); the
   rest of the window still counts.
2. **Channels.** A non-finite, flat (std < ``flat_uv``) or saturated
   (excursion > ``max_abs_uv`` from the median outside eye artifacts, or
   ``clip_fraction`` of the samples at the rails) channel leaves the window's
   means.
3. **Windows.** A window is rejected (the estimator holds its state) when a
   sample is non-finite (a gap is never bridged), when less than
   ``min_clean_fraction`` of it is free of eye artifacts (gate ``blink``) or of
   eye artifacts and amplitude spikes together (gate ``spikes``: a spectrum from
   a few samples is no estimate), for muscle (gamma share > ``muscle_ratio``, gate
   ``muscle``; EMG RMS > ``emg_burst_uv``, gate ``emg_burst``) or when more than
   ``max_bad_channel_fraction`` of the channels are bad (gate ``bad_channels``).

:class:`GateCounter` keeps, per gate, how many windows it rejected and the share
of samples removed as eye artifacts, for the session's events and report.

Thresholds (assumption, informed by the recordings in ``shared/data/eeg``; the
largest departure of the proxies per 2 s window, median / 95th percentile):
eegmmidb 126 / 373 µV (blinks), the Emotiv eye-state file 53 / 165 µV, the
ICA-cleaned eegmat files (no blinks left) 28-38 / 50-65 µV. ``blink_uv = 40`` is
an absolute floor, ``blink_z = 5`` robust SDs adapts it to the recording, and
``blink_cap_uv = 150`` (the estimator's former peak-to-peak blink threshold) is
the most it may rise. They remove 13 % and 18 % of the samples of the first two
and 0.4-0.6 % of the eegmat ones (``benchmarks/bench_real_eeg.py``).
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal

from st_agent.biometrics.filters import design, filtfilt

__all__ = [
    "GATES",
    "EyeScale",
    "GateCounter",
    "GateReport",
    "channel_quality",
    "eye_artifact_mask",
    "masked_welch",
]

#: Window gates, in the order they are reported.
GATES = ("nonfinite", "bad_channels", "blink", "spikes", "muscle", "emg_burst")




def channel_quality(uv: np.ndarray, finite: np.ndarray, flat_uv: float, max_abs_uv: float,
                    clip_fraction: float,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-finite, flat and saturated channels, and brief spikes, of a batch of windows.

    A channel departing more than ``max_abs_uv`` from its median for at least
    ``clip_fraction`` of the window, or sitting at its extreme value that long
    (a rail), is saturated. Briefer departures are *spikes*: their samples are
    returned so that the caller removes them (from every channel) instead of
    the channel.

    Parameters
    ----------
    uv : ndarray, shape (n_windows, n_channels, n_times)
        EEG in µV, non-finite samples already replaced by 0.
    finite : ndarray of bool, same shape
        Which samples were finite.
    flat_uv, max_abs_uv, clip_fraction : float
        Thresholds (:class:`~st_agent.biometrics.estimator.EstimatorConfig`).

    Returns
    -------
    nonfinite, flat, saturated : ndarray of bool, shape (n_windows, n_channels)
    spikes : ndarray of bool, shape (n_windows, n_times)
        Samples where a channel that is neither flat nor saturated spikes.
    """
    nonfinite = ~finite.all(axis=-1)
    med = np.median(uv, axis=-1, keepdims=True)
    flat = uv.std(axis=-1) < flat_uv
    hi, lo = uv.max(axis=-1), uv.min(axis=-1)
    at_rail = np.maximum((uv >= hi[..., None]).mean(-1), (uv <= lo[..., None]).mean(-1))
    far = (np.abs(uv - med) > max_abs_uv) & finite
    saturated = ((far.mean(-1) >= clip_fraction) | (at_rail >= clip_fraction)) & ~flat
    spikes = (far & ~(saturated | flat)[..., None]).any(axis=1)
    return nonfinite, flat, saturated, spikes


@dataclass
class EyeScale:
    """Running robust SDs (µV) of the two EOG proxies over recent windows."""

    n_keep: int = 120
    """Windows remembered (120 hops of 0.5 s: one minute)."""
    history: deque = field(default_factory=deque)

    def update(self, sd: np.ndarray) -> np.ndarray:
        """Add per-window SDs, shape (n_windows, 2); return the scale, shape (2,)."""
        for row in sd:
            self.history.append(row)
            while len(self.history) > self.n_keep:
                self.history.popleft()
        hist = np.asarray(self.history)
        return np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                         for c in hist.T])


def _robust_line(x: np.ndarray) -> np.ndarray:
    """The line through the medians of the first and last quarter, along the last axis.

    It removes slow drift (what a high-pass would, without the high-pass's ringing
    at the window's edges) and is not pulled by a blink covering less than half of
    a quarter.
    """
    n = x.shape[-1]
    q = max(1, n // 4)
    a, b = np.median(x[..., :q], axis=-1), np.median(x[..., -q:], axis=-1)
    t = (np.arange(n) - (q - 1) / 2) / max(n - q, 1)  # 0 at the first quarter's centre
    return a[..., None] + (b - a)[..., None] * t


def _dilate(mark: np.ndarray, pad: int) -> np.ndarray:
    """True wherever a mark lies within ``pad`` samples, along the last axis."""
    if pad <= 0 or not mark.any():
        return mark
    c = np.concatenate([np.zeros((*mark.shape[:-1], 1)), np.cumsum(mark, axis=-1)], axis=-1)
    n = mark.shape[-1]
    idx = np.arange(n)
    hi, lo = np.minimum(idx + pad + 1, n), np.maximum(idx - pad, 0)
    return (c[..., hi] - c[..., lo]) > 0


def eye_artifact_mask(uv: np.ndarray, usable: np.ndarray, frontal: np.ndarray,
                      reference: np.ndarray, lateral: tuple[int, int] | None, sfreq: float,
                      scale: EyeScale, blink_uv: float, blink_z: float, pad_sec: float,
                      blink_cap_uv: float = 150.0) -> tuple[np.ndarray, np.ndarray]:
    """Samples free of blinks and eye movements (module docstring, level 1).

    Parameters
    ----------
    uv : ndarray, shape (n_windows, n_channels, n_times)
        EEG in µV (finite).
    usable : ndarray of bool, shape (n_windows, n_channels)
        Channels fit to build the proxies (finite, not flat).
    frontal, reference : ndarray of int
        Positions of the frontal sites and of the sites subtracted from them.
    lateral : (int, int) or None
        Left and right lateral-frontal positions for the horizontal proxy.
    sfreq : float
        Sampling rate, Hz.
    scale : EyeScale
        Running SD of each proxy; updated here.
    blink_uv, blink_z, pad_sec : float
        Absolute floor (µV), robust-SD multiple and widening (s) of the marks.
    blink_cap_uv : float
        The threshold never exceeds this (µV), unless ``blink_uv`` does.

    Returns
    -------
    clean : ndarray of bool, shape (n_windows, n_times)
        True outside eye artifacts (all True without frontal channels).
    peak_uv : ndarray, shape (n_windows,)
        Largest departure of either proxy from its median, µV (for logging).
    """
    n_win, _, n_times = uv.shape
    clean = np.ones((n_win, n_times), dtype=bool)
    if frontal.size == 0 or n_times <= 15:
        return clean, np.zeros(n_win)
    proxies = np.zeros((n_win, 2, n_times))
    have = np.zeros((n_win, 2), dtype=bool)
    wf = usable[:, frontal].astype(float)  # (W, F)
    have[:, 0] = wf.sum(-1) > 0
    v = np.einsum("wf,wft->wt", wf, uv[:, frontal]) / np.maximum(wf.sum(-1), 1)[:, None]
    if reference.size:
        wr = usable[:, reference].astype(float)
        ref = np.einsum("wr,wrt->wt", wr, uv[:, reference]) / np.maximum(wr.sum(-1), 1)[:, None]
        v = v - np.where(wr.sum(-1)[:, None] > 0, ref, 0.0)
    proxies[:, 0] = v
    if lateral is not None:
        have[:, 1] = usable[:, lateral[0]] & usable[:, lateral[1]]
        proxies[:, 1] = uv[:, lateral[0]] - uv[:, lateral[1]]
    proxies = filtfilt(*design(4, min(5.0, 0.45 * sfreq), "lowpass", sfreq), proxies)
    dev = np.abs(proxies - _robust_line(proxies))
    sd = 1.4826 * np.median(dev, axis=-1)  # (W, 2)
    sd = np.where(have, sd, np.nan)
    running = scale.update(sd)
    # the floor keeps quiet recordings from flagging their own EEG; the cap keeps a
    # window (or a minute) full of eye movements from raising its own threshold
    thr = np.maximum(blink_uv, np.minimum(blink_z * np.nan_to_num(running, nan=0.0),
                                          blink_cap_uv))  # (2,)
    mark = ((dev > thr[None, :, None]) & have[..., None]).any(axis=1)
    clean = ~_dilate(mark, round(pad_sec * sfreq))
    peak = np.where(have, dev.max(axis=-1), 0.0).max(axis=-1)
    return clean, peak


@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    return signal.get_window("hann", n)


def _tapered(clean: np.ndarray, taper: int) -> np.ndarray:
    """Clean mask as weights, raised-cosine ramps of ``taper`` samples beside each cut."""
    m = clean.astype(float)
    if taper <= 1 or clean.all():
        return m
    n = clean.shape[-1]
    idx = np.arange(n)
    big = 10 * n
    last = np.maximum.accumulate(np.where(clean, -big, idx), axis=-1)
    nxt = np.minimum.accumulate(np.where(clean, big, idx)[..., ::-1], axis=-1)[..., ::-1]
    dist = np.minimum(idx - last, nxt - idx)  # samples to the nearest excluded one
    return 0.5 * (1.0 - np.cos(np.pi * np.clip(dist / taper, 0.0, 1.0)))


def _shared_segments(uv: np.ndarray, clean: np.ndarray, nperseg: int, step: int, hop: int,
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """Summed segment periodograms of the wholly clean windows, each segment computed once.

    Window ``w`` of a batch of consecutive windows starts ``w * hop`` samples after
    window 0, so with ``step`` a multiple of ``hop`` its segment ``s`` is the
    stream's segment ``w + s * step / hop``: the windows share segments (3 of every
    4 at a 2 s window, 0.5 s hop, 1 s segments). A window is taken only when it is
    clean throughout and its samples equal the stream rebuilt from the batch
    (spike repairs are per window); the others are left to the general path.

    Returns
    -------
    (which, spec) or None
        Indices of the windows done, shape (K,), and their summed periodograms
        (K, n_channels, n_freqs), before scaling; None when none qualifies.
    """
    n_win, n_ch, n_times = uv.shape
    if hop <= 0 or n_win < 2 or step % hop or n_times < hop:
        return None
    sig = np.concatenate([uv[0], uv[1:, :, -hop:].transpose(1, 0, 2).reshape(n_ch, -1)],
                         axis=-1)  # (C, n_times + (W - 1) * hop)
    starts = np.arange(n_win)[:, None] * hop + np.arange(n_times)[None, :]
    ok = clean.all(-1) & (uv == sig[:, starts].transpose(1, 0, 2)).all(axis=(1, 2))
    which = np.flatnonzero(ok)
    if which.size == 0:
        return None
    n_seg = (n_times - nperseg) // step + 1
    r = step // hop
    n_pos = n_win + (n_seg - 1) * r
    segs = np.lib.stride_tricks.sliding_window_view(sig, nperseg, axis=-1)[:, ::hop][:, :n_pos]
    segs = segs - segs.mean(-1, keepdims=True)
    spec = np.abs(np.fft.rfft(segs * _hann(nperseg), axis=-1)) ** 2  # (C, P, F)
    pos = which[:, None] + r * np.arange(n_seg)[None, :]  # (K, S)
    return which, spec[:, pos].sum(axis=2).transpose(1, 0, 2)


def masked_welch(uv: np.ndarray, clean: np.ndarray, sfreq: float, nperseg: int,
                 taper: int = 0, hop: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD that gives excluded samples zero weight.

    Segments of ``nperseg`` samples with 50 % overlap and a Hann window, as
    :func:`scipy.signal.welch`; each segment is multiplied by the clean-sample
    mask (its edges smoothed over ``taper`` samples inside the clean part),
    its weighted mean is removed, and the segments' periodograms are summed and
    divided by the summed window energy. With every sample clean this equals
    ``scipy.signal.welch(..., scaling="density")``; segments wholly inside an
    artifact drop out.

    Parameters
    ----------
    uv : ndarray, shape (n_windows, n_channels, n_times)
        Signal (finite).
    clean : ndarray of bool, shape (n_windows, n_times)
        Samples to keep.
    sfreq : float
        Sampling rate, Hz.
    nperseg : int
        Segment length, samples (``<= n_times``).
    taper : int
        Length of the raised-cosine ramp at each edge of an excluded stretch.
    hop : int
        Samples between the starts of consecutive windows of the batch (0: the
        windows are unrelated). With it, wholly clean windows share their
        overlapping segments' periodograms (computed once; the same PSD to
        float rounding, ``tests/test_streaming_filters.py``).

    Returns
    -------
    freqs : ndarray, shape (n_freqs,)
        Hz.
    psd : ndarray, shape (n_windows, n_channels, n_freqs)
        Power spectral density, units of ``uv`` squared per Hz (NaN where no
        sample is clean).
    """
    n_times = uv.shape[-1]
    nperseg = min(nperseg, n_times)
    step = nperseg - nperseg // 2
    shared = _shared_segments(uv, clean, nperseg, step, hop)
    if shared is not None:
        done, spec_done = shared
        rest = np.setdiff1d(np.arange(uv.shape[0]), done)
        psd = np.empty((*uv.shape[:2], nperseg // 2 + 1))
        n_seg = (n_times - nperseg) // step + 1
        psd[done] = spec_done / (sfreq * n_seg * float((_hann(nperseg) ** 2).sum()))
        psd[done, :, 1:] *= 2.0
        if nperseg % 2 == 0:
            psd[done, :, -1] /= 2.0
        if rest.size:
            psd[rest] = masked_welch(uv[rest], clean[rest], sfreq, nperseg, taper)[1]
        return np.fft.rfftfreq(nperseg, 1.0 / sfreq), psd
    m = _tapered(clean, taper)
    segs = np.lib.stride_tricks.sliding_window_view(uv, nperseg, axis=-1)[..., ::step, :]
    msegs = np.lib.stride_tricks.sliding_window_view(m, nperseg, axis=-1)[..., ::step, :]
    w = _hann(nperseg)[None, None, :] * msegs  # (W, S, L)
    wsum = msegs.sum(-1, keepdims=True)  # (W, S, 1)
    mean = (segs * msegs[:, None]).sum(-1, keepdims=True) / np.maximum(wsum[:, None], 1e-12)
    spec = np.abs(np.fft.rfft((segs - mean) * w[:, None], axis=-1)) ** 2  # (W, C, S, F)
    energy = (w ** 2).sum(axis=(-2, -1))  # (W,)
    with np.errstate(invalid="ignore", divide="ignore"):
        psd = spec.sum(axis=2) / (sfreq * energy[:, None, None])
    psd[..., 1:] *= 2.0
    if nperseg % 2 == 0:
        psd[..., -1] /= 2.0
    psd[energy <= 0] = np.nan
    return np.fft.rfftfreq(nperseg, 1.0 / sfreq), psd


@dataclass(frozen=True)
class GateReport:
    """How much data the gates cost so far.

    Parameters
    ----------
    n_windows : int
        Windows analysed.
    n_rejected : int
        Windows rejected by at least one gate.
    rejected : dict of str to int
        Windows each gate rejected (a window can fail several gates).
    eye_excluded_share : float
        Share of the samples of all windows marked as eye artifacts (in
        accepted and rejected windows alike).
    flagged_channels : dict of str to int
        Windows in which each channel was flat or saturated (left out of the means).
    """

    n_windows: int
    n_rejected: int
    rejected: dict[str, int]
    eye_excluded_share: float
    flagged_channels: dict[str, int]

    @property
    def rejected_share(self) -> float:
        """Share of windows rejected."""
        return self.n_rejected / self.n_windows if self.n_windows else 0.0

    def share(self, gate: str) -> float:
        """Share of windows the gate rejected."""
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        return self.rejected.get(gate, 0) / self.n_windows if self.n_windows else 0.0

    def worst_gate(self) -> str | None:
        """The gate that rejected the most windows (None if none rejected any)."""
        best = max(GATES, key=lambda g: self.rejected.get(g, 0))
        return best if self.rejected.get(best, 0) else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (shares rounded to 0.1 %)."""
        return {"n_windows": self.n_windows, "rejected_share": round(self.rejected_share, 3),
                "rejected_by_gate": {g: round(self.share(g), 3) for g in GATES},
                "eye_excluded_share": round(self.eye_excluded_share, 3),
                "flagged_channels": dict(self.flagged_channels)}

    def summary(self) -> str:
        """One line, e.g. ``"12 % of 120 windows rejected (blink 10 %, muscle 2 %); ..."``."""
        parts = [f"{g} {100 * self.share(g):.0f} %" for g in GATES if self.rejected.get(g)]
        return (f"{100 * self.rejected_share:.0f} % of {self.n_windows} windows rejected"
                f"{' (' + ', '.join(parts) + ')' if parts else ''}; "
                f"{100 * self.eye_excluded_share:.1f} % of samples removed as eye artifacts")


@dataclass
class GateCounter:
    """Counts, per gate, the windows rejected and the eye-artifact samples removed."""

    n_windows: int = 0
    n_rejected: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GATES, 0))
    excluded_samples: float = 0.0
    total_samples: float = 0.0
    flagged_channels: dict[str, int] = field(default_factory=dict)

    def add(self, quality: dict[str, Any]) -> None:
        """Count one window's quality flags (as the estimator writes them)."""
        self.n_windows += 1
        hit = [g for g in GATES if quality.get(g)]
        self.n_rejected += bool(hit)
        for g in hit:
            self.rejected[g] += 1
        self.excluded_samples += float(quality.get("eye_excluded", 0.0))
        self.total_samples += 1.0
        for ch in (*quality.get("flat", ()), *quality.get("saturated", ())):
            self.flagged_channels[ch] = self.flagged_channels.get(ch, 0) + 1

    def report(self) -> GateReport:
        """The counts so far."""
        share = self.excluded_samples / self.total_samples if self.total_samples else 0.0
        return GateReport(self.n_windows, self.n_rejected, dict(self.rejected), share,
                          dict(self.flagged_channels))
