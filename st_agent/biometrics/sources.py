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
timestamps are compared with the expected sampling rate; missing samples are
reported as :class:`SourceEvent` (``pop_events()``) and the next chunk's
``first_sample`` jumps by the missing count, so consumers see the gap in the
sample index too. A BrainFlow board that stops delivering for ``stall_sec``
(2 s by default) is reconnected with exponential backoff.

Errors are :class:`SourceError` subclasses whose messages name the offending
value and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
import time
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from st_agent.types import CH_TYPES, SignalChunk

__all__ = [
    "BOARD_REQUIREMENTS",
    "BiometricSource",
    "BrainFlowSource",
    "CorruptFileError",
    "FileFormatError",
    "FileSource",
    "LSLSource",
    "MissingParameterError",
    "SourceError",
    "SourceEvent",
    "StreamNotFoundError",
    "UnknownBoardError",
    "board_channels",
    "list_boards",
    "load_brainflow",
    "resolve_board",
    "type_from_name",
]

logger = logging.getLogger(__name__)

EventKind = Literal["gap", "reconnect", "dropped", "end"]
_EVENT_KINDS = ("gap", "reconnect", "dropped", "end")

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

# Channel types whose BrainFlow unit is µV (-> V) or µS (-> S).
_MICRO_TYPES = ("eeg", "emg", "ecg", "eda")


# --------------------------------------------------------------------------- errors


class SourceError(RuntimeError):
    """Base class of the errors a biometric source raises."""


class UnknownBoardError(SourceError, ValueError):
    """A board name or id that BrainFlow does not know."""


class MissingParameterError(SourceError, ValueError):
    """A board that needs a connection parameter (serial port, MAC address)."""


class CorruptFileError(SourceError):
    """A recording that is truncated or unreadable; the file is left untouched."""


class FileFormatError(SourceError, ValueError):
    """A recording in an unsupported format or with the wrong layout."""


class StreamNotFoundError(SourceError):
    """No Lab Streaming Layer stream matched the query."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a stream, for the recording and the log.

    Parameters
    ----------
    kind : {"gap", "reconnect", "dropped", "end"}
        ``"dropped"``: samples missing inside a running stream (package counter
        or timestamps); ``"gap"``: the stream stalled and samples were lost
        while it was down; ``"reconnect"``: the device was opened again;
        ``"end"``: a file reached its end (or looped to its start).
    t_sec : float
        Time on the source's clock at which the event was detected.
    first_missing_sample : int
        Stream index of the first missing sample (the next chunk's
        ``first_sample`` is ``first_missing_sample + n_missing``); for events
        without missing samples, the index of the next sample.
    n_missing : int
        Number of samples lost (0 for ``"reconnect"`` and ``"end"``).
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
    SourceError
        If BrainFlow is not installed or its libraries cannot be loaded.
    """
    global _BRAINFLOW_LOADED  # a process-wide library handle, not configuration
    if _BRAINFLOW_LOADED:
        return
    try:
        from brainflow import board_shim, data_filter, ml_model
    except ImportError as e:
        raise SourceError("BrainFlow is not installed; pip install brainflow") from e
    try:
        with _pkg_resources_shim():
            board_shim.BoardControllerDLL.get_instance()
            data_filter.DataHandlerDLL.get_instance()
            ml_model.MLModuleDLL.get_instance()
    except Exception as e:
        raise SourceError(f"BrainFlow's libraries failed to load: {e}") from e
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


