"""PPO wall-clock: how long PPO trains on CPU before it beats the tuned PID on held-out listeners.

For each setting (``--settings``: ``name:n_envs:n_steps:batch_size:lr``) PPO
(stable-baselines3, :func:`st_agent.policies.train.train`'s recipe:
``VecClosedLoopEnv``, ``VecNormalize``, one torch thread) trains for
``--steps`` phrases; every ``--eval-every`` steps the policy is rolled out,
deterministic, on ``--listeners`` held-out listeners of all four families
(:func:`st_agent.policies.evaluate.heldout_listeners`, a stream tuning and
training never use) and compared with the shipped PID of the target (gains tuned
on the tuning stream, ``policies/assets/pid``) on the same listeners and episode
seeds: the mean paired difference (PID - PPO) of the mean distance to the target
region with its bootstrap 95 % CI (:func:`st_agent.policies.evaluate.paired_summary`).
Training wall-clock
excludes the evaluations (printed apart).

"Beats the PID" = the CI of (PID - PPO) distance lies above 0 at an evaluation.

Run: ``python benchmarks/bench_ppo_wallclock.py [--steps 200000] [--eval-every 10000]
[--listeners 32] [--settings default:8:256:512:3e-4 wide:64:32:512:3e-4]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} cores"


def _run(name: str, n_envs: int, n_steps: int, batch: int, lr: float, args, bank,
         listeners, pid_dist: np.ndarray, out: Path) -> list[dict]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecNormalize

    from st_agent.envs.vector import VecClosedLoopEnv
    from st_agent.policies.evaluate import paired_summary, rollout_episodes
    from st_agent.policies.loading import TrainedPolicy

    torch.set_num_threads(1)
    kw = {"target": args.target, "phrase_bank": bank, "max_steps": 32}
    venv = VecNormalize(VecClosedLoopEnv(n_envs, seed=args.seed, **kw), gamma=0.95)
    model = PPO("MlpPolicy", venv, learning_rate=lr, n_steps=n_steps,
                batch_size=min(batch, n_steps * n_envs), n_epochs=10, gamma=0.95,
                gae_lambda=0.95, seed=args.seed, device="cpu",
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}}, verbose=0)
    rows: list[dict] = []

    class Curve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next, self.t0, self.eval_sec = args.eval_every, time.perf_counter(), 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next:
                return True
            t_eval = time.perf_counter()
            rms = venv.obs_rms
            pol = TrainedPolicy(model.policy, rms.mean.copy(), rms.var.copy(), venv.clip_obs,
                                venv.epsilon)
            eps = rollout_episodes(lambda env: pol, listeners, kw, seed=args.seed)
            model.policy.train()
            paired = paired_summary(eps.distance, pid_dist, 2000, args.seed)
            self.eval_sec += time.perf_counter() - t_eval
            train_sec = time.perf_counter() - self.t0 - self.eval_sec
            row = {"setting": name, "step": self.num_timesteps, "train_sec": train_sec,
                   "eval_sec": self.eval_sec, "distance": float(eps.distance.mean()),
                   "pid": float(pid_dist.mean()), **paired, "load": os.getloadavg()[0]}
            rows.append(row)
            with (out / "curve.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name:10s} {row['step']:8d} {train_sec:8.0f} s  PPO {row['distance']:.3f}"
                  f"  PID {row['pid']:.3f}  PID-PPO {paired['diff']:+.3f} "
                  f"({paired['diff_ci'][0]:+.3f} … {paired['diff_ci'][1]:+.3f}), "
                  f"{paired['pct']:+.1f} %  load "
                  f"{row['load']:.1f}", flush=True)
            self.next += args.eval_every
            return True

    model.learn(args.steps, callback=Curve())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--eval-every", type=int, default=10_000)
    ap.add_argument("--listeners", type=int, default=32)
    ap.add_argument("--target", default="calm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="folder of curve.jsonl (default runs/ppo_wallclock)")
    ap.add_argument("--settings", nargs="+",
                    default=["default:8:256:512:3e-4", "wide:64:32:512:3e-4",
                             "wide_fast:64:32:1024:1e-3"])
    args = ap.parse_args()
    from st_agent.envs.phrase_bank import build_phrase_bank
    from st_agent.listener.family import FAMILY_NAMES
    from st_agent.paths import runs_dir
    from st_agent.policies.controllers import pid_for
    from st_agent.policies.evaluate import heldout_listeners, rollout_episodes

    out = Path(args.out) if args.out else Path(runs_dir()) / "ppo_wallclock"
    out.mkdir(parents=True, exist_ok=True)
    bank = build_phrase_bank()
    listeners = heldout_listeners(args.listeners, args.seed, tuple(FAMILY_NAMES))
    kw = {"target": args.target, "phrase_bank": bank, "max_steps": 32}
    pid = rollout_episodes(lambda env: pid_for(args.target), listeners, kw, seed=args.seed)
    print(f"tuned PID on {args.listeners} held-out listeners: distance "
          f"{pid.distance.mean():.3f}; {_load()}")
    print(f"{'setting':10s} {'step':>8s} {'train wall':>10s}")
    summary = {}
    for spec in args.settings:
        name, n_envs, n_steps, batch, lr = spec.split(":")
        rows = _run(name, int(n_envs), int(n_steps), int(batch), float(lr), args, bank,
                    listeners, pid.distance, out)
        win = next((r for r in rows if r["diff_ci"][0] > 0), None)
        summary[name] = win
        print(f"{name}: " + (f"beats the PID at step {win['step']} after {win['train_sec']:.0f} s "
                             f"of training (load {win['load']:.1f})" if win else
                             f"does not beat the PID within {args.steps} steps"), flush=True)
    print(_load())


if __name__ == "__main__":
    main()
