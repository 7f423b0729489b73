"""Biometric sources: BrainFlow synthetic board, recorded files, LSL, bad input."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.lsl_source import StampGaps
from st_agent.biometrics.sources import (
    BrainFlowSource,
    CorruptFileError,
    FileFormatError,
    FileSource,
    LSLSource,
    MissingParameterError,
    SourceEvent,
    StreamNotFoundError,
    UnknownBoardError,
    check_source_spec,
    list_boards,
    load_brainflow,
    make_source,
    resolve_board,
    type_from_name,
)

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
REAL_EDFS = sorted(EEG_DIR.glob("*.edf")) if EEG_DIR.is_dir() else []
needs_real = pytest.mark.skipif(not REAL_EDFS, reason=f"real EEG folder {EEG_DIR} is absent")


def _timeline(chunks: list) -> np.ndarray:
    """Chunks placed by ``first_sample``; NaN where no chunk has samples."""
    start = chunks[0].first_sample
    out = np.full((chunks[0].data.shape[0], chunks[-1].first_sample + chunks[-1].n_times - start),
                  np.nan)
    for c in chunks:
        out[:, c.first_sample - start:c.first_sample - start + c.n_times] = c.data
    return out


def _read_for(src, seconds: float) -> list:
    chunks, t_end = [], time.monotonic() + seconds
    while time.monotonic() < t_end:
        chunk = src.read(timeout_sec=0.2)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


# ------------------------------------------------------------------ boards


def test_list_and_resolve_boards():
    boards = list_boards()
    for name in ("synthetic", "muse_2", "muse_s", "cyton", "ganglion"):
        assert name in boards
    assert resolve_board("synthetic") == ("synthetic", -1)
    assert resolve_board("Muse 2") == ("muse_2", 38)
    assert resolve_board("MUSE_S_BOARD") == ("muse_s", 39)
    assert resolve_board(0) == ("cyton", 0)


def test_unknown_board_lists_valid_names():
    with pytest.raises(UnknownBoardError, match=r"unknown board 'muse3'.*synthetic.*cyton"):
        BrainFlowSource("muse3")
    with pytest.raises(UnknownBoardError, match="unknown BrainFlow board id 99999"):
        BrainFlowSource(99999)
    with pytest.raises(UnknownBoardError, match="board must be a board name"):
        resolve_board(1.5)  # type: ignore[arg-type]


def test_missing_serial_port_names_param_and_example():
    with pytest.raises(MissingParameterError, match=r"'cyton' needs serial_port.*/dev/ttyUSB0"):
        BrainFlowSource("cyton")
    with pytest.raises(MissingParameterError, match="serial_port"):
        BrainFlowSource("ganglion")


def test_real_board_channels_from_description():
    load_brainflow()
    # constructing does not open the device; names come from BrainFlow's description
    muse = BrainFlowSource("muse_2")
    assert muse.ch_names == ("TP9", "AF7", "AF8", "TP10")
    assert muse.sfreq == 256
    cyton = BrainFlowSource("cyton", serial_port="/dev/ttyUSB0", ch_types={"O2": "ecg"})
    assert cyton.ch_names[:2] == ("Fp1", "Fp2")
    assert cyton.ch_types[cyton.ch_names.index("O2")] == "ecg"
    assert not cyton.running


def test_opening_absent_cyton_raises_source_error_and_releases():
    src = BrainFlowSource("cyton", serial_port="/dev/ttyNONEXISTENT0")
    with pytest.raises(Exception, match="cannot open board 'cyton'"), src:
        pass
    assert src.board is None and not src.running


def test_synthetic_board_streams_volts_with_types():
    with BrainFlowSource("synthetic") as src:
        assert src.ch_types.count("eeg") == 16
        assert "ppg" in src.ch_types and "eda" in src.ch_types
        assert src.ch_names[:3] == ("Fz", "C3", "Cz")
        chunks = _read_for(src, 1.2)
    assert not src.running and src.board is None
    data = np.concatenate([c.data for c in chunks], axis=1)
    eeg = data[np.asarray(src.ch_types) == "eeg"]
    assert 150 <= data.shape[1] <= 400  # about 250 Hz for ~1.2 s
    assert np.isfinite(eeg).all() and np.abs(eeg).max() < 0.01  # volts, not µV
    # gap-free: each chunk starts where the last ended
    for a, b in itertools.pairwise(chunks):
        assert b.first_sample == a.first_sample + a.n_times
    assert src.pop_events() == []


def test_context_manager_releases_on_exception():
    src = BrainFlowSource("synthetic")
    with pytest.raises(RuntimeError, match="boom"), src:
        assert src.board.is_prepared()
        raise RuntimeError("boom")
    assert src.board is None and not src.running
    with BrainFlowSource("synthetic") as again:  # the device is free again
        assert again.read(1.0) is not None


def test_stall_is_detected_reconnected_and_reported_as_gap():
    """Stop the synthetic board's stream for real, from another thread."""
    with BrainFlowSource("synthetic", stall_sec=1.0) as src:
        before = _read_for(src, 0.5)
        threading.Thread(target=src.board.stop_stream).start()
        after = _read_for(src, 2.5)
        events = src.pop_events()
    kinds = [e.kind for e in events]
    assert "reconnect" in kinds and "gap" in kinds
    gap = next(e for e in events if e.kind == "gap")
    assert gap.n_missing >= 0.8 * 1.0 * 250  # at least the stall, in samples
    # the sample index jumps by the missing count
    last = max(c.first_sample + c.n_times for c in before + after
               if c.first_sample < gap.first_missing_sample + 1)
    first_after = min(c.first_sample for c in after if c.first_sample > last - 1
                      and c.first_sample >= gap.first_missing_sample)
    assert gap.first_missing_sample == last
    assert first_after == gap.first_missing_sample + gap.n_missing


