"""Music quality of the composer, measured on the melody alone, against real held-out phrases.

    nice .venv/bin/python benchmarks/bench_music_quality.py               # ~10 min on 2 cores
    nice .venv/bin/python benchmarks/bench_music_quality.py --phrases 20 --chains 3   # smoke

Every figure is measured the same way on the composer's phrases and on real held-out
(test-split) phrases in the composer's condition (``M:4/4``, ``L:1/8``):

mode family / exact key   music21 ``analyze('key')`` (Aarden-Essen profiles) on the melody
                          alone (the ABC of one phrase, no accompaniment): the family asked
                          for (valence < 0.5 minor; for real phrases their valence label) and
                          the exact key written in ``K:`` (tonic and family).
note-length entropy OA    overlapping area (Yang & Lerch 2020) of the Gaussian-KDE densities
                          of per-phrase note-length entropy, against held-out phrases; the
                          real-vs-real ceiling splits the held-out phrases in two halves.
6+ runs                   phrases with 6 or more onsets in a row on one pitch.
calm corner               the same and 4+ runs at 61 BPM, energy 0.1.
joins > fifth             chains of phrases (each continuing the last, knobs on a random walk
                          that crosses the mode boundary): first note vs the previous
                          phrase's last note; real: consecutive phrases of held-out tunes.
8-gram overlap            the share of a phrase's 8-grams of notes (pitch above the tonic,
                          length) that occur in the training split, mean over phrases.
energy Spearman, tempo    rendered and measured from the MIDI (melody notes per beat; BPM).
sound (--sound)           a chain of phrases rendered to audio before (fixed instruments,
                          mono, default effects, one gain) and after (instruments by the
                          knobs, stereo, session reverb and chorus, loudness matched to the
                          energy's target): LUFS (pyloudnorm) per phrase, the largest LU step
                          between consecutive phrases, and the session WAV's length, LUFS and
                          peak, measured from the file written.

Three composers on the same knobs and seeds: ``model`` (one candidate, no ranking: the
model's own figure), ``density`` (8 candidates ranked by density, register, repeats: the
ranker before) and ``music`` (8 candidates, the music ranker now). The difference between
``model`` and the other two is what the ranker (candidate choice) contributes; nothing is
repaired after sampling.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from scipy.stats import gaussian_kde, spearmanr

from st_agent.music.composer import Composer, ComposerConfig
from st_agent.music.ranker import melody_facts, melody_notes
from st_agent.music.render import measure_features, render_phrase
from st_agent.theory import parse_key
from st_agent.types import Knobs

CALM_TEMPO = (61 - 50) / 110  # 61 BPM


def knob_grid(n: int, seed: int = 0) -> list[Knobs]:
    """``n`` knob settings: a stratified random design over [0, 1]^3."""
    rng = np.random.default_rng(seed)
    cols = [(rng.permutation(n) + rng.random(n)) / n for _ in range(3)]
    return [Knobs(float(v), float(t), float(e)) for v, t, e in zip(*cols, strict=True)]


def music21_key(abc: str) -> tuple[int, str] | None:
    """(tonic pitch class, "major"/"minor") of music21's key analysis, or None."""
    import music21

    try:
        k = music21.converter.parse(abc, format="abc").analyze("key")
    except Exception:  # music21 raises many kinds on odd input
        return None
    return k.tonic.pitchClass, ("major" if k.mode == "major" else "minor")


def tune(body: str, key: str, meter: str = "4/4", unit: str = "1/8") -> str:
    return f"X:1\nM:{meter}\nL:{unit}\nQ:1/4=100\nK:{key}\n{body.strip()}\n"


def note_grams(body: str, key: str, unit_q: float = 0.5, n: int = 8) -> list[int]:
    """Hashes of the 8-grams of (pitch above the tonic, length) of a phrase."""
    tonic = parse_key(key).tonic_pc
    ev = [(p - tonic, round(d * 12)) for _, d, p in melody_notes(body, unit_q, key)]
    return [hash(tuple(ev[i:i + n])) for i in range(len(ev) - n + 1)]


def overlap_area(a: np.ndarray, b: np.ndarray) -> float:
    """Overlapping area of two Gaussian-KDE densities (Yang & Lerch 2020)."""
    lo, hi = min(a.min(), b.min()) - 1, max(a.max(), b.max()) + 1
    x = np.linspace(lo, hi, 2000)
    fa, fb = gaussian_kde(a)(x), gaussian_kde(b)(x)
    return float(np.trapezoid(np.minimum(fa, fb), x))


