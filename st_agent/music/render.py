"""Turn an ABC phrase into an arranged MIDI, its measured features, and sound.

The chain is ``ABC --abc2midi--> melody MIDI --arrange--> melody + bass + chords
--FluidSynth--> audio``:

- :func:`render_phrase` converts a tune with ``abc2midi`` (:mod:`st_agent.music.abc`)
  and arranges it with :func:`arrange`.
- :func:`measure_features` measures what the result really is (tempo from the
  MIDI tempo events, density, key by Krumhansl–Kessler key-finding, register,
  loudness); nothing is copied from the knobs.
- :class:`AudioRenderer` synthesises audio offline with one FluidSynth instance
  that loads the soundfont once; :class:`LivePlayer` plays through FluidSynth's
  audio driver in real time.

Times are in seconds (``*_sec``), musical positions in quarter notes (``*_q``),
pitches in MIDI note numbers, velocities in MIDI units 0-127.
"""

from __future__ import annotations

import copy
import heapq
import importlib
import itertools
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import pretty_midi

from st_agent.music.abc import abc_to_midi
from st_agent.theory import MODES, PC_NAMES, find_key, key_name, parse_key
from st_agent.types import Knobs, MusicFeatures

__all__ = [
    "ArrangementConfig",
    "AudioDeviceError",
    "AudioRenderer",
    "LivePlayer",
    "arrange",
    "find_soundfont",
    "measure_features",
    "musical_span_sec",
    "parse_meter",
    "render_phrase",
]

logger = logging.getLogger(__name__)


FLUIDSYNTH_INSTALL_HINT = (
    "install the FluidSynth library (Debian/Ubuntu: sudo apt-get install libfluidsynth3; "
    "macOS: brew install fluid-synth) and the Python binding (pip install pyfluidsynth)"
)


# --------------------------------------------------------------------------- keys


def _pc_profile(instruments: list[pretty_midi.Instrument]) -> np.ndarray:
    """Duration-weighted pitch-class profile, shape (12,), in seconds."""
    w = np.zeros(12)
    for inst in instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            w[n.pitch % 12] += max(n.end - n.start, 0.0)
    return w


# -------------------------------------------------------------------------- meter


def parse_meter(meter: str) -> tuple[float, float, int]:
    """Read an ABC ``M:`` value.

    Parameters
    ----------
    meter : str
        ``"N/D"`` such as ``"4/4"``, ``"3/4"``, ``"6/8"``; ``"C"`` (4/4) or ``"C|"`` (2/2).

    Returns
    -------
    bar_q : float
        Bar length in quarter notes.
    beat_q : float
        Beat length in quarter notes (a dotted quarter in 6/8, 9/8, 12/8).
    beats_per_bar : int
        Beats in a bar.
    """
    if not isinstance(meter, str):
        raise TypeError(f"meter must be a str such as '4/4', got {type(meter).__name__}")
    text = {"C": "4/4", "C|": "2/2"}.get(meter.strip(), meter.strip())
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) not in (1, 2, 4, 8, 16, 32):
        raise ValueError(
            f"meter {meter!r} is not an ABC meter; use 'N/D' with D in 1, 2, 4, 8, 16, 32 "
            "(e.g. '4/4', '3/4', '6/8'), 'C' or 'C|'"
        )
    num, den = int(m.group(1)), int(m.group(2))
    bar_q = 4.0 * num / den
    if den >= 8 and num % 3 == 0 and num > 3:  # compound: beats are dotted
        return bar_q, 3 * 4.0 / den, num // 3
    return bar_q, 4.0 / den, num


