"""Logged transitions of simulated sessions: vector-env rollouts and evaluation rollouts.

:func:`collect_sim` logs many fast simulated sessions at once (in memory, the
:class:`~st_agent.policies.transitions.Transitions` arrays); :func:`write_recordings`
writes such a log as session recordings (events only) that
:func:`~st_agent.policies.transitions.load_transitions` reads like live sessions;
:func:`logged_factory` wraps a controller factory of
:func:`st_agent.policies.evaluate.rollout_episodes` so every evaluation episode is
recorded the same way (``st-agent evaluate --log-transitions DIR``), rewards being
the env's (noise-free state, ``reward_source="clean"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.contract import ACTION_SIZE, REWARD_WEIGHTS, region_distance
from st_agent.policies.transitions import (
    TRANSITION_END_EVENT,
    TRANSITION_EVENT,
    Exploration,
    TransitionLog,
    Transitions,
)

__all__ = ["EpisodeLogger", "collect_sim", "logged_factory", "write_recordings"]

logger = logging.getLogger(__name__)



def collect_sim(make_policy: Callable[[], Any], n_episodes: int, explore_std: float,
                seed: int = 0, name: str = "", **env_kwargs: Any) -> Transitions:
    """Log ``n_episodes`` simulated sessions of a behaviour policy (fast vector env).

    All episodes run at once in one :class:`~st_agent.envs.vector.VecClosedLoopEnv`
    (the fast fidelity: phrase bank, estimator noise model); rewards are the env's
    (noise-free state, ``reward_source="clean"``).

    Parameters
    ----------
    make_policy : callable
        ``() -> controller`` whose ``predict`` takes a batch (N, n_obs).
    n_episodes : int
        Sessions (one listener each).
    explore_std : float
        Behaviour noise (:class:`Exploration`).
    seed : int
        Seed of the env and of the noise.
    name : str
        Behaviour name recorded per episode.
    **env_kwargs
        :class:`~st_agent.envs.closed_loop.ClosedLoopEnv` arguments.

    Returns
    -------
    transitions : Transitions
    """
    from st_agent.envs.vector import VecClosedLoopEnv

    venv = VecClosedLoopEnv(n_episodes, seed=seed, infos=False, **env_kwargs)
    explore = Exploration(explore_std, np.random.default_rng([seed, 7]))
    policy = make_policy()
    if hasattr(policy, "reset"):
        policy.reset()
    obs = venv.reset()
    cols: dict[str, list] = {k: [] for k in ("obs", "actions", "action_mean", "logp",
                                             "rewards", "next_obs")}
    for _ in range(venv.max_steps):
        mean, _ = policy.predict(obs, deterministic=True)
        a, lp, m = explore.act(np.asarray(mean).reshape(n_episodes, ACTION_SIZE))
        nxt, r, done, infos = venv.step(a)
        if done.any():
            nxt = nxt.copy()
            for i in np.flatnonzero(done):
                nxt[i] = infos[i]["terminal_observation"]
        for k, v in zip(cols, (obs, a, m, lp, r, nxt), strict=True):
            cols[k].append(np.asarray(v))
        obs = nxt if not done.all() else obs
    t = venv.max_steps
    arr = {k: np.stack(v, axis=1).reshape(n_episodes * t, *np.shape(v[0])[1:])
           for k, v in cols.items()}
    step = np.tile(np.arange(t), n_episodes)
    venv.close()
    return Transitions(obs=arr["obs"].astype(np.float32), actions=arr["actions"],
                       action_mean=arr["action_mean"], logp=arr["logp"].astype(np.float64),
                       std=np.full(n_episodes * t, explore.std),
                       rewards=arr["rewards"].astype(np.float64),
                       next_obs=arr["next_obs"].astype(np.float32),
                       episode=np.repeat(np.arange(n_episodes), t), step=step,
                       held=np.zeros(n_episodes * t, dtype=bool), terminal=step == t - 1,
                       behaviour=[name] * n_episodes, sources=[""] * n_episodes,
                       max_delta=venv.bounds.max_delta, reward_source="clean")


def write_recordings(tr: Transitions, root: str | Path, key: bytes | str | Path | None = None,
                     sha256: str = "") -> list[Path]:
    """Write each episode of ``tr`` as a session recording (events only) under ``root``.

    What a live session writes, for simulated rollouts: one ``"transition"`` event per
    decision and a ``"transition_end"``; :func:`load_transitions` reads them back.

    Returns
    -------
    folders : list of Path
        ``root/sim-0000``, ``root/sim-0001``...
    """
    from st_agent.biometrics.recording import SessionRecorder

    root = Path(root)
    out = []
    for e in range(tr.n_episodes):
        rows = np.flatnonzero(tr.episode == e)
        meta = _sim_meta()
        folder = root / f"sim-{e:04d}"
        log = TransitionLog(tr.max_delta, Exploration(float(tr.std[rows[0]])),
                            tr.behaviour[e] if tr.behaviour else "", sha256, tr.reward_source)
        with SessionRecorder(folder, meta, key=key) as rec:
            prev = None
            for i in rows:
                rec.write_event(TRANSITION_EVENT, 0.0, **log.payload(
                    tr.obs[i], tr.actions[i], tr.logp[i], tr.action_mean[i], bool(tr.held[i]),
                    reward=prev))
                prev = {"reward": float(tr.rewards[i])}
            rec.write_event(TRANSITION_END_EVENT, 0.0,
                            **log.end_payload(tr.next_obs[rows[-1]], prev))
        out.append(folder)
    return out


def _sim_meta() -> Any:
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta

    return SessionMeta(250.0, ("sim",), ("misc",), consent=ConsentRecord("simulation"))


class EpisodeLogger:
    """Records every episode a wrapped controller plays in a :class:`ClosedLoopEnv`.

    Use :func:`logged_factory`; call :meth:`close` after the last episode (it writes
    that episode's ``"transition_end"``).

    Parameters
    ----------
    make_policy : callable
        ``env -> controller`` (the factory :func:`rollout_episodes` takes).
    folder : path
        Root of the recordings (``ep-0000``, ``ep-0001``, ...).
    explore_std : float
        Behaviour noise of the logged episodes (0: the controller as it is).
    seed : int
        Seed of the noise.
    name, sha256 : str
        Behaviour name and :func:`~st_agent.policies.transitions.policy_fingerprint`.
    key : bytes or path, optional
        Encrypt the recordings with this key.
    """

    def __init__(self, make_policy: Callable[[Any], Any], folder: str | Path,
                 explore_std: float = 0.0, seed: int = 0, name: str = "", sha256: str = "",
                 key: Any = None) -> None:
        self.make_policy, self.folder = make_policy, Path(folder)
        self.exploration = Exploration(explore_std, np.random.default_rng([seed, 18]))
        self.name, self.sha256, self.key = name, sha256, key
        self.folders: list[Path] = []
        self._rec: Any = None
        self._env: Any = None

    def __call__(self, env: Any) -> EpisodeLogger:
        """Start an episode in ``env`` (the previous one is closed)."""
        from st_agent.biometrics.recording import SessionRecorder

        self.close()
        self._env, self._inner = env.unwrapped, self.make_policy(env)
        folder = self.folder / f"ep-{len(self.folders):04d}"
        self._rec = SessionRecorder(folder, _sim_meta(), key=self.key)
        self.folders.append(folder)
        self._log = TransitionLog(self._env.bounds.max_delta, self.exploration, self.name,
                                  self.sha256, reward_source="clean")
        self._prev: tuple[float, np.ndarray] | None = None
        return self

    def reset(self) -> None:
        """Reset the wrapped controller."""
        if hasattr(self._inner, "reset"):
            self._inner.reset()

    def _reward(self) -> tuple[dict[str, float] | None, tuple[float, np.ndarray]]:
        """The env's reward of the phrase that just played (its formula, clean state)."""
        env = self._env
        region = np.asarray(env.region_at_t())[None, :]
        d = float(region_distance(env.clean_state[None, :], region)[0])
        knobs = np.asarray(env.knobs.as_tuple())
        now = (d, knobs)
        if self._prev is None:
            return None, now
        d0, k0 = self._prev
        dw, jw = getattr(env, "distance_weight", REWARD_WEIGHTS[0]), \
            getattr(env, "jerk_weight", REWARD_WEIGHTS[1])
        jerk = float(np.mean(((knobs - k0) / env.bounds.max_delta) ** 2))
        return {"progress": d0 - d, "distance": d, "jerk": jerk,
                "reward": (d0 - d) - dw * d - jw * jerk}, now

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """The wrapped controller's action with the behaviour noise; the step is recorded."""
        mean, _ = self._inner.predict(obs, deterministic=True)
        a, logp, m = self._log.explore(mean)
        reward, self._prev = self._reward()
        self._rec.write_event(TRANSITION_EVENT, 0.0, **self._log.payload(
            obs, a, logp, m, reward=reward))
        return a.astype(np.float32), None

    def close(self) -> None:
        """Write the last episode's ``"transition_end"`` and close its recording."""
        if self._rec is None:
            return
        reward, _ = self._reward()
        self._rec.write_event(TRANSITION_END_EVENT, 0.0,
                              **self._log.end_payload(self._env._obs(), reward))
        self._rec.close()
        self._rec = None


def logged_factory(make_policy: Callable[[Any], Any], folder: str | Path,
                   explore_std: float = 0.0, seed: int = 0, name: str = "",
                   sha256: str = "", key: Any = None) -> EpisodeLogger:
    """A factory for :func:`~st_agent.policies.evaluate.rollout_episodes` that records
    every episode under ``folder`` (:class:`EpisodeLogger`; call its ``close()`` after
    the rollouts)."""
    return EpisodeLogger(make_policy, folder, explore_std, seed, name, sha256, key)
