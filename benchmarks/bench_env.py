"""Closed-loop env speed: fast mode vectorised vs a no-op env, and full mode.

1. ``ClosedLoopEnv`` (fast, default phrase bank) in an SB3 ``DummyVecEnv`` of
   ``--n-st_agent.envs`` copies, random actions: steps/s (one step = one phrase).
   ``st_agent.envs.vector.VecClosedLoopEnv`` (the same sessions batched in NumPy) with
   ``--n-st_agent.envs``, 64 and 256 sessions.
2. The same with a no-op env of identical spaces: the vectorisation ceiling.
3. A single env stepped directly (no vector wrapper).
4. Full fidelity (composer + renderer + raw signals + estimator): steps/s.

Design target: fast simulated env, vectorised, >= 20,000 steps/s.

Run: ``python benchmarks/bench_env.py [--n-envs 8] [--steps 20000] [--full-steps 5]``
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import build_phrase_bank


class NoOpEnv(gym.Env):
    """Same spaces as ClosedLoopEnv, no work."""

    def __init__(self, like: ClosedLoopEnv) -> None:
        self.observation_space = like.observation_space
        self.action_space = like.action_space
        self._obs = np.zeros(like.observation_space.shape, np.float32)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs, {}

    def step(self, action):
        self._t += 1
        return self._obs, 0.0, False, self._t >= 32, {}


def _vec_rate(make, n_envs: int, steps: int) -> float:
    venv = DummyVecEnv([make] * n_envs)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (64, n_envs, 3)).astype(np.float32)
    n_iter = max(1, steps // n_envs)
    t0 = time.perf_counter()
    for i in range(n_iter):
        venv.step(acts[i % 64])
    dt = time.perf_counter() - t0
    venv.close()
    return n_iter * n_envs / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-envs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--full-steps", type=int, default=5)
    args = ap.parse_args()
    bank = build_phrase_bank()
    proto = ClosedLoopEnv(phrase_bank=bank)
    fast = _vec_rate(lambda: ClosedLoopEnv(phrase_bank=bank), args.n_envs, args.steps)
    noop = _vec_rate(lambda: NoOpEnv(proto), args.n_envs, args.steps)
    from st_agent.envs.vector import VecClosedLoopEnv

    vec = {}
    for n in (args.n_envs, 64, 256):
        venv = VecClosedLoopEnv(n, seed=0, phrase_bank=bank)
        venv.reset()
        acts = np.random.default_rng(0).uniform(-1, 1, (64, n, 3)).astype(np.float32)
        n_iter = max(1, 4 * args.steps // n)
        t0 = time.perf_counter()
        for i in range(n_iter):
            venv.step(acts[i % 64])
        vec[n] = n_iter * n / (time.perf_counter() - t0)
    env = ClosedLoopEnv(phrase_bank=bank)
    env.reset(seed=0)
    a = np.array([0.3, -0.2, 0.5], np.float32)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        if env.step(a)[3]:
            env.reset()
    single = args.steps / (time.perf_counter() - t0)
    print(f"fast, DummyVecEnv x{args.n_envs}: {fast:10.0f} steps/s (target >= 20,000)")
    for n, rate in vec.items():
        print(f"fast, VecClosedLoopEnv x{n}: {rate:10.0f} steps/s (target >= 20,000)")
    print(f"no-op env, DummyVecEnv x{args.n_envs}: {noop:10.0f} steps/s (ceiling)")
    print(f"fast, single env:        {single:10.0f} steps/s")
    if args.full_steps > 0:
        rng = np.random.default_rng(0)
        for label, acts in (
                ("random knob changes", rng.uniform(-1, 1, (args.full_steps, 3))),
                ("toward slow, dense music (the slowest phrases)",
                 np.tile(a, (args.full_steps, 1)))):
            full = ClosedLoopEnv(fidelity="full", phrase_bank=bank,
                                 max_steps=args.full_steps + 1)
            t0 = time.perf_counter()
            full.reset(seed=0)
            t_reset = time.perf_counter() - t0
            full.step(np.zeros(3, np.float32))  # warm-up: the first decoding allocates
            t0 = time.perf_counter()
            sim = 0.0
            for act in acts.astype(np.float32):
                sim += full.step(act)[4]["phrase_sec"]
            dt = time.perf_counter() - t0
            full.close()
            print(f"full, {label}: reset (composer load + calibration) {t_reset:.1f} s; "
                  f"{args.full_steps / dt:.2f} steps/s ({sim / dt:.0f}x real time; target >= 10)")


if __name__ == "__main__":
    main()