def musical_span_sec(pm: pretty_midi.PrettyMIDI) -> tuple[float, float]:
    """Start of the first bar holding a note and end of the last one.

    Bars follow the MIDI time-signature events (4/4 when there are none) from
    time 0; a note counts as inside a bar unless it reaches past its bar line by
    more than a 64th note.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI

    Returns
    -------
    start_sec, end_sec : float
        ``(0.0, 0.0)`` when there are no notes.
    """
    notes = [n for inst in pm.instruments for n in inst.notes]
    if not notes:
        return 0.0, 0.0
    res = pm.resolution
    first_tick = pm.time_to_tick(min(n.start for n in notes))
    last_tick = pm.time_to_tick(max(n.end for n in notes))
    tol = res / 16
    sigs = sorted(
        ((pm.time_to_tick(ts.time), ts.numerator, ts.denominator)
         for ts in pm.time_signature_changes),
        key=lambda s: s[0],
    ) or [(0, 4, 4)]
    if sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    tick, i, start_tick = 0.0, 0, None
    while True:
        while i + 1 < len(sigs) and sigs[i + 1][0] <= tick + tol:
            i += 1
        bar = 4.0 * res * sigs[i][1] / sigs[i][2]
        if start_tick is None and tick + bar > first_tick + tol:
            start_tick = tick
        if tick + tol >= last_tick and start_tick is not None:
            break
        tick += bar
    return pm.tick_to_time(round(start_tick)), pm.tick_to_time(round(tick))


# ---------------------------------------------------------------------- arrangement


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
        if self.velocity_min > self.velocity_max:
            raise ValueError(
                f"velocity_min must be <= velocity_max, got {self.velocity_min} > "
                f"{self.velocity_max}"
            )


def _triads(tonic: int, mode: str) -> list[tuple[int, tuple[int, int, int]]]:
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


