"""ABC text: normalisation, a small body lexer, bars and 4-bar phrases.

This is not an ABC parser for rendering (the renderer uses ``abc2midi``); it is
just enough of one to clean the corpus and to measure each phrase for its
control labels: note onsets, durations in quarter notes and pitches.

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

# Body lexer. Order matters: inline fields and bar lines before chords.
_TOKEN_RE = re.compile(
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


def _parse_len(text: str) -> Fraction:
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
    inner = _TOKEN_RE.search(m.group("chord")[1:])
    first = inner.group("len") if inner is not None and inner.lastgroup == "note" else None
    return m.group("chordlen"), first


def _event_length(m: re.Match) -> Fraction:
    """Length of a note, rest or chord token in units of ``L:`` (before tuplets)."""
    outer, inner = _length_text(m)
    length = _parse_len(outer)
    return length * _parse_len(inner) if inner is not None else length


def _tuplet(text: str) -> tuple[int, int, int]:
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
    """

    n_onsets: int
    quarters: float
    mean_pitch: float
    pc_hist: tuple[float, ...]
    last_pc: int = -1

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

    for m in _TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind in ("note", "chord", "rest"):
            length = _event_length(m)
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
            p, q, tuplet_left = _tuplet(m.group("tuplet"))
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
                     pc_hist=tuple(hist), last_pc=last_pc)


_LEN_CACHE: dict[str, float] = {}


def _len_float(text: str) -> float:
    value = _LEN_CACHE.get(text)
    if value is None:
        value = _LEN_CACHE[text] = float(_parse_len(text))
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
    for m in _TOKEN_RE.finditer(body):
        kind = m.lastgroup
        if kind in ("note", "chord", "rest"):
            outer, inner = _length_text(m)
            length = _len_float(outer) * (_len_float(inner) if inner is not None else 1.0)
        elif kind == "tuplet":
            p, q, tuplet_left = _tuplet(m.group("tuplet"))
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


def split_bars(body: str) -> list[str]:
    """Split a one-line ABC body into bars, each ending with its bar line.

    Text after the last bar line (an unterminated last bar) is returned as a
    final element. Empty bars (two bar lines in a row) are merged into the
    previous one.
    """
    bars: list[str] = []
    start = 0
    for m in _TOKEN_RE.finditer(body):
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
    return any(m.lastgroup in ("note", "chord", "rest") for m in _TOKEN_RE.finditer(text))


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
            if not in_body:
                if name == "V":
                    raise ValueError("tune has several voices (V:)")
                fields.setdefault(name, value)
                if name == "K":
                    in_body = True
                continue
            if name == "K":
                body_lines.append(f"[K:{value}]")
            elif name in ("M", "L"):
                raise ValueError(f"tune changes {name}: inside the body")
            elif name == "V":
                raise ValueError("tune has several voices (V:)")
            continue  # P:, W:, w:, N:, T: ... in the body carry no notes
        if in_body:
            body_lines.append(_clean_body_line(line))
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
    body = " ".join(b for b in body_lines if b)
    if re.search(r"(?<![A-Za-z\[])Z", body):
        raise ValueError("tune has multi-bar rests (Z)")
    bars = split_bars(body)
    if len(bars) < 2:
        raise ValueError("tune has fewer than two bars")
    bar_q = float(parse_meter(meter)) * 4
    unit_f = Fraction(unit)
    first = body_stats(bars[0], unit_f)
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
    phrases = [p for p in phrases if p]
    return NormalisedTune(meter=meter, unit=unit, key=key, tempo_bpm=tempo,
                          rhythm=fields.get("R", "").strip().lower(),
                          phrases=tuple(phrases))


def _is_field_line(line: str) -> bool:
    """True when a body line is a field line (``K:G``), not music like ``A:|``."""
    return bool(re.match(r"^[A-Za-z]:(?![|:])", line)) and not re.match(r"^[A-Ga-g]:\|", line)


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
    for m in _TOKEN_RE.finditer(body):
        kind = m.lastgroup
        text = m.group(0)
        if kind == "bar":
            prefix = prefix.rstrip() + " " if prefix.strip() else ""
            continue
        if kind in ("note", "chord", "rest"):
            dur = _event_length(m) * unit
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
            p, q, tuplet_left = _tuplet(text)
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
