"""Off-policy evaluation where the truth is known, and offline training vs PPO vs PID.

Part A (OPE validation). Simulated sessions are logged in the fast vector env
(:class:`st_agent.envs.vector.VecClosedLoopEnv`: phrase bank, estimator noise model,
listeners drawn from all four families, target ``calm``, 32 phrases) by one
behaviour policy, the tuned PID with truncated-normal exploration (std 0.3).
Each of ``--draws`` independent logs of ``--sessions`` sessions is used to estimate
four targets, each smoothed with the behaviour's std (``policies/ope.py``):
the behaviour itself, PID with 1.1x and 1.25x gains (near) and the bundled PPO
``calm`` network (far). The truth is the on-policy mean return of the same smoothed
target over ``--truth-sessions`` fresh sessions (other seeds). Printed per target and
estimator: bias, RMSE, 95 % CI coverage, mean CI width, how often the verdict said
"trusted", and the coverage among trusted draws.

Part B (offline training). IQL (``policies/offline.py``) is trained on
``--train-sessions`` logged PID+noise sessions, exported in the policy format and
loaded back; it is estimated by OPE on a fresh log, then run deterministically on
held-out listeners (:func:`st_agent.policies.evaluate.heldout_listeners`, a stream
no training or tuning used) beside the bundled simulation-trained PPO and the
tuned PID: mean distance to the target over the last half of the episode and the
paired difference to PID with bootstrap 95 % CIs. The figure is written to
``runs/bench_ope/offline_vs_ppo_pid.png``.

Run: ``nice .venv/bin/python benchmarks/bench_ope.py`` (about 20 min on one
shared core); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from st_agent.paths import runs_dir
from st_agent.policies.baselines import PIDPolicy
from st_agent.policies.controllers import pid_for
from st_agent.policies.loading import load_bundled_policy, load_policy
from st_agent.policies.offline import TrainOfflineConfig, save_offline_policy, train_iql
from st_agent.policies.ope import ESTIMATORS, format_result, off_policy_evaluate, target_actions
from st_agent.policies.sim_logging import collect_sim

STD = 0.3
ENV = {"target": "calm", "max_steps": 32}


def targets() -> dict:
    pid = pid_for("calm")
    ppo = load_bundled_policy("calm")
    return {"behaviour (PID)": lambda: pid_for("calm"),
            "PID 1.1x gains": lambda: PIDPolicy(1.1 * pid.kp, 1.1 * pid.ki, 1.1 * pid.kd),
            "PID 1.25x gains": lambda: PIDPolicy(1.25 * pid.kp, 1.25 * pid.ki, 1.25 * pid.kd),
            "PPO calm": lambda: ppo}


def part_a(args: argparse.Namespace) -> dict:
    tg = targets()
    truth = {}
    for name, make in tg.items():
        t = collect_sim(make, args.truth_sessions, STD, seed=10_000, **ENV).returns()
        det = collect_sim(make, args.truth_sessions, 0.0, seed=10_000, **ENV).returns()
        truth[name] = (float(t.mean()), float(t.std() / np.sqrt(t.size)), float(det.mean()))
    rows = {n: {e: [] for e in ESTIMATORS} | {"trusted": [], "ess": []} for n in tg}
    for d in range(args.draws):
        log = collect_sim(tg["behaviour (PID)"], args.sessions, STD, seed=d, name="pid", **ENV)
        for name, make in tg.items():
            res = off_policy_evaluate(log, target_actions(make, log), n_boot=args.n_boot,
                                      seed=d)
            if d == 0:
                print(format_result(res, name), "\n")
            for e in ESTIMATORS:
                rows[name][e].append((res.estimates[e]["value"], *res.estimates[e]["ci"]))
            rows[name]["trusted"].append(res.trusted)
            rows[name]["ess"].append(res.ess_fraction)
        print(f"draw {d + 1}/{args.draws} done", flush=True)
    print(f"\nOPE on {args.sessions} logged sessions x {args.draws} draws (behaviour: tuned "
          f"PID + truncated normal std {STD}); truth: {args.truth_sessions} on-policy "
          "sessions of the smoothed target")
    head = (f"{'target':<16} {'truth':>14} {'det.':>7} {'est.':<5} {'bias':>7} {'RMSE':>6} "
            f"{'cover':>6} {'CI w':>6} {'trust':>6} {'cov|tr':>6} {'ESS%':>5}")
    print(head + "\n" + "-" * len(head))
    out = {}
    for name, r in rows.items():
        tv, se, det = truth[name]
        trusted = np.array(r["trusted"])
        for e in ESTIMATORS:
            a = np.array(r[e])
            err = a[:, 0] - tv
            cov = (a[:, 1] <= tv) & (tv <= a[:, 2])
            ct = f"{100 * cov[trusted].mean():5.0f}%" if trusted.any() else "    -"
            print(f"{name:<16} {tv:8.3f}±{se:.3f} {det:7.3f} {e:<5} {err.mean():+7.3f} "
                  f"{np.sqrt(np.mean(err ** 2)):6.3f} {100 * cov.mean():5.0f}% "
                  f"{np.mean(a[:, 2] - a[:, 1]):6.3f} {100 * trusted.mean():5.0f}% {ct} "
                  f"{100 * np.mean(r['ess']):5.1f}")
            out[f"{name}/{e}"] = {"truth": tv, "bias": float(err.mean()),
                                  "rmse": float(np.sqrt(np.mean(err ** 2))),
                                  "coverage": float(cov.mean()),
                                  "trusted": float(trusted.mean())}
    return out


def part_b(args: argparse.Namespace) -> dict:
    from st_agent.listener.family import FAMILY_NAMES
    from st_agent.policies.evaluate import heldout_listeners, paired_summary, rollout_episodes

    folder = runs_dir() / "bench_ope"
    data = collect_sim(lambda: pid_for("calm"), args.train_sessions, STD, seed=500, name="pid",
                       **ENV)
    t0 = time.perf_counter()
    cfg = TrainOfflineConfig(sessions=("sim",), steps=args.iql_steps, seed=0)
    pol, doc = train_iql(data, cfg)
    save_offline_policy(pol, doc, folder / "offline")
    offline = load_policy(folder / "offline")
    print(f"\nIQL: {args.iql_steps} steps on {data.n} transitions of {args.train_sessions} "
          f"sessions in {time.perf_counter() - t0:.0f} s; exported to {folder / 'offline'}")
    log = collect_sim(lambda: pid_for("calm"), args.sessions, STD, seed=900, name="pid", **ENV)
    res = off_policy_evaluate(log, target_actions(lambda: offline, log), n_boot=args.n_boot)
    print(format_result(res, "IQL offline (smoothed)"))
    on = collect_sim(lambda: offline, args.truth_sessions, STD, seed=10_000, **ENV).returns()
    print(f"on-policy value of the smoothed IQL policy: {on.mean():.3f} "
          f"± {on.std() / np.sqrt(on.size):.3f}")
    listeners = heldout_listeners(args.heldout, 0, tuple(FAMILY_NAMES), stream=0)
    env_kwargs = dict(ENV, fidelity="fast")
    ctrls = {"tuned PID": lambda env: pid_for("calm"),
             "PPO (sim)": lambda env: load_bundled_policy("calm"),
             "IQL (offline)": lambda env: offline}
    eps = {n: rollout_episodes(m, listeners, env_kwargs, seed=0) for n, m in ctrls.items()}
    print(f"\nheld-out listeners ({args.heldout} draws of all families, deterministic "
          "policies): distance over the last half (lower is better); vs PID = pid - ctrl")
    print(f"{'controller':<14} {'distance':>8} {'95% CI':>15} {'vs PID':>8} {'95% CI':>17} "
          f"{'return':>7}")
    summ = {}
    for n, e in eps.items():
        p = paired_summary(e.distance, eps["tuned PID"].distance, seed=0)
        summ[n] = p
        print(f"{n:<14} {p['mean']:8.3f} {p['ci'][0]:7.3f}–{p['ci'][1]:.3f} {p['diff']:+8.3f} "
              f"{p['diff_ci'][0]:+8.3f}…{p['diff_ci'][1]:+.3f} {e.ret.mean():7.3f}")
    d = paired_summary(eps["IQL (offline)"].distance, eps["PPO (sim)"].distance, seed=0)
    print(f"IQL vs PPO (ppo - iql): {d['diff']:+.3f} [{d['diff_ci'][0]:+.3f}, "
          f"{d['diff_ci'][1]:+.3f}]")
    _figure(summ, folder / "offline_vs_ppo_pid.png")
    return {"ope": {k: v["value"] for k, v in res.estimates.items()},
            "on_policy": float(on.mean()), "heldout": summ}


def _figure(summ: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summ)
    m = np.array([summ[n]["mean"] for n in names])
    ci = np.array([summ[n]["ci"] for n in names])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(names, m, yerr=np.abs(ci.T - m), color=["tab:gray", "tab:blue", "tab:orange"])
    ax.set_ylabel("distance to target (last half)")
    ax.set_title("held-out listeners, calm", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--truth-sessions", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--train-sessions", type=int, default=300)
    ap.add_argument("--iql-steps", type=int, default=5000)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="a smoke run (small numbers)")
    ap.add_argument("--part", choices=("a", "b", "both"), default="both")
    args = ap.parse_args()
    if args.quick:
        args.draws, args.truth_sessions, args.train_sessions = 2, 200, 40
        args.iql_steps, args.heldout, args.n_boot = 100, 8, 50
    torch.set_num_threads(1)
    (runs_dir() / "bench_ope").mkdir(parents=True, exist_ok=True)
    res = {}
    if args.part in ("a", "both"):
        res["ope"] = part_a(args)
    if args.part in ("b", "both"):
        res["offline"] = part_b(args)
    (runs_dir() / "bench_ope" / "results.json").write_text(json.dumps(res, indent=1,
                                                                      default=str))


if __name__ == "__main__":
    main()
