"""The independent check of conditioning: music21 reads the source and the renotation.

:func:`check_conditioning` parses the kept source bars in their original
notation (``M: L: K:`` of the source) and the conditioned tune (``L:1/8``, A or
Am, pairs, pickup line) with music21's ABC reader, both declared ABC 2.1 (so
an accidental holds for its letter in every octave until the bar line, music21's
``'pitch'`` propagation), and compares the note sequences: every source pitch shifted by the
tune's interval must equal the renotated pitch, and every duration (quarter
notes, tuplets and broken rhythms applied by music21) must be equal. Grace notes
are left out on the source side (the renotation drops them), with the other
changes :func:`_plain` lists, none of which carries a pitch or a length.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from st_agent.tokenizer.abc_lexer import TOKEN_RE
from st_agent.tokenizer.corpus_condition import Conditioning

__all__ = ["CheckResult", "check_conditioning", "music21_events"]

Event = tuple[tuple[int, ...] | None, Fraction]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check.

    Attributes
    ----------
    ok : bool
        Pitches (shifted) and durations all equal.
    n_events : int
        Notes and rests compared.
    detail : str
        The first difference, "" when ``ok``.
    """

    ok: bool
    n_events: int
    detail: str = ""


def music21_events(abc: str) -> list[Event]:
    """Notes, chords and rests of an ABC tune as music21 reads it.

    Parameters
    ----------
    abc : str
        One tune (``X:`` line and header included).

    Returns
    -------
    events : list of (pitches or None, quarter length)
        MIDI pitches (a tuple, one per chord note) or None for a rest, and the
        duration in quarter notes; grace notes are left out.
    """
    from music21 import converter

    score = converter.parse(abc, format="abc")
    out: list[Event] = []
    for n in score.recurse().notesAndRests:
        if n.duration.isGrace:
            continue
        ql = Fraction(n.quarterLength).limit_denominator(10_000)
        if n.isRest:
            out.append((None, ql))
        else:
            out.append((tuple(p.midi for p in n.pitches), ql))
    return out


def _plain(m) -> str:
    """A source token as music21 is given it; what changes carries no pitch or length.

    Decorations are left out (music21 reads ``>.``, a staccato after a broken
    rhythm, as no broken rhythm); every bar line is written ``|`` (music21 loses
    notes after ``::``; an accidental ends at any bar line); an invisible rest
    ``x`` is written ``z`` (music21 drops ``x``; the renotation writes ``z``).
    """
    kind = m.lastgroup
    if kind in ("deco", "grace"):
        return ""
    if kind == "bar":  # "[1" opens a variant ending inside a bar: no bar line
        return "" if m.group(0)[:1] == "[" and m.group(0)[1:2].isdigit() else "|"
    if kind == "rest":
        return "z" + m.group("restlen")
    return m.group(0)


def check_conditioning(c: Conditioning, meter: str, unit: str, key: str) -> CheckResult:
    """Compare music21's reading of the source bars and of their renotation.

    Parameters
    ----------
    c : Conditioning
        From :func:`st_agent.tokenizer.corpus_condition.condition_tune`.
    meter, unit, key : str
        ``M:``, ``L:``, ``K:`` of the source tune.

    Returns
    -------
    result : CheckResult
    """
    body = "".join(_plain(m) for m in TOKEN_RE.finditer(c.source_text))
    src = f"%abc-2.1\nX:1\nM:{meter}\nL:{unit}\nK:{key}\n{body}\n"
    dst = "%abc-2.1\nX:1\n" + c.tune.text()
    a, b = music21_events(src), music21_events(dst)
    shift = c.tune.semitones
    a = [(None if p is None else tuple(x + shift for x in p), ql) for p, ql in a]
    if len(a) != len(b):
        return CheckResult(False, min(len(a), len(b)),
                           f"{len(a)} source events vs {len(b)} renotated")
    for i, (ea, eb) in enumerate(zip(a, b, strict=True)):
        if ea != eb:
            return CheckResult(False, len(a), f"event {i}: source {ea} vs renotated {eb}")
    return CheckResult(True, len(a))
