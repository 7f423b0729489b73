"""Tune PID gains for jams on jam tuning groups; print them, optionally ship them.

For each target preset (:func:`st_agent.policies.jam_tuning.tune_jam_pid`): the grid
setting with the lowest distance of that target's performers on ``--groups`` tuning
groups of 3, against the single-listener gains it started from. ``--write`` writes
``policies/assets/pid_jam/<target>.json`` (the ``pid`` jam baseline and
``st-agent jam --policy pid`` read them).

Usage::

    python benchmarks/tune_jam_pid.py [--groups 64] [--seed 0] [--write]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from st_agent.envs.jam import build_jam_bank
from st_agent.policies.jam_tuning import JAM_TUNING_OFFSET, tune_jam_pid
from st_agent.policies.loading import BUNDLED_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="ship the gains")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bank = build_jam_bank()
    t0 = time.perf_counter()
    res = tune_jam_pid(bank, args.groups, seed=args.seed)
    print(f"jam PID gains, {args.groups} tuning groups of 3 (stream {args.seed}), "
          f"{time.perf_counter() - t0:.0f} s")
    for target, r in res.items():
        print(f"  {target:<9} kp {r['kp']:<5} ki {r['ki']:<5} kd {r['kd']:<4} distance of "
              f"its performers {r['score']:.4f} (single-listener gains {r['start_score']:.4f})")
        if args.write:
            out = BUNDLED_DIR / "pid_jam" / f"{target}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            doc = {k: r[k] for k in ("kp", "ki", "kd", "score")} | {
                "target": target,
                "tuned_on": {"env": "fast jam (st_agent.envs.jam.JamEnv)", "performers": 3,
                             "tune_groups": args.groups, "seed": args.seed,
                             "stream_offset": JAM_TUNING_OFFSET,
                             "start": "the single-listener gains (assets/pid)",
                             "script": "benchmarks/tune_jam_pid.py --write"}}
            out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            print(f"    wrote {out}")


if __name__ == "__main__":
    main()
