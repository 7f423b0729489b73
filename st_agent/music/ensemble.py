"""Several performers, one piece: multi-voice ABC, rendering and measurement of a jam.

In a jam every performer turns their own three knobs. This module turns N knob
proposals into one piece that stays in one key and metre while each voice
keeps its own character:

- :mod:`st_agent.music.negotiation` decides the shared tempo, mode and key and
  each voice's valence inside the mode family (:func:`negotiate`; the rule is
  in that module's docstring);
- :class:`Ensemble` composes one line per voice with the composer under the
  negotiated settings, joins them into one multi-voice ABC tune
  (:func:`ensemble_abc`), renders it (each voice's register from its valence,
  :func:`register_offset`; its loudness from its energy, :func:`voice_velocity`;
  a shared bass and chords under them) and measures it;
- :mod:`st_agent.music.clashes` counts the dissonant simultaneities between
  voices (:func:`count_clashes`, :func:`voice_masks`).

The names of both modules are re-exported here.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from st_agent.contract import SafetyBounds
from st_agent.music.abc import abc_to_midi
from st_agent.music.arrangement import ArrangementConfig, arrange
from st_agent.music.clashes import (
    DISSONANT_INTERVALS,
    STEPS_PER_QUARTER,
    count_clashes,
    voice_masks,
)
from st_agent.music.features import measure_features
from st_agent.music.meter import parse_meter
from st_agent.music.negotiation import (
    MAX_PERFORMERS,
    MIN_PERFORMERS,
    Negotiation,
    check_per_performer,
    check_performers,
    family_valence,
    negotiate,
)
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

#: General MIDI programs (from 0) of voices 0..7: Acoustic Grand Piano, Violin,
#: Flute, Acoustic Guitar (nylon), Vibraphone, Trumpet, Clarinet, Oboe.
DEFAULT_PROGRAMS = (0, 40, 73, 24, 11, 56, 71, 68)


def register_offset(valence: float) -> int:
    """Octave shift (semitones) of a voice in the renderer: -12 below valence 0.25,
    +12 from 0.75 on, else 0 (higher valence, higher register)."""
    return -12 if valence < 0.25 else (12 if valence >= 0.75 else 0)


def voice_velocity(energy: float, config: ArrangementConfig | None = None) -> float:
    """Mean MIDI velocity of a voice: linear in energy between the arrangement's
    ``velocity_min`` and ``velocity_max`` (as the single-listener melody)."""
    cfg = config or ArrangementConfig()
    return cfg.velocity_min + (cfg.velocity_max - cfg.velocity_min) * float(energy)


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
