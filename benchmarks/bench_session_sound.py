"""Session sound in live sessions: loudness of each phrase in a real session.wav, before/after.

Runs the same accelerated virtual session (same seed, listener, controller and
so the same phrases and knobs) twice, with ``--sound plain`` (before: programs
0/32/4, mono, one gain) and ``--sound session`` (after: instruments by the
knobs, stereo, FluidSynth reverb and chorus, each phrase matched to
``session_lufs(energy)``), and measures from each ``session.wav``:

* each phrase's integrated loudness (pyloudnorm, BS.1770; the phrase's segment
  of the file is from its ``phrase_start`` to the next one's, as the report cuts
  it), and the largest and mean step in LU between consecutive phrases, beside
  the planned step ``8 LU x |energy step|`` of ``session_lufs``;
* the file: length against the session's music seconds (+ the fade), channels,
  integrated loudness, peak in dBFS;
* the wall time of rendering each phrase to audio (the session-wav worker,
  ``SessionWavOutput.render_ms``; the session sound's includes the matching),
  p50/p95, and the session's wall time; then the same phrases rendered again in
  one thread, plain and session sound interleaved, best of ``--repeats`` (the
  paired render-time ratio); and the machine's load (``uptime``): the other
  agents' jobs share these cores, so times are loaded figures.

Run: ``nice python benchmarks/bench_session_sound.py [--minutes 3] [--policy random]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.live.runtime import LiveSession
from st_agent.live.session import SessionConfig
from st_agent.music.loudness import loudness_lufs
from st_agent.policies.controllers import make_controller

PLANNED_LU_PER_ENERGY = 8.0  # session_lufs: -26 LUFS at energy 0 to -18 at energy 1


def _run(sound: str, args: argparse.Namespace, root: Path) -> dict:
    cfg = SessionConfig(board="virtual", minutes=args.minutes, calibration_sec=args.calibration,
                        accelerated=True, record=root, name=f"{sound}", policy=args.policy,
                        seed=args.seed, report=False, sound=sound)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    session = LiveSession(cfg, controller, name)
    wav_out = session.outputs.outputs[0]
    tic = time.perf_counter()
    res = session.run()
    wall = time.perf_counter() - tic
    rate, x = wavfile.read(res.wav_path)
    audio = x.astype(np.float64) / 32767.0
    starts = sorted((e["payload"] for e in read_session(res.folder).events
                     if e["kind"] == "phrase_start"), key=lambda p: p["index"])
    t0 = starts[0]["t_session"]
    bounds = [*(round((p["t_session"] - t0) * rate) for p in starts), audio.shape[0]]
    lufs = [loudness_lufs(audio[a:b], rate) if b - a >= 0.4 * rate else math.nan
            for a, b in itertools.pairwise(bounds)]
    energy = np.array([p["knobs"][2] for p in starts])
    return {"sound": sound, "res": res, "wall": wall, "rate": rate, "audio": audio,
            "lufs": np.array(lufs), "energy": energy,
            "programs": [tuple(p["programs"].values()) for p in starts],
            "render_ms": np.array(wav_out.render_ms)}


def _report(r: dict) -> None:
    a, rate, lufs = r["audio"], r["rate"], r["lufs"]
    channels = 1 if a.ndim == 1 else a.shape[1]
    music = r["res"].summary["music_sec"]
    ok = np.isfinite(lufs)
    steps = np.abs(np.diff(lufs))
    planned = PLANNED_LU_PER_ENERGY * np.abs(np.diff(r["energy"]))
    excess = steps - planned
    last = lufs[-1] if np.isfinite(lufs[-1]) else math.nan
    print(f"\n== --sound {r['sound']}: {lufs.size} phrases, session wall {r['wall']:.1f} s")
    print(f"  session.wav: {a.shape[0] / rate:.2f} s (the session's music: {music:.2f} s), "
          f"{channels} channel(s), {rate} Hz, integrated {loudness_lufs(a, rate):.1f} LUFS, "
          f"peak {20 * np.log10(np.abs(a).max()):.1f} dBFS")
    print(f"  phrase loudness: {np.nanmin(lufs):.1f} ... {np.nanmax(lufs):.1f} LUFS "
          f"({int(ok.sum())} measured; the last phrase's segment holds the fade: "
          f"{last:.1f} LUFS)")
    inner = steps[:-1]  # the step into the faded last phrase is the fade, not a join
    big = int(np.nanargmax(inner))
    print(f"  LU step between consecutive phrases (without the faded last): largest "
          f"{np.nanmax(inner):.2f} (phrases {big}->{big + 1}, energy step "
          f"{abs(r['energy'][big + 1] - r['energy'][big]):.2f}, planned "
          f"{planned[big]:.2f}), mean {np.nanmean(inner):.2f}, p90 "
          f"{np.nanpercentile(inner, 90):.2f}; largest beyond the planned 8 LU x energy step "
          f"{np.nanmax(excess[:-1]):.2f}")
    ms = r["render_ms"]
    print(f"  render to audio per phrase: p50 {np.percentile(ms, 50):.0f} ms, p95 "
          f"{np.percentile(ms, 95):.0f} ms (n={ms.size})")
    progs = sorted(set(r["programs"]))
    print(f"  programs played (melody, bass, chords): {progs}")
    print("  per phrase (energy, LUFS): "
          + ", ".join(f"{e:.2f}:{v:.1f}" for e, v in zip(r["energy"], lufs, strict=True)))


def _render_paired(folder: Path, repeats: int) -> None:
    """Render the session's phrases again, plain and session sound interleaved in this
    thread (not the session-wav worker at its lower priority), best of ``repeats``."""
    from st_agent.live.audio import TAIL_SEC
    from st_agent.live.session_sound import PhraseSoundRenderer
    from st_agent.music.arrangement import ArrangementConfig
    from st_agent.music.render import AudioRenderer, render_phrase
    from st_agent.types import Knobs

    phrases = [e["payload"] for e in read_session(folder).events if e["kind"] == "phrase"]
    plain_r = AudioRenderer(release_sec=TAIL_SEC)
    session_r = PhraseSoundRenderer(release_sec=TAIL_SEC)
    ms = {"plain": [], "session": []}
    for p in phrases:
        kn = p["knobs"]
        k = Knobs(**kn) if isinstance(kn, dict) else Knobs(*kn)
        plain = render_phrase(p["abc"], p["key"], k, meter=p["meter"])
        voiced = render_phrase(p["abc"], p["key"], k, meter=p["meter"],
                               config=ArrangementConfig.for_knobs(k))
        best = {"plain": math.inf, "session": math.inf}
        for _ in range(repeats):
            tic = time.perf_counter()
            plain_r.synthesize(plain)
            best["plain"] = min(best["plain"], time.perf_counter() - tic)
            tic = time.perf_counter()
            session_r.render(voiced, k)
            best["session"] = min(best["session"], time.perf_counter() - tic)
        for name, v in best.items():
            ms[name].append(1e3 * v)
    plain_r.close()
    session_r.close()
    p_ms, s_ms = np.array(ms["plain"]), np.array(ms["session"])
    ratio = s_ms / p_ms
    print(f"\nrender to audio per phrase, re-rendered in one thread, plain and session "
          f"interleaved, best of {repeats} (n={p_ms.size} phrases):")
    print(f"  plain (mono, FluidSynth default effects): p50 {np.percentile(p_ms, 50):.0f} ms, "
          f"p95 {np.percentile(p_ms, 95):.0f} ms")
    print(f"  session (stereo, session effects, pyloudnorm + match_loudness): p50 "
          f"{np.percentile(s_ms, 50):.0f} ms, p95 {np.percentile(s_ms, 95):.0f} ms")
    print(f"  paired ratio session / plain: median x{np.median(ratio):.2f} "
          f"(p5-p95 x{np.percentile(ratio, 5):.2f}-x{np.percentile(ratio, 95):.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--calibration", type=float, default=10.0)
    ap.add_argument("--policy", default="random",
                    help="controller (random moves every knob, so instruments change)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="re-render the phrases this many times each for the paired render "
                         "times (0: skip)")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the two session folders here (default: a temporary folder)")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout
          .strip())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        warm = argparse.Namespace(**{**vars(args), "minutes": 0.2})
        _run("plain", warm, root / "warm-up")  # imports and the model's first load
        runs = [_run(sound, args, root) for sound in ("plain", "session")]
        for r in runs:
            _report(r)
        p, s = (r["render_ms"] for r in runs)
        print(f"\nin the sessions' worker, session / plain: p50 x{np.median(s) / np.median(p):.2f}"
              f", p95 x{np.percentile(s, 95) / np.percentile(p, 95):.2f}; session wall "
              f"{runs[0]['wall']:.1f} -> {runs[1]['wall']:.1f} s")
        if args.repeats:
            _render_paired(runs[1]["res"].folder, args.repeats)
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout
          .strip())


if __name__ == "__main__":
    main()