def phrase_figures(items: list[tuple[str, str, str]], train_grams: set[int]) -> dict:
    """items: (body, key, family asked). Key figures, entropy, runs, 8-gram overlap."""
    fam_ok, key_ok, ent, runs, over = [], [], [], [], []
    for body, key, family in items:
        k = parse_key(key)
        got = music21_key(tune(body, key))
        fam_ok.append(got is not None and got[1] == family)
        key_ok.append(got is not None and got == (k.tonic_pc, k.family))
        f = melody_facts(body, 0.5, key)
        ent.append(f.length_entropy)
        runs.append(f.longest_repeat)
        g = note_grams(body, key)
        if g:
            over.append(np.mean([h in train_grams for h in g]))
    return {"family": np.mean(fam_ok), "key": np.mean(key_ok), "entropy": np.array(ent),
            "runs6": np.mean(np.array(runs) >= 6), "overlap": float(np.mean(over))}


def corpus_reference(max_phrases: int, seed: int) -> tuple[list, list, set[int]]:
    """Held-out in-condition phrases (body, key, family), consecutive pairs of them
    (for joins) and the training split's 8-gram hashes."""
    from st_agent.tokenizer.corpus import load_corpus

    corpus = load_corpus()
    grams: set[int] = set()
    for t in corpus.train:
        if t.tune.unit == "1/8":
            for p in t.tune.phrases:
                grams.update(note_grams(p, t.tune.key))
    held, joins = [], []
    for t in corpus.test:
        if t.tune.meter != "4/4" or t.tune.unit != "1/8":
            continue
        for p, c in zip(t.tune.phrases, t.controls, strict=True):
            held.append((p, t.tune.key, c.family))
        for a, b in zip(t.tune.phrases, t.tune.phrases[1:], strict=False):
            na, nb = melody_notes(a, 0.5, t.tune.key), melody_notes(b, 0.5, t.tune.key)
            if na and nb:
                joins.append(abs(nb[0][2] - na[-1][2]))
    rng = np.random.default_rng(seed)
    if len(held) > max_phrases:
        held = [held[i] for i in rng.choice(len(held), max_phrases, replace=False)]
    return held, joins, grams


