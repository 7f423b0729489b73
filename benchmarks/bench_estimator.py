"""State-estimator figures: decision latency and offline throughput.

Latency: time from the arrival of the chunk that completes a window to the
EmotionState (``StateEstimator.push``), p50/p95 over many hops, for 4, 16 and
64 EEG channels at 250 Hz with 2 s windows (target: p95 <= 10 ms at 16 ch), and
for 16 EEG channels plus ECG and EDA (NeuroKit2 beat search, HRV, ECG-derived
breathing and EDA tonic level at their own 1 s cadence, at most one per hop; timed
after NeuroKit2's import has finished, as in a session after its rest calibration).

Throughput: seconds to process 1 h of 16-channel 250 Hz EEG (target <= 10 s),
beside BrainFlow's ``get_avg_band_powers`` and plain ``scipy.signal.welch`` on
the same windows (2 s, hop 0.5 s).

The machine's load average (1 min) and CPU count are printed before and after the
latency table: on a shared machine the wall-clock figures include waits for a core,
the CPU-time column does not.

Run: ``python benchmarks/bench_estimator.py [--minutes 60] [--no-throughput]``
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
from scipy import signal

from st_agent.biometrics.estimator import _LABELS, EstimatorConfig, StateEstimator
from st_agent.biometrics.sources import load_brainflow
from st_agent.types import SignalChunk

SFREQ = 250.0


def eeg(n_ch: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Alpha + beta + pink-ish noise, volts, shape (n_ch, n_times)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.normal(0, 3, (n_ch, n)), axis=-1)
    x = 10 * np.sin(2 * np.pi * 10 * t) + 3 * np.sin(2 * np.pi * 20 * t) + noise
    return x * 1e-6


#: A 10-20 montage, in the order channels are taken (4: Fp1 Fp2 O1 O2; 16: a common cap).
TEN_TWENTY = ("Fp1", "Fp2", "O1", "O2", "F3", "F4", "F7", "F8", "Fz", "C3", "C4", "Cz", "P3",
              "P4", "Pz", "T7", "T8", "P7", "P8")


def names(n_ch: int) -> tuple[str, ...]:
    taken = {n.upper() for n in TEN_TWENTY}
    rest = sorted(_LABELS - taken - {"A1", "A2", "M1", "M2"})
    return (*TEN_TWENTY, *rest)[:n_ch]


def body(seconds: float, seed: int = 2) -> np.ndarray:
    """ECG (volts, 70 bpm with breathing modulation) and EDA (siemens), shape (2, n_times)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SFREQ)) / SFREQ
    beat_phase = np.cumsum((70 + 3 * np.sin(2 * np.pi * 0.25 * t)) / 60 / SFREQ) % 1.0
    ecg = 1e-3 * np.exp(-0.5 * ((beat_phase - 0.5) * 60 / 70 / 0.01) ** 2)
    ecg += rng.normal(0, 2e-5, t.size)
    eda = (4.0 + 0.2 * np.sin(2 * np.pi * 0.02 * t)) * 1e-6
    return np.vstack([ecg, eda])


def latency(n_ch: int, reference: bool, n_hops: int = 300, body_channels: bool = False,
            ) -> tuple[float, float, float]:
    """Wall-clock p50, p95 and this thread's CPU-time p95 of ``push`` per hop, ms."""
    cfg = EstimatorConfig(calibration_sec=2.0, reference_model=reference)
    hop = round(cfg.hop_sec * SFREQ)
    data = eeg(n_ch, 40 + n_hops * cfg.hop_sec)
    ch = names(n_ch)
    types = ("eeg",) * n_ch
    if body_channels:
        # steady state: a session's rest calibration (60 s) outlasts NeuroKit2's import
        # (seconds, in a background thread that would share the GIL with the timed hops)
        from st_agent.biometrics.cardiac import neurokit

        neurokit(block=True)
        data = np.vstack([data, body(data.shape[1] / SFREQ)])
        ch, types = (*ch, "ECG", "EDA"), (*types, "ecg", "eda")
    times, cpu = [], []
    with StateEstimator(cfg) as est:
        for i in range(0, data.shape[1] - hop + 1, hop):
            chunk = SignalChunk(data[:, i:i + hop], SFREQ, ch, types, first_sample=i,
                                t0_sec=i / SFREQ)
            c0, t0 = time.thread_time(), time.perf_counter()
            out = est.push(chunk)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if out and i > 40 * SFREQ:  # after warm-up, calibration and the first HRV window
                times.append(dt * 1e3)
                cpu.append(dc * 1e3)
    return (float(np.percentile(times, 50)), float(np.percentile(times, 95)),
            float(np.percentile(cpu, 95)))


