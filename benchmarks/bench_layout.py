"""Figures of the layout issue: how fast the command line answers, how large modules are.

Prints
------
- wall-clock of ``st-agent --help``, ``st-agent generate --help`` and an argument
  error, each beside ``python -c "import numpy"`` measured in the same run
  (medians of ``--repeats`` runs) and the ratio;
- the largest modules (lines) and functions (lines, from the AST) of the
  package folders (st_agent/, envs/, policies/, tokenizer/).

Usage: ``python benchmarks/bench_layout.py [--repeats 7] [--top 5]``
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("st_agent", "envs", "policies", "tokenizer")
ST_AGENT = [sys.executable, "-m", "st_agent"]


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall-clock seconds of ``cmd``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sizes(top: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Largest modules and functions: (lines, name)."""
    modules, functions = [], []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(REPO).as_posix()
            modules.append((len(text.splitlines()), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions.append((node.end_lineno - node.lineno + 1,
                                      f"{rel}:{node.lineno} {node.name}"))
    return sorted(modules, reverse=True)[:top], sorted(functions, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    ref = wall([sys.executable, "-c", "import numpy"], args.repeats)
    print(f"python -c 'import numpy'          {ref * 1000:7.0f} ms (reference)")
    for label, extra in (("st-agent --help", ["--help"]),
                         ("st-agent generate --help", ["generate", "--help"]),
                         ("st-agent session --no-such-flag", ["session", "--no-such-flag"]),
                         ("st-agent generate --energy 1.5", ["generate", "--energy", "1.5"])):
        t = wall([*ST_AGENT, *extra], args.repeats)
        print(f"{label:<34}{t * 1000:7.0f} ms   {t / ref:4.2f}x import numpy")
    modules, functions = sizes(args.top)
    print("largest modules (lines):")
    for n, name in modules:
        print(f"  {n:5d}  {name}")
    print("largest functions (lines):")
    for n, name in functions:
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
