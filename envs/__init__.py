"""Gymnasium environments over the closed loop, registered here (the one place).

This folder installs as ``st_agent.envs``. Either import it once::

    import gymnasium as gym
    import st_agent.envs  # registers SonicTelegram/ClosedLoop-v0
    env = gym.make("SonicTelegram/ClosedLoop-v0", target="calm")

or let Gymnasium import it (``module:id`` syntax, which also works through
stable-baselines3's ``make_vec_env``)::

    env = gym.make("st_agent.envs:SonicTelegram/ClosedLoop-v0", target="calm")

The PettingZoo multi-performer jam (:class:`st_agent.envs.jam.JamEnv`,
``pettingzoo.ParallelEnv``, ``metadata["name"] == "sonic_telegram_jam_v0"``) is
not registered with Gymnasium (PettingZoo envs are not gym envs): build it with
``st_agent.envs.jam.parallel_env(performers=3, ...)``.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["CLOSED_LOOP_ID", "register_envs"]

#: Versioned id of :class:`st_agent.envs.closed_loop.ClosedLoopEnv`.
CLOSED_LOOP_ID = "SonicTelegram/ClosedLoop-v0"


def register_envs() -> None:
    """Register the project's Gymnasium environments (idempotent)."""
    if CLOSED_LOOP_ID not in gym.registry:
        gym.register(id=CLOSED_LOOP_ID, entry_point="st_agent.envs.closed_loop:ClosedLoopEnv",
                     nondeterministic=False)


register_envs()