def test_read_before_start_is_an_error():
    src = BrainFlowSource("synthetic")
    with pytest.raises(RuntimeError, match=r"read\(\) before start"):
        src.read(0.1)


def test_source_event_validates():
    with pytest.raises(ValueError, match="kind must be one of"):
        SourceEvent("boom", 0.0, 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ files


@needs_real
@pytest.mark.parametrize("path", REAL_EDFS, ids=lambda p: p.name)
def test_real_edf_plays_back_whole_file(path):
    with FileSource(path, chunk_sec=1.0) as src:
        chunks = list(src.iter_chunks())
        events = src.pop_events()
    assert sum(c.n_times for c in chunks) == src.n_times
    assert [e.kind for e in events] == ["end"]
    eeg = np.concatenate([c.data for c in chunks], axis=1)[np.asarray(src.ch_types) == "eeg"]
    assert src.ch_types.count("eeg") >= 19
    assert np.isfinite(eeg).all() and 1e-7 < np.std(eeg) < 1e-3  # volts
    if "eegmat" in path.name:
        assert src.ch_types[src.ch_names.index("ECG ECG")] == "ecg"


@needs_real
def test_loop_and_realtime_playback():
    path = min(REAL_EDFS, key=lambda p: p.stat().st_size)  # about 61 s
    with FileSource(path, loop=True, chunk_sec=20.0) as src:
        chunks = [src.read(0) for _ in range(6)]
        events = src.pop_events()
    assert all(c is not None for c in chunks)
    assert [e.kind for e in events] == ["end"]  # one wrap
    for a, b in itertools.pairwise(chunks):
        assert b.first_sample == a.first_sample + a.n_times
    with FileSource(path, realtime=True, chunk_sec=0.5) as src:
        first = src.read(timeout_sec=1.0)
        assert first is not None and first.n_times == round(0.5 * src.sfreq)
        assert src.read(timeout_sec=0.0) is None  # the next chunk is not due yet


@needs_real
def test_truncated_edf_is_a_typed_error_and_never_modified(tmp_path):
    src_path = REAL_EDFS[0]
    bad = tmp_path / "truncated.edf"
    data = src_path.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(CorruptFileError, match=r"truncated\.edf: truncated"):
        FileSource(bad)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest


def test_corrupt_edf_names_the_file(tmp_path):
    bad = tmp_path / "garbage.edf"
    bad.write_bytes(b"not an edf file at all" * 20)
    with pytest.raises(CorruptFileError, match=r"garbage\.edf"):
        FileSource(bad)
    tiny = tmp_path / "tiny.edf"
    tiny.write_bytes(b"0")
    with pytest.raises(CorruptFileError, match=r"tiny\.edf.*shorter than an EDF header"):
        FileSource(tiny)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.edf"):
        FileSource(tmp_path / "nope.edf")
    odd = tmp_path / "x.xyz"
    odd.write_text("1")
    with pytest.raises(FileFormatError, match="unsupported extension"):
        FileSource(odd)


def _synthetic_table(n: int = 500) -> np.ndarray:
    """A BrainFlow synthetic-board array: 32 rows, counter in row 0, µV in EEG rows."""
    load_brainflow()
    from brainflow.board_shim import BoardShim

    rows = BoardShim.get_num_rows(-1)
    rng = np.random.default_rng(0)
    table = rng.normal(0, 10, size=(rows, n))
    table[0] = np.arange(n) % 256
    return table


def test_brainflow_csv_roundtrip_and_dropped_samples(tmp_path):
    from brainflow.data_filter import DataFilter

    table = _synthetic_table()
    keep = np.r_[0:100, 107:500]  # 7 samples dropped after column 100
    path = tmp_path / "rec.csv"
    DataFilter.write_file(np.ascontiguousarray(table[:, keep]), str(path), "w")
    with FileSource(path, board="synthetic", chunk_sec=0.4) as src:
        chunks = list(src.iter_chunks())
        events = src.pop_events()
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert data.shape[1] == 500  # NaN-filled, never bridged
    assert np.isnan(data[:, 100:107]).all() and np.isfinite(data[:16, :100]).all()
    # write_file keeps 6 decimals of µV
    np.testing.assert_allclose(data[0, :100], table[1, :100] * 1e-6, atol=1e-12)  # µV -> V
    dropped = [e for e in events if e.kind == "dropped"]
    assert len(dropped) == 1 and dropped[0].n_missing == 7
    assert dropped[0].first_missing_sample == 100


def test_brainflow_csv_wrong_columns_or_no_board(tmp_path):
    path = tmp_path / "short.csv"
    np.savetxt(path, np.zeros((20, 10)), delimiter="\t")
    with pytest.raises(FileFormatError, match=r"10 tab-separated columns.*'synthetic' writes 32"):
        FileSource(path, board="synthetic")
    with pytest.raises(FileFormatError, match="pass the board that recorded it"):
        FileSource(path)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1\t2\t3\n1\t2\n")
    with pytest.raises(FileFormatError, match="line 2"):
        FileSource(ragged, board="synthetic")


def test_type_from_name():
    assert type_from_name("ECG ECG") == "ecg"
    assert type_from_name("EEG Fp1") == "eeg"
    assert type_from_name("EMG chin") == "emg"
    assert type_from_name("Pleth") == "ppg"


def test_fif_through_mne_reader(tmp_path):
    mne = pytest.importorskip("mne")
    info = mne.create_info(["Fp1", "Fp2", "ECG"], 100.0, ["eeg", "eeg", "ecg"])
    raw = mne.io.RawArray(np.random.default_rng(1).normal(0, 1e-5, (3, 500)), info,
                          verbose="error")
    path = tmp_path / "x_raw.fif"
    raw.save(path, verbose="error")
    with FileSource(path, chunk_sec=1.0) as src:
        chunk = src.read()
    assert src.ch_types == ("eeg", "eeg", "ecg")
    np.testing.assert_allclose(chunk.data, raw.get_data()[:, :100])


# ------------------------------------------------------------------ LSL


def test_lsl_inlet_reads_scales_and_reports_drops():
    pylsl = pytest.importorskip("pylsl")
    name = f"st-agent-test-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "EEG", 2, 100.0, "float32", name)
    chans = info.desc().append_child("channels")
    for label in ("AF7", "AF8"):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", "microvolts")
        ch.append_child_value("type", "EEG")
    outlet = pylsl.StreamOutlet(info)
    with LSLSource(name, resolve_timeout_sec=5.0) as src:
        assert src.ch_names == ("AF7", "AF8")
        t0 = pylsl.local_clock()
        for i in range(50):
            outlet.push_sample([10.0, -10.0], t0 + i / 100.0)
        for i in range(60, 100):  # 10 samples never sent
            outlet.push_sample([10.0, -10.0], t0 + i / 100.0)
        chunks = _read_for(src, 1.5)
        events = src.pop_events()
    del outlet
    data = _timeline(chunks)  # missing samples fall inside a chunk or between two
    assert data.shape[1] == 100
    np.testing.assert_allclose(np.nanmax(data[0]), 10e-6)  # µV -> V
    assert np.isnan(data[0]).sum() == 10
    assert sum(e.n_missing for e in events if e.kind == "dropped") == 10


def test_lsl_stream_not_found():
    pytest.importorskip("pylsl")
    with pytest.raises(StreamNotFoundError, match="no LSL stream with name='no-such-stream'"):
        LSLSource("no-such-stream", resolve_timeout_sec=0.5)


class _PacedOutlet(threading.Thread):
    """An LSL outlet sending exactly ``sfreq`` samples per second of wall time.

    Like most device apps it leaves the stamping to liblsl (``push_sample`` stamps
    each sample when it is pushed; ``push_chunk`` stamps the last one and counts back),
    so the stamps jitter by the outlet's 10 ms push interval and the scheduler's
    delays. Channel 0 carries the sample's index (in µV), so a consumer can check
    where each sample was placed. Samples in ``skip`` are never sent.
    """

    def __init__(self, name: str, sfreq: float = 250.0, seconds: float = 3.0,
                 skip: tuple[int, int] = (0, 0), push: str = "sample") -> None:
        super().__init__(daemon=True)
        import pylsl

        self.outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 2, sfreq, "float32",
                                                          name))
        self.sfreq, self.n_total, self.skip, self.push = sfreq, round(seconds * sfreq), skip, push
        self.n_pushed = 0

    def run(self) -> None:
        t0, k = time.monotonic(), 0
        while k < self.n_total:
            due = min(self.n_total, int((time.monotonic() - t0) * self.sfreq))
            batch = [[float(i), 0.0] for i in range(k, due)
                     if not self.skip[0] <= i < self.skip[1]]
            if batch and self.push == "chunk":
                self.outlet.push_chunk(batch)
            elif batch:
                for sample in batch:
                    self.outlet.push_sample(sample)
            self.n_pushed += len(batch)
            k = due
            time.sleep(0.01)


