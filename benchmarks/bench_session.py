"""Live session figures: decision latency, phrase lead time, a 5 s board outage, demo time.

Runs ``st-agent session`` on BrainFlow's synthetic board in real time (default
10 minutes of music) with a 5 s outage injected in the middle, then reads the
recording back and prints:

* decision latency p50/p95 (chunk that completed the latest window -> knobs;
  target p95 <= 20 ms) and phrase lead time min/p5 (next phrase ready before
  the current one ends; target > 0 for every phrase);
* the outage: how long until the session flagged the signal lost (target <= 2 s),
  phrases that started during it (the music continues), the gap in the
  recording (``BAD_gap``) and the source's reconnection;
* wall-clock of ``st-agent demo`` (target < 2 min on 2 cores).

Run: ``python benchmarks/bench_session.py [--minutes 10] [--skip-demo]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from st_agent.biometrics.recording import read_session
from st_agent.live.session import SessionConfig, run_session
from st_agent.policies.controllers import make_controller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--outage-sec", type=float, default=5.0)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_session_"))
    calib = 20.0
    outage_at = calib + 60.0 * args.minutes / 2
    cfg = SessionConfig(board="synthetic", minutes=args.minutes, calibration_sec=calib,
                        record=tmp, name="bench", inject_dropout=(outage_at, args.outage_sec),
                        status_sec=60.0)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target)
    res = run_session(cfg, controller, name)
    s = res.summary
    lat, lead = s["decision_latency_ms"], s["lead_time_sec"]
    print(f"session: {s['phrases']} phrases, {s['music_sec'] / 60:.1f} min of music, "
          f"{name}, synthetic board, wall {s['wall_sec']:.0f} s")
    print(f"decision latency: p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms (n={lat['n']}; "
          "target p95 <= 20 ms)")
    print(f"phrase lead time: min {lead['min']:.2f} s, p5 {lead['p5']:.2f} s (n={lead['n']}; "
          f"late phrases: {sum(1 for x in [lead['min']] if x < 0)})")
    sess = read_session(res.folder)
    ev = sess.events
    lost = [e for e in ev if e["kind"] == "signal_lost"]
    restored = [e for e in ev if e["kind"] == "signal_restored"]
    gaps = [e for e in ev if e["kind"] == "gap" and e["payload"].get("source") == "source"]
    reconn = [e for e in ev if e["kind"] == "reconnect"]
    bad_gap = [a for a in sess.raw.annotations if a["description"] == "BAD_gap"]
    detect = s["signal_lost_detect_sec"]
    print(f"outage of {args.outage_sec:.0f} s at {outage_at:.0f} s: signal lost flagged "
          f"{len(lost)} time(s), after {', '.join(f'{x:.2f} s' for x in detect)} without "
          "samples (target <= 2 s)")
    if lost and restored:
        t0, t1 = lost[0]["onset_sec"], restored[-1]["onset_sec"]
        during = [e for e in ev if e["kind"] == "phrase_start" and t0 <= e["onset_sec"] <= t1]
        print(f"  signal back {t1 - t0:.1f} s after the flag; phrases started meanwhile: "
              f"{len(during)} (the music continues)")
    durations = ", ".join(f"{a['duration']:.2f} s" for a in bad_gap)
    print(f"  recording: {len(bad_gap)} BAD_gap annotation(s), {durations}; source gap events "
          f"{[e['payload']['n_missing'] for e in gaps]} samples; reconnections {len(reconn)}")
    if not args.skip_demo:
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "st_agent", "demo", "--out", str(tmp)],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        print(f"demo: {wall:.1f} s wall-clock on this machine (target < 120 s)")
        print("  " + "\n  ".join(out.stdout.strip().splitlines()))
    print(f"artifacts in {tmp}")


if __name__ == "__main__":
    main()
