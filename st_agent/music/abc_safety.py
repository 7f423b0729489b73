"""What an ABC tune may hold before ``abc2midi`` sees it, and where ``abc2midi`` works.

:mod:`st_agent.music.abc` hands every tune to the ``abc2midi`` program. A tune can
come from a user (a file, a ``--context`` option, a test), so it is screened here
first, in linear time and bounded memory, without running anything:

============================  ===========================================================
limit                         why
============================  ===========================================================
at most :data:`MAX_TUNE_CHARS`  a 4-bar phrase is ~100-200 characters and a whole
(65,536) characters per tune  two-voice jam tune ~2,000; 64 kB is 300x the largest
                              tune the project writes, and ``abc2midi`` checks it in
                              ~40 ms and 35 MB. Bigger inputs made it abort (``file
                              runaway``) or made the old message attribution quadratic.
text encodable as UTF-8       a lone surrogate (``"\\ud800"``) cannot be written to the
                              file ``abc2midi`` reads
no control characters         NUL, ESC, ... are no ABC; only tab and newlines
ASCII in music lines          ABC 2.1 music code is ASCII; text goes in quotes or in
                              fields (``T:``, ``w:``), which may hold any UTF-8
no ``%%abc-include``, no      the two ``abc2midi`` directives that open a file named in
``ptstress``                  the tune (``%%abc-include FILE``; ``%%MIDI ptstress FILE``,
                              also as ``I:MIDI=ptstress`` or ``[I:MIDI=ptstress]``);
                              found by tracing ``abc2midi`` 4.84's ``open`` calls over
                              every directive in its guide and binary. A line naming
                              either is **refused** (an error naming the line), not
                              stripped: silently dropping part of a user's tune would
                              hide what it asked for.
``M:`` meters                 ``C``, ``C|``, ``none`` or ``N/D`` (``N`` may be a sum such
                              as ``(2+3)``) with 1 <= N <= :data:`MAX_METER_NUMERATOR`
                              and D in :data:`METER_DENOMINATORS`
``L:`` units                  ``1/D`` with D in :data:`UNIT_DENOMINATORS`
a ``K:`` line                 without one ``abc2midi`` only says "No valid K: field"
``Q:`` tempi                  :data:`TEMPO_RANGE_QPM` quarter notes per minute (MIDI
                              holds at most 16.7 s per quarter, i.e. >= 3.6 qpm; no
                              music is faster than 1000 qpm)
at most :data:`MAX_MIDI_EVENTS` for :func:`~st_agent.music.abc.abc_to_midi` only: reading
(10,000) MIDI events and      a MIDI back costs pretty_midi ~0.1-0.3 ms an event (a 64 kB
:data:`MAX_MIDI_QUARTERS`     tune can write 120,000), and an array of 8 bytes per tick
(10,000) quarter notes        of the whole length (``C9999999`` would need 19 GB).
converted                     A phrase has < 200 events and 16 quarters; 10,000 events
                              are ~5,000 notes, 10,000 quarters 83 min at 120 qpm.
============================  ===========================================================

The same bounds hold for inline fields (``[M:3/4]``, ``[Q:1/4=90]``). The MIDI file
``abc2midi`` writes is also walked event by event (:func:`midi_problem`): truncated
tracks (``file runaway``), data bytes over 127 (a note above MIDI 127) and tempo events
outside the range are errors, so a tune ``abc2midi`` could not fully read is never ok.

``abc2midi`` runs in one folder per process, ``st_abc_<pid>`` in the system temporary
folder (:func:`work_dir`). The first call of a process removes the folders of
processes that are gone (a ``kill -9`` leaves its folder behind).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

from st_agent.errors import DataError

__all__ = [
    "MAX_MESSAGES",
    "MAX_METER_NUMERATOR",
    "MAX_MIDI_EVENTS",
    "MAX_MIDI_QUARTERS",
    "MAX_TUNE_CHARS",
    "METER_DENOMINATORS",
    "TEMPO_RANGE_QPM",
    "UNIT_DENOMINATORS",
    "AbcError",
    "clean_stale_work_dirs",
    "excerpt",
    "midi_problem",
    "midi_scan",
    "parse_unit",
    "precheck",
    "work_dir",
]

logger = logging.getLogger(__name__)

#: Longest tune accepted, in characters (see the module docstring for why).
MAX_TUNE_CHARS = 65_536
#: Errors (and, separately, warnings) kept per tune; the rest are counted.
MAX_MESSAGES = 20
#: Bounds of an ``M:`` meter: numerator 1..32, denominator a power of two up to 32.
MAX_METER_NUMERATOR = 32
METER_DENOMINATORS = (1, 2, 4, 8, 16, 32)
#: Allowed ``L:`` unit denominators (``L:1/D``).
UNIT_DENOMINATORS = (1, 2, 4, 8, 16, 32, 64)
#: Most MIDI events and quarter notes :func:`~st_agent.music.abc.abc_to_midi` reads
#: back with pretty_midi (see the module docstring). Checking has no such limit.
MAX_MIDI_EVENTS = 10_000
MAX_MIDI_QUARTERS = 10_000
#: Allowed tempi, quarter notes per minute (inclusive).
TEMPO_RANGE_QPM = (4.0, 1000.0)

_PREFIX = "st_abc_"
_STALE_UNKNOWN_SEC = 3600.0  # a folder whose owner cannot be told is stale after 1 h
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7e]")
_FILE_DIRECTIVE_RE = re.compile(r"abc-include|ptstress", re.IGNORECASE)
_FIELD_RE = re.compile(r"^([A-Za-z+]):(?![|:])(.*)$")
_INLINE_RE = re.compile(r"\[([MLQ]):([^\[\]]*)\]")
_QUOTED_RE = re.compile(r'"[^"]*"')
_INT_RE = re.compile(r"\d+")
_METER_RE = re.compile(r"^\(?\s*(\d+(?:\s*\+\s*\d+)*)\s*\)?\s*/\s*(\d+)$")
_FRACTION_RE = re.compile(r"(\d+)\s*/\s*(\d+)")
_MAX_DIGITS = 7  # no number in M:, L:, Q: needs more


class AbcError(DataError):
    """An ABC tune that is refused or that ``abc2midi`` rejects, a bad meter, unit or
    tempo value, or a missing ``abc2midi``.

    A :class:`~st_agent.errors.DataError` (exit status 3 on the command line) and so
    still a ``ValueError``. The message names each fault with its line and column in
    the tune (or the field) and what is allowed.
    """


def excerpt(line: str, col: int = 0, width: int = 60) -> str:
    """At most ``width`` characters of ``line`` around column ``col``, quoted."""
    text = line.strip()
    if len(text) <= width:
        return repr(text)
    start = max(0, min(col - width // 2, len(text) - width))
    return repr(("..." if start else "") + text[start:start + width] + "...")


def capped(messages: list[str], kind: str = "error") -> list[str]:
    """The first :data:`MAX_MESSAGES` messages and a count of the rest."""
    if len(messages) <= MAX_MESSAGES:
        return messages
    more = len(messages) - MAX_MESSAGES
    return [*messages[:MAX_MESSAGES], f"line 0 col 0: ... and {more} more {kind}(s)"]


# ---------------------------------------------------------------------- values
def parse_unit(unit: str, field: str = "unit") -> Fraction:
    """Read an ABC ``L:`` unit note length.

    Parameters
    ----------
    unit : str
        ``"1/D"`` with D in :data:`UNIT_DENOMINATORS`, e.g. ``"1/8"``.
    field : str
        The name used in the error message (``"context.unit"``, ``"L:"``).

    Returns
    -------
    length : Fraction
        In whole notes (``Fraction(1, 8)``).

    Raises
    ------
    AbcError
        For anything else, naming ``field``, the value and the allowed values.
    """
    if not isinstance(unit, str):
        raise AbcError(f"{field} must be a str such as '1/8', got {type(unit).__name__}")
    problem = _unit_problem(unit)
    if problem:
        raise AbcError(f"{field} {unit!r} {problem}")
    n, d = _FRACTION_RE.fullmatch(unit.strip()).groups()  # type: ignore[union-attr]
    return Fraction(int(n), int(d))


def _unit_problem(value: str) -> str:
    m = _FRACTION_RE.fullmatch(value.strip())
    allowed = "use 1/D with D in " + ", ".join(map(str, UNIT_DENOMINATORS)) + " (e.g. 1/8)"
    if m is None or len(m.group(1)) > _MAX_DIGITS or len(m.group(2)) > _MAX_DIGITS:
        return f"is not a unit note length; {allowed}"
    if int(m.group(2)) not in UNIT_DENOMINATORS:
        return f"has an invalid denominator {int(m.group(2))}; {allowed}"
    if int(m.group(1)) != 1:
        return f"must have numerator 1; {allowed}"
    return ""


def meter_problem(value: str) -> str:
    """Why an ``M:`` value is out of bounds, or ``""`` when it is allowed (or is a form
    this module does not judge, left to ``abc2midi``)."""
    text = value.strip()
    if text in ("C", "C|", "none", ""):
        return ""
    allowed = (f"use C, C|, none or N/D with 1 <= N <= {MAX_METER_NUMERATOR} and D in "
               + ", ".join(map(str, METER_DENOMINATORS)))
    if any(len(n) > _MAX_DIGITS for n in _INT_RE.findall(text)):
        return f"holds a number too long to be a meter; {allowed}"
    m = _METER_RE.match(text)
    if m is None:
        return ""
    num = sum(int(p) for p in m.group(1).split("+"))
    if not 1 <= num <= MAX_METER_NUMERATOR or int(m.group(2)) not in METER_DENOMINATORS:
        return f"is out of range; {allowed}"
    return ""


def tempo_problem(value: str) -> str:
    """Why a ``Q:`` value is out of :data:`TEMPO_RANGE_QPM`, or ``""``."""
    text = _QUOTED_RE.sub(" ", value).strip()
    lo, hi = TEMPO_RANGE_QPM
    allowed = f"use e.g. Q:1/4=120, between {lo:g} and {hi:g} quarter notes per minute"
    if any(len(n) > _MAX_DIGITS for n in _INT_RE.findall(text)):
        return f"holds a number too long to be a tempo; {allowed}"
    if "=" in text:
        beat, _, rate = text.rpartition("=")
        fractions = _FRACTION_RE.findall(beat)
        if not rate.strip().isdigit() or not fractions:
            return ""  # an old form (C=120) or text: abc2midi judges it
        if any(int(d) == 0 for _, d in fractions):
            return f"has a zero denominator; {allowed}"
        qpm = int(rate) * 4 * sum(Fraction(int(n), int(d)) for n, d in fractions)
        return "" if lo <= qpm <= hi else f"is {float(qpm):g} quarter notes per minute; {allowed}"
    if text.isdigit() and not lo <= int(text) <= hi:
        return f"is out of range; {allowed}"
    return ""


# ---------------------------------------------------------------------- tunes
def precheck(abc: str) -> list[str]:
    """Screen one tune before ``abc2midi`` sees it (see the module docstring).

    Parameters
    ----------
    abc : str
        The tune as given.

    Returns
    -------
    errors : list of str
        ``"line L col C: ..."`` (lines of ``abc`` from 1), at most
        :data:`MAX_MESSAGES` + 1; empty when the tune may go to ``abc2midi``.
    """
    if len(abc) > MAX_TUNE_CHARS:
        return [f"line 0 col 0: the tune is {len(abc):,} characters, over the limit of "
                f"{MAX_TUNE_CHARS:,} (a phrase is a few hundred); split it into tunes"]
    try:
        abc.encode("utf-8")
    except UnicodeEncodeError as e:
        line, col = _where(abc, e.start)
        return [f"line {line} col {col}: character {abc[e.start]!r} is a lone surrogate, "
                "not text; remove it"]
    m = _CONTROL_RE.search(abc)
    if m is not None:
        line, col = _where(abc, m.start())
        return [f"line {line} col {col}: control character {m.group()!r} is not ABC; "
                "only tab and newlines are allowed"]
    errors: list[str] = []
    lines = abc.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for i, line in enumerate(lines):
        errors.extend(_line_problems(line, i + 1))
        if len(errors) > MAX_MESSAGES:
            break
    return capped(errors or _header_problems(lines))


def _header_problems(lines: list[str]) -> list[str]:
    """A tune without any ``K:`` field line (what ``abc2midi`` reports as "No valid K:
    field found at start of tune"; it skips other stray header lines itself)."""
    if any(line.lstrip().startswith("K:") for line in lines):
        return []
    return [f"line {len(lines)} col 0: no K: field; a tune's header must end with K: "
            "(e.g. K:C) before the music"]


def _where(text: str, pos: int) -> tuple[int, int]:
    """1-based line and 0-based column of character ``pos`` (any newline style)."""
    head = text[:pos].replace("\r\n", "\n").replace("\r", "\n")
    return head.count("\n") + 1, len(head) - (head.rfind("\n") + 1)


def _line_problems(line: str, number: int) -> list[str]:
    found: list[str] = []
    m = _FILE_DIRECTIVE_RE.search(line)
    if m is not None:
        found.append(f"line {number} col {m.start()}: refused: {m.group()!r} makes abc2midi "
                     f"open a file named in the tune; remove the line (in {excerpt(line)})")
        return found
    field = _FIELD_RE.match(line)
    checks = []
    if field is not None:
        checks.append((field.group(1), field.group(2), 0))
    elif not line.startswith("%"):
        music = _QUOTED_RE.sub(" ", line.split("%", 1)[0])
        hit = _NON_ASCII_RE.search(music)
        if hit is not None:
            bad = hit.start()
            found.append(f"line {number} col {bad}: non-ASCII character {music[bad]!r} in "
                         "music; ABC music code is ASCII, put text in quotes or a T:/w: "
                         f"field (in {excerpt(line, bad)})")
        checks.extend((f.group(1), f.group(2), f.start()) for f in _INLINE_RE.finditer(line))
    for name, value, col in checks:
        value = value.split("%", 1)[0]
        problem = {"M": meter_problem, "L": _unit_problem, "Q": tempo_problem}.get(
            name, lambda _v: "")(value)
        if problem:
            found.append(f"line {number} col {col}: {name}: field {value.strip()!r} {problem}")
    return found


# ---------------------------------------------------------------------- MIDI files
def midi_problem(data: bytes) -> str:
    """What is wrong with a MIDI file ``abc2midi`` wrote, or ``""``.

    Walks every event: a short or cut track (``abc2midi``'s ``file runaway`` abort
    leaves one), a data byte over 127 (a note above MIDI 127) or a tempo event outside
    :data:`TEMPO_RANGE_QPM` is a problem. Linear in the file size.
    """
    return midi_scan(data)[0]


def midi_scan(data: bytes) -> tuple[str, int, float]:
    """:func:`midi_problem`, the number of events and the length of the longest track
    in quarter notes."""
    stats = [0, 0]  # events, ticks of the longest track
    problem = _file_problem(data, stats)
    division = int.from_bytes(data[12:14], "big") if len(data) >= 14 else 0
    if not problem and not 0 < division < 0x8000:
        problem = f"division {division} is not ticks per quarter note"
    return problem, stats[0], stats[1] / max(division, 1)


def _file_problem(data: bytes, stats: list[int]) -> str:
    if len(data) < 14 or data[:4] != b"MThd":
        return "no MIDI header"
    pos = 8 + int.from_bytes(data[4:8], "big")
    declared = int.from_bytes(data[10:12], "big")
    tracks = 0
    while pos < len(data):
        if data[pos:pos + 4] != b"MTrk" or pos + 8 > len(data):
            return f"bytes after track {tracks} are not a track (the file is cut short)"
        start = pos + 8
        end = start + int.from_bytes(data[pos + 4:pos + 8], "big")
        if end > len(data) or data[end - 3:end] != b"\xff\x2f\x00":
            return f"track {tracks} is cut short (no end-of-track event)"
        problem = _track_problem(data, start, end, stats)
        if problem:
            return f"track {tracks}: {problem}"
        tracks += 1
        pos = end
    return "" if tracks == declared else f"{tracks} of {declared} tracks were written"


def _vlq(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= end:
            raise IndexError(pos)
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos
    raise IndexError(pos)


def _track_problem(data: bytes, pos: int, end: int, stats: list[int]) -> str:
    lo, hi = TEMPO_RANGE_QPM
    running = 0
    count = ticks = 0
    try:
        while pos < end:
            start = pos
            delta = data[pos] & 0x7F
            while data[pos] & 0x80:  # the delta time, a variable-length number
                pos += 1
                if pos - start > 3:
                    return f"a delta time longer than 4 bytes at byte {start}"
                delta = (delta << 7) | (data[pos] & 0x7F)
            ticks += delta
            count += 1
            status = data[pos + 1]
            pos += 2
            if status < 0x80:  # running status: this byte is data
                if running == 0:
                    return f"data byte {status:#04x} without a status at byte {pos - 1}"
                status, pos = running, pos - 1
            elif status < 0xF0:
                running = status
            if status < 0xF0:  # a channel event: one or two data bytes < 128
                n = 1 if status & 0xE0 == 0xC0 else 2
                if (data[pos] | data[pos + n - 1]) & 0x80:
                    return (f"data byte over 127 at byte {pos} (a note above MIDI "
                            "pitch 127?)")
                pos += n
            elif status == 0xFF:
                kind = data[pos]
                length, pos = _vlq(data, pos + 1, end)
                if kind == 0x51 and length == 3:
                    usec = int.from_bytes(data[pos:pos + 3], "big")
                    if usec == 0 or not lo <= 60e6 / usec <= hi:
                        return (f"tempo of {60e6 / usec if usec else float('inf'):.4g} "
                                f"quarter notes per minute is outside {lo:g}-{hi:g}")
                pos += length
            elif status in (0xF0, 0xF7):
                length, pos = _vlq(data, pos, end)
                pos += length
            else:
                return f"status byte {status:#04x} is not allowed in a file at byte {pos - 1}"
    except IndexError:
        return "an event runs past the end of the track"
    stats[0] += count
    stats[1] = max(stats[1], ticks)
    return "" if pos == end else "an event runs past the end of the track"


# ---------------------------------------------------------------------- work folder
_lock = threading.Lock()
_dir: dict[int, Path] = {}  # pid -> this process's folder (a forked child makes its own)


def work_dir() -> Path:
    """This process's folder for ``abc2midi`` files, ``<tmp>/st_abc_<pid>``.

    Created (mode 0700) on first use, after removing stale folders
    (:func:`clean_stale_work_dirs`); removed at exit.
    """
    pid = os.getpid()
    with _lock:
        path = _dir.get(pid)
        if path is not None and path.is_dir():
            return path
        clean_stale_work_dirs()
        path = Path(tempfile.gettempdir()) / f"{_PREFIX}{pid}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{pid}_"))
        _dir[pid] = path
        atexit.register(_remove_own, pid)
        return path


def _remove_own(pid: int) -> None:
    if os.getpid() == pid and pid in _dir:
        shutil.rmtree(_dir.pop(pid), ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def clean_stale_work_dirs(tmp: str | Path | None = None) -> list[Path]:
    """Remove ``st_abc_*`` folders left by processes that are gone.

    A folder ``st_abc_<pid>`` (or ``st_abc_<pid>_<x>``) is stale when no process has
    that pid; one of the older random-named form (``st_abc_k2j9x``) when untouched
    for an hour. Only folders of the current user are touched.

    Parameters
    ----------
    tmp : str or Path, optional
        The folder to clean; the system temporary folder by default.

    Returns
    -------
    removed : list of Path
    """
    root = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if not entry.name.startswith(_PREFIX) or not _is_stale(entry):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    if removed:
        logger.info("removed %d stale abc2midi folder(s) in %s", len(removed), root)
    return removed


def _is_stale(entry: Path) -> bool:
    try:
        st = entry.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    tag = entry.name[len(_PREFIX):].split("_", 1)[0]
    if tag.isdigit():
        pid = int(tag)
        return pid != os.getpid() and not _pid_alive(pid)
    return time.time() - st.st_mtime > _STALE_UNKNOWN_SEC
