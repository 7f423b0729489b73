"""ABC text: normalisation, a small body lexer, bars and 4-bar phrases.

This is not an ABC parser for rendering (the renderer uses ``abc2midi``); it is
just enough of one to clean the corpus and to measure each phrase for its
control labels: note onsets, durations in quarter notes and pitches. The body
lexer lives in :mod:`st_agent.tokenizer.abc_lexer` and bar handling in
:mod:`st_agent.tokenizer.abc_bars`; their public names are re-exported here.

Normalised tune format (what the tokenizer and the model see)::

    M:6/8
    L:1/8
    Q:1/4=120          (only where the source had one)
    K:Ador
    |:EAA ABc|BAG ...   (one line per 4-bar phrase)
    ...

Titles, composers, notes, lyrics, chord symbols and text annotations in quotes,
``!..!`` decorations, slurs and fingerings are dropped: they carry no notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from st_agent.tokenizer.abc_bars import rebar, split_bars
from st_agent.tokenizer.abc_lexer import BodyStats, body_stats, quarters_fast

__all__ = [
    "BodyStats",
    "NormalisedTune",
    "body_stats",
    "normalise_tune",
    "parse_meter",
    "parse_tempo_bpm",
    "quarters_fast",
    "rebar",
    "split_bars",
    "split_tunes",
]

# Header fields we keep; every other field (T:, C:, N:, O:, Z:, B:, S:, R:, I:, ...)
# is free text or a player instruction and is dropped.
_KEEP_FIELDS = ("M", "L", "Q", "K")
_FIELD_RE = re.compile(r"^([A-Za-z]):\s*(.*?)\s*$")


def split_tunes(text: str) -> list[str]:
    """Split the text of an ABC file into tunes, at lines starting with ``X:``.

    Parameters
    ----------
    text : str
        Contents of an ABC file, possibly holding many tunes.

    Returns
    -------
    tunes : list of str
        One string per tune, each starting with its ``X:`` line. Text before the
        first ``X:`` (a file header) is dropped.
    """
    tunes: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("X:"):
            if current:
                tunes.append("\n".join(current))
            current = [line]
        elif current is not None:
            current.append(line)
    if current:
        tunes.append("\n".join(current))
    return tunes


def parse_meter(value: str) -> Fraction:
    """Bar length in whole notes from an ``M:`` value (``C`` = 4/4, ``C|`` = 2/2).

    Raises
    ------
    ValueError
        For free meter (``none``) or text that is not a meter.
    """
    value = value.strip()
    if value == "C":
        return Fraction(4, 4)
    if value == "C|":
        return Fraction(2, 2)
    m = re.fullmatch(r"\(?(\d+(?:\+\d+)*)\)?/(\d+)", value)
    if not m:
        raise ValueError(f"meter {value!r} is not of the form N/D, C or C|")
    num = sum(int(x) for x in m.group(1).split("+"))
    den = int(m.group(2))
    if num <= 0 or den <= 0:
        raise ValueError(f"meter {value!r} must be positive")
    return Fraction(num, den)


def parse_tempo_bpm(value: str) -> float | None:
    """Quarter-note BPM from a ``Q:`` value (``1/4=120``, ``3/8=100``, ``120``).

    Returns None when the field has no number (e.g. only ``"Allegro"``).
    """
    text = re.sub(r'"[^"]*"', " ", value)
    m = re.search(r"((?:\d+/\d+\s*)+)=\s*(\d+(?:\.\d+)?)", text)
    if m:
        beat = sum(Fraction(b) for b in m.group(1).split())
        return float(m.group(2)) * float(beat / Fraction(1, 4))
    m = re.search(r"(?<![/\d])(\d+(?:\.\d+)?)\s*$", text.strip())
    if m:
        # A bare number is in units of L:, which we do not know here; ABC 2.1
        # deprecates it. Treat it as quarter notes.
        return float(m.group(1))
    return None


@dataclass(frozen=True)
class NormalisedTune:
    """A tune after normalisation, split into 4-bar phrases.

    Attributes
    ----------
    meter, unit, key : str
        ``M:``, ``L:`` and ``K:`` values.
    tempo_bpm : float or None
        Quarter-note BPM from ``Q:``, when the source had one.
    rhythm : str
        The lower-cased ``R:`` field (tune type), "" when absent; used for the
        tempo label only, not kept in the text.
    phrases : tuple of str
        Bodies of the phrases, 4 bars each (the last may be shorter; a pickup
        is part of the first).
    """

    meter: str
    unit: str
    key: str
    tempo_bpm: float | None
    rhythm: str
    phrases: tuple[str, ...]

    def header(self) -> str:
        """Header lines in the normalised order (M, L, Q, K), newline-terminated."""
        lines = [f"M:{self.meter}", f"L:{self.unit}"]
        if self.tempo_bpm is not None:
            lines.append(f"Q:1/4={round(self.tempo_bpm)}")
        lines.append(f"K:{self.key}")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The normalised tune as ABC text (header and one line per phrase)."""
        return self.header() + "".join(p + "\n" for p in self.phrases)


_QUOTED_RE = re.compile(r'"[^"\n]*"')
_DECO_RE = re.compile(r"![^!\n]*!|\+[^+\n\s]*\+")
_SLUR_RE = re.compile(r"\((?!\d)|\)")
_BOW_RE = re.compile(r"[uvHLMOPRST~]")
_SPACES_RE = re.compile(r"[ \t]+")


_INLINE_FIELD_RE = re.compile(r"\[([A-Za-z]):([^\]\n]*)\]")


