"""Recorded files a user hands FileSource: corrupt headers, counters and bytes (issue 22).

Each test is the regression test of one reproducer: a corrupt file gives a typed
error naming the file and what is wrong, or plays without fabricated samples.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.brainflow_source import PackageCounter, check_counter
from st_agent.biometrics.crypto import create_key_file, load_key_file
from st_agent.biometrics.file_source import MAX_CHANNELS, check_recording_shape
from st_agent.biometrics.session_meta import EncryptionKeyError
from st_agent.biometrics.sources import (
    BoardError,
    CorruptFileError,
    FileFormatError,
    FileSource,
    MissingFileError,
    MissingParameterError,
    SourceError,
    StreamNotFoundError,
    UnknownBoardError,
    load_brainflow,
)
from st_agent.errors import EXIT_DATA, EXIT_DEVICE, EXIT_USAGE, DataError, DeviceError, UsageError


def edf_bytes(n_signals: int = 2, n_records: int = 4, duration: str = "1", spr: int = 100,
              seed: int = 0) -> bytes:
    """A small valid EDF file: ``n_signals`` EEG signals, ``spr`` samples per record."""
    def field(value: object, width: int) -> bytes:
        return str(value).ljust(width)[:width].encode("ascii")

    head = (field("0", 8) + field("X X X X", 80) + field("Startdate 01-JAN-2020 X X X", 80)
            + field("01.01.20", 8) + field("00.00.00", 8) + field(256 * (n_signals + 1), 8)
            + field("", 44) + field(n_records, 8) + field(duration, 8) + field(n_signals, 4))
    per_signal = [(16, lambda i: f"EEG C{i}"), (80, lambda i: ""), (8, lambda i: "uV"),
                  (8, lambda i: "-3276.8"), (8, lambda i: "3276.7"), (8, lambda i: "-32768"),
                  (8, lambda i: "32767"), (80, lambda i: ""), (8, lambda i: spr),
                  (32, lambda i: "")]
    for width, value in per_signal:
        head += b"".join(field(value(i), width) for i in range(n_signals))
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 1000, size=(n_records, n_signals, spr)).astype("<i2")
    return head + data.tobytes()


def _patched(tmp_path: Path, name: str, start: int, text: bytes) -> Path:
    raw = bytearray(edf_bytes())
    raw[start:start + len(text)] = text
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    return path


def _csv(tmp_path: Path, counter: np.ndarray | None = None, n: int = 2000,
         name: str = "rec.csv") -> Path:
    """A synthetic-board BrainFlow CSV of ``n`` rows with the given package counter."""
    load_brainflow()
    from brainflow.board_shim import BoardShim
    from brainflow.data_filter import DataFilter

    rng = np.random.default_rng(1)
    table = rng.normal(0, 10, size=(BoardShim.get_num_rows(-1), n))
    table[0] = np.arange(n) % 256 if counter is None else counter
    path = tmp_path / name
    DataFilter.write_file(np.ascontiguousarray(table), str(path), "w")
    return path


def _play(path: Path) -> tuple[int, list]:
    with FileSource(path, board="synthetic", chunk_sec=1.0) as src:
        n = sum(c.n_times for c in src.iter_chunks())
        return n, src.pop_events()


# ------------------------------------------------------------------ package counters


def test_nan_package_counter_fabricates_no_samples(tmp_path):
    counter = (np.arange(2000) % 256).astype(float)
    counter[::7] = np.nan  # was read back as ~75,000 samples
    n, events = _play(_csv(tmp_path, counter))
    assert n == 2000
    assert not [e for e in events if e.kind == "dropped"]
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "286 package counter values" in warnings[0].detail
    assert warnings[0].n_missing == 0


@pytest.mark.parametrize("high", [1000, 256])
def test_garbage_package_counter_is_ignored_whole(tmp_path, high):
    counter = np.random.default_rng(2).integers(0, high, 2000).astype(float)
    n, events = _play(_csv(tmp_path, counter))
    assert n == 2000  # was up to 511,745
    (warning,) = [e for e in events if e.kind == "warning"]
    assert "package counter ignored" in warning.detail and "rec.csv" in warning.detail
    assert not [e for e in events if e.kind == "dropped"]


def test_one_corrupt_value_is_no_drop_but_a_real_drop_is_still_filled(tmp_path):
    counter = (np.r_[0:1000, 1007:2007] % 256).astype(float)  # 7 samples lost after 1000
    counter[300] = 77.0  # a corrupt value: the counting goes on around it
    n, events = _play(_csv(tmp_path, counter))
    assert n == 2007
    (dropped,) = [e for e in events if e.kind == "dropped"]
    assert dropped.n_missing == 7 and dropped.first_missing_sample == 1000
    (warning,) = [e for e in events if e.kind == "warning"]
    assert "0 package counter values are not integers" in warning.detail
    assert "1 do not fit the counting around them" in warning.detail


def test_fill_is_bounded_by_the_rows_of_the_file(tmp_path):
    # valid, mostly +1, but every 4th step jumps 200: more fill than rows is not plausible
    steps = np.where(np.arange(2000) % 5 == 4, 201, 1)
    counter = (np.cumsum(steps) % 256).astype(float)
    n, events = _play(_csv(tmp_path, counter))
    assert n == 2000
    assert any("at most 2000 are plausible" in e.detail for e in events if e.kind == "warning")


def test_check_counter_rules():
    c = check_counter(np.array([0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]), confirm=3)
    assert c.jumps == () and c.n_unconfirmed == 1  # a repeat is a duplicate, not 255 lost
    c = check_counter(np.array([0, 1, 5, 6, 7, 8, 9]), confirm=1)
    assert c.jumps == ((2, 3),) and c.n_missing == 3
    c = check_counter(np.array([0, 1, 2, 3.5, 4, -1, 6, 300]))
    assert c.n_invalid == 3 and c.jumps == ()
    c = check_counter(np.array([0, 1, 2, 3, 9, 5, 6, 7, 8, 200, 40, 41, 42, 43]), confirm=3)
    assert c.jumps == ((10, 30),) and c.n_unconfirmed == 2  # 9 and 200 are corrupt values
    assert check_counter(np.full(10, np.nan)).problem() is not None
    assert check_counter(np.arange(10.0)).problem() is None


def test_live_package_counter_ignores_nan_values():
    pc = PackageCounter()
    assert pc.split(np.array([0.0, 1.0, np.nan, 3.0, 4.0])) == []
    assert pc.last_check.n_invalid == 1
    assert pc.split(np.array([8.0, 9.0])) == [(0, 3)]  # 5, 6, 7 lost across the chunks
    pc.split(np.array([10.0, np.nan]))
    assert pc.last is None and pc.split(np.array([50.0])) == []


# ------------------------------------------------------------------ EDF headers


def test_valid_synthetic_edf_plays(tmp_path):
    path = tmp_path / "ok.edf"
    path.write_bytes(edf_bytes())
    src = FileSource(path)
    assert (src.sfreq, len(src.ch_names), src.n_times) == (100.0, 2, 400)


def test_absurd_record_duration_is_refused_naming_the_field(tmp_path):
    path = _patched(tmp_path, "slow.edf", 244, b"99999999")
    with pytest.raises(CorruptFileError, match=r"slow\.edf: EDF record duration 1e\+08 s"):
        FileSource(path)


def test_sampling_rate_outside_the_documented_range(tmp_path):
    path = _patched(tmp_path, "fast.edf", 244, b"0.000001")  # 100 samples per µs: 1e8 Hz
    with pytest.raises(CorruptFileError, match=r"fast\.edf: sampling rate 1e\+08 Hz|"
                                               r"fast\.edf: sampling rate 100000000"):
        FileSource(path)
    with pytest.raises(CorruptFileError, match="outside the supported 1-100000 Hz"):
        check_recording_shape(Path("x.fif"), 1e-6, 2, 10)
    with pytest.raises(CorruptFileError, match=f"a recording needs 1 to {MAX_CHANNELS}"):
        check_recording_shape(Path("x.fif"), 250.0, MAX_CHANNELS + 1, 10)
    with pytest.raises(CorruptFileError, match=r"not finite|outside"):
        check_recording_shape(Path("x.fif"), float("nan"), 2, 10)


@pytest.mark.parametrize("text, what", [(b"-1  ", "-1 signals"), (b"0   ", "0 signals"),
                                         (b"9999", "9999 signals"), (b"ab  ", "not a number")])
def test_number_of_signals_is_checked(tmp_path, text, what):
    path = _patched(tmp_path, "ns.edf", 252, text)
    with pytest.raises(CorruptFileError, match=rf"ns\.edf: .*{what}") as info:
        FileSource(path)
    # a typed data error that is still what it was for existing callers
    assert isinstance(info.value, DataError) and isinstance(info.value, RuntimeError)
    assert info.value.exit_code == EXIT_DATA


def test_truncated_synthetic_edf_is_refused_and_untouched(tmp_path):
    path = tmp_path / "cut.edf"
    path.write_bytes(edf_bytes()[:1500])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CorruptFileError, match=r"cut\.edf: truncated"):
        FileSource(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_bad_samples_per_record_and_digital_range(tmp_path):
    raw = bytearray(edf_bytes())
    raw[256 + 216 * 2:256 + 216 * 2 + 8] = b"0       "
    (tmp_path / "spr.edf").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"spr\.edf: signal 1 .* 0 samples per record"):
        FileSource(tmp_path / "spr.edf")
    raw = bytearray(edf_bytes())
    raw[256 + 120 * 2:256 + 120 * 2 + 8] = b"nan     "
    (tmp_path / "dmin.edf").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"dmin\.edf: .*digital minimum of signal 1"):
        FileSource(tmp_path / "dmin.edf")


def test_edf_whose_record_count_is_unknown_is_read_from_its_size(tmp_path):
    path = _patched(tmp_path, "rec.edf", 236, b"-1      ")
    assert FileSource(path).n_times == 400


# ------------------------------------------------------------------ other files


def test_non_utf8_csv_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("1\t2\n3\t4\xe9\n".encode("latin-1"))
    with pytest.raises(CorruptFileError, match=r"latin\.csv: line 2, byte 4 is 0xe9, not text"):
        FileSource(path, board="synthetic")


def test_unparsable_csv_number_names_the_file(tmp_path):
    load_brainflow()
    from brainflow.board_shim import BoardShim

    path = tmp_path / "words.csv"
    path.write_text("\t".join(["x"] * BoardShim.get_num_rows(-1)) + "\n")
    with pytest.raises(CorruptFileError, match=r"words\.csv: unparsable number"):
        FileSource(path, board="synthetic")


def test_folder_and_device_paths_say_what_they_are(tmp_path):
    (tmp_path / "dir.edf").mkdir()
    with pytest.raises(MissingFileError, match=r"dir\.edf is a folder"):
        FileSource(tmp_path / "dir.edf")
    os.symlink("/dev/zero", tmp_path / "zero.edf")
    with pytest.raises(MissingFileError, match=r"zero\.edf is not a regular file"):
        FileSource(tmp_path / "zero.edf")
    with pytest.raises(FileNotFoundError, match=r"nope\.edf does not exist"):
        FileSource(tmp_path / "nope.edf")


def test_brainvision_header_may_not_name_files_elsewhere(tmp_path):
    vhdr = tmp_path / "x.vhdr"
    vhdr.write_text("Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\n"
                    "DataFile=/dev/urandom\nMarkerFile=x.vmrk\n")
    with pytest.raises(FileFormatError, match=r"x\.vhdr: DataFile='/dev/urandom' points "
                                              "outside"):
        FileSource(vhdr)


def test_source_errors_are_typed_and_keep_their_builtin_bases():
    for cls, base, builtin, code in (
            (UnknownBoardError, UsageError, ValueError, EXIT_USAGE),
            (MissingParameterError, UsageError, ValueError, EXIT_USAGE),
            (CorruptFileError, DataError, RuntimeError, EXIT_DATA),
            (FileFormatError, DataError, ValueError, EXIT_DATA),
            (MissingFileError, DataError, FileNotFoundError, EXIT_DATA),
            (BoardError, DeviceError, RuntimeError, EXIT_DEVICE),
            (StreamNotFoundError, DeviceError, RuntimeError, EXIT_DEVICE)):
        assert issubclass(cls, SourceError) and issubclass(cls, base)
        assert issubclass(cls, builtin) and cls.exit_code == code


# ------------------------------------------------------------------ key files


def test_key_file_paths_say_what_they_are(tmp_path):
    with pytest.raises(EncryptionKeyError, match=r"key file .* is a folder, not a key file"):
        load_key_file(tmp_path)
    with pytest.raises(EncryptionKeyError, match=r"gone\.key does not exist; expected a key"):
        load_key_file(tmp_path / "gone.key")
    os.symlink("/dev/zero", tmp_path / "zero.key")
    with pytest.raises(EncryptionKeyError, match=r"zero\.key is not a regular file"):
        load_key_file(tmp_path / "zero.key")
    (tmp_path / "big.key").write_bytes(b"{" * 10_000)
    with pytest.raises(EncryptionKeyError, match=r"big\.key is larger than 4096 bytes"):
        load_key_file(tmp_path / "big.key")
    (tmp_path / "short.key").write_text('{"key": "AAAA"}')
    with pytest.raises(EncryptionKeyError, match=r"the key in .*short\.key must be 32 bytes"):
        load_key_file(tmp_path / "short.key")
    with pytest.raises(EncryptionKeyError, match=r"cannot create key file .* is a folder"):
        create_key_file(tmp_path)
    key = create_key_file(tmp_path / "k" / "new.key")
    assert load_key_file(tmp_path / "k" / "new.key") == key
    with pytest.raises(FileExistsError, match="never overwritten"):
        create_key_file(tmp_path / "k" / "new.key")
