"""RLlib vs stable-baselines3 on this machine: env steps/s, time to a score, a jam run.

Run with the RLlib venv (it has both libraries): ``bash scripts/setup_rllib.sh`` then::

    nice .venv-rllib/bin/python benchmarks/bench_rllib.py [--speed-steps 20480]
        [--score-steps 100000] [--jam-steps 6144] [--skip speed score jam]

Prints:

* **speed**: the same PPO recipe (``st-agent train`` defaults: 8 fast sessions, 256 steps
  per session per rollout, minibatch 512, 10 epochs, 64x64 tanh) for ``--speed-steps``
  env steps: SB3 (one process, ``VecClosedLoopEnv``) and RLlib with 0, 1 and 2 env
  runners (the same env through :class:`~st_agent.envs.gym_vector.GymVecClosedLoopEnv`);
  env steps/s over the whole training (sampling + learning), RLlib's sampling and
  learning time per iteration, and Ray's start-up; the 1-minute load average beside
  each (the machine is shared);
* **score**: both backends for ``--score-steps`` with the held-out evaluation every
  ``--score-steps / 10`` steps (8 listeners, the four families); the wall-clock at which
  each first reaches the score both reach (the worse of the two best held-out distances);
* **jam**: a multi-agent RLlib run on the 3-performer jam (shared policy, then
  per-performer policies) for ``--jam-steps`` agent steps, agent steps/s, against SB3's
  SuperSuit run on the same budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from st_agent.policies.config import TrainConfig, TrainJamConfig


def _load() -> float:
    return os.getloadavg()[0]


class _EvalClock(threading.Thread):
    """Wall-clock time at which each line of ``eval.jsonl`` appears (polled every 0.2 s)."""

    def __init__(self, path: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.path, self.t0, self.rows, self.stop = path, t0, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self._poll()
            time.sleep(0.2)
        self._poll()

    def _poll(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        for line in lines[len(self.rows):]:
            if line.strip():
                self.rows.append({**json.loads(line), "wall_sec": time.perf_counter() - self.t0})


def _cfg(root: Path, name: str, steps: int, backend: str, runners: int = 0,
         eval_freq: int = 0) -> TrainConfig:
    return TrainConfig(name=name, runs_dir=str(root), total_timesteps=steps, backend=backend,
                       num_env_runners=runners, eval_freq=eval_freq, n_eval_listeners=8,
                       checkpoint_freq=0)


def _train(cfg: TrainConfig) -> dict[str, Any]:
    from st_agent.policies.rllib_backend import train_rllib
    from st_agent.policies.train import train

    iters: list[dict[str, Any]] = []

    def note(d: dict[str, Any]) -> None:
        timers = d["result"].get("timers", {})
        iters.append({"step": d["step"], "sample": timers.get("env_runner_sampling_timer"),
                      "learn": timers.get("learner_update_timer"), "wall": d["wall_sec"]})

    clock = _EvalClock(cfg.run_dir() / "eval.jsonl", time.perf_counter())
    clock.start()
    load0, t0 = _load(), time.perf_counter()
    if cfg.backend == "sb3":
        train(cfg)
    else:
        train_rllib(cfg, on_iteration=note)
    wall = time.perf_counter() - t0
    clock.stop.set()
    clock.join()
    summary = cfg.run_dir() / "train_summary.json"
    steps = json.loads(summary.read_text())["env_steps"] if summary.exists() \
        else cfg.total_timesteps
    return {"wall": wall, "steps": steps, "load": (load0 + _load()) / 2, "iters": iters,
            "evals": clock.rows}


def speed(root: Path, steps: int) -> None:
    from st_agent.policies.rllib_backend import connect_ray

    print(f"\n== env steps/s, same recipe, {steps} env steps (sampling + learning) ==")
    r = _train(_cfg(root, "sb3_speed", steps, "sb3"))
    print(f"SB3 (one process)            {r['steps'] / r['wall']:7.0f} steps/s  "
          f"({r['wall']:.0f} s, load {r['load']:.1f})")
    t0 = time.perf_counter()
    connect_ray("", num_cpus=3)
    print(f"Ray start-up (private, 3 CPUs): {time.perf_counter() - t0:.1f} s")
    for runners in (0, 1, 2):
        r = _train(_cfg(root, f"rllib_speed_{runners}", steps, "rllib", runners))
        it = [i for i in r["iters"] if i["sample"] is not None]
        smp = sum(i["sample"] for i in it) / max(1, len(it))
        lrn = sum(i["learn"] or 0 for i in it) / max(1, len(it))
        train_only = r["iters"][-1]["step"] / r["iters"][-1]["wall"]
        print(f"RLlib, {runners} env runner(s)       {r['steps'] / r['wall']:7.0f} steps/s  "
              f"({r['wall']:.0f} s incl. building the algorithm; {train_only:.0f} steps/s "
              f"after it; load {r['load']:.1f}; per 2048-step iteration: sampling "
              f"{smp:.2f} s, learning {lrn:.2f} s)")


def score(root: Path, steps: int) -> None:
    print(f"\n== time to the same held-out score, {steps} env steps, eval every "
          f"{steps // 10} ==")
    res = {}
    for backend in ("sb3", "rllib"):
        r = _train(_cfg(root, f"{backend}_score", steps, backend, 0, steps // 10))
        res[backend] = r
        curve = ", ".join(f"{e['step'] // 1000}k:{e['distance']:.3f}@{e['wall_sec']:.0f}s"
                          for e in r["evals"])
        print(f"{backend:5s} {r['wall']:.0f} s, load {r['load']:.1f}; held-out distance "
              f"(step:distance@wall) {curve}")
    best = {b: min(e["distance"] for e in r["evals"]) for b, r in res.items() if r["evals"]}
    if len(best) < 2:
        print("not enough evaluations to compare")
        return
    goal = max(best.values())
    print(f"score both reach: held-out distance <= {goal:.3f} (best: SB3 {best['sb3']:.3f}, "
          f"RLlib {best['rllib']:.3f})")
    for b, r in res.items():
        first = next(e for e in r["evals"] if e["distance"] <= goal)
        print(f"  {b:5s} reaches it at step {first['step']} after {first['wall_sec']:.0f} s")


def jam(root: Path, steps: int) -> None:
    from st_agent.policies.jam import train_jam
    from st_agent.policies.rllib_jam import train_jam_rllib

    print(f"\n== multi-agent jam, 3 performers, {steps} agent steps ==")
    base = {"runs_dir": str(root), "timesteps": steps, "checkpoint_freq": 0}
    t0, load0 = time.perf_counter(), _load()
    train_jam(TrainJamConfig(name="sb3_jam", **base))
    w = time.perf_counter() - t0
    print(f"SB3 + SuperSuit (shared)          {steps / w:6.0f} agent steps/s ({w:.0f} s, "
          f"load {(load0 + _load()) / 2:.1f})")
    for mapping in ("shared", "per-performer"):
        rows: list[dict[str, Any]] = []
        t0, load0 = time.perf_counter(), _load()
        run = train_jam_rllib(TrainJamConfig(name=f"rllib_jam_{mapping}", backend="rllib",
                                             policy_mapping=mapping, **base),
                              on_iteration=rows.append)
        w = time.perf_counter() - t0
        ret = rows[-1]["result"].get("env_runners", {}).get("episode_return_mean")
        print(f"RLlib ParallelPettingZooEnv ({mapping:13s}) {rows[-1]['step'] / w:6.0f} agent "
              f"steps/s ({w:.0f} s incl. build, load {(load0 + _load()) / 2:.1f}); "
              f"{len(rows)} iterations, last episode return (sum over performers) "
              f"{ret if ret is None else round(float(ret), 3)}; exported: "
              f"{sorted(p.name for p in run.iterdir() if p.name != 'rllib_checkpoint')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-steps", type=int, default=20_480)
    ap.add_argument("--score-steps", type=int, default=100_000)
    ap.add_argument("--jam-steps", type=int, default=6_144)
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "score", "jam"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench_rllib_") as tmp:
        root = Path(tmp)
        if "speed" not in args.skip:
            speed(root, args.speed_steps)
        if "jam" not in args.skip:
            jam(root, args.jam_steps)
        if "score" not in args.skip:
            score(root, args.score_steps)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
