"""The `st-agent` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
from scipy.io import wavfile

from st_agent.music.abc import check_abc

ST_AGENT = [sys.executable, "-m", "st_agent"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ST_AGENT, *args], capture_output=True, text=True, timeout=300)


def test_generate_writes_abc_midi_wav_and_prints_features(tmp_path: Path):
    out = tmp_path / "calm"
    r = run("generate", "--valence", "0.2", "--tempo", "0.3", "--energy", "0.1",
            "--bars", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "83.0 BPM" in r.stdout and "minor" in r.stdout
    abc = (out / "piece.abc").read_text()
    assert check_abc(abc).ok and "Q:1/4=83" in abc
    pm = pretty_midi.PrettyMIDI(str(out / "piece.mid"))
    assert {i.name for i in pm.instruments} >= {"melody", "bass", "chords"}
    rate, wav = wavfile.read(out / "piece.wav")
    expected_sec = 8 * 4 * 60 / 83
    assert abs(len(wav) / rate - expected_sec) / expected_sec < 0.05
    assert np.sqrt(np.mean((wav.astype(float) / 32768) ** 2)) > 1e-3
    feats = json.loads((out / "features.json").read_text())
    assert abs(feats["features"]["bpm"] - 83.0) < 0.01 and feats["bars"] == 8


def test_generate_rejects_bad_knob_without_traceback(tmp_path: Path):
    r = run("generate", "--energy", "1.5", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "energy must be in [0, 1], got 1.5" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_generate_missing_soundfont_and_bad_bars(tmp_path: Path):
    r = run("generate", "--soundfont", str(tmp_path / "none.sf2"), "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "none.sf2" in r.stderr
    r = run("generate", "--bars", "6", "--out", str(tmp_path / "z"))
    assert r.returncode == 2 and "multiple of 4" in r.stderr


def test_help_lists_commands_and_settings():
    r = run("--help")
    assert r.returncode == 0 and "generate" in r.stdout and "train-generator" in r.stdout
    r = run("generate", "--help")
    assert "--valence" in r.stdout and "Valence knob" in r.stdout


def test_train_generator_tiny_run(tmp_path: Path):
    import shutil

    from st_agent.tokenizer.corpus import music21_abc_files

    abc_dir = tmp_path / "abc"
    abc_dir.mkdir()
    for f in [f for f in music21_abc_files() if f.stat().st_size < 8000][:60]:
        shutil.copy(f, abc_dir / f.name)  # a small corpus of one's own keeps the run short
    r = run("train-generator", "--name", "tiny", "--runs-dir", str(tmp_path / "runs"),
            "--no-music21", "--extra-abc-dirs", str(abc_dir),
            "--max-steps", "2", "--eval-every", "1", "--eval-batches", "1", "--batch-size", "2",
            "--block-size", "32", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
            "--vocab-size", "300")
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "runs" / "tiny"
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 2
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    from st_agent.music.generator import load_generator

    bundle = load_generator(run_dir)
    assert bundle.model.config.n_layer == 1 and len(bundle.tokenizer) == 300
    from transformers import AutoTokenizer  # the checkpoint's tokenizer, not GPT-2's fallback

    auto = AutoTokenizer.from_pretrained(str(run_dir / "checkpoint"))
    assert (auto.bos_token, len(auto), auto.model_max_length) == ("<|bos|>", 300, 64)


def _tiny_session(folder: Path) -> Path:
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
    from st_agent.types import SignalChunk

    consent = ConsentRecord(text_version="test-1", scopes=("record", "store_local", "export"))
    rng = np.random.default_rng(0)
    chunk = SignalChunk(rng.normal(0, 1e-5, (2, 500)), 250.0, ("Fz", "Cz"), ("eeg", "eeg"))
    meta = SessionMeta(sfreq=250.0, ch_names=("Fz", "Cz"), ch_types=("eeg", "eeg"),
                       consent=consent)
    with SessionRecorder(folder, meta) as rec:
        rec.write_chunk(chunk)
        rec.write_marker("start", t_sec=0.5)
    return folder


def test_export_fit_listener_and_delete_commands(tmp_path: Path):
    session = _tiny_session(tmp_path / "session")
    r = run("export", str(session), "--format", "edf", "--out", str(tmp_path / "edf"))
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "edf").glob("*.edf"))
    # a session without music cannot be fitted: the message says what is missing
    r = run("fit-listener", str(session), "-o", str(tmp_path / "listener.json"))
    assert r.returncode == 2 and "st-agent fit-listener: error:" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "listener.json").exists()
    r = run("delete", str(session), "--dry-run")
    assert r.returncode == 0 and "would remove" in r.stdout and session.exists()
    r = run("delete", str(session))
    assert r.returncode == 0 and not (session / "samples.seg").exists()
    r = run("delete", str(tmp_path / "edf"))
    assert r.returncode == 3 and "not a session" in r.stderr  # a data error (errors.py)


def test_train_generator_without_any_corpus_is_refused_before_anything_is_written(tmp_path):
    r = run("train-generator", "--no-music21", "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    words = " ".join(r.stderr.replace("│", " ").split())  # tyro frames the message
    assert "--no-music21 leaves no tunes to train on" in words
    assert not (tmp_path / "runs").exists()
