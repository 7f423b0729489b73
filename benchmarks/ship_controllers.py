"""Fit and write the shipped reference controllers of every target preset.

For each target: PID gains (grid search), best constant knobs (5^3 grid), the
adaptive controller's population prior and settings (random search), all on
the tuning stream of all listener-model families (never the held-out
listeners), written to ``policies/assets/{pid,constant,adaptive}/<target>.json``.
Prints what was chosen and its tuning score.

Run: ``python benchmarks/ship_controllers.py [--targets calm focus] [--listeners 256]
[--trials 16]``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from st_agent.contract import TARGET_PRESETS
from st_agent.envs.phrase_bank import build_phrase_bank
from st_agent.policies.adaptive import prior_to_dict
from st_agent.policies.loading import BUNDLED_DIR
from st_agent.policies.lofo import write_shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=sorted(TARGET_PRESETS))
    ap.add_argument("--listeners", type=int, default=256)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    bank = build_phrase_bank()
    for target in args.targets:
        t0 = time.perf_counter()
        refs = write_shipped(target, bank, BUNDLED_DIR, args.listeners, args.trials, args.seed)
        print(f"{target}: PID {refs.pid}; constant {refs.constant} ({refs.constant_score:.3f}); "
              f"adaptive {asdict(refs.adaptive)} ({refs.adaptive_score:.3f}); "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        print(f"  prior (mean, sd): {json.dumps(prior_to_dict(refs.prior))}", flush=True)


if __name__ == "__main__":
    main()
