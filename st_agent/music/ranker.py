"""What the composer's ranker hears in a candidate melody, and how it scores it.

The composer samples several candidates per phrase; this module measures each
one's *melody alone* and turns it into a penalty (lower is better) that is added
to the density and register score:

- **key** and **mode family**: whether the melody states the requested key. The
  duration-weighted pitch-class profile (notes struck on a beat count 1.5x) is correlated
  (Pearson) with the Aarden–Essen key profiles of all 24 keys, the profiles
  music21's ``analyze('key')`` uses by default; the penalty is how far the
  requested key's correlation is below the best key's (0 when it is the best);
  the family term, how far the best key of the requested family is below it.
- **density**: melody onsets per quarter note against the energy's target.
- **cadence**: the phrase should end on the tonic (or, less well, on the
  fifth or third of the tonic triad), held at least a beat.
- **leaps**: melodic steps wider than a fifth (7 semitones), inside the phrase
  and at the join with the previous phrase.
- **repetition**: long runs of one repeated pitch (beyond three notes), and
  a calm corner that sits on one pitch (few distinct pitches).
- **rhythm**: note-length variety (the entropy of note lengths) below the
  corpus' level costs; running eighths are the high-energy failure.

All durations are in quarter notes (``*_q``), pitches in MIDI numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from st_agent.theory import parse_key
from st_agent.tokenizer.abc_lexer import TOKEN_RE, event_length, parse_tuplet

__all__ = ["AARDEN_ESSEN", "MelodyFacts", "RankerWeights", "key_correlations", "melody_facts",
           "melody_notes", "penalty", "respell"]

#: Aarden–Essen key profiles (major, minor), tonic first: music21's default for
#: ``analyze('key')`` (``music21.analysis.discrete.AardenEssen``).
AARDEN_ESSEN = (
    np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062,
              0.145624, 8.15494, 0.232998, 4.95122]),
    np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161,
              4.56621, 1.93186, 7.37619, 1.75623]),
)
_PROFILES = np.stack([np.roll(AARDEN_ESSEN[f], t) for f in (0, 1) for t in range(12)])  # (24, 12)
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACC = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}


def melody_notes(body: str, unit_q: float, key: str) -> list[tuple[float, float, int]]:
    """The notes of a single-voice ABC body as ``(onset_q, duration_q, pitch)``.

    Tied notes are one note; rests are skipped (they move the onsets); an
    accidental holds to the end of its bar, as in ABC; the top note of a
    chord stands for it.

    Parameters
    ----------
    body : str
        ABC body (no header).
    unit_q : float
        ``L:`` in quarter notes (0.5 for ``L:1/8``).
    key : str
        ABC ``K:`` value (its signature applies).

    Returns
    -------
    notes : list of (float, float, int)
    """
    return _notes_and_length(body, unit_q, key)[0]


def _notes_and_length(body: str, unit_q: float, key: str
                      ) -> tuple[list[tuple[float, float, int]], float]:
    """:func:`melody_notes` and the body's length in quarter notes (rests included)."""
    sig = parse_key(key).accidentals()
    notes: list[tuple[float, float, int]] = []
    t = 0.0
    bar_acc: dict[tuple[str, int], int] = {}
    tuplet_left, tuplet_factor, broken_next, tie = 0, 1.0, None, False
    last_idx = -1
    for m in TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind == "bar":
            bar_acc.clear()
        elif kind in ("note", "rest", "chord"):
            dur = float(event_length(m)) * unit_q
            if tuplet_left > 0:
                dur *= tuplet_factor
                tuplet_left -= 1
            if broken_next is not None:
                dur *= broken_next
                broken_next = None
            if kind == "note":
                pitch = _pitch(m, sig, bar_acc)
                if tie and last_idx >= 0 and notes[last_idx][2] == pitch:
                    o, d, p = notes[last_idx]
                    notes[last_idx] = (o, d + dur, p)
                else:
                    notes.append((t, dur, pitch))
                    last_idx = len(notes) - 1
            elif kind == "chord":
                inner = [_pitch(n, sig, bar_acc) for n in TOKEN_RE.finditer(m.group("chord"))
                         if n.lastgroup == "note"]
                if inner:
                    notes.append((t, dur, max(inner)))
                    last_idx = len(notes) - 1
            else:
                last_idx = -1
            t += dur
            tie = False
        elif kind == "tuplet":
            p, q, tuplet_left = parse_tuplet(m.group("tuplet"))
            tuplet_factor = q / p
        elif kind == "broken" and notes:
            short = 0.5 ** len(m.group("broken"))
            first, second = (2 - short, short) if m.group("broken")[0] == ">" else (
                short, 2 - short)
            o, d, p = notes[-1]
            notes[-1] = (o, d * first, p)
            t += d * (first - 1)
            broken_next = second
        elif kind == "tie":
            tie = True
    return notes, t


