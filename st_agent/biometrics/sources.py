"""Biometric sources: BrainFlow boards, recorded files and Lab Streaming Layer.

Every source has the same small interface (:class:`BiometricSource`): ``start()``,
``read(timeout_sec)`` returning a :class:`~st_agent.types.SignalChunk` or
``None``, ``stop()``, and the properties ``sfreq``, ``ch_names`` and
``ch_types``. Each is a context manager whose exit always stops the stream and
releases the device, even when the body raised::

    with BrainFlowSource("synthetic") as src:
        chunk = src.read(timeout_sec=0.5)

Units are converted once, on the way in: BrainFlow and most LSL EEG devices
deliver µV, and chunks carry volts (eeg/emg/ecg) and siemens (eda), as MNE does.

Continuity is checked, never assumed. Package counters (BrainFlow) and sample
timestamps (LSL: tracked against the sample count, so that jitter is not taken
for loss; see :class:`~st_agent.biometrics.lsl_source.StampGaps`) are compared
with the expected sampling rate; missing samples are
reported as :class:`SourceEvent` (``pop_events()``) and the next chunk's
``first_sample`` jumps by the missing count, so consumers see the gap in the
sample index too. A BrainFlow board that stops delivering for ``stall_sec``
(2 s by default) is reconnected with exponential backoff.

Errors are :class:`SourceError` subclasses whose messages name the offending
value (or file) and the fix. They are also the project's typed errors
(:mod:`st_agent.errors`) and keep their old builtin bases: a bad board name or
missing serial port is a ``UsageError`` (exit 2), a bad recording a ``DataError``
(exit 3; :class:`CorruptFileError`, :class:`FileFormatError`,
:class:`MissingFileError`, which is still a ``FileNotFoundError``), a board or
stream that fails a ``DeviceError`` (exit 4; :class:`BoardError`,
:class:`StreamNotFoundError`).

This module holds the interface, the events, the errors, the BrainFlow board
catalogue and :func:`make_source` (a source from a ``--board`` string); the
sources themselves live in :mod:`~st_agent.biometrics.brainflow_source`,
:mod:`~st_agent.biometrics.file_source` and :mod:`~st_agent.biometrics.lsl_source`
and are importable from here too. Importing this module loads neither
BrainFlow, MNE nor pylsl; each loads when a source needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from st_agent.errors import (
    EXIT_DATA,
    EXIT_DEVICE,
    EXIT_USAGE,
    DataError,
    DeviceError,
    STAgentError,
    UsageError,
)
from st_agent.types import SignalChunk

if TYPE_CHECKING:
    from st_agent.biometrics.brainflow_source import BrainFlowSource, board_channels, nan_fill
    from st_agent.biometrics.file_source import FileSource
    from st_agent.biometrics.lsl_source import LSLSource

__all__ = [
    "BOARD_REQUIREMENTS",
    "BiometricSource",
    "BoardError",
    "BrainFlowSource",
    "CorruptFileError",
    "FileFormatError",
    "FileSource",
    "LSLSource",
    "MissingFileError",
    "MissingParameterError",
    "SourceError",
    "SourceEvent",
    "StreamNotFoundError",
    "UnknownBoardError",
    "board_channels",
    "check_source_spec",
    "list_boards",
    "load_brainflow",
    "make_source",
    "nan_fill",
    "resolve_board",
    "type_from_name",
]

logger = logging.getLogger(__name__)

# Defined in the modules of each kind of source; importable from here, loaded on first use.
_LAZY = {
    "BrainFlowSource": "st_agent.biometrics.brainflow_source",
    "board_channels": "st_agent.biometrics.brainflow_source",
    "nan_fill": "st_agent.biometrics.brainflow_source",
    "FileSource": "st_agent.biometrics.file_source",
    "LSLSource": "st_agent.biometrics.lsl_source",
}


def __getattr__(name: str) -> Any:
    """Import a source class from its own module the first time it is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

