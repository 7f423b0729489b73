"""Several performers, one piece: negotiation, multi-voice ABC, rendering and clashes.

In a jam every performer turns their own three knobs. This module turns N knob
proposals into one piece that stays in one key and metre while each voice
keeps its own character.

Negotiation (:func:`negotiate`)
-------------------------------
* **Tempo** is shared: the weighted mean of the performers' tempo knobs
  (equal weights by default), then clipped into the intersection of every
  performer's tempo bounds, so the piece respects all of them.
* **Mode** is shared and voted: a performer votes *major* when their valence
  knob is >= 0.5 (the composer's own split between the major and the minor
  family), *minor* otherwise; votes carry the same weights as tempo. A tie
  keeps the previous phrase's mode (no flapping); with no previous phrase it
  goes to the side of the weighted mean valence (>= 0.5 major). A mode that a
  performer's valence bounds exclude cannot win; when the bounds leave only
  one mode, it is played.
* **Key**: one tonic for the whole piece; the mode family picks the parallel
  key (``A`` major or ``A`` minor by default, as the composer does), so a mode
  change keeps the tonic.
* Each **voice** keeps its own valence inside the chosen family (clamped to
  [0.5, 1] for major, [0, 0.49] for minor, then into its bounds): it sets the
  voice's register through the composer, plus an octave shift in the renderer
  (:func:`register_offset`). Its energy sets its note density (composer) and
  loudness (renderer, :func:`voice_velocity`).

Clash measure (:func:`count_clashes`)
-------------------------------------
The music is sliced on a sixteenth-note grid (4 steps per quarter note). A
*simultaneity* is a grid step at which at least one performer voice starts a
note. It is *dissonant* when two notes of **different** performer voices
sounding at that step are a minor second, a tritone or a major seventh apart
as pitch classes (intervals 1, 6, 11 semitones mod 12; octave-equivalent, so
minor ninths count too). **Clashes per bar** is the number of dissonant
simultaneities divided by the number of bars. The shared accompaniment (bass,
chords) is left out: it follows the voices. A step is measured on pitch-class
bit masks (bit ``pc`` set when pitch class ``pc`` sounds), the same way for a
rendered MIDI (:func:`voice_masks`) and for the phrase bank of the fast jam
environment.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pretty_midi

from st_agent.contract import SafetyBounds
from st_agent.music.abc import abc_to_midi
from st_agent.music.render import ArrangementConfig, arrange, measure_features, parse_meter
from st_agent.types import Knobs, MusicFeatures, Phrase

__all__ = [
    "DEFAULT_PROGRAMS",
    "DISSONANT_INTERVALS",
    "MAX_PERFORMERS",
    "MIN_PERFORMERS",
    "STEPS_PER_QUARTER",
    "Ensemble",
    "EnsembleMeasurement",
    "EnsemblePhrase",
    "Negotiation",
    "check_per_performer",
    "check_performers",
    "count_clashes",
    "ensemble_abc",
    "family_valence",
    "negotiate",
    "register_offset",
    "voice_masks",
    "voice_velocity",
]

logger = logging.getLogger(__name__)

MIN_PERFORMERS, MAX_PERFORMERS = 2, 8
#: Pitch-class intervals (semitones mod 12) counted as clashes: m2, tritone, M7.
DISSONANT_INTERVALS = (1, 6, 11)
#: Grid of the clash measure: sixteenth notes.
STEPS_PER_QUARTER = 4
#: General MIDI programs (from 0) of voices 0..7: Acoustic Grand Piano, Violin,
#: Flute, Acoustic Guitar (nylon), Vibraphone, Trumpet, Clarinet, Oboe.
DEFAULT_PROGRAMS = (0, 40, 73, 24, 11, 56, 71, 68)
_MINOR_TOP = 0.49  # highest valence of the minor family (the composer splits at 0.5)

Mode = Literal["major", "minor"]


def check_performers(performers: int) -> int:
    """Validate a performer count.

    Raises
    ------
    ValueError
        ``performers must be an int in [2, 8], got 9``.
    """
    if isinstance(performers, bool) or not isinstance(performers, int | np.integer) \
            or not MIN_PERFORMERS <= performers <= MAX_PERFORMERS:
        raise ValueError(f"performers must be an int in [{MIN_PERFORMERS}, {MAX_PERFORMERS}], "
                         f"got {performers!r}")
    return int(performers)


def check_per_performer(name: str, values: Sequence, performers: int) -> list:
    """A per-performer list (boards, targets, listeners, bounds) must have one entry each.

    Raises
    ------
    ValueError
        ``boards has 2 entries but performers=3; give one per performer``.
    """
    performers = check_performers(performers)
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list with one entry per performer ({performers}), "
                         f"got {values!r}")
    if len(values) != performers:
        raise ValueError(f"{name} has {len(values)} entries but performers={performers}; "
                         "give one per performer")
    return list(values)


# --------------------------------------------------------------------------- negotiation


def _family_range(mode: str) -> tuple[float, float]:
    return (0.5, 1.0) if mode == "major" else (0.0, _MINOR_TOP)


def family_valence(valence: float, mode: str, bounds: SafetyBounds | None = None) -> float:
    """A voice's valence inside the negotiated mode family (and its own bounds).

    Parameters
    ----------
    valence : float
        The voice's valence knob in [0, 1].
    mode : {"major", "minor"}
    bounds : SafetyBounds, optional
        The performer's bounds; the result stays in their valence range where
        it meets the family's half ([0.5, 1] major, [0, 0.49] minor).

    Returns
    -------
    valence : float
    """
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    lo, hi = _family_range(mode)
    if bounds is not None:
        blo, bhi = bounds.valence
        if blo <= hi and bhi >= lo:
            lo, hi = max(lo, blo), min(hi, bhi)
    return float(min(max(valence, lo), hi))


def register_offset(valence: float) -> int:
    """Octave shift (semitones) of a voice in the renderer: -12 below valence 0.25,
    +12 from 0.75 on, else 0 (higher valence, higher register)."""
    return -12 if valence < 0.25 else (12 if valence >= 0.75 else 0)


def voice_velocity(energy: float, config: ArrangementConfig | None = None) -> float:
    """Mean MIDI velocity of a voice: linear in energy between the arrangement's
    ``velocity_min`` and ``velocity_max`` (as the single-listener melody)."""
    cfg = config or ArrangementConfig()
    return cfg.velocity_min + (cfg.velocity_max - cfg.velocity_min) * float(energy)


@dataclass(frozen=True)
class Negotiation:
    """The shared settings of one phrase (see the module docstring for the rule).

    Parameters
    ----------
    tempo : float
        Shared tempo knob in [0, 1].
    mode : {"major", "minor"}
        Shared mode family.
    key : str
        ABC ``K:`` of the phrase.
    votes_major, votes_minor : float
        Weighted votes (weights sum to 1).
    voice_valence : tuple of float
        Each voice's valence inside the family (N).
    """

    tempo: float
    mode: Mode
    key: str
    votes_major: float
    votes_minor: float
    voice_valence: tuple[float, ...]

    @property
    def bpm(self) -> float:
        """Shared quarter-note BPM."""
        return Knobs(0.5, self.tempo, 0.5).bpm

    def voice_knobs(self, proposals: Sequence[Knobs]) -> list[Knobs]:
        """The knobs each voice is composed under: its family valence, the shared
        tempo and its own energy."""
        return [Knobs(v, self.tempo, k.energy)
                for v, k in zip(self.voice_valence, proposals, strict=True)]


def _as_proposals(proposals: Sequence[Knobs] | np.ndarray) -> np.ndarray:
    if isinstance(proposals, np.ndarray):
        arr = np.asarray(proposals, dtype=np.float64)
    else:
        if not all(isinstance(k, Knobs) for k in proposals):
            raise TypeError("proposals must be Knobs or an array of shape (N, 3)")
        arr = np.array([k.as_tuple() for k in proposals], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"proposals must have shape (N, 3), got {arr.shape}")
    check_performers(arr.shape[0])
    if not np.all(np.isfinite(arr) & (arr >= 0) & (arr <= 1)):
        raise ValueError(f"proposal knobs must be in [0, 1], got {arr.tolist()}")
    return arr


def negotiate(proposals: Sequence[Knobs] | np.ndarray, weights: Sequence[float] | None = None,
              previous_mode: Mode | None = None,
              bounds: Sequence[SafetyBounds] | None = None,
              major_key: str = "A", minor_key: str = "Am") -> Negotiation:
    """Shared tempo, mode and key from N performers' knob proposals.

    Parameters
    ----------
    proposals : sequence of Knobs or ndarray, shape (N, 3)
        Each performer's (valence, tempo, energy), 2 <= N <= 8.
    weights : sequence of float, optional
        Non-negative weight per performer (e.g. estimator confidence), not
        all zero; default equal.
    previous_mode : {"major", "minor"}, optional
        Mode of the previous phrase: it wins a tie.
    bounds : sequence of SafetyBounds, optional
        Each performer's bounds: the shared tempo is clipped into their
        intersection, a mode some performer's valence range excludes cannot
        win, and each voice's valence stays in its own range.
    major_key, minor_key : str
        ``K:`` of the two families (parallel keys keep the tonic).

    Returns
    -------
    negotiation : Negotiation

    Raises
    ------
    ValueError
        For a proposal count outside [2, 8], bad weights, or bounds that
        leave no common tempo or mode.

    Examples
    --------
    >>> n = negotiate([Knobs(0.8, 0.2, 0.5), Knobs(0.6, 0.6, 0.5), Knobs(0.1, 1.0, 0.1)])
    >>> round(n.tempo, 3), n.mode, n.key
    (0.6, 'major', 'A')
    """
    arr = _as_proposals(proposals)
    n = arr.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (n,) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
            raise ValueError(f"weights must be {n} non-negative numbers, not all 0, got "
                             f"{list(weights)!r}")
        w = w / w.sum()
    if previous_mode is not None and previous_mode not in ("major", "minor"):
        raise ValueError(f"previous_mode must be 'major', 'minor' or None, got {previous_mode!r}")
    t_lo, t_hi, allowed = 0.0, 1.0, {"major", "minor"}
    if bounds is not None:
        bounds = check_per_performer("bounds", bounds, n)
        t_lo = max(b.tempo[0] for b in bounds)
        t_hi = min(b.tempo[1] for b in bounds)
        if t_lo > t_hi:
            raise ValueError(f"the performers' tempo bounds do not overlap "
                             f"({[b.tempo for b in bounds]}); no shared tempo respects them all")
        for mode in ("major", "minor"):
            lo, hi = _family_range(mode)
            if any(b.valence[0] > hi or b.valence[1] < lo for b in bounds):
                allowed.discard(mode)
        if not allowed:
            raise ValueError(f"the performers' valence bounds ({[b.valence for b in bounds]}) "
                             "leave neither the major nor the minor family to all of them")
    tempo = float(np.clip(np.dot(w, arr[:, 1]), t_lo, t_hi))
    major = arr[:, 0] >= 0.5
    v_major, v_minor = float(w[major].sum()), float(w[~major].sum())
    if len(allowed) == 1:
        mode = next(iter(allowed))
    elif not math.isclose(v_major, v_minor, abs_tol=1e-12):
        mode = "major" if v_major > v_minor else "minor"
    elif previous_mode is not None:
        mode = previous_mode
    else:
        mode = "major" if float(np.dot(w, arr[:, 0])) >= 0.5 else "minor"
    voice_v = tuple(family_valence(float(arr[i, 0]), mode,
                                   bounds[i] if bounds is not None else None) for i in range(n))
    return Negotiation(tempo=tempo, mode=mode, key=major_key if mode == "major" else minor_key,
                       votes_major=v_major, votes_minor=v_minor, voice_valence=voice_v)


# --------------------------------------------------------------------------- ABC


def ensemble_abc(bodies: Sequence[str], key: str, meter: str, unit: str, bpm: float,
                 programs: Sequence[int], title: str = "jam") -> str:
    """One multi-voice ABC tune: a shared header and one ``V:`` section per voice.

    Parameters
    ----------
    bodies : sequence of str
        Each voice's bars (same length in bars).
    key, meter, unit : str
        Shared ``K:``, ``M:`` and ``L:``.
    bpm : float
        Shared ``Q:1/4=`` tempo.
    programs : sequence of int
        General MIDI program (0-127) per voice, written as ``%%MIDI program``
        (abc2midi honours it; other parsers read it as a comment).
    title : str
        ``T:`` field.

    Returns
    -------
    abc : str
    """
    if len(bodies) != len(programs):
        raise ValueError(f"{len(bodies)} voice bodies but {len(programs)} programs")
    head = ["X:1", f"T:{title}", f"M:{meter}", f"L:{unit}", f"Q:1/4={round(bpm)}", f"K:{key}"]
    lines = list(head)
    for i, (body, prog) in enumerate(zip(bodies, programs, strict=True)):
        lines += [f'V:{i + 1} name="performer_{i}"', f"%%MIDI program {int(prog)}",
                  body.strip("\n")]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EnsemblePhrase:
    """One phrase of a jam: each voice's phrase and the combined tune.

    Parameters
    ----------
    abc : str
        The multi-voice tune (:func:`ensemble_abc`).
    voices : tuple of Phrase
        Each voice as the composer wrote it (its own standalone tune).
    proposals : tuple of Knobs
        The performers' knobs.
    negotiation : Negotiation
    programs : tuple of int
        General MIDI program per voice.
    """

    abc: str
    voices: tuple[Phrase, ...]
    proposals: tuple[Knobs, ...]
    negotiation: Negotiation
    programs: tuple[int, ...]
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_voices(self) -> int:
        """Number of voices (performers)."""
        return len(self.voices)

    @property
    def meter(self) -> str:
        """Shared ``M:``."""
        return self.voices[0].meter

    @property
    def bars(self) -> int:
        """Bars in the phrase."""
        return self.voices[0].bars


# --------------------------------------------------------------------------- clashes

_PC = np.arange(12)
_ROT = np.array([[sum(1 << ((pc + d) % 12) for pc in _PC if m >> pc & 1) for m in range(4096)]
                 for d in DISSONANT_INTERVALS])
#: ``_DISSONANT_WITH[m]``: the pitch classes dissonant with any pitch class of mask ``m``.
_DISSONANT_WITH = np.bitwise_or.reduce(_ROT, axis=0).astype(np.int64)


def voice_masks(pm: pretty_midi.PrettyMIDI, instruments: Sequence[pretty_midi.Instrument],
                n_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pitch-class bit masks of each voice on the sixteenth-note grid.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        The MIDI the instruments belong to (its tempo map sets the grid).
    instruments : sequence of pretty_midi.Instrument
        The voices (V).
    n_steps : int, optional
        Grid length; default: up to the last note end.

    Returns
    -------
    sounding : ndarray of int64, shape (V, n_steps)
        Bit ``pc`` set when a note of pitch class ``pc`` sounds at the step's start.
    onset : ndarray of int64, shape (V, n_steps)
        Bit ``pc`` set when such a note starts on that step.
    """
    res = pm.resolution

    def step_of(t: float) -> float:
        return pm.time_to_tick(t) / res * STEPS_PER_QUARTER

    spans = [[(step_of(n.start), step_of(n.end), n.pitch % 12) for n in inst.notes]
             for inst in instruments]
    if n_steps is None:
        n_steps = max([math.ceil(e - 1e-3) for sp in spans for _, e, _ in sp] or [0])
    sounding = np.zeros((len(instruments), n_steps), dtype=np.int64)
    onset = np.zeros_like(sounding)
    for v, sp in enumerate(spans):
        for s, e, pc in sp:
            first = max(0, round(s))
            last = min(n_steps, math.ceil(e - 0.25))  # a note sounds on the steps it covers
            if first < n_steps:
                onset[v, first] |= 1 << pc
            if last > first:
                sounding[v, first:last] |= 1 << pc
    return sounding, onset


