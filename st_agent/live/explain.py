"""The reason of each knob change, from what the controller actually used.

A reason names the knob, its direction and values, then what decided it:

- **PID** (:class:`~st_agent.policies.baselines.PIDPolicy`): the error on the knob's
  axis (region minus estimate) and the proportional, integral and derivative terms
  that sum to the move; when the summed past error outweighs the current one, it
  says so.
- **Adaptive** (:class:`~st_agent.policies.adaptive.AdaptiveController`): the
  destination of the model-predictive plan, the mean distance to the target region
  its identified response predicts over the horizon against holding the knobs, the
  predicted state, the identified effect of this knob's step alone, and the
  feedback guard when it restricted the moves.
- **Residual PPO** (:class:`~st_agent.policies.residual.ResidualController`): the
  adaptive plan's move and the learned correction added to it.
- **Fixed knobs and the manual override**: the setting being reached.
- **A PPO policy or any controller that exposes nothing**: "the controller's
  choice (it exposes no reason)", with the state error on the knob's axis and
  whether the move goes with or against it. No causal claim it cannot support.

Then the limits that shaped the move: the rate limit ``max_delta`` when the
controller asked for more, the therapist's bound that stopped the knob. A knob
that a bound kept from moving is reported too.

Every reason is a :class:`Reason`: ``implied`` is the direction its cited cause
implies (None when it cites none); by construction it equals the direction of the
change. :func:`direction_problem` checks a reason's text on its own (the word
"up"/"down" against the values, and a state error cited as the cause against the
direction), the test that the old template failed for 6 of 41 reasons of the demo.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.contract import KNOB_NAMES, SafetyBounds
from st_agent.types import Knobs

__all__ = ["Reason", "controller_info", "direction_problem", "explain_decision"]

logger = logging.getLogger(__name__)

#: The axis each knob acts on (tempo and energy raise arousal; valence raises valence).
_AXIS = {"valence": 0, "tempo": 1, "energy": 1}
_AXIS_NAME = ("valence", "arousal")


@dataclass(frozen=True)
class Reason:
    """One knob's change and why.

    Parameters
    ----------
    knob : str
        ``valence``, ``tempo`` or ``energy``.
    old, new : float
        The knob before and after the decision, knob units.
    asked : float or None
        The change the controller asked for, knob units, before the rate limit and
        the bounds (None when unknown).
    cause : str
        What decided it: ``pid``, ``adaptive``, ``residual``, ``fixed``, ``random``,
        ``policy`` (exposes nothing) or ``bound`` (a bound kept it still).
    implied : int or None
        Direction (+1 up, -1 down) the cited cause implies; None when it cites none.
    text : str
        The reason in words.
    """

    knob: str
    old: float
    new: float
    asked: float | None
    cause: str
    implied: int | None
    text: str

    @property
    def direction(self) -> int:
        """+1 when the knob went up, -1 down, 0 when it stayed."""
        d = self.new - self.old
        return 0 if abs(d) <= 1e-9 else (1 if d > 0 else -1)


def controller_info(controller: Any) -> dict[str, Any] | None:
    """What ``controller`` says its last decision used (its ``explain()``), or None."""
    explain = getattr(controller, "explain", None)
    if not callable(explain):
        return None
    try:
        info = explain()
    except Exception as e:  # an explanation must never stop the music
        logger.warning("%s.explain() failed (%s: %s); its reasons say it exposes none",
                       type(controller).__name__, type(e).__name__, e)
        return None
    return info if isinstance(info, dict) else None


def _sign(x: float, tol: float = 1e-9) -> int:
    return 0 if abs(x) <= tol else (1 if x > 0 else -1)


def _relation(state: tuple[float, float] | None, target: Sequence[float],
              axis: int) -> tuple[str, float, float, float] | None:
    """``(above|below|inside, estimate, lo, hi)`` of the state against the region."""
    if state is None or not math.isfinite(state[axis]):
        return None
    v, a = float(target[0]), float(target[1])
    region = getattr(target, "region", (v, v, a, a))
    lo, hi = float(region[2 * axis]), float(region[2 * axis + 1])
    s = float(state[axis])
    if s > hi + 0.05:
        return "above", s, lo, hi
    if s < lo - 0.05:
        return "below", s, lo, hi
    return "inside", s, lo, hi


def _band(lo: float, hi: float) -> str:
    return f"{lo:+.2f}" if abs(hi - lo) < 1e-9 else f"{lo:+.2f}…{hi:+.2f}"


def _error_words(rel: tuple[str, float, float, float] | None, knob: str, direction: int
                 ) -> str:
    """The state on the knob's axis, and whether the move goes with or against it."""
    if rel is None:
        return "no usable estimate"
    where, s, lo, hi = rel
    axis = _AXIS_NAME[_AXIS[knob]]
    if where == "inside":
        return f"{axis} {s:+.2f} is inside the target {_band(lo, hi)}"
    wanted = -1 if where == "above" else 1  # each knob raises its axis
    side = "above" if where == "above" else "below"
    if direction == wanted:
        return f"{axis} {s:+.2f} {side} target {_band(lo, hi)}; the move goes toward it"
    return (f"although {axis} {s:+.2f} is {side} the target {_band(lo, hi)} (a "
            f"{'higher' if direction > 0 else 'lower'} {knob} usually "
            f"{'raises' if direction > 0 else 'lowers'} {axis})")


