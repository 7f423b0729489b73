"""How cost grows with the work: one run, each figure beside its reference, tables and a plot.

Sections (``--parts``; every line carries the machine's load average):

* ``env``: fast env (``VecClosedLoopEnv``, numba backend where installed) steps/s
  against the number of sessions stepped together (8 ... 4,096), beside a no-op
  env of the same spaces in SB3's ``DummyVecEnv`` (the vectorisation ceiling of a
  Python env; ``benchmarks/bench_env.py``'s ``NoOpEnv``).
* ``estimator``: :class:`StateEstimator` CPU time per second of signal against
  EEG channels (4 ... 64, 250 Hz, plus ECG and EMG; offline pushes of 30 s),
  beside plain SciPy Welch (``scipy.signal.welch`` of the same 2 s windows every
  0.5 s, batched). Then a long recording (``--hours``, 16 channels): a 60 s
  block of virtual-listener signals pushed again and again with advancing sample
  indices (synthesised, not read from disk), the time and the RSS measured; the
  8 h figure is extrapolated from the measured minutes (said so in the table).
* ``recording``: :class:`SessionRecorder` bytes and write time per hour of
  16-ch + ECG + EMG, 250 Hz, 1 s segments, float32 and float64, from
  ``--record-min`` minutes written as fast as the disk takes them (accelerated
  clock), scaled to an hour.
* ``composer``: :meth:`Composer.compose` latency against candidates per batch
  and bars, beside Hugging Face ``model.generate`` sampling as many sequences of
  as many tokens (48 per 4 bars, the composer's ``max_new_tokens``) on the same
  model; one torch thread.
* ``session``: RSS of an accelerated virtual-board session, sampled every
  simulated 10 min (``benchmarks/bench_session_rss.py`` in a subprocess;
  ``--session-min``, 120 by default, 20 with ``--quick``).

``--quick`` shrinks every section (fewer sizes, shorter signals) to run in a few
minutes on a shared machine. The plot (``--plot``, default
``runs/bench_growth/growth.png``) has one panel per section.

Run: ``nice python benchmarks/bench_growth.py [--quick] [--parts env estimator recording
composer session] [--plot PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _bench_env():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_env", HERE / "bench_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------- env
def part_env(args) -> dict:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from st_agent.envs.closed_loop import ClosedLoopEnv
    from st_agent.envs.phrase_bank import build_phrase_bank
    from st_agent.envs.vector import numba_available

    be = _bench_env()
    bank = build_phrase_bank()
    backend = "numba" if numba_available() else "numpy"
    proto = ClosedLoopEnv(phrase_bank=bank)
    sizes = [8, 64, 512, 4096] if args.quick else [8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                                   4096]
    steps = 20_000 if args.quick else 80_000
    print(f"\n## env steps/s vs sessions ({backend} backend; best of {args.repeats}; wall clock)")
    print(f"{'n_envs':>7s} {'VecClosedLoopEnv':>17s} {'no-op DummyVecEnv':>18s} "
          f"{'ratio':>6s}  load")
    rows = []
    for n in sizes:
        envs = {"vec": be._prepared(be._vec(bank, n, backend), n),
                "noop": be._prepared(DummyVecEnv([lambda: be.NoOpEnv(proto)] * n), n)}
        rates = be._rates(envs, {"vec": max(steps, 4 * n), "noop": max(steps // 4, 4 * n)},
                          args.repeats)
        v, z = rates["vec"][0], rates["noop"][0]
        rows.append((n, v, z))
        print(f"{n:7d} {v:17,.0f} {z:18,.0f} {v / z:6.2f}  {load()}", flush=True)
    return {"env": rows}


# ---------------------------------------------------------------------- estimator
def _signals(n_eeg: int, seconds: float, seed: int = 0):
    from st_agent.biometrics.montage import _LABELS
    from st_agent.listener.first_order import ListenerParams
    from st_agent.listener.virtual import MONTAGE, SignalModel, VirtualListenerSource

    extra = sorted(x for x in _LABELS if x not in {m.upper() for m in MONTAGE}
                   and re.fullmatch(r"(F|C|P|FC|CP|T|PO|AF|O|TP)[0-9Z]+", x))
    names = tuple(MONTAGE[:n_eeg]) + tuple(extra[:max(0, n_eeg - len(MONTAGE))])
    src = VirtualListenerSource(ListenerParams(), model=SignalModel(montage=names,
                                                                    chunk_sec=1.0), rng=seed)
    src.start()
    return src.read_block(seconds)


def _welch_reference(chunk, n_eeg: int) -> float:
    """CPU s of scipy.signal.welch over the estimator's windows (2 s, hop 0.5 s)."""
    from scipy import signal

    x = chunk.data[:n_eeg] * 1e6
    fs = chunk.sfreq
    win, hop = round(2 * fs), round(0.5 * fs)
    c0 = time.process_time()
    view = np.lib.stride_tricks.sliding_window_view(x, win, axis=-1)[:, ::hop]
    signal.welch(view, fs, nperseg=round(fs), axis=-1)
    return time.process_time() - c0


