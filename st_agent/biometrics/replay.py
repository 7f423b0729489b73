"""Replay a recorded session as a biometric source.

:class:`ReplaySource` streams the samples of a session folder (see
:mod:`st_agent.biometrics.recording`) chunk by chunk, so the estimator and policies run
on real signal statistics. Replay cannot respond to new music: the signals are
what the person did while the *recorded* music played. Gaps in the recording
stay NaN (the estimator rejects those windows) and are reported as
``dropped`` events.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.biometrics.sources import BiometricSource
from st_agent.types import SignalChunk

__all__ = ["ReplaySource"]

logger = logging.getLogger(__name__)


class ReplaySource(BiometricSource):
    """Stream a recorded session's samples (volts, as recorded).

    Parameters
    ----------
    folder : str or Path
        Session folder.
    realtime : bool
        Deliver no faster than the wall clock; otherwise as fast as :meth:`read`
        is called (simulated clock).
    loop : bool
        Start again at the end (an ``end`` event marks each wrap).
    chunk_sec : float
        Chunk length, seconds.
    key : bytes or str or Path, optional
        Key or key file of an encrypted session.

    Attributes
    ----------
    events : list of dict
        The recorded events (``phrase``, ``state``, ``knobs``...), as
        :func:`~st_agent.biometrics.recording.read_session` returns them.

    Raises
    ------
    ValueError
        If the session holds no samples.
    """

    def __init__(self, folder: str | Path, realtime: bool = False, loop: bool = False,
                 chunk_sec: float = 0.25, key: bytes | str | Path | None = None) -> None:
        super().__init__()
        from st_agent.biometrics.recording import read_session

        if not (isinstance(chunk_sec, int | float) and 0 < chunk_sec <= 60):
            raise ValueError(f"chunk_sec must be in (0, 60] seconds, got {chunk_sec!r}")
        session = read_session(folder, key=key)
        if session.raw is None:
            raise ValueError(f"session {folder} holds no samples to replay")
        self.folder = Path(folder)
        self.events: list[dict[str, Any]] = session.events
        self._data = session.raw.get_data()  # (n_channels, n_times), SI units
        self._sfreq = float(session.meta.sfreq)
        self._ch_names = tuple(session.meta.ch_names)
        self._ch_types = tuple(session.meta.ch_types)
        self.t0_sec = float(session.t0_sec)
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self.chunk_sec = float(chunk_sec)
        self._pos = 0
        self._wall0 = 0.0

    @property
    def duration_sec(self) -> float:
        """Length of the recording, seconds."""
        return self._data.shape[1] / self._sfreq

    def start(self) -> None:
        """Begin at the first sample."""
        self._running = True
        self._wall0 = time.monotonic() - self._next_sample / self._sfreq

    def stop(self) -> None:
        """Stop; safe to call twice."""
        self._running = False

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Next chunk, or ``None`` at the end (without ``loop``) or when stopped."""
        if not self._running:
            return None
        n_total = self._data.shape[1]
        if self._pos >= n_total:
            if not self.loop:
                return None
            self._event("end", self._next_sample / self._sfreq, detail="replay looped")
            self._pos = 0
        n = min(max(1, round(self.chunk_sec * self._sfreq)), n_total - self._pos)
        if self.realtime:
            wait = self._wall0 + (self._next_sample + n) / self._sfreq - time.monotonic()
            if wait > timeout_sec:
                time.sleep(max(0.0, timeout_sec))
                return None
            if wait > 0:
                time.sleep(wait)
        data = self._data[:, self._pos:self._pos + n]
        nan_cols = np.isnan(data).any(axis=0)
        if nan_cols.any():
            self._events.append(_dropped(self, int(nan_cols.sum())))
        t0 = self.t0_sec + self._next_sample / self._sfreq
        self._pos += n
        return self._chunk(data, t0)

    def __repr__(self) -> str:
        return (f"ReplaySource({self.folder.name}, {len(self._ch_names)} ch @ {self._sfreq:g} Hz, "
                f"{self.duration_sec:.0f} s)")


def _dropped(src: ReplaySource, n: int) -> Any:
    from st_agent.biometrics.sources import SourceEvent

    return SourceEvent("dropped", src._next_sample / src.sfreq, src._next_sample, 0,
                       detail=f"{n} recorded samples are NaN (a gap in the recording)")
