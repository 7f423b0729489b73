"""Recording: round trip, crash safety (kill -9), bad input, encryption, export, delete."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mne
import numpy as np
import pytest

from st_agent.biometrics.recording import (
    EVENTS_FILE,
    META_FILE,
    SAMPLES_FILE,
    ConsentRecord,
    DeleteConfig,
    EncryptionKeyError,
    ExportConfig,
    RecordingError,
    SessionMeta,
    SessionRecorder,
    create_key_file,
    delete_session,
    export_session,
    is_session,
    load_key_file,
    new_pseudonym,
    read_session,
    run_delete,
    run_export,
)
from st_agent.types import EmotionState, Knobs, Phrase, SignalChunk

REPO = Path(__file__).resolve().parents[1]
SFREQ = 250.0
NAMES = ("Fz", "Cz", "ECG", "PPG")
TYPES = ("eeg", "eeg", "ecg", "ppg")
CONSENT = ConsentRecord("test-v1", scopes=("record", "store_local", "export"),
                        given_at_utc="2024-05-01T10:00:00+00:00")


def _meta(**kw: object) -> SessionMeta:
    return SessionMeta(SFREQ, NAMES, TYPES, consent=CONSENT, subject_id="s00001234", **kw)


def _signal(n: int, seed: int = 0) -> np.ndarray:
    """Volts, shape (4, n): EEG ~10 µV, ECG ~1 mV, PPG arbitrary units."""
    rng = np.random.default_rng(seed)
    scale = np.array([[1e-5], [1e-5], [1e-3], [1.0]])
    return rng.normal(size=(4, n)) * scale


def _chunks(data: np.ndarray, size: int = 25, start: int = 0):
    for i in range(0, data.shape[1], size):
        yield SignalChunk(data[:, i:i + size], SFREQ, NAMES, TYPES, first_sample=start + i,
                          t0_sec=(start + i) / SFREQ)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(folder: Path, data: np.ndarray, key: bytes | None = None, **kw: object) -> None:
    # flush_sec=None: whole 1 s segments only, so the tests below know the byte layout.
    with SessionRecorder(folder, _meta(**kw), key=key, flush_sec=None) as rec:
        for chunk in _chunks(data):
            rec.write_chunk(chunk)
        rec.write_knobs(Knobs(0.2, 0.3, 0.1), t_sec=0.5)
        rec.write_marker("eyes_closed", t_sec=1.0, duration_sec=2.0)


# --------------------------------------------------------------------------- round trip


def test_round_trip_data_events_annotations(tmp_path: Path) -> None:
    data = _signal(1000)
    data[1, 300:320] = np.nan  # NaN samples are recorded faithfully
    later = _signal(500, seed=1)
    phrase = Phrase(abc="X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n", body="CDEF GABc|",
                    knobs=Knobs(0.5, 0.5, 0.5), meter="4/4", unit="1/8", key="C", bars=1)
    with SessionRecorder(tmp_path / "s", _meta()) as rec:
        for chunk in _chunks(data):
            rec.write_chunk(chunk)
        rec.write_knobs(Knobs(0.2, 0.3, 0.1), t_sec=0.5)
        rec.write_phrase(phrase, t_sec=1.5, duration_sec=2.0)
        rec.write_state(EmotionState(0.1, -0.3, 0.8, t_sec=2.0))
        rec.write_marker("eyes_closed", t_sec=3.0)
        for chunk in _chunks(later, start=1250):  # a 250-sample gap
            rec.write_chunk(chunk)
    s = read_session(tmp_path / "s")
    assert s.meta.subject_id == "s00001234" and s.meta.consent == CONSENT
    assert s.dropped.reason is None and s.dropped.closed_cleanly
    assert s.dropped.dropped_samples == 0 and s.dropped.n_samples == 1500
    x = s.raw.get_data()
    assert x.shape == (4, 1750)
    np.testing.assert_allclose(x[:, :1000], data, rtol=1e-6, equal_nan=True)
    assert np.isnan(x[1, 300:320]).all() and not np.isnan(x[0, 300:320]).any()
    assert np.isnan(x[:, 1000:1250]).all()
    np.testing.assert_allclose(x[:, 1250:], later, rtol=1e-6)
    ann = {d: (o, dur) for o, dur, d in
           zip(s.raw.annotations.onset, s.raw.annotations.duration,
               s.raw.annotations.description, strict=True)}
    assert ann["BAD_gap"] == pytest.approx((4.0, 1.0))
    assert ann["BAD_nan"] == pytest.approx((1.2, 0.08))
    assert ann["knobs"][0] == pytest.approx(0.5)
    assert ann["phrase"] == pytest.approx((1.5, 2.0))
    assert ann["marker/eyes_closed"][0] == pytest.approx(3.0)
    kinds = [e["kind"] for e in s.events]
    assert kinds == ["knobs", "phrase", "state", "marker", "gap"]
    gap = s.events[-1]["payload"]
    assert gap["first_missing_sample"] == 1000 and gap["n_missing"] == 250
    assert s.events[1]["payload"]["abc"] == phrase.abc
    assert s.raw.get_channel_types() == ["eeg", "eeg", "ecg", "misc"]
    assert s.raw.info["subject_info"]["his_id"] == "s00001234"


def test_float64_is_exact_and_files_private(tmp_path: Path) -> None:
    data = _signal(600)
    with SessionRecorder(tmp_path / "s", _meta(), dtype="float64") as rec:
        for chunk in _chunks(data):
            rec.write_chunk(chunk)
    np.testing.assert_array_equal(read_session(tmp_path / "s").raw.get_data(), data)
    for name in (META_FILE, SAMPLES_FILE, EVENTS_FILE):
        assert (tmp_path / "s" / name).stat().st_mode & 0o077 == 0


def test_segments_are_one_second_and_written_at_once(tmp_path: Path) -> None:
    data = _signal(1000)
    rec = SessionRecorder(tmp_path / "s", _meta(), flush_sec=None)
    for k, chunk in enumerate(_chunks(data, size=100)):
        rec.write_chunk(chunk)
        assert rec.n_samples_written == ((k + 1) * 100 // 250) * 250
        assert rec.n_samples_buffered < 250
    # Readable while still recording (no close): only full segments are there.
    s = read_session(tmp_path / "s")
    assert s.n_times == 1000 and not s.dropped.closed_cleanly
    rec.close()
    rec.close()  # twice is fine
    with pytest.raises(RecordingError, match="closed"):
        rec.write_chunk(next(_chunks(data)))


# --------------------------------------------------------------------------- kill -9

_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
    from st_agent.types import SignalChunk
    names = tuple(f"EEG{i}" for i in range(4))
    types = ("eeg",) * 4
    meta = SessionMeta(250.0, names, types, consent=ConsentRecord("v1"),
                       subject_id="s00000007")
    rows = np.arange(4)[:, None]
    with SessionRecorder(sys.argv[1], meta) as rec:
        print("ready", flush=True)
        n, t_start = 0, time.monotonic()
        while True:
            idx = np.arange(n, n + 25)
            rec.write_chunk(SignalChunk(1e-6 * (idx[None, :] % 997 + rows), 250.0, names,
                                        types, first_sample=n, t0_sec=n / 250.0))
            n += 25
            print(n, flush=True)
            time.sleep(max(0.0, t_start + n / 250.0 - time.monotonic()))
""")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_sec", [0.35, 1.3, 2.05])
def test_kill_9_loses_at_most_one_second(tmp_path: Path, kill_after_sec: float) -> None:
    folder = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reported = 0
        deadline = time.monotonic() + kill_after_sec
        while time.monotonic() < deadline:
            reported = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _sha(folder / SAMPLES_FILE)
    s = read_session(folder)  # opens without repair
    assert _sha(folder / SAMPLES_FILE) == before
    assert not s.dropped.closed_cleanly
    n_read = s.n_times
    assert reported - n_read <= 125, (reported, n_read)  # at most flush_sec (0.5 s) lost
    assert n_read % 25 == 0 and n_read <= reported + 25  # only whole chunks
    if n_read:
        idx = np.arange(n_read)
        want = 1e-6 * (idx[None, :] % 997 + np.arange(4)[:, None])
        np.testing.assert_allclose(s.raw.get_data(), want, rtol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_truncated_last_segment_is_detected_and_file_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _record(folder, _signal(1000))
    path = folder / SAMPLES_FILE
    size = path.stat().st_size
    seg_len = size // 4
    with open(path, "r+b") as f:
        f.truncate(size - 100)  # a torn last segment
    before = _sha(path)
    s = read_session(folder)
    assert _sha(path) == before and path.stat().st_size == size - 100
    assert s.n_times == 750
    assert s.dropped.n_segments == 3
    assert s.dropped.dropped_samples == 250 and not s.dropped.approximate
    assert s.dropped.dropped_bytes == seg_len - 100
    assert "truncated" in s.dropped.reason
    assert [e["kind"] for e in s.events] == ["knobs", "marker"]  # events are separate


def test_corrupt_middle_segment_loses_only_it(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _record(folder, _signal(1000))
    path = folder / SAMPLES_FILE
    seg_len = path.stat().st_size // 4
    raw_bytes = bytearray(path.read_bytes())
    raw_bytes[seg_len + 500] ^= 0xFF  # flip a byte in segment 1's samples
    path.write_bytes(bytes(raw_bytes))
    before = _sha(path)
    s = read_session(folder)
    assert _sha(path) == before
    assert s.n_times == 1000  # segments 0, 2, 3 kept; segment 1 is NaN, annotated BAD_lost
    assert "checksum" in s.dropped.reason
    assert s.dropped.dropped_samples == 250 and not s.dropped.approximate
    assert [(x.first_sample, x.n_samples) for x in s.dropped.lost] == [(250, 250)]
    assert np.isnan(s.raw.get_data()[:, 250:500]).all()
    assert "BAD_lost" in s.raw.annotations.description


def test_garbage_and_torn_event_line(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _record(folder, _signal(500))
    with open(folder / SAMPLES_FILE, "ab") as f:
        f.write(b"\x00" * 30)  # a torn header
    with open(folder / EVENTS_FILE, "ab") as f:
        f.write(b'{"seq": 2, "t_sec": 1.0, "ki')  # a torn line
    s = read_session(folder)
    assert s.n_times == 500
    assert "incomplete segment header" in s.dropped.reason
    assert s.dropped.dropped_bytes == 30
    assert s.dropped.bad_event_lines == 1 and len(s.events) == 2


_DISK_FULL_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    import numpy as np
    from st_agent.biometrics.recording import (ConsentRecord, DiskFullError, SessionMeta,
                                               SessionRecorder)
    from st_agent.types import SignalChunk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # make writes fail with EFBIG instead
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    names, types = ("A", "B"), ("eeg", "eeg")
    meta = SessionMeta(250.0, names, types, consent=ConsentRecord("v1"),
                       subject_id="s00000008")
    out = {"written": 0}
    with SessionRecorder(sys.argv[1], meta, flush_sec=None) as rec:
        for n in range(0, 100_000, 50):
            data = np.full((2, 50), 1e-6) * (np.arange(n, n + 50) % 100)
            try:
                rec.write_chunk(SignalChunk(data, 250.0, names, types, first_sample=n))
            except DiskFullError as e:
                out["error"] = str(e)
                break
            out["written"] = rec.n_samples_written
        out["active"] = rec.active
        try:
            rec.write_event("note", text="after")
        except Exception as e:
            out["second"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))
""")


def test_disk_full_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    seg_bytes = 48 + 2 * 250 * 4 + 4
    limit = 5 * seg_bytes + 1000  # room for 5 segments and a bit of the 6th
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", _DISK_FULL_CHILD, str(folder), str(limit)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["written"] == 5 * 250
    assert "disk full" in out["error"] and "1250 samples" in out["error"]
    assert out["active"] is False
    assert out["second"].startswith("RecordingError") and "stopped" in out["second"]
    assert "stopped: disk full (EFBIG" in res.stderr  # logged, too
    assert (folder / SAMPLES_FILE).stat().st_size == 5 * seg_bytes  # partial record cut off
    s = read_session(folder)
    assert s.n_times == 1250 and s.dropped.reason is None
    assert "EFBIG" in s.dropped.stop_reason and s.dropped.closed_cleanly
    assert s.events[-1]["kind"] == "recording_stopped"
    want = 1e-6 * (np.arange(1250) % 100)
    np.testing.assert_allclose(s.raw.get_data(), np.vstack([want, want]), rtol=1e-6)


def test_input_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="looks like a name"):
        SessionMeta(SFREQ, NAMES, TYPES, consent=CONSENT, subject_id="JaneDoe")
    for bad in ("s 123", "s/123", "../s1", ""):
        with pytest.raises(ValueError, match="pseudonym"):
            SessionMeta(SFREQ, NAMES, TYPES, consent=CONSENT, subject_id=bad)
    with pytest.raises(ValueError, match="session_id"):
        _meta(session_id="a/b")
    with pytest.raises(ValueError, match="scopes must be"):
        ConsentRecord("v1", scopes=("record", "sell"))
    with pytest.raises(ValueError, match="unknown channel types"):
        SessionMeta(SFREQ, ("A",), ("eog2",), consent=CONSENT)
    with pytest.raises(ValueError, match="do not include 'record'"):
        SessionRecorder(tmp_path / "x", SessionMeta(
            SFREQ, NAMES, TYPES, consent=ConsentRecord("v1", scopes=("store_local",))))
    assert new_pseudonym() != new_pseudonym()
    with SessionRecorder(tmp_path / "s", _meta()) as rec:
        with pytest.raises(ValueError, match="sfreq is 500"):
            rec.write_chunk(SignalChunk(np.zeros((4, 5)), 500.0, NAMES, TYPES))
        with pytest.raises(ValueError, match="channels"):
            rec.write_chunk(SignalChunk(np.zeros((1, 5)), SFREQ, ("Fz",), ("eeg",)))
        with pytest.raises(ValueError, match="kind must be"):
            rec.write_event("Bad Kind")
        with pytest.raises(TypeError, match="cannot record"):
            rec.write_event("note", obj=object())
    with pytest.raises(FileExistsError, match="not empty"):
        SessionRecorder(tmp_path / "s", _meta())
    with pytest.raises(FileNotFoundError, match="not a session"):
        read_session(tmp_path)
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_session(tmp_path / "s", fmt="csv")


# --------------------------------------------------------------------------- encryption


def test_encryption_round_trip_and_key_errors(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "s.key"
    key = create_key_file(key_file)
    assert load_key_file(key_file) == key
    assert key_file.stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        create_key_file(key_file)
    data = _signal(1000)
    folder = tmp_path / "s"
    _record(folder, data, key=key)
    # Nothing readable at rest: no sample bytes, no event text.
    assert data.astype("<f4").tobytes()[:64] not in (folder / SAMPLES_FILE).read_bytes()
    assert b"eyes_closed" not in (folder / EVENTS_FILE).read_bytes()
    s = read_session(folder, key_file)
    np.testing.assert_allclose(s.raw.get_data(), data, rtol=1e-6)
    assert [e["kind"] for e in s.events] == ["knobs", "marker"]
    assert s.meta.encrypted
    with pytest.raises(EncryptionKeyError, match="encrypted"):
        read_session(folder)
    with pytest.raises(EncryptionKeyError, match="wrong key"):
        read_session(folder, os.urandom(32))
    with pytest.raises(EncryptionKeyError, match="32 bytes"):
        read_session(folder, b"short")
    # A key kept inside the session folder is refused.
    with pytest.raises(EncryptionKeyError, match="inside the session folder"):
        SessionRecorder(tmp_path / "t", _meta(), key=tmp_path / "t" / "k.key")
    # Tampering with a header is caught by authentication (CRC fixed up by the attacker).
    path = folder / SAMPLES_FILE
    buf = bytearray(path.read_bytes())
    import struct
    import zlib
    buf[24:32] = struct.pack("<d", 99.0)  # segment 0's t0_sec
    buf[44:48] = struct.pack("<I", zlib.crc32(bytes(buf[:44])))
    path.write_bytes(bytes(buf))
    s = read_session(folder, key)
    assert "authentication" in s.dropped.reason  # segment 0 is lost, the others kept
    assert s.first_sample == 250 and s.n_times == 750
    np.testing.assert_allclose(s.raw.get_data(), data[:, 250:], rtol=1e-6)


# --------------------------------------------------------------------------- export, delete


def test_export_edf_fif_bids(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    data = _signal(1000)
    data[0, 10:20] = np.nan
    _record(folder, data)
    s = read_session(folder)

    edf = next(p for p in run_export(ExportConfig(folder, "edf")) if p.suffix == ".edf")
    assert edf.name == f"sub-s00001234_ses-{s.meta.session_id.replace('-', '')}.edf"
    header = edf.read_bytes()[:256].decode("ascii")
    assert header[8:88].split() == ["s00001234", "X", "X", "X"]  # code, sex, birthdate, name
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    assert raw.info["subject_info"]["his_id"] == "s00001234"
    want = np.nan_to_num(data)  # EDF has no NaN: written as 0, marked BAD_nan
    lsb = (want.max(axis=1) - want.min(axis=1)) / 65535
    assert np.all(np.abs(raw.get_data() - want).max(axis=1) <= lsb)
    assert {"BAD_nan", "knobs", "marker/eyes_closed"} <= set(raw.annotations.description)

    fif = next(p for p in export_session(folder, "fif") if p.name.endswith("_raw.fif"))
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    np.testing.assert_allclose(raw.get_data(), s.raw.get_data(), equal_nan=True)
    assert list(raw.annotations.description) == list(s.raw.annotations.description)

    out = tmp_path / "bids"
    written = export_session(folder, "bids", out=out, line_freq=50.0)
    ses = "01"  # the subject's first session (its place in the folder)
    eeg_dir = out / "sub-s00001234" / f"ses-{ses}" / "eeg"
    assert (out / "dataset_description.json").is_file()
    assert "sub-s00001234" in (out / "participants.tsv").read_text()
    assert (eeg_dir / f"sub-s00001234_ses-{ses}_task-music_eeg.edf") in written
    events_tsv = (eeg_dir / f"sub-s00001234_ses-{ses}_task-music_events.tsv").read_text()
    assert "marker/eyes_closed" in events_tsv
    for p in written:  # no file name carries anything but the pseudonym and session id
        assert all(part.startswith(("sub-s00001234", "ses-")) or part in (
            "eeg", "README", "dataset_description.json", "participants.json",
            "participants.tsv") for part in p.relative_to(out).parts)


def test_export_needs_consent(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    consent = ConsentRecord("v1", scopes=("record",))
    with SessionRecorder(folder, SessionMeta(SFREQ, NAMES, TYPES, consent=consent)) as rec:
        for chunk in _chunks(_signal(250)):
            rec.write_chunk(chunk)
    with pytest.raises(ValueError, match="do not include 'export'"):
        export_session(folder, "fif")


def test_delete(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    key_file = tmp_path / "keys" / "s.key"
    _record(folder, _signal(500), key=create_key_file(key_file))
    export_session(folder, "fif", key=key_file)
    (tmp_path / "not_a_session").mkdir()
    (tmp_path / "not_a_session" / "keep.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a session"):
        delete_session(tmp_path / "not_a_session")
    assert (tmp_path / "not_a_session" / "keep.txt").exists()
    listed = run_delete(DeleteConfig(folder, key_file=key_file, dry_run=True))
    assert folder.exists() and key_file.exists()
    removed = run_delete(DeleteConfig(folder, key_file=key_file))
    assert removed == listed and removed[-1] == key_file
    assert {p.name for p in removed} >= {META_FILE, SAMPLES_FILE, EVENTS_FILE, "s.key"}
    assert any(p.name.endswith("_raw.fif") for p in removed)
    assert not folder.exists() and not key_file.exists() and not is_session(folder)


def test_source_events_and_backward_jump(tmp_path: Path) -> None:
    class SourceEvent:  # the fields of st_agent.biometrics.sources.SourceEvent
        kind, t_sec, first_missing_sample, n_missing, detail = "dropped", 1.0, 250, 25, "crc"

    data = _signal(600)
    with SessionRecorder(tmp_path / "s", _meta()) as rec:
        rec.write_chunk(SignalChunk(data[:, :250], SFREQ, NAMES, TYPES, first_sample=0))
        rec.write_source_event(SourceEvent())
        rec.write_chunk(SignalChunk(data[:, 275:400], SFREQ, NAMES, TYPES, first_sample=275,
                                    t0_sec=1.1))
        # A source that restarted its count: placed right after the previous chunk.
        rec.write_chunk(SignalChunk(data[:, 400:600], SFREQ, NAMES, TYPES, first_sample=0,
                                    t0_sec=1.6))
    s = read_session(tmp_path / "s")
    x = s.raw.get_data()
    assert x.shape == (4, 600)
    assert np.isnan(x[:, 250:275]).all()
    np.testing.assert_allclose(x[:, 275:], data[:, 275:], rtol=1e-6)
    assert [(e["kind"], e["payload"]["source"]) for e in s.events[:2]] == [
        ("dropped", "source"), ("gap", "recorder")]
    assert s.events[2]["kind"] == "discontinuity"
    assert s.events[2]["payload"] == {"source_first_sample": 0, "placed_at_sample": 400}
    assert list(s.raw.annotations.description).count("BAD_gap") == 1
