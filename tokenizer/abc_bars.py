"""Bars of an ABC body: split at its bar lines, or bar lines drawn again from note lengths."""

from __future__ import annotations

from fractions import Fraction

from st_agent.tokenizer.abc_lexer import (
    TOKEN_RE,
    body_stats,
    event_length,
    parse_tuplet,
)

__all__ = ["rebar", "split_bars"]


def split_bars(body: str) -> list[str]:
    """Split a one-line ABC body into bars, each ending with its bar line.

    Text after the last bar line (an unterminated last bar) is returned as a
    final element. Empty bars (two bar lines in a row) are merged into the
    previous one.
    """
    bars: list[str] = []
    start = 0
    for m in TOKEN_RE.finditer(body):
        if m.lastgroup != "bar":
            continue
        token = m.group("bar")
        if token.startswith("[") and token[1:2].isdigit():
            continue  # "[1" variant ending opens, it does not close a bar
        chunk = body[start:m.end()]
        if bars and not _has_music(body[start:m.start()]):
            bars[-1] += chunk
        else:
            bars.append(chunk)
        start = m.end()
    rest = body[start:]
    if rest.strip():
        bars.append(rest)
    elif bars:
        bars[-1] += rest
    return bars


def _has_music(text: str) -> bool:
    return any(m.lastgroup in ("note", "chord", "rest") for m in TOKEN_RE.finditer(text))


def _events(body: str, unit: Fraction) -> list[tuple[str, Fraction, tuple[str, str] | None]]:
    """Split a body into atomic timed events ``(text, duration in whole notes, split)``.

    ``split`` is ``(prefix, pitch)`` for a lone note or rest, which may be split
    at a bar line, and None for events that may not.

    Bar lines are dropped. A broken-rhythm pair (``A>B``) and a tuplet group
    (``(3abc``) are one event each, since a bar line cannot fall inside them;
    grace notes, decorations and spaces stick to the next event, ties to the
    previous one.
    """
    events: list[list] = []  # [text, duration, open_slots]
    prefix = ""
    tuplet_left = 0
    tuplet_factor = Fraction(1)
    join_next = False
    for m in TOKEN_RE.finditer(body):
        kind = m.lastgroup
        text = m.group(0)
        if kind == "bar":
            prefix = prefix.rstrip() + " " if prefix.strip() else ""
            continue
        if kind in ("note", "chord", "rest"):
            dur = event_length(m) * unit
            if tuplet_left > 0:
                dur *= tuplet_factor
                tuplet_left -= 1
            if join_next and events:
                events[-1][0] += prefix + text
                events[-1][1] += dur
                events[-1][2] = None  # a pair or a tuplet cannot be split
                join_next = tuplet_left > 0
            else:
                # A lone note or rest can be split at a bar line (a tie joins the halves).
                pitch = None
                if kind == "note":
                    pitch = text[: len(text) - len(m.group("len"))]
                elif kind == "rest":
                    pitch = text[0]
                split = (prefix, pitch) if pitch is not None and tuplet_left == 0 else None
                events.append([prefix + text, dur, split])
                join_next = tuplet_left > 0
            prefix = ""
        elif kind == "tuplet":
            p, q, tuplet_left = parse_tuplet(text)
            tuplet_factor = Fraction(q, p)
            prefix += text
        elif kind == "broken":
            if not events:
                raise ValueError("broken rhythm without a note before it")
            n = len(text)
            short = Fraction(1, 2 ** n)
            first, second = (2 - short, short) if text[0] == ">" else (short, 2 - short)
            events[-1][1] *= first
            events[-1][0] += text
            events[-1][2] = None
            # the next note joins this event and gets the second factor
            events[-1].append(second)
            join_next = True
        elif kind == "tie":
            if events:
                events[-1][0] += text
        elif kind == "mrest":
            raise ValueError("multi-bar rest in a phrase")
        elif kind == "field":
            raise ValueError("inline field in a phrase")
        else:  # spaces, decorations, grace notes, others
            prefix += text
    # apply the second factor of broken-rhythm pairs to the note that joined them
    out: list[tuple[str, Fraction, tuple[str, str] | None]] = []
    for ev in events:
        text, dur, split = ev[0], ev[1], ev[2]
        if len(ev) > 3:
            # dur = first*d1 + d2 where d2 must be scaled by the second factor;
            # recompute from the text to stay exact.
            dur = _pair_duration(text, unit)
        out.append((text, dur, split))
    return out


def _fmt_len(units: Fraction) -> str:
    """ABC length suffix for a duration in units of ``L:`` (1 -> "", 3/2 -> "3/2")."""
    if units == 1:
        return ""
    if units.denominator == 1:
        return str(units.numerator)
    if units.numerator == 1:
        return f"/{units.denominator}"
    return f"{units.numerator}/{units.denominator}"


def _pair_duration(text: str, unit: Fraction) -> Fraction:
    """Duration of a broken-rhythm pair such as ``A>B`` or ``c2<<d2``."""
    stats = body_stats(text, unit)
    return Fraction(stats.quarters).limit_denominator(10_000) / 4


def rebar(body: str, unit: Fraction, bar_len: Fraction, n_bars: int) -> list[str]:
    """Re-draw the bar lines of a body every ``bar_len`` and keep ``n_bars`` bars.

    Parameters
    ----------
    body : str
        ABC body; its own bar lines (and repeat signs) are ignored.
    unit : Fraction
        ``L:`` in whole notes.
    bar_len : Fraction
        Bar length in whole notes (``parse_meter(M)``).
    n_bars : int
        Bars to return; music after them is dropped.

    Returns
    -------
    bars : list of str
        ``n_bars`` strings, each ending with ``|``.

    Raises
    ------
    ValueError
        When a chord, tuplet or broken-rhythm pair would straddle a bar line, or
        the body holds less than ``n_bars`` bars of music. A lone note that
        straddles one is split there and tied (a rest is split without a tie).
    """
    bars: list[str] = []
    current, filled = "", Fraction(0)
    for text, dur, split in _events(body, unit):
        while filled + dur > bar_len:
            if split is None:
                raise ValueError("a chord, tuplet or broken rhythm would straddle a bar line")
            # Split a lone note at the bar line; a tie joins its halves (not for rests).
            prefix, pitch = split
            head = bar_len - filled
            tie = "" if pitch in ("z", "x") else "-"
            bars.append((current + prefix + pitch + _fmt_len(head / unit) + tie).strip() + "|")
            if len(bars) == n_bars:
                return bars
            current, filled, dur, prefix = "", Fraction(0), dur - head, ""
            split = (prefix, pitch)
            text = pitch + _fmt_len(dur / unit)
        current += text
        filled += dur
        if filled == bar_len:
            bars.append(current.strip() + "|")
            current, filled = "", Fraction(0)
            if len(bars) == n_bars:
                return bars
    raise ValueError(f"only {len(bars)} full bars of music, {n_bars} needed")
