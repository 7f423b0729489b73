"""PID gains tuned for jams, on jam groups of a stream of their own.

The shipped single-listener PID gains (``assets/pid/<target>.json``) were tuned on
single-listener sessions. In a jam the tempo a performer proposes is negotiated
with the others and each listener hears a mix, so the best gains differ. This
module tunes them on the jam itself: for each target preset in turn (one sweep of
coordinate descent, in sorted order), every setting of
:data:`st_agent.policies.tuning.PID_GRID` is tried for the performers with that
target, the others keeping their current gains (starting from the single-listener
ones), on ``n_groups`` groups whose listeners and targets come from
:func:`tuning_groups`: a seed stream that neither training (``train-jam`` draws per
episode from the env's own generator) nor the held-out evaluation groups
(:func:`st_agent.policies.jam.heldout_groups`) use. The score of a setting is the
mean distance, over the last half of each episode, of the performers with that
target. ``benchmarks/tune_jam_pid.py --write`` writes the result to
``policies/assets/pid_jam/<target>.json``, which the ``pid`` jam baseline and
``st-agent jam --policy pid`` use.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from st_agent.contract import TARGET_PRESETS
from st_agent.envs.jam import JamBank
from st_agent.listener.model import sample_listeners
from st_agent.policies.baselines import PIDPolicy
from st_agent.policies.controllers import pid_for
from st_agent.policies.jam import per_performer_controller, rollout_jam
from st_agent.policies.tuning import PID_GRID

__all__ = ["JAM_TUNING_OFFSET", "tune_jam_pid", "tuning_groups"]

logger = logging.getLogger(__name__)

#: Seed offset of the jam tuning groups (the held-out groups use another offset).
JAM_TUNING_OFFSET = 3_000_017


def tuning_groups(n_groups: int, performers: int = 3, seed: int = 0
                  ) -> list[tuple[list[Any], list[str]]]:
    """``n_groups`` groups of (listeners, target preset names) for tuning only."""
    rng = np.random.default_rng(JAM_TUNING_OFFSET + seed)
    presets = sorted(TARGET_PRESETS)
    return [(sample_listeners(performers, rng=rng),
             [presets[int(i)] for i in rng.integers(len(presets), size=performers)])
            for _ in range(n_groups)]


def tune_jam_pid(bank: JamBank, n_groups: int = 64, performers: int = 3, seed: int = 0,
                 grid: dict[str, tuple[float, ...]] | None = None, max_steps: int = 32
                 ) -> dict[str, dict[str, float]]:
    """Tune PID gains per target preset on jam tuning groups (module docstring).

    Parameters
    ----------
    bank : JamBank
        The fast jam's phrases.
    n_groups : int
        Tuning groups (one episode each).
    performers : int
        Performers per group.
    seed : int
        Tuning stream; the episodes are reset with ``seed + g``.
    grid : dict, optional
        ``{"kp": (...), "ki": (...), "kd": (...)}``; default :data:`PID_GRID`.
    max_steps : int
        Phrases per episode.

    Returns
    -------
    gains : dict
        ``target -> {"kp", "ki", "kd", "score", "start_score"}``: ``score`` with the
        chosen gains, ``start_score`` with the single-listener gains, both measured
        when the target's turn came.
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"n_groups must be an int >= 1, got {n_groups!r}")
    grid = grid or PID_GRID
    groups = tuning_groups(n_groups, performers, seed)
    gains = {t: {"kp": p.kp, "ki": p.ki, "kd": p.kd}
             for t, p in ((t, pid_for(t)) for t in sorted(TARGET_PRESETS))}
    kw = {"jam_bank": bank, "max_steps": max_steps}
    out: dict[str, dict[str, float]] = {}
    for target in sorted(TARGET_PRESETS):
        mask = np.array([[t == target for t in ts] for _, ts in groups])  # (G, N)
        if not mask.any():
            raise ValueError(f"no performer of the {n_groups} tuning groups has target "
                             f"{target!r}; give more groups")

        def score(g: dict[str, float], target: str = target, mask: np.ndarray = mask
                  ) -> float:
            trial = gains | {target: g}
            res = rollout_jam(lambda env: per_performer_controller(
                lambda i: PIDPolicy(**trial[env.targets[i].name]), env.n), groups, kw, seed)
            return float(np.asarray(res["per_group_performer"])[mask].mean())

        start = score(gains[target])
        table = [(g, score(g)) for g in (
            {"kp": kp, "ki": ki, "kd": kd}
            for kp, ki, kd in itertools.product(grid["kp"], grid["ki"], grid["kd"]))]
        best, best_score = min(table, key=lambda r: r[1])
        gains[target] = best
        out[target] = best | {"score": best_score, "start_score": start}
        logger.info("jam PID for %s: %s, %.4f (single-listener gains %.4f)", target, best,
                    best_score, start)
    return out
