"""Settings of the state estimator (:class:`EstimatorConfig`) and its arousal priors.

Import them from :mod:`st_agent.biometrics.estimator`; they live here so that the
estimator module stays readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from st_agent.biometrics.eeg_markers import BANDS
from st_agent.biometrics.supervised import SupervisedMap

__all__ = ["AROUSAL_PRIORS", "EstimatorConfig"]

#: Signed prior weight of each arousal marker (+: higher value, more aroused);
#: ``hr/bpm`` is ``hr_weight``. The *signs* come from the literature
#: (:mod:`st_agent.biometrics.estimator`, step 5). The *sizes* of the EEG, heart, HRV,
#: breathing and EMG weights (with ``hr_weight`` and ``arousal_smoothing_sec``) were
#: fitted (Nelder-Mead on the mean per-listener r, then rounded) on 30 simulated listeners
#: (``bench_listener`` population seed 7), not the benchmark's (seed 0): they reflect the
#: simulator's signal model, not measured people. EDA keeps its literature prior (the
#: simulator has no EDA). The weights before: :data:`benchmarks.bench_listener.PREVIOUS`.
AROUSAL_PRIORS: dict[str, float] = {
    "eeg/log_beta_alpha": 0.7,
    "eeg/alpha_post_lrel": -0.7,
    "hr/ln_rmssd": -0.05,
    "hr/ln_hf": -0.1,
    "resp/rate_bpm": 0.05,
    "eda/tonic_us": 0.5,
    "emg/ln_rms": 0.65,
}

_POSITIVE = ("window_sec", "hop_sec", "hr_window_sec", "hrv_window_sec", "eda_window_sec",
             "gain", "flat_uv", "max_abs_uv", "blink_uv", "blink_z", "blink_cap_uv", "emg_burst_uv",
             "calibration_warn_sec", "min_hrv_sfreq")
_NON_NEGATIVE = ("hr_update_sec", "hrv_update_sec", "eda_update_sec", "calibration_sec",
                 "smoothing_sec", "blink_pad_sec", "min_calibration_sec")
_UNIT = ("clip_fraction", "muscle_ratio", "max_bad_channel_fraction", "confidence_decay",
         "hr_weight", "min_clean_fraction")


@dataclass
class EstimatorConfig:
    """Settings of the state estimator; each field documented below."""

    window_sec: float = 2.0
    """Length of the EEG analysis window, seconds."""
    hop_sec: float = 0.5
    """Step between windows, seconds (one estimate per hop)."""
    bands: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(BANDS))
    """EEG bands, name -> (low, high) Hz; must include alpha, beta and theta."""
    individual_alpha: bool = True
    """Use the listener's alpha band (peak alpha frequency ± 2 Hz, from the calibration)
    for the posterior alpha markers; else ``bands["alpha"]``."""
    calibration_sec: float = 60.0
    """Rest baseline length, seconds of good windows (0 disables z-scoring)."""
    calibration_timeout_sec: float | None = None
    """Stream seconds after which calibration falls back to the best data it has
    (None: twice ``calibration_sec``)."""
    min_calibration_sec: float = 10.0
    """Least data (seconds of windows) the fallback accepts; below it calibration waits."""
    calibration_warn_sec: float = 10.0
    """How often (stream seconds) a calibration that falls behind is reported."""
    hr_window_sec: float = 8.0
    """Window of ``hr/bpm``, seconds (also the signal buffer the estimator keeps)."""
    hrv_window_sec: float = 32.0
    """Window of RMSSD, HF power and breathing rate, seconds (several breaths)."""
    eda_window_sec: float = 10.0
    """Window of the EDA tonic level, seconds."""
    min_hrv_sfreq: float = 100.0
    """Least ECG/PPG rate (Hz) for beat-to-beat markers (:mod:`.cardiac`)."""
    hr_update_sec: float = 1.0
    """Heart and breathing markers are recomputed at most this often (s of stream
    time); the windows in between reuse the last values. 0 = every hop."""
    hrv_update_sec: float = 0.0
    """The beat-to-beat markers over ``hrv_window_sec`` (RMSSD, HF power, breathing rate
    from the heart) are recomputed at most this often (s); 0 = with ``hr/bpm`` every
    ``hr_update_sec``. The full-fidelity env uses 4 s (issue 20: their own rate;
    ``tests/test_streaming_estimator.py`` bounds what it changes)."""
    eda_update_sec: float = 4.0
    """The EDA tonic level is recomputed at most this often (s); it changes over tens
    of seconds."""
    gain: float = 0.5
    """z-score multiplier before tanh: z = 2 maps to tanh(1) ≈ 0.76."""
    hr_weight: float = 1.0
    """Prior weight of heart rate in arousal (0 ignores it; see :data:`AROUSAL_PRIORS`)."""
    arousal_weights: dict[str, float] = field(default_factory=lambda: dict(AROUSAL_PRIORS))
    """Signed prior weights of the other arousal markers (:data:`AROUSAL_PRIORS`)."""
    weighting: str = "prior"
    """``"prior"``: the priors, for the markers the calibration saw; ``"reliability"``:
    priors scaled by each marker's rest reliability (:mod:`.calibration`; lowered the
    simulated recovery of arousal, so off by default)."""
    smoothing_sec: float = 4.0
    """Time constant (s) of the exponential moving average of the state's z-scored
    drives (valence; arousal too unless ``arousal_smoothing_sec`` is set); 0 disables
    it. Adds about this much lag."""
    arousal_smoothing_sec: float | None = 2.5
    """Time constant (s) of the arousal drive's moving average (None: ``smoothing_sec``).
    Its markers are smoother than frontal asymmetry (heart rate comes from 8 s windows),
    so it needs less: 2.5 s was fitted with the weights (:data:`AROUSAL_PRIORS`)."""
    flat_uv: float = 0.5
    """A channel whose standard deviation is below this (µV) is flat."""
    max_abs_uv: float = 500.0
    """A channel that departs further than this (µV) from its median, outside eye
    artifacts, is saturated."""
    clip_fraction: float = 0.05
    """A channel with at least this share of samples at its extreme value is clipped."""
    blink_uv: float = 40.0
    """Least departure (µV) of an eye proxy from its window median that marks an eye
    artifact (:mod:`.artifacts`); a very large value turns eye detection off."""
    blink_z: float = 5.0
    """... and at least this many running robust SDs of that proxy ..."""
    blink_cap_uv: float = 150.0
    """... or this many µV, whichever is less (the SD of a stretch full of eye movements
    must not raise the threshold above real blinks)."""
    blink_pad_sec: float = 0.2
    """Eye-artifact marks are widened by this on each side, seconds."""
    min_clean_fraction: float = 0.5
    """A window with less than this share of eye-artifact-free samples is rejected
    (gate ``blink``): 1 s of a 2 s window is one Welch segment."""
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
    supervised: SupervisedMap | None = None
    """A per-listener supervised map for arousal (``st-agent calibrate``;
    :func:`~st_agent.biometrics.supervised.load_map`); None: the weighted markers."""

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        for name in _POSITIVE:
            value = getattr(self, name)
            if not (number(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in _NON_NEGATIVE:
            value = getattr(self, name)
            if not (number(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in _UNIT:
            value = getattr(self, name)
            if not (number(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.hop_sec > self.window_sec:
            raise ValueError(f"hop_sec ({self.hop_sec}) must be <= window_sec "
                             f"({self.window_sec})")
        t = self.arousal_smoothing_sec
        if t is not None and not (number(t) and t >= 0):
            raise ValueError(f"arousal_smoothing_sec must be None or >= 0 s, got {t!r}")
        t = self.calibration_timeout_sec
        if t is not None and not (number(t) and t > 0):
            raise ValueError(f"calibration_timeout_sec must be None or > 0 s, got {t!r}")
        if self.weighting not in ("reliability", "prior"):
            raise ValueError(f"weighting must be 'reliability' or 'prior', "
                             f"got {self.weighting!r}")
        for key, w in self.arousal_weights.items():
            if not number(w):
                raise ValueError(f"arousal_weights[{key!r}] must be a finite number, got {w!r}")
        if self.supervised is not None and not isinstance(self.supervised, SupervisedMap):
            raise TypeError(f"supervised must be a SupervisedMap or None, got "
                            f"{type(self.supervised).__name__}")
        missing = {"theta", "alpha", "beta"} - set(self.bands)
        if missing:
            raise ValueError(f"bands must include theta, alpha and beta; missing {missing}")
        for band, (lo, hi) in self.bands.items():
            if not 0 <= lo < hi:
                raise ValueError(f"band {band!r} must satisfy 0 <= low < high, got ({lo}, {hi})")

    def priors(self) -> dict[str, float]:
        """Signed prior arousal weights, ``hr/bpm`` included (``hr_weight``)."""
        return {**self.arousal_weights, "hr/bpm": float(self.hr_weight)}

    def marker_windows(self) -> dict[str, float]:
        """Each arousal marker's own window length, s (the lag of its reliability)."""
        out = {k: self.window_sec for k in self.priors()}
        out["hr/bpm"] = self.hr_window_sec
        for k in ("hr/ln_rmssd", "hr/ln_hf", "resp/rate_bpm"):
            out[k] = self.hrv_window_sec
        out["eda/tonic_us"] = self.eda_window_sec
        return out
