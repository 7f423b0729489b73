"""The control step of a live session: apply what the dashboard asked, record it.

:meth:`st_agent.live.runtime.LiveSession._loop` calls :func:`apply_controls` once per
turn. Each :class:`~st_agent.live.dashboard.ControlAction` (already checked by the
server thread) is applied here, in the loop's thread, and recorded as an event::

    recorder.write_event("control", None, t_session=..., action=..., value=...,
                         source="dashboard", delay_ms=...)

``delay_ms`` is the wall time from the request's arrival to its application. What the
actions do:

* ``knobs``: the policy is overridden by these knobs (a knob not named keeps its
  current value), reached at the rate limit from the next decision on, as with
  ``--knobs``; ``release`` hands the knobs back to the policy.
* ``target``: the session's target becomes the named preset from the next decision
  on, through the planned transition of :mod:`st_agent.live.target_change`
  (``session.target_change.request``: the knobs follow a path of bounded audio steps,
  then the controller resumes); a session without it switches the target and the knobs
  move under the rate limit only. The event's ``transition`` says which.
* ``pause`` / ``resume``: the adaptation pauses: decisions hold the knobs (reason
  "knobs hold: paused from the dashboard"); the music goes on. ``stop`` is the way to
  silence it.
* ``stop``: the music fades out over ``fade_sec`` and the session ends, as Ctrl-C.
* ``marker``: a note, recorded and sent to the outputs as a marker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.contract import action_to_knobs, resolve_target
from st_agent.live.dashboard import KNOB_NAMES, ControlAction
from st_agent.types import Knobs

__all__ = ["ControlState", "adjust_knobs", "apply_controls"]

logger = logging.getLogger(__name__)


@dataclass
class ControlState:
    """What the dashboard's controls hold now."""

    override: dict[str, float] | None = None
    """Knobs that replace the policy's (``None``: the policy decides)."""
    paused: bool = False
    """The adaptation is paused: decisions hold the knobs."""

    @property
    def active(self) -> bool:
        """Whether a pause or an override decides the knobs instead of the policy."""
        return self.paused or self.override is not None


def adjust_knobs(ctrl: ControlState, current: Knobs, proposed: Knobs, words: list[str],
                 bounds: Any) -> tuple[Knobs, list[str]]:
    """The knobs of a decision after the dashboard's pause and override.

    Parameters
    ----------
    ctrl : ControlState
    current : Knobs
        The knobs playing now.
    proposed : Knobs
        What the policy chose.
    words : list of str
        The policy's reasons.
    bounds : SafetyBounds
        Ranges and rate limit.

    Returns
    -------
    knobs, words : Knobs, list of str
    """
    if ctrl.paused:
        return current, ["knobs hold: paused from the dashboard"]
    if ctrl.override is None:
        return proposed, words
    goal = np.array([ctrl.override.get(k, getattr(current, k)) for k in KNOB_NAMES])
    step = (goal - np.asarray(current.as_tuple())) / max(bounds.max_delta, 1e-9)
    new = action_to_knobs(step, current, bounds)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in ctrl.override.items())
    return new, [f"dashboard override: toward {shown} (rate limit {bounds.max_delta:g})"]


def apply_controls(session: Any, hub: Any, recorder: Any, now: float) -> list[ControlAction]:
    """Drain the hub's controls and apply each to ``session``; return what was applied.

    Parameters
    ----------
    session : LiveSession
        Its ``controls`` (:class:`ControlState`), ``target``, ``request_stop`` and
        ``outputs`` are used.
    hub : DashboardHub
    recorder : SessionRecorder
        Where each applied action is recorded (event ``control``).
    now : float
        Session time, s.
    """
    done = hub.drain()
    for a in done:
        detail = _apply(session, a, now)
        delay_ms = (time.time() - a.received_wall) * 1e3
        recorder.write_event("control", None, t_session=now, action=a.action, value=a.value,
                             source="dashboard", delay_ms=delay_ms, **detail)
        hub.publish("control", t=round(now, 3), action=a.action, value=a.value, **detail)
        logger.info("t=%.1fs dashboard: %s %s", now, a.action,
                    "" if a.value is None else a.value)
    return done


def _apply(session: Any, a: ControlAction, now: float) -> dict[str, Any]:
    """Apply one action; return what the event records besides action and value."""
    ctrl: ControlState = session.controls
    if a.action == "knobs":
        ctrl.override = dict(a.value)
        return {}
    if a.action == "release":
        ctrl.override = None
        return {}
    if a.action == "pause":
        ctrl.paused = True
        return {}
    if a.action == "resume":
        ctrl.paused = False
        return {}
    if a.action == "stop":
        session.request_stop("stopped from the dashboard (fade out)")
        return {}
    if a.action == "target":
        changer = getattr(session, "target_change", None)
        before = getattr(changer.current_target(session.target), "name", "") \
            if changer is not None else session.target.name
        if changer is not None and callable(getattr(changer, "request", None)):
            changer.request(a.value)  # the planned transition from the next decision
            return {"previous": before, "transition": "planned (st_agent.live.target_change)"}
        session.target = resolve_target(a.value)
        return {"previous": before, "transition": "rate limit"}
    if a.action == "marker":
        session.note_marker(now, f"note: {a.value}")
        return {}
    raise AssertionError(f"unchecked action {a.action!r}")  # the hub checked it
