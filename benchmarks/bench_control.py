"""Control figures: held-out families, the feedback probe, the adaptive controller's
latency and learning curve, a full-fidelity check, a live demo.

Parts (``--parts``, default all but ``full`` and ``live``):

* ``eval``: the protocol of ``st-agent evaluate`` (leave one family out + held-out
  draws; every controller on the same listeners; bootstrap 95 % CIs of the
  paired difference to tuned PID). Prints each test set's table, then per set
  the shipped controller's recipe vs tuned PID (per cent, CI) and its gap to the
  privileged oracle, and the average over the held-out families.
* ``probe``: feedback-probe pass rates of every shipped controller (own target;
  and the two-sided ``focus`` band for the "below" direction) and of the references.
* ``latency``: decision time of the adaptive controller on contract observations
  (one session, as live), p50/p95 over ``--latency-n`` decisions.
* ``learning``: distance to the target after 2, 5 and 10 minutes of session for
  the adaptive controller, the same without online learning, and tuned PID
  (held-out draws, 13-minute sessions).
* ``full``: the shipped controller vs tuned PID in full fidelity (composer,
  renderer, virtual listener's signals, estimator) on ``--full-listeners``
  listeners of a held-out family (``--full-family``).
* ``live``: ``st-agent demo`` with the shipped ``calm`` controller: the live
  session's decision latency (window end -> knobs, estimator included).

Run: ``python benchmarks/bench_control.py [--target calm] [--listeners 100]
[--parts eval probe latency learning full live] [--ppo-runs DIR | --ppo-timesteps N]``

``eval`` trains the missing per-test-set residual PPO runs (``--ppo-timesteps``,
about 6 min each on a shared 2-core machine) into
``runs/bench_control_<target>/folds/<test set>/ppo``; a rerun reuses them and the
fitted references.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from st_agent.contract import SafetyBounds
from st_agent.envs.phrase_bank import build_phrase_bank
from st_agent.listener.family import FAMILY_NAMES
from st_agent.paths import runs_dir
from st_agent.policies.controllers import make_controller, shipped_controllers
from st_agent.policies.evaluate import (
    EvaluateConfig,
    evaluate,
    format_table,
    heldout_listeners,
    paired_summary,
    rollout_episodes,
)
from st_agent.policies.probe import probe_controller


def _shipped_kind(target: str) -> str:
    from st_agent.policies.loading import BUNDLED_DIR

    doc = json.loads((BUNDLED_DIR / target / "controller.json").read_text(encoding="utf-8"))
    return "ppo" if doc["kind"] == "residual" else "adaptive"


def part_eval(args: argparse.Namespace) -> None:
    cfg = EvaluateConfig(target=args.target, n_listeners=args.listeners, seed=args.seed,
                         ppo_runs=args.ppo_runs, ppo_timesteps=args.ppo_timesteps,
                         tune_listeners=args.tune_listeners,
                         adaptive_trials=args.trials,
                         out=str(runs_dir() / f"bench_control_{args.target}"),
                         controllers=tuple(args.controllers))
    t0 = time.perf_counter()
    res = evaluate(cfg)
    print(format_table(res))
    kind = _shipped_kind(args.target)
    print(f"\nshipped {args.target!r} = {kind} (its recipe refitted on each set's training "
          f"families); {time.perf_counter() - t0:.0f} s")
    pcts = []
    for name, block in res["sets"].items():
        c = block["controllers"]
        if kind not in c or "pid" not in c:
            continue
        p = c[kind]["paired"]
        line = (f"  {name:<14} vs tuned PID {p['pct']:+6.1f} % (95 % CI {p['pct_ci'][0]:+.1f} "
                f"… {p['pct_ci'][1]:+.1f}); distance {p['mean']:.3f} vs PID "
                f"{c['pid']['means']['distance']:.3f}")
        if "oracle" in c:
            o = c["oracle"]["means"]["distance"]
            g = paired_summary(np.asarray(c["oracle"]["distance"]),
                               np.asarray(c[kind]["distance"]), 2000, args.seed)
            line += (f"; oracle {o:.3f}, gap {p['mean'] - o:+.3f} (95 % CI "
                     f"{g['diff_ci'][0]:+.3f} … {g['diff_ci'][1]:+.3f})")
        print(line)
        if name in FAMILY_NAMES:
            pcts.append(p["pct"])
    other = "ppo" if kind == "adaptive" else "adaptive"
    rows = [(n, b["controllers"]) for n, b in res["sets"].items()
            if other in b["controllers"] and kind in b["controllers"]]
    if rows:
        print(f"  {other} vs the shipped {kind} (paired, positive: {other} better):")
        for name, c in rows:
            q = paired_summary(np.asarray(c[other]["distance"]), np.asarray(c[kind]["distance"]),
                               2000, args.seed)
            print(f"    {name:<14} {q['pct']:+6.1f} % (95 % CI {q['pct_ci'][0]:+.1f} … "
                  f"{q['pct_ci'][1]:+.1f}); {q['mean']:.3f} vs {c[kind]['means']['distance']:.3f}")
    if pcts:
        above = all(res["sets"][f]["controllers"][kind]["paired"]["pct_ci"][0] > 0
                    for f in FAMILY_NAMES if f in res["sets"])
        print(f"  mean over held-out families: {np.mean(pcts):+.1f} % vs tuned PID "
              f"(every family's CI above 0: {above})")


def _rates(r: object) -> str:
    def pct(x: float | None) -> str:
        return "    n/a" if x is None else f"{100 * x:5.1f} %"

    return (f"above {pct(r.above_rate)}  below {pct(r.below_rate)}  hold {r.hold_change:.4f}  "
            f"{'PASS' if r.passed else 'FAIL'}")


def part_probe(args: argparse.Namespace, bank: object) -> None:
    listeners = heldout_listeners(args.probe_listeners, args.seed, FAMILY_NAMES, stream=77)
    print(f"\nfeedback probe ({len(listeners)} held-out listeners, all families; "
          "above/below: share moving in the right direction; hold: mean |knob change|)")
    rows = [(p, p) for p in shipped_controllers()] + \
        [(f"{n} ({args.target})", n) for n in ("pid", "constant", "adaptive")]
    for label, name in rows:
        tgt = name if name in shipped_controllers() else args.target
        for probe_target in dict.fromkeys((tgt, "focus")):  # focus: both sides
            kw = {"target": probe_target, "phrase_bank": bank, "max_steps": 32}
            r = probe_controller(lambda env, n=name, t=tgt: make_controller(n, env.bounds, t)[0],
                                 listeners, kw, seed=args.seed)
            print(f"  {label:<18} on {probe_target:<8} {_rates(r)}")
    from st_agent.policies.adaptive import AdaptiveConfig, AdaptiveController
    from st_agent.policies.controllers import adaptive_for

    base = adaptive_for(args.target, SafetyBounds())
    cfg = AdaptiveConfig(**{**base.config.__dict__, "guard_margin": float("inf")})
    for probe_target in dict.fromkeys((args.target, "focus")):
        kw = {"target": probe_target, "phrase_bank": bank, "max_steps": 32}
        r = probe_controller(lambda env: AdaptiveController(base.prior, env.bounds, cfg),
                             listeners, kw, seed=args.seed)
        print(f"  {'adaptive, no guard':<18} on {probe_target:<8} {_rates(r)}")


def part_latency(args: argparse.Namespace, bank: object) -> None:
    from st_agent.envs.closed_loop import ClosedLoopEnv

    listeners = heldout_listeners(args.latency_n // 32 + 1, args.seed, FAMILY_NAMES, stream=55)
    wall, cpu = [], []
    for i, p in enumerate(listeners):
        env = ClosedLoopEnv(target=args.target, phrase_bank=bank, listener=p, max_steps=32)
        obs, _ = env.reset(seed=i)
        ctrl = make_controller(args.target, env.bounds, args.target)[0]
        for _ in range(32):
            t0, c0 = time.perf_counter(), time.thread_time()
            a, _ = ctrl.predict(obs, deterministic=True)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            obs, *_ = env.step(a)
    ms, cms = 1e3 * np.asarray(wall[:args.latency_n]), 1e3 * np.asarray(cpu[:args.latency_n])
    load = os.getloadavg()[0]
    print(f"\nshipped {args.target!r} decision time on contract observations (one session, "
          f"n={ms.size}; target p95 <= 10 ms): wall p50 {np.percentile(ms, 50):.2f} ms, "
          f"p95 {np.percentile(ms, 95):.2f} ms, max {ms.max():.2f} ms; CPU p50 "
          f"{np.percentile(cms, 50):.2f} ms, p95 {np.percentile(cms, 95):.2f} ms "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")


def part_learning(args: argparse.Namespace, bank: object) -> None:
    from st_agent.policies.adaptive import AdaptiveConfig, AdaptiveController
    from st_agent.policies.controllers import adaptive_for, pid_for

    base = adaptive_for(args.target, SafetyBounds())
    frozen = AdaptiveConfig(**{**base.config.__dict__, "learn": False})
    listeners = heldout_listeners(args.listeners, args.seed, FAMILY_NAMES, stream=66)
    kw = {"target": args.target, "phrase_bank": bank, "max_steps": 96}
    makers = {"adaptive": lambda env: AdaptiveController(base.prior, env.bounds, base.config),
              "adaptive, prior only": lambda env: AdaptiveController(base.prior, env.bounds,
                                                                     frozen),
              "tuned PID": lambda env: pid_for(args.target)}
    print(f"\ndistance to the {args.target!r} region by session time ({len(listeners)} held-out "
          "draws, all families; mean over phrases ending within ±30 s; 95 % CI)")
    for name, make in makers.items():
        e = rollout_episodes(make, listeners, kw, args.seed)
        cells = []
        for minute in (2, 5, 10):
            sel = np.abs(e.t_sec - 60.0 * minute) <= 30.0
            per = np.array([row[m].mean() if m.any() else np.nan
                            for row, m in zip(e.curve, sel, strict=True)])
            per = per[np.isfinite(per)]
            lo, hi = np.percentile([np.random.default_rng(k).choice(per, per.size).mean()
                                    for k in range(1000)], [2.5, 97.5])
            cells.append(f"{minute:>2} min {per.mean():.3f} ({lo:.3f}–{hi:.3f})")
        print(f"  {name:<22} " + "   ".join(cells))


def part_full(args: argparse.Namespace, bank: object) -> None:
    fam = args.full_family
    cfg = EvaluateConfig(target=args.target, n_listeners=args.full_listeners,
                         families=tuple(FAMILY_NAMES), holdout="families", seed=args.seed)
    from st_agent.policies.lofo import fold_controllers

    train = tuple(f for f in FAMILY_NAMES if f != fam)
    out = runs_dir() / f"bench_control_{args.target}" / "folds" / fam
    kind = _shipped_kind(args.target)
    cfg.controllers = ("pid", kind)
    makers, _ = fold_controllers(fam, train, cfg, bank, out)
    listeners = heldout_listeners(args.full_listeners, args.seed, (fam,),
                                  stream=1 + FAMILY_NAMES.index(fam))
    res = {}
    for fidelity in ("fast", "full"):
        kw = {"target": args.target, "phrase_bank": bank, "max_steps": 32,
              "fidelity": fidelity}
        t0 = time.perf_counter()
        res[fidelity] = {n: rollout_episodes(m, listeners, kw, args.seed).distance
                         for n, m in makers.items()}
        p = paired_summary(res[fidelity][kind], res[fidelity]["pid"], 2000, args.seed)
        print(f"\n{fidelity} fidelity, held-out family {fam}, {len(listeners)} listeners: "
              f"{kind} {p['mean']:.3f} vs tuned PID {res[fidelity]['pid'].mean():.3f}: "
              f"{p['pct']:+.1f} % (95 % CI {p['pct_ci'][0]:+.1f} … {p['pct_ci'][1]:+.1f}); "
              f"{time.perf_counter() - t0:.0f} s")


def part_live(args: argparse.Namespace) -> None:
    import tempfile

    from st_agent.live.session import DemoConfig, run_demo

    cfg = DemoConfig(policy=args.target, target=args.target,
                     out=Path(tempfile.mkdtemp(prefix="bench_control_")))
    controller, name = make_controller(cfg.policy, SafetyBounds(), cfg.target)
    res = run_demo(cfg, controller, name)
    s = res.summary
    lat = s["decision_latency_ms"]
    m = s.get("metrics", {})
    print(f"\nlive demo with {name}: {s['phrases']} phrases; decision latency p50 "
          f"{lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms (n={lat['n']}); distance over the "
          f"last half {m.get('distance_last_half')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="calm")
    ap.add_argument("--listeners", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["eval", "probe", "latency", "learning"])
    ap.add_argument("--controllers", nargs="+", default=["random", "fixed", "pid", "constant",
                                                         "adaptive", "ppo", "oracle"])
    ap.add_argument("--ppo-runs", default="")
    ap.add_argument("--ppo-timesteps", type=int, default=400_000)
    ap.add_argument("--tune-listeners", type=int, default=256)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--probe-listeners", type=int, default=100)
    ap.add_argument("--latency-n", type=int, default=2000)
    ap.add_argument("--full-family", default="adaptation")
    ap.add_argument("--full-listeners", type=int, default=20)
    args = ap.parse_args()
    bank = build_phrase_bank()
    for part in args.parts:
        if part == "eval":
            part_eval(args)
        elif part == "probe":
            part_probe(args, bank)
        elif part == "latency":
            part_latency(args, bank)
        elif part == "learning":
            part_learning(args, bank)
        elif part == "full":
            part_full(args, bank)
        elif part == "live":
            part_live(args)
        else:
            raise SystemExit(f"unknown part {part!r}")


if __name__ == "__main__":
    main()
