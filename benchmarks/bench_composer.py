"""Figures of the composer: validity, control adherence, perplexity, latency, decoding speed.

    .venv/bin/python benchmarks/bench_composer.py            # full (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_composer.py --quick    # a smoke run

Sections
--------
validity     N phrases over a grid of knob values: the share that abc2midi (Debian
             abcmidi) accepts without errors, re-checked here independently of the
             composer, plus music21's parser as a second opinion; and how many raw
             model samples the composer had to reject.
adherence    on the same phrases, rendered and measured from the MIDI: Spearman of
             requested energy vs. melody notes per beat (and vs. all-part notes per
             second), measured BPM vs. the tempo knob, mode family vs. valence.
perplexity   held-out (test split) per-token perplexity of the model and of a
             unigram baseline on the same tokens.
latency      compose + render-to-MIDI of one 4-bar phrase: p50/p95.
decoding     tokens/s of the cached sampler vs. `model.generate` on the same model.
bars         model-level bar validity without re-barring, before (free sampling, the bar
             lines redrawn afterwards) and after meter-aware decoding, on the same knobs
             and seeds, interleaved: the share of winning phrases whose bars, as the model
             wrote them, are 4 full bars (the grammar's check, a lengths-only check with
             the corpus lexer, and music21's measures), raw samples rejected, abc2midi
             errors and warnings, and compose+render latency of each.
speed        compose + render of one 4-bar phrase, p50/p95 wall and CPU time, for the
             float32 decoder and the int8 fast path (and 4 candidates), interleaved on the
             same knobs and seeds; where the time goes (sampling, abc2midi + arrangement,
             FluidSynth audio of the phrase); tokens/s of the cached sampler vs
             `model.generate` at batch 1 and 8 with the bar grammar applied in both (a
             LogitsProcessor for `generate`), float32 and int8; held-out loss float vs int8.
floor        the arithmetic floor of composing: the decoder's cost per sampled token
             (one forward step, no grammar, no sampling) at batch 1, 4 and 8, float32 and
             int8, times the tokens a phrase takes (median over a knob grid and at the
             slowest, densest knobs): the least any phrase can cost with this model on this
             machine, beside the 75 ms compose+render target and, for the full-fidelity
             env (one phrase per step), the steps/s that floor leaves at most.
repetition   the calm corner (61 BPM, energy 0.1): phrases with 4+ and 6+ repeated notes
             in a row (consecutive onsets on one pitch; tied continuations are no onsets)
             for the composer before (re-barring, no penalty), meter-aware without and
             with the repetition penalty, against held-out corpus phrases by label.

    .venv/bin/python benchmarks/bench_composer.py --sections bars repetition --phrases 200
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from st_agent.music.abc import check_many
from st_agent.music.bar_grammar import bars_are_valid
from st_agent.music.composer import Composer, ComposerConfig
from st_agent.music.decoding import CachedDecoder
from st_agent.music.render import measure_features, render_phrase
from st_agent.types import Knobs


def knob_grid(n: int, seed: int = 0) -> list[Knobs]:
    """``n`` knob settings: a stratified random design over [0, 1]^3."""
    rng = np.random.default_rng(seed)
    cols = [(rng.permutation(n) + rng.random(n)) / n for _ in range(3)]
    return [Knobs(float(v), float(t), float(e)) for v, t, e in zip(*cols, strict=True)]


def section_validity_adherence(composer: Composer, n: int) -> None:
    import music21

    knobs = knob_grid(n)
    phrases, lat = [], []
    for i, k in enumerate(knobs):
        t0 = time.perf_counter()
        p = composer.compose(k, seed=i)
        pm = render_phrase(p.abc, p.key, p.knobs, meter=p.meter)
        lat.append(time.perf_counter() - t0)
        phrases.append((p, pm))
    reports = check_many([p.abc for p, _ in phrases])
    ok = sum(r.ok for r in reports)
    clean = sum(r.ok and not r.warnings for r in reports)
    m21_ok = 0
    for p, _ in phrases[: min(n, 200)]:
        try:
            s = music21.converter.parse(p.abc, format="abc")
            m21_ok += len(s.flatten().notes) > 0
        except Exception:
            pass
    tries = np.array([p.tries for p, _ in phrases])
    print(f"validity: {ok}/{n} = {ok / n:.1%} accepted by abc2midi without errors "
          f"({clean / n:.1%} without warnings); music21 parsed "
          f"{m21_ok}/{min(n, 200)} of the first {min(n, 200)}")
    print(f"  sampling batches per phrase ({composer.config.candidates} candidates each): "
          f"mean {tries.mean():.2f}, max {tries.max()}; first batch had a valid candidate "
          f"in {np.mean(tries == 1):.1%}")

    feats = [measure_features(pm) for _, pm in phrases]
    energy = np.array([k.energy for k in knobs])
    npb = np.array([f.notes_per_beat for f in feats])
    nps = np.array([f.notes_per_sec for f in feats])
    rho_b = spearmanr(energy, npb).statistic
    rho_s = spearmanr(energy, nps).statistic
    bpm_err = np.array([abs(f.bpm - k.bpm) for f, k in zip(feats, knobs, strict=True)])
    want = np.array(["major" if k.valence >= 0.5 else "minor" for k in knobs])
    got = np.array([f.mode for f in feats])
    print(f"adherence: Spearman(energy, melody notes/beat) = {rho_b:.3f}; "
          f"Spearman(energy, all-part notes/s) = {rho_s:.3f}")
    print(f"  BPM: measured equals the knob's BPM (|error| < 0.5) in "
          f"{np.mean(bpm_err < 0.5):.1%}; max |error| {bpm_err.max():.2f} BPM")
    print(f"  mode: measured family matches valence in {np.mean(want == got):.1%} "
          f"(minor asked: {np.mean(got[want == 'minor'] == 'minor'):.1%}, "
          f"major asked: {np.mean(got[want == 'major'] == 'major'):.1%})")
    by_bin = [npb[(energy >= b / 5) & (energy < (b + 1) / 5 + (b == 4))].mean() for b in range(5)]
    print("  melody notes/beat by energy fifth: " + ", ".join(f"{x:.2f}" for x in by_bin))
    lat_ms = 1000 * np.array(lat)
    print("latency compose+render-to-MIDI, one 4-bar phrase: "
          f"p50 {np.percentile(lat_ms, 50):.1f} ms, p95 {np.percentile(lat_ms, 95):.1f} ms, "
          f"max {lat_ms.max():.1f} ms (n={n})")


def trained_corpus(composer: Composer):
    """The corpus the checkpoint was trained on (``train_config.json``'s ``corpus``: the
    original text, or the corpus in the composer's condition) and its kind."""
    import json

    from st_agent.tokenizer.corpus import load_corpus
    from st_agent.tokenizer.corpus_condition import load_condition_corpus

    cfg = Path(composer.checkpoint) / "train_config.json"
    kind = json.loads(cfg.read_text()).get("corpus", "original") if cfg.is_file() else "original"
    return (load_corpus() if kind == "original"
            else load_condition_corpus(only_44=kind == "condition44")[0]), kind


def section_perplexity(composer: Composer, max_tunes: int) -> None:
    """Per-token perplexity on the held-out split of the corpus the checkpoint was
    trained on (:func:`trained_corpus`), beside a unigram baseline."""
    corpus, kind = trained_corpus(composer)
    print(f"held-out split of the {kind!r} corpus (the checkpoint's training corpus)")
    tok = composer.tokenizer
    train_texts = [t.training_text() for t in corpus.train]
    train_ids = tok(train_texts, add_special_tokens=False)["input_ids"]
    counts = Counter(i for ids in train_ids for i in ids)
    total = sum(counts.values())
    V = len(tok)
    test = [t.training_text() for t in corpus.test][:max_tunes]
    test_ids = tok(test, add_special_tokens=False)["input_ids"]
    from st_agent.music.generator import load_generator

    model = load_generator(composer.checkpoint).model
    nll, n_tok, uni = 0.0, 0, 0.0
    block = model.config.n_positions
    with torch.no_grad():
        for ids in test_ids:
            ids = ids[:block]
            x = torch.tensor([ids])
            loss = model(input_ids=x, labels=x).loss.item()
            nll += loss * (len(ids) - 1)
            n_tok += len(ids) - 1
            uni += -sum(math.log((counts[i] + 1) / (total + V)) for i in ids[1:])
    print(f"perplexity on {len(test)} held-out tunes ({n_tok} tokens): model "
          f"{math.exp(nll / n_tok):.2f}, unigram baseline {math.exp(uni / n_tok):.2f}")


def section_decoding(composer: Composer, repeats: int) -> None:
    from st_agent.music.generator import load_generator

    model = load_generator(composer.checkpoint).model
    dec = CachedDecoder(model)
    tok = composer.tokenizer
    prompt = tok("<|bos|>M:4/4\nL:1/8\nK:G\n<|v2|><|t1|><|e2|><|phrase|>",
                 add_special_tokens=False)["input_ids"][:8]
    new = 256
    for batch in (1, 8, 16):
        ours, ref = [], []
        for r in range(repeats):
            g = torch.Generator().manual_seed(r)
            t0 = time.perf_counter()
            dec.sample(prompt, batch, new, stop_ids=[], temperature=1.0, top_k=40, generator=g)
            ours.append(batch * new / (time.perf_counter() - t0))
            torch.manual_seed(r)
            t0 = time.perf_counter()
            with torch.no_grad():
                model.generate(torch.tensor([prompt] * batch), max_new_tokens=new,
                               min_new_tokens=new, do_sample=True, top_k=40,
                               pad_token_id=tok.pad_token_id)
            ref.append(batch * new / (time.perf_counter() - t0))
        o, h = float(np.median(ours)), float(np.median(ref))
        print(f"decoding batch {batch:>2}: cached sampler {o:,.0f} tokens/s, "
              f"model.generate {h:,.0f} tokens/s, speed-up {o / h:.2f}x "
              f"(8-token prompt, {new} new tokens, median of {repeats})")


def _step_ms(dec: CachedDecoder, batch: int, context: int, repeats: int = 5) -> float:
    """Median ms of one decoding step (forward of one token per row) at ``batch`` rows
    after ``context`` cached positions."""
    k, v = dec._new_cache(batch)
    tok = torch.zeros(batch, dtype=torch.long)
    with torch.inference_mode():
        dec._forward(torch.zeros((batch, context), dtype=torch.long), 0, k, v)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in range(20):
                dec._step(tok, context + s, k, v)
            times.append((time.perf_counter() - t0) / 20 * 1e3)
    return float(np.median(times))


def section_floor(composer: Composer, n: int) -> None:
    """The least a phrase can cost: tokens per phrase x the forward step alone."""
    print(f"floor: {_load_note()}, torch threads {torch.get_num_threads()}")
    tok = composer.tokenizer
    counts = {}
    for label, knobs in (("knob grid", knob_grid(n, seed=5)),
                         ("slowest, densest (tempo 0, energy 1)", [Knobs(0.5, 0.0, 1.0)] * n)):
        counts[label] = float(np.median([
            len(tok(composer.compose(k, seed=i).body, add_special_tokens=False)["input_ids"])
            for i, k in enumerate(knobs)]))
    context = 110  # a typical prompt: the header, two context phrases and the controls
    steps = {(name, b): _step_ms(dec, b, context)
             for name, dec in (("float32", composer.float_decoder), ("int8", composer.decoder))
             for b in (1, 4, 8)}
    for (name, b), ms in steps.items():
        print(f"  forward step {name} batch {b}: {ms:.2f} ms")
    for label, toks in counts.items():
        best = min(steps.values())
        one = min(steps[("float32", 1)], steps[("int8", 1)])
        eight = min(steps[("float32", 8)], steps[("int8", 8)])
        print(f"  {label}: {toks:.0f} tokens per 4-bar phrase; floor (forward steps only) "
              f"{toks * eight:.0f} ms with 8 candidates, {toks * one:.0f} ms with one "
              f"candidate (best step {best:.2f} ms); target compose+render p95 75 ms; one "
              f"phrase per full-fidelity step leaves at most {1000 / (toks * one):.1f} steps/s "
              f"before the listener and the estimator")


def _load_note() -> str:
    import os

    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def section_speed(n: int) -> None:
    """Compose + render latency float vs int8, where the time goes, and decoding speed."""
    from st_agent.music.render import AudioRenderer

    print(f"speed: {_load_note()} at the start")
    variants = {"float32, 8 candidates": dict(int8=False),
                "int8, 8 candidates (default)": dict(int8=True),
                "int8, 4 candidates": dict(int8=True, candidates=4, enough=2)}
    comps = {name: Composer(ComposerConfig(**kw)) for name, kw in variants.items()}
    for c in comps.values():
        c.compose(Knobs(0.5, 0.5, 0.5), seed=0)
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in comps}
    for i, k in enumerate(knob_grid(n, seed=3)):
        for name, c in comps.items():  # interleaved: all see the same load
            w0, c0 = time.perf_counter(), time.process_time()
            p = c.compose(k, seed=i)
            w1 = time.perf_counter()
            render_phrase(p.abc, p.key, p.knobs, meter=p.meter)
            rows[name].append((time.perf_counter() - w0, time.process_time() - c0,
                               time.perf_counter() - w1))
    for name, got in rows.items():
        wall, cpu, ren = (1000 * np.array(x) for x in zip(*got, strict=True))
        print(f"  {name}: compose+render wall p50 {np.percentile(wall, 50):.0f} ms, p95 "
              f"{np.percentile(wall, 95):.0f} ms; CPU p50 {np.percentile(cpu, 50):.0f} ms, p95 "
              f"{np.percentile(cpu, 95):.0f} ms; of which render-to-MIDI (abc2midi + "
              f"arrangement) p50 {np.percentile(ren, 50):.0f} ms (n={n})")
    c = comps["int8, 8 candidates (default)"]
    p = c.compose(Knobs(0.2, 0.1, 0.1), seed=1)
    pm = render_phrase(p.abc, p.key, p.knobs, meter=p.meter)
    with AudioRenderer() as synth:
        synth.synthesize(pm)
        t0 = time.perf_counter()
        for _ in range(5):
            audio = synth.synthesize(pm)
        dt = (time.perf_counter() - t0) / 5
    print(f"  FluidSynth audio of one phrase ({len(audio) / synth.sample_rate:.1f} s of music): "
          f"{1000 * dt:.0f} ms ({len(audio) / synth.sample_rate / dt:.0f}x real time)")
    section_grammar_decoding(c, 10)
    section_int8_loss(c, 200)
    print(f"speed: {_load_note()} at the end")


