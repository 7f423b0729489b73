"""Jam figures: shared policy vs independent controllers, clashes, env speed.

Prints (and writes to ``runs/bench_jam.txt``):

* group mean distance to the targets over the last half of each episode on
  held-out groups of 3 (:func:`st_agent.policies.jam.evaluate_jam`) for the shared jam
  policy, independent single-listener PPO policies per performer, PID per
  performer (gains tuned in jams for each performer's target, the target's
  single-listener gains, the untuned default gains), the shipped adaptive
  controller per performer and random, with the
  change against independent tuned PID (the issue's target: >= 20 % lower), on
  further held-out streams the shared policy vs tuned PID only, and the figure
  pooled over all streams with its paired 95 % CI over groups;
* clashes per bar for each controller;
* env steps/s of the fast jam for 3 and 8 performers (one ParallelEnv, random
  actions), of SuperSuit's vector env (agent steps/s), and of the full jam
  for 3 performers.

Usage::

    python benchmarks/bench_jam.py [--policy jam3] [--groups 128] [--seeds 2 3]
        [--more-seeds 4 5 6 7 8]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from st_agent.envs.jam import JamBank, build_jam_bank, parallel_env
from st_agent.policies.jam import (
    EvaluateJamConfig,
    evaluate_jam,
    format_jam_table,
    make_supersuit_venv,
)

_REPO = Path(__file__).resolve().parents[1]


def env_speed(bank: JamBank | None, performers: int, seconds: float = 3.0,
              fidelity: str = "fast", max_steps: int = 32) -> float:
    """Env steps (phrases, all performers at once) per second with random actions."""
    env = parallel_env(performers=performers, jam_bank=bank, fidelity=fidelity,
                       max_steps=max_steps)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (64, performers, 3))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if not env.agents:
            env.reset()
        env.step({a: acts[n % 64, i] for i, a in enumerate(env.possible_agents)})
        n += 1
    return n / (time.perf_counter() - t0)


def supersuit_speed(bank: JamBank, performers: int, n_envs: int = 16,
                    seconds: float = 3.0) -> float:
    """Agent steps/s through SuperSuit's conversion (what train-jam steps)."""
    venv = make_supersuit_venv({"performers": performers, "jam_bank": bank}, n_envs, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(rng.uniform(-1, 1, (venv.num_envs, 3)).astype(np.float32))
        n += venv.num_envs
    venv.close()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="jam3", help="bundled name or run folder")
    ap.add_argument("--groups", type=int, default=128, help="held-out groups of 3 per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3],
                    help="held-out group streams (0 and 1 were used to choose jam3's recipe "
                         "and members)")
    ap.add_argument("--more-seeds", type=int, nargs="*", default=[4, 5, 6, 7, 8],
                    help="further held-out streams, shared policy vs tuned PID only; the pooled "
                         "figure covers these and --seeds")
    ap.add_argument("--independent", nargs="*",
                    default=["calm", str(_REPO / "runs" / "ppo_random_indep")],
                    help="single-listener policies applied per performer")
    ap.add_argument("--out", default=str(_REPO / "runs" / "bench_jam.txt"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bank = build_jam_bank()
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    indep = tuple(p for p in args.independent if p == "calm" or Path(p).exists())
    pairs: list[np.ndarray] = []  # per stream: (groups, 2) shared, tuned PID
    for seed in args.seeds:
        say(f"held-out groups (seed {seed}): {args.groups} x 3 performers, targets drawn per "
            "performer from the presets, 32 phrases; distance over the last half (estimator "
            "units)")
        res = evaluate_jam(EvaluateJamConfig(policy=args.policy, performers=3,
                                             n_groups=args.groups, seed=seed,
                                             independent=indep,
                                             baselines=("pid", "pid-single", "pid-default",
                                                        "adaptive", "random"),
                                             out=str(_REPO / "runs" / f"bench_jam_eval_s{seed}")))
        say(format_jam_table(res))
        say("")
        pairs.append(np.column_stack([res["shared"]["per_group"], res["pid"]["per_group"]]))
    for seed in args.more_seeds:
        res = evaluate_jam(EvaluateJamConfig(policy=args.policy, performers=3,
                                             n_groups=args.groups, seed=seed, independent=(),
                                             baselines=("pid",),
                                             out=str(_REPO / "runs" / f"bench_jam_eval_s{seed}")))
        s, p = res["shared"]["group_distance"], res["pid"]["group_distance"]
        pairs.append(np.column_stack([res["shared"]["per_group"], res["pid"]["per_group"]]))
        say(f"held-out groups (seed {seed}): shared {s:.3f}  pid {p:.3f}  "
            f"{100 * (1 - s / p):+.1f} % lower than independent tuned PID")
    gains = np.array([100 * (1 - d[:, 0].mean() / d[:, 1].mean()) for d in pairs])
    d = np.concatenate(pairs)  # (groups, 2)
    diff = d[:, 0] - d[:, 1]
    ci = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    rng = np.random.default_rng(0)
    boot = [100 * (1 - d[i, 0].mean() / d[i, 1].mean())
            for i in rng.integers(len(d), size=(2000, len(d)))]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    say(f"pooled over {len(pairs)} held-out streams ({len(d)} groups): shared "
        f"{d[:, 0].mean():.3f}  tuned pid {d[:, 1].mean():.3f}; paired difference "
        f"{diff.mean():+.4f} (95 % CI {diff.mean() - ci:+.4f} ... {diff.mean() + ci:+.4f}); "
        f"{100 * (1 - d[:, 0].mean() / d[:, 1].mean()):+.1f} % lower than independent tuned "
        f"PID (bootstrap 95 % CI {lo:+.1f} ... {hi:+.1f}; per stream {gains.min():+.1f} to "
        f"{gains.max():+.1f} %, {int((gains >= 20).sum())} of {len(pairs)} at >= 20 %)")
    say("")
    for n in (3, 8):
        say(f"fast jam, {n} performers: {env_speed(bank, n):8.0f} env steps/s "
            f"({n} agent steps each)")
    for n in (3, 8):
        say(f"SuperSuit vec env, {n} performers x 16 jams: "
            f"{supersuit_speed(bank, n):8.0f} agent steps/s")
    full = env_speed(None, 3, seconds=10.0, fidelity="full", max_steps=8)
    say(f"full jam (composer + renderer + MIDI clashes), 3 performers: {full:6.2f} env steps/s")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
