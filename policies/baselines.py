"""Baseline controllers with stable-baselines3's ``predict(obs)`` call.

All read the observation layout of :mod:`st_agent.contract` and return an action
in [-1, 1]^3 (knob change as a fraction of the rate limit). Each accepts one
observation of shape (n_obs,) or a batch (n_envs, n_obs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from st_agent.contract import ACTION_SIZE, REST_ENERGY, SafetyBounds
from st_agent.types import BPM_MAX, BPM_MIN

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
    seed : int or sequence of int, optional
        Seed of its own generator; evaluation passes ``(protocol seed, episode seed)``
        so that every episode draws its own action sequence.
    """

    def __init__(self, seed: int | Sequence[int] | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Random action(s) in [-1, 1]^3."""
        b, single = _batch(obs)
        return _out(self.rng.uniform(-1, 1, (len(b), ACTION_SIZE)), single)

    def explain(self, row: int = 0) -> dict[str, Any]:
        """What the last decision used (nothing: a random change), for its reason."""
        return {"kind": "random"}


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
        #: How a reason names the setting it holds ("manual override", ...).
        self.role = "fixed preset knobs"

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Step toward the fixed knobs as fast as the rate limit allows."""
        b, single = _batch(obs)
        self._asked = (self.knobs - b[:, _KNOBS]) / self.bounds.max_delta
        return _out(self._asked, single)

    def explain(self, row: int = 0) -> dict[str, Any]:
        """What the last decision used: the setting it moves to and holds, and the change
        asked (fraction of ``max_delta``, before the rate limit)."""
        asked = getattr(self, "_asked", None)
        return {"kind": "fixed", "role": self.role, "knobs": self.knobs.tolist(),
                "asked": None if asked is None else asked[row].tolist()}


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
        self._last: tuple[np.ndarray, ...] | None = None  # what the last decision used

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """PID output mapped onto the three knobs."""
        b, single = _batch(obs)
        err = b[:, _ERR] * (1.0 - b[:, 10:11])  # (B, 2); no update on a NaN estimate
        if self._sum is None or self._sum.shape != err.shape:
            self._sum, self._prev = np.zeros_like(err), err.copy()
        self._sum = np.clip(self._sum + err, -5.0, 5.0)  # anti-windup
        u = self.kp * err + self.ki * self._sum + self.kd * (err - self._prev)
        self._last = (err, self._sum.copy(), err - self._prev, u)
        self._prev = err
        return _out(np.stack([u[:, 0], u[:, 1], u[:, 1]], axis=1), single)

    def explain(self, row: int = 0) -> dict[str, Any] | None:
        """What the last decision of session ``row`` used, for its reason in words.

        Returns
        -------
        info : dict or None
            ``kind`` ``"pid"``; per axis (valence, arousal): ``error`` (region minus
            estimate), the terms ``p`` (kp * error), ``i`` (ki * summed error), ``d``
            (kd * change of error), their sum ``u``; ``asked``, shape (3,): the
            change of each knob asked, as a fraction of ``max_delta`` before the
            rate limit. None before the first decision.
        """
        if self._last is None:
            return None
        err, total, de, u = (x[row] for x in self._last)
        return {"kind": "pid", "error": err.tolist(), "p": (self.kp * err).tolist(),
                "i": (self.ki * total).tolist(), "d": (self.kd * de).tolist(),
                "u": u.tolist(), "asked": [float(u[0]), float(u[1]), float(u[1])],
                "gains": (self.kp, self.ki, self.kd)}


def _predict_many(env: Any, x: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Noise-free latent (valence, arousal) of the env's listener under ``c`` feature
    sequences at once, shape (c, H, 2) (privileged: the simulator's own dynamics).

    ``x`` has shape (c, H, 6), ``dt`` shape (c, H); ``env.predict_latent`` steps
    every candidate from a copy of the listener's current state.
    """
    return np.asarray(env.predict_latent(x, dt)).reshape(x.shape[0], x.shape[1], 2)


class OraclePolicy(BaselinePolicy):
    """Knows the listener: model-predictive control with the true noise-free dynamics.

    Privileged reference: it reads the listener's family, parameters and latent
    state from the environment. Every destination on a ``grid``^3 knob grid inside
    the bounds (and the current knobs) is reached at the rate limit and held;
    the listener's own dynamics predict the latent state over ``horizon``
    phrases while the mean phrase of each knob setting's grid cell plays (a
    rest phrase is silence); the destination whose predicted states are nearest
    to the target region on average wins, and its first step is the action.
    Works on a single, unwrapped fast or full
    :class:`st_agent.envs.closed_loop.ClosedLoopEnv`.

    Parameters
    ----------
    env : ClosedLoopEnv
        The environment it controls (its listener, latent state and bank).
    horizon : int
        Phrases predicted ahead.
    grid : int
        Destination grid points per knob axis.
    """

    def __init__(self, env: Any, horizon: int = 6, grid: int = 5) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an int >= 2, got {grid!r}")
        self.env = env.unwrapped
        if self.env.bank is None:
            raise ValueError("the oracle needs an env with a phrase bank (its expected phrases)")
        self.horizon = horizon
        g = np.linspace(0.0, 1.0, grid)
        self._grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)

    def _features(self, knobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected feature vectors (..., 6) and phrase lengths (...,) of knob settings."""
        bank = self.env.bank
        flat = knobs.reshape(-1, 3)
        g = bank.grid
        i = np.clip(np.rint(flat * (g - 1)).astype(int), 0, g - 1)
        cells = i[:, 0] * g * g + i[:, 1] * g + i[:, 2]  # as PhraseBank.cell, vectorised
        uniq, inv = np.unique(cells, return_inverse=True)
        xs, ds = zip(*(bank.expected(flat[np.flatnonzero(cells == c)[0]]) for c in uniq),
                     strict=True)
        x, d = np.array(xs)[inv], np.array(ds)[inv]
        rest = flat[:, 2] <= REST_ENERGY  # a rest phrase: 4 bars of silence at the tempo
        x[rest] = 0.0
        d[rest] = 16 * 60.0 / np.round(BPM_MIN + flat[rest, 1] * (BPM_MAX - BPM_MIN))
        return x.reshape(*knobs.shape[:-1], 6), d.reshape(knobs.shape[:-1])

    def _cost(self, traj: np.ndarray) -> np.ndarray:
        """Mean distance of latent trajectories (c, H, 2) to the target region, (c,)."""
        env = self.env
        ref = env._rest if env.noise.relative else 0.0
        est = np.clip(env._gain * (traj - ref), -1.0, 1.0)
        if hasattr(env, "region_at_t"):
            v_lo, v_hi, a_lo, a_hi = env.region_at_t()
            lo, hi = np.array([v_lo, a_lo]), np.array([v_hi, a_hi])
            d = np.maximum(lo - est, 0.0) + np.maximum(est - hi, 0.0)
        else:
            d = est - np.asarray(env.target.at(env.t_sec))
        return np.linalg.norm(d, axis=-1).mean(axis=-1)

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Best first move under the listener's true noise-free dynamics."""
        _, single = _batch(obs)
        env = self.env
        cur = np.asarray(env.knobs.as_tuple())
        lo, hi, md = env.bounds.lo, env.bounds.hi, env.bounds.max_delta
        dest = np.vstack([np.unique(lo + self._grid * (hi - lo), axis=0), cur])  # last: hold
        delta = dest - cur
        steps = np.arange(1, self.horizon + 1)[None, :, None] * md
        path = cur + np.sign(delta)[:, None, :] * np.minimum(steps, np.abs(delta)[:, None, :])
        x, dt = self._features(path)  # (C, H, 6), (C, H)
        cost = self._cost(_predict_many(env, x, dt))
        first = path[:, 0] - cur
        cost += 1e-3 * np.sum((first / md) ** 2, axis=1)  # prefer smaller moves among equals
        best = first[int(np.argmin(cost))] / md
        return _out(best[None, :], single)
