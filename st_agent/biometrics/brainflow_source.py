"""BrainFlow boards as a biometric source; the synthetic board needs no hardware.

:class:`BrainFlowSource` opens any board BrainFlow knows (by name or id, see
:func:`~st_agent.biometrics.sources.list_boards`), converts µV and µS to SI
units once, checks the package counter for dropped samples, and reconnects a
board that stops delivering, with exponential backoff.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.biometrics.sources import (
    BOARD_REQUIREMENTS,
    BiometricSource,
    BoardError,
    MissingParameterError,
    SourceError,
    SourceEvent,
    load_brainflow,
    resolve_board,
)
from st_agent.types import CH_TYPES, SignalChunk

__all__ = ["BrainFlowSource", "CounterCheck", "PackageCounter", "board_channels",
           "check_counter", "nan_fill"]

logger = logging.getLogger(__name__)

#: Seconds between two warning events about invalid package counter values.
_COUNTER_WARN_SEC = 10.0

# Channel types whose BrainFlow unit is µV (-> V) or µS (-> S).
_MICRO_TYPES = ("eeg", "emg", "ecg", "eda")


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


def brainflow_scales(ch_types: tuple[str, ...] | list[str]) -> np.ndarray:
    """Per-channel factor from BrainFlow units (µV, µS) to SI units."""
    return np.array([1e-6 if t in _MICRO_TYPES else 1.0 for t in ch_types])[:, None]


@dataclass(frozen=True)
class CounterCheck:
    """What a block's package counter says, once the values that cannot be trusted are out.

    Attributes
    ----------
    jumps : tuple of (int, int)
        ``(column, n_missing)`` for each drop the counter shows: ``n_missing``
        samples (1 to ``modulus - 2``) are missing before ``column``.
    n_values : int
        Counter values checked.
    n_invalid : int
        Values that are not integers in ``[0, modulus)`` (NaN, fractions,
        negative, too large).
    n_unconfirmed : int
        Valid values that do not fit the counting around them (a corrupt value,
        or a duplicated row), not taken for drops.
    n_steps : int
        Steps between two valid values.
    n_plus_one : int
        Of those, steps of exactly +1 (the counter of an intact stream).
    """

    jumps: tuple[tuple[int, int], ...]
    n_values: int
    n_invalid: int = 0
    n_unconfirmed: int = 0
    n_steps: int = 0
    n_plus_one: int = 0

    @property
    def n_missing(self) -> int:
        """Samples the trusted jumps add."""
        return sum(n for _, n in self.jumps)

    def problem(self, min_plus_one: float = 0.5) -> str | None:
        """Why the whole counter cannot be trusted, or None.

        Parameters
        ----------
        min_plus_one : float
            Least share of +1 steps (and of valid values) of a counter that counts.
        """
        if self.n_values and self.n_invalid > (1 - min_plus_one) * self.n_values:
            return (f"{self.n_invalid} of {self.n_values} package counter values are not "
                    "integers in the board's counter range")
        if self.n_steps and self.n_plus_one < min_plus_one * self.n_steps:
            return (f"only {self.n_plus_one} of {self.n_steps} package counter steps are +1 "
                    f"(a counting counter has at least {min_plus_one:.0%})")
        return None


def check_counter(counter: np.ndarray, modulus: int = 256, prev: int | None = None,
                  confirm: int = 0) -> CounterCheck:
    """Find the drops a package counter shows, ignoring values that cannot be trusted.

    The counter is cut into runs of steady counting (+1 steps). A run of at
    least ``confirm`` +1 steps is an anchor; between two anchors, the samples
    missing are what the second anchor's first value says beyond the rows in
    between. Values outside the anchors (NaN, garbage, a duplicated row) are
    never turned into drops: one corrupt value in steady counting costs nothing.

    Parameters
    ----------
    counter : ndarray, shape (n_times,)
        Package counter of a block, as BrainFlow delivers it (floats).
    modulus : int
        Counter period (BrainFlow boards: 256); valid values are integers in
        ``[0, modulus)``.
    prev : int, optional
        Last valid counter value before the block (an anchor just before its
        first column), or None.
    confirm : int
        Least +1 steps of an anchor run (a run that reaches the end of the block
        short of it is not one). 0 takes every valid value for an anchor (a live
        chunk may end right after a drop).

    Returns
    -------
    check : CounterCheck
    """
    c = np.asarray(counter, dtype=float).ravel()
    n = c.size
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(c) & (c >= 0) & (c < modulus) & (c == np.floor(c))
    ci = np.where(valid, c, 0).astype(np.int64)
    plus = np.zeros(n, dtype=bool)
    plus[1:] = valid[1:] & valid[:-1] & ((ci[1:] - ci[:-1]) % modulus == 1)
    starts = np.flatnonzero(valid & ~plus)
    breaks = np.flatnonzero(~plus)
    ends = np.append(breaks, n)[np.searchsorted(breaks, starts, side="right")] - 1
    anchor = (ends - starts) >= confirm
    last_end, last_val = (-1, int(prev)) if prev is not None and 0 <= prev < modulus \
        else (None, None)
    jumps, unconfirmed = [], int((ends - starts + 1)[~anchor].sum())
    for s, e in zip(starts[anchor], ends[anchor], strict=True):
        if last_end is not None:
            missing = int((ci[s] - last_val - (s - last_end)) % modulus)
            if missing == modulus - 1:  # one count short: a duplicated row, not 255 lost
                unconfirmed += 1
            elif missing:
                jumps.append((int(s), missing))
        last_end, last_val = int(e), int(ci[e])
    n_steps = int((valid[1:] & valid[:-1]).sum()) + int(bool(valid[0]) and prev is not None) \
        if n else 0
    return CounterCheck(tuple(jumps), n, int(n - valid.sum()), unconfirmed, n_steps,
                        int(plus.sum()))


class PackageCounter:
    """Finds dropped samples from a wrapping package counter, block after block.

    Values that are not integers in ``[0, modulus)`` (NaN, garbage) are never
    turned into drops; :attr:`last_check` says how many there were.

    Parameters
    ----------
    modulus : int
        Counter period (BrainFlow boards: 256).
    confirm : int
        See :func:`check_counter`.
    """

    def __init__(self, modulus: int = 256, confirm: int = 0) -> None:
        self.modulus = modulus
        self.confirm = confirm
        self.last: int | None = None
        self.last_check: CounterCheck | None = None

    def reset(self) -> None:
        """Forget the last value (after a reconnection)."""
        self.last = None

    def split(self, counter: np.ndarray) -> list[tuple[int, int]]:
        """Return ``(column, n_missing)`` for each drop ``counter`` shows."""
        counter = np.asarray(counter, dtype=float)
        if counter.size == 0:
            return []
        first = counter[0] - 1 if self.last is None else self.last
        check = check_counter(counter, self.modulus, None if not np.isfinite(first)
                              else int(first) % self.modulus, self.confirm)
        self.last_check = check
        end = counter[-1]
        self.last = int(end) if (np.isfinite(end) and 0 <= end < self.modulus
                                 and end == int(end)) else None
        return list(check.jumps)


def nan_fill(data: np.ndarray, jumps: list[tuple[int, int]], events: list[SourceEvent],
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
        self._scale = brainflow_scales(kinds)
        self.stall_sec = float(stall_sec)
        self.backoff_sec = float(backoff_sec)
        self.backoff_max_sec = float(backoff_max_sec)
        self.max_reconnects = max_reconnects
        self.buffer_size = int(buffer_size)
        if check_counter is None:
            check_counter = self.board_name not in ("ganglion", "ganglion_native")
        self._counter = PackageCounter() if (check_counter and self._counter_row is not None) \
            else None
        self._board: Any = None
        self._last_data_wall = 0.0
        self._last_ts: float | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._stalled_since: float | None = None
        self._bad_counter_values = 0
        self._counter_warned_at = -math.inf

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
        BoardError
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
            raise BoardError(
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
                raise BoardError(
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
            self._stall_gap(now, ts)
        data = raw[self._rows] * self._scale
        t0 = time.time() - raw.shape[1] / self._sfreq
        if ts is not None and math.isfinite(ts[0]):
            t0 = float(ts[0])
        if self._counter is not None:
            jumps = [(c, n) for c, n in self._counter.split(raw[self._counter_row]) if n > 0]
            self._warn_counter(self._counter.last_check)
            if jumps and jumps[0][0] == 0:
                n = jumps.pop(0)[1]
                self._event("dropped", time.time(), n,
                            f"package counter skipped {n} samples before this chunk")
            if jumps:
                data = nan_fill(data, jumps, self._events, self._next_sample, t0,
                                f"board {self.board_name!r}: package counter")
        self._last_data_wall = now
        if ts is not None and math.isfinite(ts[-1]):
            self._last_ts = float(ts[-1])
        return self._chunk(data, t0)

    def _stall_gap(self, now: float, ts: np.ndarray | None) -> None:
        """Back after a stall: report the samples lost, those the timestamps skip.

        The count is bounded by the stall's wall-clock length (twice it, plus a
        second): a timestamp that jumps by hours is a clock change, not a loss.
        """
        wall_missing = max(0, round((now - self._stalled_since) * self._sfreq))
        n_missing = wall_missing
        if ts is not None and self._last_ts is not None and math.isfinite(ts[0]):
            n_missing = max(0, round((ts[0] - self._last_ts) * self._sfreq) - 1)
            n_missing = min(n_missing, 2 * wall_missing + round(self._sfreq))
        self._event("gap", time.time(), n_missing,
                    f"no data for {now - self._stalled_since:.2f} s; {n_missing} samples lost")
        self._stalled_since = None
        if self._counter is not None:
            self._counter.reset()

    def _warn_counter(self, check: CounterCheck | None) -> None:
        """A warning event (at most one per ``_COUNTER_WARN_SEC``) for counter values that
        are not integers in the counter's range: they are ignored, never taken for drops."""
        if check is None or not check.n_invalid:
            return
        self._bad_counter_values += check.n_invalid
        now = time.monotonic()
        if now - self._counter_warned_at < _COUNTER_WARN_SEC:
            return
        self._counter_warned_at = now
        self._event("warning", time.time(), detail=(
            f"board {self.board_name!r}: {self._bad_counter_values} package counter values "
            "so far are not integers in [0, 256); ignored there (no drops inferred)"))