EventKind = Literal["gap", "reconnect", "dropped", "end", "warning"]
_EVENT_KINDS = ("gap", "reconnect", "dropped", "end", "warning")

#: Boards that cannot start without a parameter: board name -> (parameter, example).
BOARD_REQUIREMENTS: dict[str, tuple[str, str]] = {
    "cyton": ("serial_port",
              "/dev/ttyUSB0 (Linux), COM3 (Windows), /dev/cu.usbserial-DM00 (macOS)"),
    "cyton_daisy": ("serial_port", "/dev/ttyUSB0"),
    "ganglion": ("serial_port", "/dev/ttyACM0 (the BLED112 dongle)"),
    "muse_2_bled": ("serial_port", "/dev/ttyACM0 (the BLED112 dongle)"),
    "muse_s_bled": ("serial_port", "/dev/ttyACM0 (the BLED112 dongle)"),
}

#: Boards documented and tested for selection by name (any BrainFlow board works by id).
DOCUMENTED_BOARDS = ("synthetic", "muse_2", "muse_s", "cyton", "cyton_daisy", "ganglion")


# --------------------------------------------------------------------------- errors


class SourceError(STAgentError, RuntimeError):
    """Base class of the errors a biometric source raises (a device problem unless a
    subclass says otherwise: exit status 4 on the command line)."""

    exit_code = EXIT_DEVICE


class UnknownBoardError(SourceError, UsageError):
    """A board name or id that BrainFlow does not know."""

    exit_code = EXIT_USAGE


class MissingParameterError(SourceError, UsageError):
    """A board that needs a connection parameter (serial port, MAC address)."""

    exit_code = EXIT_USAGE


class BoardError(SourceError, DeviceError):
    """A board that cannot be opened, or stopped delivering and could not be reopened."""

    exit_code = EXIT_DEVICE


class CorruptFileError(SourceError, DataError):
    """A recording that is truncated, unreadable or out of the documented ranges; the
    file is left untouched."""

    exit_code = EXIT_DATA


class FileFormatError(SourceError, DataError):
    """A recording in an unsupported format or with the wrong layout."""

    exit_code = EXIT_DATA


class MissingFileError(SourceError, DataError, FileNotFoundError):
    """A recording path that is missing or not a regular file (a folder, a device)."""

    exit_code = EXIT_DATA


