"""Check ABC tunes and convert them to MIDI with the ``abc2midi`` program.

``abc2midi`` (Debian package ``abcmidi``) is the independent ABC parser of the
project: a phrase is valid when ``abc2midi`` converts it without printing an
``Error`` line. It is a small C program: one call costs ~3 ms with the process
start. :func:`check_many` gives each tune its own file and call, so a tune's result
never depends on the others of the batch (``abc2midi`` carries state from one tune
of a file into the next, and after a 500 kB tune rejected the next valid one).

Before ``abc2midi`` sees a tune, :mod:`st_agent.music.abc_safety` screens it in
linear time: at most :data:`MAX_TUNE_CHARS` (65,536) characters, valid text, no
control characters, ASCII music, no directive that opens a file (``%%abc-include``,
``%%MIDI ptstress``: refused with an error naming the line) and ``M:``/``L:``/``Q:``
values within documented bounds. A refused tune costs no ``abc2midi`` call. The
checking functions report every fault in an :class:`AbcReport` (``ok=False``); the
converting ones raise :class:`AbcError`, a :class:`~st_agent.errors.DataError`.

What ``abc2midi`` 4.84 prints, and how it is read here
------------------------------------------------------
Every message is one line on standard output::

    Error in line-char 3-5 : Attempt to nest chords
    Warning in line-char 7-87 : Track 1 Bar 4 has 4 time units while the time signature has 3

The line number counts lines of the input file, mapped back to the caller's lines
of the tune; at most 20 errors and 20 warnings are kept per tune, each quoting at
most 60 characters of its line. Its exit status is 0 even after errors.
Some faults it does not report at all, so this module adds checks of its own:
a blank line inside a tune (``abc2midi`` silently drops everything after it), a
tune for which no MIDI file was written, a crash, and a MIDI file that is cut
(``file runaway``), holds a data byte over 127 or a tempo out of range.
Guitar-chord symbols (``"Am"``) are ignored (``-NGUI``): the arrangement is made
by :mod:`st_agent.music.render`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
import resource
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pretty_midi

from st_agent.music.abc_safety import (
    MAX_MESSAGES,
    MAX_MIDI_EVENTS,
    MAX_MIDI_QUARTERS,
    MAX_TUNE_CHARS,
    AbcError,
    capped,
    excerpt,
    midi_scan,
    precheck,
    work_dir,
)

__all__ = [
    "ABC2MIDI_INSTALL_HINT",
    "MAX_TUNE_CHARS",
    "AbcError",
    "AbcReport",
    "abc_to_midi",
    "abc_to_midi_many",
    "check_abc",
    "check_many",
    "find_abc2midi",
]

logger = logging.getLogger(__name__)

#: How to get the converter when it is missing.
ABC2MIDI_INSTALL_HINT = "install Debian package abcmidi: sudo apt-get install abcmidi"

# abc2midi prints "Error in line-char 3-5 : text" and "Warning in line-char ...".
_MESSAGE_RE = re.compile(r"^(Error|Warning) in line-char (\d+)-(\d+) : ?(.*)$")
# Anything else that starts with "error" (e.g. "error writing MIDI file").
_OTHER_ERROR_RE = re.compile(r"^\s*error\b", re.IGNORECASE)
_X_RE = re.compile(r"^X:")
_FIELD_LINE_RE = re.compile(r"^[A-Za-z]:(?![|:])|^%")
# Text that holds no notes: comments, quoted chords/annotations, decorations,
# grace notes, inline fields.
# Each pattern stops at its own opening character, so a line of 60,000 "{" or "["
# costs linear, not quadratic, time.
_NOT_NOTES_RE = re.compile(r'%.*$|"[^"]*"|![^!]*!|\+[^+\s]*\+|\{[^{}]*\}|\[[A-Za-z]:[^\[\]]*\]')
_TUPLET_RE = re.compile(r"\((\d)(?::(\d*))?(?::(\d*))?")
_NOTE_RE = re.compile(r"\[[^\[\]]*\]|[_=^]*[A-Ga-gzx][,']*")
# "eputc: aborting because of file runaway (infinite loop)": a cut MIDI file follows
_ABORT_RE = re.compile(r"runaway|abort|segmentation|out of memory", re.IGNORECASE)
_TIMEOUT_SEC = 10.0  # abc2midi checks a 64 kB tune in ~40 ms
_CHILD_MEMORY_BYTES = 512 * 2**20  # address-space cap of one abc2midi (uses < 40 MB)
_calls = itertools.count()
_PARALLEL = max(1, min(8, os.cpu_count() or 1))  # abc2midi calls at once in a batch


@dataclass(frozen=True)
class AbcReport:
    """What ``abc2midi`` said about one tune.

    Parameters
    ----------
    ok : bool
        True when there is no error (warnings are allowed).
    errors : tuple of str
        One entry per error, ``"line L col C: message"`` with L counted in the
        tune text as given (line 0 is the ``X:`` line added when the tune has
        none).
    warnings : tuple of str
        Same format, for warnings.
    """

    ok: bool
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.ok != (len(self.errors) == 0):
            raise ValueError(
                f"ok must be True exactly when errors is empty, got ok={self.ok!r} "
                f"with {len(self.errors)} error(s)"
            )

    def __repr__(self) -> str:
        return (f"AbcReport(ok={self.ok}, errors={list(self.errors)}, "
                f"warnings={list(self.warnings)})")


def find_abc2midi() -> str:
    """Return the path of the ``abc2midi`` program.

    Returns
    -------
    path : str
        Absolute path found on ``PATH``.

    Raises
    ------
    AbcError
        When it is not installed, with the command that installs it.
    """
    path = shutil.which("abc2midi")
    if path is None:
        raise AbcError(f"the abc2midi program was not found on PATH; {ABC2MIDI_INSTALL_HINT}")
    return path


@dataclass
class _Placed:
    """Where one tune sits in the batch file."""

    first_line: int  # 1-based line of its X: line in the file
    last_line: int  # last line that belongs to it (its trailing blank line included)
    line_shift: int  # tune line = file line - first_line + line_shift
    lines: list[str]  # the tune's own lines, index = tune line - 1
    errors: list[str]
    warnings: list[str]


def _split_tune(abc: str, index: int) -> tuple[list[str], int, list[str]]:
    """Return the body lines (without X:), the line shift and pre-check errors.

    The line shift maps a line of the file (counted from the inserted ``X:`` line
    as 1) back to the caller's numbering.
    """
    if not isinstance(abc, str):
        raise TypeError(f"tune {index} must be a str of ABC text, got {type(abc).__name__}")
    lines = abc.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lead = 0
    while lead < len(lines) and not lines[lead].strip():
        lead += 1
    while lines and not lines[-1].strip():
        lines.pop()
    body = lines[lead:]
    errors: list[str] = []
    if not body:
        errors.append("line 1 col 0: empty tune; give at least a K: line and one bar")
        return [], lead, errors
    has_x = bool(_X_RE.match(body[0]))
    if has_x:
        body = body[1:]
        shift = lead  # file line 1 (X:) is the caller's line lead + 1
    else:
        shift = lead - 1  # file line 1 is our inserted X:, caller line "lead + 0"
    for i, line in enumerate(body):
        caller_line = i + 2 + shift
        if not line.strip():
            errors.append(
                f"line {caller_line} col 0: blank line inside the tune; abc2midi ends the "
                "tune there and silently drops the rest, remove the blank line"
            )
            break
        if _X_RE.match(line):
            errors.append(
                f"line {caller_line} col 0: a second X: field starts another tune; "
                "pass one tune per string"
            )
            break
    if not errors:
        errors.extend(_check_tuplets(body, shift))
    return body, shift, errors


def _check_tuplets(body: list[str], shift: int) -> list[str]:
    """Tuplets near the end that lack notes, which ``abc2midi`` does not report.

    ``(3d|]`` at the end of a tune passes ``abc2midi`` silently, and leaves
    state that breaks the next tune of a batch.
    """
    cleaned = [
        (i, "" if _FIELD_LINE_RE.match(line) else _NOT_NOTES_RE.sub(" ", line))
        for i, line in enumerate(body)
    ]
    remaining = 0  # notes from the end of the tune back to the current point
    errors: list[str] = []
    for i, line in reversed(cleaned):
        pieces = _TUPLET_RE.split(line)  # text, p, q, r, text, p, q, r, ..., text
        remaining += len(_NOTE_RE.findall(pieces[-1]))
        for k in range(len(pieces) - 5, -1, -4):
            p, r = int(pieces[k + 1]), pieces[k + 3]
            need = int(r) if r else p
            if remaining < need:
                errors.append(
                    f"line {i + 2 + shift} col 0: tuplet ({p} needs {need} notes but only "
                    f"{remaining} follow before the end of the tune; complete or remove it "
                    f"(in {excerpt(body[i])})"
                )
                if len(errors) > MAX_MESSAGES:
                    return capped(errors[::-1])
            remaining += len(_NOTE_RE.findall(pieces[k]))
    return errors[::-1]


def _run_batch(
    abcs: Sequence[str], want_midi: bool
) -> tuple[list[AbcReport], list[pretty_midi.PrettyMIDI | None]]:
    """Check (and optionally convert) tunes, one ``abc2midi`` call per tune.

    ``abc2midi`` carries parser state from one tune of a file into the next (an
    unclosed chord fails the following good tune; after a 500 kB tune the next valid
    one is always rejected), so every tune gets its own file and call: the result
    of a tune never depends on its neighbours. Up to :data:`_PARALLEL` calls run at
    once. A tune that the screening of :mod:`st_agent.music.abc_safety` or
    :func:`_split_tune` rejects costs no call.
    """
    for i, abc in enumerate(abcs):
        if not isinstance(abc, str):
            raise TypeError(f"tune {i} must be a str of ABC text, got {type(abc).__name__}")
    results: list[tuple[AbcReport, pretty_midi.PrettyMIDI | None] | None] = []
    todo: list[tuple[int, list[str], int]] = []  # (index, body, shift) for abc2midi
    for i, abc in enumerate(abcs):
        errors = precheck(abc)
        if not errors:
            body, shift, errors = _split_tune(abc, i)
        results.append((AbcReport(False, tuple(capped(errors)), ()), None) if errors else None)
        if not errors:
            todo.append((i, body, shift))
    if len(todo) == 1:
        i, body, shift = todo[0]
        results[i] = _run_one(find_abc2midi(), abcs[i], body, shift, want_midi)
    elif todo:
        exe = find_abc2midi()
        running: list[tuple[int, _Call]] = []
        try:
            for k, (i, body, shift) in enumerate(todo):
                running.append((i, _start(exe, abcs[i], body, shift)))
                if len(running) >= _PARALLEL or k == len(todo) - 1:
                    while running:
                        j, call = running.pop(0)
                        results[j] = _finish(call, want_midi)
        finally:
            for _, call in running:
                call.abandon()
    assert all(r is not None for r in results)
    return [r[0] for r in results], [r[1] for r in results]  # type: ignore[index]


@dataclass
class _Call:
    """One running ``abc2midi`` and its files."""

    abc: str
    placed: _Placed
    src: Path
    out: Path
    proc: subprocess.Popen | None = None

    def abandon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.src.unlink(missing_ok=True)
        self.out.unlink(missing_ok=True)


def _run_one(exe: str, abc: str, body: list[str], shift: int, want_midi: bool
             ) -> tuple[AbcReport, pretty_midi.PrettyMIDI | None]:
    """One ``abc2midi`` call on one tune (``body`` without its ``X:`` line)."""
    return _finish(_start(exe, abc, body, shift), want_midi)


def _start(exe: str, abc: str, body: list[str], shift: int) -> _Call:
    folder = work_dir()
    stem = f"t{threading.get_ident()}_{next(_calls)}"
    lines = abc.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    call = _Call(abc, _Placed(1, len(body) + 2, shift, lines, [], []),
                 folder / f"{stem}.abc", folder / f"{stem}.mid")
    try:
        call.src.write_text("\n".join(["X:1", *body, ""]) + "\n", encoding="utf-8")
        call.proc = subprocess.Popen(  # fixed argv, no shell
            [exe, call.src.name, "-NGUI", "-o", call.out.name], cwd=folder,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except BaseException:
        call.abandon()
        raise
    _limit_memory(call.proc.pid)
    return call


def _finish(call: _Call, want_midi: bool) -> tuple[AbcReport, pretty_midi.PrettyMIDI | None]:
    proc = call.proc
    assert proc is not None
    try:
        try:
            raw, _ = proc.communicate(timeout=_TIMEOUT_SEC)
        except subprocess.TimeoutExpired as e:
            raise AbcError(f"abc2midi did not finish within {_TIMEOUT_SEC:g} s on the tune "
                           f"starting {excerpt(call.abc[:60])}; simplify the tune") from e
        _attribute(raw.decode("utf-8", errors="replace"), call.placed)
        data = call.out.read_bytes() if call.out.exists() else None
    finally:
        call.abandon()
    errors = call.placed.errors
    if proc.returncode < 0:
        errors.append(f"line 1 col 0: abc2midi crashed (signal {-proc.returncode}) on this "
                      "tune; simplify it (nested parts or repeats?)")
    pm = None
    if not errors:
        problem, events, quarters = ("", 0, 0.0) if data is None else midi_scan(data)
        if data is None:
            errors.append("line 1 col 0: abc2midi wrote no MIDI for this tune; check the "
                          "header fields X:, M:, L:, K:")
        elif problem:
            errors.append(f"line 1 col 0: abc2midi wrote an unreadable MIDI file ({problem})")
        elif want_midi and (events > MAX_MIDI_EVENTS or quarters > MAX_MIDI_QUARTERS):
            errors.append(f"line 0 col 0: the tune plays {events:,} MIDI events over "
                          f"{quarters:,.0f} quarter notes, over the {MAX_MIDI_EVENTS:,} events "
                          f"or {MAX_MIDI_QUARTERS:,} quarters that are converted; split it")
    if not errors and want_midi:
        try:
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
        except (OSError, ValueError, EOFError, KeyError, IndexError, ZeroDivisionError) as e:
            errors.append(f"line 1 col 0: abc2midi wrote an unreadable MIDI file ({e})")
    report = AbcReport(not errors, tuple(errors), tuple(call.placed.warnings))
    return report, (pm if report.ok else None)


def _limit_memory(pid: int) -> None:
    """Cap the address space of the ``abc2midi`` child (best effort, Linux)."""
    prlimit = getattr(resource, "prlimit", None)
    if prlimit is not None:
        with contextlib.suppress(OSError, ValueError):
            prlimit(pid, resource.RLIMIT_AS, (_CHILD_MEMORY_BYTES, _CHILD_MEMORY_BYTES))


def _attribute(output: str, p: _Placed) -> None:
    """Give each message of ``abc2midi`` its line in the tune; linear in the output.

    At most :data:`~st_agent.music.abc_safety.MAX_MESSAGES` errors and warnings are
    kept (the rest counted), each quoting at most 60 characters of its line.
    """
    last = max((k + 1 for k, t in enumerate(p.lines) if t.strip()), default=0)
    dropped = {"Error": 0, "Warning": 0}
    for raw in output.splitlines():
        line = raw.strip()
        kind = "Error" if line.startswith("Error") else "Warning"
        target = p.errors if kind == "Error" else p.warnings
        if len(target) >= MAX_MESSAGES and line.startswith(kind):  # cheap when capped
            dropped[kind] += 1
            continue
        m = _MESSAGE_RE.match(line)
        if m is None:
            if _OTHER_ERROR_RE.match(line) or _ABORT_RE.search(line):
                p.errors.append(f"line 0 col 0: {line[:200]}; the tune is too long once "
                                "repeats and parts are played out, or abc2midi failed")
            continue
        file_line, col, text = int(m.group(2)), int(m.group(3)), m.group(4)
        tune_line = max(file_line - p.first_line + 1 + p.line_shift, 0)
        # abc2midi does not reset its column counter on field lines: stale values
        if tune_line > last or (tune_line >= 1 and (
                col > len(p.lines[tune_line - 1])
                or _FIELD_LINE_RE.match(p.lines[tune_line - 1]))):
            col = 0
        if tune_line > last:
            where = f"line {last} col {col}: {text.strip()[:200]} (at the end of the tune)"
        else:
            where = f"line {tune_line} col {col}: {text.strip()[:200]}"
            if tune_line >= 1:
                where += f" (in {excerpt(p.lines[tune_line - 1], col)})"
        target.append(where)
    for kind, target in (("Error", p.errors), ("Warning", p.warnings)):
        if dropped[kind]:
            target.append(f"line 0 col 0: ... and {dropped[kind]} more {kind.lower()}(s)")


def check_many(abcs: Sequence[str]) -> list[AbcReport]:
    """Check many tunes, each on its own (screened, then one ``abc2midi`` call).

    Each tune is written to its own file in this process's work folder with the
    ``X:`` line ``X:1`` (an ``X:`` line it has is replaced, one it lacks is added),
    so the result is the same as :func:`check_abc` on the tune alone, whatever the
    other tunes are.

    Parameters
    ----------
    abcs : sequence of str, length n_tunes
        Complete tunes, one per string (header and body).

    Returns
    -------
    reports : list of AbcReport, length n_tunes
        In the order of ``abcs``.

    Raises
    ------
    AbcError
        When ``abc2midi`` is missing or hangs.
    TypeError
        When an item is not a str.

    Examples
    --------
    >>> [r.ok for r in check_many(["X:1\\nK:G\\nGABc|", "X:1\\nK:G\\n[[[ abc"])]
    [True, False]
    """
    if isinstance(abcs, str):
        raise TypeError("abcs must be a sequence of tunes, got a single str; use check_abc")
    reports, _ = _run_batch(list(abcs), want_midi=False)
    return reports


def check_abc(abc: str) -> AbcReport:
    """Check one tune with ``abc2midi``.

    Parameters
    ----------
    abc : str
        A complete tune.

    Returns
    -------
    report : AbcReport
        ``ok`` is False when the tune is refused by the screening, when
        ``abc2midi`` printed any ``Error`` line, crashed or aborted, or wrote a
        cut or unreadable MIDI file.

    Raises
    ------
    AbcError
        When ``abc2midi`` is missing or runs over 10 s.
    TypeError
        When ``abc`` is not a str.
    """
    return check_many([abc])[0]


def _error_from(report: AbcReport, index: int | None = None) -> AbcError:
    which = "the tune" if index is None else f"tune {index}"
    return AbcError(
        f"ABC rejected ({which}): " + "; ".join(report.errors)
        + ". Fix the ABC at the line(s) named."
    )


def abc_to_midi(abc: str) -> pretty_midi.PrettyMIDI:
    """Convert one ABC tune to MIDI with ``abc2midi``.

    Repeats are played out, guitar-chord symbols are ignored, and the tempo of
    the ``Q:`` field becomes the MIDI tempo.

    Parameters
    ----------
    abc : str
        A complete tune.

    Returns
    -------
    midi : pretty_midi.PrettyMIDI
        What ``abc2midi`` wrote, read back by pretty_midi.

    Raises
    ------
    AbcError
        When the screening refuses the tune (naming the line), on any ``Error``
        line of ``abc2midi`` (warnings are logged at debug level), for a tune of
        more than :data:`~st_agent.music.abc_safety.MAX_MIDI_EVENTS` MIDI events
        or :data:`~st_agent.music.abc_safety.MAX_MIDI_QUARTERS` quarter notes,
        or when ``abc2midi`` is missing.
    """
    report, midi = abc_to_midi_many([abc])[0]
    if midi is None:
        raise _error_from(report)
    return midi


def abc_to_midi_many(
    abcs: Sequence[str],
) -> list[tuple[AbcReport, pretty_midi.PrettyMIDI | None]]:
    """Check and convert many tunes, one ``abc2midi`` call each.

    Parameters
    ----------
    abcs : sequence of str, length n_tunes
        Complete tunes.

    Returns
    -------
    results : list of (AbcReport, PrettyMIDI or None), length n_tunes
        The MIDI is None exactly when the report has errors.
    """
    if isinstance(abcs, str):
        raise TypeError("abcs must be a sequence of tunes, got a single str; use abc_to_midi")
    reports, midis = _run_batch(list(abcs), want_midi=True)
    for i, r in enumerate(reports):
        if r.warnings:
            logger.debug("abc2midi warnings for tune %d: %s", i, "; ".join(r.warnings))
    return list(zip(reports, midis, strict=True))
