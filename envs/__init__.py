"""Gymnasium environments over the closed loop, registered here (the one place).

``gymnasium.make("SonicTelegram/ClosedLoop-v0", target="calm")`` after
``import envs``. The PettingZoo multi-performer env is not written yet.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["CLOSED_LOOP_ID"]

#: Versioned id of :class:`envs.closed_loop.ClosedLoopEnv`.
CLOSED_LOOP_ID = "SonicTelegram/ClosedLoop-v0"

if CLOSED_LOOP_ID not in gym.registry:
    gym.register(id=CLOSED_LOOP_ID, entry_point="envs.closed_loop:ClosedLoopEnv",
                 nondeterministic=False)
