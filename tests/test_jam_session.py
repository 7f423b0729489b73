"""The live jam (``st-agent jam``), end to end on real parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import music21
import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.live.jam import JamConfig, blend_features, run_jam
from st_agent.music.abc import check_many
from st_agent.policies.controllers import make_jam_controller

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "st_agent", "jam", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_virtual_jam_with_opposite_targets_writes_everything(tmp_path: Path) -> None:
    cfg = JamConfig(boards="virtual,virtual,virtual", targets="calm,energize,focus",
                    minutes=1.0, calibration_sec=5.0, accelerated=True, record=tmp_path,
                    name="jam", policy="pid")
    choice = make_jam_controller(cfg.policy, 3)
    res = run_jam(cfg, choice.act, choice.name, history_len=choice.history_len)
    folder = res.folder
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
    assert 'alt="group" style="max-width:100%" src="data:image/png;base64,' in (
        folder / "report.html").read_text()
    s = json.loads((folder / "summary.json").read_text())
    assert s["performers"] == 3 and s["phrases"] >= 5
    assert s["clashes_per_bar"] is not None and s["group_distance_last_half"] is not None
    sr, audio = wavfile.read(res.wav_path)
    assert audio.ndim == 2 and abs(audio.shape[0] / sr - s["music_sec"]) < 1e-3  # stereo
    assert np.sqrt(np.mean((audio / 32767.0) ** 2)) > 0.02
    for i, pf in enumerate(res.performer_folders):
        sess = read_session(pf)
        assert sess.raw is not None and sess.raw.n_times > 30 * 250
        starts = [e for e in sess.events if e["kind"] == "phrase_start"]
        assert len(starts) == s["phrases"]
        knobs = np.array([e["payload"]["knobs"] for e in starts])
        assert np.all((knobs >= 0) & (knobs <= 1))
        assert np.abs(np.diff(knobs, axis=0)).max() <= 0.25 + 1e-9
        # one key and tempo for everybody in each phrase
        assert {e["payload"]["tempo"] for e in starts} == {
            e["payload"]["tempo"] for e in read_session(res.performer_folders[0]).events
            if e["kind"] == "phrase_start"}
        assert (pf / "report.html").read_text().count("<img") == 4
        assert f"performer_{i}/report.html" in (folder / "report.html").read_text()
    # the score: one multi-voice tune per phrase, each valid for abc2midi and music21
    tunes = ["X:" + t for t in (folder / "score.abc").read_text().split("X:")[1:]]
    assert len(tunes) == s["phrases"]
    assert all(r.ok for r in check_many(tunes))
    parsed = music21.converter.parse(tunes[0], format="abc")
    assert len(parsed.parts) == 3


@pytest.mark.slow
def test_live_jam_on_synthetic_boards_survives_one_stream_dropping_out(tmp_path: Path) -> None:
    r = _cli("--boards", "synthetic,synthetic", "--minutes", "0.4", "--calibration-sec", "3",
             "--policy", "jam3", "--record", str(tmp_path), "--name", "live",
             "--inject-dropout", "1", "12", "5", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "live"
    assert "jam written to" in r.stdout
    lost = {}
    for i in (0, 1):
        sess = read_session(folder / f"performer_{i}")
        lost[i] = [e for e in sess.events if e["kind"] == "signal_lost"]
        gaps = [a for a in sess.raw.annotations if a["description"] == "BAD_gap"]
        if i == 1:
            assert lost[1] and len(gaps) == 1 and gaps[0]["duration"] >= 4.0
        else:
            assert not lost[0] and not gaps  # the other performer went on untouched
    s = json.loads((folder / "summary.json").read_text())
    assert s["phrases"] >= 3 and s["music_sec"] >= 24.0  # the music did not stop


def test_blend_weights_own_voice() -> None:
    from st_agent.types import MusicFeatures

    def f(pitch: float, vel: float) -> MusicFeatures:
        return MusicFeatures(duration_sec=8.0, bpm=100.0, notes_per_sec=4.0, notes_per_beat=2.4,
                             mode="major", mode_confidence=0.9, key="A", mean_pitch=pitch,
                             pitch_range=12.0, mean_velocity=vel, n_notes=32)

    b = blend_features(f(80.0, 100.0), f(60.0, 50.0), 0.6)
    assert b.mean_pitch == pytest.approx(72.0) and b.mean_velocity == pytest.approx(80.0)
    assert b.bpm == 100.0


def _one_line(text: str) -> str:
    """The CLI's error text without the box tyro draws around it and its line breaks."""
    return " ".join(text.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


@pytest.mark.parametrize("args, match", [
    (["--boards", "synthetic"], "--boards names 1 board"),
    (["--boards", ",".join(["virtual"] * 9)], "--boards names 9 board"),
    (["--boards", "virtual,virtual,virtual", "--targets", "calm,focus"],
     "--targets names 2 targets but --boards names 3"),
    (["--boards", "virtual,virtual", "--targets", "calm,sleepy"],
     "unknown target preset 'sleepy'"),
    (["--boards", "virtual,virtual", "--inject-dropout", "2", "1", "1"],
     "--inject-dropout performer must be in [0, 1]"),
    (["--boards", "virtual,synthetic", "--accelerated"],
     "--accelerated needs every board to be 'virtual'"),
    (["--boards", "virtual,virtual", "--minutes", "0"], "minutes must be a positive number"),
    (["--boards", "virtual,virtual", "--own-weight", "1.5"],
     "own_weight must be a number in [0, 1]"),
    (["--boards", "virtual,virtual", "--max-delta", "2"], "max_delta must be in (0, 1]"),
])
def test_bad_jam_settings_are_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                    args: list[str], match: str) -> None:
    """In process, through the command line's entry point: refused before anything loads
    or is created."""
    from st_agent.cli import main

    record = tmp_path / "jams"
    assert main(["jam", "--record", str(record), *args]) == 2
    assert match in _one_line(capsys.readouterr().err)
    assert not record.exists()


def test_unknown_jam_policy_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from st_agent.cli import main

    assert main(["jam", "--record", str(tmp_path), "--boards", "virtual,virtual", "--policy",
                 "nope"]) == 2
    assert "unknown jam policy 'nope'" in _one_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # no jam folder


@pytest.mark.slow
def test_jam_recordings_are_encrypted_at_rest_with_a_key_file(tmp_path: Path) -> None:
    from st_agent.biometrics.recording import EncryptionKeyError

    key = tmp_path / "keys" / "jam.key"
    cfg = JamConfig(boards="virtual,virtual", minutes=0.4, calibration_sec=4.0,
                    accelerated=True, record=tmp_path / "jams", name="enc", key_file=key,
                    report=False, consent="record,store_local,export")
    choice = make_jam_controller("pid", 2)
    res = run_jam(cfg, choice.act, choice.name)
    for pf in res.performer_folders:
        meta = read_session(pf, key=key).meta
        assert meta.encrypted and meta.consent.scopes == ("record", "store_local", "export")
        assert b"valence" not in (pf / "events.jsonl").read_bytes()
        with pytest.raises(EncryptionKeyError):
            read_session(pf)