def part_estimator(args) -> dict:
    from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
    from st_agent.types import SignalChunk

    chans = [4, 16, 64] if args.quick else [4, 8, 16, 32, 64]
    sec = 30.0 if args.quick else 60.0
    print(f"\n## estimator CPU ms per second of signal vs EEG channels (+ ECG, EMG; 250 Hz; "
          f"{sec:g} s pushed offline after a 20 s calibration)")
    print(f"{'channels':>8s} {'StateEstimator':>15s} {'SciPy Welch':>12s} {'ratio':>6s}  load")
    rows = []
    for c in chans:
        chunk = _signals(c, 20.0 + sec)
        est = StateEstimator(EstimatorConfig(calibration_sec=20.0, reference_model=False))
        n_cal = round(20.0 * chunk.sfreq)
        est.push(SignalChunk(chunk.data[:, :n_cal], chunk.sfreq, chunk.ch_names,
                             chunk.ch_types, 0, 0.0))
        c0 = time.process_time()
        est.push(SignalChunk(chunk.data[:, n_cal:], chunk.sfreq, chunk.ch_names,
                             chunk.ch_types, n_cal, 20.0))
        ms = (time.process_time() - c0) / sec * 1e3
        ref = _welch_reference(SignalChunk(chunk.data[:, n_cal:], chunk.sfreq, chunk.ch_names,
                                           chunk.ch_types, n_cal, 20.0), c) / sec * 1e3
        rows.append((c, ms, ref))
        print(f"{c:8d} {ms:15.2f} {ref:12.3f} {ms / ref:6.0f}  {load()}", flush=True)
    return {"estimator": rows, "long": _long_recording(args)}