class _GrammarProcessor:
    """The bar grammar as a `transformers` LogitsProcessor, for `model.generate`."""

    def __init__(self, hook, first_bias: np.ndarray) -> None:
        self.hook, self.first = hook, torch.from_numpy(first_bias)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first is not None:
            bias, self.first = self.first, None
        else:
            bias = torch.from_numpy(self.hook(input_ids[:, -1].tolist())[0])
        return scores + bias


def section_grammar_decoding(composer: Composer, repeats: int) -> None:
    """Tokens/s with the bar grammar of a 4-bar phrase: the cached sampler (float32,
    int8) writes whole phrases (it stops at the fourth bar line); `generate` writes as
    many tokens as the sampler's median phrase with the same grammar as a
    LogitsProcessor."""
    from transformers import LogitsProcessorList

    from st_agent.music.bar_grammar import BarHook
    from st_agent.music.generator import load_generator

    model = load_generator(composer.checkpoint).model
    grammar = composer.grammar("4/4", "1/8")
    prompt = composer._prompt(_prompt_controls(), "A", "4/4", "1/8", [])
    for batch in (1, 8):
        speeds: dict[str, list[float]] = {"float32": [], "int8": [], "generate": []}
        lengths: list[int] = []
        for r in range(repeats):
            for name, dec in (("float32", composer.float_decoder), ("int8", composer.decoder)):
                hook = BarHook(grammar, batch, 4, batch)
                g = torch.Generator().manual_seed(r)
                t0 = time.perf_counter()
                outs = dec.sample(prompt, batch, 48, stop_ids=[], temperature=0.9, top_k=40,
                                  generator=g, step_hook=hook, first_bias=hook.first_bias())
                speeds[name].append(sum(map(len, outs)) / (time.perf_counter() - t0))
                lengths += [len(o) for o in outs]
            new = int(np.median(lengths))
            hook = BarHook(grammar, batch, 4, batch)
            proc = LogitsProcessorList([_GrammarProcessor(hook, hook.first_bias())])
            torch.manual_seed(r)
            t0 = time.perf_counter()
            with torch.no_grad():
                model.generate(torch.tensor([prompt] * batch), max_new_tokens=new,
                               min_new_tokens=new, do_sample=True, top_k=40, temperature=0.9,
                               logits_processor=proc, pad_token_id=composer.tokenizer.pad_token_id)
            speeds["generate"].append(batch * new / (time.perf_counter() - t0))
        med = {k: float(np.median(v)) for k, v in speeds.items()}
        print(f"  decoding 4-bar phrases with the bar grammar, batch {batch}: cached sampler "
              f"float32 {med['float32']:,.0f} tokens/s ({med['float32'] / med['generate']:.2f}x), "
              f"int8 {med['int8']:,.0f} tokens/s ({med['int8'] / med['generate']:.2f}x), "
              f"model.generate {med['generate']:,.0f} tokens/s (same model, same grammar; "
              f"{len(prompt)}-token prompt, {int(np.median(lengths))} tokens per phrase, median "
              f"of {repeats})")


