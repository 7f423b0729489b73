"""What a phrase sounds like, measured from its rendered audio (not from its MIDI).

:func:`measure_audio` returns :class:`AudioFeatures`:

- **loudness** in LUFS: integrated, gated loudness of ITU-R BS.1770-4 (K-weighting,
  400 ms blocks with 75 % overlap, absolute gate -70 LUFS, relative gate -10 LU),
  computed with ``pyloudnorm`` (Steinmetz & Reiss 2021). A 997 Hz sine at full
  scale reads -3.01 LUFS (BS.1770-4, section 2.1); silence reads the absolute
  gate, -70 LUFS.
- **spectral centroid** in Hz: per STFT frame the magnitude-weighted mean
  frequency, then averaged over frames weighted by each frame's magnitude sum
  (silent frames do not count).
- **spectral flux** (of the audio scaled to a peak of 1, so it does not follow
  the level): the spectral novelty of Müller, *Fundamentals of Music
  Processing* (2015), section 6.1.2: per frame, the half-wave rectified increase
  of the log-compressed magnitude ``log(1 + 100 |X|)`` summed over bins, here
  averaged over the bins and the frames (dimensionless, about 0 for a steady
  tone, larger for busy, changing music).
- **onset rate** in onsets per second: peaks of that novelty curve after
  subtracting its local mean (0.1 s) and normalising by its maximum, above
  ``onset_threshold`` and at least 50 ms apart (peak picking as Müller, section
  6.1.4) and above 5e-3 (log-magnitude units per bin; a steady tone stays
  below it).
- **RMS level** in dBFS (plain, unweighted).

Distances between phrases (:func:`feature_distance`) are Euclidean in
:func:`feature_coordinates`: loudness in units of 2 LU, and the centroid, the
flux and the onset rate (+0.5 Hz) on a log2 scale in units of a quarter octave
(a ratio of 1.19). These scales are an assumption, unsourced: each unit is
meant as a small but clearly audible change.

The STFT uses a Hann window of 2048 samples at 44.1 kHz (about 46 ms, scaled
with the sample rate) and a 10 ms hop. numpy and scipy only, plus pyloudnorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUDIO_FEATURE_NAMES",
    "FEATURE_SCALES",
    "AudioFeatures",
    "describe_change",
    "feature_coordinates",
    "feature_distance",
    "loudness_lufs",
    "measure_audio",
    "novelty_curve",
    "quantisation_shift",
]

#: Names of :class:`AudioFeatures` fields that :meth:`AudioFeatures.as_vector` returns.
AUDIO_FEATURE_NAMES = ("loudness_lufs", "spectral_centroid_hz", "spectral_flux", "onset_rate_hz")
#: Absolute gate of BS.1770-4 (LUFS): the loudness reported for silence.
SILENCE_LUFS = -70.0
_HOP_SEC = 0.01
_LOG_GAMMA = 100.0  # log compression of the magnitude (Müller 2015, eq. 6.4)
_MIN_ONSET_GAP_SEC = 0.05
_LOCAL_MEAN_SEC = 0.1
_MIN_PEAK = 5e-3  # enhanced novelty below this (log-magnitude units per bin) is no onset


@dataclass(frozen=True)
class AudioFeatures:
    """Features measured from a phrase's audio (see the module docstring).

    Parameters
    ----------
    loudness_lufs : float
        Integrated loudness, LUFS (>= -70).
    rms_dbfs : float
        RMS level, dB relative to full scale (-inf for silence is reported as -120).
    spectral_centroid_hz : float
        Mean spectral centroid, Hz.
    spectral_flux : float
        Mean log-compressed positive spectral flux per bin and frame.
    onset_rate_hz : float
        Detected onsets per second.
    duration_sec : float
        Length of the audio, seconds.
    """

    loudness_lufs: float
    rms_dbfs: float
    spectral_centroid_hz: float
    spectral_flux: float
    onset_rate_hz: float
    duration_sec: float

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r}")
        for name in ("spectral_centroid_hz", "spectral_flux", "onset_rate_hz", "duration_sec"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, float]:
        """Plain dict, for JSON."""
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}

    def as_vector(self) -> np.ndarray:
        """The features of :data:`AUDIO_FEATURE_NAMES`, shape (4,)."""
        return np.array([getattr(self, k) for k in AUDIO_FEATURE_NAMES], dtype=np.float64)


def _check_audio(audio: np.ndarray, sample_rate: int, min_sec: float = 0.0) -> np.ndarray:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) \
            or not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be an int in [8000, 192000] Hz, got {sample_rate!r}")
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono, shape (n_samples,), got shape {x.shape}; "
                         "average the channels first")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    if x.size < max(1, round(min_sec * sample_rate)):
        raise ValueError(f"audio must be at least {min_sec:g} s long at {sample_rate} Hz, "
                         f"got {x.size} samples")
    return x


def loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of mono audio per ITU-R BS.1770-4, in LUFS.

    Parameters
    ----------
    audio : ndarray, shape (n_samples,)
        Samples in [-1, 1] (full scale = 1).
    sample_rate : int
        Hz.

    Returns
    -------
    lufs : float
        Gated loudness; :data:`SILENCE_LUFS` (-70) when every block is below the
        absolute gate.

    Raises
    ------
    ValueError
        For audio shorter than one 400 ms block, non-mono or non-finite audio.
    ImportError
        When pyloudnorm is missing (``pip install pyloudnorm``).

    Examples
    --------
    >>> t = np.arange(44100) / 44100
    >>> abs(loudness_lufs(np.sin(2 * np.pi * 997 * t), 44100) - (-3.01)) < 0.1
    True
    """
    x = _check_audio(audio, sample_rate, min_sec=0.4)
    try:
        import pyloudnorm
    except ImportError as e:
        raise ImportError("loudness in LUFS needs pyloudnorm: pip install pyloudnorm") from e
    value = float(pyloudnorm.Meter(int(sample_rate)).integrated_loudness(x))
    return value if math.isfinite(value) and value > SILENCE_LUFS else SILENCE_LUFS


