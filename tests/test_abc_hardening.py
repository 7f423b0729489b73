"""Issue 22, ABC input: every reproducer gives the module's typed error or a not-ok
report, never reaches abc2midi when it must not, and valid phrases still pass."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from st_agent.errors import DataError
from st_agent.music import abc as abc_mod
from st_agent.music.abc import (
    MAX_TUNE_CHARS,
    AbcError,
    abc_to_midi,
    abc_to_midi_many,
    check_abc,
    check_many,
)
from st_agent.music.abc_safety import (
    MAX_MESSAGES,
    clean_stale_work_dirs,
    midi_problem,
    parse_unit,
    precheck,
)
from st_agent.music.render import parse_meter, render_phrase
from st_agent.types import Knobs

HEAD = "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\n"
GOOD = HEAD + "CDEF GABc|cBAG FEDC|E2G2 c4|C8|]\n"


def _tune(n: int, body: str = "ABcd efga|gfed cBAG|A8|]") -> str:
    return f"X:{n}\nT:tune {n}\nM:4/4\nL:1/8\nQ:1/4=90\nK:Am\n{body}\n"


@pytest.fixture
def no_abc2midi(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail the test if abc2midi is started; the calls are recorded."""
    calls: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("abc2midi must not run for this tune")

    monkeypatch.setattr(abc_mod.subprocess, "Popen", refuse)
    return calls


def test_abc_error_is_a_data_error_and_a_value_error() -> None:
    assert issubclass(AbcError, DataError) and issubclass(AbcError, ValueError)
    assert abc_mod.AbcError is AbcError


# ---------------------------------------------------------------- file directives
@pytest.mark.parametrize("line", [
    "%%abc-include {path}",
    " %%abc-include {path}",
    "%%abc-include\t{path}",
    "%%MIDI ptstress {path}",
    "I:MIDI=ptstress {path}",
    "I: MIDI = ptstress {path}",
])
@pytest.mark.parametrize("where", ["head", "body"])
def test_file_directives_are_refused_before_abc2midi(
        tmp_path: Path, line: str, where: str, no_abc2midi: list[object]) -> None:
    secret = tmp_path / "secret.abc"
    secret.write_text("CDEF GABc|\n")
    directive = line.format(path=secret)
    if where == "head":
        abc, number = f"X:1\n{directive}\nM:4/4\nL:1/8\nK:C\nCDEF|\n", 2
    else:
        abc, number = f"X:1\nM:4/4\nL:1/8\nK:C\nCDEF|\n{directive}\ncdef|\n", 6
    report = check_abc(abc)
    assert not report.ok
    assert report.errors[0].startswith(f"line {number} col ")
    assert "refused" in report.errors[0] and "open a file" in report.errors[0]
    with pytest.raises(AbcError, match=f"line {number} col .*refused"):
        abc_to_midi(abc)
    assert no_abc2midi == []


def test_inline_ptstress_is_refused(no_abc2midi: list[object]) -> None:
    report = check_abc(HEAD + "CDEF|[I:MIDI=ptstress /dev/urandom] GABc|\n")
    assert not report.ok and "line 6 col 13: refused" in report.errors[0]


