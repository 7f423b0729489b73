"""The session score, written phrase by phrase (``score.abc``), read by two parsers."""

from __future__ import annotations

from pathlib import Path

import music21
import pytest

from st_agent.live.common import Playing
from st_agent.live.session_score import ScoreFile, session_score
from st_agent.music.abc import check_many
from st_agent.music.features import measure_features
from st_agent.music.render import render_phrase
from st_agent.types import Knobs, Phrase

# (body, key, knobs): the second phrase changes tempo, the third the key
PHRASES = (("CDEF GABc|c2B2 A2G2|FEDC E2G2|C8|", "C", Knobs(0.6, 0.5, 0.5)),
           ("EGce g2e2|fdBG A4|GFED C2E2|G8|", "C", Knobs(0.6, 0.2, 0.5)),
           ("A2c2 e2c2|B2d2 e4|c2B2 A2G2|A8|", "Am", Knobs(0.2, 0.2, 0.5)))


def _playing(body: str, key: str, knobs: Knobs, start_sec: float) -> Playing:
    abc = f"X:1\nM:4/4\nL:1/8\nQ:1/4={round(knobs.bpm)}\nK:{key}\n{body}\n"
    pm = render_phrase(abc, key, knobs, meter="4/4")
    phrase = Phrase(abc=abc, body=body, knobs=knobs, meter="4/4", unit="1/8", key=key, bars=4)
    return Playing(phrase, measure_features(pm), pm, start_sec, "test")


@pytest.fixture(scope="module")
def played() -> list[Playing]:
    out, t = [], 12.0
    for body, key, knobs in PHRASES:
        out.append(_playing(body, key, knobs, t))
        t = out[-1].end_sec
    return out


def test_score_file_holds_every_phrase_as_soon_as_it_starts(tmp_path: Path, played) -> None:
    score = ScoreFile(tmp_path / "score.abc", "st-agent session test")
    for k, p in enumerate(played, 1):
        score.add(p)
        text = score.path.read_text()  # what a crash would leave now
        assert text == session_score(played[:k], "st-agent session test")
        assert check_many([text])[0].ok, text  # abc2midi reads it
        notes = list(music21.converter.parse(text, format="abc").recurse().notes)
        assert len(notes) == sum(
            len(list(music21.converter.parse(q.phrase.abc, format="abc").recurse().notes))
            for q in played[:k])
    assert score.close() == score.path
    assert score.n_phrases == len(played)
    assert score.music_sec == pytest.approx(played[-1].end_sec - played[0].start_sec)
    text = score.path.read_text()
    bpms = [round(p.phrase.bpm) for p in played]
    assert bpms[0] != bpms[1]  # the fixture changes tempo, then key
    assert f"[Q:1/4={bpms[1]}]" in text and "[K:Am]" in text
    assert "% phrase 2: t=" in text and "programs " in text  # each phrase's note


def test_a_session_without_a_phrase_gets_a_one_bar_score(tmp_path: Path) -> None:
    score = ScoreFile(tmp_path / "score.abc", "empty")
    assert not score.path.exists() and score.music_sec == 0.0
    text = score.close().read_text()
    assert text == session_score([], "empty")
    assert check_many([text])[0].ok


def test_a_score_that_cannot_be_written_stops_and_says_why(tmp_path: Path, played,
                                                          caplog) -> None:
    score = ScoreFile(tmp_path / "score.abc", "t")
    score.add(played[0])
    score.path.unlink()
    score.path.mkdir()  # the file's place taken: every later write fails
    score.add(played[1])
    score.add(played[2])
    assert score.error is not None and "score.abc" in score.error
    assert "the recording still holds every phrase" in caplog.text
    assert caplog.text.count("could not be written") == 1  # said once
    assert score.n_phrases == 3  # the session's count goes on
    assert score.music_sec == pytest.approx(played[-1].end_sec - played[0].start_sec)
    assert score.close() == score.path
