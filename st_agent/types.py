"""Small typed values that flow between the parts of the loop.

Every arrow in the design (``source -> estimator -> controller -> composer ->
renderer -> listener``) carries one of these. They are frozen dataclasses that
check their own rules on construction, in the manner of ``pretty_midi.Note``:
an invalid value cannot exist, so downstream code never re-checks it.

Units are in the names: ``*_sec`` seconds, ``*_bpm`` quarter notes per minute,
``mean_pitch`` MIDI note numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "BPM_MAX",
    "BPM_MIN",
    "CH_TYPES",
    "EmotionState",
    "Knobs",
    "Mode",
    "MusicFeatures",
    "Phrase",
    "SignalChunk",
    "bpm_from_tempo",
]

#: The tempo knob maps linearly onto this range of quarter-note BPM.
BPM_MIN = 50.0
BPM_MAX = 160.0

Mode = Literal["major", "minor"]
_MODES = ("major", "minor")


def _check_unit(name: str, value: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Return ``value`` as float, or raise a ValueError naming it and its range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(
            f"{name} must be in [{lo:g}, {hi:g}], got {value!r}; "
            f"clip it with min(max({name}, {lo:g}), {hi:g}) or fix the caller"
        )
    return value


def bpm_from_tempo(tempo: float) -> float:
    """Map the tempo knob in [0, 1] to quarter-note BPM in [50, 160].

    Parameters
    ----------
    tempo : float
        Tempo knob in [0, 1].

    Returns
    -------
    bpm : float
        ``BPM_MIN + tempo * (BPM_MAX - BPM_MIN)``, rounded to a whole BPM so
        that it survives the ABC ``Q:`` field and the MIDI tempo meta event
        unchanged.
    """
    tempo = _check_unit("tempo", tempo)
    return float(round(BPM_MIN + tempo * (BPM_MAX - BPM_MIN)))


@dataclass(frozen=True)
class Knobs:
    """The three controls the agent turns; each in [0, 1].

    Parameters
    ----------
    valence : float
        0 = dark (minor family, low register), 1 = bright (major family, high
        register).
    tempo : float
        0 = 50 BPM, 1 = 160 BPM (quarter notes), see :func:`bpm_from_tempo`.
    energy : float
        0 = sparse, soft, sustained accompaniment; 1 = dense, loud, busy.

    Examples
    --------
    >>> Knobs(valence=0.2, tempo=0.3, energy=0.1).bpm
    83.0
    """

    valence: float
    tempo: float
    energy: float

    def __post_init__(self) -> None:
        for name in ("valence", "tempo", "energy"):
            object.__setattr__(self, name, _check_unit(name, getattr(self, name)))

    @property
    def bpm(self) -> float:
        """Quarter-note BPM that the tempo knob asks for."""
        return bpm_from_tempo(self.tempo)

    def as_tuple(self) -> tuple[float, float, float]:
        """``(valence, tempo, energy)``."""
        return (self.valence, self.tempo, self.energy)

    def __repr__(self) -> str:
        return (f"Knobs(valence={self.valence:.2f}, tempo={self.tempo:.2f}, "
                f"energy={self.energy:.2f})")


@dataclass(frozen=True)
class MusicFeatures:
    """What a phrase really sounds like, measured from its rendered MIDI.

    These are never copied from the knobs: the listener responds to them, so an
    agent has to learn what the composer actually does.

    Parameters
    ----------
    duration_sec : float
        Length of the phrase, from the first onset to the end of the last bar.
    bpm : float
        Tempo from the MIDI tempo events (quarter notes per minute).
    notes_per_sec : float
        Onsets of all instruments per second.
    notes_per_beat : float
        Melody onsets per quarter note (tempo-independent density).
    mode : {"major", "minor"}
        Mode family found by key-finding on the pitch-class profile.
    mode_confidence : float
        Correlation margin of the winning key profile, in [0, 1].
    key : str
        Key name found, e.g. ``"A minor"``.
    mean_pitch : float
        Mean MIDI pitch of the melody.
    pitch_range : float
        Melody range in semitones.
    mean_velocity : float
        Mean MIDI velocity (0-127) of all notes, a proxy for loudness.
    n_notes : int
        Number of notes of all instruments.
    """

    duration_sec: float
    bpm: float
    notes_per_sec: float
    notes_per_beat: float
    mode: Mode
    mode_confidence: float
    key: str
    mean_pitch: float
    pitch_range: float
    mean_velocity: float
    n_notes: int

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        for name in ("duration_sec", "bpm", "notes_per_sec", "notes_per_beat",
                     "mean_pitch", "pitch_range", "mean_velocity"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        _check_unit("mode_confidence", self.mode_confidence)
        if self.n_notes < 0:
            raise ValueError(f"n_notes must be >= 0, got {self.n_notes!r}")

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict, for logging and JSON."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Phrase:
    """A composed piece of music: a complete, standalone ABC tune.

    Parameters
    ----------
    abc : str
        Complete ABC text (``X:``, ``M:``, ``L:``, ``Q:``, ``K:`` and body) that
        an independent ABC parser accepts.
    body : str
        The bars alone, one 4-bar phrase per line, without header; what the
        next call to the composer continues from.
    knobs : Knobs
        The knob values the phrase was composed under.
    meter : str
        ``M:`` value, e.g. ``"4/4"``.
    unit : str
        ``L:`` value, e.g. ``"1/8"``.
    key : str
        ``K:`` value, e.g. ``"Ador"``.
    bars : int
        Number of bars in ``body``.
    tries : int
        Sampling batches the composer needed (1 = the first batch had a valid
        candidate).
    """

    abc: str
    body: str
    knobs: Knobs
    meter: str
    unit: str
    key: str
    bars: int
    tries: int = 1
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.knobs, Knobs):
            raise TypeError(f"knobs must be a Knobs, got {type(self.knobs).__name__}")
        if self.bars < 1:
            raise ValueError(f"bars must be >= 1, got {self.bars!r}")
        if "K:" not in self.abc:
            raise ValueError("abc must be a complete tune with a K: field")

    @property
    def bpm(self) -> float:
        """Quarter-note BPM written in the ``Q:`` field."""
        return self.knobs.bpm


@dataclass(frozen=True)
class EmotionState:
    """An estimate of the listener's state on Russell's circumplex.

    Parameters
    ----------
    valence : float
        Unpleasant (-1) to pleasant (+1).
    arousal : float
        Deactivated (-1) to activated (+1). "Calm" is low arousal with neutral
        to positive valence.
    confidence : float
        In [0, 1]; 0 means the estimate carries no information (bad signal).
    t_sec : float
        Time of the end of the window the estimate was made from.
    """

    valence: float
    arousal: float
    confidence: float = 1.0
    t_sec: float = 0.0

    def __post_init__(self) -> None:
        _check_unit("valence", self.valence, -1.0, 1.0)
        _check_unit("arousal", self.arousal, -1.0, 1.0)
        _check_unit("confidence", self.confidence)
        if not math.isfinite(self.t_sec):
            raise ValueError(f"t_sec must be finite, got {self.t_sec!r}")


#: Channel types a biometric source may deliver (MNE's names).
CH_TYPES = ("eeg", "emg", "ecg", "ppg", "eda", "resp", "misc")


@dataclass(frozen=True, eq=False)
class SignalChunk:
    """A block of consecutive samples from a biometric source.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Samples in SI units: volts for eeg/emg/ecg (sources convert from µV
        once, on the way in), siemens for eda, arbitrary units for ppg/resp/misc.
        NaN marks samples the device did not deliver.
    sfreq : float
        Sampling rate in Hz.
    ch_names : tuple of str
        One name per row of ``data``.
    ch_types : tuple of str
        One of :data:`CH_TYPES` per row.
    first_sample : int
        Index of the first column in the stream since the source started; the
        next chunk of a gap-free stream starts at ``first_sample + n_times``.
    t0_sec : float
        Time of the first column on the source's clock (seconds).
    """

    data: np.ndarray
    sfreq: float
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    first_sample: int = 0
    t0_sec: float = 0.0

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"data must have shape (n_channels, n_times), got {data.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "ch_names", tuple(self.ch_names))
        object.__setattr__(self, "ch_types", tuple(self.ch_types))
        if not (math.isfinite(self.sfreq) and self.sfreq > 0):
            raise ValueError(f"sfreq must be a positive number of Hz, got {self.sfreq!r}")
        if len(self.ch_names) != data.shape[0] or len(self.ch_types) != data.shape[0]:
            raise ValueError(
                f"data has {data.shape[0]} channels but {len(self.ch_names)} names and "
                f"{len(self.ch_types)} types"
            )
        bad = sorted(set(self.ch_types) - set(CH_TYPES))
        if bad:
            raise ValueError(f"unknown channel types {bad}; allowed: {CH_TYPES}")
        if self.first_sample < 0:
            raise ValueError(f"first_sample must be >= 0, got {self.first_sample}")

    @property
    def n_times(self) -> int:
        """Samples per channel."""
        return self.data.shape[1]

    @property
    def duration_sec(self) -> float:
        """``n_times / sfreq``."""
        return self.n_times / self.sfreq

    def picks(self, ch_type: str) -> np.ndarray:
        """Row indices of the channels of one type."""
        return np.flatnonzero(np.asarray(self.ch_types) == ch_type)

    def __repr__(self) -> str:
        return (f"SignalChunk({self.data.shape[0]} ch x {self.n_times} samples "
                f"@ {self.sfreq:g} Hz, "
                f"first_sample={self.first_sample})")
