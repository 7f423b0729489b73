"""Crash test of the session recorder, and its write overhead.

1. ``--trials`` times (20 by default): start a process that records a synthetic
   16-channel 250 Hz stream in real time (a chunk of ``--chunk`` samples handed
   to ``write_chunk`` as soon as its last sample is due, as a real source does),
   kill it with SIGKILL at a random moment, open the session without repair, and
   count the samples lost two ways: ``lost`` = handed to ``write_chunk`` (the
   process prints the running count after each call) but not read back;
   ``lost_rt`` = produced by the real-time stream by the moment of the kill
   (from the shared monotonic clock) but not read back, chunk latency included.
   Target: max ``lost_rt`` <= 1 s.
2. Write overhead: write+fsync time of each ~1 s segment (16 channels, 250 Hz,
   float32) over ``--overhead-segments`` segments, p50 / p95 / max.

Usage::

    python benchmarks/bench_crash.py [--trials 20] [--seed 0] [--max-sec 4] [--flush-sec 0.5]

``--flush-sec 0`` records full 1 s segments only (the recorder before the 0.5 s flush).
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


def child(folder: Path, chunk: int, flush_sec: float | None) -> None:
    """Record the synthetic stream in real time until killed; sample n is due at
    t_start + n / SFREQ, and a chunk is handed over when its last sample is due."""
    with SessionRecorder(folder, _meta(), flush_sec=flush_sec) as rec:
        t_start = time.monotonic()
        print(f"ready {t_start!r}", flush=True)
        n = 0
        while True:
            time.sleep(max(0.0, t_start + (n + chunk) / SFREQ - time.monotonic()))
            rec.write_chunk(SignalChunk(_expected(n, chunk), SFREQ, NAMES, TYPES,
                                        first_sample=n, t0_sec=n / SFREQ))
            n += chunk
            print(n, flush=True)


def trial(folder: Path, kill_at_sec: float, chunk: int, flush_sec: float) -> dict[str, float]:
    """Run one recording process, SIGKILL it ``kill_at_sec`` after it starts streaming."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(folder),
                             "--chunk", str(chunk), "--flush-sec", str(flush_sec)],
                            stdout=subprocess.PIPE, text=True, env=env)
    word, t_start = proc.stdout.readline().split()
    assert word == "ready"
    reported = [0]

    def reader() -> None:
        for line in proc.stdout:
            reported[0] = int(line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(max(0.0, float(t_start) + kill_at_sec - time.monotonic()))
    t_kill = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    thread.join(timeout=5)
    t0 = time.perf_counter()
    s = read_session(folder)
    open_sec = time.perf_counter() - t0
    n_read = s.n_times
    if n_read:  # what reads back is the stream itself, sample for sample
        np.testing.assert_allclose(s.raw.get_data(), _expected(0, n_read), rtol=1e-6)
    produced = int((t_kill - float(t_start)) * SFREQ)  # samples due by the kill
    return {"kill_at_sec": kill_at_sec, "reported": reported[0], "read": n_read,
            "lost": reported[0] - n_read, "lost_rt": produced - n_read,
            "dropped_torn": s.dropped.dropped_samples,
            "open_ms": open_sec * 1e3}


def overhead(folder: Path, n_segments: int, chunk: int, seg_samples: int,
             flush_sec: float | None) -> np.ndarray:
    """Write+fsync seconds of each segment for a 16-channel 250 Hz stream."""
    with SessionRecorder(folder, _meta(), flush_sec=flush_sec) as rec:
        for n in range(0, n_segments * seg_samples, chunk):
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
    p.add_argument("--flush-sec", type=float, default=0.5,
                   help="recorder flush_sec (0 = full 1 s segments only)")
    p.add_argument("--overhead-segments", type=int, default=120,
                   help="segments timed for the write overhead")
    p.add_argument("--dir", type=Path, default=None, help="where to record (default: a temp dir)")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.chunk, args.flush_sec or None)
        return
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        flush = f"flush every {args.flush_sec:g} s" if args.flush_sec else "no early flush"
        print(f"kill -9 test: {N_CH} channels @ {SFREQ:g} Hz, chunks of {args.chunk} samples, "
              f"1 s segments, {flush}, kill uniformly in [{args.min_sec}, {args.max_sec}] s")
        print(f"{'trial':>5} {'kill_at_s':>9} {'reported':>8} {'read':>6} {'lost':>5} "
              f"{'lost_s':>6} {'lost_rt_s':>9} {'torn':>5} {'open_ms':>7}")
        lost, lost_rt = [], []
        for i in range(args.trials):
            r = trial(root / f"crash{i:03d}", float(rng.uniform(args.min_sec, args.max_sec)),
                      args.chunk, args.flush_sec)
            lost.append(r["lost"])
            lost_rt.append(r["lost_rt"])
            print(f"{i:>5} {r['kill_at_sec']:>9.3f} {r['reported']:>8} {r['read']:>6} "
                  f"{r['lost']:>5} {r['lost'] / SFREQ:>6.3f} {r['lost_rt'] / SFREQ:>9.3f} "
                  f"{r['dropped_torn']:>5} {r['open_ms']:>7.1f}")
        worst, worst_rt = max(lost), max(lost_rt)
        print(f"handed but lost: max {worst} samples ({worst / SFREQ:.3f} s), mean "
              f"{np.mean(lost) / SFREQ:.3f} s")
        print(f"real-time loss (due by the kill, not on disk): max {worst_rt} samples "
              f"({worst_rt / SFREQ:.3f} s), mean {np.mean(lost_rt) / SFREQ:.3f} s, "
              f"n={len(lost_rt)} kills; target <= 1 s: "
              f"{'PASS' if worst_rt <= SFREQ else 'FAIL'}")
        seg_samples = round(SFREQ * args.flush_sec) if args.flush_sec else int(SFREQ)
        t = overhead(root / "overhead", args.overhead_segments, args.chunk, seg_samples,
                     args.flush_sec or None) * 1e3
        seg_bytes = 48 + N_CH * seg_samples * 4 + 4
        print(f"write+fsync per segment ({N_CH} ch x {seg_samples} samples, {seg_bytes} bytes, "
              f"n={t.size}): p50 {np.percentile(t, 50):.2f} ms, p95 {np.percentile(t, 95):.2f} ms,"
              f" max {t.max():.2f} ms")


if __name__ == "__main__":
    main()
