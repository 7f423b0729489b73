"""Gymnasium environments over the closed loop, registered here (the one place).

``gymnasium.make("SonicTelegram/ClosedLoop-v0", target="calm")`` after
``import envs``. The PettingZoo multi-performer jam (:class:`envs.jam.JamEnv`,
``pettingzoo.ParallelEnv``, ``metadata["name"] == "sonic_telegram_jam_v0"``) is
not registered with Gymnasium (PettingZoo envs are not gym envs): build it with
``envs.jam.parallel_env(performers=3, ...)``.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["CLOSED_LOOP_ID"]

#: Versioned id of :class:`envs.closed_loop.ClosedLoopEnv`.
CLOSED_LOOP_ID = "SonicTelegram/ClosedLoop-v0"

if CLOSED_LOOP_ID not in gym.registry:
    gym.register(id=CLOSED_LOOP_ID, entry_point="envs.closed_loop:ClosedLoopEnv",
                 nondeterministic=False)