class StreamNotFoundError(SourceError, DeviceError):
    """No Lab Streaming Layer stream matched the query."""

    exit_code = EXIT_DEVICE


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a stream, for the recording and the log.

    Parameters
    ----------
    kind : {"gap", "reconnect", "dropped", "end", "warning"}
        ``"dropped"``: samples missing inside a running stream (package counter
        or timestamps); ``"gap"``: the stream stalled and samples were lost
        while it was down; ``"reconnect"``: the device was opened again;
        ``"end"``: a file reached its end (or looped to its start);
        ``"warning"``: something in the stream could not be trusted and was
        ignored (e.g. a package counter with NaN or garbage values), no samples
        added or removed.
    t_sec : float
        Time on the source's clock at which the event was detected.
    first_missing_sample : int
        Stream index of the first missing sample (the next chunk's
        ``first_sample`` is ``first_missing_sample + n_missing``); for events
        without missing samples, the index of the next sample.
    n_missing : int
        Number of samples lost (0 for ``"reconnect"``, ``"end"`` and ``"warning"``).
    detail : str
        Human-readable explanation.
    """

    kind: EventKind
    t_sec: float
    first_missing_sample: int
    n_missing: int = 0
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _EVENT_KINDS:
            raise ValueError(f"kind must be one of {_EVENT_KINDS}, got {self.kind!r}")
        if self.n_missing < 0 or self.first_missing_sample < 0:
            raise ValueError(
                f"n_missing and first_missing_sample must be >= 0, got "
                f"{self.n_missing} and {self.first_missing_sample}"
            )


# --------------------------------------------------------------------------- base


class BiometricSource(ABC):
    """A stream of biometric samples: start, read chunks, stop.

    Use it as a context manager; ``__exit__`` always calls :meth:`stop`, which
    releases the device, also when the body raised.
    """

    def __init__(self) -> None:
        self._events: list[SourceEvent] = []
        self._next_sample = 0
        self._running = False
        # Each source sets these once it knows its channels (in __init__ or start).
        self._sfreq = 0.0
        self._ch_names: tuple[str, ...] = ()
        self._ch_types: tuple[str, ...] = ()

    # -- to implement
    @abstractmethod
    def start(self) -> None:
        """Open the device (or file) and begin streaming."""

    @abstractmethod
    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Return the samples that arrived since the last call.

        Parameters
        ----------
        timeout_sec : float
            Longest time to wait for at least one sample.

        Returns
        -------
        chunk : SignalChunk or None
            ``None`` when nothing arrived within ``timeout_sec`` (or a file
            ended without looping).
        """

    @abstractmethod
    def stop(self) -> None:
        """Stop streaming and release the device. Safe to call twice."""

    # -- shared
    @property
    def sfreq(self) -> float:
        """Sampling rate in Hz."""
        return self._sfreq

    @property
    def ch_names(self) -> tuple[str, ...]:
        """Names of the channels, one per row of every chunk."""
        return self._ch_names

    @property
    def ch_types(self) -> tuple[str, ...]:
        """Types of the channels (see :data:`st_agent.types.CH_TYPES`)."""
        return self._ch_types

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._running

    def pop_events(self) -> list[SourceEvent]:
        """Return and clear the events (gaps, drops, reconnects, end) seen so far."""
        events, self._events = self._events, []
        return events

    def iter_chunks(self, timeout_sec: float = 1.0) -> Iterator[SignalChunk]:
        """Yield chunks until :meth:`read` returns ``None``."""
        while (chunk := self.read(timeout_sec)) is not None:
            yield chunk

    def _event(self, kind: EventKind, t_sec: float, n_missing: int = 0,
               detail: str = "") -> None:
        """Record an event; advance the sample index past ``n_missing`` samples."""
        ev = SourceEvent(kind, float(t_sec), self._next_sample, int(n_missing), detail)
        self._next_sample += int(n_missing)
        level = logging.INFO if kind in ("end", "reconnect") else logging.WARNING
        logger.log(level, "%s: %s", type(self).__name__, ev)
        self._events.append(ev)

    def _chunk(self, data: np.ndarray, t0_sec: float) -> SignalChunk:
        chunk = SignalChunk(data, self.sfreq, self.ch_names, self.ch_types,
                            first_sample=self._next_sample, t0_sec=float(t0_sec))
        self._next_sample += chunk.n_times
        return chunk

    def __enter__(self) -> BiometricSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"{type(self).__name__}({len(self.ch_names)} ch @ {self.sfreq:g} Hz, {state})"


# --------------------------------------------------------------------------- helpers


def type_from_name(name: str, default: str = "eeg") -> str:
    """Guess a channel type from its name, for files that call everything EEG.

    Parameters
    ----------
    name : str
        Channel name, e.g. ``"ECG ECG"``, ``"EMG chin"``, ``"EEG Fp1"``.
    default : str
        Type returned when the name says nothing.

    Returns
    -------
    ch_type : str
        One of :data:`st_agent.types.CH_TYPES`.
    """
    up = name.upper()
    for keys, ch_type in ((("ECG", "EKG"), "ecg"), (("EMG",), "emg"),
                          (("PPG", "PLETH", "BVP"), "ppg"), (("EDA", "GSR"), "eda"),
                          (("RESP",), "resp"), (("EOG", "STATUS", "TRIG", "STI"), "misc")):
        if any(k in up for k in keys):
            return ch_type
    return default


