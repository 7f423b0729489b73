"""Tuning the reference controllers on a listener stream kept apart from evaluation.

Everything here runs many fast sessions at once
(:class:`st_agent.envs.vector.VecClosedLoopEnv`) drawn from a *tuning stream*:
generator seeds :data:`TUNE_OFFSET` ``+ seed``, never used by the held-out
listeners of :mod:`st_agent.policies.evaluate`. It provides

- :func:`batch_rollout`: one batch of episodes under a controller, with the
  per-phrase distance, estimates and knobs;
- :func:`fit_population_prior`: the adaptive controller's prior, from sessions
  with random exploratory knob changes;
- :func:`tune_pid`: a grid search over PID gains;
- :func:`best_constant`: the best knobs to hold (over a knob grid);
- :func:`tune_adaptive`: a small random search over the adaptive controller's settings.

The score of a setting is the protocol's metric: mean distance to the target
over the last half of the episode, averaged over the tuning listeners.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from st_agent.contract import SafetyBounds
from st_agent.policies.adaptive import (
    AdaptiveConfig,
    AdaptiveController,
    ResponsePrior,
    exposure_path,
    fit_prior,
)
from st_agent.policies.baselines import FixedPolicy, PIDPolicy, RandomPolicy

__all__ = ["TUNE_OFFSET", "Rollout", "batch_rollout", "best_constant", "fit_population_prior",
           "tune_adaptive", "tune_pid"]

logger = logging.getLogger(__name__)

#: Seed offset of the tuning stream (held-out listeners use other streams).
TUNE_OFFSET = 7_000_003
#: PID gains searched by :func:`tune_pid`.
PID_GRID = {"kp": (0.25, 0.5, 1.0, 2.0, 4.0), "ki": (0.0, 0.05, 0.2), "kd": (0.0, 0.5)}


@dataclass
class Rollout:
    """One batch of episodes (N sessions, T phrases)."""

    distance: np.ndarray
    """Distance to the target after each phrase, shape (N, T)."""
    est: np.ndarray
    """Estimate at reset and after each phrase, shape (N, T + 1, 2)."""
    knobs: np.ndarray
    """Knobs each phrase played under, shape (N, T, 3)."""
    t_sec: np.ndarray
    """Session time at the end of each phrase, shape (N, T)."""

    @property
    def last_half(self) -> np.ndarray:
        """Mean distance over the last half of each episode, shape (N,)."""
        t = self.distance.shape[1]
        return self.distance[:, t // 2:].mean(axis=1)


def batch_rollout(controller: Any, env_kwargs: dict[str, Any], n_envs: int = 256,
                  seed: int = 0) -> Rollout:
    """Run ``n_envs`` fast sessions for one episode under ``controller``.

    Parameters
    ----------
    controller : object
        ``predict(obs (N, n_obs)) -> (actions (N, 3), _)``; ``reset()`` is called first.
    env_kwargs : dict
        :class:`~st_agent.envs.vector.VecClosedLoopEnv` keyword arguments.
    n_envs : int
        Sessions.
    seed : int
        Seed of the tuning stream (``TUNE_OFFSET + seed``): the same seed gives the
        same listeners, start knobs and noise to every controller.

    Returns
    -------
    rollout : Rollout
    """
    from st_agent.envs.vector import VecClosedLoopEnv

    venv = VecClosedLoopEnv(n_envs, seed=TUNE_OFFSET + seed, **env_kwargs)
    obs = venv.reset()
    if hasattr(controller, "reset"):
        controller.reset()
    t = venv.max_steps
    dist, ts = np.zeros((n_envs, t)), np.zeros((n_envs, t))
    est, knobs = np.zeros((n_envs, t + 1, 2)), np.zeros((n_envs, t, 3))
    est[:, 0] = obs[:, 0:2]
    for i in range(t):
        action, _ = controller.predict(obs, deterministic=True)
        t_before = venv.t_sec.copy()
        obs, _, done, infos = venv.step(action)
        dist[:, i] = [inf["distance"] for inf in infos]
        ts[:, i] = t_before + np.array([inf["phrase_sec"] for inf in infos])
        final = np.stack([inf.get("terminal_observation", obs[j]) for j, inf in
                          enumerate(infos)]) if done.any() else obs
        est[:, i + 1] = final[:, 0:2]
        knobs[:, i] = final[:, 6:9]
    venv.close()
    return Rollout(dist, est, knobs, ts)


def fit_population_prior(env_kwargs: dict[str, Any], n_envs: int = 512, seed: int = 0,
                         max_steps: int = 64, source: str = "",
                         base: AdaptiveConfig | None = None) -> ResponsePrior:
    """The adaptive controller's prior: sessions with random knob changes, fitted.

    Parameters
    ----------
    env_kwargs : dict
        Environment of the population (families, target, bank).
    n_envs : int
        Listeners simulated (one session each).
    seed : int
        Tuning-stream seed.
    max_steps : int
        Phrases per session (more phrases: tighter per-listener fits).
    source : str
        Stored with the prior.
    base : AdaptiveConfig, optional
        Settings whose exposure time constant the regressors use.
    """
    roll = batch_rollout(RandomPolicy(seed), env_kwargs | {"max_steps": max_steps}, n_envs,
                         seed + 101)
    tau = (base or AdaptiveConfig()).exposure_tau_sec
    trans = []
    for i in range(n_envs):
        e, k = roll.est[i], roll.knobs[i]
        keep = np.all(np.isfinite(e[1:]), axis=1) & np.all(np.isfinite(e[:-1]), axis=1)
        # the first transition starts from the rest estimate, before any knob played
        trans.append((e[:-1][keep], k[keep], exposure_path(k, tau)[keep], e[1:][keep]))
    return fit_prior(trans, source=source or f"{n_envs} random-knob sessions of {max_steps} "
                     f"phrases, tuning stream seed {seed}")


def _score(controller: Any, env_kwargs: dict[str, Any], n_envs: int, seed: int) -> float:
    return float(batch_rollout(controller, env_kwargs, n_envs, seed).last_half.mean())


def tune_pid(env_kwargs: dict[str, Any], n_envs: int = 256, seed: int = 0,
             grid: dict[str, tuple[float, ...]] | None = None
             ) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """Grid search over PID gains on the tuning stream.

    Returns
    -------
    best : dict
        ``{"kp", "ki", "kd", "score"}``.
    table : list of (gains, score)
        Every setting tried.
    """
    grid = grid or PID_GRID
    table = []
    for kp, ki, kd in itertools.product(grid["kp"], grid["ki"], grid["kd"]):
        gains = {"kp": kp, "ki": ki, "kd": kd}
        table.append((gains, _score(PIDPolicy(**gains), env_kwargs, n_envs, seed)))
    gains, score = min(table, key=lambda r: r[1])
    logger.info("tuned PID %s: %.3f", gains, score)
    return gains | {"score": score}, table


def best_constant(env_kwargs: dict[str, Any], n_envs: int = 256, seed: int = 0,
                  grid: int = 5, bounds: SafetyBounds | None = None
                  ) -> tuple[tuple[float, float, float], float]:
    """The knobs that, reached at the rate limit and held, score best on the tuning stream.

    Returns
    -------
    knobs : (float, float, float)
    score : float
    """
    bounds = bounds or env_kwargs.get("bounds") or SafetyBounds()
    g = np.linspace(0.0, 1.0, grid)
    best, best_s = None, np.inf
    for k in itertools.product(g, repeat=3):
        knobs = tuple(float(x) for x in np.clip(k, bounds.lo, bounds.hi))
        s = _score(FixedPolicy(knobs, bounds), env_kwargs, n_envs, seed)
        if s < best_s:
            best, best_s = knobs, s
    logger.info("best constant knobs %s: %.3f", best, best_s)
    return best, float(best_s)


#: Ranges of the random search in :func:`tune_adaptive`.
ADAPTIVE_SPACE = {"horizon": (2, 10), "move_weight": (0.0, 0.1),
                  "process_noise": (0.0, 0.05), "bias_process_noise": (0.0, 0.01),
                  "observer_gain": (0.3, 1.0)}


def tune_adaptive(prior: ResponsePrior, env_kwargs: dict[str, Any], n_trials: int = 16,
                  n_envs: int = 256, seed: int = 0,
                  base: AdaptiveConfig | None = None
                  ) -> tuple[AdaptiveConfig, float, list[tuple[AdaptiveConfig, float]]]:
    """Random search over :class:`AdaptiveConfig` on the tuning stream.

    The default settings are the first trial, so the result is never worse
    than them on the tuning listeners.

    Returns
    -------
    best : AdaptiveConfig
    score : float
    table : list of (config, score)
    """
    rng = np.random.default_rng(TUNE_OFFSET + seed)
    base = base or AdaptiveConfig()
    bounds = env_kwargs.get("bounds")
    trials = [base]
    for _ in range(n_trials - 1):
        kw = {}
        for name, (lo, hi) in ADAPTIVE_SPACE.items():
            kw[name] = int(rng.integers(lo, hi + 1)) if isinstance(lo, int) \
                else float(rng.uniform(lo, hi))
        trials.append(replace(base, **kw))
    table = [(c, _score(AdaptiveController(prior, bounds, c), env_kwargs, n_envs,
                        seed)) for c in trials]
    best, score = min(table, key=lambda r: r[1])
    logger.info("tuned adaptive %s: %.3f", best, score)
    return best, score, table
