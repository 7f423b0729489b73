"""Figures of issue 19's remainder: target changes inside a session, hearing the audio,
the flux noise floor.

Prints (and writes to ``<runs_dir>/bench_voices_v2/figures.txt``):

* **Transition inside a session**: accelerated virtual-listener sessions with
  ``--target calm --target-schedule focus@20`` (policy ``fixed``, so the knobs
  before the change are the same in every variant), per seed: the largest
  step between consecutive phrases of ``session.wav`` in audio-feature units,
  from the phrase playing at the change to the end of the path, for

  - ``planned``: the planned path (``--transition-max-step 3``, 2 candidates);
  - ``rate-limited``: the straight line at the rate limit (``max_delta`` 0.25;
    a huge step bound, 1 candidate: what the knobs do without the planner);
  - ``jump``: one phrase from the old knobs to the new (``max_delta`` 1).

  Paired differences over seeds with a bootstrap 95 % CI; the number of
  phrases each took; the audio-feature extraction time per phrase (with the
  noise-floor measurement).
* **Seed variation**: distance between phrases composed at the same knobs
  (the presets' knobs; 4 seeds each), which the plan's half of the bound
  leaves room for.
* **Quantisation shift**: how much 16-bit requantisation (TPDF dither) moves
  the flux and centroid coordinates of a rendered phrase at 0, -20 and -40 dB.
* **Audio view of the listener**: the fit of the loudness and density entries
  to LUFS and onset rate on 24 random-knob phrases
  (:data:`st_agent.listener.features.AUDIO_VIEW`).

Usage::

    python benchmarks/bench_voices_v2.py [--seeds 4] [--only session seeds quant fit]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from st_agent.paths import runs_dir

_VARIANTS = {"planned": {"transition_max_step": 3.0, "transition_candidates": 2},
             "rate-limited": {"transition_max_step": 1e6, "transition_candidates": 1},
             "jump": {"transition_max_step": 1e6, "transition_candidates": 1,
                      "max_delta": 1.0}}


def _ci(d: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(d, (n, d.size)).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _session(variant: str, seed: int, root: Path) -> dict:
    import json

    from st_agent.live.runtime import LiveSession
    from st_agent.live.session import SessionConfig
    from st_agent.policies.controllers import make_controller

    cfg = SessionConfig(board="virtual", accelerated=True, minutes=2.0, calibration_sec=5,
                        record=root, name=f"{variant}-{seed}", target="calm",
                        target_schedule="focus@20", policy="fixed", seed=seed,
                        start_knobs=(0.6, 0.1, 0.1), **_VARIANTS[variant])
    ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target)
    res = LiveSession(cfg, ctrl, name).run()
    heard = json.loads((res.folder / "phrase_audio.json").read_text())
    (change,) = heard["target_changes"]
    return {"largest": change["largest_step"], "phrases": len(change["phrases"]),
            "arrived": change["arrived"], "ms": heard["ms_per_phrase"],
            "complete": change["complete"],
            "predicted": change["predicted_largest"]}


def bench_session(seeds: int, out: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench_voices_v2_"))
    rows = {v: [_session(v, s, root) for s in range(seeds)] for v in _VARIANTS}
    out.append("Transition inside a session (calm -> focus at 20 s; session.wav, "
               "audio-feature units)")
    out.append(f"{'seed':>4}  " + "  ".join(f"{v:>14}" for v in _VARIANTS))
    for s in range(seeds):
        out.append(f"{s:>4}  " + "  ".join(
            f"{rows[v][s]['largest']:6.2f} ({rows[v][s]['phrases']} ph)" for v in _VARIANTS))
    big = {v: np.array([r["largest"] for r in rows[v]]) for v in _VARIANTS}
    for v in _VARIANTS:
        arrived = sum(r["arrived"] for r in rows[v])
        done = sum(r["complete"] for r in rows[v])
        out.append(f"  {v:>12}: largest step mean {big[v].mean():.2f} (max {big[v].max():.2f}); "
                   f"path complete {done}/{seeds}, arrived {arrived}/{seeds}")
    pred = np.mean([r["predicted"] for r in rows["planned"]])
    out.append(f"  planned: predicted largest step {pred:.2f} (the plan uses half the bound of 3)")
    for other in ("rate-limited", "jump"):
        d = big["planned"] - big[other]
        lo, hi = _ci(d)
        out.append(f"  planned - {other}: {d.mean():+.2f} [95 % CI {lo:+.2f}, {hi:+.2f}] "
                   f"(paired over {seeds} seeds)")
    ms = [r["ms"] for v in _VARIANTS for r in rows[v]]
    out.append(f"  audio-feature extraction: {np.mean(ms):.0f} ms per phrase of session.wav "
               "(measure_audio alone; the noise floor adds one more measurement)")


def _player():
    import torch

    from st_agent.music.composer import Composer
    from st_agent.music.piece import PhrasePlayer
    from st_agent.music.render import AudioRenderer

    torch.set_num_threads(1)
    synth = AudioRenderer()
    return PhrasePlayer(Composer(), synth), synth


def bench_seeds(out: list[str]) -> None:
    from st_agent.music.audio_features import feature_coordinates
    from st_agent.policies.baselines import FIXED_KNOBS
    from st_agent.types import Knobs

    player, synth = _player()
    out.append("Seed variation: distance between phrases at the same knobs (4 seeds)")
    for name, k in FIXED_KNOBS.items():
        z = np.array([feature_coordinates(player.play(Knobs(*k), seed=s).audio)
                      for s in range(4)])
        d = [np.linalg.norm(z[i] - z[j]) for i in range(4) for j in range(i)]
        out.append(f"  {name:>9} {k}: mean {np.mean(d):.2f}, max {np.max(d):.2f}")
    synth.close()


def bench_quant(out: list[str]) -> None:
    from st_agent.music.audio_features import quantisation_shift
    from st_agent.policies.baselines import FIXED_KNOBS
    from st_agent.types import Knobs

    player, synth = _player()
    out.append("Quantisation shift (16-bit, TPDF dither) of a rendered phrase, coordinate "
               "units [centroid, flux]")
    for name in ("calm", "focus"):
        r = player.play(Knobs(*FIXED_KNOBS[name]), seed=0)
        x = r.samples.astype(np.float64)
        x = 0.89 * x / np.abs(x).max()
        for db in (0, -20, -40):
            sh = quantisation_shift(x * 10 ** (db / 20), synth.sample_rate,
                                    np.random.default_rng(0))
            out.append(f"  {name:>6} at {db:>3} dB: centroid {sh[1]:.3f}, flux {sh[2]:.3f}, "
                       f"onsets {sh[3]:.3f}")
    synth.close()


def bench_fit(out: list[str]) -> None:
    from st_agent.types import Knobs

    player, synth = _player()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(24):
        r = player.play(Knobs(*rng.uniform(0.05, 0.95, 3)), seed=i)
        rows.append((r.midi.mean_velocity, r.midi.notes_per_sec, r.audio.loudness_lufs,
                     r.audio.onset_rate_hz, r.audio.spectral_centroid_hz, r.midi.mean_pitch))
    synth.close()
    vel, nps, lufs, onset, centroid, pitch = np.array(rows).T
    loud = (vel - 73) / 38
    dens = np.log2(np.maximum(nps, 0.25) / 5) / 1.5
    a, b = np.polyfit(lufs, loud, 1)
    c, d = np.polyfit(np.log2(np.maximum(onset, 0.25)), dens, 1)
    out.append("Audio view of the listener (24 phrases at random knobs)")
    out.append(f"  loudness entry = (LUFS - {-b / a:.1f}) / {1 / a:.2f}  "
               f"r = {np.corrcoef(lufs, loud)[0, 1]:.2f}")
    out.append(f"  density entry = log2(onsets / {2 ** (-d / c):.2f} Hz) / {1 / c:.2f}  "
               f"r = {np.corrcoef(np.log2(np.maximum(onset, 0.25)), dens)[0, 1]:.2f}")
    out.append(f"  centroid vs melody pitch: r = {np.corrcoef(np.log2(centroid), pitch)[0, 1]:.2f}"
               " (why register stays from the MIDI)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--only", nargs="*", default=["session", "seeds", "quant", "fit"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: list[str] = []
    t0 = time.perf_counter()
    if "session" in args.only:
        bench_session(args.seeds, out)
    if "seeds" in args.only:
        bench_seeds(out)
    if "quant" in args.only:
        bench_quant(out)
    if "fit" in args.only:
        bench_fit(out)
    out.append(f"({time.perf_counter() - t0:.0f} s)")
    text = "\n".join(out)
    print(text)
    folder = runs_dir() / "bench_voices_v2"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures.txt").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
