"""The live session, the demo and the report, run end to end on real parts."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import music21
import numpy as np
import pretty_midi
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.contract import SafetyBounds
from st_agent.live.common import Playing
from st_agent.live.report import write_report
from st_agent.live.session import DemoConfig, SessionConfig, explain_change, run_session
from st_agent.live.session_midi import SPOOL_NAME, MidiPhrase
from st_agent.music.abc import check_many
from st_agent.policies.controllers import make_controller
from st_agent.types import Knobs, Phrase

REPO = Path(__file__).resolve().parents[1]


def _run(cfg: SessionConfig):
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target,
                                       Knobs(*cfg.knobs) if cfg.knobs else None, cfg.seed)
    return run_session(cfg, controller, name)


def _phrase_knobs(folder: Path) -> np.ndarray:
    ev = read_session(folder).events
    return np.array([e["payload"]["knobs"] for e in ev if e["kind"] == "phrase_start"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(minutes=1.5, calibration_sec=10.0, out=out, name="demo")
    return _run(cfg.session_config())


@pytest.mark.slow
def test_demo_writes_every_artifact(demo) -> None:
    folder = demo.folder
    for name in ("session.wav", "score.abc", "report.html", "summary.json", "session.json",
                 "state.png", "knobs.png", "bands.png", "heart.png"):
        assert (folder / name).is_file(), name
    s = demo.summary
    assert s["phrases"] >= 8
    assert s["music_sec"] >= 90.0
    assert s["metrics"]["decisions"] == s["phrases"] - 1


@pytest.mark.slow
def test_demo_wav_matches_the_session_and_is_not_silent(demo) -> None:
    sr, audio = wavfile.read(demo.wav_path)
    assert audio.ndim == 2 and audio.shape[1] == 2 and sr == 44100  # the session sound
    assert abs(audio.shape[0] / sr - demo.summary["music_sec"]) < 1.0 / sr + 1e-6
    x = audio.astype(float) / 32767
    assert np.sqrt(np.mean(x ** 2)) > 0.02
    # the stop fades out: the last 0.1 s is far quieter than the session
    tail = x[-int(0.1 * sr):]
    assert np.abs(tail).max() < 0.1 * np.abs(x).max()


@pytest.mark.slow
def test_a_session_keeps_no_phrase_in_memory_once_it_is_on_disk(tmp_path: Path) -> None:
    """Hours of phrases must not pile up (benchmarks/bench_session_rss.py): the score,
    the MIDI spool and the WAV take each phrase as it starts, and the loop keeps only
    the phrase playing and the one being composed."""
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=4.0, calibration_sec=10.0,
                        record=tmp_path, name="flat", status_sec=20.0, report=False)
    kinds = (Phrase, Playing, MidiPhrase)
    alive: list[tuple[int, int]] = []

    def on_status(s) -> None:
        if s.phase == "music":  # type(), not isinstance: no proxy's __class__ is asked
            alive.append((s.phrases, sum(type(o) in kinds for o in gc.get_objects())))

    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    res = run_session(cfg, controller, name, on_status)
    assert res.summary["phrases"] >= 15 and alive[-1][0] >= 15
    assert max(n for _, n in alive) <= 4, alive  # not one per phrase played
    text = res.score_path.read_text()
    assert text.count("% phrase ") == res.summary["phrases"]
    pm = pretty_midi.PrettyMIDI(str(res.folder / "session.mid"))
    assert pm.get_end_time() == pytest.approx(res.summary["music_sec"], abs=2.0)
    assert not (res.folder / SPOOL_NAME).exists()  # session.mid has it all


@pytest.mark.slow
def test_demo_score_is_valid_abc_for_two_parsers(demo) -> None:
    text = demo.score_path.read_text()
    assert check_many([text])[0].ok
    score = music21.converter.parse(text, format="abc")
    notes = list(score.recurse().notes)
    assert len(notes) > 10 * demo.summary["phrases"]


@pytest.mark.slow
def test_demo_report_has_the_plots_and_the_reasons(demo) -> None:
    html = demo.report_path.read_text()
    assert html.count('src="data:image/png;base64,') == 5
    for alt in ("state", "knobs", "bands", "heart", "audio"):
        assert f'alt="{alt}"' in html
    assert "mean distance to target, last half" in html
    assert "arousal" in html and "target" in html
    # every decision's reasons are in the recording and in the report
    ev = read_session(demo.folder).events
    reasons = [r for e in ev if e["kind"] == "decision" for r in e["payload"]["reasons"]]
    assert reasons and all(r.split(":")[0] in html for r in reasons[:5])


@pytest.mark.slow
def test_demo_recording_is_readable_and_consistent(demo) -> None:
    sess = read_session(demo.folder)
    assert sess.raw is not None and sess.raw.n_times > 100 * 250
    kinds = {e["kind"] for e in sess.events}
    assert {"state", "knobs", "phrase", "decision", "phrase_start", "marker"} <= kinds
    # a second report from the recording alone gives the same page
    again = write_report(demo.folder)
    assert again.read_text().count("<img") == 5


@pytest.mark.slow
def test_bounds_and_rate_limit_hold_whatever_the_policy_does(tmp_path: Path) -> None:
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=1.5, calibration_sec=5,
                        policy="random", record=tmp_path, name="bounds", seed=3,
                        tempo_range=(0.2, 0.4), energy_range=(0.1, 0.3), max_delta=0.1,
                        report=False)
    _run(cfg)
    k = _phrase_knobs(tmp_path / "bounds")
    assert len(k) >= 6
    assert np.all(k[:, 1] >= 0.2 - 1e-9) and np.all(k[:, 1] <= 0.4 + 1e-9)
    assert np.all(k[:, 2] >= 0.1 - 1e-9) and np.all(k[:, 2] <= 0.3 + 1e-9)
    assert np.abs(np.diff(k, axis=0)).max() <= 0.1 + 1e-9


@pytest.mark.slow
def test_manual_override_reaches_its_knobs_at_the_rate_limit(tmp_path: Path) -> None:
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=1.0, calibration_sec=5,
                        knobs=(0.1, 0.9, 0.2), record=tmp_path, name="override", report=False)
    _run(cfg)
    k = _phrase_knobs(tmp_path / "override")
    assert np.allclose(k[0], 0.5)
    assert np.allclose(k[-1], (0.1, 0.9, 0.2))
    assert np.abs(np.diff(k, axis=0)).max() <= 0.25 + 1e-9


@pytest.mark.slow
def test_board_outage_is_detected_recorded_and_reconnected(tmp_path: Path) -> None:
    """The synthetic board, really stopped for 5 s in the middle of a real-time session."""
    cfg = SessionConfig(board="synthetic", minutes=0.5, calibration_sec=3.0, record=tmp_path,
                        name="outage", inject_dropout=(12.0, 5.0), report=False)
    res = _run(cfg)
    detect = res.summary["signal_lost_detect_sec"]
    assert len(detect) == 1 and detect[0] <= 2.0
    sess = read_session(res.folder)
    kinds = [e["kind"] for e in sess.events]
    assert "signal_lost" in kinds and "signal_restored" in kinds and "reconnect" in kinds
    gaps = [a for a in sess.raw.annotations if a["description"] == "BAD_gap"]
    assert len(gaps) == 1 and 4.0 <= gaps[0]["duration"] <= 7.0
    # the music went on: phrases cover the whole session, none was late
    assert res.summary["music_sec"] >= 30.0
    assert res.summary["lead_time_sec"]["min"] > 0
    held = [e for e in sess.events if e["kind"] == "decision"
            and e["payload"]["signal"] == "lost"]
    for e in held:
        assert e["payload"]["reasons"] == ["knobs hold: signal lost"]


@pytest.mark.slow
def test_sigint_mid_session_leaves_a_readable_recording_and_a_report(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "st_agent", "session", "--board", "virtual", "--minutes", "5",
           "--calibration-sec", "3", "--record", str(tmp_path), "--name", "sigint"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    folder = tmp_path / "sigint"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the music has started
        events = folder / "events.jsonl"  # the recorder creates the folder, then this file
        if events.is_file() and b"phrase_start" in events.read_bytes():
            break
        time.sleep(0.5)
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "report" in out
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stop_reason"] == "Ctrl-C" and summary["stopped"]
    assert (folder / "report.html").is_file()
    sess = read_session(folder)
    assert sess.dropped.closed_cleanly and sess.dropped.dropped_samples == 0
    assert sess.raw.n_times > 5 * 250
    end = [e for e in sess.events if e["kind"] == "marker"
           and e["payload"]["label"] == "session_end"]
    assert end and end[0]["payload"]["reason"] == "Ctrl-C"
    sr, audio = wavfile.read(folder / "session.wav")
    assert 0 < audio.shape[0] / sr < 60.0  # stopped early, not the 5 minutes asked for


def test_explanations_name_the_state_and_target() -> None:
    words = explain_change(Knobs(0.5, 0.55, 0.5), Knobs(0.6, 0.43, 0.5), (0.1, 0.62),
                           (0.2, -0.5))
    # without what the controller used (info=None), the reason says so (issue 16)
    assert words == ["valence up (0.50→0.60): the controller's choice (it exposes no reason); "
                     "valence +0.10 below target +0.20; the move goes toward it",
                     "tempo down (0.55→0.43): the controller's choice (it exposes no reason); "
                     "arousal +0.62 above target -0.50; the move goes toward it"]
    assert explain_change(Knobs(0.5, 0.5, 0.5), Knobs(0.5, 0.5, 0.5), None, (0, 0)) == []
    assert "no usable estimate" in explain_change(Knobs(0.5, 0.5, 0.5), Knobs(0.5, 0.6, 0.5),
                                                  None, (0, 0))[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "st_agent", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_unknown_board_says_how_to_list_boards(tmp_path: Path) -> None:
    r = _cli("session", "--board", "not-a-board", "--record", str(tmp_path))
    assert r.returncode == 2
    assert "unknown board 'not-a-board'" in r.stderr and "st-agent boards" in r.stderr


def test_board_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    r = _cli("session", "--board", "cyton", "--serial-port", "/dev/ttyNOPE", "--record",
             str(tmp_path))
    assert r.returncode == 4  # a device error (st_agent.errors.EXIT_DEVICE)
    assert "cannot open board 'cyton'" in r.stderr and "/dev/ttyNOPE" in r.stderr
    assert "st-agent boards" in r.stderr


def test_boards_command_lists_synthetic() -> None:
    r = _cli("boards")
    assert r.returncode == 0 and "synthetic" in r.stdout and "cyton" in r.stdout


def test_unwritable_record_folder_is_refused_before_starting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _cli("session", "--board", "virtual", "--record", str(blocker / "sessions"))
    assert r.returncode == 2 and "cannot record into" in r.stderr
    assert "Loading weights" not in r.stderr  # refused before the composer was loaded


def test_policy_that_does_not_validate_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "policy"
    bad.mkdir()
    (bad / "policy.json").write_text('{"format": "something else"}')
    (bad / "policy.safetensors").write_bytes(b"not safetensors")
    bounds = SafetyBounds()
    with pytest.raises(ValueError):
        make_controller(str(bad), bounds)
    with pytest.raises(ValueError, match=r"unknown policy 'nope'.*pid"):
        make_controller("nope", bounds)


@pytest.mark.slow
def test_play_without_audio_device_falls_back_to_the_wav(tmp_path: Path) -> None:
    r = _cli("session", "--board", "virtual", "--accelerated", "--minutes", "0.3",
             "--calibration-sec", "3", "--play", "--record", str(tmp_path), "--name", "p",
             "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    # a machine with sound plays; one without (CI) says so and goes on
    assert ("live playback on FluidSynth driver" in r.stderr) != \
        ("Falling back to the WAV only" in r.stderr)
    assert (tmp_path / "p" / "session.wav").is_file()


def _one_line(text: str) -> str:
    """The CLI's error text without the box tyro draws around it and its line breaks."""
    return " ".join(text.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


@pytest.mark.parametrize("args, match", [
    (["--target", "sleepy"], "unknown target preset 'sleepy'"),
    (["--tempo-range", "0.6", "0.2"], "tempo bounds must satisfy"),
    (["--board", "synthetic", "--accelerated"], "--accelerated needs --board virtual"),
    (["--minutes", "0"], "minutes must be a positive number"),
    (["--knobs", "1.5", "0.5", "0.5"], "--knobs takes three knobs"),
    (["--start-knobs", "0.5", "-0.1", "0.5"], "--start-knobs takes three knobs"),
    (["--max-delta", "0"], "max_delta must be in (0, 1]"),
    (["--calibration-sec", "-1"], "calibration_sec must be a number of seconds >= 0"),
    (["--min-confidence", "2"], "min_confidence must be a number in [0, 1]"),
    (["--status-sec", "0"], "status_sec must be a number of seconds > 0"),
    (["--board", "virtual", "--accelerated", "--inject-dropout", "5", "2"],
     "--inject-dropout needs a real-time session"),
    (["--inject-dropout", "5", "0"], "--inject-dropout needs start_sec >= 0 and duration_sec > 0"),
    (["--board", "virtual", "--listener", "no-such-listener.json"],
     "--listener no-such-listener.json does not exist"),
    (["--board", "synthetic", "--listener", "listener.json"], "needs --board virtual"),
])
def test_bad_session_settings_are_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        args: list[str], match: str) -> None:
    """In process, through the command line's entry point: refused before anything loads
    or is created."""
    from st_agent.cli import main

    record = tmp_path / "sessions"
    assert main(["session", "--record", str(record), *args]) == 2
    assert match in _one_line(capsys.readouterr().err)
    assert not record.exists()