def _prompt_controls():
    """The control bins of a mid-knob prompt."""
    from st_agent.tokenizer.corpus import Controls

    return Controls.from_knobs(Knobs(0.7, 0.5, 0.5))


def section_int8_loss(composer: Composer, max_tunes: int) -> None:
    """Held-out loss (nats/token) of the float32 and int8 decoders on the same tokens."""

    tok = composer.tokenizer
    texts = [t.training_text() for t in trained_corpus(composer)[0].test][:max_tunes]
    ids = [x[:composer.decoder.max_len] for x in
           tok(texts, add_special_tokens=False)["input_ids"] if len(x) > 1]
    tot = {}
    for name, dec in (("float32", composer.float_decoder), ("int8", composer.decoder)):
        pairs = [dec.sequence_nll(x) for x in ids]
        tot[name] = sum(a for a, _ in pairs) / sum(b for _, b in pairs)
    n_tok = sum(len(x) - 1 for x in ids)
    print(f"  held-out loss ({len(ids)} test tunes, {n_tok} tokens): float32 "
          f"{tot['float32']:.4f} nats/token, {composer.decoder.precision} {tot['int8']:.4f} "
          f"(difference {tot['int8'] - tot['float32']:+.4f}; perplexity "
          f"{math.exp(tot['float32']):.2f} vs {math.exp(tot['int8']):.2f})")


