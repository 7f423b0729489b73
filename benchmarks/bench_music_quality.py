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

Composers on the same knobs and seeds: ``model`` (one candidate, no ranking, drawn again
until valid: the model's own figure), ``density`` (8 candidates ranked by density, register,
repeats: the ranker of earlier versions), ``music`` (8 candidates, the previous wave's music
ranker, ``WAVE3_WEIGHTS``), ``v2`` (8 candidates, the ranker now: ``RankerWeights()``) and
``v2-enough8`` (the same, every candidate of a batch finished instead of the first four)
and ``v2-4`` (the ranker now over 4 candidates, the first 2 finished: the faster setting).
The difference between ``model`` and the others is what the ranker (candidate choice)
contributes; nothing is repaired after sampling. Differences are printed with percentile
bootstrap 95 % CIs (2,000 resamples) paired by knob setting (grid, calm corner) or by
chain (joins: a chain's steps are resampled together); ``--results DIR`` keeps each
composer's per-item figures so that runs of different composers can be paired
(``--composers`` with no name prints only the paired differences of ``DIR``).

    nice .venv/bin/python benchmarks/bench_music_quality.py --phrases 100 --chains 24 \
        --chain-len 5 --reference 300 --composers model music v2 v2-enough8 \
        --results runs/ranker_quality
    # another checkpoint on the same knobs and seeds, paired with the bundled model's:
    nice .venv/bin/python benchmarks/bench_music_quality.py --phrases 100 --chains 24 \
        --chain-len 5 --reference 300 --composers model v2 --checkpoint runs/composer_cond \
        --tag cond- --results runs/ranker_quality
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import gaussian_kde, spearmanr

from st_agent.music.composer import Composer, ComposerConfig, ComposerError
from st_agent.music.ranker import RankerWeights, melody_facts, melody_notes
from st_agent.music.render import measure_features, render_phrase
from st_agent.theory import parse_key
from st_agent.types import Knobs

CALM_TEMPO = (61 - 50) / 110  # 61 BPM
#: The ranker of the previous wave (music v2, first version): its weights, no density term.
WAVE3_WEIGHTS = RankerWeights(key=1.0, cadence=0.2, short_end=0.1, leap=0.15, join=0.4,
                              repeat=0.1, few_pitches=0.1, rhythm=0.15, rhythm_floor=1.0,
                              density=0.0)


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
            "fam_ok": np.array(fam_ok, dtype=float), "key_ok": np.array(key_ok, dtype=float),
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


def calm_reference() -> str:
    """Distinct pitches and runs of real phrases labelled with the sparsest energy (the
    calm corner's reference: only 42 phrases carry both the slow and sparsest labels)."""
    from fractions import Fraction

    from st_agent.tokenizer.corpus import load_corpus

    corpus = load_corpus()
    facts = [melody_facts(p, float(Fraction(t.tune.unit)) * 4, t.tune.key)
             for t in [*corpus.train, *corpus.test] if t.tune.meter == "4/4" and
             t.tune.unit == "1/8" for p, c in zip(t.tune.phrases, t.controls, strict=True)
             if c.energy == 0]
    d = np.array([f.distinct for f in facts])
    runs = np.array([f.longest_repeat for f in facts])
    return (f"n={len(d)}, distinct pitches per phrase mean {d.mean():.2f} (median "
            f"{np.median(d):.0f}, 10th percentile {np.percentile(d, 10):.0f}), 4+ runs "
            f"{np.mean(runs >= 4):.1%}, 6+ runs {np.mean(runs >= 6):.1%}")


_FAILURES: dict[int, int] = {}


def _compose(comp: Composer, knobs: Knobs, seed: int, context=None):
    """``comp.compose``; when no valid phrase comes within its tries (ComposerError), the
    same knobs with another seed (counted in ``_FAILURES[id(comp)]``), at most 3 times,
    then once more without the context (counted in ``_FAILURES[-id(comp)]``)."""
    for attempt in range(4):
        try:
            return comp.compose(knobs, context=context, seed=seed + 7919 * attempt)
        except ComposerError:
            _FAILURES[id(comp)] = _FAILURES.get(id(comp), 0) + 1
    if context is None:
        raise ComposerError(f"no phrase for {knobs} with seeds {seed} + 7919 k, k < 4")
    _FAILURES[-id(comp)] = _FAILURES.get(-id(comp), 0) + 1
    return comp.compose(knobs, context=None, seed=seed)


def composer_figures(comp: Composer, n: int, chains: int, chain_len: int,
                     train_grams: set[int]) -> dict:
    """The figures of one composer, and the per-item values the paired bootstrap needs
    (``items``: per grid knob; ``joins``: per chain step, (chain, leap); ``calm``)."""
    knobs = knob_grid(n)
    items, npb, bpm_ok, lat = [], [], [], []
    for i, k in enumerate(knobs):
        t0 = time.perf_counter()
        p = _compose(comp, k, seed=i)
        lat.append(time.perf_counter() - t0)
        items.append((p.body, p.key, "major" if k.valence >= 0.5 else "minor"))
        f = measure_features(render_phrase(p.abc, p.key, p.knobs, meter=p.meter))
        npb.append(f.notes_per_beat)
        bpm_ok.append(abs(f.bpm - k.bpm) < 0.5)
    out = phrase_figures(items, train_grams)
    out["energy"], out["npb"] = np.array([k.energy for k in knobs]), np.array(npb)
    out["spearman"] = spearmanr(out["energy"], npb).statistic
    out["tempo"] = np.mean(bpm_ok)
    out["compose_p50_ms"] = 1000 * float(np.median(lat))
    rng = np.random.default_rng(7)
    leaps, flips = [], 0
    for c in range(chains):
        k = Knobs(float(rng.random()), float(rng.random()), float(rng.random()))
        prev = _compose(comp, k, seed=1000 + c)
        for j in range(1, chain_len):
            k = Knobs(*(float(np.clip(x + rng.normal(0, 0.25), 0, 1)) for x in
                        (k.valence, k.tempo, k.energy)))
            p = _compose(comp, k, context=prev, seed=1000 + 100 * c + j)
            flips += p.key != prev.key
            a = melody_notes(prev.body, 0.5, prev.key)
            b = melody_notes(p.body, 0.5, p.key)
            leaps.append((c, abs(b[0][2] - a[-1][2])))
            prev = p
    out["join_chain"] = np.array([c for c, _ in leaps])
    out["join_leap"] = np.array([x for _, x in leaps])
    out["joins5"] = np.mean(out["join_leap"] > 7)
    out["flips"] = flips
    calm = []
    for i in range(max(n // 2, 10)):
        p = _compose(comp, Knobs(0.2 if i % 2 else 0.8, CALM_TEMPO, 0.1), seed=500 + i)
        calm.append(melody_facts(p.body, 0.5, p.key))
    out["calm_run"] = np.array([f.longest_repeat for f in calm])
    out["calm_distinct"] = np.array([f.distinct for f in calm])
    out["calm4"], out["calm6"] = np.mean(out["calm_run"] >= 4), np.mean(out["calm_run"] >= 6)
    return out


def _ci(stat, groups: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
        ) -> tuple[float, float, float]:
    """Statistic and percentile bootstrap 95 % CI, resampling ``groups`` (index arrays)."""
    vals = [stat(np.concatenate([groups[j] for j in rng.integers(len(groups), size=len(groups))]))
            for _ in range(n_boot)]
    return stat(np.concatenate(groups)), *np.percentile(vals, [2.5, 97.5])


def paired_differences(a: dict, b: dict, name_a: str, name_b: str, ref_entropy: np.ndarray
                       ) -> None:
    """``b`` minus ``a`` on the figures that matter, with bootstrap 95 % CIs paired by
    knob setting (grid, calm) or by chain (joins; a chain's steps are resampled together)."""
    rng = np.random.default_rng(0)
    grid = np.arange(len(a["energy"]))[:, None]
    per = {
        "mode family": lambda i: np.mean(b["fam_ok"][i]) - np.mean(a["fam_ok"][i]),
        "exact key": lambda i: np.mean(b["key_ok"][i]) - np.mean(a["key_ok"][i]),
        "energy Spearman": lambda i: spearmanr(b["energy"][i], b["npb"][i]).statistic
        - spearmanr(a["energy"][i], a["npb"][i]).statistic,
        "note-length OA": lambda i: overlap_area(b["entropy"][i], ref_entropy)
        - overlap_area(a["entropy"][i], ref_entropy),
    }
    for label, stat in per.items():
        d, lo, hi = _ci(stat, list(grid), rng)
        print(f"  {name_b} - {name_a}: {label} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    chains = [np.flatnonzero(a["join_chain"] == c) for c in np.unique(a["join_chain"])]
    d, lo, hi = _ci(lambda i: np.mean(b["join_leap"][i] > 7) - np.mean(a["join_leap"][i] > 7),
                    chains, rng)
    print(f"  {name_b} - {name_a}: joins > fifth {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
          f"(n={len(a['join_leap'])} joins, {len(chains)} chains)")
    calm = list(np.arange(len(a["calm_run"]))[:, None])
    for label, key, fn in (("calm 4+ runs", "calm_run", lambda x: x >= 4),
                           ("calm distinct pitches", "calm_distinct", lambda x: x)):
        d, lo, hi = _ci(lambda i, k=key, f=fn: np.mean(f(b[k][i])) - np.mean(f(a[k][i])), calm,
                        rng)
        print(f"  {name_b} - {name_a}: {label} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")


def _single_cis(f: dict, ref_entropy: np.ndarray) -> str:
    """Bootstrap 95 % CIs of one composer's join rate (by chain) and energy Spearman."""
    rng = np.random.default_rng(1)
    chains = [np.flatnonzero(f["join_chain"] == c) for c in np.unique(f["join_chain"])]
    j = _ci(lambda i: np.mean(f["join_leap"][i] > 7), chains, rng)
    s = _ci(lambda i: spearmanr(f["energy"][i], f["npb"][i]).statistic,
            list(np.arange(len(f["energy"]))[:, None]), rng)
    return (f"joins > fifth {j[0]:.1%} [{j[1]:.1%}, {j[2]:.1%}], energy Spearman {s[0]:.3f} "
            f"[{s[1]:.3f}, {s[2]:.3f}]")


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


def _save(f: dict, path: Path) -> None:
    """The per-item arrays of one composer's figures (for later paired comparisons)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in f.items() if isinstance(v, np.ndarray)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phrases", type=int, default=100)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--chain-len", type=int, default=6)
    ap.add_argument("--reference", type=int, default=400, help="held-out phrases measured")
    ap.add_argument("--composers", nargs="*", default=["model", "music", "v2"],
                    choices=["model", "density", "music", "v2", "v2-enough8", "music4", "v2-4"],
                    help="composers to measure (none: only the paired differences of --results)")
    ap.add_argument("--sound", type=int, default=0,
                    help="also the sound section over a chain of this many phrases")
    ap.add_argument("--sound-only", action="store_true", help="only the sound section")
    ap.add_argument("--out", default=tempfile.gettempdir(), help="folder for the session WAVs")
    ap.add_argument("--results", default="", help="folder to keep each composer's per-item "
                    "figures in; the paired differences also use those of earlier runs")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="composer checkpoint folder (default: the bundled model)")
    ap.add_argument("--tag", default="", help="prefix of the composers' names in the output "
                    "and in --results (e.g. 'cond-' for another checkpoint), so that its "
                    "figures pair with the bundled model's of the same knobs and seeds")
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
    settings = {"model": dict(candidates=1, enough=1, ranker="density", repeat_penalty=0.0,
                              max_tries=30),  # one candidate, drawn again until valid
                "density": dict(ranker="density", keep_context=False),
                "music": dict(ranker="music"), "v2": dict(ranker="music"),
                "v2-enough8": dict(ranker="music", enough=8),
                "music4": dict(ranker="music", candidates=4, enough=2),
                "v2-4": dict(ranker="music", candidates=4, enough=2)}
    print(f"real sparsest-energy phrases (M:4/4 L:1/8): {calm_reference()}")
    results = {}
    composers = {args.tag + name: Composer(ComposerConfig(checkpoint=args.checkpoint,
                                                          **settings[name]))
                 for name in args.composers}
    for name, comp in composers.items():  # built together: the same decoding tables
        setting = settings[name.removeprefix(args.tag)]
        if name.removeprefix(args.tag) in ("music", "music4"):  # the previous wave's ranker
            comp.ranker_weights = WAVE3_WEIGHTS
        comp.compose(Knobs(0.5, 0.5, 0.5), seed=0)
        _FAILURES.pop(id(comp), None)
        f = composer_figures(comp, args.phrases, args.chains, args.chain_len, grams)
        results[name] = f
        oa = overlap_area(f["entropy"], ref["entropy"])
        print(f"{name:8s} (n={args.phrases}, {setting}, {comp.ranker_weights}): mode "
              f"family {f['family']:.1%}, exact key {f['key']:.1%}, note-length entropy OA "
              f"{oa:.3f}, 6+ runs {f['runs6']:.1%}, calm corner 4+/6+ {f['calm4']:.1%}/"
              f"{f['calm6']:.1%}, calm distinct pitches {f['calm_distinct'].mean():.2f} "
              f"(min {f['calm_distinct'].min()}), joins > fifth {f['joins5']:.1%} "
              f"({int((f['join_leap'] > 7).sum())} of {len(f['join_leap'])}; {f['flips']} mode "
              f"flips, context {'kept' if comp.config.keep_context else 'dropped'}), 8-gram "
              f"overlap {f['overlap']:.1%}, energy Spearman {f['spearman']:.3f}, tempo exact "
              f"{f['tempo']:.1%}, compose p50 {f['compose_p50_ms']:.0f} ms; phrases drawn "
              f"again with another seed after a ComposerError: {_FAILURES.get(id(comp), 0)}, "
              f"chain phrases composed without their context after 4: "
              f"{_FAILURES.get(-id(comp), 0)}",
              flush=True)
        print(f"  {name}: {_single_cis(f, ref['entropy'])}", flush=True)
        if args.results:
            _save(results[name], Path(args.results) / f"{name}-{args.phrases}-{args.chains}x"
                  f"{args.chain_len}.npz")
    if args.results:  # composers measured by earlier runs with the same sizes
        for path in sorted(Path(args.results).glob(f"*-{args.phrases}-{args.chains}x"
                                                   f"{args.chain_len}.npz")):
            name = path.name.split(f"-{args.phrases}-")[0]
            results.setdefault(name, dict(np.load(path)))
    names = list(results)
    for base in ("model", "music", "v2"):
        for other in names:
            if (base in results and other != base and other not in ("model", "density")
                    and (base != "v2" or other.endswith("v2") or other.startswith("v2-"))):
                paired_differences(results[base], results[other], base, other, ref["entropy"])


if __name__ == "__main__":
    main()