def _pitch(m: object, sig: dict[str, int], bar_acc: dict[tuple[str, int], int]) -> int:
    letter = m.group("letter")  # type: ignore[attr-defined]
    octave = (5 if letter.islower() else 4) + m.group("oct").count("'") - m.group(  # type: ignore[attr-defined]
        "oct").count(",")
    acc = m.group("acc")  # type: ignore[attr-defined]
    spot = (letter.upper(), octave)
    if acc:
        bar_acc[spot] = _ACC[acc]
    shift = bar_acc.get(spot, sig.get(letter.upper(), 0))
    return 12 * (octave + 1) + _LETTER_PC[letter.upper()] + shift


def key_correlations(notes: list[tuple[float, float, int]], beat_q: float = 1.0,
                     on_beat: float = 1.5) -> np.ndarray:
    """Pearson correlation of the melody's pitch-class profile with each key, shape (24,):
    indices 0-11 major keys on C..B, 12-23 minor keys (Aarden–Essen profiles).

    The profile weighs each note by its duration, times ``on_beat`` when it is struck
    on a beat. ``on_beat=1.0`` is music21's own duration weighting: on the 1,244
    candidates of the ranker's tuning record its best key is music21
    ``analyze('key')``'s for 97.6 % of them, 91.1 % with the default 1.5; the ranker
    keeps 1.5 because re-ranking the tuning grid with 1.0 gave the same figures
    (mode family 86.7 %, exact key 61.7 vs 63.3 %) and the test grid was measured
    with 1.5 (``docs/music_v2.md``, "Ranker v2").
    """
    if not (isinstance(on_beat, int | float) and math.isfinite(on_beat) and on_beat > 0):
        raise ValueError(f"on_beat must be a finite weight > 0, got {on_beat!r}")
    hist = np.zeros(12)
    for onset, dur, pitch in notes:
        struck = abs(onset / beat_q - round(onset / beat_q)) < 1e-6
        hist[pitch % 12] += dur * (on_beat if struck else 1.0)
    if not hist.any() or np.allclose(hist, hist[0]):
        return np.zeros(24)
    h = hist - hist.mean()
    p = _PROFILES - _PROFILES.mean(axis=1, keepdims=True)
    return (p @ h) / (np.linalg.norm(p, axis=1) * np.linalg.norm(h))


def _length_entropy(notes: list[tuple[float, float, int]]) -> float:
    """Shannon entropy (bits) of the note lengths (rounded to 1/48 quarter)."""
    if not notes:
        return 0.0
    _, counts = np.unique(np.round(np.array([d for _, d, _ in notes]) * 48), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True)
