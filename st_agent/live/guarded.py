"""A live session's controller, with a safe fallback when it fails.

A controller that raises, or returns an action that is not three finite numbers,
must not end the music. :class:`GuardedController` checks each action; on the
first failure it holds the knobs for that decision (action zero: no change) and
from the next decision on asks the *fallback* instead: the tuned PID
(:func:`st_agent.policies.controllers.make_controller` ``"pid"``), or, under a
manual override, holding the knobs (the override is the therapist's choice; a PID
must not replace it). Should the fallback fail too, the knobs hold for the rest
of the session. The failed controller is not asked again: its internal state may
be what went wrong.

Each switch is returned as a :class:`Fallback` so the session records it (event
``controller_fallback``), shows it on the status line and in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.contract import ACTION_SIZE

__all__ = ["Fallback", "GuardedController", "check_action"]

logger = logging.getLogger(__name__)

#: The action that changes no knob.
HOLD = np.zeros(ACTION_SIZE)


@dataclass(frozen=True)
class Fallback:
    """A controller failed and was replaced.

    Parameters
    ----------
    failed : str
        Which controller failed (its description).
    error : str
        What went wrong (exception type and message, or the bad action).
    now : str
        What decides from the next decision on (``"PID ..."`` or ``"hold"``).
    """

    failed: str
    error: str
    now: str


def check_action(action: Any) -> np.ndarray:
    """The action as a float array of shape (3,), or a ``ValueError`` saying why not.

    Parameters
    ----------
    action : array-like
        What a controller's ``predict`` returned as its action.

    Returns
    -------
    action : ndarray of float64, shape (3,)

    Raises
    ------
    ValueError
        When it is not numeric, not three values, or not all finite.
    """
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action is not numeric ({type(action).__name__}): {e}") from e
    if a.size != ACTION_SIZE:
        raise ValueError(f"action has shape {a.shape}, expected ({ACTION_SIZE},)")
    a = a.reshape(-1)
    if not np.isfinite(a).all():
        raise ValueError(f"action is not finite: {a.tolist()}")
    return a


class GuardedController:
    """``predict`` that never raises and always returns a finite (3,) action.

    Parameters
    ----------
    controller : object
        The session's controller (``predict(obs, deterministic=True) -> (action, _)``).
    name : str
        How messages name it.
    fallback : callable, optional
        Builds the fallback controller when first needed (``() -> (controller, name)``);
        None: hold the knobs after a failure.
    """

    def __init__(self, controller: Any, name: str,
                 fallback: Callable[[], tuple[Any, str]] | None = None) -> None:
        if not callable(getattr(controller, "predict", None)):
            raise TypeError(f"controller must have a predict(obs) method, got "
                            f"{type(controller).__name__}")
        self.name = name
        self._active: Any = controller
        self._active_name = name
        self._fallback = fallback
        self.fallbacks: list[Fallback] = []

    @property
    def using(self) -> str:
        """Which controller decides now: its name, or ``"hold"``."""
        return self._active_name

    @property
    def active(self) -> Any:
        """The controller that decides now (None once the knobs hold)."""
        return self._active

    @property
    def failed(self) -> bool:
        """Whether the session's own controller was replaced."""
        return bool(self.fallbacks)

    def predict(self, obs: np.ndarray) -> tuple[np.ndarray, Fallback | None]:
        """The next action and, when a controller failed at this call, the switch.

        Parameters
        ----------
        obs : ndarray, shape (n_obs,)

        Returns
        -------
        action : ndarray of float64, shape (3,)
            Finite; zeros (hold) at the decision where a controller failed.
        fallback : Fallback or None
        """
        if self._active is None:
            return HOLD.copy(), None
        try:
            action, _ = self._active.predict(obs, deterministic=True)
            return check_action(action), None
        except Exception as e:  # any failure of a controller: the music goes on
            error = f"{type(e).__name__}: {e}"
        failed = self._active_name
        self._active, self._active_name = None, "hold"
        if self._fallback is not None and not self.fallbacks:
            try:
                self._active, self._active_name = self._fallback()
            except Exception as e:  # no fallback controller: hold the knobs
                logger.warning("the fallback controller could not be built (%s: %s); the "
                               "knobs hold", type(e).__name__, e)
        event = Fallback(failed, error, self._active_name)
        self.fallbacks.append(event)
        logger.warning("controller %s failed (%s); knobs hold for this decision, then %s "
                       "decides", failed, error, event.now)
        return HOLD.copy(), event
