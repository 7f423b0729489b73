"""Recorded files played back as a biometric source.

:class:`FileSource` reads EDF/BDF/FIF/BrainVision/GDF/EEGLAB files through
MNE (imported when a file is opened) and BrainFlow CSV files, and plays the
samples back as fast as they are asked for or in real time, optionally looping.

Nothing a file says is trusted before it is checked. An EDF/BDF header is
validated before MNE reads a byte of data: field syntax, the number of signals,
the record duration, the samples per record and the file's size against what
the header promises. Every recording must then have

- a sampling rate in :data:`SFREQ_RANGE_HZ` (1 Hz to 100 kHz),
- 1 to :data:`MAX_CHANNELS` (1024) channels,
- at most :data:`MAX_VALUES` samples over all channels (2**29, 4.3 GB as float64),

the same ranges a recorded session must meet. A BrainVision header may name
only data and marker files beside it. A BrainFlow CSV must be tab-separated
ASCII numbers in the board's column layout; its package counter is checked
(:func:`~st_agent.biometrics.brainflow_source.check_counter`): NaN or
out-of-range values, repeated values and jumps that steady counting does not
follow are ignored, a counter that is mostly not counting is ignored whole, and
the samples NaN-filled for drops never exceed the rows of the file
(:data:`MAX_FILL_RATIO`). What is ignored is logged and reported as a
``"warning"`` :class:`~st_agent.biometrics.sources.SourceEvent`, never turned
into samples.

Every error names the file, what is wrong and what to do; they are
:class:`~st_agent.biometrics.sources.CorruptFileError`,
:class:`~st_agent.biometrics.sources.FileFormatError` or
:class:`~st_agent.biometrics.sources.MissingFileError` (all ``DataError``:
exit status 3 on the command line). The file is never modified.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from st_agent.biometrics.brainflow_source import (
    board_channels,
    brainflow_scales,
    check_counter,
    nan_fill,
)
from st_agent.biometrics.session_meta import MAX_CHANNELS, SFREQ_RANGE_HZ
from st_agent.biometrics.sources import (
    BiometricSource,
    CorruptFileError,
    FileFormatError,
    MissingFileError,
    SourceError,
    SourceEvent,
    load_brainflow,
    resolve_board,
    type_from_name,
)
from st_agent.types import CH_TYPES, SignalChunk

__all__ = ["MAX_CHANNELS", "MAX_FILL_RATIO", "MAX_VALUES", "SFREQ_RANGE_HZ", "FileSource",
           "check_playable", "check_recording", "check_recording_shape"]

logger = logging.getLogger(__name__)

_MNE_EXTS = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".gdf", ".set")

#: Most samples (all channels together) a recording may hold: 2**29 values are
#: 4.3 GB as float64, a day of 24-channel EEG at 256 Hz.
MAX_VALUES = 2 ** 29
#: NaN samples filled for package-counter drops, at most this share of a CSV's rows;
#: more is taken for a counter that does not count (ignored, with a warning).
MAX_FILL_RATIO = 1.0
#: Counting resumes after a drop with at least this many +1 steps (else: corrupt values).
_CONFIRM_STEPS = 3
_EDF_ANNOTATIONS = ("EDF Annotations", "BDF Annotations")


def check_recording_shape(path: Path, sfreq: float, n_channels: int, n_times: int) -> None:
    """Refuse a recording outside the documented ranges.

    Parameters
    ----------
    path : Path
        The file (named in the message).
    sfreq : float
        Sampling rate, Hz; must lie in :data:`SFREQ_RANGE_HZ`.
    n_channels : int
        Channels; 1 to :data:`MAX_CHANNELS`.
    n_times : int
        Samples per channel; at least 1, and ``n_channels * n_times`` at most
        :data:`MAX_VALUES`.

    Raises
    ------
    CorruptFileError
        Naming the file, the value and the range.
    """
    lo, hi = SFREQ_RANGE_HZ
    if not (isinstance(sfreq, int | float) and math.isfinite(sfreq) and lo <= sfreq <= hi):
        raise CorruptFileError(f"{path}: sampling rate {sfreq!r} Hz is outside the supported "
                               f"{lo:g}-{hi:g} Hz; the header is corrupt (check its record "
                               "duration and samples per record)")
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise CorruptFileError(f"{path}: {n_channels} channels; a recording needs 1 to "
                               f"{MAX_CHANNELS}")
    if n_times < 1:
        raise CorruptFileError(f"{path}: contains no samples")
    if n_channels * n_times > MAX_VALUES:
        raise CorruptFileError(
            f"{path}: {n_channels} channels x {n_times} samples is more than the "
            f"{MAX_VALUES} values a recording may hold; cut it into shorter files")


def _edf_fields(head: bytes, n: int, offset: int, width: int) -> list[str]:
    """``n`` fixed-width ASCII fields of an EDF header starting at ``offset``."""
    raw = head[offset:offset + n * width]
    return [raw[i * width:(i + 1) * width].decode("ascii", "replace").strip() for i in range(n)]


def _edf_number(path: Path, what: str, text: str, kind: type = int) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise CorruptFileError(f"{path}: the EDF header's {what} is {text!r}, not a number; "
                               "the file is corrupt or not EDF/BDF") from None
    if not math.isfinite(value):
        raise CorruptFileError(f"{path}: the EDF header's {what} is {text!r}, not finite; "
                               "the file is corrupt")
    return value


def _check_edf_header(path: Path) -> None:
    """Validate an EDF/BDF header against the file before MNE reads it.

    Raises
    ------
    CorruptFileError
        Truncated, unparsable or out-of-range header, naming the field.
    """
    bytes_per_sample = 3 if path.suffix.lower() == ".bdf" else 2
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise CorruptFileError(f"{path}: only {size} bytes, shorter than an EDF header "
                                   "(256 bytes); the file is truncated or not EDF/BDF")
        header_bytes = int(_edf_number(path, "header size", head[184:192].decode(
            "ascii", "replace").strip()))
        n_records = int(_edf_number(path, "number of records", head[236:244].decode(
            "ascii", "replace").strip()))
        duration = _edf_number(path, "record duration", head[244:252].decode(
            "ascii", "replace").strip(), float)
        n_signals = int(_edf_number(path, "number of signals", head[252:256].decode(
            "ascii", "replace").strip()))
        if not 1 <= n_signals <= MAX_CHANNELS:
            raise CorruptFileError(f"{path}: the EDF header says {n_signals} signals; a "
                                   f"recording has 1 to {MAX_CHANNELS}: the header is corrupt")
        if header_bytes != 256 * (n_signals + 1):
            raise CorruptFileError(f"{path}: the EDF header size is {header_bytes} bytes, but "
                                   f"{n_signals} signals need {256 * (n_signals + 1)}; the "
                                   "header is corrupt")
        if not 0 < duration <= 86_400:
            raise CorruptFileError(f"{path}: EDF record duration {duration:g} s is outside "
                                   "(0, 86400] s; the header is corrupt")
        sig = head + f.read(header_bytes - 256)
    if len(sig) < header_bytes:
        raise CorruptFileError(f"{path}: truncated inside its header ({size} bytes, the "
                               f"header alone needs {header_bytes})")
    _check_edf_signals(path, sig, n_signals, duration, n_records, size, bytes_per_sample)


def _check_edf_signals(path: Path, sig: bytes, ns: int, duration: float, n_records: int,
                       size: int, bytes_per_sample: int) -> None:
    """The per-signal fields of an EDF header, and the file size they imply."""
    labels = _edf_fields(sig, ns, 256, 16)
    spr = [int(_edf_number(path, f"samples per record of signal {i + 1}", t))
           for i, t in enumerate(_edf_fields(sig, ns, 256 + 216 * ns, 8))]
    for name, off in (("physical minimum", 104), ("physical maximum", 112),
                      ("digital minimum", 120), ("digital maximum", 128)):
        for i, t in enumerate(_edf_fields(sig, ns, 256 + off * ns, 8)):
            _edf_number(path, f"{name} of signal {i + 1} ({labels[i]!r})", t, float)
    dmin = [float(t) for t in _edf_fields(sig, ns, 256 + 120 * ns, 8)]
    dmax = [float(t) for t in _edf_fields(sig, ns, 256 + 128 * ns, 8)]
    for i, (lo, hi, n) in enumerate(zip(dmin, dmax, spr, strict=True)):
        if n < 1 or lo >= hi:
            raise CorruptFileError(
                f"{path}: signal {i + 1} ({labels[i]!r}) has {n} samples per record and "
                f"digital range [{lo:g}, {hi:g}]; each signal needs >= 1 sample and min < max")
    data_spr = [n for n, lab in zip(spr, labels, strict=True) if lab not in _EDF_ANNOTATIONS]
    check_recording_shape(path, max(data_spr or spr) / duration, ns, 1)
    per_record = sum(spr)
    record_bytes = per_record * bytes_per_sample
    in_file = (size - 256 * (ns + 1)) // record_bytes
    if n_records <= 0:  # -1: unknown while recording; the file's size says
        if in_file < 1:
            raise CorruptFileError(f"{path}: no complete data record ({record_bytes} bytes "
                                   "each) after the header; the file is truncated")
        n_records = in_file
    if n_records * per_record > MAX_VALUES:
        raise CorruptFileError(f"{path}: the header promises {n_records} records of "
                               f"{per_record} samples, more than the {MAX_VALUES} values a "
                               "recording may hold")
    expected = 256 * (ns + 1) + n_records * record_bytes
    if size < expected:
        raise CorruptFileError(
            f"{path}: truncated; the header promises {n_records} records ({expected} bytes) "
            f"but the file has {size} bytes. The file was not modified; re-export it or "
            "fix the header's record count with an EDF tool"
        )


_VHDR_REF = re.compile(r"^\s*(DataFile|MarkerFile)\s*=\s*(.*?)\s*$", re.MULTILINE)


def _check_vhdr(path: Path) -> None:
    """A BrainVision header may name only files in its own folder (no other file is read)."""
    with path.open("rb") as f:
        text = f.read(1 << 20).decode("latin-1")
    folder = path.parent.resolve()
    for key, value in _VHDR_REF.findall(text):
        target = (folder / value).resolve()
        if not value or not target.is_relative_to(folder):
            raise FileFormatError(f"{path}: {key}={value!r} points outside the header's "
                                  f"folder {folder}; a BrainVision header must name a file "
                                  "beside it")
        if key == "DataFile" and not target.is_file():
            raise FileFormatError(f"{path}: DataFile={value!r} is not a regular file in "
                                  f"{folder}; put the .eeg file beside the header")


def check_playable(path: Path) -> str:
    """Which reader plays ``path``: ``"mne"`` or ``"brainflow_csv"``; nothing is read.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist or is not a regular file (a folder, a device);
        it is a ``FileNotFoundError`` too.
    FileFormatError
        If its extension is not one :class:`FileSource` reads.
    """
    if not path.is_file():
        what = ("is a folder" if path.is_dir() else
                "is not a regular file (a device, socket or pipe)" if path.exists() else
                "does not exist")
        raise MissingFileError(f"recording {path} {what}; give the path of a recording file "
                               f"({', '.join(_MNE_EXTS)} or a BrainFlow .csv)")
    name = path.name.lower()
    if name.endswith((".csv", ".tsv", ".txt")):
        return "brainflow_csv"
    if name.endswith(_MNE_EXTS):
        return "mne"
    raise FileFormatError(
        f"{path}: unsupported extension; use one of {', '.join(_MNE_EXTS)} "
        "(MNE readers) or .csv (BrainFlow, with board=...)"
    )


def check_recording(path: Path) -> str:
    """:func:`check_playable`, and the header checks that need no samples (EDF/BDF,
    BrainVision), so that a bad recording is refused before a session starts.

    Returns
    -------
    reader : {"mne", "brainflow_csv"}

    Raises
    ------
    MissingFileError, FileFormatError, CorruptFileError
        As :class:`FileSource` raises them.
    """
    reader = check_playable(path)
    suffix = path.suffix.lower()
    if suffix in (".edf", ".bdf"):
        _check_edf_header(path)
    elif suffix == ".vhdr":
        _check_vhdr(path)
    return reader


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
    MissingFileError
        If ``path`` does not exist or is not a regular file (a ``FileNotFoundError``).
    CorruptFileError
        If the file is truncated, unreadable, not text (CSV), or out of the
        documented ranges (sampling rate, channels, size); the file is never
        modified.
    FileFormatError
        For an unknown extension, a CSV without ``board``, a CSV whose column
        count does not match the board, or a BrainVision header naming files
        outside its folder.
    """

    def __init__(self, path: str | Path, realtime: bool = False, loop: bool = False,
                 chunk_sec: float = 0.25, *, board: str | int | None = None,
                 ch_types: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._file_events: list[SourceEvent] = []  # drops and warnings found while loading
        #: What was found in the file and ignored (also logged and ``"warning"`` events).
        self.warnings: list[str] = []
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

        check_recording(path)
        try:
            raw = mne.io.read_raw(path, preload=True, verbose="error")
        except Exception as e:
            raise CorruptFileError(f"{path}: MNE cannot read it ({type(e).__name__}: {e}); "
                                   "the file was not modified") from e
        check_recording_shape(path, float(raw.info["sfreq"]), len(raw.ch_names), raw.n_times)
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
        return data, float(raw.info["sfreq"]), list(raw.ch_names), kinds

    @staticmethod
    def _csv_columns(path: Path) -> int:
        """Columns of a BrainFlow CSV, checked line by line (ASCII, one width, bounded)."""
        widths: set[int] = set()
        n_lines = 0
        with path.open("rb") as f:
            for i, line in enumerate(f):
                try:
                    text = line.decode("ascii")
                except UnicodeDecodeError as e:
                    raise CorruptFileError(
                        f"{path}: line {i + 1}, byte {e.start + 1} is 0x{line[e.start]:02x}, "
                        "not text; a BrainFlow CSV holds tab-separated numbers (as "
                        "DataFilter.write_file writes them): the file is damaged or not a "
                        "BrainFlow CSV") from None
                if not text.strip():
                    continue
                widths.add(len(text.rstrip("\r\n").rstrip("\t").split("\t")))
                n_lines += 1
                if len(widths) > 1:
                    raise FileFormatError(f"{path}: line {i + 1} has a different number of "
                                          f"columns than earlier lines ({sorted(widths)}); "
                                          "the file is damaged")
                if n_lines * max(widths) > MAX_VALUES:
                    raise CorruptFileError(f"{path}: more than the {MAX_VALUES} values a "
                                           "recording may hold; cut it into shorter files")
        if not widths:
            raise CorruptFileError(f"{path}: empty BrainFlow CSV")
        return widths.pop()

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
        found = self._csv_columns(path)
        if found != n_rows:
            raise FileFormatError(
                f"{path}: {found} tab-separated columns, but board {name!r} writes {n_rows}; "
                "pass the board that recorded the file"
            )
        try:
            table = np.loadtxt(path, delimiter="\t", ndmin=2, encoding="ascii").T
        except ValueError as e:  # (n_rows, n_times)
            raise CorruptFileError(f"{path}: unparsable number ({e}); a BrainFlow CSV holds "
                                   "tab-separated numbers: the file is damaged") from e
        descr = BoardShim.get_board_descr(board_id)
        sfreq = float(descr["sampling_rate"])
        rows, names, kinds = board_channels(board_id)
        check_recording_shape(path, sfreq, len(rows), table.shape[1])
        data = table[rows] * brainflow_scales(kinds)
        counter_row = descr.get("package_num_channel")
        if counter_row is not None and name not in ("ganglion", "ganglion_native"):
            data = self._fill_csv_drops(path, data, table[counter_row])
        return data, sfreq, names, kinds

    def _warn(self, detail: str) -> None:
        """Something in the file was ignored: logged, kept, and a ``"warning"`` event."""
        logger.warning("%s", detail)
        self.warnings.append(detail)
        self._file_events.append(SourceEvent("warning", 0.0, 0, 0, detail))

    def _fill_csv_drops(self, path: Path, data: np.ndarray, counter: np.ndarray) -> np.ndarray:
        """Insert NaN columns where a trustworthy package counter skips, and report them.

        Counter values that cannot be trusted are ignored with a warning, never
        turned into samples; the fill is at most :data:`MAX_FILL_RATIO` of the rows.
        """
        check = check_counter(counter, confirm=_CONFIRM_STEPS)
        problem = check.problem()
        limit = int(MAX_FILL_RATIO * counter.size)
        if problem is None and check.n_missing > limit:
            problem = (f"its jumps would add {check.n_missing} samples to {counter.size} "
                       f"rows (at most {limit} are plausible)")
        if problem is not None:
            self._warn(f"{path.name}: package counter ignored: {problem}; no drops are "
                       "filled, the rows play as they are")
            return data
        if check.n_invalid or check.n_unconfirmed:
            self._warn(f"{path.name}: {check.n_invalid} package counter values are not "
                       f"integers in [0, 256) and {check.n_unconfirmed} do not fit the "
                       "counting around them (corrupt values or duplicated rows, not drops); "
                       "ignored, no samples filled for them")
        jumps = [(c, n) for c, n in check.jumps if n > 0 and c > 0]
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
                    ev.kind, ev.first_missing_sample / self._sfreq,
                    ev.first_missing_sample + offset, ev.n_missing, ev.detail))
        self._played += stop - self._pos
        self._pos = stop
        return self._chunk(data, t0)