def lengths_valid(body: str, unit: str, bar_q: float, n_bars: int = 4) -> bool:
    """Bars as written, by the corpus lexer alone: ``n_bars`` bars split at the
    model's bar lines, each ``bar_q`` quarter notes, nothing after the last."""
    from fractions import Fraction

    from st_agent.tokenizer.abc_text import body_stats, split_bars

    bars = split_bars(body.strip())
    return len(bars) == n_bars and bars[-1].rstrip().endswith("|") and all(
        abs(body_stats(b, Fraction(unit)).quarters - bar_q) < 1e-6 for b in bars)


def music21_valid(abc: str, bar_q: float, n_bars: int = 4) -> bool:
    """music21's reading of the tune: ``n_bars`` measures of ``bar_q`` quarters each."""
    import music21

    try:
        score = music21.converter.parse(abc, format="abc")
    except Exception:  # music21 raises many kinds on bad input
        return False
    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass("Measure"))
    return len(measures) == n_bars and all(
        abs(m.duration.quarterLength - bar_q) < 1e-6 for m in measures)


def section_bars(n: int, candidates: int | None) -> None:
    """Bar validity as the model wrote it, re-barring vs meter-aware decoding."""
    modes = {"re-barring (before)": False, "meter-aware (after)": True}
    composers = {}
    for name, aware in modes.items():
        cfg = ComposerConfig(meter_aware=aware)
        if candidates:
            cfg.candidates = candidates
        composers[name] = Composer(cfg)
        composers[name].compose(Knobs(0.5, 0.5, 0.5), seed=0)  # warm-up
    rows = {name: [] for name in modes}
    for i, k in enumerate(knob_grid(n, seed=1)):
        for name, comp in composers.items():  # interleaved: both see the same load
            t0 = time.perf_counter()
            p = comp.compose(k, seed=i)
            render_phrase(p.abc, p.key, p.knobs, meter=p.meter)
            rows[name].append((p, time.perf_counter() - t0))
    print(f"bars: {n} phrases over a stratified knob design, same knobs and seeds per mode")
    for name, got in rows.items():
        raws = [p.extra["raw_body"] for p, _ in got]
        grammar_ok = np.mean([bars_are_valid(r, 0.5, 4.0, 4) for r in raws])
        length_ok = np.mean([lengths_valid(r, "1/8", 4.0) for r in raws])
        m21_ok = np.mean([music21_valid(Composer.tune_text(r, p.key, p.meter, p.unit, 120), 4.0)
                          for r, (p, _) in zip(raws, got, strict=True)])
        samples = sum(p.extra["samples"] for p, _ in got)  # finished candidates
        rejected = sum(k for p, _ in got for tag, k in p.extra["rejections"].items()
                       if tag != "cut")
        cut = sum(p.extra["rejections"].get("cut", 0) for p, _ in got)
        reports = check_many([p.abc for p, _ in got])
        lat = 1000 * np.array([t for _, t in got])
        print(f"  {name}: winners with valid bars as written {grammar_ok:.1%} (grammar), "
              f"{length_ok:.1%} (bar lengths, corpus lexer), {m21_ok:.1%} (music21 measures); "
              f"finished samples rejected {rejected}/{samples} = "
              f"{rejected / max(samples, 1):.1%} ({cut} more cut off unfinished); "
              f"final phrases: abc2midi errors in {sum(not r.ok for r in reports)}, warnings in "
              f"{sum(bool(r.warnings) for r in reports)}; compose+render p50 "
              f"{np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms")


