"""The arguments of :class:`st_agent.envs.jam.JamEnv`, resolved per performer and checked.

Each function takes what a user passes (one value for every performer, or a
list of one per performer) and returns a list of N, or raises ``ValueError`` /
``TypeError`` naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from st_agent.contract import SafetyBounds, Target, resolve_target
from st_agent.envs.closed_loop import load_listener_file
from st_agent.listener.model import ListenerParams
from st_agent.music.ensemble import check_per_performer
from st_agent.types import Knobs

__all__ = ["check_weights", "resolve_bounds", "resolve_listeners", "resolve_start_knobs",
           "resolve_targets"]


def resolve_targets(targets: Any, n: int) -> list[Target | None]:
    """Per performer a Target, or None for ``"random"`` (a preset drawn per episode).

    ``targets`` is one spec for all (preset name, ``(valence, arousal)``,
    :class:`Target`, ``"random"``) or a list of ``n`` specs.
    """
    def one(spec: Any) -> Target | None:
        return None if isinstance(spec, str) and spec == "random" else resolve_target(spec)

    if isinstance(targets, str | Target):
        return [one(targets)] * n
    if isinstance(targets, Sequence) and targets and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in targets):
        return [one(tuple(targets))] * n  # one (valence, arousal) point for all
    return [one(t) for t in check_per_performer("targets", targets, n)]


def resolve_listeners(listeners: Any, n: int) -> list[ListenerParams | None]:
    """Per performer fixed listener parameters, or None (a population draw per episode).

    Each entry is a :class:`ListenerParams`, a fitted ``listener.json`` path or None.
    """
    if listeners is None:
        return [None] * n
    out: list[ListenerParams | None] = []
    for spec in check_per_performer("listeners", listeners, n):
        if spec is None or isinstance(spec, ListenerParams):
            out.append(spec)
        elif isinstance(spec, str | Path):
            out.append(load_listener_file(spec))
        else:
            raise TypeError(f"each listener must be a ListenerParams, a listener.json path "
                            f"or None, got {spec!r}")
    return out


def resolve_bounds(bounds: Any, n: int) -> list[SafetyBounds]:
    """Per performer :class:`SafetyBounds` (None: the defaults for all)."""
    if bounds is None or isinstance(bounds, SafetyBounds):
        return [bounds or SafetyBounds()] * n
    out = check_per_performer("bounds", bounds, n)
    if not all(isinstance(b, SafetyBounds) for b in out):
        raise TypeError(f"bounds must be SafetyBounds, got {bounds!r}")
    return out


def resolve_start_knobs(start_knobs: Any, n: int) -> list[Knobs] | None:
    """Per performer start :class:`Knobs`, or None (uniform within the bounds)."""
    if start_knobs is None or isinstance(start_knobs, Knobs):
        return None if start_knobs is None else [start_knobs] * n
    out = check_per_performer("start_knobs", start_knobs, n)
    if not all(isinstance(k, Knobs) for k in out):
        raise TypeError(f"start_knobs must be Knobs, got {start_knobs!r}")
    return out


def check_weights(fractions: dict[str, Any], non_negative: dict[str, Any],
                  counts: dict[str, Any]) -> None:
    """``fractions`` in [0, 1], ``non_negative`` finite and >= 0, ``counts`` ints >= 1."""
    for name, value in fractions.items():
        if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    for name, value in non_negative.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
