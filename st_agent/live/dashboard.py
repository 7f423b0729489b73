"""The session's side of the live dashboard: what the loop publishes, what it obeys.

The dashboard (``st-agent session --dashboard``, ``st-agent jam --dashboard``, and
``st-agent dashboard FOLDER`` to review a finished session) is a local web page served
from a background thread (:mod:`st_agent.live.dashboard_server`). Between that thread
and the session's loop there are exactly two seams, both in :class:`DashboardHub`:

* **Snapshots out.** The loop calls :meth:`DashboardHub.publish` with a small dict
  (an estimate, a decimated chunk of the raw signals, a decision, a phrase, a status).
  It appends to a bounded ring buffer under a lock and returns: no JSON, no socket,
  no waiting. The server reads the ring (:meth:`~DashboardHub.messages_since`) from
  its own thread and sends what is new; a page that falls behind the ring (or joins
  late) gets what the ring still holds, never a blocked loop.
* **Controls in.** The server validates each request (:meth:`DashboardHub.submit`,
  which refuses a malformed one with :class:`ControlRefused` and changes nothing) and
  puts the checked :class:`ControlAction` on a bounded thread-safe queue; the loop
  drains it once per turn (:meth:`~DashboardHub.drain`), applies each action
  (:mod:`st_agent.live.dashboard_controls`) and records it as a ``control`` event.

Every published message carries ``wall_ms``, the wall-clock time (ms since the
epoch) at which the loop published it, so the page can measure the update latency
(``benchmarks/bench_dashboard.py``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from st_agent.targets import TARGET_REGIONS

__all__ = ["ACTIONS", "KNOB_NAMES", "ControlAction", "ControlRefused", "DashboardHub",
           "check_dashboard_flags"]

logger = logging.getLogger(__name__)

#: The control actions the dashboard accepts, with what their ``value`` is.
ACTIONS: dict[str, str] = {
    "knobs": "an object with any of valence, tempo, energy: numbers within the "
             "therapist's bounds (the policy is overridden; reached at the rate limit)",
    "release": "no value: the policy decides again",
    "target": f"a target preset: one of {', '.join(TARGET_REGIONS)}",
    "pause": "no value: the adaptation pauses (the knobs hold; the music goes on)",
    "resume": "no value: the adaptation resumes",
    "stop": "no value: the music fades out and the session stops",
    "marker": "a note, 1 to 500 printable characters",
}
#: The knobs, in the order of :class:`st_agent.types.Knobs`.
KNOB_NAMES = ("valence", "tempo", "energy")
_MAX_NOTE = 500


class ControlRefused(ValueError):
    """A control request that was refused; nothing in the session changed.

    Parameters
    ----------
    status : int
        The HTTP status to answer with (400 malformed, 403 not allowed, 409 the session
        has ended, 429 too many pending).
    message : str
        What was wrong and what is allowed.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ControlAction:
    """One checked control request, waiting for the loop.

    ``value`` is ``None``, a preset name, a note, or ``{knob: value}``.
    ``received_wall`` is ``time.time()`` when the server accepted it; ``performer``
    is the jam performer it addresses (``None``: the whole session).
    """

    action: str
    value: Any
    received_wall: float
    performer: int | None = None


def _number(name: str, x: Any, lo: float, hi: float) -> float:
    if isinstance(x, int) and not isinstance(x, bool):
        x = float(x) if abs(x) < 1e300 else math.inf  # a huge JSON int: out of range
    if isinstance(x, bool) or not isinstance(x, float) or not math.isfinite(x):
        raise ControlRefused(400, f"knob {name} must be a number, got {x!r}")
    if not lo <= x <= hi:
        raise ControlRefused(400, f"knob {name} must be in [{lo:g}, {hi:g}] (the therapist's "
                                  f"bounds), got {x!r}")
    return float(x)


