"""N fast closed-loop sessions stepped at once, as an SB3 ``VecEnv``.

:class:`VecClosedLoopEnv` has the dynamics, observation, reward and episode
rules of :class:`st_agent.envs.closed_loop.ClosedLoopEnv` in ``"fast"`` fidelity (it
validates its arguments by building one), but keeps the N listeners and the
N observations in arrays, so a step costs a few calls instead of N Python
environments. Episodes end by truncation after
``max_steps`` phrases; finished sessions restart on their own (SB3 convention:
``infos[i]["terminal_observation"]`` and ``"TimeLimit.truncated"``).

Two backends compute the same step (``backend=``): ``"numba"``
(:mod:`st_agent.envs.vector_kernels`: two compiled loops over the sessions on
preallocated arrays; the default when numba is installed; numba compiles
them on first use, about 10 s, and caches them beside the module) and
``"numpy"`` (one :class:`st_agent.listener.fast.FastListeners` groups the
listeners by family: one kernel call per family present, no loop over
listeners; observations by :func:`st_agent.contract.build_observations`).
Both draw every random number from one generator, in the same order, so
they give the same observations and rewards on the same seed (float64
arithmetic; ``tests/test_vector.py``).
Randomness: the generator is seeded by ``seed`` or
:meth:`VecClosedLoopEnv.seed` (SB3 calls it, then ``reset()``).

``infos=False`` skips the per-session info dicts (they cost more than the
numba step at 8 sessions); the same values are then in the arrays
:attr:`~VecClosedLoopEnv.dist`, :attr:`~VecClosedLoopEnv.jerk`,
:attr:`~VecClosedLoopEnv.phrase` and :attr:`~VecClosedLoopEnv.phrase_sec`
after each step, and the infos hold only SB3's ``terminal_observation`` and
``TimeLimit.truncated``, and ``distance`` (the episode's last; ``dist`` then
holds the new episode's) where an episode ended.
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
from st_agent.listener.family import FAMILY_NAMES, sample_population, sample_population_columns
from st_agent.listener.fast import FastListeners
from st_agent.types import BPM_MAX, BPM_MIN

__all__ = ["BACKENDS", "VecClosedLoopEnv", "numba_available"]

#: Values of ``backend``: ``"auto"`` is numba when it imports, else NumPy.
BACKENDS = ("auto", "numba", "numpy")
_NO_BOOL = np.zeros(0, dtype=bool)


def numba_available() -> bool:
    """Whether the compiled backend imports (numba installed)."""
    try:
        import st_agent.envs.vector_kernels  # noqa: F401
    except ImportError:
        return False
    return True


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
    backend : {"auto", "numba", "numpy"}
        Who computes a step (module docstring); ``"auto"``: numba when installed.
    infos : bool
        Fill the per-session info dicts (``distance``, ``nan_state``,
        ``jerk``, ``phrase``, ``phrase_sec``); False leaves them to the arrays
        of the same names (module docstring).
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

    def __init__(self, n_envs: int, seed: int | None = None, backend: str = "auto",
                 infos: bool = True, **kwargs: Any) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        if not isinstance(infos, bool):
            raise TypeError(f"infos must be True or False, got {infos!r}")
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
        # constant per episode (absolute targets depend on the listener's rest): per row
        self._constant = all(len(tg.schedule) == 1 for tg in self.targets)
        self._gain = np.array([self.noise.gain_valence, self.noise.gain_arousal])
        self._lo, self._hi = self.bounds.lo, self.bounds.hi
        self._actions: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)
        self.infos = infos
        self._fl: FastListeners | None = None
        self._k = None
        if backend != "numpy":
            try:
                from st_agent.envs import vector_kernels
            except ImportError as e:
                if backend == "numba":
                    raise ImportError("backend='numba' needs numba (pip install numba); "
                                      "backend='numpy' runs without it") from e
            else:
                self._k = vector_kernels
        self.backend = "numpy" if self._k is None else "numba"
        if self._k is not None:
            self._setup_numba()

    def _setup_numba(self) -> None:
        """Arrays of the compiled backend that live as long as the env."""
        n, nz, members = self.num_envs, self.noise, self.bank._members
        sizes = np.array([m.size for m in members], dtype=np.int64)
        table = np.zeros((len(members), sizes.max()), dtype=np.int64)
        for c, m in enumerate(members):
            table[c, :m.size] = m
        self._sizes, self._table = sizes, table
        with np.errstate(divide="ignore"):  # as FastListeners: ar1 = 0 is rho = 0
            self._log_ar1 = np.log([nz.ar1_valence, nz.ar1_arousal]) / nz.hop_sec
        self._obs_std = np.array([nz.std_valence, nz.std_arousal])
        self._fam = np.zeros(n, dtype=np.int64)
        self._P = np.zeros((n, self._k.N_P))
        self._S = np.zeros((n, self._k.N_S))
        self._prev = np.zeros((n, 3))
        self._bits: tuple = (None, 0, 0)  # (generator, next_uint32, state): see step
        self._nom, self._reg = np.zeros((n, 2)), np.zeros((n, 4))
        self._n_obs = self.observation_space.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        # the compiled module and the generator's addresses are per process
        return {k: v for k, v in self.__dict__.items() if k not in ("_k", "_bits")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._k = None
        if self.backend == "numba":
            from st_agent.envs import vector_kernels

            self._k, self._bits = vector_kernels, (None, 0, 0)

    # ------------------------------------------------------------------ listeners
    def _put_listeners(self, rows: np.ndarray, params: Sequence[Any]) -> None:
        """Listeners ``params`` (one per row, any families) at rest in sessions ``rows``."""
        if self._k is None:
            fresh = FastListeners(params, rng=self.rng, noise=self.noise)
            if self._fl is None:
                self._fl, fresh.t_sec = fresh, np.zeros(self.num_envs)
            else:
                self._fl.replace(rows, fresh)
            return
        groups = []
        fams = np.array([FAMILY_NAMES.index(type(q).family) for q in params])
        for f, name in enumerate(FAMILY_NAMES):
            sub = np.flatnonzero(fams == f)
            if sub.size:
                fields = (*self._k.SHARED_NAMES, *self._k.OWN_NAMES[name])
                groups.append((name, sub, {k: np.array([getattr(params[j], k) for j in sub])
                                           for k in fields}))
        self._put_columns(rows, groups)
        self._episode_targets(rows)

    def _put_columns(self, rows: np.ndarray, groups: list) -> None:
        """Pack listeners given as columns (:func:`sample_population_columns`) at rest."""
        k = self._k
        for name, sub, cols in groups:
            vals = np.array([cols[c] for c in (*k.SHARED_NAMES, *k.OWN_NAMES[name])])
            k.init_rows(rows[sub], FAMILY_NAMES.index(name), vals, self._fam, self._P,
                        self._S)

    def _draw(self, rows: np.ndarray) -> np.ndarray:
        """Start new episodes in ``rows``; their first observations."""
        p, rng, k = self.proto, self.rng, rows.size
        params = groups = None
        if p._listeners is not None:
            params = [p._listeners[int(i)] for i in rng.integers(len(p._listeners), size=k)]
        elif self._k is None:
            params = sample_population(k, rng=rng, families=p.families)
        else:  # the same draws, as arrays
            groups = sample_population_columns(k, rng=rng, families=p.families)
        self._which[rows] = rng.integers(len(self.targets), size=k) if len(self.targets) > 1 \
            else 0
        if p.start_knobs is not None:
            self.knobs[rows] = np.asarray(self.bounds.clip(p.start_knobs).as_tuple())
        else:
            self.knobs[rows] = rng.uniform(self._lo, self._hi, (k, 3))
        if self._k is None:
            fresh = FastListeners(params, rng=rng, noise=self.noise)
            est = fresh.step(np.zeros(6), p.rest_sec) if p.rest_sec > 0 else np.zeros((k, 2))
            fresh.t_sec = 0.0
            if self._fl is None:
                self._fl = fresh
                self._fl.t_sec = np.zeros(self.num_envs)
            else:
                self._fl.replace(rows, fresh)
        else:
            if groups is None:
                self._put_listeners(rows, params)
            else:
                self._put_columns(rows, groups)
            est = np.zeros((self.num_envs, 2))
            if p.rest_sec > 0:
                z = rng.standard_normal((k, 6))
                self._k.advance_rows(rows, self._fam, self._P, self._S, np.zeros(6),
                                     float(p.rest_sec), z, self._log_ar1, self._obs_std,
                                     self._gain, self.noise.relative, est)
            est = est[rows]
        self.t_sec[rows] = 0.0
        self.n_steps[rows] = 0
        self.hist_count[rows] = 0
        self.est[rows] = est
        self.conf[rows] = 1.0
        self._episode_targets(rows)
        return rows

    def _episode_targets(self, rows: np.ndarray) -> None:
        """Compiled backend, targets constant per episode: those of sessions ``rows``."""
        if self._k is None or not self._constant:
            return
        nom, reg = self._static if self._static is not None else (None, None)
        if nom is None:  # absolute targets: mapped with each listener's rest
            nom, reg = _targets_at(self.targets, self._which, self.t_sec, self._gain,
                                   self._rest())
        else:
            nom, reg = nom[self._which], reg[self._which]
        self._nom[rows], self._reg[rows] = nom[rows], reg[rows]

    def _outputs(self, rows: np.ndarray, obs: np.ndarray) -> None:
        """Distances and observations (into ``obs`` (N, n_obs)) of fresh episodes ``rows``."""
        if self._k is None:
            self.dist[rows] = self._distance()[rows]
            obs[rows] = self._obs()[rows]
            return
        nominal, region = self._target()
        self._k.reset_outputs(rows, self._P, self._S, self._gain, self.noise.relative,
                              self.dist, self.est, nominal, self.knobs, self.conf,
                              self.hist_est, self.hist_knobs, self.hist_count,
                              self.history_len, region, obs)

    def _state(self) -> np.ndarray:
        """Latent state (N, 2)."""
        return self._fl.state if self._k is None else self._S[:, 5:7]

    def _rest(self) -> np.ndarray:
        """Resting state of each session's listener (N, 2)."""
        return self._fl.rest if self._k is None else self._P[:, 15:17]

    def _clean(self) -> np.ndarray:
        """Noise-free state in estimator units, shape (N, 2) (what the reward uses)."""
        ref = self._rest() if self.noise.relative else 0.0
        return np.clip(self._gain * (self._state() - ref), -1.0, 1.0)

    def _target(self) -> tuple[np.ndarray, np.ndarray]:
        """Nominal points (N, 2) and regions (N, 4) now, estimator units."""
        if self._k is not None and self._constant:  # set per episode by _draw
            return self._nom, self._reg
        if self._static is not None:  # constant relative targets: a table lookup
            return self._static[0][self._which], self._static[1][self._which]
        return _targets_at(self.targets, self._which, self.t_sec, self._gain, self._rest())

    def _distance(self, target: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        return region_distance(self._clean(), (target or self._target())[1])

    def _obs(self, target: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        nominal, regions = target or self._target()
        return build_observations(self.est, nominal, self.knobs, self.conf, self.hist_est,
                                  self.hist_knobs, self.hist_count, self.history_len, regions)

    @property
    def families(self) -> np.ndarray:
        """Family of each session's listener, shape (N,)."""
        if self._k is not None:
            return np.array(FAMILY_NAMES)[self._fam]
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
        self.n_steps = np.zeros(n, dtype=np.int64)
        self.dist = np.zeros(n)
        self.jerk = np.zeros(n)
        self.phrase_sec = np.zeros(n)
        self.phrase = np.zeros(n, dtype=np.int64)
        self._which = np.zeros(n, dtype=np.int64)
        self.hist_est = np.zeros((n, m, 2))
        self.hist_knobs = np.zeros((n, m, 3))
        self.hist_count = np.zeros(n, dtype=np.int64)
        rows = np.arange(n)
        self._draw(rows)
        self.reset_infos = [{} for _ in range(n)]
        obs = np.empty((n, self.observation_space.shape[0]), dtype=np.float32)
        self._outputs(rows, obs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        a = np.asarray(actions)
        if a.dtype != np.float32:  # float32 (SB3's) or float64: one compiled variant each
            a = a.astype(np.float64, copy=False)
        self._actions = np.ascontiguousarray(a.reshape(self.num_envs, 3))

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._fl is None and (self._k is None or not hasattr(self, "est")):
            raise RuntimeError("call reset() before step()")
        if self._k is None:
            obs, reward, nan = self._step_numpy()
            done = self.n_steps >= self.max_steps
            any_done = done.any()
        else:
            obs, reward, nan, done, any_done = self._step_numba()
        n = self.num_envs
        if self.infos:
            infos: list[dict[str, Any]] = [
                {"distance": d, "nan_state": b, "jerk": j, "phrase": i, "phrase_sec": s}
                for d, b, j, i, s in zip(self.dist.tolist(), nan.tolist(), self.jerk.tolist(),
                                         self.phrase.tolist(), self.phrase_sec.tolist(),
                                         strict=True)]
        else:
            infos = [{} for _ in range(n)]
        if any_done:
            rows = np.flatnonzero(done)
            last = self.dist[rows].tolist()  # the new episodes overwrite dist
            for i, d in zip(rows, last, strict=True):
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["distance"] = d
            self._draw(rows)
            self._outputs(rows, obs)
        return obs, reward, done, infos

    def _step_numba(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step by the compiled backend (draws in the NumPy backend's order)."""
        k, rng, n, p = self._k, self.rng, self.num_envs, self.proto
        md = self.bounds.max_delta
        if self._bits[0] is not rng:  # a new generator (seed()): its bit source
            self._bits = (rng, *k.bit_source(rng))
        k.knobs_and_phrases(self._actions, self.knobs, self._prev, self.est, self.hist_est,
                            self.hist_knobs, self.hist_count, self._lo, self._hi, md,
                            self.bank.grid, self._sizes, self._table, self._bits[1],
                            self._bits[2], self.phrase)
        z = rng.standard_normal((n, 6))
        lost = rng.random(n) < p.nan_prob if p.nan_prob > 0 else _NO_BOOL
        if self._constant:
            nominal, region = self._nom, self._reg
        else:  # a schedule: the target at the end of this phrase
            rest = self.knobs[:, 2] <= REST_ENERGY
            bpm = np.round(BPM_MIN + self.knobs[:, 1] * (BPM_MAX - BPM_MIN))
            dur = np.where(rest, 16 * 60.0 / bpm, self.bank.duration_sec[self.phrase])
            nominal, region = _targets_at(self.targets, self._which, self.t_sec + dur,
                                          self._gain, self._rest())
        obs = np.empty((n, self._n_obs), dtype=np.float32)
        reward = np.empty(n, dtype=np.float32)
        done = np.empty(n, dtype=bool)
        n_done = k.step_sessions(self.phrase, self.knobs, self._prev, self.bank.x,
                        self.bank.duration_sec, REST_ENERGY, float(BPM_MIN), float(BPM_MAX),
                        self._fam, self._P, self._S, z, lost, self._log_ar1, self._obs_std,
                        self._gain, self.noise.relative, self.est, self.conf, self.t_sec,
                        self.n_steps, self.dist, nominal, region, self.hist_est,
                        self.hist_knobs, self.hist_count, self.history_len, md,
                        p.distance_weight, p.jerk_weight, self.max_steps, self.phrase_sec,
                        self.jerk, reward, obs, done)
        return obs, reward, lost if lost.size else np.zeros(n, dtype=bool), done, n_done > 0

    def _step_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step in NumPy (one call per operation for all sessions, per family)."""
        rng, bank = self.rng, self.bank
        a = np.asarray(self._actions, dtype=np.float64)
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
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
        self.jerk = np.mean(((self.knobs - prev) / self.bounds.max_delta) ** 2, axis=1)
        p = self.proto
        reward = (d_prev - self.dist) - p.distance_weight * self.dist - p.jerk_weight * self.jerk
        self.phrase, self.phrase_sec = idx, dur
        nan = ~np.all(np.isfinite(est), axis=1)
        return self._obs(target), reward.astype(np.float32), nan

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