def _read_outlet(src, outlet: _PacedOutlet, linger_sec: float = 0.5) -> list:
    """Chunks read while the outlet sends, and for ``linger_sec`` after it stopped."""
    chunks, t_end = [], None
    outlet.start()
    while t_end is None or time.monotonic() < t_end:
        chunk = src.read(timeout_sec=0.05)
        if chunk is not None:
            chunks.append(chunk)
        if t_end is None and not outlet.is_alive():
            t_end = time.monotonic() + linger_sec
    return chunks


@pytest.mark.parametrize("push", ["sample", "chunk"])
def test_lsl_steady_outlet_at_250_hz_gives_no_drop_events(push):
    """Issue 14: a steady 250 Hz outlet used to produce false "dropped" samples."""
    pytest.importorskip("pylsl")
    name = f"st-agent-steady-{uuid.uuid4().hex[:8]}"
    outlet = _PacedOutlet(name, seconds=3.0, push=push)
    with LSLSource(name, resolve_timeout_sec=5.0) as src:
        chunks = _read_outlet(src, outlet)
        events = src.pop_events()
        held = src.gaps.n_held
    assert events == []
    for a, b in itertools.pairwise(chunks):
        assert b.first_sample == a.first_sample + a.n_times
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert data.shape[1] + held == outlet.n_pushed == 750  # nothing lost, nothing invented
    np.testing.assert_array_equal(np.round(data[0] * 1e6), np.arange(data.shape[1]))