def composer_figures(comp: Composer, n: int, chains: int, chain_len: int,
                     train_grams: set[int]) -> dict:
    knobs = knob_grid(n)
    items, npb, bpm_ok, lat = [], [], [], []
    for i, k in enumerate(knobs):
        t0 = time.perf_counter()
        p = comp.compose(k, seed=i)
        lat.append(time.perf_counter() - t0)
        items.append((p.body, p.key, "major" if k.valence >= 0.5 else "minor"))
        f = measure_features(render_phrase(p.abc, p.key, p.knobs, meter=p.meter))
        npb.append(f.notes_per_beat)
        bpm_ok.append(abs(f.bpm - k.bpm) < 0.5)
    out = phrase_figures(items, train_grams)
    out["spearman"] = spearmanr([k.energy for k in knobs], npb).statistic
    out["tempo"] = np.mean(bpm_ok)
    out["compose_p50_ms"] = 1000 * float(np.median(lat))
    rng = np.random.default_rng(7)
    leaps, flips = [], 0
    for c in range(chains):
        k = Knobs(float(rng.random()), float(rng.random()), float(rng.random()))
        prev = comp.compose(k, seed=1000 + c)
        for j in range(1, chain_len):
            k = Knobs(*(float(np.clip(x + rng.normal(0, 0.25), 0, 1)) for x in
                        (k.valence, k.tempo, k.energy)))
            p = comp.compose(k, context=prev, seed=1000 + 100 * c + j)
            flips += p.key != prev.key
            a = melody_notes(prev.body, 0.5, prev.key)
            b = melody_notes(p.body, 0.5, p.key)
            leaps.append(abs(b[0][2] - a[-1][2]))
            prev = p
    out["joins5"] = np.mean(np.array(leaps) > 7)
    out["flips"] = flips
    calm = []
    for i in range(max(n // 2, 10)):
        p = comp.compose(Knobs(0.2 if i % 2 else 0.8, CALM_TEMPO, 0.1), seed=500 + i)
        calm.append(melody_facts(p.body, 0.5, p.key).longest_repeat)
    out["calm4"], out["calm6"] = np.mean(np.array(calm) >= 4), np.mean(np.array(calm) >= 6)
    return out


def section_sound(comp: Composer, n: int, out_dir: str) -> None:
    """LU steps between consecutive phrases before/after, and the session WAVs measured."""
    from pathlib import Path

    from scipy.io import wavfile

    from st_agent.music.arrangement import ArrangementConfig
    from st_agent.music.loudness import loudness_lufs, match_loudness, session_lufs
    from st_agent.music.render import AudioRenderer
    from st_agent.music.synthesis import SESSION_EFFECTS

    rng = np.random.default_rng(11)
    k = Knobs(0.3, 0.2, 0.2)
    prev, phrases = None, []
    for i in range(n):
        p = comp.compose(k, context=prev, seed=2000 + i)
        phrases.append(p)
        prev = p
        k = Knobs(*(float(np.clip(x + rng.normal(0, 0.2), 0, 1)) for x in
                    (k.valence, k.tempo, k.energy)))
    variants = {
        "before": (AudioRenderer(), lambda p: None, False),
        "after": (AudioRenderer(stereo=True, settings=SESSION_EFFECTS),
                  ArrangementConfig.for_knobs, True),
    }
    for name, (synth, arrangement, matched) in variants.items():
        lufs, parts = [], []
        t0 = time.perf_counter()
        for p in phrases:
            pm = render_phrase(p.abc, p.key, p.knobs, meter=p.meter, config=arrangement(p.knobs))
            audio = synth.synthesize(pm)
            if matched:
                audio, _ = match_loudness(audio, synth.sample_rate, session_lufs(p.knobs.energy))
            lufs.append(loudness_lufs(audio, synth.sample_rate))
            parts.append(audio)
        dt = (time.perf_counter() - t0) / n
        session = np.concatenate(parts)
        if not matched:  # one gain for the session, its loudest sample at -1 dBFS
            session = session * (0.89 / np.max(np.abs(session)))
        path = Path(out_dir) / f"session_sound_{name}.wav"
        wavfile.write(path, synth.sample_rate, np.round(session * 32767).astype(np.int16))
        rate, got = wavfile.read(path)
        got = got.astype(np.float64) / 32767
        steps = np.abs(np.diff(lufs))
        energy_steps = np.abs(np.diff([p.knobs.energy for p in phrases]))
        print(f"sound {name}: phrase LUFS {min(lufs):.1f} .. {max(lufs):.1f}; largest step "
              f"between consecutive phrases {steps.max():.1f} LU (mean {steps.mean():.1f}; "
              f"largest energy step {energy_steps.max():.2f}); WAV {path.name}: "
              f"{got.shape[0] / rate:.1f} s, {1 if got.ndim == 1 else got.shape[1]} channel(s), "
              f"{loudness_lufs(got, rate):.1f} LUFS, peak {20 * np.log10(np.max(np.abs(got))):.1f}"
              f" dBFS; render to audio {1000 * dt:.0f} ms per phrase")
        synth.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phrases", type=int, default=100)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--chain-len", type=int, default=6)
    ap.add_argument("--reference", type=int, default=400, help="held-out phrases measured")
    ap.add_argument("--composers", nargs="+", default=["model", "density", "music"],
                    choices=["model", "density", "music", "music4"])
    ap.add_argument("--sound", type=int, default=0,
                    help="also the sound section over a chain of this many phrases")
    ap.add_argument("--sound-only", action="store_true", help="only the sound section")
    ap.add_argument("--out", default=tempfile.gettempdir(), help="folder for the session WAVs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.sound or args.sound_only:
        section_sound(Composer(), args.sound or 12, args.out)
        if args.sound_only:
            return
    held, real_joins, grams = corpus_reference(args.reference, seed=0)
    ref = phrase_figures(held, grams)
    half = len(held) // 2
    ceiling = overlap_area(ref["entropy"][:half], ref["entropy"][half:])
    print(f"real held-out phrases (M:4/4 L:1/8, n={len(held)}): mode family "
          f"{ref['family']:.1%}, exact key {ref['key']:.1%}, 6+ runs {ref['runs6']:.1%}, "
          f"8-gram overlap with training {ref['overlap']:.1%}; joins > fifth "
          f"{np.mean(np.array(real_joins) > 7):.1%} (n={len(real_joins)}); note-length "
          f"entropy OA real-vs-real {ceiling:.3f}")
    settings = {"model": dict(candidates=1, enough=1, ranker="density", repeat_penalty=0.0),
                "density": dict(ranker="density", keep_context=False),
                "music": dict(ranker="music"),
                "music4": dict(ranker="music", candidates=4, enough=2)}
    for name in args.composers:
        comp = Composer(ComposerConfig(**settings[name]))
        comp.compose(Knobs(0.5, 0.5, 0.5), seed=0)
        f = composer_figures(comp, args.phrases, args.chains, args.chain_len, grams)
        oa = overlap_area(f["entropy"], ref["entropy"])
        print(f"{name:8s} (n={args.phrases}, {settings[name]}): mode family {f['family']:.1%}, "
              f"exact key {f['key']:.1%}, note-length entropy OA {oa:.3f}, 6+ runs "
              f"{f['runs6']:.1%}, calm corner 4+/6+ {f['calm4']:.1%}/{f['calm6']:.1%}, joins > "
              f"fifth {f['joins5']:.1%} ({f['flips']} mode flips, context "
              f"{'kept' if comp.config.keep_context else 'dropped'}), 8-gram "
              f"overlap {f['overlap']:.1%}, energy Spearman {f['spearman']:.3f}, tempo exact "
              f"{f['tempo']:.1%}, compose p50 {f['compose_p50_ms']:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
