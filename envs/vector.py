"""N fast closed-loop sessions stepped at once in NumPy, as an SB3 ``VecEnv``.

:class:`VecClosedLoopEnv` has the dynamics, observation, reward and episode
rules of :class:`st_agent.envs.closed_loop.ClosedLoopEnv` in ``"fast"`` fidelity (it
validates its arguments by building one), but keeps the N listeners in one
:class:`st_agent.listener.model.FastListeners` and the N observations in arrays
(:func:`st_agent.contract.build_observations`), so a step costs a few NumPy
calls instead of N Python environments. Episodes end by truncation after
``max_steps`` phrases; finished sessions restart on their own (SB3 convention:
``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``).

Listeners of every family step together (:class:`FastListeners` groups
them by family: one kernel call per family present, no loop over
listeners). Randomness: every draw comes from one generator, seeded by
``seed`` or :meth:`VecClosedLoopEnv.seed` (SB3 calls it, then ``reset()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from st_agent.contract import (
    REST_ENERGY,
    TARGET_PRESETS,
    Target,
    build_observations,
    region_distance,
    resolve_target,
)
from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.listener.family import sample_population
from st_agent.listener.fast import FastListeners
from st_agent.types import BPM_MAX, BPM_MIN

__all__ = ["VecClosedLoopEnv"]


def _targets_at(targets: Sequence[Target], which: np.ndarray, t_sec: np.ndarray,
                gain: np.ndarray | None = None, rest: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Nominal points (N, 2) and regions (N, 4) of session i's target ``targets[which[i]]``.

    At ``t_sec[i]``, in estimator units: a target with ``relative=False`` is
    mapped with ``gain`` (2,) and the rows' latent ``rest`` (N, 2) exactly as
    :meth:`Target.in_estimator_units` maps it.
    """
    nominal, regions = np.empty((which.size, 2)), np.empty((which.size, 4))
    for k, tg in enumerate(targets):
        rows = which == k
        if not rows.any():
            continue
        sched = np.asarray(tg.schedule)  # (S, 3): start, valence, arousal
        j = np.searchsorted(sched[:, 0], t_sec[rows], side="right") - 1
        pts = sched[np.maximum(j, 0), 1:]  # (n, 2)
        reach = np.asarray(tg.band).reshape(2, 2)  # (axis, below/above)
        if not tg.relative:
            pts = np.clip(gain * (pts - rest[rows]), -1.0, 1.0)
            reach = np.minimum(gain[:, None] * reach, 2.0)
        nominal[rows] = pts
        lo = np.maximum(pts - reach[:, 0], -1.0)
        hi = np.minimum(pts + reach[:, 1], 1.0)
        regions[rows] = np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=-1)
    return nominal, regions


