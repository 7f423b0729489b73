"""Recorded files played back as a biometric source.

:class:`FileSource` reads EDF/BDF/FIF/BrainVision/GDF/EEGLAB files through
MNE (imported when a file is opened) and BrainFlow CSV files, checks an EDF's
size against its header before reading, and plays the samples back as fast as
they are asked for or in real time, optionally looping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from st_agent.biometrics.brainflow_source import PackageCounter, board_channels, brainflow_scales
from st_agent.biometrics.sources import (
    BiometricSource,
    CorruptFileError,
    FileFormatError,
    SourceError,
    SourceEvent,
    load_brainflow,
    nan_fill,
    resolve_board,
    type_from_name,
)
from st_agent.types import CH_TYPES, SignalChunk

__all__ = ["FileSource", "check_playable"]

logger = logging.getLogger(__name__)

_MNE_EXTS = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".gdf", ".set")


def _check_edf_size(path: Path) -> None:
    """Raise CorruptFileError if an EDF/BDF file is shorter than its header says."""
    bytes_per_sample = 3 if path.suffix.lower() == ".bdf" else 2
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise CorruptFileError(f"{path}: only {size} bytes, shorter than an EDF header "
                                   "(256 bytes); the file is truncated or not EDF/BDF")
        try:
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except ValueError as e:
            raise CorruptFileError(f"{path}: the EDF header is unreadable ({e}); "
                                   "the file is corrupt or not EDF/BDF") from e
        f.seek(256 + n_signals * 216)
        raw = f.read(n_signals * 8)
    try:
        per_record = sum(int(raw[i * 8:(i + 1) * 8].decode("ascii").strip())
                         for i in range(n_signals))
    except ValueError as e:
        raise CorruptFileError(f"{path}: samples-per-record fields are unreadable ({e})") from e
    if n_records < 0:  # -1: unknown while recording; nothing to check against
        return
    expected = header_bytes + n_records * per_record * bytes_per_sample
    if size < expected:
        raise CorruptFileError(
            f"{path}: truncated; the header promises {n_records} records ({expected} bytes) "
            f"but the file has {size} bytes. The file was not modified; re-export it or "
            "fix the header's record count with an EDF tool"
        )


def check_playable(path: Path) -> str:
    """Which reader plays ``path``: ``"mne"`` or ``"brainflow_csv"``; nothing is read.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    FileFormatError
        If its extension is not one :class:`FileSource` reads.
    """
    if not path.is_file():
        raise FileNotFoundError(f"recording {path} does not exist")
    name = path.name.lower()
    if name.endswith((".csv", ".tsv", ".txt")):
        return "brainflow_csv"
    if name.endswith(_MNE_EXTS):
        return "mne"
    raise FileFormatError(
        f"{path}: unsupported extension; use one of {', '.join(_MNE_EXTS)} "
        "(MNE readers) or .csv (BrainFlow, with board=...)"
    )


class FileSource(BiometricSource):
    """Play back a recording: EDF/BDF/FIF/BrainVision (MNE) or BrainFlow CSV.

    Parameters
    ----------
    path : str or Path
        The recording. ``.edf``, ``.bdf``, ``.fif``, ``.vhdr`` (BrainVision),
        ``.gdf``, ``.set`` go through ``mne.io.read_raw``; ``.csv``/``.tsv`` are
        BrainFlow files written by ``DataFilter.write_file`` and need ``board``.
    realtime : bool
        Deliver samples no faster than the wall clock; otherwise as fast as
        :meth:`read` is called.
    loop : bool
        Start again from the beginning at the end (an ``"end"`` event marks
        each wrap); otherwise :meth:`read` returns ``None`` at the end.
    chunk_sec : float
        Length of the chunks delivered.
    board : str or int, optional
        For BrainFlow CSV files: the board that recorded them (its description
        gives the column layout).
    ch_types : mapping of str to str, optional
        Channel name -> type overrides. Without them, types come from the file
        and, where the file calls everything EEG, from names such as ``ECG ECG``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CorruptFileError
        If the file is truncated or unreadable (the file is never modified).
    FileFormatError
        For an unknown extension, a CSV without ``board``, or a CSV whose
        column count does not match the board.
    """

    def __init__(self, path: str | Path, realtime: bool = False, loop: bool = False,
                 chunk_sec: float = 0.25, *, board: str | int | None = None,
                 ch_types: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._file_events: list[SourceEvent] = []  # drops found while loading
        path = Path(path)
        reader = check_playable(path)
        if not (isinstance(chunk_sec, int | float) and 0 < chunk_sec <= 60):
            raise ValueError(f"chunk_sec must be in (0, 60] seconds, got {chunk_sec!r}")
        self.path = path
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self.chunk_sec = float(chunk_sec)
        if reader == "brainflow_csv":
            data, sfreq, names, kinds = self._load_brainflow_csv(path, board)
        else:
            data, sfreq, names, kinds = self._load_mne(path)
        for ch, kind in (ch_types or {}).items():
            if ch not in names:
                raise ValueError(f"ch_types names {ch!r}, not in the file; channels: {names}")
            if kind not in CH_TYPES:
                raise ValueError(f"ch_types[{ch!r}] must be one of {CH_TYPES}, got {kind!r}")
            kinds[names.index(ch)] = kind
        self._data = data
        self._sfreq = float(sfreq)
        self._ch_names = tuple(names)
        self._ch_types = tuple(kinds)
        self._pos = 0
        self._t_start = 0.0
        self._played = 0
        self._ended = False

    # -- loading
    @staticmethod
    def _load_mne(path: Path) -> tuple[np.ndarray, float, list[str], list[str]]:
        import mne

        if path.suffix.lower() in (".edf", ".bdf"):
            _check_edf_size(path)
        try:
            raw = mne.io.read_raw(path, preload=True, verbose="error")
        except Exception as e:
            raise CorruptFileError(f"{path}: MNE cannot read it ({type(e).__name__}: {e}); "
                                   "the file was not modified") from e
        mne_types = raw.get_channel_types()
        kinds = []
        for name, t in zip(raw.ch_names, mne_types, strict=True):
            if t == "eeg":
                kinds.append(type_from_name(name, "eeg"))
            elif t in CH_TYPES:
                kinds.append(t)
            elif t == "bio":
                kinds.append(type_from_name(name, "misc"))
            else:
                kinds.append("misc")
        data = raw.get_data()  # (n_channels, n_times), volts
        if data.shape[1] == 0:
            raise CorruptFileError(f"{path}: contains no samples")
        return data, float(raw.info["sfreq"]), list(raw.ch_names), kinds

    def _load_brainflow_csv(self, path: Path, board: str | int | None,
                            ) -> tuple[np.ndarray, float, list[str], list[str]]:
        if board is None:
            raise FileFormatError(
                f"{path}: a BrainFlow CSV has no header; pass the board that recorded it, "
                "e.g. FileSource(path, board='synthetic')"
            )
        load_brainflow()
        from brainflow.board_shim import BoardShim

        name, board_id = resolve_board(board)
        n_rows = BoardShim.get_num_rows(board_id)
        widths = set()
        with path.open("r") as f:
            for i, line in enumerate(f):
                if line.strip():
                    widths.add(len(line.rstrip("\n").rstrip("\t").split("\t")))
                if len(widths) > 1:
                    raise FileFormatError(f"{path}: line {i + 1} has a different number of "
                                          f"columns than earlier lines ({sorted(widths)}); "
                                          "the file is damaged")
        if not widths:
            raise CorruptFileError(f"{path}: empty BrainFlow CSV")
        found = widths.pop()
        if found != n_rows:
            raise FileFormatError(
                f"{path}: {found} tab-separated columns, but board {name!r} writes {n_rows}; "
                "pass the board that recorded the file"
            )
        try:
            table = np.loadtxt(path, delimiter="\t", ndmin=2).T  # (n_rows, n_times)
        except ValueError as e:
            raise CorruptFileError(f"{path}: unparsable number ({e})") from e
        descr = BoardShim.get_board_descr(board_id)
        rows, names, kinds = board_channels(board_id)
        data = table[rows] * brainflow_scales(kinds)
        counter_row = descr.get("package_num_channel")
        if counter_row is not None and name not in ("ganglion", "ganglion_native"):
            data = self._fill_csv_drops(path, data, table[counter_row])
        return data, float(descr["sampling_rate"]), names, kinds

    def _fill_csv_drops(self, path: Path, data: np.ndarray, counter: np.ndarray) -> np.ndarray:
        """Insert NaN columns where the package counter skips, and report them."""
        jumps = [(c, n) for c, n in PackageCounter().split(counter) if n > 0 and c > 0]
        if not jumps:
            return data
        return nan_fill(data, jumps, self._file_events, 0, 0.0,
                         f"{path.name}: package counter")

    # -- interface
    @property
    def n_times(self) -> int:
        """Samples in the file (after NaN-filling dropped samples)."""
        return self._data.shape[1]

    @property
    def duration_sec(self) -> float:
        """Length of the recording in seconds."""
        return self.n_times / self._sfreq

    @property
    def ended(self) -> bool:
        """Whether a non-looping playback reached the end."""
        return self._ended

    def start(self) -> None:
        """Rewind to the beginning and start the playback clock."""
        self._pos = 0
        self._played = 0
        self._next_sample = 0
        self._ended = False
        self._t_start = time.monotonic()
        self._running = True

    def stop(self) -> None:
        """Stop playback (the file is closed already; data is in memory)."""
        self._running = False

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Next ``chunk_sec`` of the file; in real time, only once it is due."""
        if not self._running:
            raise SourceError("read() before start(); use `with FileSource(...) as src:`")
        if self._ended:
            return None
        n = max(1, round(self.chunk_sec * self._sfreq))
        if self._pos >= self.n_times:
            if not self.loop:
                self._ended = True
                self._event("end", self._played / self._sfreq, detail=f"{self.path.name} ended")
                return None
            self._pos = 0
            self._event("end", self._played / self._sfreq,
                        detail=f"{self.path.name} looped to its start")
        stop = min(self._pos + n, self.n_times)
        if self.realtime:
            due = self._t_start + (self._played + stop - self._pos) / self._sfreq
            wait = due - time.monotonic()
            if wait > timeout_sec:
                time.sleep(max(0.0, timeout_sec))
                return None
            if wait > 0:
                time.sleep(wait)
        data = self._data[:, self._pos:stop]
        t0 = self._played / self._sfreq
        offset = self._next_sample - self._pos  # stream index of file column 0
        for ev in self._file_events:
            if self._pos <= ev.first_missing_sample < stop:
                self._events.append(SourceEvent(
                    "dropped", ev.first_missing_sample / self._sfreq,
                    ev.first_missing_sample + offset, ev.n_missing, ev.detail))
        self._played += stop - self._pos
        self._pos = stop
        return self._chunk(data, t0)

