"""State estimation: biosignal windows -> features -> EmotionState.

Pipeline
--------
1. **Windows.** Chunks from a :class:`~st_agent.biometrics.sources.BiometricSource` are
   buffered; every ``hop_sec`` (0.5 s) the last ``window_sec`` (2 s) of EEG is
   analysed, and the last ``hr_window_sec`` (8 s) of ECG/PPG for heart rate.
   A gap in ``first_sample`` is filled with NaN, so windows across it are bad.
2. **Features** (:func:`features_from_window`), names as logged:

   ========================  =============================================================
   ``eeg/<band>_power``      Welch band power (µV², mean over good EEG channels); bands
                             δ 1–4, θ 4–8, α 8–13, β 13–30, γ 30–45 Hz
   ``eeg/<band>_rel``        band power / total 1–45 Hz power
   ``eeg/<band>_de``         differential entropy ½·ln(2πe·P) of the band-limited signal
                             (Gaussian assumption; Duan et al. 2013), mean over channels
   ``eeg/faa``               frontal alpha asymmetry ln α(F4) − ln α(F3) (or AF8/AF7,
                             AF4/AF3, Fp2/Fp1, F8/F7: the first pair the montage has)
   ``eeg/beta_alpha``        β/α power ratio; ``eeg/log_beta_alpha`` its natural log
   ``eeg/engagement``        β/(α+θ), Pope et al. 1995's engagement index
   ``hr/bpm``, ``hr/rmssd_ms``  heart rate and RMSSD from R peaks (ECG) or pulse peaks (PPG)
   ``emg/rms_uv``            EMG RMS; ``eda/level_us`` mean skin conductance
   ``reference/mindfulness``, ``reference/restfulness``  BrainFlow's own models
   ========================  =============================================================

3. **Gating.** Per channel: non-finite samples, flat lines (std < ``flat_uv``),
   saturation (excursions > ``max_abs_uv`` or samples stuck at the rails).
   Per window: blinks (frontal 0.5–5 Hz peak-to-peak > ``blink_uv``), muscle
   (γ share of power > ``muscle_ratio``, or EMG RMS > ``emg_burst_uv``), too few
   good channels. A bad window never moves the estimate: the previous state is
   held and its confidence multiplied by ``confidence_decay``.
4. **Calibration.** The first ``calibration_sec`` of good windows (a rest
   baseline) give each feature's mean and standard deviation for this
   listener; afterwards features are z-scored against it.
5. **Mapping** to Russell's circumplex, both in [-1, 1]::

       valence = tanh(gain · z(eeg/faa))
       arousal = tanh(gain · mean(z(eeg/log_beta_alpha), hr_weight · z(hr/bpm)))

   (weighted mean, weights 1 and ``hr_weight``; each drive is averaged over
   time first, step 6).

   *Valence* follows Davidson's approach/withdrawal model (Davidson 1992;
   Coan & Allen 2004): alpha power is inversely related to cortical
   activity, so relatively more right-frontal alpha (higher
   ln α_right − ln α_left) means relatively more left-frontal activity,
   associated with approach and positive affect. *Arousal* follows the
   engagement literature: beta rises and alpha falls with alertness and
   mental load (Pope, Bogart & Bartolome 1995; alpha as the idling/relaxation
   rhythm, Klimesch 1999), and heart rate rises with sympathetic arousal.
   Both are weak, listener-specific correlates; that is why they are z-scored
   per listener and why ``confidence`` is reported.
6. **Smoothing.** One 2 s window is a noisy reading (its error is correlated
   over only a second or two), while the state it reflects changes over tens
   of seconds. So each drive ``d`` inside the ``tanh`` above (``gain · z(faa)``
   and ``gain · mean(...)``) goes through an exponential moving average with
   time constant ``τ = smoothing_sec`` before the ``tanh``::

       m <- a · m + (1 - a) · d,   a = exp(-Δt / τ)

   where ``Δt`` is the time since the last good window that updated ``m``.
   It is one multiply-add per hop. Bad windows never enter it (the state and
   ``m`` are held); after a run of them ``Δt`` is longer, so the new window
   weighs more, since the held value is stale. The first good window after
   calibration, :meth:`StateEstimator.reset`, :meth:`~StateEstimator.calibrate`
   or :meth:`~StateEstimator.set_baseline` starts ``m`` afresh.
   **Lag**: the average's mean delay is about ``τ - hop_sec/2`` (0.5 s hops);
   a step in the signals reaches 63 % of its effect after ``τ`` and 95 %
   after ``3τ`` (on top of the ``window_sec/2`` = 1 s centre of the window).
   The default τ = 4 s was chosen by measurement
   (``benchmarks/bench_listener.py``, 50 simulated listeners, 8 min each):
   mean r with the latent state went from 0.78 (arousal) and 0.66 (valence)
   per window to 0.83/0.75 at τ = 1 s, 0.86/0.85 at 4 s, 0.86/0.86 at 6 s and
   0.82/0.84 at 12 s. 4 s is the arousal optimum; longer adds lag for at
   most 0.01 on valence.
   ``smoothing_sec=0`` gives the per-window state; each
   :class:`Estimate` also carries that unsmoothed ``raw_state`` and the raw
   ``features`` and ``z`` for logging.

Valence and arousal are 0 with confidence 0 until the baseline is complete.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal

from st_agent.types import EmotionState, SignalChunk

__all__ = [
    "BANDS",
    "Baseline",
    "Estimate",
    "EstimatorConfig",
    "StateEstimator",
    "features_from_window",
    "normalize_ch_name",
]

logger = logging.getLogger(__name__)

#: Default EEG bands in Hz, ``name -> (low, high)``.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: Right/left pairs for frontal alpha asymmetry, in order of preference.
FAA_PAIRS = (("F4", "F3"), ("AF8", "AF7"), ("AF4", "AF3"), ("FP2", "FP1"), ("F8", "F7"))

_REFERENCE_SITES = ("A1", "A2", "M1", "M2")

# -------------------------------------------------------------------- channel names

_ROWS = ("FP", "AF", "F", "FC", "FT", "C", "T", "TP", "CP", "P", "PO", "O", "I", "N")
_LABELS = frozenset(
    [f"{r}{i}" for r in _ROWS for i in range(1, 11)] + [f"{r}Z" for r in _ROWS]
    + ["T3", "T4", "T5", "T6", "A1", "A2", "M1", "M2", "NZ", "IZ"]
)


def normalize_ch_name(name: str) -> str | None:
    """Return the 10-20/10-10 label of a channel name, upper case, or ``None``.

    Prefixes (``EEG``), reference suffixes (``-REF``, ``-A1``, ``-LE``),
    trailing dots and case are ignored: ``"EEG Fp1"``, ``"Fc5."``, ``"FP1"``,
    ``"Fp1-REF"`` give ``"FP1"``, ``"FC5"``, ``"FP1"``, ``"FP1"``.

    Parameters
    ----------
    name : str
        Channel name as the device or file spells it.

    Returns
    -------
    label : str or None
        Upper-case label (``"FP1"``, ``"FC5"``, ``"CZ"``), or ``None`` when the
        name is not a 10-20/10-10 position (``"ECG ECG"``, ``"EEG1"``).

    Examples
    --------
    >>> normalize_ch_name("EEG Fp1"), normalize_ch_name("Fc5."), normalize_ch_name("ECG")
    ('FP1', 'FC5', None)
    """
    s = name.strip().upper()
    s = re.sub(r"^(EEG|EXG)[\s_:\-]*", "", s)
    s = s.strip(" ._-")
    s = re.split(r"[\s\-_/:]", s, maxsplit=1)[0].rstrip(".")
    return s if s in _LABELS else None


# -------------------------------------------------------------------- config


@dataclass
class EstimatorConfig:
    """Settings of the state estimator; each field documented below."""

    window_sec: float = 2.0
    """Length of the analysis window, seconds."""
    hop_sec: float = 0.5
    """Step between windows, seconds (one estimate per hop)."""
    bands: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(BANDS))
    """EEG bands, name -> (low, high) Hz; must include alpha, beta and theta."""
    calibration_sec: float = 60.0
    """Rest baseline length, seconds of good windows (0 disables z-scoring)."""
    hr_window_sec: float = 8.0
    """Cardiac window for heart rate and RMSSD, seconds."""
    hr_update_sec: float = 1.0
    """Heart rate and RMSSD are recomputed at most this often (s of stream time);
    the windows in between reuse the last values. An 8 s window moves little in
    one hop, and peak detection is the estimator's costliest step. 0 = every hop."""
    gain: float = 0.5
    """z-score multiplier before tanh: z = 2 maps to tanh(1) ≈ 0.76."""
    hr_weight: float = 0.5
    """Weight of heart rate beside beta/alpha in arousal (0 ignores it)."""
    smoothing_sec: float = 4.0
    """Time constant (s) of the exponential moving average of the state's z-scored
    drives (module docstring, step 6); 0 disables it. Adds about this much lag."""
    flat_uv: float = 0.5
    """A channel whose standard deviation is below this (µV) is flat."""
    max_abs_uv: float = 500.0
    """A channel that departs further than this (µV) from its median is saturated."""
    clip_fraction: float = 0.05
    """A channel with at least this share of samples at its extreme value is clipped."""
    blink_uv: float = 150.0
    """Peak-to-peak (µV) of 0.5–5 Hz frontal activity above which a blink is flagged."""
    muscle_ratio: float = 0.35
    """Gamma share of 1–45 Hz power above which muscle artifact is flagged."""
    emg_burst_uv: float = 100.0
    """EMG RMS (µV) above which a muscle burst is flagged."""
    max_bad_channel_fraction: float = 0.5
    """A window with a larger share of bad EEG channels is bad."""
    confidence_decay: float = 0.7
    """Confidence multiplier per bad window while the previous state is held."""
    reference_model: bool = True
    """Also compute BrainFlow's mindfulness/restfulness models (``reference/*``)."""

    def __post_init__(self) -> None:
        for name in ("window_sec", "hop_sec", "hr_window_sec", "gain", "flat_uv",
                     "max_abs_uv", "blink_uv", "emg_burst_uv"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.hop_sec > self.window_sec:
            raise ValueError(f"hop_sec ({self.hop_sec}) must be <= window_sec "
                             f"({self.window_sec})")
        if not (isinstance(self.hr_update_sec, int | float) and math.isfinite(self.hr_update_sec)
                and self.hr_update_sec >= 0):
            raise ValueError(f"hr_update_sec must be a number >= 0, got {self.hr_update_sec!r}")
        if not (isinstance(self.calibration_sec, int | float) and self.calibration_sec >= 0):
            raise ValueError(f"calibration_sec must be >= 0, got {self.calibration_sec!r}")
        if not (isinstance(self.smoothing_sec, int | float) and math.isfinite(self.smoothing_sec)
                and self.smoothing_sec >= 0):
            raise ValueError(f"smoothing_sec must be a number >= 0, got {self.smoothing_sec!r}")
        for name in ("clip_fraction", "muscle_ratio", "max_bad_channel_fraction",
                     "confidence_decay", "hr_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        missing = {"theta", "alpha", "beta"} - set(self.bands)
        if missing:
            raise ValueError(f"bands must include theta, alpha and beta; missing {missing}")
        for band, (lo, hi) in self.bands.items():
            if not 0 <= lo < hi:
                raise ValueError(f"band {band!r} must satisfy 0 <= low < high, got ({lo}, {hi})")


# -------------------------------------------------------------------- montage


@dataclass(frozen=True)
class _Montage:
    """Which rows play which part, worked out once per channel layout."""

    eeg: np.ndarray
    eeg_names: tuple[str, ...]
    frontal: np.ndarray  # positions within ``eeg``
    faa: tuple[int, int] | None  # positions within ``eeg``: (right, left)
    faa_names: tuple[str, str] | None
    cardiac: np.ndarray
    cardiac_type: str | None
    emg: np.ndarray
    eda: np.ndarray


@functools.lru_cache(maxsize=64)
def _montage(ch_names: tuple[str, ...], ch_types: tuple[str, ...]) -> _Montage:
    types = np.asarray(ch_types)
    eeg = np.flatnonzero(types == "eeg")
    labels = [normalize_ch_name(ch_names[i]) for i in eeg]
    scalp = [k for k, lab in enumerate(labels) if lab not in _REFERENCE_SITES]
    if len(scalp) >= 2 and len(scalp) < len(eeg):
        eeg = eeg[scalp]
        labels = [labels[k] for k in scalp]
    pos = {lab: k for k, lab in enumerate(labels) if lab is not None}
    frontal = [k for k, lab in enumerate(labels)
               if lab is not None and lab.startswith(("FP", "AF"))]
    if not frontal:
        frontal = [k for k, lab in enumerate(labels)
                   if lab is not None and re.fullmatch(r"F([1-9]|10|Z)", lab)]
    faa = faa_names = None
    for right, left in FAA_PAIRS:
        if right in pos and left in pos:
            faa, faa_names = (pos[right], pos[left]), (right, left)
            break
    ecg, ppg = np.flatnonzero(types == "ecg"), np.flatnonzero(types == "ppg")
    cardiac, cardiac_type = (ecg[:1], "ecg") if ecg.size else (
        (ppg[:1], "ppg") if ppg.size else (ecg, None))
    return _Montage(eeg, tuple(ch_names[i] for i in eeg), np.asarray(frontal, dtype=int),
                    faa, faa_names, cardiac, cardiac_type,
                    np.flatnonzero(types == "emg"), np.flatnonzero(types == "eda"))


@functools.lru_cache(maxsize=16)
def _sos(kind: str, sfreq: float) -> np.ndarray:
    nyq = sfreq / 2
    if kind == "blink":
        return signal.butter(2, [0.5, min(5.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos")
    if kind == "ecg":
        return signal.butter(2, [5.0, min(25.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos")
    return signal.butter(2, [0.5, min(5.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos")


# -------------------------------------------------------------------- features


def _eeg_features(x: np.ndarray, sfreq: float, mont: _Montage, cfg: EstimatorConfig,
                  ) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """Vectorised EEG features and quality for a batch of windows.

    Parameters
    ----------
    x : ndarray, shape (n_windows, n_eeg, n_times)
        EEG in volts.
    """
    n_win, n_ch, n_times = x.shape
    uv = x * 1e6
    finite = np.isfinite(uv)
    nonfinite_ch = ~finite.all(axis=-1)  # (W, C)
    uv = np.where(finite, uv, 0.0)
    med = np.median(uv, axis=-1, keepdims=True)
    uv = uv - uv.mean(axis=-1, keepdims=True)
    std = uv.std(axis=-1)
    flat = std < cfg.flat_uv
    hi, lo = uv.max(axis=-1), uv.min(axis=-1)
    at_rail = np.maximum((uv >= hi[..., None]).mean(-1), (uv <= lo[..., None]).mean(-1))
    saturated = (np.abs(x * 1e6 - med).max(axis=-1, initial=0, where=finite)
                 > cfg.max_abs_uv) | ((at_rail >= cfg.clip_fraction) & ~flat)
    bad_ch = nonfinite_ch | flat | saturated
    good = ~bad_ch
    n_good = good.sum(axis=-1)  # (W,)

    nperseg = min(n_times, round(sfreq))
    freqs, psd = signal.welch(uv, fs=sfreq, nperseg=nperseg, axis=-1)  # (W, C, F) µV²/Hz
    df = freqs[1] - freqs[0]
    total_mask = (freqs >= 1.0) & (freqs < 45.0)
    total = psd[..., total_mask].sum(-1) * df  # (W, C)
    bp = {}
    for band, (f_lo, f_hi) in cfg.bands.items():
        mask = (freqs >= f_lo) & (freqs < f_hi)
        bp[band] = psd[..., mask].sum(-1) * df if mask.any() else np.full((n_win, n_ch), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        gmean = {b: np.where(good, p, 0).sum(-1) / np.maximum(n_good, 1) for b, p in bp.items()}
        tot_mean = np.where(good, total, 0).sum(-1) / np.maximum(n_good, 1)
        de = {b: np.where(good, 0.5 * np.log(2 * np.pi * np.e * np.maximum(p, 1e-12)), 0)
              .sum(-1) / np.maximum(n_good, 1) for b, p in bp.items()}
        gamma = bp.get("gamma")
        muscle = (gamma is not None) & (
            np.where(good, gamma / np.maximum(total, 1e-12), 0).sum(-1)
            / np.maximum(n_good, 1) > cfg.muscle_ratio)
    blink = np.zeros(n_win, dtype=bool)
    if mont.frontal.size and n_times > 15:
        fr = signal.sosfiltfilt(_sos("blink", sfreq), uv[:, mont.frontal], axis=-1)
        ptp = np.ptp(fr, axis=-1)
        blink = (np.where(good[:, mont.frontal], ptp, 0) > cfg.blink_uv).any(-1)

    feats: list[dict[str, float]] = []
    quals: list[dict[str, Any]] = []
    names = np.asarray(mont.eeg_names)
    for w in range(n_win):
        f: dict[str, float] = {}
        for b in cfg.bands:
            f[f"eeg/{b}_power"] = float(gmean[b][w])
            f[f"eeg/{b}_rel"] = float(gmean[b][w] / tot_mean[w]) if tot_mean[w] > 0 else math.nan
            f[f"eeg/{b}_de"] = float(de[b][w])
        a, b_, t = gmean["alpha"][w], gmean["beta"][w], gmean["theta"][w]
        f["eeg/beta_alpha"] = float(b_ / a) if a > 0 else math.nan
        f["eeg/log_beta_alpha"] = float(math.log(b_ / a)) if a > 0 and b_ > 0 else math.nan
        f["eeg/engagement"] = float(b_ / (a + t)) if a + t > 0 else math.nan
        faa_ok = mont.faa is not None and bool(good[w, list(mont.faa)].all())
        if faa_ok:
            r, lft = bp["alpha"][w, mont.faa[0]], bp["alpha"][w, mont.faa[1]]
            f["eeg/faa"] = float(math.log(r) - math.log(lft)) if r > 0 and lft > 0 else math.nan
        f["eeg/good_channels"] = float(n_good[w])
        good_frac = float(n_good[w] / n_ch) if n_ch else 0.0
        q = {
            "nonfinite": bool(nonfinite_ch[w].any()),
            "flat": names[flat[w]].tolist(),
            "saturated": names[saturated[w] & ~flat[w]].tolist(),
            "blink": bool(blink[w]),
            "muscle": bool(muscle[w]),
            "good_fraction": good_frac,
            "faa_pair": mont.faa_names if faa_ok else None,
        }
        q["bad_channels"] = bool((1 - good_frac) > cfg.max_bad_channel_fraction
                                 or n_good[w] == 0)
        feats.append(f)
        quals.append(q)
    return feats, quals


def _heart(x: np.ndarray, sfreq: float, kind: str) -> dict[str, float]:
    """Heart rate (bpm) and RMSSD (ms) from one ECG (V) or PPG (a.u.) trace."""
    if x.size < 3 * sfreq or not np.isfinite(x).all():
        return {}
    y = signal.sosfiltfilt(_sos(kind, sfreq), x - x.mean())
    if kind == "ecg" and abs(y.min()) > abs(y.max()):
        y = -y  # inverted lead
    spread = np.percentile(y, 99) - np.median(y)
    if spread <= 0:
        return {}
    peaks, _ = signal.find_peaks(y, distance=max(1, round(0.33 * sfreq)),
                                 prominence=0.4 * spread)
    rr = np.diff(peaks) / sfreq
    rr = rr[(rr > 0.33) & (rr < 1.5)]
    if rr.size < 2:
        return {}
    out = {"hr/bpm": float(60.0 / rr.mean())}
    if rr.size >= 3:
        out["hr/rmssd_ms"] = float(np.sqrt(np.mean(np.diff(rr) ** 2)) * 1e3)
    return out


def _other_features(data: np.ndarray, mont: _Montage, cfg: EstimatorConfig,
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """Features of the EMG and EDA channels of one window (heart rate: :func:`_heart`)."""
    f: dict[str, float] = {}
    q: dict[str, Any] = {"emg_burst": False}
    if mont.emg.size:
        emg = data[mont.emg] * 1e6
        if np.isfinite(emg).all():
            rms = float(np.sqrt(np.mean((emg - emg.mean(-1, keepdims=True)) ** 2)))
            f["emg/rms_uv"] = rms
            q["emg_burst"] = rms > cfg.emg_burst_uv
    if mont.eda.size:
        eda = data[mont.eda]
        if np.isfinite(eda).all():
            f["eda/level_us"] = float(eda.mean() * 1e6)
    return f, q


def _is_bad(q: dict[str, Any]) -> bool:
    return bool(q["nonfinite"] or q["blink"] or q["muscle"] or q["bad_channels"]
                or q.get("emg_burst", False))


def features_from_window(data: np.ndarray, sfreq: float, ch_names: list[str] | tuple[str, ...],
                         ch_types: list[str] | tuple[str, ...],
                         config: EstimatorConfig | None = None,
                         ) -> tuple[dict[str, float], dict[str, Any]]:
    """Features and quality flags of one window (pure function, for offline use).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Samples in SI units (volts for eeg/emg/ecg).
    sfreq : float
        Sampling rate in Hz.
    ch_names, ch_types : sequence of str
        One per row of ``data``; EEG channels are picked by type and matched to
        10-20 positions by :func:`normalize_ch_name`.
    config : EstimatorConfig, optional
        Bands and gating thresholds.

    Returns
    -------
    features : dict of str to float
        Named features (see the module docstring); cardiac features use the
        whole window.
    quality : dict
        Flags: ``nonfinite``, ``flat`` and ``saturated`` (channel names),
        ``blink``, ``muscle``, ``emg_burst``, ``good_fraction``, ``bad``.

    Raises
    ------
    ValueError
        If shapes disagree or there is no EEG channel.
    """
    cfg = config or EstimatorConfig()
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or len(ch_names) != len(ch_types):
        raise ValueError(f"data must have shape (n_channels, n_times) with one name and type "
                         f"per row; got {data.shape}, {len(ch_names)} names, "
                         f"{len(ch_types)} types")
    mont = _montage(tuple(ch_names), tuple(ch_types))
    if mont.eeg.size == 0:
        raise ValueError(f"no EEG channel among types {sorted(set(ch_types))}")
    feats, quals = _eeg_features(data[None, mont.eeg], float(sfreq), mont, cfg)
    f, q = _other_features(data, mont, cfg)
    if mont.cardiac.size and mont.cardiac_type is not None:
        f.update(_heart(data[mont.cardiac[0]], float(sfreq), mont.cardiac_type))
    feats[0].update(f)
    quals[0].update(q)
    quals[0]["bad"] = _is_bad(quals[0])
    return feats[0], quals[0]


# -------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class Baseline:
    """Per-listener feature statistics from the rest calibration.

    Parameters
    ----------
    mean, std : dict of str to float
        Mean and standard deviation of each feature over the good rest windows.
    n_windows : int
        Number of windows they come from.
    """

    mean: dict[str, float]
    std: dict[str, float]
    n_windows: int

    def z(self, name: str, value: float) -> float:
        """z-score of one feature; NaN if the feature has no baseline."""
        mu, sd = self.mean.get(name), self.std.get(name)
        if mu is None or sd is None or not math.isfinite(value):
            return math.nan
        return (value - mu) / sd


@dataclass
class Estimate:
    """One output of the estimator, per hop.

    Parameters
    ----------
    state : EmotionState
        Valence, arousal, confidence and the time of the window's end.
    features : dict of str to float
        Named features of the window (for logging).
    quality : dict
        Signal-quality flags (see :func:`features_from_window`) plus
        ``calibrating`` and ``gap``.
    bad : bool
        The window was rejected; ``state`` is the previous one, held.
    z : dict of str to float
        z-scores of this window against the baseline (empty while calibrating),
        before any smoothing.
    raw_state : EmotionState or None
        This window's own state, before the moving average of
        ``smoothing_sec`` (equal to ``state`` when it is 0); ``None`` for bad
        and calibration windows. For logging and diagnostics.
    """

    state: EmotionState
    features: dict[str, float]
    quality: dict[str, Any]
    bad: bool
    z: dict[str, float] = field(default_factory=dict)
    raw_state: EmotionState | None = None


class _Reference:
    """BrainFlow's mindfulness and restfulness models, loaded once."""

    def __init__(self) -> None:
        from st_agent.biometrics.sources import load_brainflow

        load_brainflow()
        from brainflow.ml_model import (
            BrainFlowClassifiers,
            BrainFlowMetrics,
            BrainFlowModelParams,
            MLModel,
        )

        self.models = {}
        for name, metric in (("mindfulness", BrainFlowMetrics.MINDFULNESS),
                             ("restfulness", BrainFlowMetrics.RESTFULNESS)):
            model = MLModel(BrainFlowModelParams(metric.value,
                                                 BrainFlowClassifiers.DEFAULT_CLASSIFIER.value))
            model.prepare()
            self.models[name] = model

    def __call__(self, eeg_uv: np.ndarray, sfreq: float) -> dict[str, float]:
        from brainflow.data_filter import DataFilter

        data = np.ascontiguousarray(eeg_uv, dtype=np.float64)
        avg, std = DataFilter.get_avg_band_powers(data, list(range(data.shape[0])),
                                                  round(sfreq), True)
        vec = np.concatenate([avg, std])
        return {f"reference/{k}": float(np.ravel(m.predict(vec))[0])
                for k, m in self.models.items()}

    def close(self) -> None:
        for model in self.models.values():
            try:
                model.release()
            except Exception as e:  # released already or never prepared
                logger.debug("releasing BrainFlow model: %s", e)
        self.models = {}


class StateEstimator:
    """Streaming estimator: push chunks, get one :class:`Estimate` per hop.

    Parameters
    ----------
    config : EstimatorConfig, optional
        Windows, bands, calibration and gating settings.
    baseline : Baseline, optional
        A stored baseline for this listener; skips calibration.

    Examples
    --------
    >>> est = StateEstimator(EstimatorConfig(calibration_sec=30))  # doctest: +SKIP
    >>> with BrainFlowSource("synthetic") as src, est:  # doctest: +SKIP
    ...     for chunk in src.iter_chunks():
    ...         for e in est.push(chunk):
    ...             print(e.state)
    """

    def __init__(self, config: EstimatorConfig | None = None,
                 baseline: Baseline | None = None) -> None:
        self.config = config or EstimatorConfig()
        self._baseline = baseline
        self._calib: list[dict[str, float]] = []
        self._layout: tuple[float, tuple[str, ...], tuple[str, ...]] | None = None
        self._buf = np.empty((0, 0))
        self._buf_start = 0
        self._next_end = 0
        self._t_ref = (0, 0.0)  # (sample index, t_sec) of the last chunk's start
        self._state = EmotionState(0.0, 0.0, 0.0, 0.0)
        # (value, t_sec) of the moving average of each drive, valence and arousal
        self._ema: list[tuple[float, float] | None] = [None, None]
        self._hr_cache: tuple[int, dict[str, float]] | None = None  # (window end, features)
        self._reference: _Reference | None = None
        self._reference_failed = False

    # -- calibration
    @property
    def baseline(self) -> Baseline | None:
        """The listener's baseline, once calibration is complete."""
        return self._baseline

    @property
    def is_calibrated(self) -> bool:
        """Whether features are z-scored against a baseline."""
        return self._baseline is not None or self.config.calibration_sec == 0

    def calibrate(self, duration_sec: float | None = None) -> None:
        """(Re)start the rest-baseline phase.

        The next ``duration_sec`` (default ``config.calibration_sec``) of good
        windows become the baseline; meanwhile estimates have confidence 0.
        """
        if duration_sec is not None:
            if not (isinstance(duration_sec, int | float) and duration_sec > 0):
                raise ValueError(f"duration_sec must be > 0 seconds, got {duration_sec!r}")
            self.config.calibration_sec = float(duration_sec)
        self._baseline = None
        self._calib = []
        self._ema = [None, None]

    def set_baseline(self, baseline: Baseline) -> None:
        """Use a stored baseline (e.g. from an earlier session of this listener)."""
        if not isinstance(baseline, Baseline):
            raise TypeError(f"baseline must be a Baseline, got {type(baseline).__name__}")
        self._baseline = baseline
        self._calib = []
        self._ema = [None, None]

    def _n_calib(self) -> int:
        return max(2, math.ceil(self.config.calibration_sec / self.config.hop_sec))

    def _finish_calibration(self) -> None:
        keys = set().union(*self._calib)
        mean, std = {}, {}
        for k in sorted(keys):
            v = np.array([f[k] for f in self._calib if k in f and math.isfinite(f[k])])
            if v.size >= 2:
                mean[k] = float(v.mean())
                std[k] = float(max(v.std(ddof=1), 1e-6 * abs(v.mean()), 1e-12))
        self._baseline = Baseline(mean, std, len(self._calib))
        logger.info("calibration done: %d windows, %d features", len(self._calib), len(mean))
        self._calib = []

    # -- streaming
    def reset(self) -> None:
        """Forget buffered samples, the held state and its average (keeps the baseline)."""
        self._layout = None
        self._state = EmotionState(0.0, 0.0, 0.0, 0.0)
        self._ema = [None, None]
        self._hr_cache = None

    def _start_layout(self, chunk: SignalChunk) -> None:
        mont = _montage(chunk.ch_names, chunk.ch_types)
        if mont.eeg.size == 0:
            raise ValueError(f"the stream has no EEG channel; types: {sorted(set(chunk.ch_types))}")
        self._layout = (chunk.sfreq, chunk.ch_names, chunk.ch_types)
        self._buf = np.empty((len(chunk.ch_names), 0))
        self._buf_start = chunk.first_sample
        self._next_end = chunk.first_sample + self._n_win
        logger.info("estimator: %d EEG channels, FAA pair %s, cardiac %s", mont.eeg.size,
                    mont.faa_names, mont.cardiac_type)

    @property
    def _n_win(self) -> int:
        return round(self.config.window_sec * self._layout[0])

    @property
    def _n_hop(self) -> int:
        return max(1, round(self.config.hop_sec * self._layout[0]))

    def push(self, chunk: SignalChunk) -> list[Estimate]:
        """Add a chunk; return the estimates of the windows it completes.

        Parameters
        ----------
        chunk : SignalChunk
            Next samples of the stream. A jump in ``first_sample`` (a gap) is
            filled with NaN, so windows across it are bad and hold the state.

        Returns
        -------
        estimates : list of Estimate
            One per hop whose window ended inside this chunk (often 0 or 1).
        """
        if not isinstance(chunk, SignalChunk):
            raise TypeError(f"push() takes a SignalChunk, got {type(chunk).__name__}")
        if self._layout is None:
            self._start_layout(chunk)
        elif (chunk.sfreq, chunk.ch_names, chunk.ch_types) != self._layout:
            raise ValueError("chunk layout changed (rate, names or types); call reset() first")
        sfreq = self._layout[0]
        buf_end = self._buf_start + self._buf.shape[1]
        data = chunk.data
        if chunk.first_sample > buf_end:  # gap: NaN, never bridged
            n_gap = chunk.first_sample - buf_end
            keep = self._keep
            fill = min(n_gap, keep)
            self._buf = np.concatenate(
                [self._buf, np.full((self._buf.shape[0], fill), np.nan)], axis=1)
            self._buf_start += n_gap - fill
            # skip the windows that would lie wholly inside the gap
            self._next_end = max(self._next_end, chunk.first_sample)
        elif chunk.first_sample < buf_end:  # overlap: drop what we have
            data = data[:, buf_end - chunk.first_sample:]
        self._buf = np.concatenate([self._buf, data], axis=1)
        self._t_ref = (chunk.first_sample, chunk.t0_sec)
        buf_end = self._buf_start + self._buf.shape[1]

        ends = []
        while self._next_end <= buf_end:
            ends.append(self._next_end)
            self._next_end += self._n_hop
        out: list[Estimate] = []
        for i in range(0, len(ends), 256):  # batches bound the memory for long pushes
            out += self._estimate(ends[i:i + 256], sfreq)
        # keep what the next windows need
        drop = max(0, buf_end - self._keep - self._buf_start)
        drop = min(drop, max(0, self._next_end - self._n_win - self._buf_start))
        if drop:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop
        return out

    @property
    def _keep(self) -> int:
        sfreq = self._layout[0]
        return max(self._n_win, round(self.config.hr_window_sec * sfreq))

    def _estimate(self, ends: list[int], sfreq: float) -> list[Estimate]:
        if not ends:
            return []
        mont = _montage(self._layout[1], self._layout[2])
        n_win = self._n_win
        rel = np.asarray(ends) - self._buf_start
        idx = rel[:, None] - n_win + np.arange(n_win)[None, :]  # (W, n_win)
        windows = self._buf[mont.eeg[None, :, None], idx[:, None, :]]  # (W, C, n_win)
        feats, quals = _eeg_features(windows, sfreq, mont, self.config)
        n_hr = round(self.config.hr_window_sec * sfreq)
        out = []
        for w, end in enumerate(ends):
            r = rel[w]
            seg = self._buf[:, max(0, r - n_win):r]
            f, q = _other_features(seg, mont, self.config)
            if mont.cardiac.size and mont.cardiac_type is not None:
                f.update(self._heart_features(end, self._buf[mont.cardiac[0], max(0, r - n_hr):r],
                                              sfreq, mont.cardiac_type))
            feats[w].update(f)
            quals[w].update(q)
            t_sec = self._t_ref[1] + (end - self._t_ref[0]) / sfreq
            bad = _is_bad(quals[w])
            quals[w]["bad"] = bad
            if not bad and self.config.reference_model:
                feats[w].update(self._reference_scores(windows[w], sfreq))
            out.append(self._update(feats[w], quals[w], bad, t_sec))
        return out

    def _heart_features(self, end: int, cardiac: np.ndarray, sfreq: float, kind: str
                        ) -> dict[str, float]:
        """Heart rate of the window ending at sample ``end``, recomputed every
        ``hr_update_sec`` (the windows in between reuse it)."""
        every = round(self.config.hr_update_sec * sfreq)
        cache = self._hr_cache
        if cache is None or not 0 <= end - cache[0] < max(every, 1):
            cache = self._hr_cache = (end, _heart(cardiac, sfreq, kind))
        return cache[1]

    def _reference_scores(self, eeg_v: np.ndarray, sfreq: float) -> dict[str, float]:
        if self._reference_failed:
            return {}
        try:
            if self._reference is None:
                self._reference = _Reference()
            return self._reference(eeg_v * 1e6, sfreq)
        except Exception as e:  # the reference is optional; never let it stop estimation
            logger.warning("BrainFlow reference model unavailable: %s", e)
            self._reference_failed = True
            return {}

    def _update(self, feats: dict[str, float], qual: dict[str, Any], bad: bool,
                t_sec: float) -> Estimate:
        cfg = self.config
        prev = self._state
        qual["calibrating"] = not self.is_calibrated
        if bad:
            self._state = EmotionState(prev.valence, prev.arousal,
                                       prev.confidence * cfg.confidence_decay, t_sec)
            return Estimate(self._state, feats, qual, True)
        if not self.is_calibrated:
            self._calib.append(feats)
            if len(self._calib) >= self._n_calib():
                self._finish_calibration()
            self._state = EmotionState(0.0, 0.0, 0.0, t_sec)
            return Estimate(self._state, feats, qual, False)
        base = self._baseline or Baseline({}, {}, 0)
        z = {k: base.z(k, v) for k, v in feats.items() if k in base.mean}
        if not base.mean:  # calibration disabled: raw features
            z = {k: v for k, v in feats.items()}
        z_faa = z.get("eeg/faa", math.nan)
        terms, weights = [], []
        for key, wt in (("eeg/log_beta_alpha", 1.0), ("hr/bpm", cfg.hr_weight)):
            if math.isfinite(z.get(key, math.nan)) and wt > 0:
                terms.append(wt * z[key])
                weights.append(wt)
        drives = (cfg.gain * z_faa if math.isfinite(z_faa) else math.nan,
                  cfg.gain * sum(terms) / sum(weights) if terms else math.nan)
        raw = [math.tanh(d) if math.isfinite(d) else held
               for d, held in zip(drives, (prev.valence, prev.arousal), strict=True)]
        smooth = list(raw)
        for k, d in enumerate(drives):  # a missing drive holds its axis and its average
            if math.isfinite(d):
                smooth[k] = math.tanh(self._smooth(k, d, t_sec))
        confidence = float(np.clip(qual["good_fraction"] * (1.0 if math.isfinite(z_faa) else 0.5),
                                   0, 1))
        self._state = EmotionState(float(np.clip(smooth[0], -1, 1)),
                                   float(np.clip(smooth[1], -1, 1)), confidence, t_sec)
        raw_state = EmotionState(float(np.clip(raw[0], -1, 1)), float(np.clip(raw[1], -1, 1)),
                                 confidence, t_sec)
        return Estimate(self._state, feats, qual, False, z, raw_state)

    def _smooth(self, k: int, drive: float, t_sec: float) -> float:
        """Exponential moving average of drive ``k`` (0 valence, 1 arousal); O(1)."""
        tau = self.config.smoothing_sec
        last = self._ema[k]
        if tau <= 0 or last is None:
            value = drive
        else:
            a = math.exp(-max(t_sec - last[1], 0.0) / tau)
            value = a * last[0] + (1 - a) * drive
        self._ema[k] = (value, t_sec)
        return value


    @property
    def state(self) -> EmotionState:
        """The latest state (held through bad windows)."""
        return self._state

    def close(self) -> None:
        """Release BrainFlow's reference models."""
        if self._reference is not None:
            self._reference.close()
            self._reference = None

    def __enter__(self) -> StateEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