class VecClosedLoopEnv(VecEnv):
    """``n_envs`` fast :class:`ClosedLoopEnv` sessions in one vectorised env.

    Parameters
    ----------
    n_envs : int
        Number of sessions (listeners) stepped together.
    seed : int or None
        Seed of the one ``np.random.default_rng`` every draw comes from
        (:meth:`seed` reseeds it; SB3 calls that before ``reset()``).
    **kwargs
        :class:`ClosedLoopEnv` arguments, ``families`` and ``listener``
        included (``fidelity`` must be ``"fast"``; ``render_mode`` is not
        supported).

    Examples
    --------
    >>> venv = VecClosedLoopEnv(64, seed=0, target="calm")  # doctest: +SKIP
    >>> venv.reset().shape  # doctest: +SKIP
    (64, 26)
    """

    def __init__(self, n_envs: int, seed: int | None = None, **kwargs: Any) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
        if kwargs.get("fidelity", "fast") != "fast":
            raise ValueError("VecClosedLoopEnv only runs the fast fidelity")
        if kwargs.get("render_mode") is not None:
            raise ValueError("VecClosedLoopEnv does not render")
        self.proto = p = ClosedLoopEnv(**kwargs)  # validates and resolves the arguments
        self.render_mode = None
        super().__init__(n_envs, p.observation_space, p.action_space)
        self.bank, self.bounds, self.noise = p.bank, p.bounds, p.noise
        self.max_steps, self.history_len = p.max_steps, p.history_len
        if p._random_target:
            self.targets = [resolve_target(n) for n in sorted(TARGET_PRESETS)]
        else:
            self.targets = [p._target_spec]
        self._hist_m = max(self.history_len, 1)
        # constant targets in estimator units (the usual case): per-target table, no lookup
        # of schedules per step
        self._static: tuple[np.ndarray, np.ndarray] | None = None
        if all(tg.relative and len(tg.schedule) == 1 for tg in self.targets):
            self._static = (np.array([tg.at(0.0) for tg in self.targets]),
                            np.array([tg.region_at(0.0) for tg in self.targets]))
        self._gain = np.array([self.noise.gain_valence, self.noise.gain_arousal])
        self._lo, self._hi = self.bounds.lo, self.bounds.hi
        self._actions: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)
        self._fl: FastListeners | None = None

    # ------------------------------------------------------------------ episodes
    def _draw(self, rows: np.ndarray) -> np.ndarray:
        """Start new episodes in ``rows``; their first observations."""
        p, rng, k = self.proto, self.rng, rows.size
        if p._listeners is None:
            params = sample_population(k, rng=rng, families=p.families)
        else:
            params = [p._listeners[int(i)] for i in rng.integers(len(p._listeners), size=k)]
        self._which[rows] = rng.integers(len(self.targets), size=k) if len(self.targets) > 1 \
            else 0
        if p.start_knobs is not None:
            self.knobs[rows] = np.asarray(self.bounds.clip(p.start_knobs).as_tuple())
        else:
            self.knobs[rows] = rng.uniform(self._lo, self._hi, (k, 3))
        fresh = FastListeners(params, rng=rng, noise=self.noise)
        est = fresh.step(np.zeros(6), p.rest_sec) if p.rest_sec > 0 else np.zeros((k, 2))
        fresh.t_sec = 0.0
        if self._fl is None:
            self._fl = fresh
            self._fl.t_sec = np.zeros(self.num_envs)
        else:
            self._fl.replace(rows, fresh)
        self.t_sec[rows] = 0.0
        self.n_steps[rows] = 0
        self.hist_count[rows] = 0
        self.est[rows] = est
        self.conf[rows] = 1.0
        self.dist[rows] = self._distance()[rows]
        return rows

    def _clean(self) -> np.ndarray:
        """Noise-free state in estimator units, shape (N, 2) (what the reward uses)."""
        ref = self._fl.rest if self.noise.relative else 0.0
        return np.clip(self._gain * (self._fl.state - ref), -1.0, 1.0)

    def _target(self) -> tuple[np.ndarray, np.ndarray]:
        """Nominal points (N, 2) and regions (N, 4) now, estimator units."""
        if self._static is not None:  # constant relative targets: a table lookup
            return self._static[0][self._which], self._static[1][self._which]
        return _targets_at(self.targets, self._which, self.t_sec, self._gain, self._fl.rest)

    def _distance(self, target: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        return region_distance(self._clean(), (target or self._target())[1])

    def _obs(self, target: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        nominal, regions = target or self._target()
        return build_observations(self.est, nominal, self.knobs, self.conf, self.hist_est,
                                  self.hist_knobs, self.hist_count, self.history_len, regions)

    @property
    def families(self) -> np.ndarray:
        """Family of each session's listener, shape (N,)."""
        return self._fl.families

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        """New listeners in every session; the observations, shape (N, n_obs)."""
        n, m = self.num_envs, self._hist_m
        self._fl = None
        self.knobs = np.zeros((n, 3))
        self.est = np.zeros((n, 2))
        self.conf = np.ones(n)
        self.t_sec = np.zeros(n)
        self.n_steps = np.zeros(n, dtype=int)
        self.dist = np.zeros(n)
        self._which = np.zeros(n, dtype=int)
        self.hist_est = np.zeros((n, m, 2))
        self.hist_knobs = np.zeros((n, m, 3))
        self.hist_count = np.zeros(n, dtype=int)
        self._draw(np.arange(n))
        self.reset_infos = [{} for _ in range(n)]
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 3)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._fl is None:
            raise RuntimeError("call reset() before step()")
        rng, bank = self.rng, self.bank
        a = np.clip(np.nan_to_num(self._actions, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        prev = self.knobs
        # history: most recent first
        self.hist_est[:, 1:] = self.hist_est[:, :-1]
        self.hist_knobs[:, 1:] = self.hist_knobs[:, :-1]
        self.hist_est[:, 0] = self.est
        self.hist_knobs[:, 0] = prev
        self.hist_count = np.minimum(self.hist_count + 1, self._hist_m)
        self.knobs = np.clip(prev + a * self.bounds.max_delta, self._lo, self._hi)
        idx = bank.pick_many(self.knobs, rng)
        dur = bank.duration_sec[idx]
        x = bank.x[idx]
        rest = self.knobs[:, 2] <= REST_ENERGY  # rest phrases: 4 bars of silence at the tempo
        if rest.any():
            bpm = np.round(BPM_MIN + self.knobs[rest, 1] * (BPM_MAX - BPM_MIN))
            dur = dur.copy()
            dur[rest] = 16 * 60.0 / bpm
            x = x.copy()
            x[rest] = 0.0
            idx = np.where(rest, -1, idx)
        est = self._fl.step(x, dur)
        conf = np.ones(self.num_envs)
        if self.proto.nan_prob > 0:
            lost = rng.random(self.num_envs) < self.proto.nan_prob
            est[lost] = np.nan
            conf[lost] = 0.0
        self.t_sec = self.t_sec + dur
        self.n_steps += 1
        self.est, self.conf = est, conf
        target = self._target()
        d_prev, self.dist = self.dist, self._distance(target)
        jerk = np.mean(((self.knobs - prev) / self.bounds.max_delta) ** 2, axis=1)
        p = self.proto
        reward = (d_prev - self.dist) - p.distance_weight * self.dist - p.jerk_weight * jerk
        obs = self._obs(target)
        done = self.n_steps >= self.max_steps
        nan = ~np.all(np.isfinite(est), axis=1)
        infos: list[dict[str, Any]] = [
            {"distance": float(self.dist[i]), "nan_state": bool(nan[i]), "jerk": float(jerk[i]),
             "phrase": int(idx[i]), "phrase_sec": float(dur[i])} for i in range(self.num_envs)]
        if done.any():
            rows = np.flatnonzero(done)
            for i in rows:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = True
            self._draw(rows)
            obs[rows] = self._obs()[rows]
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.proto.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Reseed the generator (takes effect now; SB3 calls reset() after)."""
        self.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    # SB3 per-env plumbing: this env is one object, so these act on it as a whole.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs)
                for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