class DashboardHub:
    """The ring of published snapshots and the queue of controls (thread-safe).

    Parameters
    ----------
    ranges : sequence of (float, float), length 3
        The therapist's (lo, hi) of valence, tempo and energy: a knob override outside
        them is refused.
    ring : int
        How many published messages are kept for the page (oldest dropped first).
    max_pending : int
        Controls waiting for the loop before new ones are refused (429).
    read_only : bool
        A review of a finished session: every control is refused (403).
    performers : int, optional
        A jam's number of performers: controls may name ``performer`` in
        ``[0, performers)``.
    actions : sequence of str, optional
        The actions this session takes (default: all of :data:`ACTIONS`); another is
        refused (400) naming those it takes.
    """

    def __init__(self, ranges: Sequence[tuple[float, float]] = ((0.0, 1.0),) * 3,
                 ring: int = 6000, max_pending: int = 64, read_only: bool = False,
                 performers: int | None = None,
                 actions: Sequence[str] | None = None) -> None:
        if isinstance(ring, bool) or not isinstance(ring, int) or ring < 1:
            raise ValueError(f"ring must be an int >= 1, got {ring!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) \
                or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        if len(ranges) != len(KNOB_NAMES):
            raise ValueError(f"ranges must give (lo, hi) of {KNOB_NAMES}, got {ranges!r}")
        self.ranges = tuple((float(lo), float(hi)) for lo, hi in ranges)
        self.read_only = read_only
        self.performers = performers
        self.actions = tuple(ACTIONS) if actions is None else tuple(actions)
        unknown = sorted(set(self.actions) - set(ACTIONS))
        if unknown:
            raise ValueError(f"actions must be among {list(ACTIONS)}, got {unknown}")
        self._ring: deque[dict[str, Any]] = deque(maxlen=ring)
        self._lock = threading.Lock()
        self._seq = 0
        self._controls: queue.Queue[ControlAction] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self.refusals = 0

    # ------------------------------------------------------------- snapshots out
    def publish(self, kind: str, **fields: Any) -> None:
        """Append one message (called by the loop: no I/O, returns at once).

        ``fields`` must be JSON-serialisable plain values (floats, strings, lists).
        """
        msg = {"kind": kind, "wall_ms": time.time() * 1e3, **fields}
        with self._lock:
            self._seq += 1
            msg["seq"] = self._seq
            self._ring.append(msg)

    def messages_since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """Messages published after ``seq`` that the ring still holds, and the last seq."""
        with self._lock:
            last = self._seq
            if seq >= last:
                return [], last
            n_new = min(last - seq, len(self._ring))
            return list(self._ring)[len(self._ring) - n_new:], last

    @property
    def closed(self) -> bool:
        """Whether the session has ended (controls are refused with 409)."""
        return self._closed

    def close(self, reason: str) -> None:
        """The session ended: publish ``end`` and refuse further controls."""
        self.publish("end", reason=reason)
        self._closed = True

    # ------------------------------------------------------------- controls in
    def submit(self, msg: Any) -> ControlAction:
        """Check a control request and queue it for the loop.

        Parameters
        ----------
        msg : Any
            The decoded JSON body: ``{"action": str, "value": ...}`` (and, in a jam,
            optionally ``"performer": int``).

        Returns
        -------
        action : ControlAction
            What was queued.

        Raises
        ------
        ControlRefused
            For a malformed request (unknown action or knob, a value out of range, extra
            fields), a read-only or ended session, or a full queue. Nothing is queued and
            the refusal is logged.
        """
        try:
            action = self._check(msg)
            try:
                self._controls.put_nowait(action)
            except queue.Full:
                raise ControlRefused(429, "too many controls waiting for the session; "
                                          "try again in a second") from None
        except ControlRefused as e:
            self.refusals += 1
            logger.warning("dashboard control refused (%d): %s", e.status, e.message)
            raise
        return action

    def drain(self) -> list[ControlAction]:
        """The controls waiting, oldest first (called by the loop once per turn)."""
        out = []
        while True:
            try:
                out.append(self._controls.get_nowait())
            except queue.Empty:
                return out

    def _check(self, msg: Any) -> ControlAction:
        if self.read_only:
            raise ControlRefused(403, "this dashboard reviews a finished session: it has no "
                                      "controls")
        if self._closed:
            raise ControlRefused(409, "the session has ended; controls are closed")
        if not isinstance(msg, dict):
            raise ControlRefused(400, f"a control must be a JSON object "
                                      f"{{\"action\": ..., \"value\": ...}}, got "
                                      f"{type(msg).__name__}")
        allowed = {"action", "value"} | ({"performer"} if self.performers else set())
        extra = sorted(set(msg) - allowed)
        if extra:
            raise ControlRefused(400, f"unknown field(s) {extra} in the control; allowed: "
                                      f"{sorted(allowed)}")
        action = msg.get("action")
        if not isinstance(action, str) or action not in self.actions:
            what = "this session does not take" if isinstance(action, str) \
                and action in ACTIONS else "unknown action"
            raise ControlRefused(400, f"{what} {action!r}; allowed: "
                                      f"{', '.join(self.actions)}")
        performer = self._performer(msg.get("performer"))
        return ControlAction(action, self._value(action, msg.get("value")), time.time(),
                             performer)

    def _performer(self, who: Any) -> int | None:
        if who is None:
            return None
        n = self.performers or 0
        if isinstance(who, bool) or not isinstance(who, int) or not 0 <= who < n:
            raise ControlRefused(400, f"performer must be an int in [0, {n - 1}], got {who!r}")
        return who

    def _value(self, action: str, value: Any) -> Any:
        if action == "knobs":
            if not isinstance(value, dict) or not value:
                raise ControlRefused(400, f"knobs takes {ACTIONS['knobs']}, got {value!r}")
            unknown = sorted(set(value) - set(KNOB_NAMES))
            if unknown:
                raise ControlRefused(400, f"unknown knob(s) {unknown}; the knobs are "
                                          f"{', '.join(KNOB_NAMES)}")
            return {k: _number(k, value[k], *self.ranges[KNOB_NAMES.index(k)])
                    for k in KNOB_NAMES if k in value}
        if action == "target":
            if not isinstance(value, str) or value not in TARGET_REGIONS:
                raise ControlRefused(400, f"unknown target {value!r}; the presets are "
                                          f"{', '.join(TARGET_REGIONS)}")
            return value
        if action == "marker":
            if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NOTE \
                    or not value.isprintable():
                raise ControlRefused(400, f"marker takes {ACTIONS['marker']}, got "
                                          f"{value!r:.80}")
            return value.strip()
        if value is not None:
            raise ControlRefused(400, f"{action} takes no value, got {value!r:.80}")
        return None


def check_dashboard_flags(dashboard: Any, host: Any, port: Any) -> None:
    """Check ``--dashboard``, ``--dashboard-host`` and ``--dashboard-port``.

    Raises
    ------
    ValueError
        Naming the flag, the bad value and what is allowed.
    """
    if not isinstance(dashboard, bool):
        raise ValueError(f"dashboard must be True or False, got {dashboard!r}")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        raise ValueError(f"--dashboard-host must be an address (default 127.0.0.1), got "
                         f"{host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--dashboard-port must be an int in [0, 65535] (0: a free one), "
                         f"got {port!r}")
