"""Audio synthesis speed: real-time factor of a 16-bar arranged piece.

Compares :class:`st_agent.music.render.AudioRenderer` (one FluidSynth instance, the
soundfont loaded once, all parts in one pass) with ``PrettyMIDI.fluidsynth``
(loads the soundfont on every call, renders each instrument separately), and
``PrettyMIDI.fluidsynth`` given a ready synthesizer.

Real-time factor = seconds of audio / seconds of wall time (higher is faster).

Usage::

    python benchmarks/bench_audio.py [--runs 7] [--energy 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import fluidsynth
import numpy as np
import pretty_midi

from st_agent.music.render import AudioRenderer, find_soundfont, measure_features, render_phrase
from st_agent.types import Knobs

PIECE = """X:1
T:Sixteen bars in G
M:4/4
L:1/8
Q:1/4=120
K:G
GABc dedB|d2 g2 f2 e2|dBGB A2 FA|G2 B2 d4|
e2 c2 A2 FA|G2 B2 d2 g2|fedc BAGF|G8|
GABc dedB|d2 g2 f2 e2|dBGB A2 FA|G2 B2 d4|
e2 c2 A2 FA|G2 B2 d2 g2|fedc BAGF|G8|]
"""


def _time(fn: Callable[[], np.ndarray], runs: int) -> tuple[float, int]:
    fn()  # warm-up
    times, n = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per method (median)")
    parser.add_argument("--energy", type=float, default=0.5, help="arrangement energy knob")
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else max(args.runs, 5)
    rate = 44100

    pm = render_phrase(PIECE, "G", Knobs(0.7, 0.64, args.energy))
    f = measure_features(pm)
    print(f"piece: 16 bars 4/4 at {f.bpm:.0f} BPM = {f.duration_sec:.1f} s audio, "
          f"{f.n_notes} notes in {len(pm.instruments)} parts "
          f"({', '.join(i.name for i in pm.instruments)}), energy {args.energy}")
    print(f"median of {runs} runs, {rate} Hz\n")
    print(f"{'method':58s} {'wall ms':>9s} {'x real time':>12s}")

    rows: list[tuple[str, Callable[[], np.ndarray]]] = []
    renderer = AudioRenderer(sample_rate=rate)
    rows.append(("AudioRenderer.synthesize (soundfont loaded once)",
                 lambda: renderer.synthesize(pm)))
    renderer_dry = AudioRenderer(sample_rate=rate, effects=False)
    rows.append(("AudioRenderer.synthesize, effects=False",
                 lambda: renderer_dry.synthesize(pm)))

    def load_each_call() -> np.ndarray:
        with AudioRenderer(sample_rate=rate) as r:
            return r.synthesize(pm)

    rows.append(("AudioRenderer created per call (loads soundfont)", load_each_call))
    rows.append(("PrettyMIDI.fluidsynth (loads soundfont per call)",
                 lambda: pm.fluidsynth(fs=rate)))
    synth = fluidsynth.Synth(samplerate=float(rate))
    sfid = synth.sfload(str(find_soundfont()))
    rows.append(("PrettyMIDI.fluidsynth(synthesizer=ready Synth)",
                 lambda: pm.fluidsynth(synthesizer=synth, sfid=sfid)))
    melody_only = pretty_midi.PrettyMIDI()
    melody_only.instruments = [pm.instruments[0]]
    rows.append(("AudioRenderer, melody track only",
                 lambda: renderer.synthesize(melody_only)))

    for name, fn in rows:
        wall, n = _time(fn, runs)
        print(f"{name:58s} {wall * 1e3:9.1f} {n / rate / wall:12.1f}")
    renderer.close()
    renderer_dry.close()
    synth.delete()


if __name__ == "__main__":
    main()
