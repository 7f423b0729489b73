"""Fault injection: make a source stop delivering, to test what the session does.

``st-agent session --inject-dropout 300,5`` wraps the board in a
:class:`DropoutSource`: five minutes in, the board stops delivering for 5 s.
For a BrainFlow board the stream is really stopped (``stop_stream``) and the
source's own stall detection and reconnection bring it back, exactly as after
a loose cable; for a simulated source the samples of the outage are discarded,
so the stream resumes with a jump in ``first_sample`` (a gap).
"""

from __future__ import annotations

import logging
import math
import time

from st_agent.biometrics.brainflow_source import BrainFlowSource
from st_agent.biometrics.sources import BiometricSource
from st_agent.types import SignalChunk

__all__ = ["DropoutSource"]

logger = logging.getLogger(__name__)


class DropoutSource(BiometricSource):
    """A source that goes silent for ``duration_sec`` after ``start_sec`` of wall time.

    Parameters
    ----------
    inner : BiometricSource
        The real source (owned: started and stopped with this one).
    start_sec : float
        Seconds after :meth:`start` at which the outage begins (wall clock).
    duration_sec : float
        Length of the outage, seconds.
    """

    def __init__(self, inner: BiometricSource, start_sec: float, duration_sec: float) -> None:
        super().__init__()
        if not isinstance(inner, BiometricSource):
            raise TypeError(f"inner must be a BiometricSource, got {type(inner).__name__}")
        for name, value in (("start_sec", start_sec), ("duration_sec", duration_sec)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self.inner = inner
        self.start_sec = float(start_sec)
        self.duration_sec = float(duration_sec)
        self._t0 = 0.0
        self._stopped_board = False
        self._done = False

    @property
    def sfreq(self) -> float:
        """Sampling rate of the inner source, Hz."""
        return self.inner.sfreq

    @property
    def ch_names(self) -> tuple[str, ...]:
        """Channel names of the inner source."""
        return self.inner.ch_names

    @property
    def ch_types(self) -> tuple[str, ...]:
        """Channel types of the inner source."""
        return self.inner.ch_types

    def start(self) -> None:
        """Start the inner source; the outage clock starts now."""
        self.inner.start()
        self._running = True
        self._t0 = time.monotonic()

    def stop(self) -> None:
        """Stop the inner source (safe to call twice)."""
        self._running = False
        self.inner.stop()

    def pop_events(self) -> list:
        """The inner source's events (gaps, reconnections)."""
        return self.inner.pop_events()

    def _in_outage(self) -> bool:
        elapsed = time.monotonic() - self._t0
        return self.start_sec <= elapsed < self.start_sec + self.duration_sec

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """The inner source's next chunk; nothing gets through during the outage.

        A BrainFlow board is really stopped and cannot be reopened until the
        outage ends, so its own stall detection, failed reconnection attempts
        with backoff, reconnection and gap report all run as with a real fault.
        """
        if not self._stopped_board and self._in_outage():
            self._stopped_board = True
            logger.warning("fault injection: the board stops delivering for %.1f s",
                           self.duration_sec)
            if isinstance(self.inner, BrainFlowSource) and self.inner.board is not None:
                self.inner.board.stop_stream()
                self.inner.board.get_board_data()  # what was buffered is lost too
                real_open = self.inner._open

                def unreachable_open() -> None:
                    if self._in_outage():
                        raise OSError("fault injection: the board is unreachable")
                    real_open()

                self.inner._open = unreachable_open  # type: ignore[method-assign]
        if self._in_outage():
            if isinstance(self.inner, BrainFlowSource):
                self.inner.read(min(timeout_sec, 0.1))  # stall detection and retries run
            else:
                self.inner.read(timeout_sec)  # simulated: the samples are lost
            return None
        if self._stopped_board and not self._done:
            self._done = True
            logger.warning("fault injection: the outage is over")
        return self.inner.read(timeout_sec)