def section_repetition(n: int) -> None:
    """The calm corner's repeated notes, penalty off vs on, vs the corpus."""
    from fractions import Fraction

    from st_agent.theory import parse_key
    from st_agent.tokenizer.abc_text import body_stats
    from st_agent.tokenizer.corpus import load_corpus

    def runs(bodies_keys: list[tuple[str, str, str]]) -> np.ndarray:
        return np.array([body_stats(b, Fraction(u), parse_key(k).accidentals()).longest_repeat
                         for b, u, k in bodies_keys])

    corpus = load_corpus()
    groups = {
        "slowest tempo label": lambda c: c.tempo == 0,
        "sparsest energy label": lambda c: c.energy == 0,
        "slow and sparsest": lambda c: c.tempo == 0 and c.energy == 0,
        "all": lambda c: True,
    }
    for name, keep in groups.items():
        ref = runs([(p, t.tune.unit, t.tune.key) for t in corpus.test
                    for p, c in zip(t.tune.phrases, t.controls, strict=True) if keep(c)])
        print(f"repetition: held-out corpus phrases, {name} (n={len(ref)}): 4+ repeated notes "
              f"in {np.mean(ref >= 4):.1%}, 6+ in {np.mean(ref >= 6):.1%}")
    tempo = (61 - 50) / 110  # 61 BPM
    settings = {"re-barring, no penalty (the composer before)": (False, 0.0),
                "meter-aware, no penalty": (True, 0.0),
                "meter-aware, repeat_penalty (now)": (True, ComposerConfig().repeat_penalty)}
    for name, (aware, penalty) in settings.items():
        comp = Composer(ComposerConfig(meter_aware=aware, repeat_penalty=penalty))
        got = []
        for i in range(n):
            p = comp.compose(Knobs(0.2 if i % 2 else 0.8, tempo, 0.1), seed=i)
            got.append((p.body, p.unit, p.key))
        r = runs(got)
        print(f"  calm corner (61 BPM, energy 0.1, valence 0.2/0.8 alternating, n={n}), {name}: "
              f"4+ repeated notes in {np.mean(r >= 4):.1%}, 6+ in {np.mean(r >= 6):.1%}, "
              f"longest run mean {r.mean():.2f}, max {r.max()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phrases", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--candidates", type=int, default=None,
                    help="candidates per batch (default: ComposerConfig's)")
    ap.add_argument("--enough", type=int, default=None,
                    help="finished candidates that end a batch (default: ComposerConfig's)")
    ap.add_argument("--rebar", action="store_true",
                    help="validity/perplexity/decoding with free sampling and re-barring "
                         "(meter_aware=False), the composer before meter-aware decoding")
    ap.add_argument("--sections", nargs="+",
                    default=["validity", "perplexity", "decoding", "bars", "repetition", "speed"],
                    choices=["validity", "perplexity", "decoding", "bars", "repetition",
                             "speed", "floor"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ComposerConfig()
    if args.candidates:
        cfg.candidates = args.candidates
    if args.enough:
        cfg.enough = args.enough
    if args.rebar:
        cfg.meter_aware = False
    composer = Composer(cfg)
    print(f"composer: {composer!r}, torch threads {torch.get_num_threads()}")
    n = 20 if args.quick else args.phrases
    composer.compose(Knobs(0.5, 0.5, 0.5), seed=0)  # warm-up
    if "validity" in args.sections:
        section_validity_adherence(composer, n)
    if "perplexity" in args.sections:
        section_perplexity(composer, 50 if args.quick else 10_000)
    if "decoding" in args.sections:
        section_decoding(composer, 1 if args.quick else 5)
    if "bars" in args.sections:
        section_bars(20 if args.quick else min(n, 400), args.candidates)
    if "repetition" in args.sections:
        section_repetition(20 if args.quick else min(n, 200))
    if "speed" in args.sections:
        section_speed(20 if args.quick else min(n, 200))
    if "floor" in args.sections:
        section_floor(composer, 10 if args.quick else min(n, 40))


if __name__ == "__main__":
    main()