def _pid_words(info: dict[str, Any], j: int) -> tuple[str, int]:
    ax = _AXIS[KNOB_NAMES[j]]
    e, p, i, d, u = (float(info[k][ax]) for k in ("error", "p", "i", "d", "u"))
    kp, ki, kd = info.get("gains", (math.nan, math.nan, math.nan))
    terms = f"{kp:g}×error {p:+.2f}, {ki:g}×summed error {i:+.2f}"
    if kd:
        terms += f", {kd:g}×change {d:+.2f}"
    words = (f"PID on the {_AXIS_NAME[ax]} error (region − estimate {e:+.2f}): {terms} "
             f"→ {u:+.2f} of max_delta")
    if _sign(p) != _sign(u) and _sign(u):
        which = "the summed past error" if i * u >= d * u else "the change of the error"
        words += f"; {which} outweighs the current one"
    return words, _sign(u)


def _adaptive_words(info: dict[str, Any], j: int) -> tuple[str, int]:
    knob = KNOB_NAMES[j]
    ax = _AXIS[knob]
    dest, move = float(info["destination"][j]), float(info["move"][j])
    region = info["region"]
    h = info["horizon"]
    words = (f"adaptive plan heading for {knob} {dest:.2f}: its identified response "
             f"predicts a mean distance to the target of {info['loss']:.2f} over the next "
             f"{h} phrases ({info['loss_hold']:.2f} if the knobs hold), "
             f"{_AXIS_NAME[ax]} {info['y_end'][ax]:+.2f} after {h} phrases (target "
             f"{_band(region[2 * ax], region[2 * ax + 1])}); this step alone: "
             f"{_AXIS_NAME[ax]} {info['effect'][j]:+.2f}")
    if info.get("guard") == 1:
        words += "; feedback guard: arousal far above the band, only calming moves allowed"
    elif info.get("guard") == -1:
        words += "; feedback guard: arousal far below the band, only energising moves allowed"
    return words, _sign(move)


def _residual_words(info: dict[str, Any], j: int, md: float) -> tuple[str, int]:
    mpc, res, act = (float(info[k][j]) for k in ("mpc", "residual", "action"))
    words = (f"residual PPO: the adaptive plan asked {mpc * md:+.2f}, the learned "
             f"correction {res * md:+.2f} → {act * md:+.2f}")
    if _sign(mpc) and _sign(act) and _sign(mpc) != _sign(act):
        words += " (the learned correction reversed the plan; the network gives no reason)"
    elif _sign(mpc) and info.get("adaptive"):
        words += f" [{_adaptive_words(info['adaptive'], j)[0]}]"
    return words, _sign(act)


def _cause(info: dict[str, Any] | None, j: int, old: float, md: float,
           rel: tuple[str, float, float, float] | None, direction: int
           ) -> tuple[str, str, int | None]:
    """``(cause, words, implied direction)`` of knob ``j`` from the controller's info."""
    kind = (info or {}).get("kind")
    if kind == "pid":
        words, implied = _pid_words(info, j)
        return "pid", words, implied
    if kind == "adaptive":
        words, implied = _adaptive_words(info, j)
        return "adaptive", words, implied
    if kind == "residual":
        words, implied = _residual_words(info, j, md)
        return "residual", words, implied
    if kind == "fixed":
        k = float(info["knobs"][j])
        return "fixed", f"{info.get('role', 'fixed knobs')}: moving to {k:.2f}", _sign(k - old)
    if kind == "random":
        return "random", "the random baseline's draw (no reason)", None
    return ("policy", "the controller's choice (it exposes no reason); "
            + _error_words(rel, KNOB_NAMES[j], direction), None)


def _asked(info: dict[str, Any] | None, action: np.ndarray | None, j: int, md: float
           ) -> float | None:
    """The change knob ``j`` was asked to make, knob units, before the rate limit."""
    if info is not None and info.get("asked") is not None:
        return float(info["asked"][j]) * md
    if action is not None and math.isfinite(action[j]):
        return float(action[j]) * md
    return None


def _limits(old: float, new: float, asked: float | None, lo: float, hi: float, md: float,
            knob: str) -> list[str]:
    """The rate limit and the bound that shaped the move, in words."""
    out: list[str] = []
    if asked is None:
        return out
    passed = float(np.clip(asked, -md, md))
    if abs(asked) > md + 1e-6:
        out.append(f"rate limit max_delta {md:.2f} per phrase (asked {asked:+.2f})")
    if abs(old + passed - new) > 1e-6:
        bound = hi if passed > 0 else lo
        out.append(f"stopped at the {knob} bound {bound:.2f} (asked {old + passed:.2f})")
    return out


