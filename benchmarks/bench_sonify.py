"""Figures of issue 19: sonification, transitions and brain voices.

Prints (and writes to ``<runs_dir>/bench_sonify/figures.txt``):

* **Sonification**: a synthetic series of 320 rows with known trends -- ``rise``
  (a ramp), ``wave`` (two cosine periods) and ``bump`` (a Gaussian bump in the
  middle), each with Gaussian noise, mutually uncorrelated -- drives valence,
  tempo and energy over 16 phrases;
  per column the Spearman correlation with every measured feature of the
  music (BPM, density, register, mode, loudness, centroid, onset rate), the
  heard feature with a bootstrap 95 % CI over phrases.
* **Audio features**: extraction time per phrase (p50/p95, ms) and per second
  of audio.
* **Transition**: for calm -> focus and focus -> energize (3 minutes each), the
  largest step between consecutive phrases in audio-feature space, planned
  path vs straight jump (same candidates and seeds), the predicted step and the
  path length.
* **Brain voices**: on each real EDF file of ``../shared/data/eeg``, clashes per
  bar of the clash-constrained voices vs the independent voices (paired per
  phrase, bootstrap 95 % CI of the difference) and each voice's Spearman
  correlation between its region's activity and its density / loudness.

Usage::

    python benchmarks/bench_sonify.py [--quick] [--only sonify transition brain]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from st_agent.music.piece_config import BrainVoicesConfig, SonifyConfig, TransitionConfig
from st_agent.paths import runs_dir

_REPO = Path(__file__).resolve().parents[1]
EEG_DIR = _REPO.parent / "shared" / "data" / "eeg"
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def _series_csv(path: Path, n: int = 320, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    # three shapes whose rank correlations with each other are about 0
    rise = t + 0.08 * rng.normal(size=n)
    wave = np.cos(4 * np.pi * t) + 0.15 * rng.normal(size=n)
    bump = np.exp(-(((t - 0.5) / 0.15) ** 2)) + 0.08 * rng.normal(size=n)
    rows = ["t,rise,wave,bump"] + [f"{i},{a:.5f},{b:.5f},{c:.5f}"
                                   for i, (a, b, c) in enumerate(zip(rise, wave, bump,
                                                                     strict=True))]
    path.write_text("\n".join(rows) + "\n")
    return path


def _boot_rho(x: np.ndarray, y: np.ndarray, seed: int, n: int = 2000) -> tuple[float, float]:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            vals.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def bench_sonify(out: Path, phrases: int) -> tuple[list[float], list[float], list[float]]:
    import json

    from st_agent.music.sonify import HEARD_FEATURE, MEASURED, sonify

    data = _series_csv(out / "series.csv")
    t0 = time.perf_counter()
    res = sonify(SonifyConfig(data=data, out=out / "sonify", columns="rise,wave,bump",
                              map="valence=rise,tempo=wave,energy=bump", phrases=phrases))
    wall = time.perf_counter() - t0
    rows = json.loads((res.folder / "phrases.json").read_text())
    say(f"== sonification: {len(rows)} phrases, {res.music_sec:.0f} s of music "
        f"({wall:.0f} s wall)")
    names = list(MEASURED)
    say(f"{'column -> knob':<18}" + "".join(f"{n:>14}" for n in names))
    knob_of = {row["column"]: row["knob"] for row in res.legend if row["column"]}
    for col, rho in res.spearman.items():
        cells = "".join(f"{'n/a' if rho[n] is None else f'{rho[n]:+.2f}':>14}" for n in names)
        say(f"{col + ' -> ' + knob_of[col]:<18}{cells}")
    cols = ("rise", "wave", "bump")
    series = np.array([[r["series"][c] for c in cols] for r in rows])
    from scipy.stats import spearmanr

    design = spearmanr(series).statistic
    pairs = ((0, 1), (0, 2), (1, 2))
    say("  the columns' own rank correlations at phrase rate: "
        + ", ".join(f"{cols[i]}/{cols[j]} {design[i, j]:+.2f}" for i, j in pairs))
    meas = {name: np.array([_value(r, src, attr) for r in rows])
            for name, (src, attr, _) in MEASURED.items()}
    for j, col in enumerate(cols):
        heard = HEARD_FEATURE[knob_of[col]]
        lo, hi = _boot_rho(series[:, j], meas[heard], seed=j)
        r = res.spearman[col][heard]
        say(f"  {col} -> {knob_of[col]} heard as {heard}: Spearman "
            f"{'n/a' if r is None else f'{r:+.2f}'} (bootstrap 95 % CI over phrases "
            f"{lo:+.2f} .. {hi:+.2f})")
    return ([r["audio_extract_sec"] for r in rows], [r["audio"]["duration_sec"] for r in rows],
            _cpu_extract_sec(res.wav_path, rows))


def _cpu_extract_sec(wav: Path, rows: list[dict]) -> list[float]:
    """CPU seconds (best of 3) of measure_audio on each phrase of the written WAV."""
    from scipy.io import wavfile

    from st_agent.music.audio_features import measure_audio

    rate, pcm = wavfile.read(wav)
    audio = pcm.astype(np.float64) / 32768.0
    out = []
    for r in rows:
        a = round(r["start_sec"] * rate)
        seg = audio[a:a + round(r["audio"]["duration_sec"] * rate)]
        best = np.inf
        for _ in range(3):
            t0 = time.process_time()
            measure_audio(seg, rate)
            best = min(best, time.process_time() - t0)
        out.append(best)
    return out


def _value(row: dict, src: str, attr: str) -> float:
    v = row[src][attr]
    return float(v == "major") if attr == "mode" else float(v)


def bench_transition(out: Path, minutes: float, pairs: list[tuple[str, str]]) -> None:
    from st_agent.contract import TARGET_PRESETS
    from st_agent.music.piece_config import parse_knob_spec
    from st_agent.music.transition import transition
    from st_agent.policies.baselines import FIXED_KNOBS
    from st_agent.types import Knobs

    say(f"== transition ({minutes:g} min each): largest step between consecutive phrases in "
        "audio-feature units (2 LU / quarter octave)")
    say(f"{'from -> to':<20}{'phrases':>8}{'path':>7}{'predicted':>10}{'planned':>9}"
        f"{'direct':>8}{'ratio':>7}")
    for a, b in pairs:
        ka, kb = (Knobs(*FIXED_KNOBS[parse_knob_spec("x", s, tuple(TARGET_PRESETS))])
                  for s in (a, b))
        t0 = time.perf_counter()
        res = transition(TransitionConfig(from_=a, to=b, minutes=minutes,
                                          out=out / f"transition-{a}-{b}"), ka, kb)
        s = res.summary
        steps = np.asarray(s["steps_planned"][1:])
        say(f"{a + ' -> ' + b:<20}{res.n_phrases:>8}{s['path_length']:>7.2f}"
            f"{res.max_step_predicted:>10.2f}{res.max_step_planned:>9.2f}"
            f"{res.max_step_direct:>8.2f}{res.max_step_direct / res.max_step_planned:>7.1f}"
            f"   (planned steps p50 {np.median(steps):.2f}; {time.perf_counter() - t0:.0f} s)")


def bench_brain(out: Path, phrases: int) -> None:
    import json

    from st_agent.live.brain_voices import brain_voices

    files = sorted(EEG_DIR.glob("*.edf")) if EEG_DIR.is_dir() else []
    if not files:
        say(f"== brain voices: no EDF files in {EEG_DIR}")
        return
    say(f"== brain voices ({phrases} phrases each, 4 candidates per voice, alpha band)")
    for f in files:
        t0 = time.perf_counter()
        res = brain_voices(BrainVoicesConfig(recording=f, out=out / f"brain-{f.stem}",
                                             phrases=phrases))
        s = res.summary
        ci = s["clashes_difference_ci95"]
        say(f"{f.name}: voices {', '.join(s['voices'])} ({time.perf_counter() - t0:.0f} s)")
        say(f"  clashes per bar {s['clashes_per_bar']:.2f} vs independent voices "
            f"{s['clashes_per_bar_independent']:.2f}; difference 95 % CI "
            f"{ci[0]:+.2f} .. {ci[1]:+.2f}")
        for name, r in s["tracking"].items():
            d, ld = r["density"], r["loudness"]
            say(f"  {name:<16} Spearman(activity, density) "
                f"{'n/a' if d is None else f'{d:+.2f}'}, (activity, loudness) "
                f"{'n/a' if ld is None else f'{ld:+.2f}'}")
        rows = json.loads((res.folder / "phrases.json").read_text())
        searched = sum(r["clashes_search"] for r in rows)
        indep = sum(r["clashes_independent"] for r in rows)
        say(f"  total dissonant simultaneities {searched} vs {indep}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer phrases, 1-minute transitions")
    p.add_argument("--only", nargs="*", default=["sonify", "transition", "brain"])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    out = runs_dir() / "bench_sonify"
    out.mkdir(parents=True, exist_ok=True)
    if "sonify" in args.only:
        ext, dur, cpu = bench_sonify(out, 8 if args.quick else 16)
        ext_ms = 1000 * np.asarray(ext[1:])  # the first phrase also pays the imports
        cpu_ms = 1000 * np.asarray(cpu)
        say(f"== audio-feature extraction per phrase (44.1 kHz mono, phrases of "
            f"{min(dur):.1f}-{max(dur):.1f} s): CPU time p50 {np.median(cpu_ms):.0f} ms, p95 "
            f"{np.percentile(cpu_ms, 95):.0f} ms ({1000 * sum(cpu) / sum(dur):.1f} ms per second "
            f"of audio); wall clock inside the run (shared CPU) p50 {np.median(ext_ms):.0f} ms, "
            f"p95 {np.percentile(ext_ms, 95):.0f} ms; first phrase {1000 * ext[0]:.0f} ms "
            "(imports)")
    if "transition" in args.only:
        bench_transition(out, 1.0 if args.quick else 3.0,
                         [("calm", "focus")] if args.quick else
                         [("calm", "focus"), ("focus", "energize")])
    if "brain" in args.only:
        bench_brain(out, 6 if args.quick else 12)
    (out / "figures.txt").write_text("\n".join(LINES) + "\n")
    print(f"written to {out / 'figures.txt'}")


if __name__ == "__main__":
    main()
