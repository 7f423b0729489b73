"""Lab Streaming Layer streams as a biometric source, with gap detection that tolerates jitter.

:class:`LSLSource` opens an inlet on a regularly sampled LSL stream (any LSL
device: OpenBCI GUI, Muse apps, BrainVision RDA, ...). Missing samples are found
from the stream's own timestamps by :class:`StampGaps`, never from when chunks
happen to arrive: an outlet that stamps samples when it pushes them (as
``push_sample``/``push_chunk`` without a timestamp do) delivers stamps that
jitter by milliseconds around the true sample times, so comparing neighbouring
stamps with the sample period reports samples as dropped that never were.

``pylsl`` is imported when a source is created.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from st_agent.biometrics.sources import (
    BiometricSource,
    EventKind,
    FileFormatError,
    SourceError,
    StreamNotFoundError,
    nan_fill,
    type_from_name,
)
from st_agent.types import CH_TYPES, SignalChunk

__all__ = ["LSLSource", "StampGaps"]

logger = logging.getLogger(__name__)


class StampGaps:
    """Find missing samples of a regularly sampled stream from its timestamps.

    The stamps of sample ``k`` (counting missing samples) are expected on a
    line ``t_ref + (k - k_ref) * period``, tracked through the samples with an
    alpha-beta filter (time constant ``tau_sec``), so that a constant latency,
    slow drift and a sampling clock slightly off its nominal rate are followed,
    not reported. A sample stamped later than the line by more than
    ``tolerance_periods`` sample periods is suspicious: samples are declared
    missing only when *every* sample stamped within the following
    ``confirm_sec`` is late as well (a gap shifts all later stamps; jitter
    does not), and then as many as the median lateness spans. Until that is
    decided, the suspicious samples are held back (at most ``confirm_sec``).

    Parameters
    ----------
    sfreq : float
        Nominal sampling rate, Hz.
    tolerance_periods : float
        Lateness, in sample periods, beyond which samples may be missing (>= 1).
    confirm_sec : float
        How long after a late sample the stamps must stay late to make a gap, seconds.
    tau_sec : float
        Time constant of the line tracking, seconds.
    max_gap_sec : float
        A jump of the stamps longer than this is taken as a clock change (the
        line starts again), not as missing samples.

    Examples
    --------
    >>> gaps = StampGaps(100.0)
    >>> stamps = np.r_[np.arange(50), np.arange(60, 100)] / 100.0  # 10 samples never sent
    >>> ready, jumps = gaps.push(stamps)
    >>> len(ready), jumps
    (90, [(50, 10)])
    """

    def __init__(self, sfreq: float, *, tolerance_periods: float = 1.5,
                 confirm_sec: float = 0.25, tau_sec: float = 0.5,
                 max_gap_sec: float = 600.0) -> None:
        for name, value in (("sfreq", sfreq), ("confirm_sec", confirm_sec),
                            ("tau_sec", tau_sec), ("max_gap_sec", max_gap_sec)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(tolerance_periods, int | float) and math.isfinite(tolerance_periods)
                and tolerance_periods >= 1):
            raise ValueError(f"tolerance_periods must be a number >= 1 (sample periods), got "
                             f"{tolerance_periods!r}")
        self.sfreq = float(sfreq)
        self.nominal_period = 1.0 / self.sfreq
        self.tolerance_sec = tolerance_periods * self.nominal_period
        self.confirm_sec = float(confirm_sec)
        self.tau_sec = float(tau_sec)
        self.max_gap_sec = float(max_gap_sec)
        self.period = self.nominal_period  # tracked: the stream's real sample period
        self.count = 0  # stream index of the next sample, missing samples counted
        self._t_ref: float | None = None  # stamp expected for sample _k_ref
        self._k_ref = 0
        self._held = np.empty(0)

    @property
    def n_held(self) -> int:
        """Samples held back until it is decided whether samples are missing before them."""
        return self._held.size

    def push(self, stamps: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Add the stamps of newly arrived samples; return what is decided.

        Parameters
        ----------
        stamps : ndarray, shape (n,)
            Timestamps of the new samples, seconds, in arrival order.

        Returns
        -------
        ready : ndarray, shape (n_ready,)
            Stamps of the samples that can be delivered now: the held-back ones
            first, then the new ones, in order; the others stay held back.
        jumps : list of (int, int)
            ``(i, n_missing)``: ``n_missing`` samples are missing before ``ready[i]``.
        """
        ts = np.concatenate([self._held, np.asarray(stamps, dtype=np.float64).ravel()])
        if ts.size and self._t_ref is None:
            self._anchor(ts[: max(1, round(self.confirm_sec * self.sfreq))])
        pos, jumps = 0, []
        while pos < ts.size:
            step, n_missing = self._decide(ts[pos:])
            if step == 0:
                break  # undecided: hold back ts[pos:]
            if n_missing:
                jumps.append((pos, n_missing))
            pos += step
        self._held = ts[pos:]
        return ts[:pos], jumps

    # -- steps ---------------------------------------------------------------------------

    def _anchor(self, ts: np.ndarray) -> None:
        """Start the line at the earliest-stamped of ``ts`` (stamps are late, never early)."""
        self._t_ref = float(np.min(ts - np.arange(ts.size) * self.period))
        self._k_ref = self.count

    def _residuals(self, ts: np.ndarray) -> np.ndarray:
        """Lateness of each stamp against the line, seconds, for samples count, count+1, ..."""
        k = self.count + np.arange(ts.size)
        return ts - (self._t_ref + (k - self._k_ref) * self.period)

    def _decide(self, ts: np.ndarray) -> tuple[int, int]:
        """(samples decided from the start of ``ts``, samples missing before them)."""
        r = self._residuals(ts)
        late = r > self.tolerance_sec
        n_clean = int(np.argmax(late)) if late.any() else ts.size
        if n_clean:
            self._track(r[:n_clean])
            return n_clean, 0
        # ts[0] is late: look at every sample stamped within confirm_sec after it
        # (and at least half as many samples as that should hold, when the stamps jump)
        n_confirm = max(2, round(self.confirm_sec * self.sfreq))
        horizon = ts[0] + self.confirm_sec
        n_window = max(n_confirm // 2,
                       int(np.searchsorted(np.maximum.accumulate(ts), horizon, side="right")))
        if n_window >= ts.size and ts.size < 2 * n_confirm:
            return 0, 0  # not yet known: hold back
        window = r[:min(n_window, 2 * n_confirm)]
        if (window > self.tolerance_sec).all():
            return self._gap(float(np.median(window)), ts[0])
        # jitter: late stamps followed by on-time ones within the window
        n_late = int(np.argmax(window <= self.tolerance_sec))
        self._track(np.minimum(window[:n_late], self.tolerance_sec))  # clipped: outliers
        return n_late, 0

    def _gap(self, lateness_sec: float, t_sec: float) -> tuple[int, int]:
        """Count the samples missing before the late sample stamped ``t_sec``, and it."""
        n_missing = round(lateness_sec / self.period)
        if lateness_sec > self.max_gap_sec:
            logger.warning("LSL timestamps jumped ahead by %.1f s; taken as a clock change, "
                           "not as missing samples", lateness_sec)
            self._t_ref, self._k_ref, n_missing = t_sec, self.count, 0
        self.count += n_missing + 1
        return 1, n_missing

    def _track(self, r: np.ndarray) -> None:
        """Move the line towards on-time samples with lateness ``r`` and count them."""
        n = r.size
        if n == 0:
            return
        e = float(np.median(r))
        if e < -max(self.confirm_sec, 10 * self.tolerance_sec):
            logger.warning("LSL timestamps went back by %.3f s; following the new clock", -e)
            self._t_ref += e
            self.count += n
            return
        alpha = 1.0 - math.exp(-n / (self.sfreq * self.tau_sec))
        beta = alpha * alpha / (2.0 - alpha)
        k_end = self.count + n - 1
        dk = max(1, k_end - self._k_ref)
        t_end = self._t_ref + dk * self.period
        self.period = float(np.clip(self.period + beta * e / dk, 0.98 * self.nominal_period,
                                    1.02 * self.nominal_period))
        self._t_ref, self._k_ref = t_end + alpha * e, k_end
        self.count = k_end + 1


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
        Silence after which missing samples are reported as a ``"gap"``
        (otherwise ``"dropped"``) when data comes back.
    tolerance_periods, confirm_sec : float
        Gap detection settings, see :class:`StampGaps`.

    Notes
    -----
    Gaps are found from the outlet's own timestamps, in the outlet's clock
    (no liblsl post-processing: its dejittering would smear a gap over many
    samples, and its clock-offset updates would move the stamps). A sample is
    declared missing only when the stamps, tracked against the sample count,
    stay late by more than ``tolerance_periods`` sample periods for
    ``confirm_sec`` (see :class:`StampGaps`); jitter of the stamps, however
    large, is not a gap. Missing samples become a ``"dropped"`` (or, after a
    silence of ``stall_sec``, ``"gap"``) event and a jump in ``first_sample``,
    or NaN columns where they fall inside a chunk. Chunk and event times
    (``t0_sec``) are on this machine's LSL clock: the stamps plus the inlet's
    ``time_correction()``, refreshed every second. Inlets recover from a lost
    outlet on their own (liblsl's ``recover``).
    """

    def __init__(self, name: str | None = None, stream_type: str = "EEG", *,
                 resolve_timeout_sec: float = 5.0,
                 ch_types: Mapping[str, str] | None = None,
                 unit_scale: float | None = None, stall_sec: float = 2.0,
                 tolerance_periods: float = 1.5, confirm_sec: float = 0.25) -> None:
        super().__init__()
        try:
            import pylsl
        except ImportError as e:
            raise SourceError("LSLSource needs pylsl; pip install pylsl") from e
        self._pylsl = pylsl
        self._info = self._resolve(name, stream_type, resolve_timeout_sec)
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
        self.gaps = StampGaps(self._sfreq, tolerance_periods=tolerance_periods,
                              confirm_sec=confirm_sec)
        self._held = np.empty((n, 0))  # samples StampGaps holds back, (n_channels, n_held)
        self._last_wall = 0.0
        self._stalled = False
        self._clock_offset = 0.0
        self._clock_checked = -math.inf

    def _resolve(self, name: str | None, stream_type: str, timeout_sec: float) -> Any:
        prop, value = ("name", name) if name is not None else ("type", stream_type)
        found = self._pylsl.resolve_byprop(prop, value, timeout=float(timeout_sec))
        if not found:
            raise StreamNotFoundError(
                f"no LSL stream with {prop}={value!r} within {timeout_sec} s; check that "
                "the device's LSL app is streaming and on the same network"
            )
        return found[0]

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
        self._ch_names, self._ch_types = tuple(names), tuple(kinds)
        self._scale = np.array([self._unit_factor(k, u) for k, u in
                                zip(kinds, units, strict=True)])[:, None]

    def _unit_factor(self, kind: str, unit: str) -> float:
        """Factor from the stream's unit to SI units for one channel."""
        if kind not in ("eeg", "emg", "ecg"):
            return 1.0
        if self._unit_scale is not None:
            return self._unit_scale
        if unit in ("v", "volts", "volt"):
            return 1.0
        if unit in ("mv", "millivolts"):
            return 1e-3
        return 1e-6

    def start(self) -> None:
        """Open the inlet and measure the clock offset to the outlet."""
        if self._running:
            return
        # No post-processing: raw stamps in the outlet's clock (see the class notes).
        self._inlet = self._pylsl.StreamInlet(self._info, max_buflen=60, recover=True,
                                              processing_flags=0)
        try:
            self._inlet.open_stream(timeout=5.0)
            self._read_desc(self._inlet.info(timeout=5.0))
        except BaseException:
            self._close_inlet()
            raise
        self._clock_checked = -math.inf
        self._refresh_clock_offset(timeout_sec=2.0)
        self._last_wall = time.monotonic()
        self._running = True

    def _refresh_clock_offset(self, timeout_sec: float = 0.0) -> None:
        """Update ``time_correction()`` (this clock minus the outlet's) once a second."""
        now = time.monotonic()
        if now - self._clock_checked < 1.0:
            return
        self._clock_checked = now
        try:
            self._clock_offset = float(self._inlet.time_correction(timeout=timeout_sec))
        except TimeoutError:
            logger.warning("LSL stream %r: no clock offset yet; chunk times stay on the "
                           "outlet's clock (off by %.6f s) until there is one",
                           self._info.name(), self._clock_offset)

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

    def _pull(self, timeout_sec: float) -> tuple[list, list]:
        """Every sample available; wait up to ``timeout_sec`` for the first one."""
        max_samples = max(1024, round(2 * self._sfreq))
        samples, stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=max_samples)
        if stamps or timeout_sec <= 0:
            return samples, stamps
        sample, stamp = self._inlet.pull_sample(timeout=float(timeout_sec))
        if stamp is None:
            return [], []
        more, more_stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=max_samples)
        return [sample, *more], [stamp, *more_stamps]

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Samples since the last call; missing samples become events (see the class notes)."""
        if not self._running:
            raise SourceError("read() before start(); use `with LSLSource(...) as src:`")
        samples, stamps = self._pull(timeout_sec)
        if not stamps:
            return None
        now = time.monotonic()
        self._stalled = self._stalled or now - self._last_wall >= self.stall_sec
        self._last_wall = now
        new = np.asarray(samples, dtype=np.float64).T * self._scale  # (n_ch, n_new)
        self._held = np.concatenate([self._held, new], axis=1)
        ready, jumps = self.gaps.push(np.asarray(stamps, dtype=np.float64))
        if not ready.size:
            return None
        data, self._held = self._held[:, :ready.size], self._held[:, ready.size:]
        self._refresh_clock_offset()
        t0 = float(ready[0]) + self._clock_offset
        period = 1.0 / self._sfreq
        if jumps and jumps[0][0] == 0:
            n = jumps.pop(0)[1]
            kind: EventKind = "gap" if self._stalled else "dropped"
            self._event(kind, t0, n, f"timestamps skip {n} samples ({n * period:.3f} s)")
        if jumps:  # missing inside this chunk: NaN-fill them, never bridge them
            data = nan_fill(data, jumps, self._events, self._next_sample, t0,
                            f"LSL stream {self._info.name()!r}: timestamps")
        self._stalled = False
        return self._chunk(data, t0)