def _stft_mag(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Magnitude STFT, shape (n_frames, n_bins), bin frequencies (Hz) and frame rate (Hz)."""
    n_fft = 1 << max(8, round(math.log2(2048 * sample_rate / 44100)))
    hop = max(1, round(_HOP_SEC * sample_rate))
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n_frames = 1 + (x.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]  # (F, n_fft)
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))  # (F, n_fft // 2 + 1)
    return mag, np.fft.rfftfreq(n_fft, 1.0 / sample_rate), sample_rate / hop


def novelty_curve(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Spectral-flux novelty per frame (Müller 2015, section 6.1.2).

    Parameters
    ----------
    audio : ndarray, shape (n_samples,)
    sample_rate : int
        Hz.

    Returns
    -------
    novelty : ndarray, shape (n_frames,)
        Positive increase of ``log(1 + 100 |X|)`` from the previous frame,
        averaged over bins (the first frame is 0). Frame ``k`` covers samples
        ``[k * hop, k * hop + n_fft)`` of the audio scaled to a peak of 1.
    frame_rate_hz : float
        Frames per second.
    """
    x = _check_audio(audio, sample_rate)
    mag, _, rate = _stft_mag(_unit_peak(x), sample_rate)
    return _novelty(np.log1p(_LOG_GAMMA * mag)), rate


def _unit_peak(x: np.ndarray) -> np.ndarray:
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return x / top if top > 0 else x


def _novelty(logmag: np.ndarray) -> np.ndarray:
    d = np.diff(logmag, axis=0, prepend=logmag[:1])
    return np.maximum(d, 0.0).mean(axis=1)


def _count_onsets(novelty: np.ndarray, frame_rate: float, threshold: float) -> int:
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import find_peaks

    if novelty.size < 3:
        return 0
    width = max(1, round(_LOCAL_MEAN_SEC * frame_rate))
    enhanced = np.maximum(novelty - uniform_filter1d(novelty, width, mode="nearest"), 0.0)
    top = float(enhanced.max())
    if top < _MIN_PEAK:
        return 0
    peaks, _ = find_peaks(enhanced, height=max(threshold * top, _MIN_PEAK),
                          distance=max(1, round(_MIN_ONSET_GAP_SEC * frame_rate)))
    return int(peaks.size)


def measure_audio(audio: np.ndarray, sample_rate: int, onset_threshold: float = 0.1
                  ) -> AudioFeatures:
    """Loudness, spectral centroid and flux, and onset rate of mono audio.

    Parameters
    ----------
    audio : ndarray, shape (n_samples,)
        Samples in [-1, 1], at least 0.4 s long.
    sample_rate : int
        Hz.
    onset_threshold : float
        Peak height (fraction of the largest enhanced novelty peak) that counts
        as an onset, in (0, 1).

    Returns
    -------
    features : AudioFeatures

    Raises
    ------
    ValueError
        For audio shorter than 0.4 s, non-mono or non-finite audio, or a bad
        threshold.

    Examples
    --------
    >>> t = np.arange(44100) / 44100
    >>> f = measure_audio(0.5 * np.sin(2 * np.pi * 440 * t), 44100)
    >>> round(f.spectral_centroid_hz), f.onset_rate_hz
    (440, 0.0)
    """
    if not (isinstance(onset_threshold, int | float) and 0 < onset_threshold < 1):
        raise ValueError(f"onset_threshold must be in (0, 1), got {onset_threshold!r}")
    x = _check_audio(audio, sample_rate, min_sec=0.4)
    duration = x.size / sample_rate
    rms = float(np.sqrt(np.mean(x * x)))
    mag, freqs, rate = _stft_mag(_unit_peak(x), sample_rate)
    frame_sum = mag.sum(axis=1)  # (F,)
    total = float(frame_sum.sum())
    centroid = float((mag @ freqs).sum() / total) if total > 0 else 0.0
    novelty = _novelty(np.log1p(_LOG_GAMMA * mag))
    return AudioFeatures(
        loudness_lufs=loudness_lufs(x, sample_rate),
        rms_dbfs=20 * math.log10(rms) if rms > 1e-6 else -120.0,
        spectral_centroid_hz=centroid,
        spectral_flux=float(novelty.mean()),
        onset_rate_hz=_count_onsets(novelty, rate, float(onset_threshold)) / duration,
        duration_sec=duration,
    )


#: One unit of each coordinate of :func:`feature_coordinates` (assumption, unsourced):
#: loudness in LU; the others in octaves (log2 ratios).
FEATURE_SCALES: dict[str, float] = {"loudness_lufs": 2.0, "spectral_centroid_hz": 0.25,
                                    "spectral_flux": 0.25, "onset_rate_hz": 0.25}
_LOG_OFFSET = {"spectral_centroid_hz": 1.0, "spectral_flux": 1e-4, "onset_rate_hz": 0.5}
_WORDS = {"loudness_lufs": ("louder", "softer", "LU"),
          "spectral_centroid_hz": ("brighter", "darker", "Hz centroid"),
          "spectral_flux": ("busier spectrum", "steadier spectrum", "flux"),
          "onset_rate_hz": ("more onsets", "fewer onsets", "onsets/s")}


def feature_coordinates(features: AudioFeatures | np.ndarray) -> np.ndarray:
    """Perceptual coordinates of audio features (module docstring), shape (..., 4).

    Parameters
    ----------
    features : AudioFeatures or ndarray, shape (..., 4)
        Values in the order of :data:`AUDIO_FEATURE_NAMES`.

    Returns
    -------
    coords : ndarray, shape (..., 4)
        Loudness / 2 LU, then log2 of centroid, flux and onset rate over a
        quarter octave.
    """
    x = features.as_vector() if isinstance(features, AudioFeatures) \
        else np.asarray(features, dtype=np.float64)
    if x.shape[-1] != len(AUDIO_FEATURE_NAMES):
        raise ValueError(f"features must have {len(AUDIO_FEATURE_NAMES)} values "
                         f"{AUDIO_FEATURE_NAMES} on the last axis, got shape {x.shape}")
    out = np.empty_like(x, dtype=np.float64)
    for i, name in enumerate(AUDIO_FEATURE_NAMES):
        v = x[..., i]
        if name in _LOG_OFFSET:
            v = np.log2(np.maximum(v, 0.0) + _LOG_OFFSET[name])
        out[..., i] = v / FEATURE_SCALES[name]
    return out


def feature_distance(a: AudioFeatures | np.ndarray, b: AudioFeatures | np.ndarray) -> float:
    """Euclidean distance of two phrases in :func:`feature_coordinates` (dimensionless)."""
    return float(np.linalg.norm(feature_coordinates(a) - feature_coordinates(b)))


def quantisation_shift(audio: np.ndarray, sample_rate: int, rng: np.random.Generator,
                       bits: int = 16, measured: AudioFeatures | None = None) -> np.ndarray:
    """How far quantisation alone moves the features of ``audio``, coordinate units (4,).

    The audio is quantised once more to ``bits`` bits with TPDF dither (the
    difference of two uniform draws, 1 LSB each) and measured again; the
    absolute change of :func:`feature_coordinates` estimates what one
    quantisation does to this phrase. It matters because the spectral flux
    and centroid are measured on the audio scaled to a peak of 1: in a quiet
    phrase of a 16-bit file the quantisation noise is scaled up with it, and
    shows as "busier" or "brighter" (measured on the calm and focus presets'
    phrases, peak at 0 / -20 / -40 dB: flux moves by 0.001-0.006 / 0.11-0.47 /
    2.1-3.7 coordinate units; ``benchmarks/bench_voices_v2.py``).

    Parameters
    ----------
    audio : ndarray, shape (n_samples,)
        Samples in [-1, 1], at least 0.4 s.
    sample_rate : int
        Hz.
    rng : numpy.random.Generator
        The dither.
    bits : int
        Word length of the file (16 for session.wav).
    measured : AudioFeatures, optional
        ``measure_audio(audio, sample_rate)`` when already known (saves one measurement).

    Returns
    -------
    shift : ndarray, shape (4,)
        Per feature of :data:`AUDIO_FEATURE_NAMES`, >= 0.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 32:
        raise ValueError(f"bits must be an int in [8, 32], got {bits!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    x = _check_audio(audio, sample_rate, min_sec=0.4)
    lsb = 2.0 ** (1 - bits)
    dither = (rng.random(x.size) - rng.random(x.size)) * lsb
    q = np.clip(np.round((x + dither) / lsb) * lsb, -1.0, 1.0)
    base = measured if measured is not None else measure_audio(x, sample_rate)
    return np.abs(feature_coordinates(measure_audio(q, sample_rate)) - feature_coordinates(base))


def describe_change(prev: AudioFeatures, cur: AudioFeatures, top: int = 2,
                    noise_floor: np.ndarray | None = None) -> str:
    """The audio features that changed most from ``prev`` to ``cur``, in words.

    Parameters
    ----------
    prev, cur : AudioFeatures
    top : int
        How many features to name (the largest changes in coordinate units).
    noise_floor : ndarray, shape (4,), optional
        Per feature, changes (coordinate units) that measurement noise alone
        gives, e.g. the sum of both phrases' :func:`quantisation_shift`; a
        change at or below it is not reported. Default: none (only the tenth
        of a unit below which nothing is reported).

    Returns
    -------
    text : str
        E.g. ``"louder (+3.1 LU), more onsets (+0.8 onsets/s)"``; ``"no audible
        change"`` when every change is under a tenth of a unit or its noise floor.

    Examples
    --------
    >>> a = AudioFeatures(-30.0, -30.0, 800.0, 0.01, 2.0, 8.0)
    >>> b = AudioFeatures(-24.0, -24.0, 800.0, 0.01, 2.0, 8.0)
    >>> describe_change(a, b)
    'louder (+6.0 LU)'
    """
    d = feature_coordinates(cur) - feature_coordinates(prev)
    floor = np.full(len(AUDIO_FEATURE_NAMES), 0.1)
    if noise_floor is not None:
        nf = np.asarray(noise_floor, dtype=np.float64)
        if nf.shape != floor.shape or not np.all(np.isfinite(nf)) or np.any(nf < 0):
            raise ValueError(f"noise_floor must be {len(floor)} finite values >= 0 (coordinate "
                             f"units, order {AUDIO_FEATURE_NAMES}), got {noise_floor!r}")
        floor = np.maximum(floor, np.nextafter(nf, np.inf))
    order = [i for i in np.argsort(-np.abs(d)) if abs(d[i]) >= floor[i]][:max(1, int(top))]
    if not order:
        return "no audible change"
    parts = []
    for i in order:
        name = AUDIO_FEATURE_NAMES[i]
        up, down, unit = _WORDS[name]
        delta = getattr(cur, name) - getattr(prev, name)
        fmt = f"{delta:+.1f}" if name != "spectral_flux" else f"{delta:+.4f}"
        parts.append(f"{up if d[i] > 0 else down} ({fmt} {unit})")
    return ", ".join(parts)
