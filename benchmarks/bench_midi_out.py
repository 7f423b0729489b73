"""MIDI out timing: latency from a note's scheduled time to the message leaving, and jitter.

Real composed phrases (the bundled composer and arranger, ``PHRASES`` of them at spread
knobs) are handed one after another, back to back, to a real-time
:class:`st_agent.live.midi_out.MidiOut` at each phrase's start, as the session loop
does; the port is a :class:`~st_agent.live.midi_out.RecordingPort` that stamps every
message with :func:`time.perf_counter` when ``send`` is called (the moment it leaves for
the MIDI driver). The run is at real time: ``--minutes 5`` plays 5 minutes of music and
takes 5 minutes per condition (``--quick``: 30 s each).

Two conditions: the session's loop thread idle (only the clock thread works), and
loaded: the loop thread runs pure-Python work half of the time (in 20 ms bursts, as an
estimator step would), which competes for the GIL (switch interval 5 ms).

Figures, per condition: latency (sent - due) p50 / p95 / p99 / max of every note-on and
note-off; jitter: standard deviation of the latency, and p95 of |inter-onset error| (the
gap between consecutive note-ons as sent minus as scheduled).

    nice .venv/bin/python benchmarks/bench_midi_out.py [--minutes 5] [--quick]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

PHRASES = 6


def make_phrases(n: int = PHRASES, seed: int = 0) -> list:
    """``n`` real phrases (Playing with start 0) from the composer at spread knobs."""
    import torch

    from st_agent.live.common import Playing
    from st_agent.live.composing import PhraseMaker
    from st_agent.types import Knobs

    torch.set_num_threads(1)
    maker = PhraseMaker(seed)
    rng = np.random.default_rng(seed)
    out, context = [], None
    try:
        for _ in range(n):
            k = Knobs(*(float(x) for x in rng.uniform(0.1, 0.9, 3)))
            phrase, feats, pm, _ = maker.submit(k, context).result()
            context = phrase
            out.append(Playing(phrase, feats, pm, 0.0))
    finally:
        maker.close()
    return out


def _busy(stop: threading.Event, duty: float = 0.5, burst_sec: float = 0.02) -> None:
    """Pure-Python work ``duty`` of the time (holds the GIL while it runs)."""
    while not stop.is_set():
        t_end = time.perf_counter() + burst_sec
        x = 0
        while time.perf_counter() < t_end:
            x += 1
        time.sleep(burst_sec * (1 - duty) / duty)


def run_condition(phrases: list, minutes: float, loaded: bool) -> dict[str, float]:
    """Play ``minutes`` of the phrases back to back in real time; the timing figures."""
    from dataclasses import replace

    from st_agent.live.midi_out import MidiOut, RecordingPort
    from st_agent.types import Knobs

    port = RecordingPort()
    out = MidiOut(port, "bench", realtime=True, keep_timing=True)
    out.open(Path("."))
    stop = threading.Event()
    busy = threading.Thread(target=_busy, args=(stop,), daemon=True) if loaded else None
    t_session, k, i = 0.0, Knobs(0.5, 0.5, 0.5), 0
    perf0 = time.perf_counter()
    if busy is not None:
        busy.start()
    try:
        while t_session < 60.0 * minutes:
            p = replace(phrases[i % len(phrases)], start_sec=t_session)
            wait = perf0 + t_session - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            out.phrase(i, p, k)
            t_session = p.end_sec
            i += 1
        time.sleep(max(0.0, perf0 + t_session - time.perf_counter()) + 0.05)
    finally:
        stop.set()
        out.close("time up")
    assert out.timing is not None
    sent = np.array([t for t, _ in port.messages[:len(out.timing)]])
    due = np.array([d for d, _ in out.timing])
    kinds = np.array([kd for _, kd in out.timing])
    notes = kinds != 1  # note-ons and note-offs (not program changes)
    lat = (sent - due)[notes] * 1e3
    on = kinds == 2
    ioi_err = np.diff(sent[on]) - np.diff(due[on])
    return {"phrases": i, "music_min": t_session / 60.0, "messages": int(notes.sum()),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "min_ms": float(lat.min()), "jitter_sd_ms": float(lat.std()),
            "ioi_err_p95_ms": float(np.percentile(np.abs(ioi_err), 95) * 1e3),
            "dropped": out.dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="music per condition")
    ap.add_argument("--quick", action="store_true", help="30 s per condition")
    args = ap.parse_args()
    minutes = 0.5 if args.quick else args.minutes
    phrases = make_phrases()
    durs = [p.features.duration_sec for p in phrases]
    print(f"{len(phrases)} composed phrases, {min(durs):.1f}-{max(durs):.1f} s each, looped "
          f"back to back at real time; {minutes:g} min of music per condition")
    print(f"{'condition':<10}{'phrases':>8}{'msgs':>7}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
          f"{'max ms':>8}{'min ms':>8}{'sd ms':>7}{'IOI p95':>8}{'drop':>5}")
    for loaded in (False, True):
        r = run_condition(phrases, minutes, loaded)
        name = "loaded" if loaded else "idle"
        print(f"{name:<10}{r['phrases']:>8}{r['messages']:>7}{r['p50_ms']:>8.3f}"
              f"{r['p95_ms']:>8.3f}{r['p99_ms']:>8.3f}{r['max_ms']:>8.2f}{r['min_ms']:>8.3f}"
              f"{r['jitter_sd_ms']:>7.3f}{r['ioi_err_p95_ms']:>8.3f}{r['dropped']:>5}")


if __name__ == "__main__":
    main()
