"""Peak memory of an accelerated jam against its length (issue 20: memory flat in length).

Runs ``st-agent jam --boards virtual,... --accelerated --stems --no-report`` in a child
process for each ``--minutes`` and prints its phrases, music length, wall time and
peak RSS (``getrusage`` of the child), plus the WAV files' length. The stems and the
stereo mix are streamed (``st_agent.live.stems``), so the peak should not grow with
the minutes.

Run: ``nice python benchmarks/bench_jam_rss.py [--minutes 5 20] [--performers 3]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path


def child(argv: list[str]) -> None:
    """Run the jam in this process; print its own peak RSS, MB, last."""
    from st_agent.cli import main as st_agent_main

    rc = st_agent_main(argv)
    print(f"peak_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
    sys.exit(rc)


def run_one(minutes: float, performers: int, folder: Path) -> dict[str, float]:
    """One jam in a fresh child process; returns its figures."""
    boards = ",".join(["virtual"] * performers)
    argv = ["jam", "--boards", boards, "--minutes", str(minutes), "--accelerated",
            "--stems", "--no-report", "--record", str(folder), "--name", "jam"]
    tic = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", *argv], check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - tic
    peak = float(out.strip().splitlines()[-1].split()[1])
    summary = json.loads((folder / "jam" / "summary.json").read_text())
    with wave.open(str(folder / "jam" / "session.wav")) as w:
        wav_sec = w.getnframes() / w.getframerate()
    stems = sorted((folder / "jam" / "stems").glob("*.wav"))
    return {"phrases": summary["phrases"], "music_sec": summary["music_sec"],
            "wav_sec": wav_sec, "stems": len(stems), "wall_sec": wall, "peak_mb": peak}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0])
    ap.add_argument("--performers", type=int, default=3)
    args = ap.parse_args()
    print(f"accelerated jam, {args.performers} virtual performers, --stems")
    print("minutes | phrases | music s | wav s | stems | wall s | peak RSS MB")
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as d:
            r = run_one(minutes, args.performers, Path(d))
        print(f"{minutes:7.1f} | {r['phrases']:7d} | {r['music_sec']:7.1f} | "
              f"{r['wav_sec']:5.1f} | {r['stems']:5d} | {r['wall_sec']:6.1f} | "
              f"{r['peak_mb']:11.0f}")


if __name__ == "__main__":
    main()