def test_lsl_outlet_that_skips_half_a_second_reports_a_gap_of_that_length():
    pytest.importorskip("pylsl")
    name = f"st-agent-gap-{uuid.uuid4().hex[:8]}"
    outlet = _PacedOutlet(name, seconds=3.0, skip=(250, 375))  # 0.5 s never sent
    with LSLSource(name, resolve_timeout_sec=5.0) as src:
        chunks = _read_outlet(src, outlet)
        events = src.pop_events()
        held = src.gaps.n_held
    assert [e.kind for e in events] == ["dropped"]  # shorter than stall_sec: not a stall
    # the stamps jitter by the 10 ms push interval: +-5 samples (20 ms) of tolerance
    assert abs(events[0].n_missing - 125) <= 5
    assert abs(events[0].first_missing_sample - 250) <= 5
    timeline = _timeline(chunks)
    sent = np.isfinite(timeline[0])
    assert sent.sum() + held == outlet.n_pushed == 625
    # each sample lands within the tolerance of its own index (channel 0 carries it)
    index = np.flatnonzero(sent)
    assert np.abs(np.round(timeline[0, sent] * 1e6) - index).max() <= 5


def _stamps(n: int, sfreq: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Stamps of n samples: exact, or as outlets that stamp at push time produce them."""
    true = 100.0 + np.arange(n) / sfreq
    if kind == "exact":
        return true
    if kind == "rate+1%":  # a device clock 1 % off its nominal rate
        return 100.0 + np.arange(n) / sfreq * 1.01
    out, t, i = np.empty(n), true[0], 0
    while i < n:  # pushes every 5-50 ms of everything due
        t += rng.uniform(0.005, 0.05)
        j = int(np.searchsorted(true, t, side="right"))
        if kind == "push_sample":  # each sample stamped when pushed
            out[i:j] = t
        else:  # push_chunk: the last one stamped when pushed, the others counted back
            out[i:j] = t - (j - 1 - np.arange(i, j)) / sfreq
        i = j
    return out


def _feed(gaps: StampGaps, stamps: np.ndarray, rng: np.random.Generator) -> tuple[int, list]:
    """Push stamps in chunks of 1-40 samples; (samples ready, jumps in stream order)."""
    n_ready, jumps, i = 0, [], 0
    while i < stamps.size:
        n = int(rng.integers(1, 41))
        ready, new = gaps.push(stamps[i:i + n])
        jumps += [(n_ready + j, m) for j, m in new]
        n_ready += ready.size
        i += n
    return n_ready, jumps


@pytest.mark.parametrize("kind", ["exact", "push_sample", "push_chunk", "rate+1%"])
def test_stamp_gaps_tolerate_jitter_and_find_real_gaps(kind):
    sfreq, n = 250.0, 15_000  # 60 s
    stamps = _stamps(n, sfreq, kind, np.random.default_rng(0))
    gaps = StampGaps(sfreq)
    n_ready, jumps = _feed(gaps, stamps, np.random.default_rng(1))
    assert jumps == []
    assert n_ready + gaps.n_held == n and gaps.n_held <= 2 * 0.25 * sfreq
    keep = np.r_[0:7500, 7625:n]  # 125 samples (0.5 s) lost at 30 s
    gaps = StampGaps(sfreq)
    n_ready, jumps = _feed(gaps, stamps[keep], np.random.default_rng(2))
    assert len(jumps) == 1
    (at, n_missing), = jumps
    assert abs(at - 7500) <= 3 and abs(n_missing - 125) <= 1
    if kind == "exact":
        assert jumps == [(7500, 125)]


def test_stamp_gaps_take_a_clock_jump_as_a_clock_change():
    gaps = StampGaps(100.0, max_gap_sec=60.0)
    stamps = np.r_[np.arange(500) / 100.0, 3600.0 + np.arange(500) / 100.0,  # ahead 1 h
                   10.0 + np.arange(500) / 100.0]  # then back
    ready, jumps = gaps.push(stamps)
    assert jumps == [] and ready.size == 1500


def test_stamp_gaps_hold_back_only_while_undecided():
    gaps = StampGaps(100.0, confirm_sec=0.25)
    ready, _ = gaps.push(np.arange(50) / 100.0)
    assert ready.size == 50 and gaps.n_held == 0
    ready, jumps = gaps.push(np.arange(60, 70) / 100.0)  # late: gap or jitter?
    assert ready.size == 0 and gaps.n_held == 10 and jumps == []
    ready, jumps = gaps.push(np.arange(70, 100) / 100.0)  # still late 0.25 s on: a gap
    assert ready.size == 40 and jumps == [(0, 10)] and gaps.n_held == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"sfreq": 0.0}, "sfreq must be a positive number"),
    ({"sfreq": 250.0, "tolerance_periods": 0.5}, "tolerance_periods must be a number >= 1"),
    ({"sfreq": 250.0, "confirm_sec": -1.0}, "confirm_sec must be a positive number"),
])
def test_stamp_gaps_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StampGaps(**kwargs)


# ------------------------------------------------------------------ by --board value


def _tiny_fif(tmp_path: Path) -> Path:
    mne = pytest.importorskip("mne")
    info = mne.create_info(["Fp1", "ECG"], 100.0, ["eeg", "ecg"])
    raw = mne.io.RawArray(np.zeros((2, 300)), info, verbose="error")
    path = tmp_path / "rest_raw.fif"
    raw.save(path, verbose="error")
    return path


def test_make_source_reaches_file_lsl_and_brainflow(tmp_path):
    path = _tiny_fif(tmp_path)
    src = make_source(f"file:{path}")
    assert isinstance(src, FileSource) and src.realtime and src.ch_types == ("eeg", "ecg")
    assert not make_source(f" FILE:{path} ", realtime=False).realtime
    cyton = make_source("0", serial_port="/dev/ttyUSB0")  # digits: a BrainFlow id
    assert isinstance(cyton, BrainFlowSource) and cyton.board_name == "cyton"
    assert make_source("synthetic").board_id == -1
    pylsl = pytest.importorskip("pylsl")
    name = f"st-agent-spec-{uuid.uuid4().hex[:8]}"
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 3, 250.0, "float32", name))
    lsl = make_source(f"lsl:{name}")
    assert isinstance(lsl, LSLSource) and lsl.sfreq == 250.0 and len(lsl.ch_names) == 3
    del outlet


def test_board_values_that_name_no_source(tmp_path):
    for spec, error, match in (
            ("lsl:", ValueError, "lsl: must be followed by a stream name"),
            ("file:  ", ValueError, "file: must be followed by a path"),
            (f"file:{tmp_path / 'none.edf'}", FileNotFoundError, r"none\.edf does not exist"),
            ("muse3", UnknownBoardError, r"unknown board 'muse3'.*lsl:<stream name>.*file:")):
        with pytest.raises(error, match=match):
            check_source_spec(spec)
        with pytest.raises(error, match=match):
            make_source(spec)
    odd = tmp_path / "x.xyz"
    odd.write_text("1")
    with pytest.raises(FileFormatError, match="unsupported extension"):
        check_source_spec(f"file:{odd}")
    check_source_spec(f"file:{_tiny_fif(tmp_path)}")  # nothing is read
    check_source_spec("lsl:anything")  # streams are looked for when the source opens
    check_source_spec(0)


def test_session_board_flag_reaches_file_and_lsl_sources(tmp_path):
    """``st-agent session --board file:<path>`` / ``lsl:<name>`` open those sources."""
    from st_agent.live.inputs import check_board
    from st_agent.live.session import SessionConfig, open_source

    path = _tiny_fif(tmp_path)
    src = open_source(SessionConfig(board=f"file:{path}", record=tmp_path))
    assert isinstance(src, FileSource) and src.realtime  # a live session plays in real time
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_board(f"file:{tmp_path / 'none.edf'}")  # refused before anything loads
    pylsl = pytest.importorskip("pylsl")
    name = f"st-agent-session-{uuid.uuid4().hex[:8]}"
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 4, 250.0, "float32", name))
    assert isinstance(open_source(SessionConfig(board=f"lsl:{name}", record=tmp_path)),
                      LSLSource)
    del outlet


def test_shutil_copy_of_real_file_is_untouched_by_reading(tmp_path):
    if not REAL_EDFS:
        pytest.skip(f"real EEG folder {EEG_DIR} is absent")
    copy = tmp_path / REAL_EDFS[-1].name
    shutil.copy(REAL_EDFS[-1], copy)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    with FileSource(copy) as src:
        src.read()
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