def board_channels(board_id: int, ch_types: Mapping[str, str] | None = None,
                   ) -> tuple[list[int], list[str], list[str]]:
    """Rows, names and types of the biosignal channels of a BrainFlow board.

    EEG rows come first with BrainFlow's ``eeg_names`` (``EEG1``… where it has
    none); EMG/ECG rows that are not also EEG rows follow, then PPG and EDA.
    On boards such as OpenBCI, where every analogue input is listed as EEG,
    EMG and ECG at once, the inputs are typed EEG; pass ``ch_types`` to
    retype some.

    Parameters
    ----------
    board_id : int
        BrainFlow board id.
    ch_types : mapping of str to str, optional
        Channel name -> type overrides, e.g. ``{"O2": "ecg"}``.

    Returns
    -------
    rows : list of int
        Row indices into BrainFlow's data array.
    names, types : list of str
        Channel names and types, one per row.
    """
    load_brainflow()
    from brainflow.board_shim import BoardShim

    descr = BoardShim.get_board_descr(board_id)
    rows: list[int] = []
    names: list[str] = []
    kinds: list[str] = []
    eeg = list(descr.get("eeg_channels", []))
    eeg_names = [n for n in str(descr.get("eeg_names", "")).split(",") if n]
    if len(eeg_names) != len(eeg):
        eeg_names = [f"EEG{i + 1}" for i in range(len(eeg))]
    rows += eeg
    names += eeg_names
    kinds += ["eeg"] * len(eeg)
    for key, kind in (("emg_channels", "emg"), ("ecg_channels", "ecg"),
                      ("ppg_channels", "ppg"), ("eda_channels", "eda")):
        extra = [r for r in descr.get(key, []) if r not in rows]
        rows += extra
        names += [f"{kind.upper()}{i + 1}" if len(extra) > 1 else kind.upper()
                  for i in range(len(extra))]
        kinds += [kind] * len(extra)
    for name, kind in (ch_types or {}).items():
        if name not in names:
            raise ValueError(f"ch_types names channel {name!r}, which the board lacks; "
                             f"its channels: {names}")
        if kind not in CH_TYPES:
            raise ValueError(f"ch_types[{name!r}] must be one of {CH_TYPES}, got {kind!r}")
        kinds[names.index(name)] = kind
    return rows, names, kinds


def _scales(ch_types: tuple[str, ...] | list[str]) -> np.ndarray:
    """Per-channel factor from BrainFlow units (µV, µS) to SI units."""
    return np.array([1e-6 if t in _MICRO_TYPES else 1.0 for t in ch_types])[:, None]


class _CounterCheck:
    """Finds dropped samples from a wrapping package counter.

    Parameters
    ----------
    modulus : int
        Counter period (BrainFlow boards: 256).
    """

    def __init__(self, modulus: int = 256) -> None:
        self.modulus = modulus
        self.last: float | None = None

    def reset(self) -> None:
        self.last = None

    def split(self, counter: np.ndarray) -> list[tuple[int, int]]:
        """Return ``(column, n_missing)`` for each jump in ``counter``."""
        counter = np.asarray(counter, dtype=np.int64)
        prev = np.concatenate([[counter[0] - 1 if self.last is None else self.last],
                               counter[:-1]])
        step = (counter - prev) % self.modulus
        self.last = int(counter[-1])
        cols = np.flatnonzero(step != 1)
        return [(int(c), int((step[c] - 1) % self.modulus)) for c in cols]


# --------------------------------------------------------------------------- BrainFlow


