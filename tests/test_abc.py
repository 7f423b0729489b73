"""The abc2midi wrapper, against the real abc2midi program."""

from __future__ import annotations

import pretty_midi
import pytest

from st_agent.music.abc import (
    AbcError,
    AbcReport,
    abc_to_midi,
    abc_to_midi_many,
    check_abc,
    check_many,
)

# 2 x 10 notes in the repeat, a tie (one note), a chord (3 notes), a triplet
# (3 notes), and a quoted chord symbol that must not become notes.
KNOWN = """X:7
T:Known
M:4/4
L:1/8
Q:1/4=100
K:G
|:"G"GABc dedB|G4 D4:|A4- A2 B2|[GBd]4 (3ABc d2|]
"""
KNOWN_NOTES = 2 * 10 + 2 + 3 + 3 + 1


def _tune(n: int, body: str = "ABcd efga|gfed cBAG|A8|]") -> str:
    return f"X:{n}\nT:tune {n}\nM:4/4\nL:1/8\nQ:1/4=90\nK:Am\n{body}\n"


def test_known_tune_converts_with_right_number_of_notes() -> None:
    pm = abc_to_midi(KNOWN)
    assert isinstance(pm, pretty_midi.PrettyMIDI)
    notes = [n for inst in pm.instruments for n in inst.notes]
    assert len(pm.instruments) == 1  # the "G" chord symbol adds no accompaniment
    assert len(notes) == KNOWN_NOTES
    assert pm.get_tempo_changes()[1][0] == pytest.approx(100, abs=0.5)
    # the tied A4-A2 is one note of 6 eighths = 1.8 s at 100 BPM
    tied = [n for n in notes if n.pitch == 69 and n.end - n.start > 1.0]
    assert len(tied) == 1 and tied[0].end - tied[0].start == pytest.approx(1.8, abs=0.02)


def test_good_tune_report_is_ok() -> None:
    report = check_abc(KNOWN)
    assert report == AbcReport(ok=True, errors=(), warnings=())


@pytest.mark.parametrize(
    ("abc", "match"),
    [
        ("K:G\n|: [[[ abc", r"line 2 col 5: Attempt to nest chords"),
        ("X:1\nM:4/4\nL:1/8\nK:G\nABcd efga|[CEG ABcd|\n", r"line 5 .*Sustained notes"),
        ("X:1\nM:4/4\nL:1/8\nK:G\nABcd (3dB|]\n", r"line 5 col 0: tuplet \(3 needs 3 notes"),
        ("X:1\nM:4/4\nL:1/8\nK:G\nABcd efga|CEG] ABcd|\n", r"Chord already finished"),
        ("X:1\nK:Xyz\nABcd|\n", r"line 2 col 0: First K: field must specify key signature"),
        ("X:1\nM:4/4\nK:G\nAB\n\ncd|\n", r"line 5 col 0: blank line inside the tune"),
        ("X:1\nL:1/0\nK:G\nABcd|\n", r"line 2 .*invalid denominator"),
    ],
)
def test_malformed_abc_raises_with_line_and_reason(abc: str, match: str) -> None:
    with pytest.raises(AbcError, match=match):
        abc_to_midi(abc)
    report = check_abc(abc)
    assert not report.ok and report.errors


def test_error_message_quotes_the_bad_line() -> None:
    with pytest.raises(AbcError, match=r"in '\|: \[\[\[ abc'") as info:
        abc_to_midi("X:1\nK:G\n|: [[[ abc\n")
    assert "Fix the ABC" in str(info.value)


def test_warnings_do_not_fail() -> None:
    # bar 2 is one eighth short: abc2midi warns, the tune still converts
    abc = "X:1\nM:4/4\nL:1/8\nK:G\nABcd efga|ABcd efg|ABcd efga|]\n"
    report = check_abc(abc)
    assert report.ok
    assert any("time units" in w for w in report.warnings)
    assert abc_to_midi(abc).instruments[0].notes


def test_check_many_attributes_errors_to_the_right_tune() -> None:
    bad = "X:3\nT:bad\nM:4/4\nL:1/8\nK:G\nABcd [[[ efga|\n"
    tunes = [_tune(1), _tune(2, "GABc dedB|]"), bad, _tune(4), _tune(5, "EFGA BcdB|]")]
    reports = check_many(tunes)
    assert [r.ok for r in reports] == [True, True, False, True, True]
    # the error points at line 6 of the bad tune itself, not of the batch file
    assert any(e.startswith("line 6 col") for e in reports[2].errors)
    # every tune gets exactly the report it gets when checked alone
    assert reports == [check_abc(t) for t in tunes]


def test_check_many_state_does_not_leak_after_broken_tune() -> None:
    # an unclosed chord used to make abc2midi fail the next (good) tune and stop
    tunes = [_tune(1), "X:2\nK:G\n|: [[[ abc", _tune(3), _tune(4, "ABcd [CEG|"), _tune(5)]
    reports = check_many(tunes)
    assert [r.ok for r in reports] == [True, False, True, False, True]


def test_check_many_renumbers_duplicate_and_missing_x() -> None:
    tunes = [_tune(1), _tune(1), "M:4/4\nL:1/8\nK:D\nDEFG ABcd|]\n"]
    assert [r.ok for r in check_many(tunes)] == [True, True, True]
    # a tune without X: keeps its own line numbers in messages
    report = check_abc("M:4/4\nL:1/8\nK:D\nDEFG [[A|\n")
    assert any(e.startswith("line 4 col") for e in report.errors)


def test_abc_to_midi_many_returns_midi_only_for_good_tunes() -> None:
    out = abc_to_midi_many([_tune(1), "X:2\nK:G\n[[[", _tune(3)])
    assert [m is not None for _, m in out] == [True, False, True]
    assert [r.ok for r, _ in out] == [True, False, True]


def test_check_many_rejects_a_single_string_and_non_str() -> None:
    with pytest.raises(TypeError, match="single str"):
        check_many(_tune(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tune 1 must be a str"):
        check_many([_tune(1), 42])  # type: ignore[list-item]
    assert check_many([]) == []


def test_missing_abc2midi_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AbcError, match=r"apt-get install abcmidi"):
        check_abc(_tune(1))


def test_report_guards_its_rule() -> None:
    with pytest.raises(ValueError, match="ok must be True exactly when errors is empty"):
        AbcReport(ok=True, errors=("x",), warnings=())


def test_note_above_midi_range_is_rejected_not_written() -> None:
    # abc2midi writes pitch 132 into a MIDI file no reader accepts, and reports nothing;
    # the composer found such a phrase once, which crashed rendering downstream
    tune = "X:1\nM:4/4\nL:1/8\nK:C\nc''''''2 c2 c4|\n"
    (report,) = check_many([tune])
    assert not report.ok
    assert "unreadable MIDI" in report.errors[0]
    with pytest.raises(AbcError, match="pitch 127"):
        abc_to_midi(tune)
    assert check_many(["X:1\nM:4/4\nL:1/8\nK:C\nc'2 c2 c4|\n"])[0].ok
