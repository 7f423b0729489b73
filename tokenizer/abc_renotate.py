"""Exact renotation of ABC bars: transposition by an interval, a new unit note length.

Used by :mod:`st_agent.tokenizer.corpus_condition` to bring training tunes into the
composer's condition. Everything here is exact (``Fraction`` durations, integer
pitches):

- **Pitch.** Each note's absolute pitch is read under the source key signature and
  the bar-local accidentals of ABC 2.1 (an accidental holds for the same letter, in
  every octave, until the bar line: ``%%propagate-accidentals pitch``, the
  standard's default and music21's), then moved by a :class:`Transposition` (diatonic steps and
  semitones, so a G-major ``^c`` becomes an A-major ``^d``), then spelt under the
  target key signature. An accidental is written whenever the pitch differs from
  the target signature, and also on every later note of the same letter in that
  output bar, so the text reads the same under all three propagation rules
  (``not``, ``octave``, ``pitch``).
- **Length.** Every length multiplier is multiplied by ``scale`` (1/2 for
  ``L:1/16`` -> ``L:1/8``); tuplets and broken rhythms are kept as they are.
- **Kept out.** Grace notes, decorations and stray characters are dropped
  (counted); bar lines become plain ``|`` (repeat signs and ending numbers are
  dropped: the bars stay in their written order); a chord or an inline field
  makes the bar refused (:class:`RenotationError`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from st_agent.theory import Key
from st_agent.tokenizer.abc_lexer import TOKEN_RE, parse_length, parse_tuplet

__all__ = [
    "RenotatedBars",
    "RenotationError",
    "Transposition",
    "format_length",
    "renotate_bars",
    "transposition_to",
]

_LETTERS = "CDEFGAB"
_NATURAL_PC = (0, 2, 4, 5, 7, 9, 11)
_ACC_SHIFT = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}
_ACC_TEXT = {-2: "__", -1: "_", 0: "=", 1: "^", 2: "^^"}


class RenotationError(ValueError):
    """A bar that cannot be renotated exactly (the reason is the message)."""


@dataclass(frozen=True)
class Transposition:
    """An interval: diatonic ``steps`` (letters) and ``semitones``.

    Attributes
    ----------
    steps : int
        Letter steps, e.g. +1 for G -> A.
    semitones : int
        Semitones, e.g. +2 for G -> A.
    """

    steps: int = 0
    semitones: int = 0


def transposition_to(tonic_letter: str, tonic_pc: int, target_letter: str = "A",
                     target_pc: int = 9) -> Transposition:
    """The nearest interval (-6 .. +5 semitones) from one tonic to another.

    Parameters
    ----------
    tonic_letter, target_letter : str
        Letters ``A``-``G`` of the two tonics.
    tonic_pc, target_pc : int
        Their pitch classes 0-11 (C = 0).

    Returns
    -------
    transposition : Transposition
        E.g. G -> A: +1 step, +2 semitones; E -> A: +3 steps, +5 semitones;
        Eb -> A: -4 steps, -6 semitones.
    """
    for name, letter in (("tonic_letter", tonic_letter), ("target_letter", target_letter)):
        if not isinstance(letter, str) or letter.upper() not in _LETTERS or len(letter) != 1:
            raise ValueError(f"{name} must be one of A-G, got {letter!r}")
    up_steps = (_LETTERS.index(target_letter.upper()) - _LETTERS.index(tonic_letter.upper())) % 7
    up_semis = (target_pc - tonic_pc) % 12
    if up_semis <= 5:
        return Transposition(up_steps, up_semis)
    return Transposition(up_steps - 7 if up_steps else 0, up_semis - 12)


def format_length(units: Fraction) -> str:
    """ABC length suffix for a length in units of ``L:`` (1 -> "", 1/2 -> "/", 3/2 -> "3/2")."""
    if units <= 0:
        raise ValueError(f"a note length must be positive, got {units}")
    if units == 1:
        return ""
    if units.denominator == 1:
        return str(units.numerator)
    if units.numerator == 1:
        return "/" if units.denominator == 2 else f"/{units.denominator}"
    return f"{units.numerator}/{units.denominator}"


@dataclass
class RenotatedBars:
    """Bars renotated as one output bar.

    Attributes
    ----------
    text : str
        The renotated music, ending with ``|``.
    duration : Fraction
        Its length in whole notes (tuplets and broken rhythms applied).
    pitches : list of int
        MIDI pitch of every note in order, after transposition (for checks).
    dropped : dict
        What was left out: ``"grace"``, ``"decoration"``, ``"other"`` -> count.
    """

    text: str
    duration: Fraction
    pitches: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class _State:
    """Walker state of one output bar."""

    out: list[str] = field(default_factory=list)
    duration: Fraction = Fraction(0)
    pitches: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)  # letters with an explicit accidental
    tuplet_left: int = 0
    tuplet_factor: Fraction = Fraction(1)
    broken_next: Fraction | None = None
    last: Fraction | None = None

    def drop(self, what: str) -> None:
        self.dropped[what] = self.dropped.get(what, 0) + 1


def renotate_bars(bars: Sequence[str], source_key: Key, target_key: Key,
                  transposition: Transposition, unit: Fraction, scale: Fraction
                  ) -> RenotatedBars:
    """Renotate source bars (each ending with its bar line) as one output bar.

    Parameters
    ----------
    bars : sequence of str
        Source bars; bar-local accidentals end at each one's end. Several bars
        make one output bar (2/4 pairs to 4/4); their inner bar lines are dropped.
    source_key, target_key : Key
        Key signatures read from and written to.
    transposition : Transposition
        Interval applied to every pitch.
    unit : Fraction
        Source ``L:`` in whole notes.
    scale : Fraction
        Factor applied to every length multiplier (source unit / target unit).

    Returns
    -------
    bars : RenotatedBars

    Raises
    ------
    RenotationError
        On a chord, an inline field, a multi-bar rest, or a pitch the target
        spelling cannot write (beyond a double accidental).
    """
    if not isinstance(scale, Fraction) or scale <= 0:
        raise ValueError(f"scale must be a positive Fraction, got {scale!r}")
    src_sig, dst_sig = source_key.accidentals(), target_key.accidentals()
    st = _State()
    for bar in bars:
        local: dict[str, int] = {}
        for m in TOKEN_RE.finditer(bar):
            _token(m, st, local, src_sig, dst_sig, transposition, unit, scale)
    text = re.sub(r" +", " ", "".join(st.out)).strip()
    return RenotatedBars(text=text + "|", duration=st.duration, pitches=st.pitches,
                         dropped=st.dropped)


def _token(m: re.Match, st: _State, local: dict[str, int], src_sig: dict[str, int],
           dst_sig: dict[str, int], tr: Transposition, unit: Fraction, scale: Fraction) -> None:
    """Renotate one lexer token into ``st``."""
    kind = m.lastgroup
    if kind == "note":
        pitch, text = _note(m, st, local, src_sig, dst_sig, tr)
        st.pitches.append(pitch)
        st.out.append(text + format_length(parse_length(m.group("len")) * scale))
        _advance(st, parse_length(m.group("len")) * unit)
    elif kind == "rest":
        st.out.append("z" + format_length(parse_length(m.group("restlen")) * scale))
        _advance(st, parse_length(m.group("restlen")) * unit)
    elif kind == "tuplet":
        p, q, st.tuplet_left = parse_tuplet(m.group("tuplet"))
        st.tuplet_factor = Fraction(q, p)
        st.out.append(m.group("tuplet"))
    elif kind == "broken":
        if st.last is None:
            raise RenotationError("broken rhythm without a note before it")
        first, second = _broken_factors(m.group("broken"))
        st.duration += st.last * (first - 1)
        st.broken_next = second
        st.out.append(m.group("broken"))
    elif kind == "tie":
        st.out.append("-")
    elif kind == "space":
        st.out.append(" ")
    elif kind == "bar":
        st.out.append(" ")  # inner bar lines (pairs) and the closing one: redrawn by the caller
    elif kind == "chord":
        raise RenotationError("chord (several notes at once)")
    elif kind == "field":
        raise RenotationError("inline field in the body")
    elif kind == "mrest":
        raise RenotationError("multi-bar rest")
    elif kind == "grace":
        st.drop("grace")
    elif kind == "deco":
        st.drop("decoration")
    else:
        st.drop("other")


def _broken_factors(text: str) -> tuple[Fraction, Fraction]:
    """Length factors of the two notes of a broken rhythm (``>`` -> 3/2, 1/2)."""
    short = Fraction(1, 2 ** len(text))
    return (2 - short, short) if text[0] == ">" else (short, 2 - short)


def _advance(st: _State, length: Fraction) -> None:
    """Add one note or rest of ``length`` whole notes (before tuplets/broken rhythm)."""
    if st.tuplet_left > 0:
        length *= st.tuplet_factor
        st.tuplet_left -= 1
    if st.broken_next is not None:
        length *= st.broken_next
        st.broken_next = None
    st.duration += length
    st.last = length


def _note(m: re.Match, st: _State, local: dict[str, int], src_sig: dict[str, int],
          dst_sig: dict[str, int], tr: Transposition) -> tuple[int, str]:
    """MIDI pitch after transposition and the note's spelling (without length)."""
    letter = m.group("letter")
    up = letter.upper()
    octave = (5 if letter.islower() else 4) + m.group("oct").count("'") - m.group("oct").count(",")
    acc = m.group("acc")
    if acc:
        alter = _ACC_SHIFT[acc]
        local[up] = alter
    else:
        alter = local.get(up, src_sig.get(up, 0))
    li = _LETTERS.index(up)
    pitch = 12 * (octave + 1) + _NATURAL_PC[li] + alter + tr.semitones
    d = 7 * octave + li + tr.steps
    li2, oct2 = d % 7, d // 7
    alter2 = pitch - (12 * (oct2 + 1) + _NATURAL_PC[li2])
    if alter2 not in _ACC_TEXT:
        raise RenotationError(f"pitch needs {alter2:+d} semitones on {_LETTERS[li2]}")
    up2 = _LETTERS[li2]
    acc_text = ""
    if alter2 != dst_sig.get(up2, 0) or up2 in st.written:
        acc_text = _ACC_TEXT[alter2]
        st.written.add(up2)
    name = up2 + "," * (4 - oct2) if oct2 <= 4 else up2.lower() + "'" * (oct2 - 5)
    return pitch, acc_text + name


