"""The live loop under faults: streamed WAV, a failing controller, a failing output,
settings refused before anything is created."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.live.audio import (
    MAX_PENDING_RENDERS,
    SESSION_WAV_GAIN,
    TAIL_SEC,
    SessionWavOutput,
)
from st_agent.live.common import Playing
from st_agent.live.guarded import GuardedController, check_action
from st_agent.live.runtime import LiveSession, SessionStatus, session_folder
from st_agent.live.session import SessionConfig, run_session
from st_agent.live.wav_stream import WavStream
from st_agent.music.features import measure_features
from st_agent.music.render import AudioRenderer, render_phrase
from st_agent.policies.controllers import make_controller
from st_agent.types import Knobs, Phrase

SR = 44100
TUNES = ("CDEF GABc|c2B2 A2G2|FEDC E2G2|C8|", "EGce g2e2|fdBG A4|GFED C2E2|G8|",
         "c2G2 E2C2|D2F2 A2c2|BAGF EDCB,|C8|")


KNOBS = Knobs(0.5, 0.5, 0.8)


def _playing(body: str, start_sec: float, knobs: Knobs = KNOBS) -> Playing:
    abc = f"X:1\nM:4/4\nL:1/8\nQ:1/4=120\nK:C\n{body}\n"
    pm = render_phrase(abc, "C", knobs, meter="4/4")
    phrase = Phrase(abc=abc, body=body, knobs=knobs, meter="4/4", unit="1/8", key="C", bars=4)
    return Playing(phrase, measure_features(pm), pm, start_sec, "test")


@pytest.fixture(scope="module")
def phrases() -> list[Playing]:
    out, t = [], 10.0
    for body in TUNES:
        out.append(_playing(body, t))
        t = out[-1].end_sec
    return out


# ------------------------------------------------------------------ WAV on disk


def test_wav_stream_is_a_valid_wav_after_each_append_and_fades_at_the_end(
        tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    w = WavStream(path, 8000)
    with wave.open(str(path)) as r:
        assert r.getnframes() == 0 and r.getframerate() == 8000 and r.getsampwidth() == 2
    rng = np.random.default_rng(0)
    sizes = [800, 1200, 3]
    for i, n in enumerate(sizes):
        w.append(rng.uniform(-0.5, 0.5, n))
        with wave.open(str(path)) as r:  # not closed: as a crash would leave it
            assert r.getnframes() == sum(sizes[:i + 1])
    w.append(np.full(10, 3.0))  # beyond full scale: clipped, counted
    assert w.clipped == 10
    w.finish(n_keep=1000, fade_samples=100)
    sr, a = wavfile.read(path)
    assert sr == 8000 and a.size == 1000
    assert a[-1] == 0 and np.abs(a[-100:]).mean() < np.abs(a[:900]).mean()


def test_streamed_session_wav_is_complete_after_each_phrase(tmp_path: Path,
                                                            phrases: list[Playing]) -> None:
    out = SessionWavOutput(fade_sec=1.0)
    out.open(tmp_path)
    t0 = phrases[0].start_sec
    for i, p in enumerate(phrases):
        out.phrase(i, p, p.phrase.knobs)
        out.wait()
        # read back mid-session, the output not closed (as after a crash)
        sr, audio = wavfile.read(tmp_path / "session.wav")
        assert sr == SR
        assert audio.size == round((p.end_sec - t0) * SR)
        part = audio[round((p.start_sec - t0) * SR):]
        assert np.abs(part).max() > 1000  # the phrase is there, not silence
    out.close("time up")
    sr, audio = wavfile.read(tmp_path / "session.wav")
    assert audio.size == round((phrases[-1].end_sec - t0) * SR)  # the tail past it is cut
    assert audio[-1] == 0  # faded out


def test_phrases_handed_faster_than_they_render_wait_at_a_bound(
        tmp_path: Path, phrases: list[Playing]) -> None:
    """An accelerated session hands phrases to the WAV faster than FluidSynth renders
    them: the loop waits once MAX_PENDING_RENDERS are queued, instead of keeping every
    phrase's MIDI and audio in memory, and the file still holds every phrase."""
    out = SessionWavOutput(fade_sec=0.0)
    out.open(tmp_path)
    t, seen = 10.0, []
    for i in range(3 * MAX_PENDING_RENDERS):
        p = phrases[i % len(phrases)]
        p = Playing(p.phrase, p.features, p.pm, t, "test")
        out.phrase(i, p, p.phrase.knobs)
        seen.append(out.pending)
        assert len(out._queue._jobs) <= MAX_PENDING_RENDERS
        t = p.end_sec
    assert max(seen) >= 2  # renders did queue up: the bound was reached, not idle
    out.close("time up")
    sr, audio = wavfile.read(tmp_path / "session.wav")
    assert sr == SR
    assert audio.size == round((t - 10.0) * SR)
    starts = np.cumsum([0.0] + [phrases[i % 3].end_sec - phrases[i % 3].start_sec
                                for i in range(3 * MAX_PENDING_RENDERS - 1)])
    for s0 in starts:  # every phrase is in the file, none is silence
        seg = audio[round(s0 * SR):round(s0 * SR) + SR // 2]
        assert np.abs(seg).max() > 1000


def test_tail_of_a_phrase_is_added_onto_the_next(tmp_path: Path,
                                                phrases: list[Playing]) -> None:
    a, b = phrases[0], phrases[1]
    out = SessionWavOutput(fade_sec=0.0)
    out.open(tmp_path)
    out.phrase(0, a, a.phrase.knobs)
    out.phrase(1, b, b.phrase.knobs)
    out.close("time up")
    _, audio = wavfile.read(tmp_path / "session.wav")
    start = round((b.start_sec - a.start_sec) * SR)
    with AudioRenderer(release_sec=TAIL_SEC) as synth:
        tail = synth.synthesize(a.pm)[start:start + SR // 2] * SESSION_WAV_GAIN
        alone = synth.synthesize(b.pm)[:SR // 2] * SESSION_WAV_GAIN
    assert np.sqrt(np.mean(tail ** 2)) > 1e-3  # the first phrase rings past its end
    assert out.boost >= 1.0  # the finished file is raised to -1 dBFS, never lowered
    got = audio[start:start + SR // 2] / 32767.0 / out.boost - alone
    assert np.corrcoef(got, tail)[0, 1] > 0.9


def test_stop_cuts_the_wav_at_stop_plus_fade(tmp_path: Path, phrases: list[Playing]) -> None:
    out = SessionWavOutput(fade_sec=1.0)
    out.open(tmp_path)
    for i, p in enumerate(phrases[:2]):
        out.phrase(i, p, p.phrase.knobs)
    stop = phrases[1].start_sec + 1.5
    out.marker(stop, "stop: Ctrl-C")
    out.close("Ctrl-C")
    _, audio = wavfile.read(tmp_path / "session.wav")
    assert audio.size == round((stop - phrases[0].start_sec + 1.0) * SR)
    assert audio[-1] == 0


# ------------------------------------------------------------------ the controller guard


class _Pid:
    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.array([0.1, -0.2, 0.3]), None


@pytest.mark.parametrize("bad", [
    lambda: (_ for _ in ()).throw(RuntimeError("weights went bad")),
    lambda: (np.array([np.nan, 0.0, 0.0]), None),
    lambda: (np.array([1e400, 0.0, 0.0]), None),
    lambda: (np.zeros(4), None),
    lambda: ("up", None),
    lambda: 7,  # not even an (action, state) pair
])
def test_guard_holds_then_hands_over_to_the_fallback(bad: Any) -> None:
    class Bad:
        def predict(self, obs: Any, deterministic: bool = True) -> Any:
            return bad()

    g = GuardedController(Bad(), "bad", lambda: (_Pid(), "pid"))
    action, fb = g.predict(np.zeros(20))
    assert np.array_equal(action, np.zeros(3)) and fb is not None
    assert fb.failed == "bad" and fb.now == "pid" and fb.error
    action, fb = g.predict(np.zeros(20))
    assert fb is None and np.allclose(action, [0.1, -0.2, 0.3]) and g.using == "pid"


def test_guard_without_fallback_holds_for_good() -> None:
    class Bad:
        def predict(self, obs: Any, deterministic: bool = True) -> Any:
            raise ValueError("no")

    def broken() -> tuple[Any, str]:
        raise OSError("asset missing")

    for fallback in (None, broken):
        g = GuardedController(Bad(), "bad", fallback)
        assert g.predict(np.zeros(20))[1].now == "hold"
        for _ in range(3):
            action, fb = g.predict(np.zeros(20))
            assert fb is None and np.array_equal(action, np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        check_action(np.zeros((2, 2)))


# ------------------------------------------------------------------ a session with faults


class _NanAfter:
    """The tuned PID for ``n`` decisions, then NaN actions."""

    def __init__(self, n: int) -> None:
        self.inner = make_controller("pid", SessionConfig().bounds(), "calm")[0]
        self.n, self.calls = n, 0

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        self.calls += 1
        if self.calls > self.n:
            return np.full(3, np.nan), None
        return self.inner.predict(obs, deterministic=deterministic)


class _BoomOutput:
    """An output that fails at its third phrase."""

    name = "boom"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def open(self, folder: Path) -> None:
        self.calls.append("open")

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        self.calls.append("phrase")
        if index == 2:
            raise ConnectionError("port went away")

    def state(self, t_sec: float, state: Any, knobs: Knobs) -> None:
        self.calls.append("state")

    def marker(self, t_sec: float, text: str) -> None:
        self.calls.append("marker")

    def close(self, reason: str) -> None:
        self.calls.append("close")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("faulty")
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=1.2, calibration_sec=3.0,
                        record=tmp, name="faulty", status_sec=2.0)
    lines: list[str] = []

    def on_status(s: SessionStatus) -> None:
        lines.append(s.line())

    boom = _BoomOutput()
    res = run_session(cfg, _NanAfter(2), "nan after 2", on_status, outputs=[boom])
    return {"res": res, "lines": lines, "boom": boom, "events": read_session(res.folder).events}


@pytest.mark.slow
def test_nan_controller_falls_back_and_the_session_writes_everything(faulty) -> None:
    res, events = faulty["res"], faulty["events"]
    falls = [e for e in events if e["kind"] == "controller_fallback"]
    assert len(falls) == 1 and "not finite" in falls[0]["payload"]["error"]
    assert falls[0]["payload"]["now"].startswith("fallback PID")
    decisions = [e["payload"] for e in events if e["kind"] == "decision"]
    assert [d["controller"] for d in decisions[:3]] == ["nan after 2", "nan after 2",
                                                        falls[0]["payload"]["now"]]
    assert "controller failed" in decisions[2]["reasons"][0]
    assert len(decisions) >= 5  # the music went on, decided by the fallback
    after = [d["knobs"] for d in decisions[3:]]
    assert all(np.isfinite(k).all() for k in after)
    assert len({tuple(k) for k in after}) > 1  # the PID moves the knobs; not a frozen hold
    assert any("FALLBACK" in line for line in faulty["lines"])
    s = res.summary
    assert s["controller_fallbacks"][0]["failed"] == "nan after 2"
    assert res.score_path.is_file() and res.report_path is not None
    report = res.report_path.read_text()
    assert "nan after 2 failed" in report and "not finite" in report
    sr, audio = wavfile.read(res.wav_path)
    assert abs(audio.shape[0] / sr - s["music_sec"]) < 1e-3  # the WAV is the whole music
    assert np.abs(audio).max() > 1000


@pytest.mark.slow
def test_an_output_that_raises_is_dropped_and_recorded(faulty) -> None:
    res, events, boom = faulty["res"], faulty["events"], faulty["boom"]
    failed = [e["payload"] for e in events if e["kind"] == "output_failed"]
    assert len(failed) == 1
    assert failed[0]["output"] == "boom" and failed[0]["during"] == "phrase"
    assert "ConnectionError: port went away" in failed[0]["error"]
    assert boom.calls.count("phrase") == 3 and boom.calls[-1] == "close"
    assert boom.calls.count("close") == 1
    assert res.summary["output_failures"][0]["name"] == "boom"
    assert res.summary["phrases"] > 3 and res.summary["wav_streamed"]
    assert "boom during phrase" in res.report_path.read_text()
    assert json.loads((res.folder / "summary.json").read_text())["output_failures"]


# ------------------------------------------------------------------ refused before creating


def test_bad_start_knobs_are_refused_before_any_folder_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from st_agent.cli import main

    record = tmp_path / "sessions"
    for bad in (["0.5", "1.5", "0.5"], ["nan", "0.5", "0.5"]):
        assert main(["session", "--board", "virtual", "--record", str(record), "--name", "x",
                     "--start-knobs", *bad]) == 2
        assert "--start-knobs" in capsys.readouterr().err
        assert not record.exists()
    cfg = SessionConfig(board="virtual", record=record, name="x")
    cfg.start_knobs = (0.5, -0.1, 0.5)  # changed after it was built
    with pytest.raises(ValueError, match="--start-knobs"):
        LiveSession(cfg, _Pid())
    assert not record.exists()


@pytest.mark.parametrize("field, value, match", [
    ("name", "../escape", "--name must be a plain folder name"),
    ("name", "a/b", "--name must be a plain folder name"),
    ("seed", -1, "--seed must be an int >= 0"),
    ("soundfont", Path("no-such.sf2"), "--soundfont no-such.sf2 is not a file"),
    ("play", "yes", "play must be True or False"),
])
def test_other_bad_settings_are_refused_before_any_folder_exists(
        tmp_path: Path, field: str, value: Any, match: str) -> None:
    record = tmp_path / "sessions"
    with pytest.raises(ValueError, match=match):
        SessionConfig(board="virtual", record=record, **{field: value})
    assert not record.exists()


def test_key_file_inside_the_session_folder_is_refused(tmp_path: Path) -> None:
    cfg = SessionConfig(board="virtual", record=tmp_path, name="s",
                        key_file=tmp_path / "s" / "key")
    with pytest.raises(ValueError, match="inside the session folder"):
        session_folder(cfg)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_start_that_fails_before_recording_leaves_no_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=0.2, calibration_sec=1.0,
                        record=tmp_path, name="again")

    def fail(self: LiveSession, parts: Any, first: Any) -> None:
        raise RuntimeError("the loop could not start")

    monkeypatch.setattr(LiveSession, "_loop", fail)
    with pytest.raises(RuntimeError, match="could not start"):
        run_session(cfg, _Pid(), "pid")
    assert not (tmp_path / "again").exists()
    assert session_folder(cfg) == tmp_path / "again"  # a rerun with the same --name starts
