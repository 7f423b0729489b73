"""The CLI's errors: one line naming the file, the documented exit status, no traceback.

Through ``st_agent.cli.main`` in-process, and through the real ``st-agent`` entry
point for the two statuses a script sees most (2: usage, 3: data).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_file_hardening import edf_bytes  # a tiny EDF writer (tests/ is on sys.path)

import st_agent.commands
from st_agent import cli
from st_agent.cli import Command, main
from st_agent.errors import DataError, DeviceError, UsageError

ST_AGENT = Path(sys.executable).with_name("st-agent")


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def _assert_one_line(err: str, command: str, *needles: str) -> None:
    assert "Traceback" not in err
    (line,) = _error_lines(err)
    assert line.startswith(f"st-agent {command}: error: ")
    for needle in needles:
        assert needle in line


def _bad_edf(tmp_path: Path) -> Path:
    raw = bytearray(edf_bytes())
    raw[244:252] = b"99999999"  # record duration: a rate of 1e-6 Hz
    path = tmp_path / "slow.edf"
    path.write_bytes(bytes(raw))
    return path


def _tiny_session(folder: Path) -> Path:
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
    from st_agent.types import SignalChunk

    consent = ConsentRecord(text_version="test-1", scopes=("record", "store_local", "export"))
    chunk = SignalChunk(np.random.default_rng(0).normal(0, 1e-5, (2, 500)), 250.0,
                        ("Fz", "Cz"), ("eeg", "eeg"))
    meta = SessionMeta(sfreq=250.0, ch_names=("Fz", "Cz"), ch_types=("eeg", "eeg"),
                       consent=consent)
    with SessionRecorder(folder, meta) as rec:
        rec.write_chunk(chunk)
    return folder


# ------------------------------------------------------------------ in-process


@pytest.mark.parametrize("exc, code", [
    (DataError("policy.json: history_len 1000000000 is out of range [1, 64]"), 3),
    (UsageError("--knobs must be three numbers in [0, 1]"), 2),
    (DeviceError("board 'cyton' is not answering on /dev/ttyUSB0"), 4),
    (ValueError("an untyped error\nfrom an older module"), 2),
    (OSError(errno.EISDIR, "Is a directory", "/data/x.json"), 2),
])
def test_user_errors_are_one_line_with_their_status(monkeypatch, capsys, exc, code):
    def boom(cfg):
        raise exc

    monkeypatch.setattr(st_agent.commands, "run_boards", boom)
    assert main(["boards"]) == code
    err = capsys.readouterr().err
    first = str(exc).splitlines()[0] if not isinstance(exc, OSError) else "/data/x.json"
    _assert_one_line(err, "boards", first)


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(cfg):
        raise KeyError("internal")

    monkeypatch.setattr(st_agent.commands, "run_boards", bug)
    with pytest.raises(KeyError):
        main(["boards"])


def test_corrupt_recording_board_is_a_data_error_before_anything_starts(tmp_path, capsys):
    bad = _bad_edf(tmp_path)
    record = tmp_path / "rec"
    assert main(["session", "--board", f"file:{bad}", "--record", str(record),
                 "--name", "s", "--minutes", "0.1"]) == 3
    _assert_one_line(capsys.readouterr().err, "session", "slow.edf",
                     "record duration 1e+08 s")
    assert not (record / "s").exists()


def test_recording_board_that_is_a_folder(tmp_path, capsys):
    assert main(["session", "--board", f"file:{tmp_path}", "--record", str(tmp_path / "r"),
                 "--minutes", "0.1"]) == 3
    _assert_one_line(capsys.readouterr().err, "session", f"{tmp_path} is a folder")


def test_key_file_that_is_a_device_is_refused_before_the_session(tmp_path, capsys):
    os.symlink("/dev/zero", tmp_path / "zero.key")
    record = tmp_path / "rec"
    assert main(["session", "--board", "virtual", "--record", str(record), "--name", "s",
                 "--minutes", "0.1", "--key-file", str(tmp_path / "zero.key")]) == 3
    _assert_one_line(capsys.readouterr().err, "session", "zero.key is not a regular file")
    assert not (record / "s").exists()


def test_key_file_that_is_a_folder_or_missing_when_reading(tmp_path, capsys):
    session = _tiny_session(tmp_path / "session")
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["export", str(session), "--format", "edf", "--out", str(tmp_path / "e"),
                 "--key-file", str(keys)]) == 3
    _assert_one_line(capsys.readouterr().err, "export", f"key file {keys} is a folder",
                     "expected a key file")
    missing = tmp_path / "gone.key"
    assert main(["export", str(session), "--format", "edf", "--out", str(tmp_path / "e"),
                 "--key-file", str(missing)]) == 3
    _assert_one_line(capsys.readouterr().err, "export", f"key file {missing} does not exist")


def test_help_documents_the_exit_statuses(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "3    data:" in out and "4    device:" in out


# ------------------------------------------------------------------ the real entry point


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ST_AGENT), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_entry_point_data_error_exits_3_in_one_line(tmp_path):
    bad = _bad_edf(tmp_path)
    r = _run("session", "--board", f"file:{bad}", "--record", str(tmp_path / "rec"),
             "--minutes", "0.1")
    assert r.returncode == 3, r.stderr
    _assert_one_line(r.stderr, "session", str(bad))


def test_entry_point_usage_error_exits_2_in_one_line(tmp_path):
    r = _run("session", "--board", "no_such_board", "--record", str(tmp_path / "rec"),
             "--minutes", "0.1")
    assert r.returncode == 2, r.stderr
    _assert_one_line(r.stderr, "session", "unknown board 'no_such_board'")


@dataclass
class FileConfig:
    """A config that validates the file it is given, as configs do in __post_init__."""

    path: Path = Path("x.json")

    def __post_init__(self) -> None:
        raise DataError(f"{self.path}: not a listener file")


def test_typed_error_in_config_validation_keeps_its_status(monkeypatch, capsys):
    monkeypatch.setitem(cli._BY_NAME, "boards", Command(
        "boards", "test_cli_errors:FileConfig", "st_agent.commands:run_boards", "test"))
    assert main(["boards", "--path", "bad.json"]) == 3
    assert "bad.json: not a listener file" in capsys.readouterr().err
