"""Cost of the report's per-phrase audio features (what each phrase sounded like).

Runs a demo session (virtual listener, accelerated clock) without a report, then
times :func:`st_agent.live.phrase_audio.measure_session_audio` on its
``session.wav`` and the whole :func:`st_agent.live.report.write_report`, and
prints the per-phrase cost (median over ``--runs``) and what the table says
about each phrase.

Usage::

    python benchmarks/bench_report_audio.py [--minutes 3] [--runs 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from st_agent.biometrics.recording import read_session
from st_agent.live.phrase_audio import measure_session_audio
from st_agent.live.report import write_report
from st_agent.live.session import DemoConfig, run_session
from st_agent.policies.controllers import make_controller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-report-audio-"))
    cfg = DemoConfig(minutes=args.minutes, calibration_sec=10.0, out=out,
                     name="bench").session_config()
    cfg.report = False
    ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    res = run_session(cfg, ctrl, name)
    events = read_session(res.folder).events
    per_phrase, report = [], []
    for _ in range(args.runs):
        tic = time.perf_counter()
        audio = measure_session_audio(res.folder / "session.wav", events)
        per_phrase.append(1e3 * (time.perf_counter() - tic) / len(audio.phrases))
        tic = time.perf_counter()
        write_report(res.folder)
        report.append(time.perf_counter() - tic)
    n = len(audio.phrases)
    music = audio.phrases[-1].end_sec
    print(f"session {res.folder}: {n} phrases, {music:.0f} s of session.wav")
    print(f"audio features: {statistics.median(per_phrase):.0f} ms per phrase "
          f"(median of {args.runs}; {music / n:.1f} s of audio each), "
          f"{statistics.median(per_phrase) * n / 1e3:.2f} s for the session")
    print(f"whole report: {statistics.median(report):.2f} s")
    for p in audio.phrases:
        f = p.features
        print(f"  {p.index:3d} {p.start_sec:6.1f}s "
              + ("not measured" if f is None else
                 f"{f.loudness_lufs:6.1f} LUFS {f.spectral_centroid_hz:5.0f} Hz "
                 f"flux {f.spectral_flux:.3f} {f.onset_rate_hz:4.2f}/s")
              + f"  heard: {p.heard}")


if __name__ == "__main__":
    main()
