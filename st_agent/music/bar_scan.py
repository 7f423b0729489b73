"""The bar grammar's scanner: what a stretch of ABC body holds, bar by bar.

:func:`scan_bars` reads text lexeme by lexeme with the corpus lexer and says
whether it keeps the grammar of meter-aware decoding (see
:mod:`st_agent.music.bar_grammar`) and how full its bars are;
:func:`bars_are_valid` is the model-level bar validity of a finished phrase.
Durations are in quarter notes (``*_q``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from st_agent.tokenizer.abc_lexer import TOKEN_RE, parse_length

__all__ = ["EPS", "NOTE_PITCH", "PARTIAL_END", "BarScan", "bars_are_valid", "scan_bars"]

EPS = 1e-6
# A lexeme the next token can still complete: an accidental awaiting its letter,
# an opening parenthesis (a tuplet's "(3").
PARTIAL_END = re.compile(r"(?:\^{1,2}|_{1,2}|=|\()$")
NOTE_PITCH = re.compile(r"(?:\^{1,2}|_{1,2}|=)?([A-Ga-g])[,']*")


@functools.lru_cache(maxsize=4096)
def _length(text: str) -> Fraction:
    """A note's or rest's length suffix in ``L:`` units (cached: few suffixes recur)."""
    return parse_length(text)


@dataclass(frozen=True)
class BarScan:
    """What a stretch of ABC text holds, bar by bar (see :func:`scan_bars`).

    Attributes
    ----------
    ok : bool
        Well formed (only allowed lexemes, only plain ``|`` bar lines, no tuplet
        or broken-rhythm pair across a bar line).
    bar_fills_q : tuple of float
        Quarter notes before each bar line, counted from the previous bar line
        (the first from the start of the text).
    tail_q : float
        Quarter notes after the last bar line, a partial lexeme at the end left out.
    tail_has_music : bool
        Whether anything but spaces follows the last bar line.
    needs_q : float
        Quarter notes the text still needs before a bar line can follow: one
        ``L:`` unit for a partial accidental, two for a ``(`` (a triplet of
        units), the notes left in an open triplet (one unit each), the second
        note of a broken-rhythm pair (one unit); 0 when nothing is open.
    ends_tied : bool
        The last bar line follows a tie (which would have nothing to tie to
        if the phrase ended there).
    tie_open : bool
        The text ends with a tie still waiting for its note.
    """

    ok: bool
    bar_fills_q: tuple[float, ...] = ()
    tail_q: float = 0.0
    tail_has_music: bool = False
    needs_q: float = 0.0
    ends_tied: bool = False
    tie_open: bool = False


_BAD = BarScan(ok=False)


class _ScanState:
    """The lexer state of :func:`scan_bars`, one lexeme at a time."""

    def __init__(self, check_pitch: bool = True) -> None:
        self.check_pitch = check_pitch
        self.fills: list[float] = []
        self.q = self.last = self.broken_next = 0.0
        self.tuplet_left, self.tuplet_factor = 0, 1.0
        self.tail_start = 0
        self.last_kind = ""
        self.tied = self.pair_second = self.tied_at_bar = False
        self.group_len = 0.0  # notated length the rest of a pair or triplet must share
        self.pitch = ""  # of the last note, as written

    def step(self, m: re.Match, unit_q: float) -> bool:
        """Take one lexeme; False when it breaks the grammar."""
        kind = m.lastgroup
        if kind in ("note", "rest"):
            ok = self._event(m, kind, unit_q)
        elif kind == "tuplet":
            # triplets only, never inside a triplet or a broken-rhythm pair
            ok = m.group(0) == "(3" and not (self.tuplet_left or self.broken_next or self.tied)
            self.tuplet_left, self.tuplet_factor, self.group_len = 3, 2 / 3, 0.0
        elif kind == "tie":  # follows a plain note (no accidental, no octave mark), once
            ok = not (self.tied or self.tuplet_left) and self.last_kind == "note" \
                and len(self.pitch) == 1
            self.tied = True
        elif kind == "broken":  # one pair at a time, right after its first note
            ok = not (self.broken_next or self.pair_second or self.tuplet_left) \
                and self.last_kind in ("note", "rest")
            short = 0.5 ** len(m.group(0))
            first, self.broken_next = ((2 - short), short) if m.group(0)[0] == ">" else (
                short, 2 - short)
            self.q += self.last * (first - 1)
        elif kind == "bar":
            ok = m.group(0) == "|" and not (self.tuplet_left or self.broken_next)
            self.fills.append(self.q)
            self.q = self.last = 0.0
            self.tail_start, self.tied_at_bar = m.end(), self.tied
        else:  # chords, grace notes, stray letters, quotes, decorations, fields, runs of spaces
            ok = kind == "space" and m.group(0) == " " and self.last_kind != "space"
        self.last_kind = kind
        return ok

    def _event(self, m: re.Match, kind: str, unit_q: float) -> bool:
        if kind == "rest" and (m.group(0)[0] == "x" or self.tied):
            return False  # invisible rests have no place in a melody; a tie needs a note
        if kind == "note":
            upper, octave = m.group("letter").isupper(), m.group("oct")
            if ("'" in octave) if upper else ("," in octave):
                return False  # abc2midi refuses B' (and c, is unusual)
            pitch = m.group(0)[:len(m.group(0)) - len(m.group("len"))]
            if self.tied and self.check_pitch and pitch != self.pitch:
                return False  # a tie joins two notes of one pitch
            self.pitch = pitch
        length_units = _length(m.group("len") if kind == "note" else m.group("restlen"))
        if length_units.denominator not in (1, 2, 4) or not 0 < length_units <= 16:
            return False  # lengths such as /62 or 0 are typos, and dead ends
        notated = float(length_units)
        in_group = self.tuplet_left > 0 or self.broken_next > 0
        if in_group and self.group_len and abs(notated - self.group_len) > EPS:
            return False  # a pair or triplet of unequal notes
        length = notated
        if self.tuplet_left > 0:
            length *= self.tuplet_factor
            self.tuplet_left -= 1
        if self.broken_next:
            length *= self.broken_next
            self.broken_next, self.pair_second = 0.0, True
        else:
            self.pair_second = False
        self.group_len = notated if (self.tuplet_left or not in_group) else 0.0
        self.tied = False
        self.last = length * unit_q
        self.q += self.last
        return True


def scan_bars(text: str, unit_q: float, check_pitch: bool = True) -> BarScan:
    """Scan ABC body text for the bar grammar.

    Parameters
    ----------
    text : str
        Body text (no header, no newline).
    unit_q : float
        The ``L:`` unit in quarter notes (0.5 for ``L:1/8``).
    check_pitch : bool
        Check that a tie joins two notes of one pitch (the tables of
        :class:`BarGrammar` leave it out: their keys do not keep pitches).

    Returns
    -------
    scan : BarScan
    """
    partial = PARTIAL_END.search(text)
    body = text[:partial.start()] if partial else text
    st = _ScanState(check_pitch)
    for m in TOKEN_RE.finditer(body):
        if not st.step(m, unit_q):
            return _BAD
    if partial and (st.tied if check_pitch else False):
        return _BAD  # after a tie the tied pitch follows, written whole
    if partial and partial.group(0) == "(" and (st.tuplet_left or st.broken_next or st.tied):
        return _BAD  # no triplet inside a triplet, a broken-rhythm pair or after a tie
    fills, q, tuplet_left, tuplet_factor, broken_next = (
        st.fills, st.q, st.tuplet_left, st.tuplet_factor, st.broken_next)
    tail_start = st.tail_start
    # a partial "(" can only become a triplet (two units); an accidental one note
    partial_q = 0.0 if not partial else (2 * unit_q if partial.group(0) == "(" else unit_q)
    group_q = (st.group_len or 1.0) * unit_q  # the notated length the group's notes share
    needs = max(partial_q, tuplet_left * tuplet_factor * group_q, broken_next * group_q,
                unit_q if st.tied else 0.0)
    return BarScan(ok=True, bar_fills_q=tuple(fills), tail_q=q,
                   tail_has_music=bool(text[tail_start:].strip()), needs_q=needs,
                   ends_tied=st.tied_at_bar, tie_open=st.tied)


def bars_are_valid(body: str, unit_q: float, bar_q: float, n_bars: int) -> bool:
    """Whether ``body``, as written, is ``n_bars`` full bars and nothing else.

    Every bar line must be a plain ``|`` closing exactly ``bar_q`` quarter notes
    (a pickup or a short last bar fails), with no music and no open tie after
    the last one, and the text must keep the grammar of :func:`scan_bars`: the
    model-level bar validity, with no re-barring.

    Parameters
    ----------
    body : str
        One phrase's body.
    unit_q, bar_q : float
        ``L:`` and the bar length, in quarter notes.
    n_bars : int
        Bars the phrase must hold.
    """
    s = scan_bars(body.strip(), unit_q)
    return (s.ok and len(s.bar_fills_q) == n_bars and not s.tail_has_music
            and not s.tie_open and all(abs(f - bar_q) <= EPS for f in s.bar_fills_q))
