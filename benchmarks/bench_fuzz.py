"""Fuzz every entry point a user hands files or text to, and print one table.

Each family lives in its own ``benchmarks/fuzz_<family>.py`` with
``run(quick: bool) -> list[dict]`` (rows: family, tried, passed, worst_sec, worst_mb,
note). "Passed" means the input was either accepted or refused with the project's
typed error (:mod:`st_agent.errors`), within the time and memory bounds the
hardening issue states, and that nothing recorded was lost beyond what was corrupted.

Usage::

    python benchmarks/bench_fuzz.py            # the full run (tens of minutes on 2 cores)
    python benchmarks/bench_fuzz.py --quick    # a small run of every family
    python benchmarks/bench_fuzz.py --only abc sessions
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = ("abc", "files", "sessions", "policies")


def _load(family: str):
    path = HERE / f"fuzz_{family}.py"
    spec = importlib.util.spec_from_file_location(f"fuzz_{family}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no fuzz module for {family!r}: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run of every family")
    ap.add_argument("--only", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    args = ap.parse_args(argv)
    rows: list[dict] = []
    for family in args.only:
        t0 = time.perf_counter()
        got = _load(family).run(quick=args.quick)
        print(f"# {family}: {time.perf_counter() - t0:.0f} s", flush=True)
        rows.extend(got)
    head = f"{'family':<34} {'tried':>7} {'passed':>7} {'worst s':>8} {'worst MB':>9}  note"
    print(head)
    print("-" * len(head))
    failed = 0
    for r in rows:
        failed += int(r["tried"]) - int(r["passed"])
        print(f"{r['family']:<34} {r['tried']:>7} {r['passed']:>7} "
              f"{r['worst_sec']:>8.2f} {r['worst_mb']:>9.0f}  {r.get('note', '')}")
    print(f"total: {sum(int(r['tried']) for r in rows)} tried, {failed} not passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