def _choose_chords(
    bar_weights: np.ndarray, tonic: int, mode: str
) -> list[tuple[int, int, int]]:
    """Per bar, the diatonic triad that covers most of the melody's weight.

    ``bar_weights`` has shape (n_bars, 12). The first and last bars take the tonic.
    """
    triads = _triads(tonic, mode)
    tonic_triad = next(t for d, t in triads if d == 0)
    chords: list[tuple[int, int, int]] = []
    prev = tonic_triad
    n = len(bar_weights)
    for b, w in enumerate(bar_weights):
        total = float(w.sum())
        if b == 0 or b == n - 1:
            chosen = tonic_triad
        elif total <= 0:
            chosen = prev  # a bar of rests keeps the harmony
        else:
            def score(item: tuple[int, tuple[int, int, int]], w: np.ndarray = w,
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
        ABC ``K:`` value (see :func:`parse_key`); ``"none"`` finds the key from
        the melody.
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
    if not isinstance(melody, pretty_midi.PrettyMIDI):
        raise TypeError(f"melody must be a pretty_midi.PrettyMIDI, got {type(melody).__name__}")
    if not isinstance(knobs, Knobs):
        raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
    cfg = config if config is not None else ArrangementConfig()
    if not isinstance(cfg, ArrangementConfig):
        raise TypeError(f"config must be an ArrangementConfig, got {type(cfg).__name__}")
    parsed = parse_key(key, allow_none=True)
    bar_q, beat_q, beats_per_bar = parse_meter(meter)
    voices = [inst for inst in melody.instruments if not inst.is_drum and inst.notes]
    if not voices:
        raise ValueError("melody has no notes to arrange; check the ABC body")
    if parsed is None:  # K:none: find the key from the melody
        tonic, fam, _ = find_key(_pc_profile(voices))
        mode = "ionian" if fam == "major" else "aeolian"
        logger.debug("K:none, key found from the melody: %s", key_name(tonic, fam))
    else:
        tonic, mode = parsed.tonic_pc, parsed.mode

    out = copy.deepcopy(melody)
    res = out.resolution

    def q_to_sec(q: float) -> float:
        return out.tick_to_time(round(q * res))

    def sec_to_q(t: float) -> float:
        return out.time_to_tick(t) / res

    energy = knobs.energy
    level = 0 if energy < 1 / 3 else (1 if energy < 2 / 3 else 2)
    vel = cfg.velocity_min + (cfg.velocity_max - cfg.velocity_min) * energy
    vel_bass = _clip_vel(vel - cfg.accompaniment_offset / 2)
    vel_chords = _clip_vel(vel - cfg.accompaniment_offset)

    # melody: loudest voice first, velocities rescaled, accents kept at half size
    voices = sorted(voices, key=lambda inst: len(inst.notes), reverse=True)
    all_vel = np.array([n.velocity for inst in voices for n in inst.notes], dtype=float)
    mean_vel = float(all_vel.mean())
    new_instruments: list[pretty_midi.Instrument] = []
    for i, inst in enumerate(voices):
        name = "melody" if i == 0 else f"voice {i + 1}"
        new = pretty_midi.Instrument(program=cfg.melody_program, name=name)
        for n in sorted(inst.notes, key=lambda n: (n.start, n.pitch)):
            v = _clip_vel(vel + 0.5 * (n.velocity - mean_vel))
            new.notes.append(pretty_midi.Note(v, n.pitch, n.start, n.end))
        new.control_changes = list(inst.control_changes)
        new.pitch_bends = list(inst.pitch_bends)
        new_instruments.append(new)
    mel_notes = new_instruments[0].notes

    # bar grid and per-bar pitch-class weights of the melody
    _, end_sec = musical_span_sec(melody)
    end_q = sec_to_q(end_sec)
    n_bars = max(1, math.ceil(end_q / bar_q - 1e-3))
    weights = np.zeros((n_bars, 12))
    for n in mel_notes:
        s_q, e_q = sec_to_q(n.start), sec_to_q(n.end)
        for b in range(max(0, int(s_q // bar_q)), min(n_bars, math.ceil(e_q / bar_q))):
            overlap = min(e_q, (b + 1) * bar_q) - max(s_q, b * bar_q)
            if overlap > 0:
                on_beat = abs((s_q / beat_q) - round(s_q / beat_q)) < 1e-3
                weights[b, n.pitch % 12] += overlap * (1.5 if on_beat else 1.0)
    chords = _choose_chords(weights, tonic, mode)

    # registers: bass at least a fourth under the melody, chords between
    mel_pitches = np.array([n.pitch for n in mel_notes])
    mel_low, mel_mean = int(mel_pitches.min()), float(mel_pitches.mean())
    bass_top = max(min(cfg.bass_max_pitch, mel_low - 5), cfg.bass_min_pitch + 11)
    bass_low = bass_top - 11
    chord_low = round(min(max(mel_mean - 16, bass_top + 2), 60))

    bass = pretty_midi.Instrument(program=cfg.bass_program, name="bass")
    chord_inst = pretty_midi.Instrument(program=cfg.chords_program, name="chords")
    for b, (root, third, fifth) in enumerate(chords):
        bar0 = b * bar_q
        r = _place(root, bass_low)
        f = _place(fifth, r)  # the fifth above the root
        if f > mel_low - 3:
            f -= 12
        octave = r + 12 if r + 12 <= mel_low - 3 else r
        if level == 0:
            bass_notes = [(0.0, bar_q, r)]
        elif level == 1:
            half = math.ceil(beats_per_bar / 2) * beat_q
            bass_notes = [(0.0, half, r), (half, bar_q, f if f - 12 < bass_low else f - 12)]
        else:
            pattern = itertools.cycle([r, f, octave, f])
            bass_notes = [(k * beat_q, (k + 1) * beat_q, next(pattern))
                          for k in range(beats_per_bar)]
        for s, e, p in bass_notes:
            bass.notes.append(pretty_midi.Note(vel_bass, int(p), q_to_sec(bar0 + s),
                                               q_to_sec(bar0 + e * 0.98 + s * 0.02)))
        voicing = sorted(_place(pc, chord_low) for pc in (root, third, fifth))
        if level == 0:
            hits = [(0.0, bar_q, voicing)]
        elif level == 1:
            hits = [(k * beat_q, (k + 0.9) * beat_q, voicing) for k in range(beats_per_bar)]
        else:
            # eighths; in compound meters a third of the dotted beat
            step = 0.5 if beat_q in (0.5, 1.0, 2.0, 4.0) else beat_q / 3
            n_steps = round(bar_q / step)
            arp = itertools.cycle([voicing[0], voicing[1], voicing[2], voicing[1]])
            hits = [(k * step, (k + 1) * step, [next(arp)]) for k in range(n_steps)]
        for s, e, pitches in hits:
            for p in pitches:
                chord_inst.notes.append(pretty_midi.Note(
                    vel_chords, int(p), q_to_sec(bar0 + s), q_to_sec(bar0 + min(e, bar_q))))

    out.instruments = [new_instruments[0], bass, chord_inst, *new_instruments[1:]]
    logger.debug("arranged %d bars in %s %s, energy level %d, chords %s",
                 n_bars, PC_NAMES[tonic], mode, level, chords)
    return out


def _clip_vel(v: float) -> int:
    return int(min(max(round(v), 1), 127))


def render_phrase(
    abc: str,
    key: str,
    knobs: Knobs,
    meter: str = "4/4",
    config: ArrangementConfig | None = None,
) -> pretty_midi.PrettyMIDI:
    """Convert an ABC tune with ``abc2midi`` and arrange it.

    Parameters
    ----------
    abc : str
        A complete tune (``X:``, ``M:``, ``L:``, ``Q:``, ``K:`` and body).
    key, knobs, meter, config
        As for :func:`arrange`.

    Returns
    -------
    arranged : pretty_midi.PrettyMIDI

    Raises
    ------
    st_agent.music.abc.AbcError
        When ``abc2midi`` rejects the tune.
    """
    return arrange(abc_to_midi(abc), key, knobs, meter=meter, config=config)


# -------------------------------------------------------------------------- features


def measure_features(pm: pretty_midi.PrettyMIDI) -> MusicFeatures:
    """Measure what a rendered phrase is, from its MIDI alone.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        E.g. the output of :func:`arrange`. The melody is the instrument named
        ``"melody"``, else the first non-drum instrument with notes.

    Returns
    -------
    features : MusicFeatures
        ``bpm``: time-weighted mean of the MIDI tempo events;
        ``duration_sec``: from the start of the first bar holding a note to the
        end of the last (see :func:`musical_span_sec`); ``notes_per_sec``:
        distinct onsets per second, summed over instruments (a struck chord is
        one onset); ``notes_per_beat``: distinct melody onsets per quarter note;
        ``mode``/``key``/``mode_confidence``: :func:`find_key` on the
        duration-weighted pitch-class profile of all parts; ``mean_pitch``,
        ``pitch_range``: of the melody; ``mean_velocity``: of all notes;
        ``n_notes``: notes of all instruments. A MIDI
        without notes gives zeros and key ``"none"``.
    """
    if not isinstance(pm, pretty_midi.PrettyMIDI):
        raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
    notes = [n for inst in pm.instruments for n in inst.notes]
    start_sec, end_sec = musical_span_sec(pm)
    duration = max(end_sec - start_sec, 0.0)
    bpm = _mean_bpm(pm, start_sec, end_sec)
    if not notes or duration <= 0:
        return MusicFeatures(duration_sec=duration, bpm=bpm, notes_per_sec=0.0,
                             notes_per_beat=0.0, mode="major", mode_confidence=0.0,
                             key="none", mean_pitch=0.0, pitch_range=0.0, mean_velocity=0.0,
                             n_notes=0)
    melody = next((i for i in pm.instruments if i.name == "melody" and i.notes), None)
    if melody is None:
        melody = next(i for i in pm.instruments if not i.is_drum and i.notes) \
            if any(not i.is_drum and i.notes for i in pm.instruments) else pm.instruments[0]
    quarters = (pm.time_to_tick(end_sec) - pm.time_to_tick(start_sec)) / pm.resolution
    onsets = {pm.time_to_tick(n.start) for n in melody.notes}
    n_onsets = sum(len({pm.time_to_tick(n.start) for n in inst.notes})
                   for inst in pm.instruments)
    tonic, family, conf = find_key(_pc_profile(pm.instruments))
    mel_pitch = np.array([n.pitch for n in melody.notes], dtype=float)
    return MusicFeatures(
        duration_sec=float(duration),
        bpm=bpm,
        notes_per_sec=float(n_onsets / duration),
        notes_per_beat=float(len(onsets) / quarters) if quarters > 0 else 0.0,
        mode=family,
        mode_confidence=conf,
        key=key_name(tonic, family),
        mean_pitch=float(mel_pitch.mean()),
        pitch_range=float(np.ptp(mel_pitch)),
        mean_velocity=float(np.mean([n.velocity for n in notes])),
        n_notes=len(notes),
    )


def _mean_bpm(pm: pretty_midi.PrettyMIDI, start_sec: float, end_sec: float) -> float:
    """Time-weighted mean tempo over ``[start_sec, end_sec]`` (quarter notes/min)."""
    times, tempi = pm.get_tempo_changes()
    if len(tempi) == 0:
        return 120.0  # the MIDI default when a file has no tempo event
    if end_sec <= start_sec or len(tempi) == 1:
        return float(tempi[0])
    edges = np.clip(np.append(times, end_sec), start_sec, end_sec)
    span = np.diff(edges)
    if span.sum() <= 0:
        return float(tempi[0])
    return float(np.sum(span * tempi) / span.sum())


# ----------------------------------------------------------------------------- audio


def find_soundfont(path: str | Path | None = None) -> Path:
    """Locate a General MIDI soundfont.

    Parameters
    ----------
    path : str or Path, optional
        A ``.sf2`` file. Default: ``TimGM6mb.sf2`` that ships with pretty_midi.

    Returns
    -------
    path : Path
        Absolute path of an existing file.

    Raises
    ------
    FileNotFoundError
        Naming the path looked at.
    """
    if path is None:
        p = Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"
        hint = "reinstall pretty_midi (pip install --force-reinstall pretty_midi) or pass a path"
    else:
        p = Path(path).expanduser().resolve()
        hint = "pass the path of an existing .sf2 General MIDI soundfont"
    if not p.is_file():
        raise FileNotFoundError(f"soundfont not found at {p}; {hint}")
    return p


def _import_fluidsynth() -> ModuleType:
    """Import pyfluidsynth, or say which package is missing."""
    try:
        return importlib.import_module("fluidsynth")
    except ImportError as e:  # also OSError-like failures inside the binding
        raise ImportError(
            f"FluidSynth is not usable ({e}); {FLUIDSYNTH_INSTALL_HINT}"
        ) from e
    except OSError as e:
        raise ImportError(
            f"the FluidSynth library failed to load ({e}); {FLUIDSYNTH_INSTALL_HINT}"
        ) from e


def _channel_map(pm: pretty_midi.PrettyMIDI) -> list[int]:
    """MIDI channel per instrument: 9 for drums, 0-8 and 10-15 for the others."""
    free = [c for c in range(16) if c != 9]
    out = []
    k = 0
    for inst in pm.instruments:
        if inst.is_drum:
            out.append(9)
        else:
            if k >= len(free):
                raise ValueError(
                    f"at most {len(free)} melodic instruments can play at once, got "
                    f"{sum(not i.is_drum for i in pm.instruments)}; merge some instruments"
                )
            out.append(free[k])
            k += 1
    return out


# event kinds in the order they apply at one instant: note-offs before note-ons
_OFF, _CC, _BEND, _ON = 0, 1, 2, 3


def _events(
    pm: pretty_midi.PrettyMIDI, channels: list[int]
) -> list[tuple[float, int, int, int, int]]:
    """Sorted ``(time_sec, kind, channel, a, b)`` events of all instruments."""
    ev: list[tuple[float, int, int, int, int]] = []
    for inst, ch in zip(pm.instruments, channels, strict=True):
        for n in inst.notes:
            ev.append((n.start, _ON, ch, n.pitch, n.velocity))
            ev.append((n.end, _OFF, ch, n.pitch, 0))
        for c in inst.control_changes:
            ev.append((c.time, _CC, ch, c.number, c.value))
        for p in inst.pitch_bends:
            ev.append((p.time, _BEND, ch, p.pitch, 0))
    ev.sort()
    return ev


class _SynthBase:
    """A FluidSynth instance with the soundfont loaded once."""

    def __init__(self, sf2_path: str | Path | None, sample_rate: int, gain: float,
                 settings: Mapping[str, str | int | float] | None = None) -> None:
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise ValueError(
                f"sample_rate must be an int in [8000, 192000] Hz, got {sample_rate!r}"
            )
        if not 0.0 < float(gain) <= 10.0:
            raise ValueError(f"gain must be in (0, 10], got {gain!r}")
        self.sf2_path = find_soundfont(sf2_path)
        self.sample_rate = sample_rate
        self._fl = _import_fluidsynth()
        self._synth: Any = self._fl.Synth(gain=float(gain), samplerate=float(sample_rate),
                                          **dict(settings or {}))
        self._sfid = self._synth.sfload(str(self.sf2_path))
        if self._sfid == -1:
            self._synth.delete()
            self._synth = None
            raise RuntimeError(
                f"FluidSynth could not load the soundfont {self.sf2_path}; "
                "check that it is a valid .sf2 file"
            )

    def _apply(self, kind: int, ch: int, a: int, b: int) -> None:
        s = self._synth
        if kind == _ON:
            s.noteon(ch, a, b)
        elif kind == _OFF:
            s.noteoff(ch, a)
        elif kind == _CC:
            s.cc(ch, a, b)
        else:
            s.pitch_bend(ch, a)

    def _select_programs(self, pm: pretty_midi.PrettyMIDI, channels: list[int]) -> None:
        for inst, ch in zip(pm.instruments, channels, strict=True):
            bank = 128 if inst.is_drum else 0
            if self._synth.program_select(ch, self._sfid, bank, inst.program) == -1:
                self._synth.program_select(ch, self._sfid, bank, 0)


class AudioRenderer(_SynthBase):
    """Offline synthesis with FluidSynth, the soundfont loaded once and reused.

    Parameters
    ----------
    sf2_path : str or Path, optional
        Soundfont; default the ``TimGM6mb.sf2`` of pretty_midi (:func:`find_soundfont`).
    sample_rate : int
        Output rate in Hz, default 44100.
    release_sec : float
        Audio kept after the musical end (the end of the last bar) so that the
        last notes can ring out; default 0, so the length matches the score.
    gain : float
        FluidSynth master gain (0.2 is its default; lower avoids clipping with
        many voices).
    effects : bool
        Reverb and chorus on (default). Renders of the same MIDI sound the same
        but are not sample-identical, as the chorus LFO and the reverb carry
        state from one piece to the next; with ``effects=False`` they differ by
        well under 1 % of the RMS (dither of the 16-bit output, modulator
        phases). A fresh renderer gives bit-identical audio for the same MIDI.

    Raises
    ------
    FileNotFoundError
        When the soundfont is missing.
    ImportError
        When the FluidSynth library or pyfluidsynth is missing, with the packages
        that provide them (Debian ``libfluidsynth3``, pip ``pyfluidsynth``).

    Examples
    --------
    >>> with AudioRenderer() as r:  # doctest: +SKIP
    ...     r.write_wav(render_phrase(abc, "G", knobs), "phrase.wav")
    """

    def __init__(self, sf2_path: str | Path | None = None, sample_rate: int = 44100,
                 release_sec: float = 0.0, gain: float = 0.2, effects: bool = True) -> None:
        if not math.isfinite(release_sec) or not 0.0 <= release_sec <= 30.0:
            raise ValueError(f"release_sec must be in [0, 30] seconds, got {release_sec!r}")
        fx = {} if effects else {"synth.reverb.active": 0, "synth.chorus.active": 0}
        super().__init__(sf2_path, sample_rate, gain, fx)
        self.release_sec = float(release_sec)

    def __enter__(self) -> AudioRenderer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Free the synthesizer; safe to call twice."""
        if getattr(self, "_synth", None) is not None:
            self._synth.delete()
            self._synth = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass

    def synthesize(self, pm: pretty_midi.PrettyMIDI) -> np.ndarray:
        """Render a MIDI to mono audio.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI

        Returns
        -------
        audio : ndarray, shape (n_samples,), float32
            Mono samples in [-1, 1] at ``sample_rate``; ``n_samples`` is the end
            of the last bar (:func:`musical_span_sec`) plus ``release_sec``,
            times the rate.
        """
        if self._synth is None:
            raise RuntimeError("this AudioRenderer is closed; create a new one")
        if not isinstance(pm, pretty_midi.PrettyMIDI):
            raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
        _, end_sec = musical_span_sec(pm)
        n_total = round((end_sec + self.release_sec) * self.sample_rate)
        channels = _channel_map(pm)
        s = self._synth
        s.system_reset()
        self._select_programs(pm, channels)
        chunks: list[np.ndarray] = []
        cursor = 0
        for t, kind, ch, a, b in _events(pm, channels):
            at = min(round(t * self.sample_rate), n_total)
            if at > cursor:
                chunks.append(s.get_samples(at - cursor))
                cursor = at
            if cursor >= n_total and kind == _ON:
                continue
            self._apply(kind, ch, a, b)
        if n_total > cursor:
            chunks.append(s.get_samples(n_total - cursor))
        for ch in set(channels):
            s.all_sounds_off(ch)
        self._flush(max(n_total, cursor))
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)  # (n, 2) int16 range
        return (stereo.mean(axis=1) / 32768.0).astype(np.float32)

    def _flush(self, n_generated: int) -> None:
        """Drain reverb and chorus so the next piece starts from silence.

        FluidSynth renders in blocks of 64 samples and applies events at block
        starts; padding the output to whole blocks makes every piece start at a
        block start, so the same MIDI gives the same samples each time.
        """
        s = self._synth
        s.system_reset()
        for _ in range(50):  # at most 50 * 1024 samples
            if not np.any(s.get_samples(1024)):
                break
        pad = -n_generated % 64
        if pad:
            s.get_samples(pad)

    def write_wav(self, pm: pretty_midi.PrettyMIDI, path: str | Path,
                  peak: float = 0.89) -> Path:
        """Render a MIDI and write a 16-bit PCM mono WAV file.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI
        path : str or Path
            Output file; its folder must exist.
        peak : float
            The loudest sample is scaled to this fraction of full scale
            (0.89 = -1 dBFS), so nothing clips.

        Returns
        -------
        path : Path
        """
        from scipy.io import wavfile

        if not 0.0 < peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1], got {peak!r}")
        out = Path(path)
        if not out.parent.is_dir():
            raise FileNotFoundError(f"folder {out.parent} does not exist; create it first")
        audio = self.synthesize(pm)
        top = float(np.max(np.abs(audio))) if audio.size else 0.0
        if top > 0:
            audio = audio * (peak / top)
        else:
            logger.warning("writing a silent WAV to %s: the MIDI has no audible notes", out)
        wavfile.write(out, self.sample_rate, np.round(audio * 32767).astype(np.int16))
        return out


# ------------------------------------------------------------------------------ live


class AudioDeviceError(RuntimeError):
    """No audio output device could be opened for live playback."""


def _default_drivers() -> tuple[str, ...]:
    if sys.platform == "darwin":
        return ("coreaudio",)
    if sys.platform.startswith("win"):
        return ("wasapi", "dsound")
    return ("pulseaudio", "pipewire", "alsa")


class LivePlayer(_SynthBase):
    """Real-time playback through FluidSynth's audio driver.

    A scheduler thread sends note events to the synthesizer at their wall-clock
    times; :meth:`play` returns at once and queues a piece after what is already
    queued, so consecutive phrases join without a gap.

    Parameters
    ----------
    sf2_path : str or Path, optional
        Soundfont (:func:`find_soundfont`).
    driver : str or sequence of str, optional
        FluidSynth audio driver(s) to try in order, e.g. ``"alsa"``,
        ``"pulseaudio"``, ``"coreaudio"``, or ``"file"`` (writes the audio to
        ``audio.file.name`` in real time, for machines without sound).
        Default: the usual drivers of the platform.
    sample_rate : int
        Hz, default 44100.
    gain : float
        FluidSynth master gain.
    settings : mapping, optional
        Extra FluidSynth settings, e.g. ``{"audio.file.name": "out.raw"}``.
    lead_sec : float
        A piece queued on an idle player starts this long after :meth:`play`,
        so its first notes are not late.

    Raises
    ------
    AudioDeviceError
        When no driver can open an output device (no sound card, no sound
        server). Render to a WAV with :meth:`AudioRenderer.write_wav` instead.
    """

    def __init__(self, sf2_path: str | Path | None = None,
                 driver: str | tuple[str, ...] | list[str] | None = None,
                 sample_rate: int = 44100, gain: float = 0.2,
                 settings: Mapping[str, str | int | float] | None = None,
                 lead_sec: float = 0.05) -> None:
        if not math.isfinite(lead_sec) or not 0.0 <= lead_sec <= 5.0:
            raise ValueError(f"lead_sec must be in [0, 5] seconds, got {lead_sec!r}")
        drivers = _default_drivers() if driver is None else (
            (driver,) if isinstance(driver, str) else tuple(driver))
        if not drivers:
            raise ValueError("driver must name at least one FluidSynth audio driver")
        super().__init__(sf2_path, sample_rate, gain, settings)
        self.lead_sec = float(lead_sec)
        self._driver_ptr: int | None = None
        self.driver: str | None = None
        for name in drivers:
            self._synth.setting("audio.driver", name)
            ptr = self._fl.new_fluid_audio_driver(self._synth.settings, self._synth.synth)
            if ptr:
                self._driver_ptr, self.driver = ptr, name
                break
            logger.debug("FluidSynth audio driver %r could not start", name)
        if self._driver_ptr is None:
            self._synth.delete()
            self._synth = None
            raise AudioDeviceError(
                f"no audio output device: FluidSynth could not start any of the drivers "
                f"{list(drivers)} (no sound card or sound server on this machine?). "
                "Live playback is not possible here; write a WAV instead with "
                "AudioRenderer.write_wav, or pass driver='file' to record the live stream."
            )
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, int, int, int, int]] = []  # heap
        self._seq = itertools.count()
        self._queue_end = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="LivePlayer", daemon=True)
        self._thread.start()
        logger.info("live playback on FluidSynth driver %r", self.driver)

    def __enter__(self) -> LivePlayer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def play(self, pm: pretty_midi.PrettyMIDI) -> float:
        """Queue a piece after everything already queued; returns at once.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI

        Returns
        -------
        start_in_sec : float
            Seconds from now until the piece starts.
        """
        if not isinstance(pm, pretty_midi.PrettyMIDI):
            raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
        channels = _channel_map(pm)
        _, end_sec = musical_span_sec(pm)
        with self._cond:
            if self._closed:
                raise RuntimeError("this LivePlayer is closed; create a new one")
            now = time.monotonic()
            start = max(now + self.lead_sec, self._queue_end)
            # programs are set at the start of the piece, through the same queue
            for inst, ch in zip(pm.instruments, channels, strict=True):
                heapq.heappush(self._queue, (start, -1, next(self._seq), ch,
                                             inst.program, int(inst.is_drum)))
            for t, kind, ch, a, b in _events(pm, channels):
                heapq.heappush(self._queue, (start + t, kind, next(self._seq), ch, a, b))
            self._queue_end = start + end_sec
            self._cond.notify()
        return start - now

    @property
    def remaining_sec(self) -> float:
        """Seconds until everything queued has played."""
        with self._cond:
            return max(self._queue_end - time.monotonic(), 0.0)

    def wait(self, timeout_sec: float | None = None) -> bool:
        """Block until the queue has played; True if it did within the timeout."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while True:
            left = self.remaining_sec
            with self._cond:
                if self._closed or (not self._queue and left <= 0):
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = 0.05 if deadline is None else min(0.05, max(deadline - time.monotonic(), 0))
            time.sleep(max(min(left, pause), 0.001))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._queue:
                        delay = self._queue[0][0] - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(timeout=delay)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, kind, _, ch, a, b = heapq.heappop(self._queue)
                if kind == -1:
                    bank = 128 if b else 0
                    if self._synth.program_select(ch, self._sfid, bank, a) == -1:
                        self._synth.program_select(ch, self._sfid, bank, 0)
                else:
                    self._apply(kind, ch, a, b)

    def fade_out(self, duration_sec: float = 4.0, steps: int = 40) -> None:
        """Lower every channel's volume (MIDI CC 7) to silence over ``duration_sec``,
        then drop what is still queued. Blocks for ``duration_sec``."""
        if not (isinstance(duration_sec, int | float) and 0 <= duration_sec <= 60):
            raise ValueError(f"duration_sec must be in [0, 60] seconds, got {duration_sec!r}")
        for i in range(1, steps + 1):
            if getattr(self, "_synth", None) is None:
                return
            vol = round(100 * (1 - i / steps))
            for ch in range(16):
                self._synth.cc(ch, 7, vol)
            time.sleep(duration_sec / steps)
        with self._cond:
            self._queue.clear()
            self._queue_end = time.monotonic()
        for ch in range(16):
            self._synth.all_notes_off(ch)

    def close(self) -> None:
        """Stop playback and release the audio driver; safe to call twice."""
        cond = getattr(self, "_cond", None)
        if cond is not None:
            with cond:
                self._closed = True
                self._queue.clear()
                cond.notify_all()
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._thread.join(timeout=2.0)
        if getattr(self, "_synth", None) is not None:
            for ch in range(16):
                self._synth.all_notes_off(ch)
            if self._driver_ptr:
                self._fl.delete_fluid_audio_driver(self._driver_ptr)
                self._driver_ptr = None
            self._synth.delete()
            self._synth = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass
