"""Baseline controllers with stable-baselines3's ``predict(obs)`` call.

All read the observation layout of :mod:`st_agent.contract` and return an action
in [-1, 1]^3 (knob change as a fraction of the rate limit). Each accepts one
observation of shape (n_obs,) or a batch (n_envs, n_obs).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from st_agent.contract import ACTION_SIZE, SafetyBounds
from st_agent.listener.model import simulate

__all__ = ["FIXED_KNOBS", "BaselinePolicy", "FixedPolicy", "OraclePolicy", "PIDPolicy",
           "RandomPolicy"]

#: Knobs (valence, tempo, energy) the fixed baseline holds for each preset.
FIXED_KNOBS: dict[str, tuple[float, float, float]] = {
    "calm": (0.6, 0.1, 0.1),
    "focus": (0.5, 0.45, 0.4),
    "uplift": (0.9, 0.6, 0.6),
    "energize": (0.8, 0.95, 0.95),
}
_KNOBS = slice(6, 9)
_ERR = slice(4, 6)


def _batch(obs: np.ndarray) -> tuple[np.ndarray, bool]:
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim not in (1, 2) or obs.shape[-1] < 11:
        raise ValueError(f"obs must have shape (n_obs,) or (n_envs, n_obs) with n_obs >= 11, "
                         f"got {obs.shape}")
    return np.atleast_2d(obs), obs.ndim == 1


def _out(actions: np.ndarray, single: bool) -> tuple[np.ndarray, None]:
    actions = np.clip(actions, -1.0, 1.0).astype(np.float32)
    return (actions[0] if single else actions), None


class BaselinePolicy:
    """Common interface: ``predict(obs, deterministic=True) -> (action, None)``."""

    def reset(self) -> None:
        """Forget any internal state (call at the start of each episode)."""

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Action(s) for ``obs``, shape (3,) or (n_envs, 3), and no recurrent state."""
        raise NotImplementedError


class RandomPolicy(BaselinePolicy):
    """Uniform random knob changes.

    Parameters
    ----------
    seed : int, optional
        Seed of its own generator.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Random action(s) in [-1, 1]^3."""
        b, single = _batch(obs)
        return _out(self.rng.uniform(-1, 1, (len(b), ACTION_SIZE)), single)


class FixedPolicy(BaselinePolicy):
    """Move the knobs to a fixed setting (a preset's) and hold them.

    Parameters
    ----------
    preset : str or (float, float, float)
        A key of :data:`FIXED_KNOBS` or knob values in [0, 1].
    bounds : SafetyBounds, optional
        Must be the environment's (for its rate limit).
    """

    def __init__(self, preset: str | tuple[float, float, float] = "calm",
                 bounds: SafetyBounds | None = None) -> None:
        if isinstance(preset, str):
            if preset not in FIXED_KNOBS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(FIXED_KNOBS)}")
            preset = FIXED_KNOBS[preset]
        self.knobs = np.asarray(preset, dtype=np.float64)
        if self.knobs.shape != (3,) or not np.all((self.knobs >= 0) & (self.knobs <= 1)):
            raise ValueError(f"preset knobs must be 3 values in [0, 1], got {preset!r}")
        self.bounds = bounds or SafetyBounds()

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Step toward the fixed knobs as fast as the rate limit allows."""
        b, single = _batch(obs)
        return _out((self.knobs - b[:, _KNOBS]) / self.bounds.max_delta, single)


class PIDPolicy(BaselinePolicy):
    """PID on the state error: valence error -> valence knob; arousal -> tempo, energy.

    Parameters
    ----------
    kp, ki, kd : float
        Gains on the error (target - estimate), its running sum and its change.
    """

    def __init__(self, kp: float = 2.0, ki: float = 0.2, kd: float = 0.0) -> None:
        for name, v in (("kp", kp), ("ki", ki), ("kd", kd)):
            if not (isinstance(v, int | float) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.reset()

    def reset(self) -> None:
        """Clear the integral and the previous error."""
        self._sum: np.ndarray | None = None
        self._prev: np.ndarray | None = None

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """PID output mapped onto the three knobs."""
        b, single = _batch(obs)
        err = b[:, _ERR] * (1.0 - b[:, 10:11])  # (B, 2); no update on a NaN estimate
        if self._sum is None or self._sum.shape != err.shape:
            self._sum, self._prev = np.zeros_like(err), err.copy()
        self._sum = np.clip(self._sum + err, -5.0, 5.0)  # anti-windup
        u = self.kp * err + self.ki * self._sum + self.kd * (err - self._prev)
        self._prev = err
        return _out(np.stack([u[:, 0], u[:, 1], u[:, 1]], axis=1), single)


class OraclePolicy(BaselinePolicy):
    """Knows the listener: lookahead over knob changes with the noise-free model.

    For every action in ``{-1, 0, 1}^3`` it simulates the listener's latent
    state (read from the environment, privileged) with the deterministic
    dynamics while the mean phrase of the new knobs' grid point plays for
    ``horizon`` phrases, and picks the action whose end state is nearest to
    the target. Works on a single, unwrapped fast or full
    :class:`st_agent.envs.closed_loop.ClosedLoopEnv`.

    Parameters
    ----------
    env : ClosedLoopEnv
        The environment it controls (its ``params``, ``latent`` and bank).
    horizon : int
        Phrases to hold the new knobs in the lookahead.
    """

    def __init__(self, env: Any, horizon: int = 3) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        self.env = env.unwrapped
        if self.env.bank is None:
            raise ValueError("the oracle needs an env with a phrase bank (its expected phrases)")
        self.horizon = horizon
        self._cands = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)))

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Best action under the noise-free model of the env's current listener."""
        _, single = _batch(obs)
        env = self.env
        latent = env.latent
        target = np.asarray(env.target.at(env.t_sec))
        cur = np.asarray(env.knobs.as_tuple())
        lo, hi, md = env.bounds.lo, env.bounds.hi, env.bounds.max_delta
        best, best_d = self._cands[13], math.inf  # (0, 0, 0) first among ties
        for a in self._cands:
            k = np.clip(cur + a * md, lo, hi)
            x, dur = env.bank.expected(k)
            traj = simulate(env.params, np.tile(x, (self.horizon, 1)), dur, state=latent)
            d = float(np.sum(np.linalg.norm(
                np.stack([env.to_estimator_units(*s) for s in traj[1:]]) - target, axis=1)))
            d += 1e-3 * float(np.sum(a ** 2))  # prefer smaller moves among equals
            if d < best_d:
                best, best_d = a, d
        return _out(best[None, :], single)
