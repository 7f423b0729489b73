"""What a ``session.mid`` checkpoint costs as a session grows, and what the loop waits.

:class:`st_agent.live.session_midi.SessionMidiFile` spools each phrase to disk and,
every 30 s of session time, rewrites ``session.mid`` from the whole spool, so one
checkpoint costs time in proportion to the phrases so far. This script spools
synthetic phrase records the size of a dense phrase (12 s; 40 melody, 16 bass and 48
chord notes) and prints, at each size, the time to read the spool back and to write
the file (one checkpoint), and the time ``phrase()`` takes on the loop's thread when a
checkpoint is due (it is written in a worker, so the loop only appends to the spool).

Run: ``nice python benchmarks/bench_session_mid.py [--sizes 100 500 1000 2000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from st_agent.live.session_midi import MidiPhrase, SessionMidiFile, write_session_midi


def _record(t: float, rng: np.random.Generator) -> MidiPhrase:
    parts = []
    for label, program, n in (("melody", 0, 40), ("bass", 32, 16), ("chords", 4, 48)):
        on = np.sort(rng.uniform(0.0, 12.0, n))
        notes = np.stack([on, on + 0.4, rng.integers(40, 90, n), rng.integers(50, 110, n)], 1)
        parts.append((label, program, False, notes.astype(np.float64)))
    return MidiPhrase(t, t + 12.0, 500_000, (4, 4), tuple(parts))


def _timed(fn) -> tuple[float, float]:
    """Seconds ``fn()`` took and the peak MB of Python's allocations during it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    tic = time.perf_counter()
    fn()
    sec = time.perf_counter() - tic
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return sec, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 2000])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("phrases | spool MB | checkpoint s (peak MB) | whole spool, read + write s "
          "(peak MB) | loop's phrase() ms")
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        out = SessionMidiFile(checkpoint_sec=0.0)  # a checkpoint due at every phrase
        out.open(folder)
        for size in sorted(args.sizes):
            while out.n_phrases < size - 1:
                out.phrase(out.n_phrases, _record(12.0 * out.n_phrases, rng), None)
                out.wait()
            tic = time.perf_counter()
            out.phrase(out.n_phrases, _record(12.0 * out.n_phrases, rng), None)
            loop_ms = 1e3 * (time.perf_counter() - tic)
            out.wait()
            # one more phrase, timed with the checkpoint it makes (in the worker)
            record = _record(12.0 * out.n_phrases, rng)
            ck_s, ck_mb = _timed(lambda r=record: (out.phrase(out.n_phrases, r, None), out.wait()))
            whole_s, whole_mb = _timed(
                lambda: write_session_midi(folder / "check.mid", out.spooled()))
            assert (folder / "check.mid").read_bytes() == (folder / "session.mid").read_bytes()
            spool_mb = (folder / ".session-mid.jsonl").stat().st_size / 1e6
            print(f"{size:7d} | {spool_mb:8.1f} | {ck_s:12.4f} ({ck_mb:6.2f}) | "
                  f"{whole_s:17.3f} ({whole_mb:7.1f}) | {loop_ms:18.1f}")
        out.close("time up")


if __name__ == "__main__":
    main()