def test_live_configs_import_without_heavy_libraries() -> None:
    """``st-agent session|demo|jam|report --help`` read these modules' configs."""
    code = ("import sys, st_agent.live.session, st_agent.live.jam, st_agent.live.report; "
            "print([m for m in ('torch', 'mne', 'brainflow', 'transformers', "
            "'stable_baselines3') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("args, match", [
    (["--target", "sleepy"], "unknown target preset 'sleepy'"),
    (["--minutes", "-1"], "minutes must be a positive number"),
    (["--calibration-sec", "-5"], "calibration_sec must be a number of seconds >= 0"),
])
def test_bad_demo_settings_are_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                     args: list[str], match: str) -> None:
    from st_agent.cli import main

    out = tmp_path / "runs"
    assert main(["demo", "--out", str(out), *args]) == 2
    assert match in _one_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_session_simulates_a_fitted_listener(tmp_path: Path) -> None:
    from st_agent.listener.fitting import FORMAT
    from st_agent.listener.model import ListenerParams

    params = ListenerParams(baseline_valence=0.4, baseline_arousal=-0.3)
    path = tmp_path / "listener.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "params": params.as_dict()}))
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=0.5, calibration_sec=5,
                        listener=path, record=tmp_path, name="personal", report=False)
    res = _run(cfg)
    start = next(e for e in read_session(res.folder).events if e["kind"] == "marker"
             and e["payload"]["label"] == "session_start")
    assert start["payload"]["config"]["listener"] == str(path)
    assert res.summary["phrases"] >= 3
    path.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an st-agent-listener"):
        _run(SessionConfig(board="virtual", accelerated=True, listener=path, record=tmp_path,
                           name="bad"))


