"""The streaming gain of a jam's mix: the renderer's headroom by number of performers.

A jam's ``session.wav`` and stems are streamed (``st_agent.live.stems.PartStreams``) at
one fixed gain, ``jam_wav_gain(n)`` (``JAM_WAV_GAIN * sqrt(8 / n)``), and raised at the
end so that the mix peaks at -1 dBFS. The gain must leave headroom (a sample beyond
full scale while streaming is clipped for good) without streaming so quietly that the
final raise amplifies the 16-bit rounding much. For 2, 3, 4 and 8 performers this
script composes jam phrases with the real ensemble (each performer's knobs drawn around
each setting of the grid valence, tempo, energy in {0, 0.5, 1}), streams them as one
piece at gain 1 and prints the mix's peak, the gain that would put it at 0.89 of full
scale, and at the shipped gain the loudest streamed sample and the final raise.

Run: ``nice python benchmarks/bench_jam_wav.py [--settings 27] [--performers 2 3 4 8]``
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

from st_agent.live.common import Playing
from st_agent.live.stems import JAM_WAV_GAIN, PartStreams, jam_wav_gain
from st_agent.types import Knobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", type=int, default=27, help="grid settings used (<= 27)")
    ap.add_argument("--performers", type=int, nargs="+", default=[2, 3, 4, 8])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from st_agent.music.ensemble import Ensemble

    torch.set_num_threads(1)
    ensemble = Ensemble()
    grid = list(itertools.product((0.0, 0.5, 1.0), repeat=3))[:args.settings]
    rng = np.random.default_rng(args.seed)
    print(f"JAM_WAV_GAIN = {JAM_WAV_GAIN}; {len(grid)} grid settings per size")
    print("performers | phrases | peak at gain 1 | gain for 0.89 | jam_wav_gain | peak at it "
          "| final raise")
    for n in args.performers:
        phrases, t, context = [], 0.0, None
        for i, setting in enumerate(grid):
            knobs = np.clip(np.asarray(setting) + rng.uniform(-0.2, 0.2, (n, 3)), 0, 1)
            phrase = ensemble.compose([Knobs(*k) for k in knobs], context=context,
                                      seed=args.seed + i)
            pm = ensemble.render(phrase)
            m = ensemble.measure(pm, phrase.n_voices, phrase.bars, phrase.meter)
            phrases.append(Playing(phrase.voices[0], m.mix, pm, t))
            t, context = phrases[-1].end_sec, phrase
        peaks = {}
        shipped = jam_wav_gain(n)
        for gain in (1.0, shipped):
            with tempfile.TemporaryDirectory() as d:
                out = PartStreams(0.0, n_performers=n, mix=True, stems=False, gain=gain)
                out.open(Path(d))
                for i, p in enumerate(phrases):
                    out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
                out.close("time up")
                peaks[gain] = (out.streamed_peak or 0.0, out.boost)
        top = peaks[1.0][0]
        print(f"{n:10d} | {len(phrases):7d} | {top:14.4f} | {0.89 / top:13.2f} | "
              f"{shipped:12.2f} | {peaks[shipped][0]:10.4f} | {peaks[shipped][1]:11.2f}")


if __name__ == "__main__":
    main()
