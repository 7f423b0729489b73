"""Do the recorded reasons of knob changes agree with the changes? (issue 16)

Runs the demo (virtual listener, accelerated, 5 minutes of music, seed 0) with each
controller given, then counts over every recorded decision:

- ``reasons``: reasons of knobs that moved;
- ``new problems``: those whose text contradicts its change
  (:func:`st_agent.live.explain.direction_problem`);
- ``old template problems``: the same changes explained by the template the session
  used before (``<knob> up|down (a→b): <axis> <estimate> above|below|at target <t>``,
  the state being the last estimate before the decision and the target its nominal
  point), checked the same way: what the issue counted as 6 of 41 in the demo.

Usage: ``python benchmarks/bench_explanations.py [--policies calm pid] [--minutes 5]``
(about 1 minute per policy on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from st_agent.biometrics.recording import read_session
from st_agent.cli import main
from st_agent.live.explain import direction_problem

_AXIS = {"valence": 0, "tempo": 1, "energy": 1}


def _legacy(name: str, a: float, b: float, state: tuple[float, float],
            target: tuple[float, float]) -> str:
    axis = _AXIS[name]
    s, t = state[axis], target[axis]
    rel = "above" if s > t + 0.05 else ("below" if s < t - 0.05 else "at")
    return (f"{name} {'up' if b > a else 'down'} ({a:.2f}→{b:.2f}): "
            f"{('valence', 'arousal')[axis]} {s:+.2f} {rel} target {t:+.2f}")


def count(folder: Path) -> tuple[int, int, int]:
    """(reasons of moved knobs, new-text problems, old-template problems)."""
    events = read_session(folder).events
    start = next(e["payload"] for e in events if e["kind"] == "marker"
                 and e["payload"]["label"] == "session_start")
    knobs = tuple(start["config"]["start_knobs"])
    state = (0.0, 0.0)
    n = new_bad = old_bad = 0
    for e in events:
        if e["kind"] == "state" and e["payload"].get("confidence", 0) > 0:
            state = (e["payload"]["valence"], e["payload"]["arousal"])
        if e["kind"] != "decision":
            continue
        d = e["payload"]
        new = tuple(d["knobs"])
        for text in d["reasons"]:
            for j, name in enumerate(("valence", "tempo", "energy")):
                if text.startswith((f"{name} up", f"{name} down")):
                    n += 1
                    new_bad += direction_problem(text) is not None
                    old_bad += direction_problem(
                        _legacy(name, knobs[j], new[j], state, tuple(d["target"]))) is not None
        knobs = new
    return n, new_bad, old_bad


def run() -> None:
    """Run the demos and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", nargs="+", default=["calm", "pid"])
    ap.add_argument("--minutes", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policies:
            rc = main(["demo", "--policy", policy, "--minutes", str(args.minutes),
                       "--out", tmp, "--name", policy])
            if rc != 0:
                raise SystemExit(f"demo --policy {policy} failed ({rc})")
            rows.append((policy, *count(Path(tmp) / policy)))
    print(f"{'policy':<10} {'reasons':>8} {'new problems':>13} {'old template problems':>22}")
    for policy, n, new_bad, old_bad in rows:
        print(f"{policy:<10} {n:>8} {new_bad:>13} {old_bad:>22}")


if __name__ == "__main__":
    run()