def _long_recording(args) -> list:
    from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
    from st_agent.types import SignalChunk

    minutes = args.long_min
    block = _signals(16, 60.0, seed=1)
    est = StateEstimator(EstimatorConfig(calibration_sec=20.0, reference_model=False))
    n = block.n_times
    r0, c0, w0 = rss_mb(), time.process_time(), time.perf_counter()
    marks = []
    for k in range(int(minutes)):
        est.push(SignalChunk(block.data, block.sfreq, block.ch_names, block.ch_types, k * n,
                             k * 60.0))
        if (k + 1) % max(1, int(minutes) // 4) == 0 or k + 1 == 60:
            marks.append((k + 1, time.process_time() - c0, rss_mb()))
    wall = time.perf_counter() - w0
    cpu_min = marks[-1][1] / marks[-1][0]
    print(f"\n## long recording, 16 EEG + ECG + EMG, 250 Hz, pushed 60 s at a time "
          f"(a 60 s synthesised block repeated; measured {int(minutes)} min)")
    print(f"{'minutes':>8s} {'CPU s':>8s} {'RSS MB':>8s}")
    for m, c, r in marks:
        print(f"{m:8d} {c:8.1f} {r:8.1f}")
    def measured(m: int) -> tuple[float, str]:
        got = [c for k, c, _ in marks if k == m]
        return (got[0], "measured") if got else (m * cpu_min,
                                                 "extrapolated from the measured minutes")

    rows = [("1 h", *measured(60)), ("8 h", *measured(480))]
    for label, cpu, how in rows:
        print(f"{label}: {cpu:6.1f} s CPU ({how}); RSS start {r0:.0f} MB, after "
              f"{int(minutes)} min {marks[-1][2]:.0f} MB (flat: the buffer is bounded); "
              f"wall {wall:.1f} s for the measured part; {load()}")
    return [list(m) for m in marks]


# ---------------------------------------------------------------------- recording
def part_recording(args) -> dict:
    from st_agent.biometrics.recording import SessionRecorder
    from st_agent.biometrics.session_meta import ConsentRecord, SessionMeta

    block = _signals(16, 10.0, seed=2)
    minutes = args.record_min
    print(f"\n## recording: bytes and write time per hour (16 EEG + ECG + EMG, 250 Hz, 1 s "
          f"segments, fsync each; {minutes:g} min written, scaled to 1 h)")
    print(f"{'dtype':>8s} {'MB / h':>8s} {'write s / h':>12s} {'CPU s / h':>10s}  load")
    rows = []
    for dtype in ("float32", "float64"):
        with tempfile.TemporaryDirectory(prefix="bench_growth_rec_") as tmp:
            meta = SessionMeta.from_chunk(block, ConsentRecord("bench", scopes=("record",)))
            folder = Path(tmp) / "s"
            w0, c0 = time.perf_counter(), time.process_time()
            with SessionRecorder(folder, meta, dtype=dtype) as rec:
                n = round(0.25 * block.sfreq)  # the live source's 0.25 s chunks
                for k in range(int(minutes * 60 / 10)):
                    for j in range(0, block.n_times, n):
                        rec.write_chunk(block.__class__(
                            block.data[:, j:j + n], block.sfreq, block.ch_names,
                            block.ch_types, k * block.n_times + j,
                            (k * block.n_times + j) / block.sfreq))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        scale = 60.0 / minutes
        rows.append((dtype, size * scale / 1e6, wall * scale, cpu * scale))
        print(f"{dtype:>8s} {size * scale / 1e6:8.1f} {wall * scale:12.1f} "
              f"{cpu * scale:10.1f}  {load()}", flush=True)
    return {"recording": rows}


# ---------------------------------------------------------------------- composer
def part_composer(args) -> dict:
    import torch

    from st_agent.music.composer import Composer, ComposerConfig, ComposerError
    from st_agent.music.generator import load_generator
    from st_agent.types import Knobs

    torch.set_num_threads(1)
    batches = [1, 4, 8] if args.quick else [1, 2, 4, 8, 16]
    bars_list = [4, 8] if args.quick else [4, 8, 16]
    reps = 2 if args.quick else 3
    knobs = Knobs(0.3, 0.0, 1.0)  # slow, dense: the longest phrases
    model = None
    print("\n## composer latency (s, median) vs candidates per batch and bars, beside HF "
          f"generate of as many sequences x 48 tokens per 4 bars; 1 thread; {reps} repeats")
    print(f"{'batch':>6s} {'bars':>5s} {'compose':>8s} {'generate':>9s}  load")
    rows = []
    for b in batches:
        comp = Composer(ComposerConfig(candidates=b, enough=min(4, b), threads=1))
        if model is None:
            model = load_generator(comp.checkpoint).model
            tok = comp.tokenizer
            prompt = tok("<|bos|>M:4/4\nL:1/8\nK:Am\n<|v1|><|t0|><|e3|><|phrase|>",
                         add_special_tokens=False)["input_ids"]
        for bars in bars_list:
            ours, ref = [], []
            failed = 0
            for r in range(reps):
                t0 = time.perf_counter()
                try:
                    comp.compose(knobs, bars=bars, seed=r)
                except ComposerError:  # counted, and its time too (what a caller waits)
                    failed += 1
                ours.append(time.perf_counter() - t0)
                torch.manual_seed(r)
                new = 48 * bars // 4
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(torch.tensor([prompt] * b), max_new_tokens=new,
                                   min_new_tokens=new, do_sample=True, top_k=40,
                                   pad_token_id=tok.pad_token_id)
                ref.append(time.perf_counter() - t0)
            o, h = float(np.median(ours)), float(np.median(ref))
            rows.append((b, bars, o, h))
            print(f"{b:6d} {bars:5d} {o:8.2f} {h:9.2f}  {load()}"
                  + (f"  ({failed} of {reps} failed: ComposerError)" if failed else ""),
                  flush=True)
    return {"composer": rows}


# ---------------------------------------------------------------------- session
def part_session(args) -> dict:
    minutes = args.session_min
    cmd = [sys.executable, str(HERE / "bench_session_rss.py"), "--minutes", str(minutes),
           "--every", "10", "--no-report"]
    print(f"\n## session RSS, accelerated virtual-board session of {minutes:g} min "
          f"(bench_session_rss.py); {load()}", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         timeout=args.session_timeout).stdout
    rows = [(float(m.group(1)), float(m.group(2))) for m in
            re.finditer(r"^\s+([\d.]+) simulated min\s+RSS\s+([\d.]+) MB", out, re.M)]
    print(out.strip())
    print(load())
    return {"session": rows}


# ---------------------------------------------------------------------- plot
def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    ax = axes[0, 0]
    if res.get("env"):
        n, v, z = np.array(res["env"]).T
        ax.loglog(n, v, "o-", label="VecClosedLoopEnv")
        ax.loglog(n, z, "s--", label="no-op env, DummyVecEnv")
        ax.set(xlabel="sessions stepped together", ylabel="steps / s", title="fast env")
        ax.legend(fontsize=8)
    ax = axes[0, 1]
    if res.get("estimator"):
        c, ms, ref = np.array(res["estimator"]).T
        ax.loglog(c, ms, "o-", label="StateEstimator")
        ax.loglog(c, ref, "s--", label="SciPy Welch alone")
        ax.set_xticks(c, [f"{x:.0f}" for x in c])
        ax.minorticks_off()
        ax.set(xlabel="EEG channels", ylabel="CPU ms per s of signal", title="estimator")
        ax.legend(fontsize=8)
    ax = axes[0, 2]
    if res.get("long"):
        m, cpu, rss = np.array(res["long"]).T
        ax.plot(m, cpu, "o-", label="CPU s")
        ax2 = ax.twinx()
        ax2.plot(m, rss, "s--", color="C1", label="RSS MB")
        ax2.set_ylim(0, max(rss) * 1.2)
        ax2.set_ylabel("RSS MB (dashed)")
        ax.set(xlabel="minutes of 16-ch signal", ylabel="CPU s", title="long recording")
    ax = axes[1, 0]
    if res.get("recording"):
        names = [r[0] for r in res["recording"]]
        ax.bar(names, [r[1] for r in res["recording"]])
        ax.set(ylabel="MB per hour", title="recording size (16 + 2 ch, 250 Hz)")
    ax = axes[1, 1]
    if res.get("composer"):
        rows = np.array(res["composer"], dtype=float)
        for bars in sorted(set(rows[:, 1])):
            sel = rows[rows[:, 1] == bars]
            ax.plot(sel[:, 0], sel[:, 2], "o-", label=f"compose, {bars:.0f} bars")
            ax.plot(sel[:, 0], sel[:, 3], "s--", label=f"HF generate, {bars:.0f} bars")
        ax.set(xlabel="candidates per batch", ylabel="s", title="composer latency")
        ax.legend(fontsize=7)
    ax = axes[1, 2]
    if res.get("session"):
        t, r = np.array(res["session"]).T
        ax.plot(t, r, "o-")
        ax.set(xlabel="simulated minutes", ylabel="RSS MB", title="accelerated session")
        ax.set_ylim(0, max(r) * 1.2)
    for a in axes.flat:
        if not a.has_data():
            a.set_axis_off()
    fig.suptitle(f"how cost grows ({load()} on {os.cpu_count()} cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


PARTS = {"env": part_env, "estimator": part_estimator, "recording": part_recording,
         "composer": part_composer, "session": part_session}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter signals")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-min", type=float, default=None,
                    help="minutes of the long recording measured (default 60, quick 8)")
    ap.add_argument("--record-min", type=float, default=None,
                    help="minutes written by the recording part (default 10, quick 2)")
    ap.add_argument("--session-min", type=float, default=None,
                    help="minutes of the accelerated session (default 120, quick 20)")
    ap.add_argument("--session-timeout", type=float, default=3600.0)
    ap.add_argument("--plot", default="", help="PNG path (default runs/bench_growth/growth.png)")
    args = ap.parse_args()
    q = args.quick
    args.long_min = args.long_min or (8.0 if q else 60.0)
    args.record_min = args.record_min or (2.0 if q else 10.0)
    args.session_min = args.session_min or (20.0 if q else 120.0)
    from st_agent.paths import runs_dir

    out = Path(args.plot) if args.plot else Path(runs_dir()) / "bench_growth" / "growth.png"
    print(f"bench_growth ({'quick' if q else 'full'}); {load()} on {os.cpu_count()} cores")
    res: dict = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.parts:
        res.update(PARTS[name](args))
        out.with_suffix(".json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    plot(res, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peak RSS of this process {peak:.0f} MB; {load()}")


if __name__ == "__main__":
    main()