def throughput(minutes: float) -> None:
    n_ch = 16
    data = eeg(n_ch, minutes * 60, seed=1)
    ch = names(n_ch)
    n_win, hop = 500, 125
    n_windows = (data.shape[1] - n_win) // hop + 1
    print(f"\nOffline: {minutes:g} min of {n_ch} ch @ 250 Hz ({n_windows} windows of 2 s, "
          "hop 0.5 s)")
    for reference in (False, True):
        cfg = EstimatorConfig(calibration_sec=60.0, reference_model=reference)
        t0 = time.perf_counter()
        with StateEstimator(cfg) as est:
            step = round(60 * SFREQ)
            n_out = 0
            for i in range(0, data.shape[1], step):
                n_out += len(est.push(SignalChunk(data[:, i:i + step], SFREQ, ch,
                                                  ("eeg",) * n_ch, first_sample=i)))
        dt = time.perf_counter() - t0
        label = "StateEstimator (all features, gating, state)" + (
            " + BrainFlow reference models" if reference else "")
        print(f"  {label:<70s} {dt:7.2f} s  ({n_out} estimates)")

    load_brainflow()
    from brainflow.data_filter import DataFilter

    uv = np.ascontiguousarray(data * 1e6)
    t0 = time.perf_counter()
    for w in range(n_windows):
        DataFilter.get_avg_band_powers(np.ascontiguousarray(uv[:, w * hop:w * hop + n_win]),
                                       list(range(n_ch)), 250, True)
    print(f"  {'BrainFlow get_avg_band_powers (per window, filters on)':<70s} "
          f"{time.perf_counter() - t0:7.2f} s")

    t0 = time.perf_counter()
    bands = [(1, 4), (4, 8), (8, 13), (13, 30), (30, 45)]
    for start in range(0, n_windows, 256):
        idx = (np.arange(start, min(start + 256, n_windows))[:, None] * hop
               + np.arange(n_win)[None, :])
        f, p = signal.welch(uv[:, idx], fs=SFREQ, nperseg=250, axis=-1)  # (C, W, F)
        _ = [p[..., (f >= lo) & (f < hi)].sum(-1) for lo, hi in bands]
    print(f"  {'plain scipy.signal.welch + band sums (batched)':<70s} "
          f"{time.perf_counter() - t0:7.2f} s")
    t0 = time.perf_counter()
    for w in range(n_windows):
        f, p = signal.welch(uv[:, w * hop:w * hop + n_win], fs=SFREQ, nperseg=250, axis=-1)
        _ = [p[..., (f >= lo) & (f < hi)].sum(-1) for lo, hi in bands]
    print(f"  {'plain scipy.signal.welch + band sums (per window)':<70s} "
          f"{time.perf_counter() - t0:7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="offline data length")
    parser.add_argument("--hops", type=int, default=300, help="hops timed per latency case")
    parser.add_argument("--no-throughput", action="store_true", help="latency table only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # keep the table readable
    print("Decision latency, window end -> EmotionState (250 Hz, 2 s window, hop 0.5 s)")
    print("  (wall clock; 'cpu p95' is this thread's CPU time, which excludes the waits of a "
          "shared machine)")
    print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min) "
          "at the start")
    print(f"  {'channels':>10s} {'reference':>10s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'cpu p95':>8s}")
    for reference in (False, True):
        for n_ch in (4, 16, 64):
            p50, p95, c95 = latency(n_ch, reference, args.hops)
            print(f"  {n_ch:>10d} {('on' if reference else 'off'):>10s} {p50:8.2f} {p95:8.2f} "
                  f"{c95:8.2f}")
    for reference in (False, True):
        p50, p95, c95 = latency(16, reference, args.hops, body_channels=True)
        print(f"  {'16+ECG+EDA':>10s} {('on' if reference else 'off'):>10s} {p50:8.2f} "
              f"{p95:8.2f} {c95:8.2f}")
    print(f"  machine: load average {os.getloadavg()[0]:.1f} (1 min) at the end")
    if not args.no_throughput:
        throughput(args.minutes)


if __name__ == "__main__":
    main()
