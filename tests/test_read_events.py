"""``read_events``: a session's events without its samples, the same rows as
``read_session`` gives (onset_sec included), for what is computed from events alone."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.recording import (
    SAMPLES_FILE,
    ConsentRecord,
    SessionMeta,
    SessionRecorder,
    create_key_file,
    read_events,
    read_session,
)
from st_agent.biometrics.session_meta import EncryptionKeyError, SessionNotFoundError
from st_agent.types import SignalChunk

SFREQ = 250.0
NAMES = ("Fz", "Cz")
TYPES = ("eeg", "eeg")
SEG_BYTES = 48 + 2 * 250 * 4 + 4  # header, float32 body, body CRC
T0 = 1000.0  # source clock of the first sample: onsets are not the source times


def _record(folder: Path, seconds: int, key: object = None, samples: bool = True,
            tick_sec: int = 2) -> None:
    meta = SessionMeta(SFREQ, NAMES, TYPES, consent=ConsentRecord("test-v1"),
                       subject_id="s00004242")
    data = np.random.default_rng(0).normal(size=(2, int(seconds * SFREQ))) * 1e-5
    with SessionRecorder(folder, meta, key=key, flush_sec=None) as rec:
        rec.write_marker("session_start", t_sec=T0 - 0.5)
        for i in range(0, data.shape[1] if samples else 0, 50):
            rec.write_chunk(SignalChunk(data[:, i:i + 50], SFREQ, NAMES, TYPES,
                                        first_sample=i, t0_sec=T0 + i / SFREQ))
            if i % int(tick_sec * SFREQ) == 0:
                rec.write_marker("tick", t_sec=T0 + i / SFREQ, n=i)


def _same_rows(folder: Path, key: object = None) -> list[dict]:
    meta, events = read_events(folder, key=key)
    sess = read_session(folder, key=key)
    assert meta.session_id == sess.meta.session_id
    assert events == sess.events
    return events


def test_rows_and_onsets_match_read_session(tmp_path: Path) -> None:
    _record(tmp_path / "s", 6)
    events = _same_rows(tmp_path / "s")
    ticks = [e for e in events if e["kind"] == "marker" and e["payload"]["label"] == "tick"]
    assert [e["onset_sec"] for e in ticks] == pytest.approx([0, 2, 4])
    assert events[0]["onset_sec"] == pytest.approx(-0.5)  # before the first sample


def test_encrypted_session_needs_its_key(tmp_path: Path) -> None:
    key = create_key_file(tmp_path / "k.json")
    _record(tmp_path / "s", 3, key=key)
    assert len(_same_rows(tmp_path / "s", key=key)) >= 3
    with pytest.raises(EncryptionKeyError, match="is encrypted"):
        read_events(tmp_path / "s")


@pytest.mark.parametrize("byte", [3, 48 + 100], ids=["header", "body"])
def test_damaged_first_segment_starts_from_the_next_one(tmp_path: Path, byte: int) -> None:
    _record(tmp_path / "s", 5)
    path = tmp_path / "s" / SAMPLES_FILE
    buf = bytearray(path.read_bytes())
    buf[byte] ^= 1
    path.write_bytes(bytes(buf))
    events = _same_rows(tmp_path / "s")  # both readers now start 1 s later
    first_tick = next(e for e in events if e["kind"] == "marker"
                      and e["payload"]["label"] == "tick")
    assert first_tick["onset_sec"] == pytest.approx(-1.0)


def test_no_samples_and_no_folder(tmp_path: Path) -> None:
    _record(tmp_path / "s", 2, samples=False)
    events = _same_rows(tmp_path / "s")
    assert events[0]["onset_sec"] == 0.0  # onsets from the first event, as read_session
    with pytest.raises(SessionNotFoundError, match="does not exist"):
        read_events(tmp_path / "missing")


def test_memory_does_not_grow_with_the_recording(tmp_path: Path) -> None:
    _record(tmp_path / "s", 300, tick_sec=60)  # 600 kB of samples on disk
    n_bytes = (tmp_path / "s" / SAMPLES_FILE).stat().st_size
    assert n_bytes == 300 * SEG_BYTES
    tracemalloc.start()
    try:
        read_events(tmp_path / "s")
        events_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        read_session(tmp_path / "s")
        session_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events_peak < n_bytes / 10 < session_peak
