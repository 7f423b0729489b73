"""Session reader hardening (issue 22): a bad segment is lost alone, bounds on what is read
from disk, session.json validated on open, and the recorder's flush cadence."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from st_agent.biometrics.recording import (
    EVENTS_FILE,
    META_FILE,
    SAMPLES_FILE,
    ConsentRecord,
    SessionMeta,
    SessionRecorder,
    create_key_file,
    is_session,
    read_session,
)
from st_agent.biometrics.session_meta import (
    MAX_CHANNELS,
    CorruptSessionError,
    SessionNotFoundError,
)
from st_agent.errors import DataError
from st_agent.types import SignalChunk

SFREQ = 250.0
NAMES = ("Fz", "Cz")
TYPES = ("eeg", "eeg")
N_SEG = 6  # 1 s segments of 250 samples
SEG_BYTES = 48 + 2 * 250 * 4 + 4  # header, float32 body, body CRC


def _meta(sfreq: float = SFREQ, names: tuple[str, ...] = NAMES,
          types: tuple[str, ...] = TYPES) -> SessionMeta:
    return SessionMeta(sfreq, names, types, consent=ConsentRecord("test-v1"),
                       subject_id="s00004242")


def _signal(n_ch: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_ch, n)) * 1e-5


def _record(folder: Path, data: np.ndarray, sfreq: float = SFREQ, key: object = None,
            names: tuple[str, ...] = NAMES, types: tuple[str, ...] = TYPES,
            chunk: int = 25) -> None:
    """Record ``data`` with the real recorder, whole 1 s segments (flush_sec=None)."""
    with SessionRecorder(folder, _meta(sfreq, names, types), key=key, flush_sec=None) as rec:
        for i in range(0, data.shape[1], chunk):
            rec.write_chunk(SignalChunk(data[:, i:i + chunk], sfreq, names, types,
                                        first_sample=i, t0_sec=i / sfreq))
        rec.write_marker("start", t_sec=0.5)


def _flip(path: Path, byte: int, bit: int = 0) -> None:
    buf = bytearray(path.read_bytes())
    buf[byte] ^= 1 << bit
    path.write_bytes(bytes(buf))


def _forge_header(path: Path, seg: int, seg_bytes: int, **fields: int) -> None:
    """Rewrite fields of segment ``seg``'s header and fix its CRC (a forged, valid header)."""
    buf = bytearray(path.read_bytes())
    at = seg * seg_bytes
    offsets = {"seq": (8, "<Q"), "first_sample": (16, "<Q"), "n_times": (36, "<I")}
    for name, value in fields.items():
        off, fmt = offsets[name]
        buf[at + off:at + off + struct.calcsize(fmt)] = struct.pack(fmt, value)
    buf[at + 44:at + 48] = struct.pack("<I", zlib.crc32(bytes(buf[at:at + 44])))
    path.write_bytes(bytes(buf))