def count_clashes(sounding: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Dissonant simultaneities (module docstring) of one or many phrases.

    Parameters
    ----------
    sounding, onset : ndarray of int, shape (..., V, n_steps)
        Pitch-class masks per voice and grid step (:func:`voice_masks`).

    Returns
    -------
    count : ndarray of int, shape (...)
        Grid steps where some voice starts a note and two different voices
        sound pitch classes 1, 6 or 11 semitones apart.
    """
    s = np.asarray(sounding, dtype=np.int64)
    o = np.asarray(onset, dtype=np.int64)
    dis = _DISSONANT_WITH[s]  # (..., V, S)
    n_v = s.shape[-2]
    clash = np.zeros(s.shape[:-2] + s.shape[-1:], dtype=bool)
    for j in range(n_v):
        for k in range(j + 1, n_v):
            clash |= (s[..., j, :] & dis[..., k, :]) != 0
    any_onset = np.any(o != 0, axis=-2)
    return np.sum(clash & any_onset, axis=-1)


# --------------------------------------------------------------------------- ensemble


def _instrument(program: int, name: str, notes: list[pretty_midi.Note]) -> pretty_midi.Instrument:
    inst = pretty_midi.Instrument(program=program, name=name)
    inst.notes = list(notes)
    return inst


@dataclass(frozen=True)
class EnsembleMeasurement:
    """What a rendered jam phrase really is (measured from its MIDI).

    Parameters
    ----------
    voices : tuple of MusicFeatures
        Each voice measured with the shared accompaniment (as a single
        listener's phrase is measured), N.
    mix : MusicFeatures
        The whole piece (all voices as the melody, plus accompaniment).
    clashes : int
        Dissonant simultaneities between voices (:func:`count_clashes`).
    n_bars : int
    """

    voices: tuple[MusicFeatures, ...]
    mix: MusicFeatures
    clashes: int
    n_bars: int

    @property
    def clashes_per_bar(self) -> float:
        """Dissonant simultaneities per bar."""
        return self.clashes / max(self.n_bars, 1)


class Ensemble:
    """Compose, render and measure jam phrases with the real composer.

    Parameters
    ----------
    composer : Composer, optional
        Default: a :class:`~st_agent.music.composer.Composer` with the bundled checkpoint.
    programs : sequence of int
        General MIDI program of voices 0..N-1 (distinct), default
        :data:`DEFAULT_PROGRAMS`.
    accompaniment : bool
        Add a shared bass and chords (arranged from all voices at the mean
        energy) under the voices.
    arrangement : ArrangementConfig, optional
        Velocity range and accompaniment instruments.

    Examples
    --------
    >>> ens = Ensemble()                                             # doctest: +SKIP
    >>> ph = ens.compose([Knobs(0.2, 0.2, 0.2), Knobs(0.8, 0.6, 0.9)], seed=0)  # doctest: +SKIP
    >>> m = ens.measure(ens.render(ph), ph.n_voices)                 # doctest: +SKIP
    """

    def __init__(self, composer: object | None = None, programs: Sequence[int] = DEFAULT_PROGRAMS,
                 accompaniment: bool = True, arrangement: ArrangementConfig | None = None) -> None:
        progs = tuple(programs)
        if len(progs) < MIN_PERFORMERS or len(set(progs)) != len(progs) or not all(
                isinstance(p, int) and 0 <= p <= 127 for p in progs):
            raise ValueError(f"programs must be distinct General MIDI programs 0-127, at least "
                             f"{MIN_PERFORMERS}, got {programs!r}")
        if composer is None:
            from st_agent.music.composer import Composer

            composer = Composer()
        self.composer = composer
        self.programs = progs
        self.accompaniment = bool(accompaniment)
        self.arrangement = arrangement or ArrangementConfig()

    def compose(self, proposals: Sequence[Knobs], context: EnsemblePhrase | None = None,
                seed: int | None = None, weights: Sequence[float] | None = None,
                bounds: Sequence[SafetyBounds] | None = None,
                negotiation: Negotiation | None = None) -> EnsemblePhrase:
        """Negotiate, then compose one phrase per voice under the shared settings.

        Parameters
        ----------
        proposals : sequence of Knobs
            Each performer's knobs (N, 2 <= N <= len(programs)).
        context : EnsemblePhrase, optional
            The previous jam phrase: each voice continues its own line, and a
            tied vote keeps its mode.
        seed : int, optional
            Voice ``i`` is composed with seed ``seed + i``.
        weights, bounds
            As for :func:`negotiate`.
        negotiation : Negotiation, optional
            Already negotiated settings (e.g. by an environment); skips the vote.

        Returns
        -------
        phrase : EnsemblePhrase
        """
        n = len(proposals)
        check_performers(n)
        if n > len(self.programs):
            raise ValueError(f"{n} performers but only {len(self.programs)} programs")
        if context is not None and context.n_voices != n:
            raise ValueError(f"context has {context.n_voices} voices but {n} proposals")
        cfg = self.composer.config
        neg = negotiation if negotiation is not None else negotiate(
            proposals, weights, context.negotiation.mode if context is not None else None,
            bounds, major_key=cfg.major_key, minor_key=cfg.minor_key)
        if len(neg.voice_valence) != n:
            raise ValueError(f"negotiation has {len(neg.voice_valence)} voices but {n} proposals")
        base = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
        voices = []
        for i, knobs in enumerate(neg.voice_knobs(proposals)):
            ctx = context.voices[i] if context is not None else None
            voices.append(self.composer.compose(knobs, context=ctx, seed=base + i))
        first = voices[0]
        if any(v.key != neg.key or v.meter != first.meter or v.unit != first.unit
               or v.bars != first.bars for v in voices):
            raise RuntimeError(f"voices disagree on key/meter/unit/bars: "
                               f"{[(v.key, v.meter, v.unit, v.bars) for v in voices]}")
        progs = self.programs[:n]
        abc = ensemble_abc([v.body for v in voices], neg.key, first.meter, first.unit,
                           neg.bpm, progs)
        return EnsemblePhrase(abc=abc, voices=tuple(voices), proposals=tuple(proposals),
                              negotiation=neg, programs=progs)

    def render(self, phrase: EnsemblePhrase) -> pretty_midi.PrettyMIDI:
        """The multi-voice MIDI: instruments ``"voice 0"`` .. (each on its own
        program, shifted by :func:`register_offset`, velocity from its energy),
        then ``"bass"`` and ``"chords"`` when ``accompaniment``.

        Raises
        ------
        st_agent.music.abc.AbcError
            When abc2midi rejects the tune.
        """
        pm = abc_to_midi(phrase.abc)
        by_program: dict[int, list[pretty_midi.Note]] = {}
        for inst in pm.instruments:
            if not inst.is_drum:
                by_program.setdefault(inst.program, []).extend(inst.notes)
        voices = []
        for i, prog in enumerate(phrase.programs):
            notes = sorted(by_program.get(prog, []), key=lambda n: (n.start, n.pitch))
            if not notes:
                raise RuntimeError(f"voice {i} (program {prog}) has no notes in the MIDI")
            shift = register_offset(phrase.negotiation.voice_valence[i])
            vel = voice_velocity(phrase.proposals[i].energy, self.arrangement)
            mean_v = float(np.mean([n.velocity for n in notes]))
            inst = pretty_midi.Instrument(program=prog, name=f"voice {i}")
            for n in notes:
                v = int(min(max(round(vel + 0.5 * (n.velocity - mean_v)), 1), 127))
                p = int(min(max(n.pitch + shift, 0), 127))
                inst.notes.append(pretty_midi.Note(v, p, n.start, n.end))
            voices.append(inst)
        pm.instruments = voices
        if self.accompaniment:
            merged = copy.deepcopy(pm)
            merged.instruments = [_instrument(0, "melody", [n for v in voices for n in v.notes])]
            energy = float(np.mean([k.energy for k in phrase.proposals]))
            arranged = arrange(merged, phrase.negotiation.key,
                               Knobs(0.5, phrase.negotiation.tempo, energy),
                               meter=phrase.meter, config=self.arrangement)
            pm.instruments += [i for i in arranged.instruments if i.name in ("bass", "chords")]
        return pm

    @staticmethod
    def measure(pm: pretty_midi.PrettyMIDI, n_voices: int, bars: int | None = None,
                meter: str = "4/4") -> EnsembleMeasurement:
        """Per-voice and mix features and the clashes of a rendered jam phrase.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI
            From :meth:`render` (voices first, then accompaniment).
        n_voices : int
        bars : int, optional
            Bars in the phrase (default: from the voices' length).
        meter : str
            ``M:`` (sets the bar length).

        Returns
        -------
        measurement : EnsembleMeasurement
        """
        voices = pm.instruments[:n_voices]
        accomp = pm.instruments[n_voices:]
        feats = []
        for v in voices:
            one = copy.copy(pm)
            one.instruments = [_instrument(v.program, "melody", v.notes), *accomp]
            feats.append(measure_features(one))
        mix = copy.copy(pm)
        mix.instruments = [_instrument(0, "melody", [n for v in voices for n in v.notes]),
                           *accomp]
        bar_steps = round(parse_meter(meter)[0] * STEPS_PER_QUARTER)
        sounding, onset = voice_masks(pm, voices)
        if bars is None:
            bars = max(1, math.ceil(sounding.shape[-1] / bar_steps))
        n_steps = bars * bar_steps
        sounding, onset = voice_masks(pm, voices, n_steps)
        clashes = int(count_clashes(sounding, onset))
        return EnsembleMeasurement(tuple(feats), measure_features(mix), clashes, bars)