# ---------------------------------------------------------------- size and linear time
@pytest.mark.parametrize("abc", [
    "(" * 50000 + "CDE" + ")" * 50000,
    "CDEF|" * 40000,
    HEAD + "CDEF GABc|" * 65000,  # a 650 kB repeat
    HEAD + "C" * (MAX_TUNE_CHARS - len(HEAD) + 1),
])
def test_oversized_tunes_are_refused_without_abc2midi(abc: str, no_abc2midi: list[object]
                                                      ) -> None:
    tracemalloc.start()
    report = check_abc(abc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not report.ok and "over the limit of 65,536" in report.errors[0]
    assert peak < 8 * len(abc) + 2**20  # a few copies of the text, never per message
    with pytest.raises(AbcError, match="over the limit"):
        abc_to_midi(abc)


@pytest.mark.parametrize("body", [
    "(" * 32000 + "CDE" + ")" * 32000,
    "[" * 65000,
    "{" * 65000,
    "(3" * 32000,
    "CDEF|" * 12900,
])
def test_attribution_of_a_64kb_tune_is_bounded(body: str) -> None:
    abc = HEAD + body + "\n"
    assert len(abc) <= MAX_TUNE_CHARS
    tracemalloc.start()
    report = check_abc(abc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # at most MAX_MESSAGES of each kind plus one count line, each quoting <= 60 chars
    assert len(report.errors) <= MAX_MESSAGES + 1
    assert len(report.warnings) <= MAX_MESSAGES + 1
    assert all(len(m) < 500 for m in report.errors + report.warnings)
    assert peak < 64 * 2**20  # abc2midi prints up to ~4 MB here; quadratic was 4.9 GB


def test_at_the_limit_a_good_tune_still_passes() -> None:
    bars = "CDEF GABc|cBAG FEDC|\n" * ((MAX_TUNE_CHARS - len(HEAD) - 200) // 21)
    abc = HEAD + bars
    assert len(abc) <= MAX_TUNE_CHARS
    assert check_abc(abc).ok


@pytest.mark.parametrize(("body", "match"), [
    ("CDEF GABc|" * 650, r"plays 10,\d\d\d MIDI events over 2,600 quarter notes"),
    ("C9999999|", r"over [\d,]{7,} quarter notes"),  # pretty_midi: 8 bytes a tick
])
def test_conversion_of_too_long_a_tune_is_refused(body: str, match: str) -> None:
    abc = HEAD + body + "\n"
    assert check_abc(abc).ok  # checking has no length limit
    with pytest.raises(AbcError, match=match):
        abc_to_midi(abc)


def test_file_runaway_is_detected() -> None:
    # 64 kB of repeats: abc2midi aborts ("file runaway") and leaves a cut MIDI file
    abc = HEAD + "|:CDEF:|" * 7900 + "\n"
    assert len(abc) <= MAX_TUNE_CHARS
    report = check_abc(abc)
    assert not report.ok and any("runaway" in e for e in report.errors)
    with pytest.raises(AbcError, match="runaway"):
        abc_to_midi(abc)


def test_cut_midi_files_are_problems() -> None:
    out = abc_to_midi_many([GOOD])[0][1]
    assert out is not None
    import io

    buf = io.BytesIO()
    out.write(buf)
    data = buf.getvalue()
    assert midi_problem(data) == ""
    for cut in (len(data) - 1, len(data) // 2, 20, 3):
        assert midi_problem(data[:cut]) != ""
    assert midi_problem(b"") == "no MIDI header"


# ---------------------------------------------------------------- typed errors
def test_huge_tempo_is_refused_not_ok() -> None:
    abc = "X:1\nM:4/4\nL:1/8\nQ:9999999999999999999999\nK:C\nCDEF|\n"
    report = check_abc(abc)
    assert not report.ok and report.errors[0].startswith("line 4 col 0: Q: field")
    with pytest.raises(AbcError, match=r"Q: field .* quarter notes per minute"):
        abc_to_midi(abc)


@pytest.mark.parametrize(("q", "ok"), [
    ("Q:1/4=120", True), ("Q:3/8=60", True), ('Q:"Allegro" 1/4=140', True), ("Q:100", True),
    ("Q:1/4=1001", False), ("Q:1/4=0", False), ("Q:1/0=100", False), ("Q:1/16=3", False),
    ("Q:C=9999999", False),  # an old form the screen leaves to abc2midi: MIDI check
])
def test_tempo_bounds(q: str, ok: bool) -> None:
    assert check_abc(f"X:1\nM:4/4\nL:1/8\n{q}\nK:C\nCDEF|\n").ok is ok
    inline = check_abc(f"X:1\nM:4/4\nL:1/8\nK:C\nCDEF|[{q}]CDEF|\n")
    assert inline.ok is ok


@pytest.mark.parametrize(("field", "ok"), [
    ("M:4/4", True), ("M:6/8", True), ("M:C|", True), ("M:(2+3)/8", True),
    ("M:32/32", True), ("M:99999/1", False), ("M:33/4", False), ("M:3/5", False),
    ("M:0/4", False), ("L:1/16", True), ("L:1/0", False), ("L:3/8", False), ("L:1/128", False),
])
def test_meter_and_unit_bounds_in_tunes(field: str, ok: bool) -> None:
    report = check_abc(f"X:1\n{field}\nK:C\nCDEF|\n")
    assert report.ok is ok
    if not ok:
        assert report.errors[0].startswith(f"line 2 col 0: {field[0]}: field")


def test_render_phrase_meter_is_typed() -> None:
    with pytest.raises(AbcError, match=r"meter '99999/1' .*1 <= N <= 32"):
        render_phrase(GOOD, "C", Knobs(0.5, 0.5, 0.5), meter="99999/1")
    for bad in ("0/4", "4/0", "4/3", "x", "9" * 30 + "/4"):
        with pytest.raises(AbcError, match="meter"):
            parse_meter(bad)
    assert parse_meter("32/1") == (128.0, 4.0, 32)


def test_render_phrase_without_notes_is_typed() -> None:
    with pytest.raises(AbcError, match="no notes"):
        render_phrase(HEAD + "z8|z8|\n", "C", Knobs(0.5, 0.5, 0.5))


@pytest.mark.parametrize("abc", [
    "X:1\nT:\ud800\nK:C\nCDEF|\n",
    "X:1\nK:C\nCD\udfffEF|\n",
])
def test_lone_surrogates_are_typed(abc: str, no_abc2midi: list[object]) -> None:
    report = check_abc(abc)
    assert not report.ok and "lone surrogate" in report.errors[0]
    with pytest.raises(AbcError, match="lone surrogate"):
        abc_to_midi(abc)


@pytest.mark.parametrize(("abc", "match"), [
    ("X:1\nK:C\nCD\x00EF|\n", r"line 3 col 2: control character '\\x00'"),
    ("X:1\nK:C\nCDéF|\n", r"line 3 col 2: non-ASCII character"),
])
def test_bytes_that_are_not_abc_are_refused(abc: str, match: str,
                                            no_abc2midi: list[object]) -> None:
    report = check_abc(abc)
    assert not report.ok
    assert any(__import__("re").search(match, e) for e in report.errors), report.errors


def test_a_tune_without_k_is_refused_without_abc2midi(no_abc2midi: list[object]) -> None:
    report = check_abc("X:1\nM:4/4\nL:1/8\nCDEF GABc|\n")
    assert not report.ok and "no K: field" in report.errors[0]


def test_text_fields_may_hold_any_utf8() -> None:
    assert check_abc('X:1\nT:Café ♫\nM:4/4\nL:1/8\nK:C\n"é"CDEF GABc|\nw:là là\n').ok


def test_parse_unit_names_the_field() -> None:
    assert parse_unit("1/8") == __import__("fractions").Fraction(1, 8)
    with pytest.raises(AbcError, match=r"context.unit '1/0' has an invalid denominator 0"):
        parse_unit("1/0", "context.unit")
    with pytest.raises(AbcError, match="unit"):
        parse_unit(7)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def composer():
    from st_agent.music.composer import Composer

    return Composer()


def test_composer_context_with_bad_unit_or_meter_is_typed(composer) -> None:
    phrase = composer.compose(Knobs(0.6, 0.5, 0.5), seed=1)
    assert check_abc(phrase.abc).ok  # what the composer writes still passes
    with pytest.raises(AbcError, match=r"context.unit '1/0'"):
        composer.compose(Knobs(0.6, 0.5, 0.5), context=dataclasses.replace(phrase, unit="1/0"))
    with pytest.raises(AbcError, match=r"context.meter"):
        composer.compose(Knobs(0.6, 0.5, 0.5),
                         context=dataclasses.replace(phrase, meter="99999/1"))
    more = [composer.compose(Knobs(v, t, e), seed=s) for s, (v, t, e) in
            enumerate([(0.1, 0.2, 0.9), (0.9, 0.8, 0.1), (0.4, 0.5, 0.5)])]
    assert all(r.ok for r in check_many([p.abc for p in more]))
    assert all(precheck(p.abc) == [] for p in [phrase, *more])


# ---------------------------------------------------------------- batches
FOUR = [_tune(1), "X:2\nK:G\n|: [[[ abc", _tune(3, "(3ABc d2 e2 f2|g8|]"), _tune(4, "ABcd [CEG|")]


def test_check_many_is_deterministic_on_the_four_tune_batch() -> None:
    results = {tuple(check_many(FOUR)) for _ in range(20)}
    assert len(results) == 1
    (reports,) = results
    assert [r.ok for r in reports] == [True, False, True, False]
    assert list(reports) == [check_abc(t) for t in FOUR]


def test_a_huge_tune_does_not_spoil_the_next_one() -> None:
    big = HEAD + "CDEF|" * 100000  # 500 kB: refused by size
    runaway = HEAD + "|:CDEF:|" * 7900 + "\n"  # under the limit, abc2midi aborts
    reports = check_many([big, _tune(2), runaway, _tune(4), GOOD])
    assert [r.ok for r in reports] == [False, True, False, True, True]


# ---------------------------------------------------------------- temporary folders
_CHILD = """
import os, signal, sys
from st_agent.music.abc import check_abc
assert check_abc("X:1\\nK:C\\nCDEF|\\n").ok
print("PID", os.getpid(), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(tmp: Path, how: str) -> tuple[int, int]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, how], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    # a library may print to stdout on import (pyfluidsynth does when $CI is set)
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("PID ")]
    return int(line.split()[1]), proc.returncode


def test_kill_9_leaves_a_folder_that_the_next_start_removes(tmp_path: Path) -> None:
    pid, rc = _child(tmp_path, "kill")
    assert rc == -signal.SIGKILL
    left = tmp_path / f"st_abc_{pid}"
    assert left.is_dir()  # what a kill -9 leaves behind
    legacy = tmp_path / "st_abc_k2j9xq"  # the random-named folders of older versions
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    fresh = tmp_path / "st_abc_abcdefg"
    fresh.mkdir()  # recent, owner unknown: kept
    pid2, rc2 = _child(tmp_path, "exit")
    assert rc2 == 0
    assert not left.exists() and not legacy.exists() and fresh.exists()
    assert not (tmp_path / f"st_abc_{pid2}").exists()  # removed at a normal exit


def test_clean_keeps_folders_of_live_processes(tmp_path: Path) -> None:
    mine = tmp_path / f"st_abc_{os.getpid()}"
    mine.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = tmp_path / f"st_abc_{live.pid}"
        theirs.mkdir()
        assert clean_stale_work_dirs(tmp_path) == []
        assert mine.exists() and theirs.exists()
    finally:
        live.kill()
        live.wait()
    assert clean_stale_work_dirs(tmp_path) == [theirs]
