"""Where a session's music and state go besides the speakers: one interface for all.

A live session (and a jam) hands every phrase, every state estimate and every marker
to each of its *outputs*: the streaming session WAV, a session MIDI file and stems, a
MIDI port, OSC, an LSL outlet. Each output implements :class:`SessionOutput`; the
session holds them in one :class:`OutputSet`, which calls them in order and keeps the
session going when one of them fails: the failure is logged, recorded by the caller
(:attr:`OutputSet.failures`) and that output is dropped for the rest of the session
(its :meth:`SessionOutput.close` is still called). The music and the recording never
depend on an output.

Order of calls, all from the session's loop thread::

    open(folder)  ─▶  phrase(...) / state(...) / marker(...)  …  ─▶  close(reason)
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from st_agent.live.common import Playing
from st_agent.types import EmotionState, Knobs

__all__ = ["OutputFailure", "OutputSet", "SessionOutput"]

logger = logging.getLogger(__name__)


@runtime_checkable
class SessionOutput(Protocol):
    """One destination of a session's music and state.

    ``name`` says in messages and events which output it is (``"midi-out"``,
    ``"osc"``, ...). Every method may raise; :class:`OutputSet` catches it.
    """

    name: str

    def open(self, folder: Path) -> None:
        """The session starts; ``folder`` is its recording folder (files go there)."""

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Phrase ``index`` starts at ``playing.start_sec`` (session clock, seconds)."""

    def state(self, t_sec: float, state: EmotionState | None, knobs: Knobs) -> None:
        """A decision at session time ``t_sec``: the estimate it used (None: unusable
        signal) and the knobs chosen."""

    def marker(self, t_sec: float, text: str) -> None:
        """An event worth marking (calibration done, override, stop, a note)."""

    def close(self, reason: str) -> None:
        """The session ends (also on a crash exit): release ports, finish files.
        ``reason`` is the session's stop reason."""


@dataclass(frozen=True)
class OutputFailure:
    """An output that raised and was dropped."""

    name: str
    during: str
    error: str


@dataclass
class OutputSet:
    """The session's outputs, called in order; one that raises is dropped.

    Parameters
    ----------
    outputs : list of SessionOutput
    """

    outputs: list[Any] = field(default_factory=list)
    failures: list[OutputFailure] = field(default_factory=list)
    #: ``(t_sec, text)`` notices an output's own thread posts (a MIDI port lost or
    #: back); the session drains them in its loop (:meth:`pop_notices`) into events.
    notices: deque = field(default_factory=deque)

    def notice(self, t_sec: float, text: str) -> None:
        """Post a notice from any thread (deque appends are thread-safe)."""
        self.notices.append((float(t_sec), str(text)))

    def pop_notices(self) -> list[tuple[float, str]]:
        """The notices posted since the last call, oldest first."""
        out = []
        while self.notices:
            out.append(self.notices.popleft())
        return out

    def __post_init__(self) -> None:
        for out in self.outputs:
            if not isinstance(out, SessionOutput):
                raise TypeError(f"a session output needs name, open, phrase, state, "
                                f"marker and close; got {type(out).__name__}")

    def _call(self, during: str, *args: Any) -> list[OutputFailure]:
        new: list[OutputFailure] = []
        for out in list(self.outputs):
            try:
                getattr(out, during)(*args)
            except Exception as e:  # an output must never end the session
                fail = OutputFailure(out.name, during, f"{type(e).__name__}: {e}")
                logger.warning("output %s failed during %s and is dropped: %s",
                               out.name, during, fail.error)
                self.outputs.remove(out)
                new.append(fail)
                if during != "close":
                    try:
                        out.close(f"failed: {fail.error}")
                    except Exception as e2:  # already failing; say so and go on
                        logger.warning("output %s also failed to close: %s", out.name, e2)
        self.failures.extend(new)
        return new

    def open(self, folder: Path) -> list[OutputFailure]:
        """Open every output; returns the failures of this call (also kept)."""
        return self._call("open", folder)

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> list[OutputFailure]:
        """Hand phrase ``index`` to every output."""
        return self._call("phrase", index, playing, knobs)

    def state(self, t_sec: float, state: EmotionState | None,
              knobs: Knobs) -> list[OutputFailure]:
        """Hand a decision's state and knobs to every output."""
        return self._call("state", t_sec, state, knobs)

    def marker(self, t_sec: float, text: str) -> list[OutputFailure]:
        """Hand a marker to every output."""
        return self._call("marker", t_sec, text)

    def close(self, reason: str) -> list[OutputFailure]:
        """Close every output (each once, even when another fails)."""
        fails = self._call("close", reason)
        self.outputs.clear()
        return fails