@contextlib.contextmanager
def _pkg_resources_shim() -> Iterator[None]:
    """Let BrainFlow find its libraries where ``pkg_resources`` is gone.

    BrainFlow 5.x on Python < 3.12 falls back to ``pkg_resources`` (removed in
    setuptools 81) to locate its shared libraries. This provides the one
    function it calls, only while the libraries load, then removes itself.
    """
    if importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    shim = types.ModuleType("pkg_resources")

    def resource_filename(module: str, rel_path: str) -> str:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ImportError(f"cannot locate module {module!r}")
        return os.path.join(os.path.dirname(spec.origin), rel_path)

    shim.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        sys.modules.pop("pkg_resources", None)


_BRAINFLOW_LOADED = False


def load_brainflow() -> None:
    """Load BrainFlow's shared libraries once (idempotent) and silence its logger.

    Raises
    ------
    BoardError
        If BrainFlow is not installed or its libraries cannot be loaded.
    """
    global _BRAINFLOW_LOADED  # a process-wide library handle, not configuration
    if _BRAINFLOW_LOADED:
        return
    try:
        from brainflow import board_shim, data_filter, ml_model
    except ImportError as e:
        raise BoardError("BrainFlow is not installed; pip install brainflow") from e
    try:
        with _pkg_resources_shim():
            board_shim.BoardControllerDLL.get_instance()
            data_filter.DataHandlerDLL.get_instance()
            ml_model.MLModuleDLL.get_instance()
    except Exception as e:
        raise BoardError(f"BrainFlow's libraries failed to load: {e}") from e
    board_shim.BoardShim.disable_board_logger()
    data_filter.DataFilter.disable_data_logger()
    ml_model.MLModel.disable_ml_logger()
    _BRAINFLOW_LOADED = True


def list_boards() -> dict[str, int]:
    """All BrainFlow boards by name.

    Returns
    -------
    boards : dict of str to int
        Lower-case names without the ``_board`` suffix (``"synthetic"``,
        ``"muse_2"``, ``"cyton"``, ``"ganglion"``, …) mapped to BrainFlow ids.
    """
    from brainflow.board_shim import BoardIds

    names: dict[str, int] = {}
    for member in BoardIds:
        name = member.name.lower()
        name = name.removesuffix("_board")
        names[name] = int(member.value)
    return names


def resolve_board(board: str | int) -> tuple[str, int]:
    """Return ``(name, id)`` for a board name or BrainFlow id.

    Parameters
    ----------
    board : str or int
        A name from :func:`list_boards` (case-insensitive; ``"Muse 2"``,
        ``"muse-2"`` and ``"MUSE_2_BOARD"`` all work) or a BrainFlow board id.

    Raises
    ------
    UnknownBoardError
        Naming the value received and listing the valid names.
    """
    boards = list_boards()
    if isinstance(board, bool) or not isinstance(board, int | str | np.integer):
        raise UnknownBoardError(
            f"board must be a board name or BrainFlow id, got {board!r} "
            f"({type(board).__name__}); valid names: {', '.join(DOCUMENTED_BOARDS)}, …"
        )
    if isinstance(board, int | np.integer):
        for name, bid in boards.items():
            if bid == int(board):
                return name, bid
        raise UnknownBoardError(
            f"unknown BrainFlow board id {board!r}; valid ids: {sorted(boards.values())}"
        )
    key = board.strip().lower().replace(" ", "_").replace("-", "_").removesuffix("_board")
    if key not in boards:
        raise UnknownBoardError(
            f"unknown board {board!r}; documented boards: {', '.join(DOCUMENTED_BOARDS)}; "
            f"all valid names: {', '.join(sorted(boards))}"
        )
    return key, boards[key]


# --------------------------------------------------------------------------- by name

#: Prefixes of ``--board`` values that name a non-BrainFlow source.
LSL_PREFIX = "lsl:"
FILE_PREFIX = "file:"


