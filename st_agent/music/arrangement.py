"""A bass and chords in the key under a melody, shaped by the energy knob.

Per bar, the accompaniment plays the diatonic triad of the key's mode that
best fits that bar's melody (see :func:`arrange`). Times are in seconds
(``*_sec``), musical positions in quarter notes (``*_q``), pitches in MIDI note
numbers, velocities in MIDI units 0-127.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
import pretty_midi

from st_agent.music.features import pitch_class_profile
from st_agent.music.meter import musical_span_sec, parse_meter
from st_agent.theory import MODES, PC_NAMES, Key, find_key, key_name, parse_key
from st_agent.types import Knobs

__all__ = ["ArrangementConfig", "arrange"]

logger = logging.getLogger(__name__)

Triad = tuple[int, int, int]
#: ``(start_q, end_q, pitches)`` inside a bar.
Hit = tuple[float, float, list[int]]


@dataclass(frozen=True)
class ArrangementConfig:
    """How :func:`arrange` voices and balances the parts.

    Programs are General MIDI numbers counted from 0.
    """

    melody_program: int = 0
    """Melody instrument (0 = Acoustic Grand Piano)."""
    bass_program: int = 32
    """Bass instrument (32 = Acoustic Bass)."""
    chords_program: int = 4
    """Chord instrument (4 = Electric Piano 1; TimGM6mb's strings, 48, render 3-4x slower)."""
    bass_max_pitch: int = 52
    """Highest bass note (52 = E3); the bass also stays 5+ semitones under the melody."""
    bass_min_pitch: int = 28
    """Lowest bass note (28 = E1)."""
    velocity_min: int = 40
    """Melody velocity at energy 0."""
    velocity_max: int = 112
    """Melody velocity at energy 1."""
    accompaniment_offset: int = 10
    """Chords play this much softer than the melody, the bass half as much softer."""
    pan: tuple[int, int, int] | None = None
    """Stereo position (MIDI CC 10: 0 left, 64 centre, 127 right) of melody, bass and
    chords, sent at the start of each part; None sends none (the synthesizer's centre)."""

    @classmethod
    def for_knobs(cls, knobs: Knobs) -> ArrangementConfig:
        """The instrumentation of a listening session, chosen by energy and valence.

        ==============  ==========================  ==========================
        energy          valence < 0.5 (minor)       valence >= 0.5 (major)
        ==============  ==========================  ==========================
        < 1/3 (calm)    slow strings 49 over a      electric piano 4 over a
                        warm pad 89, bass 32        warm pad 89, bass 32
        1/3 - 2/3       piano 0 over strings 48,    piano 0 over electric
                        bass 32                     piano 4, bass 32
        >= 2/3          piano 0 over nylon guitar   bright piano 1 over nylon
                        24, finger bass 33          guitar 24, finger bass 33
        ==============  ==========================  ==========================

        Programs are General MIDI, counted from 0. Parts are spread in stereo
        (melody centre, bass a little left, chords a little right).

        Parameters
        ----------
        knobs : Knobs

        Returns
        -------
        config : ArrangementConfig
        """
        if not isinstance(knobs, Knobs):
            raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
        minor = knobs.valence < 0.5
        if knobs.energy < 1 / 3:
            melody, chords, bass = (49 if minor else 4), 89, 32
        elif knobs.energy < 2 / 3:
            melody, chords, bass = 0, (48 if minor else 4), 32
        else:
            melody, chords, bass = (0 if minor else 1), 24, 33
        return cls(melody_program=melody, bass_program=bass, chords_program=chords,
                   pan=(64, 48, 80))

    def __post_init__(self) -> None:
        for name in ("melody_program", "bass_program", "chords_program"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 127:
                raise ValueError(f"{name} must be a General MIDI program 0-127, got {v!r}")
        for name in ("bass_max_pitch", "bass_min_pitch", "velocity_min", "velocity_max",
                     "accompaniment_offset"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 127:
                raise ValueError(f"{name} must be an int 0-127, got {v!r}")
        if self.bass_max_pitch - self.bass_min_pitch < 12:
            raise ValueError(
                f"bass_max_pitch - bass_min_pitch must be >= 12 semitones, got "
                f"{self.bass_max_pitch} - {self.bass_min_pitch}"
            )
        if self.pan is not None and not (
                isinstance(self.pan, tuple) and len(self.pan) == 3
                and all(isinstance(v, int) and 0 <= v <= 127 for v in self.pan)):
            raise ValueError(f"pan must be None or three MIDI CC 10 values 0-127 (melody, bass, "
                             f"chords), got {self.pan!r}")
        if self.velocity_min > self.velocity_max:
            raise ValueError(
                f"velocity_min must be <= velocity_max, got {self.velocity_min} > "
                f"{self.velocity_max}"
            )


# ---------------------------------------------------------------------- harmony


def _triads(tonic: int, mode: str) -> list[tuple[int, Triad]]:
    """Major and minor diatonic triads ``(degree, (root, third, fifth))`` as pitch classes.

    Diminished triads are left out; a plain accompaniment sounds wrong on them.
    """
    scale = MODES[mode]
    out = []
    for d in range(7):
        root, third, fifth = scale[d], scale[(d + 2) % 7], scale[(d + 4) % 7]
        if (fifth - root) % 12 != 7:
            continue
        out.append((d, ((tonic + root) % 12, (tonic + third) % 12, (tonic + fifth) % 12)))
    return out


# Prefer the primary chords I, IV, V, then vi / ii when the melody fits several.
_DEGREE_PRIOR = {0: 0.30, 3: 0.20, 4: 0.20, 5: 0.10, 1: 0.08, 2: 0.04, 6: 0.04}


def _choose_chords(bar_weights: np.ndarray, tonic: int, mode: str) -> list[Triad]:
    """Per bar, the diatonic triad that covers most of the melody's weight.

    ``bar_weights`` has shape (n_bars, 12). The first and last bars take the tonic.
    """
    triads = _triads(tonic, mode)
    tonic_triad = next(t for d, t in triads if d == 0)
    chords: list[Triad] = []
    prev = tonic_triad
    n = len(bar_weights)
    for b, w in enumerate(bar_weights):
        total = float(w.sum())
        if b == 0 or b == n - 1:
            chosen = tonic_triad
        elif total <= 0:
            chosen = prev  # a bar of rests keeps the harmony
        else:
            def score(item: tuple[int, Triad], w: np.ndarray = w,
                      total: float = total) -> float:
                d, (r, t3, t5) = item
                return (w[r] * 1.25 + w[t3] + w[t5]) / total + _DEGREE_PRIOR.get(d, 0.0)
            chosen = max(triads, key=score)[1]
        chords.append(chosen)
        prev = chosen
    return chords


def _place(pc: int, low: int) -> int:
    """Lowest pitch >= ``low`` with pitch class ``pc``."""
    return low + (pc - low) % 12


def _clip_vel(v: float) -> int:
    return int(min(max(round(v), 1), 127))


# ---------------------------------------------------------------------- steps


@dataclass(frozen=True)
class _Grid:
    """Bar and beat grid of a melody, and conversions between seconds and quarters."""

    pm: pretty_midi.PrettyMIDI
    bar_q: float
    beat_q: float
    beats_per_bar: int

    def q_to_sec(self, q: float) -> float:
        return self.pm.tick_to_time(round(q * self.pm.resolution))

    def sec_to_q(self, t: float) -> float:
        return self.pm.time_to_tick(t) / self.pm.resolution


@dataclass(frozen=True)
class _Registers:
    """Pitch ranges of the parts: the bass at least a fourth under the melody,
    the chords between."""

    mel_low: int
    bass_low: int
    chord_low: int

    @classmethod
    def under(cls, mel_notes: list[pretty_midi.Note], cfg: ArrangementConfig) -> _Registers:
        mel_pitches = np.array([n.pitch for n in mel_notes])
        mel_low, mel_mean = int(mel_pitches.min()), float(mel_pitches.mean())
        bass_top = max(min(cfg.bass_max_pitch, mel_low - 5), cfg.bass_min_pitch + 11)
        chord_low = round(min(max(mel_mean - 16, bass_top + 2), 60))
        return cls(mel_low=mel_low, bass_low=bass_top - 11, chord_low=chord_low)


def _check_inputs(melody: pretty_midi.PrettyMIDI, knobs: Knobs,
                  config: ArrangementConfig | None) -> ArrangementConfig:
    if not isinstance(melody, pretty_midi.PrettyMIDI):
        raise TypeError(f"melody must be a pretty_midi.PrettyMIDI, got {type(melody).__name__}")
    if not isinstance(knobs, Knobs):
        raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
    cfg = config if config is not None else ArrangementConfig()
    if not isinstance(cfg, ArrangementConfig):
        raise TypeError(f"config must be an ArrangementConfig, got {type(cfg).__name__}")
    return cfg


def _tonic_and_mode(parsed: Key | None, voices: list[pretty_midi.Instrument]
                    ) -> tuple[int, str]:
    """Tonic pitch class and mode of a parsed ``K:``; ``K:none`` (None) finds the
    key from the melody."""
    if parsed is not None:
        return parsed.tonic_pc, parsed.mode
    tonic, fam, _ = find_key(pitch_class_profile(voices))
    logger.debug("K:none, key found from the melody: %s", key_name(tonic, fam))
    return tonic, ("ionian" if fam == "major" else "aeolian")


def _melody_parts(voices: list[pretty_midi.Instrument], cfg: ArrangementConfig,
                  vel: float) -> list[pretty_midi.Instrument]:
    """The melody (most notes) first, then ``"voice N"``; velocities rescaled
    around ``vel`` with their accents kept at half size."""
    voices = sorted(voices, key=lambda inst: len(inst.notes), reverse=True)
    all_vel = np.array([n.velocity for inst in voices for n in inst.notes], dtype=float)
    mean_vel = float(all_vel.mean())
    parts: list[pretty_midi.Instrument] = []
    for i, inst in enumerate(voices):
        name = "melody" if i == 0 else f"voice {i + 1}"
        new = pretty_midi.Instrument(program=cfg.melody_program, name=name)
        for n in sorted(inst.notes, key=lambda n: (n.start, n.pitch)):
            v = _clip_vel(vel + 0.5 * (n.velocity - mean_vel))
            new.notes.append(pretty_midi.Note(v, n.pitch, n.start, n.end))
        new.control_changes = list(inst.control_changes)
        new.pitch_bends = list(inst.pitch_bends)
        parts.append(new)
    return parts


def _bar_weights(mel_notes: list[pretty_midi.Note], n_bars: int, grid: _Grid) -> np.ndarray:
    """Per-bar pitch-class weights of the melody, shape (n_bars, 12), in quarters;
    notes struck on a beat count 1.5 times."""
    bar_q, beat_q = grid.bar_q, grid.beat_q
    weights = np.zeros((n_bars, 12))
    for n in mel_notes:
        s_q, e_q = grid.sec_to_q(n.start), grid.sec_to_q(n.end)
        for b in range(max(0, int(s_q // bar_q)), min(n_bars, math.ceil(e_q / bar_q))):
            overlap = min(e_q, (b + 1) * bar_q) - max(s_q, b * bar_q)
            if overlap > 0:
                on_beat = abs((s_q / beat_q) - round(s_q / beat_q)) < 1e-3
                weights[b, n.pitch % 12] += overlap * (1.5 if on_beat else 1.0)
    return weights


def _bass_line(chord: Triad, level: int, grid: _Grid, reg: _Registers) -> list[Hit]:
    """One bar of bass: the root held (level 0), root and fifth per half (1),
    root-5th-8ve-5th on each beat (2)."""
    root, _, fifth = chord
    r = _place(root, reg.bass_low)
    f = _place(fifth, r)  # the fifth above the root
    if f > reg.mel_low - 3:
        f -= 12
    octave = r + 12 if r + 12 <= reg.mel_low - 3 else r
    if level == 0:
        return [(0.0, grid.bar_q, [r])]
    if level == 1:
        half = math.ceil(grid.beats_per_bar / 2) * grid.beat_q
        return [(0.0, half, [r]), (half, grid.bar_q, [f if f - 12 < reg.bass_low else f - 12])]
    pattern = itertools.cycle([r, f, octave, f])
    return [(k * grid.beat_q, (k + 1) * grid.beat_q, [next(pattern)])
            for k in range(grid.beats_per_bar)]


def _chord_hits(chord: Triad, level: int, grid: _Grid, reg: _Registers) -> list[Hit]:
    """One bar of chords: held (level 0), struck on each beat (1), arpeggiated
    eighths (2; in compound meters a third of the dotted beat)."""
    voicing = sorted(_place(pc, reg.chord_low) for pc in chord)
    if level == 0:
        return [(0.0, grid.bar_q, voicing)]
    if level == 1:
        return [(k * grid.beat_q, (k + 0.9) * grid.beat_q, voicing)
                for k in range(grid.beats_per_bar)]
    step = 0.5 if grid.beat_q in (0.5, 1.0, 2.0, 4.0) else grid.beat_q / 3
    arp = itertools.cycle([voicing[0], voicing[1], voicing[2], voicing[1]])
    return [(k * step, (k + 1) * step, [next(arp)]) for k in range(round(grid.bar_q / step))]


def _accompaniment(chords: list[Triad], level: int, grid: _Grid, reg: _Registers,
                   cfg: ArrangementConfig, vel: float) -> list[pretty_midi.Instrument]:
    """The ``"bass"`` and ``"chords"`` parts, bar by bar."""
    vel_bass = _clip_vel(vel - cfg.accompaniment_offset / 2)
    vel_chords = _clip_vel(vel - cfg.accompaniment_offset)
    bass = pretty_midi.Instrument(program=cfg.bass_program, name="bass")
    chord_inst = pretty_midi.Instrument(program=cfg.chords_program, name="chords")
    q_to_sec = grid.q_to_sec
    for b, chord in enumerate(chords):
        bar0 = b * grid.bar_q
        for s, e, pitches in _bass_line(chord, level, grid, reg):
            for p in pitches:  # released just before the next note
                bass.notes.append(pretty_midi.Note(vel_bass, int(p), q_to_sec(bar0 + s),
                                                   q_to_sec(bar0 + e * 0.98 + s * 0.02)))
        for s, e, pitches in _chord_hits(chord, level, grid, reg):
            for p in pitches:  # never past the bar line
                chord_inst.notes.append(pretty_midi.Note(
                    vel_chords, int(p), q_to_sec(bar0 + s), q_to_sec(bar0 + min(e, grid.bar_q))))
    return [bass, chord_inst]


def arrange(
    melody: pretty_midi.PrettyMIDI,
    key: str,
    knobs: Knobs,
    meter: str = "4/4",
    config: ArrangementConfig | None = None,
) -> pretty_midi.PrettyMIDI:
    """Add a bass and chords in the key to a melody.

    Per bar, the accompaniment plays the diatonic triad of the key's mode that
    best fits that bar's melody pitch classes (duration-weighted, root counted
    more, primary chords preferred; tonic in the first and last bar). Energy
    sets density and loudness:

    ============  ====================  ===========================
    energy        bass                  chords
    ============  ====================  ===========================
    < 1/3         root, once a bar      held through the bar
    1/3 - 2/3     root, fifth per half  struck on each beat
    >= 2/3        root-5th-8ve-5th      arpeggiated eighths
                  on each beat
    ============  ====================  ===========================

    Velocity of all parts rises linearly with energy from
    ``config.velocity_min`` to ``config.velocity_max`` (melody accents kept at
    half size; accompaniment softer). Tempo and time signatures are those of
    ``melody`` (from the ABC ``Q:`` and ``M:`` fields), never the knobs.

    Parameters
    ----------
    melody : pretty_midi.PrettyMIDI
        The melody, e.g. from :func:`st_agent.music.abc.abc_to_midi`. Its instrument
        with most notes becomes ``"melody"``; other voices are kept as ``"voice N"``.
    key : str
        ABC ``K:`` value (see :func:`~st_agent.theory.parse_key`); ``"none"``
        finds the key from the melody.
    knobs : Knobs
        Only ``energy`` is used here.
    meter : str
        ABC ``M:`` value; sets the bar and beat grid of the accompaniment.
    config : ArrangementConfig, optional
        Programs, registers, velocities; defaults to ``ArrangementConfig()``.

    Returns
    -------
    arranged : pretty_midi.PrettyMIDI
        A new object with instruments ``"melody"``, ``"bass"``, ``"chords"``
        (plus any extra voices); ``melody`` is not modified.

    Raises
    ------
    TypeError, ValueError
        For a wrong type, an unknown key or meter, or a melody without notes.
    """
    cfg = _check_inputs(melody, knobs, config)
    parsed = parse_key(key, allow_none=True)
    bar_q, beat_q, beats_per_bar = parse_meter(meter)
    voices = [inst for inst in melody.instruments if not inst.is_drum and inst.notes]
    if not voices:
        raise ValueError("melody has no notes to arrange; check the ABC body")
    tonic, mode = _tonic_and_mode(parsed, voices)

    out = copy.deepcopy(melody)
    grid = _Grid(out, bar_q, beat_q, beats_per_bar)
    energy = knobs.energy
    level = 0 if energy < 1 / 3 else (1 if energy < 2 / 3 else 2)
    vel = cfg.velocity_min + (cfg.velocity_max - cfg.velocity_min) * energy
    parts = _melody_parts(voices, cfg, vel)
    mel_notes = parts[0].notes

    _, end_sec = musical_span_sec(melody)
    n_bars = max(1, math.ceil(grid.sec_to_q(end_sec) / bar_q - 1e-3))
    chords = _choose_chords(_bar_weights(mel_notes, n_bars, grid), tonic, mode)
    accompaniment = _accompaniment(chords, level, grid, _Registers.under(mel_notes, cfg), cfg, vel)
    out.instruments = [parts[0], *accompaniment, *parts[1:]]
    if cfg.pan is not None:
        for inst, value in zip(out.instruments[:3], cfg.pan, strict=False):
            inst.control_changes.insert(0, pretty_midi.ControlChange(10, value, 0.0))
    logger.debug("arranged %d bars in %s %s, energy level %d, chords %s",
                 n_bars, PC_NAMES[tonic], mode, level, chords)
    return out
