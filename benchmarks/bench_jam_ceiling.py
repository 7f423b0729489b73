"""How far the jam policies are from what the simulator allows: a planner that cheats.

The planner (model-predictive control by random shooting) knows what no
controller can know live: every listener's true parameters and latent state.
Before each phrase it copies the environment, tries candidate joint actions
(PID's, the shared policy's, "hold", uniform draws and corner draws), each held
for ``--horizon`` phrases with fresh noise (it does not see the future noise),
and plays the one with the lowest summed group distance. Its group distance
is an estimate of the fast jam's ceiling, against which the shared policy and
independent PID are placed on the same held-out groups and episode seeds as
``st-agent evaluate-jam``.

Usage::

    python benchmarks/bench_jam_ceiling.py [--policy jam3] [--groups 16]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from st_agent.contract import observation_size
from st_agent.envs.jam import JamEnv, build_jam_bank
from st_agent.policies.baselines import PIDPolicy
from st_agent.policies.jam import heldout_groups, load_jam_policy


def plan(env: JamEnv, candidates: list[np.ndarray], horizon: int,
         rng: np.random.Generator) -> np.ndarray:
    """The candidate joint action (N, 3) with the lowest summed group distance."""
    best, best_cost = candidates[0], np.inf
    for cand in candidates:
        sim = env.fork(rng)  # same state, fresh noise
        cost = 0.0
        for _ in range(horizon):
            if not sim.agents:
                break
            sim.step({a: cand[i] for i, a in enumerate(sim.possible_agents)})
            cost += sim.group_dist
        if cost < best_cost:
            best, best_cost = cand, cost
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="jam3", help="bundled name or run folder")
    ap.add_argument("--groups", type=int, default=16, help="held-out groups of 3")
    ap.add_argument("--seed", type=int, default=0, help="held-out group stream")
    ap.add_argument("--candidates", type=int, default=32, help="random draws of each kind")
    ap.add_argument("--horizon", type=int, default=3, help="phrases each candidate is held")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bank = build_jam_bank()
    policy = load_jam_policy(args.policy)
    n_contract = observation_size()
    groups = heldout_groups(args.groups, 3, args.seed)
    names = ("planner", "shared", "pid")
    result: dict[str, list[float]] = {k: [] for k in names}
    t0 = time.perf_counter()
    for g, (listeners, targets) in enumerate(groups):
        for name in names:
            env = JamEnv(performers=3, listeners=listeners, targets=targets, jam_bank=bank,
                         max_steps=32)
            obs, _ = env.reset(seed=args.seed + g)
            pids = [PIDPolicy() for _ in range(3)]
            for p in pids:
                p.reset()
            rng = np.random.default_rng(10_000 + g)
            dist = []
            while env.agents:
                o = np.stack([obs[a] for a in env.possible_agents])
                a_pid = np.stack([p.predict(o[i, :n_contract], deterministic=True)[0]
                                  for i, p in enumerate(pids)])
                a_shared = policy.predict(o, deterministic=True)[0]
                if name == "pid":
                    act = a_pid
                elif name == "shared":
                    act = a_shared
                else:
                    cands = [a_pid, a_shared, np.zeros((3, 3))]
                    cands += [rng.uniform(-1, 1, (3, 3)) for _ in range(args.candidates)]
                    cands += [rng.choice([-1.0, 0.0, 1.0], (3, 3))
                              for _ in range(args.candidates)]
                    act = plan(env, cands, args.horizon, rng)
                obs, _, _, _, infos = env.step(
                    {a: act[i] for i, a in enumerate(env.possible_agents)})
                dist.append([infos[a]["distance"] for a in env.possible_agents])
            result[name].append(float(np.mean(np.asarray(dist)[len(dist) // 2:])))
    pid = np.mean(result["pid"])
    print(f"held-out groups: {args.groups} x 3 performers (seed {args.seed}), 32 phrases; "
          f"distance over the last half; planner: {2 * args.candidates + 3} candidates held "
          f"{args.horizon} phrases; {time.perf_counter() - t0:.0f} s")
    for name in names:
        m = float(np.mean(result[name]))
        print(f"{name:<8} group distance {m:.3f}  ({100 * (1 - m / pid):+.1f} % vs independent "
              "PID)")


if __name__ == "__main__":
    main()
