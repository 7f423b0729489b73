"""A small lexer for ABC bodies: tokens, note lengths, and what a stretch of music holds.

This is not an ABC parser for rendering (the renderer uses ``abc2midi``); it is
just enough of one to measure each phrase for its control labels (note onsets,
durations in quarter notes, pitches) and to steer decoding token by token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "TOKEN_RE",
    "BodyStats",
    "body_stats",
    "event_length",
    "longest_run",
    "parse_length",
    "parse_tuplet",
    "quarters_fast",
]

# Body lexer. Order matters: inline fields and bar lines before chords.
TOKEN_RE = re.compile(
    r"""
    (?P<field>\[[A-Za-z]:[^\]\n]*\])
  | (?P<bar>:*\|[\]|:]*(?:\[?\d+(?:[,-]\d+)*)?|\[\|[\]|:]*|::|\[\d+(?:[,-]\d+)*)
  | (?P<chord>\[[\^=_A-Ga-gz,'0-9/ ]+\](?P<chordlen>\d*/*\d*))
  | (?P<note>(?P<acc>\^{1,2}|_{1,2}|=)?(?P<letter>[A-Ga-g])(?P<oct>[,']*)(?P<len>\d*/*\d*))
  | (?P<rest>[zx](?P<restlen>\d*/*\d*))
  | (?P<mrest>Z\d*)
  | (?P<grace>\{[^}]*\})
  | (?P<tuplet>\(\d(?::\d*){0,2})
  | (?P<broken>[<>]{1,3})
  | (?P<tie>-)
  | (?P<space>[\s`]+)
  | (?P<deco>[.~HLMOPRSTuv]|\(|\))
  | (?P<other>.)
    """,
    re.VERBOSE,
)

_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

def parse_length(text: str) -> Fraction:
    """Length multiplier of a note, e.g. ``"3/2"``, ``"/"``, ``"//"``, ``"2"``."""
    if not text:
        return Fraction(1)
    m = re.fullmatch(r"(\d*)(/*)(\d*)", text)
    if not m:
        return Fraction(1)
    num = int(m.group(1)) if m.group(1) else 1
    slashes = len(m.group(2))
    if slashes == 0:
        return Fraction(num)
    den = int(m.group(3)) if m.group(3) else 2 ** slashes
    return Fraction(num, den) if den else Fraction(num)


def _length_text(m: re.Match) -> tuple[str, str | None]:
    """Length suffix of a note, rest or chord token, and of a chord's first note."""
    kind = m.lastgroup
    if kind == "note":
        return m.group("len"), None
    if kind == "rest":
        return m.group("restlen"), None
    inner = TOKEN_RE.search(m.group("chord")[1:])
    first = inner.group("len") if inner is not None and inner.lastgroup == "note" else None
    return m.group("chordlen"), first


def event_length(m: re.Match) -> Fraction:
    """Length of a note, rest or chord token in units of ``L:`` (before tuplets)."""
    outer, inner = _length_text(m)
    length = parse_length(outer)
    return length * parse_length(inner) if inner is not None else length


def parse_tuplet(text: str) -> tuple[int, int, int]:
    """``(p, q, r)`` of a tuplet ``(p:q:r``: p notes in the time of q, for r notes."""
    parts = text[1:].split(":")
    p = int(parts[0])
    q_default = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 2)
    q = int(parts[1]) if len(parts) > 1 and parts[1] else q_default
    r = int(parts[2]) if len(parts) > 2 and parts[2] else p
    return p, q, r


@dataclass(frozen=True)
class BodyStats:
    """Measurements of a stretch of ABC body, for control labels.

    Attributes
    ----------
    n_onsets : int
        Notes and chords struck (grace notes and tied continuations excluded).
    quarters : float
        Duration in quarter notes (rests included).
    mean_pitch : float
        Mean MIDI pitch of the notes, NaN when there are none.
    pc_hist : tuple of float
        Duration-weighted pitch-class histogram, length 12, C first.
    last_pc : int
        Pitch class of the last note, -1 when there is none.
    longest_repeat : int
        Most consecutive note onsets on one pitch (0 when there are no notes).
    """

    n_onsets: int
    quarters: float
    mean_pitch: float
    pc_hist: tuple[float, ...]
    last_pc: int = -1
    longest_repeat: int = 0

    @property
    def notes_per_quarter(self) -> float:
        """Onsets per quarter note; 0 when the duration is 0."""
        return self.n_onsets / self.quarters if self.quarters > 0 else 0.0


def body_stats(body: str, unit: Fraction, key_accidentals: dict[str, int] | None = None
               ) -> BodyStats:
    """Count onsets, duration and pitches of an ABC body.

    Parameters
    ----------
    body : str
        ABC body text (no header lines).
    unit : Fraction
        The ``L:`` unit note length, in whole notes (e.g. ``Fraction(1, 8)``).
    key_accidentals : dict, optional
        Letter (upper case) to semitone shift from the key signature.

    Returns
    -------
    stats : BodyStats
    """
    key_accidentals = key_accidentals or {}
    n_onsets = 0
    total = Fraction(0)
    pitches: list[int] = []
    hist = [0.0] * 12
    tuplet_left = 0
    tuplet_factor = Fraction(1)
    broken_next: Fraction | None = None
    last_len: Fraction | None = None
    tie_pending = False
    last_pc = -1

    for m in TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind in ("note", "chord", "rest"):
            length = event_length(m)
            if tuplet_left > 0:
                length *= tuplet_factor
                tuplet_left -= 1
            if broken_next is not None:
                length *= broken_next
                broken_next = None
            dur = length * unit * 4  # in quarter notes
            total += dur
            last_len = dur
            if kind == "note":
                letter = m.group("letter")
                octave = 5 if letter.islower() else 4
                octave += m.group("oct").count("'") - m.group("oct").count(",")
                acc = m.group("acc")
                if acc:
                    shift = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}[acc]
                else:
                    shift = key_accidentals.get(letter.upper(), 0)
                pitch = 12 * (octave + 1) + _LETTER_PC[letter.upper()] + shift
                if not tie_pending:
                    n_onsets += 1
                    pitches.append(pitch)
                hist[pitch % 12] += float(dur)
                last_pc = pitch % 12
            elif kind == "chord":
                if not tie_pending:
                    n_onsets += 1
            tie_pending = False
        elif kind == "tuplet":
            p, q, tuplet_left = parse_tuplet(m.group("tuplet"))
            tuplet_factor = Fraction(q, p)
        elif kind == "broken" and last_len is not None:
            n = len(m.group("broken"))
            short = Fraction(1, 2 ** n)
            long_ = 2 - short
            first, second = (long_, short) if m.group("broken")[0] == ">" else (short, long_)
            total += last_len * (first - 1)
            broken_next = second
        elif kind == "tie":
            tie_pending = True
        elif kind == "mrest":
            pass  # multi-bar rests are removed from the corpus before this point
    mean_pitch = sum(pitches) / len(pitches) if pitches else float("nan")
    return BodyStats(n_onsets=n_onsets, quarters=float(total), mean_pitch=mean_pitch,
                     pc_hist=tuple(hist), last_pc=last_pc, longest_repeat=longest_run(pitches))


def longest_run(values: list[int]) -> int:
    """Length of the longest run of equal consecutive values (0 for none)."""
    best = run = 0
    for i, v in enumerate(values):
        run = run + 1 if i and v == values[i - 1] else 1
        best = max(best, run)
    return best


_LEN_CACHE: dict[str, float] = {}


def _len_float(text: str) -> float:
    value = _LEN_CACHE.get(text)
    if value is None:
        value = _LEN_CACHE[text] = float(parse_length(text))
    return value


def quarters_fast(body: str, unit_q: float) -> float:
    """Duration of an ABC body in quarter notes, in floating point.

    The same count as ``body_stats(body, unit).quarters`` without the pitch
    bookkeeping or exact fractions; for steering decoding token by token.

    Parameters
    ----------
    body : str
        ABC body text.
    unit_q : float
        The ``L:`` unit in quarter notes (0.5 for ``L:1/8``).
    """
    total = 0.0
    last = 0.0
    tuplet_left = 0
    tuplet_factor = 1.0
    broken_next = 0.0
    for m in TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind in ("note", "chord", "rest"):
            outer, inner = _length_text(m)
            length = _len_float(outer) * (_len_float(inner) if inner is not None else 1.0)
        elif kind == "tuplet":
            p, q, tuplet_left = parse_tuplet(m.group("tuplet"))
            tuplet_factor = q / p
            continue
        elif kind == "broken" and last:
            short = 0.5 ** len(m.group("broken"))
            first, second = ((2 - short), short) if m.group("broken")[0] == ">" else (
                short, 2 - short)
            total += last * (first - 1)
            broken_next = second
            continue
        else:
            continue
        if tuplet_left > 0:
            length *= tuplet_factor
            tuplet_left -= 1
        if broken_next:
            length *= broken_next
            broken_next = 0.0
        last = length * unit_q
        total += last
    return total