class MelodyFacts:
    """What the ranker measured in one candidate melody."""

    key_gap: float
    """Best key's correlation minus the requested key's (0 = the requested key wins)."""
    end_degree: int
    """Semitones of the last note above the tonic (0-11); -1 without notes."""
    end_q: float
    """Duration of the last note."""
    leaps: int
    """Steps wider than a fifth inside the phrase."""
    join_leap: int
    """Semitones from the previous phrase's last note to this one's first (0 without one)."""
    longest_repeat: int
    """Longest run of onsets on one pitch."""
    distinct: int
    """Distinct pitches."""
    length_entropy: float
    """Entropy of the note lengths in bits."""
    first_pitch: int
    last_pitch: int
    onsets_per_quarter: float = 0.0
    """Melody onsets (a tied note is one) per quarter note of the body, rests included."""
    family_gap: float = 0.0
    """Best key's correlation minus the best key's of the requested mode family
    (0 = a key of the requested family wins)."""


def melody_facts(body: str, unit_q: float, key: str, prev_pitch: int | None = None,
                 beat_q: float = 1.0) -> MelodyFacts:
    """Measure a candidate's melody (see the module text).

    Parameters
    ----------
    body : str
        ABC body.
    unit_q : float
        ``L:`` in quarter notes.
    key : str
        The requested key (``K:``).
    prev_pitch : int, optional
        Last pitch of the previous phrase (for the join).
    beat_q : float
        Beat length in quarter notes.

    Returns
    -------
    facts : MelodyFacts
    """
    notes, length_q = _notes_and_length(body, unit_q, key)
    if not notes:
        return MelodyFacts(1.0, -1, 0.0, 0, 0, 0, 0, 0.0, -1, -1)
    k = parse_key(key)
    idx = k.tonic_pc + (0 if k.family == "major" else 12)
    corr = key_correlations(notes, beat_q)
    pitches = [p for _, _, p in notes]
    steps = np.abs(np.diff(pitches)) if len(pitches) > 1 else np.zeros(0)
    run = best = 1
    for a, b in itertools.pairwise(pitches):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return MelodyFacts(
        key_gap=float(corr.max() - corr[idx]), end_degree=(pitches[-1] - k.tonic_pc) % 12,
        end_q=notes[-1][1], leaps=int((steps > 7).sum()),
        join_leap=abs(pitches[0] - prev_pitch) if prev_pitch is not None else 0,
        longest_repeat=best, distinct=len(set(pitches)), length_entropy=_length_entropy(notes),
        first_pitch=pitches[0], last_pitch=pitches[-1],
        onsets_per_quarter=len(notes) / length_q if length_q > 0 else 0.0,
        family_gap=float(corr.max() - (corr[:12] if k.family == "major" else corr[12:]).max()))


@dataclass(frozen=True)
class RankerWeights:
    """Weights of the ranker's penalty terms (the density score is a relative error,
    so 0.1 weighs like a 10 % density miss).

    Ranker v2 (``docs/music_v2.md``, "Ranker v2"): chosen offline among 54 settings
    (the previous one included) on candidate batches recorded on a tuning knob grid
    (``knob_grid(60, seed=1)``, 14 chains, 20 calm-corner phrases;
    ``benchmarks/bench_ranker.py``) by the rule: every issue-15 target met on the
    tuning grid with the composer's default ``enough=4``, then the largest smallest
    margin (mode family, exact key, OA, energy Spearman, in points). The benchmark
    reports the grid of seed 0 (``benchmarks/bench_music_quality.py``). The previous
    wave's weights: key 1.0, rhythm 0.15, rhythm floor 1.0, join 0.4, no family or
    density term."""

    key: float = 2.0
    """Per unit of correlation gap to the best key."""
    cadence: float = 0.2
    """Last note not on the tonic (a fifth or third of the tonic triad costs half)."""
    short_end: float = 0.1
    """Last note shorter than a beat."""
    leap: float = 0.15
    """Per step wider than a fifth inside the phrase."""
    join: float = 1.0
    """Join to the previous phrase wider than a fifth."""
    repeat: float = 0.1
    """Per note beyond three in the longest run of one pitch."""
    few_pitches: float = 0.1
    """Per distinct pitch short of four."""
    rhythm: float = 0.8
    """Per bit of note-length entropy below ``rhythm_floor``."""
    rhythm_floor: float = 1.3
    """Note-length entropy (bits) below which the rhythm counts as flat."""
    family: float = 4.0
    """Per unit of correlation gap between the best key and the best key of the
    requested mode family (on top of ``key``)."""
    density: float = 2.0
    """Per unit of relative density error (``|onsets per quarter - target| / target``),
    on top of the composer's own density score; applies when :func:`penalty` is given
    the energy's target."""

    def __post_init__(self) -> None:
        for name, v in vars(self).items():
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"RankerWeights.{name} must be a finite number >= 0, got {v!r}")