def split_at_bar_lines(bar: str, unit: Fraction, bar_len: Fraction) -> list[str] | None:
    """Split a source bar that holds several bars at every ``bar_len``, or None.

    Some collections (the Essen songs in music21) leave out the bar line at the
    end of a line, so one written bar holds two. The bar is cut after the note
    or rest (and its tie) that completes each ``bar_len``, where no tuplet or
    broken-rhythm pair is open; None when the duration is not a whole number of
    bars or a note straddles a cut.

    Parameters
    ----------
    bar : str
        One source bar (ending with its bar line).
    unit, bar_len : Fraction
        ``L:`` and the bar length, in whole notes.

    Returns
    -------
    bars : list of str or None
        The pieces, each ending with ``|``.
    """
    st = _State()
    cuts: list[int] = []
    tokens = list(TOKEN_RE.finditer(bar))
    total = _bar_total(bar, unit)
    for n, m in enumerate(tokens):
        kind = m.lastgroup
        if kind == "tuplet":
            p, q, st.tuplet_left = parse_tuplet(m.group("tuplet"))
            st.tuplet_factor = Fraction(q, p)
        elif kind == "broken" and st.last is not None:
            first, second = _broken_factors(m.group("broken"))
            st.duration += st.last * (first - 1)
            st.broken_next = second
        elif kind in ("note", "rest", "chord"):
            length = parse_length(m.group("len") if kind == "note" else (
                m.group("restlen") if kind == "rest" else m.group("chordlen")))
            _advance(st, length * unit)
            following = tokens[n + 1].lastgroup if n + 1 < len(tokens) else None
            whole = st.duration % bar_len == 0 and st.duration < total
            if whole and st.tuplet_left == 0 and st.broken_next is None and following != "broken":
                cuts.append(tokens[n + 1].end() if following == "tie" else m.end())
    if total == 0 or total % bar_len or len(cuts) != total // bar_len - 1:
        return None
    pieces = [bar[a:b] for a, b in zip([0, *cuts], [*cuts, len(bar)], strict=True)]
    return [p.strip() + "|" if not p.rstrip().endswith("|") else p for p in pieces]


def _bar_total(bar: str, unit: Fraction) -> Fraction:
    """Duration of a bar in whole notes (identity renotation)."""
    key = Key(tonic_pc=0, tonic_letter="C", mode="ionian")
    return renotate_bars([bar], key, key, Transposition(), unit, Fraction(1)).duration
