"""Memory of a long session: RSS every 10 simulated minutes of an accelerated session.

Runs the same loop as ``st-agent session --board virtual --accelerated --minutes 60``
(in process, so its RSS can be read while it runs) and prints:

* the resident set size (``VmRSS`` of ``/proc/self/status``, MB) at each
  ``--every`` simulated minutes of music;
* the growth per simulated hour: least-squares slope of RSS against simulated
  time from the first sample on, with its 95 % CI (the first minutes load the
  composer and the estimator, they are not growth);
* the peak RSS of the whole run (``ru_maxrss``), which includes writing the
  session's files at the end (score, summary, report).

With ``--trace`` Python's own allocations are traced (``tracemalloc``, 8 frames; the
session runs several times slower) and the allocation sites that grew most between the
first and the last sample are printed: growth there is Python objects that pile up;
growth of RSS beyond it is below Python (the allocator, torch, FluidSynth). The RSS
figures of a traced run include tracemalloc's own records: read only its Python growth.

With ``--trim`` each sample also asks glibc to hand freed memory back to the OS
(``malloc_trim(0)``) and prints the RSS after it: growth that disappears there
is freed memory kept by the allocator (fragmentation), not objects that pile up.

Run: ``nice python benchmarks/bench_session_rss.py [--minutes 60] [--every 10] [--trim]
[--sound session|plain] [--trace]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import stats

from st_agent.live.session import SessionConfig, SessionStatus, run_session
from st_agent.policies.controllers import make_controller


def rss_mb() -> float:
    """Resident set size of this process now, MB (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of music")
    ap.add_argument("--every", type=float, default=10.0, help="simulated minutes per sample")
    ap.add_argument("--calibration-sec", type=float, default=30.0)
    ap.add_argument("--no-report", action="store_true", help="skip report.html")
    ap.add_argument("--sound", default="session", choices=["session", "plain"],
                    help="the session's sound (as st-agent session --sound)")
    ap.add_argument("--trim", action="store_true",
                    help="also print RSS after glibc malloc_trim(0) at each sample")
    ap.add_argument("--trace", action="store_true",
                    help="trace Python allocations; print the sites that grew most")
    args = ap.parse_args()
    snapshots: list = []
    if args.trace:
        tracemalloc.start(8)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="bench_rss_"))
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=args.minutes,
                        calibration_sec=args.calibration_sec, record=tmp, name="rss",
                        status_sec=30.0, report=not args.no_report, sound=args.sound)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    libc = ctypes.CDLL(ctypes.util.find_library("c")) if args.trim else None
    samples: list[tuple[float, float]] = []
    trimmed: list[tuple[float, float]] = []
    music0: list[float] = []
    wall0 = time.perf_counter()

    def on_status(s: SessionStatus) -> None:
        if s.phase != "music":
            return
        if not music0:
            music0.append(s.t_sec)
        t_music = (s.t_sec - music0[0]) / 60.0
        if not samples or t_music >= samples[-1][0] + args.every - 1e-9:
            samples.append((t_music, rss_mb()))
            after = ""
            if libc is not None:
                libc.malloc_trim(0)
                trimmed.append((t_music, rss_mb()))
                after = f"  after malloc_trim {trimmed[-1][1]:8.1f} MB"
            print(f"  {t_music:6.1f} simulated min  RSS {samples[-1][1]:8.1f} MB{after}  "
                  f"(wall {time.perf_counter() - wall0:6.0f} s)", flush=True)
            if args.trace and t_music > 0:  # the first and the latest sample of the loop
                snapshots[1:] = [tracemalloc.take_snapshot()]

    print(f"session: virtual board, accelerated, {args.minutes:g} min of music, {name}, "
          f"sound {args.sound}")
    res = run_session(cfg, controller, name, on_status)
    samples.append(((res.summary["music_sec"]) / 60.0, rss_mb()))
    print(f"  {samples[-1][0]:6.1f} simulated min  RSS {samples[-1][1]:8.1f} MB  "
          "(after the session's files were written)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for label, series in (("RSS", samples[:-1]), ("RSS after malloc_trim", trimmed)):
        loop = [(t, r) for t, r in series if t > 0]
        if len(loop) >= 2:
            t, r = np.array(loop).T
            fit = stats.linregress(t / 60.0, r)
            ci = ""
            if len(t) >= 3:  # 95 % CI of the slope (t distribution, n - 2 dof)
                half = float(stats.t.ppf(0.975, len(t) - 2) * fit.stderr)
                ci = f", 95 % CI {fit.slope - half:+.1f} … {fit.slope + half:+.1f}"
            print(f"{label} growth during the loop: {fit.slope:+.1f} MB per simulated hour"
                  f"{ci} (fit over {t[0]:.0f}-{t[-1]:.0f} min, {len(t)} samples; the "
                  "sawtooth of phrase audio makes the samples correlated: read the CI as "
                  "a lower bound on the uncertainty)")
    wav = res.folder / "session.wav"
    print(f"peak RSS of the run: {peak:.0f} MB; session.wav "
          f"{wav.stat().st_size / 1e6 if wav.is_file() else 0:.0f} MB; "
          f"{res.summary['phrases']} phrases; wall {time.perf_counter() - wall0:.0f} s")
    if len(snapshots) == 2:
        _print_growth(*snapshots, samples[1][0], samples[-2][0])
    print(f"artifacts in {tmp}")


def _print_growth(first, last, t_first: float, t_last: float, top: int = 10) -> None:
    """The allocation sites (tracebacks) whose traced Python memory grew most."""
    diff = last.compare_to(first, "traceback")
    total = sum(d.size_diff for d in diff)
    print(f"Python allocations (tracemalloc) from {t_first:.0f} to {t_last:.0f} simulated min: "
          f"{total / 1e6:+.2f} MB in all; the {top} sites that changed most:")
    for d in diff[:top]:
        frames = [f for f in d.traceback if "st_agent" in f.filename] or list(d.traceback)
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:][::-1])
        print(f"  {d.size_diff / 1e6:+.2f} MB ({d.count_diff:+d} blocks)  {where}")


if __name__ == "__main__":
    main()
