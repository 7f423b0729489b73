"""Check ABC tunes and convert them to MIDI with the ``abc2midi`` program.

``abc2midi`` (Debian package ``abcmidi``) is the independent ABC parser of the
project: a phrase is valid when ``abc2midi`` converts it without printing an
``Error`` line. It is a small C program, so one call costs about a millisecond;
:func:`check_many` checks a whole batch of candidates with one call and gives
each tune back its own errors and warnings.

What ``abc2midi`` 4.84 prints, and how it is read here
------------------------------------------------------
Every message is one line on standard output::

    Error in line-char 3-5 : Attempt to nest chords
    Warning in line-char 7-87 : Track 1 Bar 4 has 4 time units while the time signature has 3

The line number counts lines of the whole input file, so a batch file maps each
message back to its tune by line ranges. Its exit status is 0 even after errors.
Some faults it does not report at all, so this module adds two checks of its own:
a blank line inside a tune (``abc2midi`` silently drops everything after it) and a
tune for which no MIDI file was written. Guitar-chord symbols (``"Am"``) are
ignored (``-NGUI``): the arrangement is made by :mod:`st_agent.music.render`.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mido
import pretty_midi

__all__ = [
    "ABC2MIDI_INSTALL_HINT",
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
_NOT_NOTES_RE = re.compile(r'%.*$|"[^"]*"|![^!]*!|\+[^+\s]*\+|\{[^}]*\}|\[[A-Za-z]:[^\]]*\]')
_TUPLET_RE = re.compile(r"\((\d)(?::(\d*))?(?::(\d*))?")
_NOTE_RE = re.compile(r"\[[^\]]*\]|[_=^]*[A-Ga-gzx][,']*")
_TIMEOUT_SEC = 30.0


class AbcError(ValueError):
    """An ABC tune that ``abc2midi`` rejects, or a missing ``abc2midi``.

    The message names each fault with its line and column in the tune and the
    text of that line, so the tune can be fixed.
    """


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
                    f"(in {body[i].strip()!r})"
                )
            remaining += len(_NOTE_RE.findall(pieces[k]))
    return errors[::-1]


def _run_batch(
    abcs: Sequence[str], want_midi: bool
) -> tuple[list[AbcReport], list[pretty_midi.PrettyMIDI | None]]:
    """Check (and optionally convert) tunes, with as few ``abc2midi`` calls as safe.

    ``abc2midi`` carries parser state from a broken tune into the next one (an
    unclosed chord makes the following good tune fail) and sometimes stops after
    it, so only the results up to and including the first failing tune of a call
    are kept, and the rest of the batch is checked again by a new call. A batch
    with no failing tune costs one call; each failing tune costs one more.
    """
    exe = find_abc2midi()
    reports: list[AbcReport] = []
    midis: list[pretty_midi.PrettyMIDI | None] = []
    start = 0
    while start < len(abcs):
        part_reports, part_midis = _run_once(exe, abcs[start:], start, want_midi)
        keep = next((i + 1 for i, r in enumerate(part_reports) if not r.ok), len(part_reports))
        reports.extend(part_reports[:keep])
        midis.extend(part_midis[:keep])
        start += keep
    return reports, midis


def _run_once(
    exe: str, abcs: Sequence[str], offset: int, want_midi: bool
) -> tuple[list[AbcReport], list[pretty_midi.PrettyMIDI | None]]:
    """One ``abc2midi`` call over all ``abcs``; later tunes may be unreliable."""
    placed: list[_Placed] = []
    file_lines: list[str] = []
    for i, abc in enumerate(abcs):
        body, shift, errors = _split_tune(abc, offset + i)
        first = len(file_lines) + 1
        file_lines.append(f"X:{i + 1}")
        file_lines.extend(body)
        file_lines.append("")  # a blank line ends the tune
        orig = abc.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        placed.append(_Placed(first, len(file_lines), shift, orig, errors, []))
    if not placed:
        return [], []

    with tempfile.TemporaryDirectory(prefix="st_abc_") as tmp:
        src = Path(tmp) / "batch.abc"
        src.write_text("\n".join(file_lines) + "\n", encoding="utf-8")
        try:
            proc = subprocess.run(  # fixed argv, no shell
                [exe, src.name, "-NGUI"],
                cwd=tmp,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_TIMEOUT_SEC,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise AbcError(
                f"abc2midi did not finish within {_TIMEOUT_SEC:g} s on a batch of "
                f"{len(abcs)} tune(s); check the tunes one by one with check_abc"
            ) from e
        output = proc.stdout + proc.stderr
        crashed = proc.returncode < 0 or proc.returncode > 1
        _attribute(output, placed)

        reports: list[AbcReport] = []
        midis: list[pretty_midi.PrettyMIDI | None] = []
        for i, p in enumerate(placed):
            mid = Path(tmp) / f"batch{i + 1}.mid"
            if not p.errors and not mid.exists():
                hint = (
                    f"abc2midi crashed (exit status {proc.returncode})"
                    if crashed
                    else "check the header fields X:, M:, L:, K:"
                )
                p.errors.append(f"line 1 col 0: abc2midi wrote no MIDI for this tune; {hint}")
            pm = None
            if not p.errors and (want_midi or _may_leave_midi_range(abcs[i])):
                # abc2midi writes notes above MIDI 127 (six octave marks on a c) into
                # a file no MIDI reader accepts, and says nothing: read the file back
                try:
                    pm = pretty_midi.PrettyMIDI(str(mid)) if want_midi else \
                        mido.MidiFile(str(mid))
                except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
                    p.errors.append(f"line 1 col 0: abc2midi wrote an unreadable MIDI file "
                                    f"({e}); is a note above MIDI pitch 127?")
                    pm = None
            reports.append(AbcReport(not p.errors, tuple(p.errors), tuple(p.warnings)))
            midis.append(pm if want_midi else None)
    return reports, midis


_HIGH_RE = re.compile(r"[a-g]''''|octave|transpose|shift", re.IGNORECASE)


def _may_leave_midi_range(abc: str) -> bool:
    """Whether a tune can hold a note above MIDI 127: one with four or more octave
    marks (c'''' is MIDI 108) or a field that moves octaves. Only such tunes are
    read back after ``abc2midi`` when no MIDI is wanted (reading costs ~1.5 ms)."""
    return _HIGH_RE.search(abc) is not None


def _attribute(output: str, placed: list[_Placed]) -> None:
    """Give each message of ``abc2midi`` to the tune whose lines it names."""
    for raw in output.splitlines():
        line = raw.strip()
        m = _MESSAGE_RE.match(line)
        if m is None:
            if _OTHER_ERROR_RE.match(line):
                for p in placed:  # not tied to a line: every tune may be affected
                    p.errors.append(f"line 0 col 0: {line}")
            continue
        kind, file_line, col, text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        owner = placed[-1]
        for p in placed:
            if p.first_line <= file_line <= p.last_line:
                owner = p
                break
        tune_line = file_line - owner.first_line + 1 + owner.line_shift
        tune_line = max(tune_line, 0)
        last = max((k + 1 for k, t in enumerate(owner.lines) if t.strip()), default=0)
        # abc2midi does not reset its column counter on field lines: stale values
        if tune_line > last or (tune_line >= 1 and (
                col > len(owner.lines[tune_line - 1])
                or _FIELD_LINE_RE.match(owner.lines[tune_line - 1]))):
            col = 0
        if tune_line > last:
            where = f"line {last} col {col}: {text.strip()} (at the end of the tune)"
        else:
            where = f"line {tune_line} col {col}: {text.strip()}"
            if tune_line >= 1:
                where += f" (in {owner.lines[tune_line - 1].strip()!r})"
        (owner.errors if kind == "Error" else owner.warnings).append(where)


def check_many(abcs: Sequence[str]) -> list[AbcReport]:
    """Check many tunes with one ``abc2midi`` call.

    Each tune gets its own ``X:`` number in one temporary file (an ``X:`` line it
    has is replaced, one it lacks is added); the line numbers of ``abc2midi``'s
    messages give each error and warning back to its tune.

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
        ``ok`` is False when ``abc2midi`` printed any ``Error`` line.
    """
    return check_many([abc])[0]


def _error_from(report: AbcReport, index: int | None = None) -> AbcError:
    which = "the tune" if index is None else f"tune {index}"
    return AbcError(
        f"abc2midi rejected {which}: " + "; ".join(report.errors)
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
        On any ``Error`` line of ``abc2midi`` (warnings are logged at debug level),
        or when ``abc2midi`` is missing.
    """
    report, midi = abc_to_midi_many([abc])[0]
    if midi is None:
        raise _error_from(report)
    return midi


def abc_to_midi_many(
    abcs: Sequence[str],
) -> list[tuple[AbcReport, pretty_midi.PrettyMIDI | None]]:
    """Check and convert many tunes with one ``abc2midi`` call.

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
