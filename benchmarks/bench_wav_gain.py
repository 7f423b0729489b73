"""The fixed gain of the streamed session WAV: the renderer's headroom over the knob grid.

A session WAV streamed to disk cannot be normalised after the fact, so
``st_agent.live.audio.SESSION_WAV_GAIN`` is a constant. This script composes and
arranges phrases on a grid of knobs (valence, tempo, energy each in {0, 0.5, 1},
``--seeds`` seeds each), renders them as the session does (``AudioRenderer``,
FluidSynth gain 0.2, ``TAIL_SEC`` of release) and prints the distribution of
their peaks and RMS, the gain that puts the loudest phrase at 0.89 of full scale
(-1 dBFS, the peak of the old normalised WAV) and, at the shipped gain, the
share of samples that would clip.

Run: ``nice python benchmarks/bench_wav_gain.py [--seeds 2]``
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from st_agent.live.audio import SESSION_WAV_GAIN, TAIL_SEC
from st_agent.music.composer import Composer, ComposerError
from st_agent.music.render import AudioRenderer, render_phrase
from st_agent.types import Knobs

PEAK = 0.89


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    composer = Composer()
    peaks, rms, clipped, total = [], [], 0, 0
    grid = (0.0, 0.5, 1.0)
    with AudioRenderer(release_sec=TAIL_SEC) as synth:
        for (v, t, e), seed in itertools.product(itertools.product(grid, grid, grid),
                                                 range(args.seeds)):
            knobs = Knobs(v, t, e)
            try:
                phrase = composer.compose(knobs, seed=seed)
            except ComposerError:
                continue
            pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter)
            audio = synth.synthesize(pm)
            peaks.append(float(np.max(np.abs(audio))))
            rms.append(float(np.sqrt(np.mean(audio ** 2))))
            clipped += int(np.count_nonzero(np.abs(audio * SESSION_WAV_GAIN) > 1.0))
            total += audio.size
    p = np.asarray(peaks)
    print(f"{p.size} phrases rendered (27 knob settings x {args.seeds} seeds)")
    print(f"renderer peak: max {p.max():.4f}, p95 {np.percentile(p, 95):.4f}, "
          f"median {np.median(p):.4f} of full scale; RMS median {np.median(rms):.4f}")
    print(f"gain for the loudest phrase at {PEAK}: {PEAK / p.max():.2f}; at the p95 phrase: "
          f"{PEAK / np.percentile(p, 95):.2f}")
    print(f"shipped SESSION_WAV_GAIN = {SESSION_WAV_GAIN:g}: loudest phrase at "
          f"{p.max() * SESSION_WAV_GAIN:.2f}, median phrase at "
          f"{np.median(p) * SESSION_WAV_GAIN:.2f}; clipped samples {clipped} of {total} "
          f"({100 * clipped / max(total, 1):.4f} %)")


if __name__ == "__main__":
    main()