def _clean_music(text: str) -> str:
    text = _QUOTED_RE.sub("", text)
    text = _DECO_RE.sub("", text)
    text = _SLUR_RE.sub("", text)
    text = _BOW_RE.sub("", text)
    text = text.replace("\\", " ").replace("*", "").replace("`", "")
    return text.replace("$", "").replace("y", "")


def _clean_body_line(line: str) -> str:
    """Drop comments, annotations, decorations and slurs; keep inline K: fields."""
    line = line.split("%", 1)[0]
    parts: list[str] = []
    start = 0
    for m in _INLINE_FIELD_RE.finditer(line):
        parts.append(_clean_music(line[start:m.start()]))
        name = m.group(1)
        if name in ("M", "L"):
            raise ValueError(f"tune changes {name}: inside the body")
        if name == "V":
            raise ValueError("tune has several voices (V:)")
        if name == "K":
            parts.append(f"[K:{m.group(2).strip()}]")
        start = m.end()
    parts.append(_clean_music(line[start:]))
    return _SPACES_RE.sub(" ", "".join(parts)).strip()


def normalise_tune(text: str, bars_per_phrase: int = 4) -> NormalisedTune:
    """Normalise one tune and split it into phrases.

    Parameters
    ----------
    text : str
        One ABC tune, starting with ``X:``.
    bars_per_phrase : int
        Bars per phrase (4 in this project).

    Returns
    -------
    tune : NormalisedTune

    Raises
    ------
    ValueError
        When the tune cannot be used: no ``K:``, free meter, several voices,
        multi-bar rests, a meter or unit change inside the body, or no bars.
    """
    fields, body_lines = _read_tune(text)
    meter, unit, key, tempo = _header_values(fields)
    body = " ".join(b for b in body_lines if b)
    if re.search(r"(?<![A-Za-z\[])Z", body):
        raise ValueError("tune has multi-bar rests (Z)")
    bars = split_bars(body)
    if len(bars) < 2:
        raise ValueError("tune has fewer than two bars")
    phrases = _phrases(bars, float(parse_meter(meter)) * 4, Fraction(unit), bars_per_phrase)
    return NormalisedTune(meter=meter, unit=unit, key=key, tempo_bpm=tempo,
                          rhythm=fields.get("R", "").strip().lower(),
                          phrases=tuple(phrases))


def _read_tune(text: str) -> tuple[dict[str, str], list[str]]:
    """Header fields (first value of each) and cleaned body lines of a tune.

    An inline ``K:`` line in the body becomes ``[K:...]``; other field lines in
    the body (``P: W: N: T:``...) carry no notes and are dropped.
    """
    fields: dict[str, str] = {}
    body_lines: list[str] = []
    in_body = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("%"):
            continue
        fm = _FIELD_RE.match(line)
        if fm and not (in_body and not _is_field_line(line)):
            name, value = fm.group(1), fm.group(2).split("%", 1)[0].strip()
            if name == "V":
                raise ValueError("tune has several voices (V:)")
            if not in_body:
                fields.setdefault(name, value)
                in_body = name == "K"
            elif name == "K":
                body_lines.append(f"[K:{value}]")
            elif name in ("M", "L"):
                raise ValueError(f"tune changes {name}: inside the body")
            continue
        if in_body:
            body_lines.append(_clean_body_line(line))
    return fields, body_lines


def _header_values(fields: dict[str, str]) -> tuple[str, str, str, float | None]:
    """``M:``, ``L:``, ``K:`` and the ``Q:`` BPM, normalised and checked."""
    if "K" not in fields:
        raise ValueError("tune has no K: field")
    meter = fields.get("M", "4/4").strip()
    if meter.lower() in ("none", ""):
        raise ValueError("tune is in free meter (M:none)")
    meter = {"C": "4/4", "C|": "2/2"}.get(meter, meter.replace(" ", ""))
    parse_meter(meter)
    unit = fields.get("L", "").replace(" ", "")
    if not unit:
        # ABC 2.1: default L: is 1/16 for meters below 0.75, else 1/8.
        unit = "1/16" if float(parse_meter(meter)) < 0.75 else "1/8"
    if not re.fullmatch(r"1/\d+", unit):
        raise ValueError(f"unit note length L:{unit} is not of the form 1/N")
    key = fields["K"].split("%", 1)[0].strip()
    key = re.sub(r"\s+", " ", key)
    if not key or key.lower() == "none":
        raise ValueError("tune has no key (K:none)")
    tempo = parse_tempo_bpm(fields["Q"]) if "Q" in fields else None
    return meter, unit, key, tempo


def _phrases(bars: list[str], bar_q: float, unit: Fraction, bars_per_phrase: int) -> list[str]:
    """Group bars into phrases of ``bars_per_phrase``; a pickup goes with the first."""
    first = body_stats(bars[0], unit)
    pickup = 0 < first.quarters < 0.99 * bar_q
    phrases: list[str] = []
    i = 0
    if pickup:
        head = bars[0] + "".join(bars[1:1 + bars_per_phrase])
        phrases.append(head.strip())
        i = 1 + bars_per_phrase
    while i < len(bars):
        phrases.append("".join(bars[i:i + bars_per_phrase]).strip())
        i += bars_per_phrase
    return [p for p in phrases if p]


def _is_field_line(line: str) -> bool:
    """True when a body line is a field line (``K:G``), not music like ``A:|``."""
    return bool(re.match(r"^[A-Za-z]:(?![|:])", line)) and not re.match(r"^[A-Ga-g]:\|", line)