@pytest.fixture
def session(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = _signal(2, N_SEG * 250)
    _record(tmp_path / "s", data)
    assert (tmp_path / "s" / SAMPLES_FILE).stat().st_size == N_SEG * SEG_BYTES
    return tmp_path / "s", data


# --------------------------------------------------------------------------- resync


def test_flip_in_middle_segment_keeps_all_others(session, caplog) -> None:
    folder, data = session
    _flip(folder / SAMPLES_FILE, 3 * SEG_BYTES + 48 + 100, bit=5)  # segment 3's samples
    with caplog.at_level(logging.WARNING):
        s = read_session(folder)
    x = s.raw.get_data()
    assert x.shape == (2, N_SEG * 250)
    keep = np.r_[0:750, 1000:1500]
    np.testing.assert_allclose(x[:, keep], data[:, keep], rtol=1e-6)
    assert np.isnan(x[:, 750:1000]).all()
    d = s.dropped
    assert d.n_segments == N_SEG - 1 and d.dropped_samples == 250 and not d.approximate
    (span,) = d.lost
    assert (span.first_sample, span.n_samples, span.n_segments) == (750, 250, 1)
    assert span.start_sec == pytest.approx(3.0) and span.duration_sec == pytest.approx(1.0)
    assert span.exact and "checksum" in span.reason and span.stream == "samples"
    assert (span.byte_offset, span.n_bytes) == (3 * SEG_BYTES, SEG_BYTES)
    ann = dict(zip(s.raw.annotations.description, s.raw.annotations.onset, strict=True))
    assert ann["BAD_lost"] == pytest.approx(3.0) and "BAD_gap" not in ann
    assert "250 samples (1.000 s) from sample 750" in caplog.text


def test_flip_in_segment_0_header_keeps_the_rest(session) -> None:
    folder, data = session
    _flip(folder / SAMPLES_FILE, 20)  # inside segment 0's header (first_sample)
    s = read_session(folder)
    assert s.first_sample == 250 and s.t0_sec == pytest.approx(1.0)
    np.testing.assert_allclose(s.raw.get_data(), data[:, 250:], rtol=1e-6)
    (span,) = s.dropped.lost
    assert (span.first_sample, span.n_samples, span.exact) == (0, 250, True)
    assert span.start_sec == pytest.approx(-1.0)
    assert "bad segment header" in span.reason
    marker = next(e for e in s.events if e["kind"] == "marker")
    assert marker["onset_sec"] == pytest.approx(-0.5)  # times stay on the source clock


def test_two_bad_stretches_and_torn_tail(session) -> None:
    folder, data = session
    path = folder / SAMPLES_FILE
    _flip(path, 1 * SEG_BYTES + 2)  # segment 1's magic
    _flip(path, 2 * SEG_BYTES + 600)  # segment 2's samples: one stretch with segment 1
    _flip(path, 4 * SEG_BYTES + 300)  # segment 4
    with open(path, "r+b") as f:
        f.truncate(N_SEG * SEG_BYTES - 10)  # segment 5 torn
    s = read_session(folder)
    # Segment 4 and the torn segment 5 have no good segment between them: one stretch.
    assert [(x.first_sample, x.n_samples, x.n_segments) for x in s.dropped.lost] == [
        (250, 500, 2), (1000, 500, 2)]
    assert all(x.exact for x in s.dropped.lost)
    assert s.n_times == 1000  # to the end of segment 3: the lost tail is reported, not NaN
    x = s.raw.get_data()
    np.testing.assert_allclose(x[:, :250], data[:, :250], rtol=1e-6)
    np.testing.assert_allclose(x[:, 750:1000], data[:, 750:1000], rtol=1e-6)
    assert "checksum" in s.dropped.lost[-1].reason  # the first problem of the stretch


def test_encrypted_authentication_failure_loses_only_that_segment(tmp_path: Path) -> None:
    key = create_key_file(tmp_path / "keys" / "k.key")
    data = _signal(2, N_SEG * 250)
    _record(tmp_path / "s", data, key=key)
    path = tmp_path / "s" / SAMPLES_FILE
    seg_bytes = path.stat().st_size // N_SEG
    buf = bytearray(path.read_bytes())
    at = 2 * seg_bytes
    buf[at + 48 + 40] ^= 1  # segment 2's ciphertext, its CRC fixed up: only AEAD can tell
    body = bytes(buf[at + 48:at + seg_bytes - 4])
    buf[at + seg_bytes - 4:at + seg_bytes] = struct.pack("<I", zlib.crc32(body))
    path.write_bytes(bytes(buf))
    s = read_session(tmp_path / "s", key)
    x = s.raw.get_data()
    keep = np.r_[0:500, 750:1500]
    np.testing.assert_allclose(x[:, keep], data[:, keep], rtol=1e-6)
    assert np.isnan(x[:, 500:750]).all()
    (span,) = s.dropped.lost
    assert (span.first_sample, span.n_samples) == (500, 250)
    assert "authentication" in span.reason


def test_bad_event_lines_are_numbered(session) -> None:
    folder, _ = session
    with open(folder / EVENTS_FILE, "ab") as f:
        f.write(b"[" * 100_000 + b"\n")  # nested too deeply for json
        f.write(b'{"seq": 1e999, "t_sec": 1, "kind": "x"}\n')  # int(inf)
        f.write(b'{"seq": 3, "t_sec": 1, "kind": "x", "payload": [1]}\n')
        f.write(b'{"seq": 4, "t_sec": 2.0, "kind": "note", "payload": {}}\n')
    s = read_session(folder)
    assert s.dropped.bad_event_line_numbers == [2, 3, 4]
    assert [e["kind"] for e in s.events] == ["marker", "note"]


# --------------------------------------------------------------------------- bounds


def test_forged_first_sample_jump_is_refused_before_allocating(session) -> None:
    folder, _ = session
    path = folder / SAMPLES_FILE
    _forge_header(path, N_SEG - 1, SEG_BYTES, first_sample=10**8)  # CRCs still verify
    tracemalloc.start()
    try:
        with pytest.raises(CorruptSessionError, match=r"first_sample 100000000") as err:
            read_session(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(err.value, DataError) and err.value.exit_code == 3
    msg = str(err.value)
    assert str(path) in msg and f"segment {N_SEG - 1}" in msg and "MAX_FILL_RATIO" in msg
    assert peak < 64 * 2**20  # the filled recording would need 1e8 x 2 x 8 B = 1.6 GB


def test_forged_sequence_jump_is_refused(session) -> None:
    folder, _ = session
    _forge_header(folder / SAMPLES_FILE, 3, SEG_BYTES, seq=10**12)
    with pytest.raises(CorruptSessionError, match="sequence number 1000000000000"):
        read_session(folder)


def test_verified_segment_out_of_order_is_refused_and_duplicate_skipped(session) -> None:
    folder, data = session
    path = folder / SAMPLES_FILE
    clean = path.read_bytes()
    path.write_bytes(clean[:3 * SEG_BYTES] + clean[2 * SEG_BYTES:])  # segment 2 twice
    s = read_session(folder)
    np.testing.assert_allclose(s.raw.get_data(), data, rtol=1e-6)
    assert s.dropped.lost == [] and s.dropped.dropped_bytes == SEG_BYTES
    assert "duplicate" in s.dropped.reason
    path.write_bytes(clean)
    _forge_header(path, 3, SEG_BYTES, first_sample=0)  # goes back: not silently dropped
    with pytest.raises(CorruptSessionError, match="out of order"):
        read_session(folder)


def test_forged_sample_count_is_not_trusted(session) -> None:
    folder, data = session
    # n_times no longer matches the body length: the header is not taken for a segment.
    _forge_header(folder / SAMPLES_FILE, 2, SEG_BYTES, n_times=2**32 - 1)
    s = read_session(folder)
    assert [(x.first_sample, x.n_samples) for x in s.dropped.lost] == [(500, 250)]
    np.testing.assert_allclose(s.raw.get_data()[:, 750:], data[:, 750:], rtol=1e-6)


# --------------------------------------------------------------------------- session.json


def _edit_meta(folder: Path, **fields: object) -> Path:
    path = folder / META_FILE
    doc = json.loads(path.read_text())
    doc["meta"].update(fields)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("field", "value", "match"), [
    ("sfreq", 1e-6, r"sfreq must be a number of Hz in \[1, 100000\]"),
    ("sfreq", 1e9, r"got 1000000000\.0"),
    ("sfreq", "250", r"field 'meta.sfreq' is '250'; allowed: a number of Hz"),
    ("sfreq", True, "field 'meta.sfreq' is True"),
    ("ch_names", [1, 2], "field 'meta.ch_names'"),
    ("ch_types", ["eeg"], "one type per channel name"),
    ("segment_samples", -5, r"segment_samples must be a whole number in \[0, 250\]"),
    ("segment_samples", 10**9, "segment_samples"),
    ("encrypted", "yes", "field 'meta.encrypted'"),
    ("dtype", "int8", "dtype must be one of"),
    ("consent", None, "field 'meta.consent'"),
])
def test_bad_session_json_field_is_refused(session, field, value, match) -> None:
    folder, _ = session
    path = _edit_meta(folder, **{field: value})
    with pytest.raises(CorruptSessionError, match=match) as err:
        read_session(folder)
    assert isinstance(err.value, DataError) and str(path) in str(err.value)


def test_too_many_channels_and_malformed_meta_files(session) -> None:
    folder, _ = session
    names = [f"C{i}" for i in range(MAX_CHANNELS + 1)]
    _edit_meta(folder, ch_names=names, ch_types=["eeg"] * len(names))
    with pytest.raises(CorruptSessionError, match=f"1-{MAX_CHANNELS} channels"):
        read_session(folder)
    path = folder / META_FILE
    for text, match in ((b"\xff\xfe not utf-8", "UTF-8 JSON"), (b"[1, 2]", "not an st-agent"),
                        (b'{"format": "st-agent-recording", "format_version": 1}',
                         "'meta' must be an object"),
                        (b'{"format": "st-agent-recording", "format_version": 1, "meta": {}}',
                         "lacks the fields")):
        path.write_bytes(text)
        with pytest.raises(CorruptSessionError, match=match):
            read_session(folder)
        assert not is_session(folder)
    with pytest.raises(SessionNotFoundError, match="does not exist"):
        read_session(folder / "nope")
    with pytest.raises(ValueError, match="sfreq must be"):  # the constructor checks it too
        _meta(sfreq=0.5)


# --------------------------------------------------------------------------- flush cadence


def test_default_recorder_flushes_every_half_second(tmp_path: Path) -> None:
    data = _signal(2, 1000)
    rec = SessionRecorder(tmp_path / "s", _meta())
    for k in range(40):
        rec.write_chunk(SignalChunk(data[:, 25 * k:25 * k + 25], SFREQ, NAMES, TYPES,
                                    first_sample=25 * k))
        assert rec.n_samples_buffered < 125  # a crash loses under 0.5 s
        assert rec.n_samples_written == (25 * (k + 1) // 125) * 125
    rec.close()
    np.testing.assert_allclose(read_session(tmp_path / "s").raw.get_data(), data, rtol=1e-6)


def test_flush_after_half_a_second_of_wall_clock(tmp_path: Path) -> None:
    now = [100.0]
    rec = SessionRecorder(tmp_path / "s", _meta())
    rec._clock = lambda: now[0]  # a slow source: 5 samples per call, 0.3 s apart

    def write(k: int) -> None:
        rec.write_chunk(SignalChunk(np.zeros((2, 5)), SFREQ, NAMES, TYPES, first_sample=5 * k))
        now[0] += 0.3

    write(0)
    write(1)
    assert rec.n_samples_written == 0 and rec.n_samples_buffered == 10  # waited 0.3 s
    write(2)
    assert rec.n_samples_written == 15 and rec.n_samples_buffered == 0  # waited 0.6 s
    write(3)
    now[0] += 0.3
    rec.write_event("note", text="an event also flushes what is due")
    assert rec.n_samples_written == 20 and rec.n_samples_buffered == 0
    rec.close()
    with pytest.raises(ValueError, match="flush_sec must be"):
        SessionRecorder(tmp_path / "t", _meta(), flush_sec=2.0)


# --------------------------------------------------------------------------- property

_P_SFREQ = 50.0
_P_SEG = 6
_P_BYTES = 48 + 2 * 50 * 4 + 4


@pytest.fixture(scope="module")
def small_session(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("prop") / "s"
    data = _signal(2, _P_SEG * 50, seed=3)
    _record(folder, data, sfreq=_P_SFREQ, chunk=10)
    assert (folder / SAMPLES_FILE).stat().st_size == _P_SEG * _P_BYTES
    return folder, data


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.integers(0, _P_SEG * _P_BYTES * 8 - 1), min_size=1, max_size=3,
                      unique=True))
def test_every_segment_untouched_by_bit_flips_is_recovered(small_session, flips) -> None:
    src, data = small_session
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s"
        shutil.copytree(src, folder)
        for bit in flips:
            _flip(folder / SAMPLES_FILE, bit // 8, bit % 8)
        touched = {bit // 8 // _P_BYTES for bit in flips}
        s = read_session(folder)
    kept = [k for k in range(_P_SEG) if k not in touched]
    assert s.dropped.n_segments == len(kept)
    x = s.raw.get_data() if s.raw is not None else np.zeros((2, 0))
    for k in kept:  # recovered exactly, at its place in the stream
        col = 50 * k - s.first_sample
        np.testing.assert_array_equal(x[:, col:col + 50], data[:, 50 * k:50 * k + 50]
                                      .astype(np.float32).astype(np.float64))
    lost = set()
    for span in s.dropped.lost:
        lost.update(range(span.first_sample, span.first_sample + span.n_samples))
    for k in touched:  # and each hit segment is reported lost, where it was
        assert set(range(50 * k, 50 * k + 50)) <= lost
    exact = all(span.exact for span in s.dropped.lost)
    assert not exact or s.dropped.dropped_samples == 50 * len(touched)