class BrainFlowSource(BiometricSource):
    """Any BrainFlow board; the synthetic board needs no hardware.

    Parameters
    ----------
    board : str or int
        Board name (see :func:`list_boards`; documented: ``"synthetic"``,
        ``"muse_2"``, ``"muse_s"``, ``"cyton"``, ``"cyton_daisy"``,
        ``"ganglion"``) or BrainFlow board id.
    serial_port : str, optional
        Serial port of the board or its dongle, e.g. ``"/dev/ttyUSB0"``
        (Cyton), ``"/dev/ttyACM0"`` (Ganglion's BLED112). Required where
        :data:`BOARD_REQUIREMENTS` says so.
    mac_address : str, optional
        Bluetooth MAC address (Ganglion native, Muse), e.g. ``"00:55:DA:B0:00:01"``.
    serial_number : str, optional
        Device name for Muse boards, e.g. ``"Muse-1234"``.
    ip_address, ip_port, timeout_sec, other_info, file :
        Passed through to ``BrainFlowInputParams`` for boards that need them.
    ch_types : mapping of str to str, optional
        Retype channels by name, e.g. ``{"O2": "ecg"}`` for a Cyton input wired
        to the chest.
    stall_sec : float
        A board that delivers nothing for this long is reconnected (default
        1.5, so a stall is acted on within 2 s).
    backoff_sec : float
        Wait before the first reconnection attempt; doubles after each failure.
    backoff_max_sec : float
        Longest wait between attempts.
    max_reconnects : int or None
        Give up (raise :class:`SourceError`) after this many failed attempts in
        a row; ``None`` retries forever.
    buffer_size : int
        BrainFlow ring buffer, samples.
    check_counter : bool or None
        Check the package counter for dropped samples (default: on for every
        board except Ganglion, whose counter encodes compression, not order).

    Examples
    --------
    >>> with BrainFlowSource("synthetic") as src:  # doctest: +SKIP
    ...     chunk = src.read(timeout_sec=1.0)
    """

    def __init__(
        self,
        board: str | int = "synthetic",
        serial_port: str | None = None,
        mac_address: str | None = None,
        *,
        serial_number: str | None = None,
        ip_address: str | None = None,
        ip_port: int | None = None,
        timeout_sec: int | None = None,
        other_info: str | None = None,
        file: str | None = None,
        ch_types: Mapping[str, str] | None = None,
        stall_sec: float = 1.5,
        backoff_sec: float = 0.25,
        backoff_max_sec: float = 8.0,
        max_reconnects: int | None = 10,
        buffer_size: int = 450_000,
        check_counter: bool | None = None,
    ) -> None:
        super().__init__()
        self.board_name, self.board_id = resolve_board(board)
        need = BOARD_REQUIREMENTS.get(self.board_name)
        if need is not None and need[0] == "serial_port" and not serial_port:
            raise MissingParameterError(
                f"board {self.board_name!r} needs serial_port, the port of the board or "
                f"its dongle; e.g. BrainFlowSource({self.board_name!r}, "
                f"serial_port='/dev/ttyUSB0'); examples: {need[1]}"
            )
        for name, value in (("stall_sec", stall_sec), ("backoff_sec", backoff_sec),
                            ("backoff_max_sec", backoff_max_sec)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        load_brainflow()
        from brainflow.board_shim import BoardShim, BrainFlowInputParams

        params = BrainFlowInputParams()
        for key, value in (("serial_port", serial_port), ("mac_address", mac_address),
                           ("serial_number", serial_number), ("ip_address", ip_address),
                           ("ip_port", ip_port), ("timeout", timeout_sec),
                           ("other_info", other_info), ("file", file)):
            if value is not None:
                setattr(params, key, value)
        self._params = params
        descr = BoardShim.get_board_descr(self.board_id)
        self._sfreq = float(descr["sampling_rate"])
        self._counter_row = descr.get("package_num_channel")
        self._ts_row = descr.get("timestamp_channel")
        rows, names, kinds = board_channels(self.board_id, ch_types)
        self._rows = rows
        self._ch_names = tuple(names)
        self._ch_types = tuple(kinds)
        self._scale = _scales(kinds)
        self.stall_sec = float(stall_sec)
        self.backoff_sec = float(backoff_sec)
        self.backoff_max_sec = float(backoff_max_sec)
        self.max_reconnects = max_reconnects
        self.buffer_size = int(buffer_size)
        if check_counter is None:
            check_counter = self.board_name not in ("ganglion", "ganglion_native")
        self._counter = _CounterCheck() if (check_counter and self._counter_row is not None) \
            else None
        self._board: Any = None
        self._last_data_wall = 0.0
        self._last_ts: float | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._stalled_since: float | None = None

    @property
    def board(self) -> Any:
        """The underlying ``BoardShim`` (``None`` when not running)."""
        return self._board

    def _open(self) -> None:
        """Prepare and start the session on the one ``BoardShim`` of this source.

        The same ``BoardShim`` is reused across reconnections: BrainFlow keys
        sessions by board id and parameters, and a second ``BoardShim`` for the
        same board would release the new session when it is garbage-collected.
        """
        from brainflow.board_shim import BoardShim

        if self._board is None:
            self._board = BoardShim(self.board_id, self._params)
        try:
            self._board.prepare_session()
            self._board.start_stream(self.buffer_size)
        except BaseException:
            self._release(self._board)
            raise
        self._last_data_wall = time.monotonic()
        if self._counter is not None:
            self._counter.reset()

    @staticmethod
    def _release(board: Any) -> None:
        """Stop and release a board, whatever state it is in."""
        if board is None:
            return
        try:
            with contextlib.suppress(Exception):
                board.stop_stream()
        finally:
            with contextlib.suppress(Exception):
                if board.is_prepared():
                    board.release_session()

    def start(self) -> None:
        """Prepare the session and start streaming.

        Raises
        ------
        SourceError
            If the board cannot be opened; the message carries BrainFlow's
            error and the connection parameters.
        """
        if self._running:
            return
        from brainflow.exit_codes import BrainFlowError

        try:
            self._open()
        except BrainFlowError as e:
            self._board = None
            raise SourceError(
                f"cannot open board {self.board_name!r} (id {self.board_id}) with "
                f"serial_port={self._params.serial_port!r}, "
                f"mac_address={self._params.mac_address!r}: {e}; check that the device "
                "is on, paired or plugged in, and that the port is right"
            ) from e
        self._running = True
        logger.info("started BrainFlow board %s (id %d), %d ch @ %g Hz", self.board_name,
                    self.board_id, len(self._rows), self._sfreq)

    def stop(self) -> None:
        """Stop streaming and release the session (safe to call twice)."""
        board, self._board = self._board, None
        self._running = False
        self._release(board)

    def _reconnect(self, now: float) -> None:
        """One reconnection attempt, if the backoff schedule allows it now."""
        if now < self._next_attempt:
            return
        self._release(self._board)
        try:
            self._open()
        except Exception as e:
            self._failures += 1
            wait = min(self.backoff_max_sec, self.backoff_sec * 2 ** (self._failures - 1))
            self._next_attempt = time.monotonic() + wait
            logger.warning("reconnecting %s failed (%d): %s; next try in %.2f s",
                           self.board_name, self._failures, e, wait)
            if self.max_reconnects is not None and self._failures >= self.max_reconnects:
                raise SourceError(
                    f"board {self.board_name!r} stopped delivering and {self._failures} "
                    f"reconnection attempts failed; last error: {e}"
                ) from e
            return
        self._failures = 0
        self._event("reconnect", time.time(), detail=f"board {self.board_name!r} reopened "
                    f"after {now - (self._stalled_since or now):.2f} s without data")

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Samples since the last call, in SI units; ``None`` if none arrived.

        Detects a stall (nothing for ``stall_sec``) and reconnects with backoff;
        the samples lost meanwhile become a ``"gap"`` event and a jump in
        ``first_sample``.
        """
        if not self._running:
            raise SourceError("read() before start(); use `with BrainFlowSource(...) as src:`")
        deadline = time.monotonic() + max(0.0, float(timeout_sec))
        while True:
            now = time.monotonic()
            board = self._board
            if board.is_prepared() and board.get_board_data_count() > 0:
                return self._take(board.get_board_data())
            if now - self._last_data_wall >= self.stall_sec:
                if self._stalled_since is None:
                    self._stalled_since = self._last_data_wall
                    logger.warning("board %s delivered nothing for %.2f s; reconnecting",
                                   self.board_name, now - self._last_data_wall)
                self._reconnect(now)
            if now >= deadline:
                return None
            time.sleep(min(0.005, max(0.0, deadline - now)))

    def _take(self, raw: np.ndarray) -> SignalChunk:
        """Turn BrainFlow's array into a chunk, reporting what is missing."""
        now = time.monotonic()
        ts = raw[self._ts_row] if self._ts_row is not None else None
        if self._stalled_since is not None:
            # back after a stall: the samples lost are those the timestamps skip
            if ts is not None and self._last_ts is not None:
                n_missing = max(0, round((ts[0] - self._last_ts) * self._sfreq) - 1)
            else:
                n_missing = max(0, round((now - self._stalled_since) * self._sfreq))
            self._event("gap", time.time(), n_missing,
                        f"no data for {now - self._stalled_since:.2f} s; "
                        f"{n_missing} samples lost")
            self._stalled_since = None
            if self._counter is not None:
                self._counter.reset()
        data = raw[self._rows] * self._scale
        t0 = float(ts[0]) if ts is not None else time.time() - raw.shape[1] / self._sfreq
        if self._counter is not None:
            jumps = [(c, n) for c, n in self._counter.split(raw[self._counter_row]) if n > 0]
            if jumps and jumps[0][0] == 0:
                n = jumps.pop(0)[1]
                self._event("dropped", time.time(), n,
                            f"package counter skipped {n} samples before this chunk")
            if jumps:
                data = _nan_fill(data, jumps, self._events, self._next_sample, t0,
                                 f"board {self.board_name!r}: package counter")
        self._last_data_wall = now
        if ts is not None:
            self._last_ts = float(ts[-1])
        return self._chunk(data, t0)


def _nan_fill(data: np.ndarray, jumps: list[tuple[int, int]], events: list[SourceEvent],
              first_sample: int, t_sec: float, what: str) -> np.ndarray:
    """Insert NaN columns for samples missing inside a block; never interpolate.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        The samples that arrived.
    jumps : list of (int, int)
        ``(column, n_missing)``: ``n_missing`` samples are missing before ``column``.
    events : list of SourceEvent
        A ``"dropped"`` event per jump is appended here.
    first_sample : int
        Stream index of ``data[:, 0]``.

    Returns
    -------
    filled : ndarray, shape (n_channels, n_times + sum(n_missing))
    """
    pieces, start, out_pos = [], 0, 0
    for col, n in jumps:
        pieces.append(data[:, start:col])
        out_pos += col - start
        events.append(SourceEvent("dropped", t_sec, first_sample + out_pos, n,
                                  f"{what} skipped {n} samples; NaN-filled, not bridged"))
        logger.warning("%s skipped %d samples at stream sample %d; NaN-filled", what, n,
                       first_sample + out_pos)
        pieces.append(np.full((data.shape[0], n), np.nan))
        out_pos += n
        start = col
    pieces.append(data[:, start:])
    return np.concatenate(pieces, axis=1)


# --------------------------------------------------------------------------- files

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
        if not path.is_file():
            raise FileNotFoundError(f"recording {path} does not exist")
        if not (isinstance(chunk_sec, int | float) and 0 < chunk_sec <= 60):
            raise ValueError(f"chunk_sec must be in (0, 60] seconds, got {chunk_sec!r}")
        self.path = path
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self.chunk_sec = float(chunk_sec)
        name = path.name.lower()
        if name.endswith((".csv", ".tsv", ".txt")):
            data, sfreq, names, kinds = self._load_brainflow_csv(path, board)
        elif name.endswith(_MNE_EXTS):
            data, sfreq, names, kinds = self._load_mne(path)
        else:
            raise FileFormatError(
                f"{path}: unsupported extension; use one of {', '.join(_MNE_EXTS)} "
                "(MNE readers) or .csv (BrainFlow, with board=...)"
            )
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
        data = table[rows] * _scales(kinds)
        counter_row = descr.get("package_num_channel")
        if counter_row is not None and name not in ("ganglion", "ganglion_native"):
            data = self._fill_csv_drops(path, data, table[counter_row])
        return data, float(descr["sampling_rate"]), names, kinds

    def _fill_csv_drops(self, path: Path, data: np.ndarray, counter: np.ndarray) -> np.ndarray:
        """Insert NaN columns where the package counter skips, and report them."""
        jumps = [(c, n) for c, n in _CounterCheck().split(counter) if n > 0 and c > 0]
        if not jumps:
            return data
        return _nan_fill(data, jumps, self._file_events, 0, 0.0,
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


# --------------------------------------------------------------------------- LSL


class LSLSource(BiometricSource):
    """A Lab Streaming Layer inlet, so any LSL device works.

    Parameters
    ----------
    name : str, optional
        Stream name to resolve (e.g. ``"OpenBCI_EEG"``); else ``stream_type`` is used.
    stream_type : str
        Stream type to resolve when ``name`` is ``None`` (default ``"EEG"``).
    resolve_timeout_sec : float
        How long to look for the stream.
    ch_types : mapping of str to str, optional
        Channel name -> type overrides; otherwise types come from the stream's
        ``desc/channels/channel/type`` or, failing that, from names and the
        stream type.
    unit_scale : float, optional
        Factor to SI units for eeg/emg/ecg channels. Default: from the channel
        ``unit`` metadata (``microvolts``/``uV`` -> 1e-6, ``volts``/``V`` -> 1),
        and 1e-6 (µV, the LSL convention) where the stream says nothing.
    stall_sec : float
        Silence after which a ``"gap"`` is reported when data comes back.

    Notes
    -----
    Gaps are found from the sample timestamps (clock-synchronised by liblsl,
    not dejittered, so that a gap stays a gap): a step of more than 1.5 sample periods is reported
    as ``"dropped"`` samples and a jump in ``first_sample``. Inlets recover
    from a lost outlet on their own (liblsl's ``recover``).
    """

    def __init__(self, name: str | None = None, stream_type: str = "EEG", *,
                 resolve_timeout_sec: float = 5.0,
                 ch_types: Mapping[str, str] | None = None,
                 unit_scale: float | None = None, stall_sec: float = 2.0) -> None:
        super().__init__()
        try:
            import pylsl
        except ImportError as e:
            raise SourceError("LSLSource needs pylsl; pip install pylsl") from e
        self._pylsl = pylsl
        prop, value = ("name", name) if name is not None else ("type", stream_type)
        found = pylsl.resolve_byprop(prop, value, timeout=float(resolve_timeout_sec))
        if not found:
            raise StreamNotFoundError(
                f"no LSL stream with {prop}={value!r} within {resolve_timeout_sec} s; check that "
                "the device's LSL app is streaming and on the same network"
            )
        self._info = found[0]
        self._sfreq = float(self._info.nominal_srate())
        if self._sfreq <= 0:
            raise FileFormatError(f"LSL stream {self._info.name()!r} has an irregular rate; "
                                  "only regularly sampled streams are supported")
        self._inlet: Any = None
        self.stall_sec = float(stall_sec)
        self._overrides = dict(ch_types or {})
        self._unit_scale = unit_scale
        n = self._info.channel_count()
        self._ch_names = tuple(f"ch{i + 1}" for i in range(n))
        default = type_from_name(self._info.type(), "eeg") if self._info.type() else "eeg"
        self._ch_types = tuple(default for _ in range(n))
        self._scale = np.ones((n, 1))
        self._last_ts: float | None = None
        self._last_wall = 0.0

    def _read_desc(self, info: Any) -> None:
        """Channel labels, types and units from the stream's XML description."""
        n = info.channel_count()
        names, kinds, units = [], [], []
        ch = info.desc().child("channels").child("channel")
        for i in range(n):
            label = ch.child_value("label") if not ch.empty() else ""
            kind = ch.child_value("type").lower() if not ch.empty() else ""
            unit = ch.child_value("unit").lower() if not ch.empty() else ""
            names.append(label or self._ch_names[i])
            kinds.append(kind if kind in CH_TYPES else type_from_name(label,
                                                                      self._ch_types[i]))
            units.append(unit)
            ch = ch.next_sibling() if not ch.empty() else ch
        for name, kind in self._overrides.items():
            if name not in names or kind not in CH_TYPES:
                raise ValueError(f"ch_types[{name!r}]={kind!r}: channel must be one of "
                                 f"{names} and type one of {CH_TYPES}")
            kinds[names.index(name)] = kind
        scale = []
        for kind, unit in zip(kinds, units, strict=True):
            if kind not in ("eeg", "emg", "ecg"):
                scale.append(1.0)
            elif self._unit_scale is not None:
                scale.append(self._unit_scale)
            elif unit in ("v", "volts", "volt"):
                scale.append(1.0)
            elif unit in ("mv", "millivolts"):
                scale.append(1e-3)
            else:
                scale.append(1e-6)
        self._ch_names, self._ch_types = tuple(names), tuple(kinds)
        self._scale = np.array(scale)[:, None]

    def start(self) -> None:
        """Open the inlet (timestamps clock-synchronised to this machine)."""
        if self._running:
            return
        pylsl = self._pylsl
        flags = pylsl.proc_clocksync  # no dejitter: its regression would smear gaps
        self._inlet = pylsl.StreamInlet(self._info, max_buflen=60, recover=True,
                                        processing_flags=flags)
        try:
            self._inlet.open_stream(timeout=5.0)
            self._read_desc(self._inlet.info(timeout=5.0))
        except BaseException:
            self._close_inlet()
            raise
        self._last_wall = time.monotonic()
        self._running = True

    def _close_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            with contextlib.suppress(Exception):
                inlet.close_stream()
            del inlet

    def stop(self) -> None:
        """Close the inlet (safe to call twice)."""
        self._running = False
        self._close_inlet()

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Samples since the last call; gaps in the timestamps become events."""
        if not self._running:
            raise SourceError("read() before start(); use `with LSLSource(...) as src:`")
        samples, stamps = self._inlet.pull_chunk(timeout=float(timeout_sec))
        now = time.monotonic()
        if not stamps:
            return None
        data = np.asarray(samples, dtype=np.float64).T * self._scale  # (n_ch, n_times)
        ts = np.asarray(stamps)
        period = 1.0 / self._sfreq
        stalled = now - self._last_wall >= self.stall_sec
        self._last_wall = now
        if self._last_ts is not None:
            n_missing = round((ts[0] - self._last_ts) / period) - 1
            if n_missing > 0:
                kind: EventKind = "gap" if stalled else "dropped"
                self._event(kind, float(ts[0]), n_missing,
                            f"timestamps skip {n_missing} samples "
                            f"({n_missing * period:.3f} s)")
        steps = np.round(np.diff(ts) / period).astype(int) - 1
        jumps = [(int(c) + 1, int(steps[c])) for c in np.flatnonzero(steps > 0)]
        if jumps:  # drops inside this chunk: NaN-fill them, never bridge them
            data = _nan_fill(data, jumps, self._events, self._next_sample, float(ts[0]),
                             f"LSL stream {self._info.name()!r}: timestamps")
        self._last_ts = float(ts[-1])
        return self._chunk(data, float(ts[0]))
