"""The controller a live session asks for, by name: a trained policy or a baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from st_agent.contract import HISTORY_LEN, SafetyBounds
from st_agent.policies.baselines import FIXED_KNOBS, FixedPolicy, PIDPolicy, RandomPolicy
from st_agent.policies.loading import bundled_policies, load_bundled_policy, load_policy
from st_agent.types import Knobs

__all__ = ["BASELINE_POLICIES", "JamControllerChoice", "make_controller", "make_jam_controller"]

#: Policies that are baselines rather than trained networks.
BASELINE_POLICIES = ("pid", "random", "fixed")


def make_controller(policy: str, bounds: SafetyBounds, target: str = "calm",
                    override: Knobs | None = None, seed: int = 0) -> tuple[Any, str]:
    """Load the controller a session asks for; ``(controller, description)``.

    Parameters
    ----------
    policy : str
        A bundled policy name (:func:`st_agent.policies.loading.bundled_policies`), the
        folder of a trained policy, or a baseline: ``pid``, ``random``, ``fixed``
        (the fixed preset knobs of ``target``).
    bounds : SafetyBounds
        The therapist's bounds (the fixed baseline and the override respect them).
    target : str
        Target preset name, for the fixed baseline.
    override : Knobs, optional
        Manual override: hold these knobs (reached at the rate limit) instead.
    seed : int
        Seed of the random baseline.

    Raises
    ------
    ValueError
        For an unknown policy name, or a policy folder that does not validate.
    """
    if override is not None:
        knobs = bounds.clip(override)
        return FixedPolicy(knobs.as_tuple(), bounds), f"manual override {knobs!r}"
    if policy == "pid":
        return PIDPolicy(), "PID on the state error"
    if policy == "random":
        return RandomPolicy(seed=seed), "random knob changes"
    if policy == "fixed":
        preset = target if target in FIXED_KNOBS else "calm"
        return FixedPolicy(preset, bounds), f"fixed {preset} preset knobs"
    if policy in bundled_policies():
        return load_bundled_policy(policy), f"bundled PPO policy {policy!r}"
    path = Path(policy)
    if path.exists():
        return load_policy(path), f"PPO policy {path}"
    raise ValueError(f"unknown policy {policy!r}; choose a bundled policy "
                     f"{bundled_policies()}, a baseline {list(BASELINE_POLICIES)}, or the "
                     "folder of a trained policy (st-agent train)")


class JamControllerChoice(NamedTuple):
    """What :func:`make_jam_controller` returns."""

    act: Callable[[np.ndarray], np.ndarray]
    """``obs (N, n_obs) -> actions (N, 3)``."""
    name: str
    """How reports name it."""
    history_len: int = HISTORY_LEN
    """Past phrases the observations must carry (``run_jam(..., history_len=)``)."""


def make_jam_controller(policy: str, performers: int, seed: int = 0) -> JamControllerChoice:
    """The controller a live jam asks for: ``obs (N, n_obs) -> actions (N, 3)``.

    Parameters
    ----------
    policy : str
        A bundled jam policy (``jam3``) or a jam policy folder (one network, or an
        ensemble from ``combine-jam``, shared by the performers); ``independent``
        (the bundled single-listener ``calm`` policy, one per performer, on the
        single-listener part of the observation); ``pid`` or ``random`` per performer.
    performers : int
    seed : int
        Seed of the random controllers.

    Returns
    -------
    choice : JamControllerChoice
        ``(act, name, history_len)``.

    Raises
    ------
    ValueError
        For an unknown name or a policy that does not validate.
    """
    from st_agent.policies.jam import load_jam_policy, per_performer_controller, shared_controller

    if policy == "pid":
        return JamControllerChoice(per_performer_controller(lambda i: PIDPolicy(), performers),
                                   "PID per performer")
    if policy == "random":
        return JamControllerChoice(
            per_performer_controller(lambda i: RandomPolicy(seed=seed + i), performers),
            "random per performer")
    if policy == "independent":
        single = load_bundled_policy("calm")
        return JamControllerChoice(
            per_performer_controller(lambda i: single, performers, single.history_len),
            "independent single-listener policies (calm)", single.history_len)
    try:
        shared = load_jam_policy(policy)
    except FileNotFoundError as e:
        raise ValueError(f"unknown jam policy {policy!r} ({e}); choose a bundled jam policy "
                         "(jam3), a jam policy folder (st-agent train-jam), independent, pid "
                         "or random") from e
    return JamControllerChoice(shared_controller(shared), f"shared jam policy {policy!r}",
                               shared.history_len)