@pytest.mark.slow
def test_cli_demo_records_its_consent_and_exports_to_edf(tmp_path: Path) -> None:
    """A session recorded by the command line exports by the command line (issue 16)."""
    import mne

    from st_agent.cli import main

    out = tmp_path / "runs"
    assert main(["demo", "--minutes", "0.5", "--calibration-sec", "5", "--out", str(out),
                 "--name", "plain"]) == 0
    folder = out / "plain"
    sess = read_session(folder)
    assert sess.meta.consent.scopes == ("record", "store_local", "export")
    assert main(["export", str(folder), "--format", "edf"]) == 0
    edf = sorted((folder / "export" / "edf").glob("*.edf"))
    assert len(edf) == 1
    raw = mne.io.read_raw_edf(edf[0], preload=True, infer_types=True, verbose="error")
    assert raw.ch_names == sess.raw.ch_names
    assert abs(raw.n_times / raw.info["sfreq"] - sess.raw.n_times / sess.raw.info["sfreq"]) < 1.0


@pytest.mark.slow
def test_cli_encrypted_demo_writes_its_report_and_export_needs_consent(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--key-file``: the report is written with the key; a session recorded without
    consent to export is refused with the reason and the fix."""
    from st_agent.biometrics.recording import EncryptionKeyError
    from st_agent.cli import main

    key = tmp_path / "keys" / "demo.key"
    out = tmp_path / "runs"
    assert main(["demo", "--minutes", "0.5", "--calibration-sec", "5", "--out", str(out),
                 "--name", "enc", "--key-file", str(key), "--consent",
                 "record,store_local"]) == 0
    folder = out / "enc"
    # state, knobs, audio, bands, heart
    assert (folder / "report.html").read_text().count('src="data:image/png;base64,') == 5
    with pytest.raises(EncryptionKeyError):
        read_session(folder)
    sess = read_session(folder, key=key)
    assert sess.meta.encrypted and sess.meta.consent.scopes == ("record", "store_local")
    assert b"valence" not in (folder / "events.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "edf", "--key-file", str(key)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "'export'" in err and "--consent record,store_local,export" in err
    assert not (folder / "export").exists()


@pytest.mark.parametrize("consent, match", [
    ("record,sell", "unknown scope(s) ['sell']"),
    ("store_local,export", "does not include 'record'"),
])
def test_bad_consent_is_refused_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                consent: str, match: str) -> None:
    from st_agent.cli import main

    for cmd in (["session", "--record"], ["demo", "--out"], ["jam", "--record"]):
        where = tmp_path / cmd[0]
        assert main([*cmd, str(where), "--consent", consent]) == 2
        assert match in _one_line(capsys.readouterr().err)
        assert not where.exists()