def explain_decision(old: Knobs, new: Knobs, state: tuple[float, float] | None,
                     target: Sequence[float], *, action: Sequence[float] | None = None,
                     bounds: SafetyBounds | None = None, info: dict[str, Any] | None = None,
                     tol: float = 0.005) -> list[Reason]:
    """The reason of every knob that moved (or that a bound kept still), structured.

    Parameters
    ----------
    old, new : Knobs
        Knobs before and after the decision.
    state : (float, float) or None
        Estimated (valence, arousal) the decision saw, estimator units.
    target : (float, float) or TargetPoint
        The target (a :class:`~st_agent.targets.TargetPoint` carries its region).
    action : array-like, shape (3,), optional
        The controller's action (fraction of ``max_delta`` per knob).
    bounds : SafetyBounds, optional
        The session's bounds and rate limit (default: full range, 0.25).
    info : dict, optional
        What the controller used (:func:`controller_info`); None: it exposes nothing.
    tol : float
        Changes up to this (knob units) count as none.

    Returns
    -------
    reasons : list of Reason
        Knob order; empty when nothing moved and nothing was held back.
    """
    if not isinstance(old, Knobs) or not isinstance(new, Knobs):
        raise TypeError(f"old and new must be Knobs, got {type(old).__name__} and "
                        f"{type(new).__name__}")
    bounds = bounds if bounds is not None else SafetyBounds()
    md = bounds.max_delta
    act = None if action is None else np.asarray(action, dtype=np.float64).reshape(-1)
    out = []
    for j, knob in enumerate(KNOB_NAMES):
        a, b = getattr(old, knob), getattr(new, knob)
        asked = _asked(info, act, j, md)
        lo, hi = getattr(bounds, knob)
        moved = abs(b - a) > tol
        if not moved:
            if asked is None or abs(asked) <= tol or lo < a < hi:
                continue
            bound = hi if asked > 0 else lo
            out.append(Reason(knob, a, b, asked, "bound", None,
                              f"{knob} held at its bound {bound:.2f}: the controller asked "
                              f"{asked:+.2f}"))
            continue
        direction = 1 if b > a else -1
        rel = _relation(state, target, _AXIS[knob])
        try:
            cause, words, implied = _cause(info, j, a, md, rel, direction)
        except (KeyError, IndexError, TypeError, ValueError) as e:  # a malformed explain()
            logger.warning("the controller's explanation is unusable (%s: %s)",
                           type(e).__name__, e)
            cause, words, implied = _cause(None, j, a, md, rel, direction)
        if implied not in (None, direction):  # never state a cause against the change
            logger.warning("%s: the controller's account (%s) disagrees with the change "
                           "%.3f→%.3f; not citing it", knob, cause, a, b)
            cause, words, implied = _cause(None, j, a, md, rel, direction)
        limits = _limits(a, b, asked, lo, hi, md, knob)
        digits = 2 if round(a, 2) != round(b, 2) else 3
        text = (f"{knob} {'up' if direction > 0 else 'down'} ({a:.{digits}f}→{b:.{digits}f}): "
                f"{words}")
        if limits:
            text += "; " + "; ".join(limits)
        out.append(Reason(knob, a, b, asked, cause, implied, text))
    return out


_HEAD_RE = re.compile(r"^(valence|tempo|energy) (up|down) \((-?[\d.]+)→(-?[\d.]+)\)")
_CITED_RE = re.compile(r"(?<!although )\b(valence|arousal) ([+-][\d.]+) (above|below) target")


def direction_problem(text: str) -> str | None:
    """What is wrong with the direction of a reason's text, or None.

    Two checks: the word ``up``/``down`` agrees with the values ``(a→b)``; and a
    state error cited as the cause (``arousal +0.62 above target``, not preceded by
    ``although``) asks for the direction taken (each knob raises its axis: above
    the target asks for down, below for up).

    Parameters
    ----------
    text : str
        One reason (:func:`explain_decision`'s ``text``, or a recorded one).

    Returns
    -------
    problem : str or None
    """
    m = _HEAD_RE.match(text)
    if m is None:
        return None  # not a knob change ("knobs hold: ...")
    knob, word, a, b = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
    if (word == "up") != (b > a) or a == b:
        return f"says {knob} {word} but it went {a:.2f}→{b:.2f}"
    for axis, _, side in _CITED_RE.findall(text):
        if axis != _AXIS_NAME[_AXIS[knob]]:
            continue
        wanted = "down" if side == "above" else "up"
        if word != wanted:
            return f"{knob} {word} while citing {axis} {side} target as its reason"
    return None
