"""What a live session shows and returns, and the folder it will write.

:class:`SessionStatus` (the status line), :class:`SessionResult` (where the
outputs are), :func:`session_folder` (checked before anything is created) and what the
loop carries (:class:`LoopParts`, :class:`LoopState`);
re-exported by :mod:`st_agent.live.runtime` and :mod:`st_agent.live.session`.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.live.common import check_writable
from st_agent.types import EmotionState, Knobs, Phrase, SignalChunk

if TYPE_CHECKING:
    from st_agent.live.common import Playing
    from st_agent.live.composing import PhraseMaker
    from st_agent.live.session import SessionConfig
    from st_agent.live.session_score import ScoreFile

__all__ = ["LoopParts", "LoopState", "SessionResult", "SessionStatus", "UsableEstimate",
           "session_folder"]


@dataclass(frozen=True)
class SessionStatus:
    """What the terminal shows, once per ``status_sec`` of session time."""

    t_sec: float
    phase: str
    state: EmotionState | None
    target: tuple[float, float]
    knobs: Knobs
    signal: str
    phrases: int
    note: str = ""
    """While calibrating: the estimator's progress and what holds it up."""
    controller: str = ""
    """Set when the session's controller failed: what decides instead."""

    def line(self) -> str:
        """One line of text."""
        if self.phase == "calibrating" and self.note:
            return f"{self.t_sec:7.1f}s calibrating {self.note}  signal {self.signal}"
        st = ("  --    --  " if self.state is None else
              f"{self.state.valence:+.2f} {self.state.arousal:+.2f} c{self.state.confidence:.1f}")
        k = self.knobs
        ctrl = f"  controller FALLBACK {self.controller}" if self.controller else ""
        return (f"{self.t_sec:7.1f}s {self.phase:<11} state {st}  target "
                f"{self.target[0]:+.2f} {self.target[1]:+.2f}  knobs v{k.valence:.2f} "
                f"t{k.tempo:.2f} e{k.energy:.2f}  signal {self.signal:<8} phrases "
                f"{self.phrases}{ctrl}")


@dataclass
class SessionResult:
    """Where a session's outputs are and its headline figures."""

    folder: Path
    wav_path: Path | None
    score_path: Path
    report_path: Path | None
    summary: dict[str, Any]


def session_folder(cfg: SessionConfig) -> Path:
    """The folder the session will write, checked before anything starts.

    Creates nothing but ``cfg.record`` itself (to probe that it is writable).

    Raises
    ------
    ValueError
        When the folder exists and is not empty (or is a file), or the key file would
        lie inside it.
    OSError
        When ``cfg.record`` cannot hold a recording.
    """
    folder = Path(cfg.record) / (
        cfg.name or "session-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S"))
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"session folder {folder} exists and is not empty; choose "
                         "another --name")
    if cfg.key_file is not None:
        key = Path(cfg.key_file).expanduser().resolve()
        if key.is_relative_to(folder.expanduser().resolve()):
            raise ValueError(f"--key-file {cfg.key_file} lies inside the session folder "
                             f"{folder}; keep the key outside the recording it protects")
    check_writable(Path(cfg.record))
    return folder


@dataclass
class LoopParts:
    """What the loop of :class:`~st_agent.live.runtime.LiveSession` works with
    (opened by its ``run``)."""

    source: Any
    estimator: Any
    maker: PhraseMaker
    recorder: Any
    player: Any
    score: ScoreFile  # score.abc as it plays: nothing of a phrase is kept once written
    wall0: float  # monotonic time at which the loop started


@dataclass
class UsableEstimate:
    """The last usable estimate, held through short runs of unusable windows.

    A blink or a burst of muscle makes one to three windows unusable (rejected, or
    below ``min_confidence``); a decision that falls in such a run uses the last usable
    estimate if it is at most ``hold_sec`` older than the newest estimate, instead of
    holding the knobs. Longer runs make the signal unusable (knobs hold).

    Parameters
    ----------
    hold_sec : float
        Longest run of unusable windows (estimator time, seconds) bridged; 0 = none.
    min_confidence : float
        Estimates below this confidence are unusable.
    """

    hold_sec: float
    min_confidence: float
    state: EmotionState | None = None
    """The last usable estimate (None before the first)."""
    newest_t_sec: float = -math.inf
    """Estimator time of the newest estimate, usable or not."""

    def update(self, state: EmotionState, bad: bool) -> None:
        """Take the estimator's newest ``state`` (``bad``: a rejected window)."""
        self.newest_t_sec = state.t_sec
        if not bad and state.confidence >= self.min_confidence:
            self.state = state

    @property
    def ok(self) -> bool:
        """A usable estimate at most ``hold_sec`` older than the newest one."""
        return self.state is not None and self.newest_t_sec - self.state.t_sec <= self.hold_sec


@dataclass
class LoopState:
    """Everything the loop carries from one turn to the next."""

    knobs: Knobs
    chunk: SignalChunk | None
    t_stream: float
    t_read: float
    last_data_wall: float
    usable: UsableEstimate
    history: deque = field(default_factory=lambda: deque(maxlen=8))
    latest: EmotionState | None = None
    signal: str = "ok"
    lost_since: float | None = None
    calibrated_at: float | None = None
    calib_deadline: float | None = None
    current: Playing | None = None
    pending: concurrent.futures.Future | None = None
    pending_reason: str = ""
    queued: bool = False  # the pending phrase is already in the live player's queue
    music_end: float = math.inf
    next_status: float = 0.0
    context: Phrase | None = None