def penalty(facts: MelodyFacts, weights: RankerWeights, beat_q: float = 1.0,
            target: float | None = None) -> float:
    """The ranker's penalty of one melody (0 = nothing to object to).

    Parameters
    ----------
    facts : MelodyFacts
    weights : RankerWeights
    beat_q : float
        Beat length in quarter notes (a shorter last note is a weak ending).
    target : float, optional
        Melody onsets per quarter note the energy asks for
        (:meth:`~st_agent.music.composer.Composer.target_density`); with it the
        ``density`` term applies.

    Returns
    -------
    penalty : float
    """
    w = weights
    score = w.key * facts.key_gap + w.family * facts.family_gap
    if facts.end_degree != 0:
        score += w.cadence * (0.5 if facts.end_degree in (3, 4, 7) else 1.0)
    if facts.end_q < beat_q - 1e-9:
        score += w.short_end
    score += w.leap * facts.leaps + w.join * (facts.join_leap > 7)
    score += w.repeat * max(0, facts.longest_repeat - 3)
    score += w.few_pitches * max(0, 4 - facts.distinct)
    score += w.rhythm * max(0.0, w.rhythm_floor - facts.length_entropy)
    if target is not None and w.density > 0:
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"target must be a finite density > 0 (onsets per quarter), "
                             f"got {target!r}")
        score += w.density * abs(facts.onsets_per_quarter - target) / target
    return float(score)


_ACC_TEXT = {1: "^", 2: "^^", -1: "_", -2: "__", 0: "="}


def respell(body: str, from_key: str, to_key: str) -> str:
    """The same music written under another key signature.

    Every note keeps its pitch: where ``to_key``'s signature (and the
    accidentals already written in the bar) would give another pitch than
    ``from_key`` gave, an explicit accidental is written. Used to keep the
    previous phrases in the prompt when the mode flips (``A`` -> ``Am``).

    Parameters
    ----------
    body : str
        ABC body under ``from_key``.
    from_key, to_key : str
        ABC ``K:`` values.

    Returns
    -------
    body : str
        Under ``to_key``; chords are kept as written.
    """
    src, dst = parse_key(from_key).accidentals(), parse_key(to_key).accidentals()
    if src == dst:
        return body
    out: list[str] = []
    src_bar: dict[tuple[str, int], int] = {}
    dst_bar: dict[tuple[str, int], int] = {}
    for m in TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind == "bar":
            src_bar.clear()
            dst_bar.clear()
        if kind != "note":
            out.append(m.group(0))
            continue
        letter, octs, acc = m.group("letter"), m.group("oct"), m.group("acc")
        spot = (letter.upper(), (5 if letter.islower() else 4) + octs.count("'") - octs.count(","))
        if acc:
            src_bar[spot] = _ACC[acc]
        shift = src_bar.get(spot, src.get(letter.upper(), 0))
        if dst_bar.get(spot, dst.get(letter.upper(), 0)) != shift:
            dst_bar[spot] = shift
            out.append(_ACC_TEXT[shift] + letter + octs + m.group("len"))
        else:
            out.append(letter + octs + m.group("len"))
    return "".join(out)
