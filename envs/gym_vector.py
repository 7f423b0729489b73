"""The fast vectorised closed-loop env as a Gymnasium ``VectorEnv`` (for Ray RLlib).

:class:`~st_agent.envs.vector.VecClosedLoopEnv` is a stable-baselines3 ``VecEnv``:
a finished session is reset inside the same ``step`` and its last observation
travels in ``infos[i]["terminal_observation"]``. Ray RLlib's env runners take a
Gymnasium ``VectorEnv`` with Gymnasium's default *next-step* autoreset instead: the
step that ends an episode returns its last observation, and the following
``step`` returns the first observation of the new episode (its action is ignored,
no reward). :class:`GymVecClosedLoopEnv` gives that view of the same arrays, so
RLlib trains on exactly the simulator SB3 trains on.

That is exact because every session of a ``VecClosedLoopEnv`` starts together and
is truncated after ``max_steps`` phrases (the env never terminates): all sessions
finish on the same step. The wrapper checks it and raises otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from st_agent.envs.vector import VecClosedLoopEnv

__all__ = ["GymVecClosedLoopEnv"]


class GymVecClosedLoopEnv(VectorEnv):
    """``num_envs`` fast closed-loop sessions as a Gymnasium vector env (next-step autoreset).

    Parameters
    ----------
    num_envs : int
        Sessions stepped together (>= 1).
    seed : int or None
        Seed of the underlying :class:`VecClosedLoopEnv` (``reset(seed=...)`` reseeds it).
    **kwargs
        :class:`VecClosedLoopEnv` / :class:`~st_agent.envs.closed_loop.ClosedLoopEnv`
        arguments (``target``, ``phrase_bank``, ``max_steps``, ...).

    Notes
    -----
    Observations have shape ``(num_envs, 11 + 5 * history_len)``, actions
    ``(num_envs, 3)`` in [-1, 1]; rewards are float64, ``terminations`` always False,
    ``truncations`` True on the step that ends the sessions; ``infos`` is empty.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012 (Gymnasium's API)

    def __init__(self, num_envs: int, seed: int | None = None, **kwargs: Any) -> None:
        self.venv = VecClosedLoopEnv(num_envs, seed=seed, infos=False, **kwargs)
        self.num_envs = self.venv.num_envs
        self.single_observation_space = self.venv.observation_space
        self.single_action_space = self.venv.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self._pending: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """New listeners in every session (reseeded when ``seed`` is given)."""
        if seed is not None:
            self.venv.seed(int(seed))
        self._pending = None
        return self.venv.reset(), {}

    def step(self, actions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One phrase in every session; after the last one, the next episodes' start."""
        n = self.num_envs
        if self._pending is not None:  # next-step autoreset: the new episodes' first obs
            obs, self._pending = self._pending, None
            return obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), {}
        self.venv.step_async(np.asarray(actions, dtype=np.float32).reshape(n, 3))
        obs, reward, done, infos = self.venv.step_wait()
        if done.any():
            if not done.all():
                raise RuntimeError("GymVecClosedLoopEnv needs all sessions to end together; "
                                   f"{int(done.sum())} of {n} ended")
            self._pending = obs.copy()
            obs = np.stack([infos[i]["terminal_observation"] for i in range(n)])
        return obs, reward.astype(np.float64), np.zeros(n, bool), done.astype(bool), {}

    def close_extras(self, **kwargs: Any) -> None:
        """Release the underlying env."""
        self.venv.close()
