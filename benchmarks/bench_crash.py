"""Crash test of the session recorder, and its write overhead.

1. ``--trials`` times (20 by default): start a process that records a synthetic
   16-channel 250 Hz stream in real time (a chunk every ``--chunk-sec``), kill it
   with SIGKILL at a random moment, open the session without repair, and count
   the samples lost: those the process had handed to ``write_chunk`` (it prints
   the running count after each call) but that do not read back. Target: <= 1 s.
2. Write overhead: write+fsync time of each ~1 s segment (16 channels, 250 Hz,
   float32) over ``--overhead-segments`` segments, p50 / p95 / max.

Usage::

    python benchmarks/bench_crash.py [--trials 20] [--seed 0] [--max-sec 4]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from st_agent.biometrics.recording import (  # noqa: E402  (after the path set-up)
    ConsentRecord,
    SessionMeta,
    SessionRecorder,
    read_session,
)
from st_agent.types import SignalChunk  # noqa: E402

SFREQ = 250.0
N_CH = 16
NAMES = tuple(f"EEG{i:02d}" for i in range(N_CH))
TYPES = ("eeg",) * N_CH


def _meta() -> SessionMeta:
    return SessionMeta(SFREQ, NAMES, TYPES, consent=ConsentRecord("bench"),
                       subject_id="s00000000")


def _expected(first: int, n: int) -> np.ndarray:
    """The synthetic stream, volts, shape (N_CH, n): a deterministic function of the index."""
    idx = np.arange(first, first + n)
    return 1e-6 * ((idx[None, :] * 7 + np.arange(N_CH)[:, None] * 13) % 1000 - 500)


def child(folder: Path, chunk: int) -> None:
    """Record the synthetic stream in real time until killed."""
    with SessionRecorder(folder, _meta()) as rec:
        print("ready", flush=True)
        n, t_start = 0, time.monotonic()
        while True:
            rec.write_chunk(SignalChunk(_expected(n, chunk), SFREQ, NAMES, TYPES,
                                        first_sample=n, t0_sec=n / SFREQ))
            n += chunk
            print(n, flush=True)
            time.sleep(max(0.0, t_start + n / SFREQ - time.monotonic()))


def trial(folder: Path, kill_at_sec: float, chunk: int) -> dict[str, float]:
    """Run one recording process, SIGKILL it ``kill_at_sec`` after it starts streaming."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(folder),
                             "--chunk", str(chunk)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    reported = [0]

    def reader() -> None:
        for line in proc.stdout:
            reported[0] = int(line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(kill_at_sec)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    thread.join(timeout=5)
    t0 = time.perf_counter()
    s = read_session(folder)
    open_sec = time.perf_counter() - t0
    n_read = s.n_times
    if n_read:  # what reads back is the stream itself, sample for sample
        np.testing.assert_allclose(s.raw.get_data(), _expected(0, n_read), rtol=1e-6)
    return {"kill_at_sec": kill_at_sec, "reported": reported[0], "read": n_read,
            "lost": reported[0] - n_read, "dropped_torn": s.dropped.dropped_samples,
            "open_ms": open_sec * 1e3}


def overhead(folder: Path, n_segments: int, chunk: int) -> np.ndarray:
    """Write+fsync seconds of each segment for a 16-channel 250 Hz stream."""
    with SessionRecorder(folder, _meta()) as rec:
        for n in range(0, n_segments * int(SFREQ), chunk):
            rec.write_chunk(SignalChunk(_expected(n, chunk), SFREQ, NAMES, TYPES,
                                        first_sample=n, t0_sec=n / SFREQ))
        return np.array(rec.segment_write_sec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20, help="kill -9 trials")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--min-sec", type=float, default=0.2, help="earliest kill after streaming")
    p.add_argument("--max-sec", type=float, default=4.0, help="latest kill after streaming")
    p.add_argument("--chunk", type=int, default=25, help="samples per chunk (25 = 0.1 s)")
    p.add_argument("--overhead-segments", type=int, default=120,
                   help="segments timed for the write overhead")
    p.add_argument("--dir", type=Path, default=None, help="where to record (default: a temp dir)")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.chunk)
        return
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"kill -9 test: {N_CH} channels @ {SFREQ:g} Hz, chunks of {args.chunk} samples, "
              f"1 s segments, kill uniformly in [{args.min_sec}, {args.max_sec}] s")
        print(f"{'trial':>5} {'kill_at_s':>9} {'reported':>8} {'read':>6} {'lost':>5} "
              f"{'lost_s':>6} {'torn':>5} {'open_ms':>7}")
        lost = []
        for i in range(args.trials):
            r = trial(root / f"crash{i:03d}", float(rng.uniform(args.min_sec, args.max_sec)),
                      args.chunk)
            lost.append(r["lost"])
            print(f"{i:>5} {r['kill_at_sec']:>9.3f} {r['reported']:>8} {r['read']:>6} "
                  f"{r['lost']:>5} {r['lost'] / SFREQ:>6.3f} {r['dropped_torn']:>5} "
                  f"{r['open_ms']:>7.1f}")
        worst = max(lost)
        print(f"samples lost: max {worst} ({worst / SFREQ:.3f} s), mean {np.mean(lost):.1f}; "
              f"target <= {SFREQ:g} (1 s): {'PASS' if worst <= SFREQ else 'FAIL'}")
        t = overhead(root / "overhead", args.overhead_segments, args.chunk) * 1e3
        seg_bytes = 48 + N_CH * int(SFREQ) * 4 + 4
        print(f"write+fsync per segment ({N_CH} ch x {SFREQ:g} samples, {seg_bytes} bytes, "
              f"n={t.size}): p50 {np.percentile(t, 50):.2f} ms, p95 {np.percentile(t, 95):.2f} ms,"
              f" max {t.max():.2f} ms")


if __name__ == "__main__":
    main()