def _parse_spec(board: str | int) -> tuple[str, str | int]:
    """``("lsl", name)``, ``("file", path)`` or ``("brainflow", name or id)``."""
    if not isinstance(board, str):
        return "brainflow", board
    spec = board.strip()
    for kind, prefix, what in (("lsl", LSL_PREFIX, "a stream name, e.g. lsl:OpenBCI_EEG"),
                               ("file", FILE_PREFIX, "a path, e.g. file:recordings/rest.edf")):
        if spec.lower().startswith(prefix):
            value = spec[len(prefix):].strip()
            if not value:
                raise ValueError(f"board {board!r}: {prefix} must be followed by {what}")
            return kind, value
    return "brainflow", int(spec) if spec.isdigit() else spec


def _with_hint(e: UnknownBoardError) -> UnknownBoardError:
    return UnknownBoardError(f"{e}; or {LSL_PREFIX}<stream name> for a Lab Streaming Layer "
                             f"stream, {FILE_PREFIX}<path> for a recording")


def check_source_spec(board: str | int) -> None:
    """Refuse a ``--board`` value that cannot name a source, before anything opens.

    Parameters
    ----------
    board : str or int
        As :func:`make_source` takes it. An LSL stream is not looked for here
        (that takes seconds); a file must exist, have a supported extension and,
        for EDF/BDF/BrainVision, a valid header (no samples are read); a
        BrainFlow board must be known.

    Raises
    ------
    ValueError
        If ``lsl:`` or ``file:`` is not followed by a name or path.
    MissingFileError
        If the file does not exist or is not a regular file (a ``FileNotFoundError``).
    FileFormatError, CorruptFileError
        If the file's extension is not one :class:`FileSource` reads, or its
        header is invalid.
    UnknownBoardError
        For a board BrainFlow does not know.
    """
    kind, value = _parse_spec(board)
    if kind == "file":
        from st_agent.biometrics.file_source import check_recording

        check_recording(Path(str(value)).expanduser())
    elif kind == "brainflow":
        try:
            resolve_board(value)
        except UnknownBoardError as e:
            raise _with_hint(e) from e


def make_source(board: str | int, *, serial_port: str | None = None,
                mac_address: str | None = None, other_info: str | None = None,
                realtime: bool = True) -> BiometricSource:
    """The source a ``--board`` value names (not started).

    Parameters
    ----------
    board : str or int
        ``"lsl:<name>"``: the Lab Streaming Layer stream of that name
        (:class:`LSLSource`); ``"file:<path>"``: a recording played back
        (:class:`FileSource`; EDF/BDF/FIF/BrainVision...); anything else: a
        BrainFlow board name or id (:class:`BrainFlowSource`), a string of
        digits counting as an id.
    serial_port, mac_address, other_info : str, optional
        Connection parameters of a BrainFlow board (ignored by LSL and files).
    realtime : bool
        Play a file back no faster than the wall clock (a live session) rather
        than as fast as it is read.

    Returns
    -------
    source : BiometricSource

    Raises
    ------
    ValueError
        If ``lsl:`` or ``file:`` is not followed by a name or path.
    UnknownBoardError
        For a board BrainFlow does not know; the message lists the valid names.
    StreamNotFoundError
        If no LSL stream of that name answers.
    FileNotFoundError
        If the file does not exist.

    Examples
    --------
    >>> make_source("file:/data/rest.edf")  # doctest: +SKIP
    FileSource(21 ch @ 160 Hz, stopped)
    """
    kind, value = _parse_spec(board)
    if kind == "lsl":
        from st_agent.biometrics.lsl_source import LSLSource

        return LSLSource(str(value))
    if kind == "file":
        from st_agent.biometrics.file_source import FileSource

        return FileSource(Path(str(value)).expanduser(), realtime=realtime)
    from st_agent.biometrics.brainflow_source import BrainFlowSource

    try:
        return BrainFlowSource(value, serial_port=serial_port, mac_address=mac_address,
                               other_info=other_info)
    except UnknownBoardError as e:
        raise _with_hint(e) from e
