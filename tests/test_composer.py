"""The GPT-2 composer: fast decoding, validity of every phrase, knobs, bad input."""

from __future__ import annotations

import shutil

import music21
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from st_agent.music.abc import check_many
from st_agent.music.composer import Composer, ComposerConfig, ComposerError
from st_agent.music.decoding import CachedDecoder
from st_agent.music.generator import BUNDLED_COMPOSER, load_generator
from st_agent.theory import parse_key
from st_agent.tokenizer.abc_text import split_bars
from st_agent.types import Knobs


@pytest.fixture(scope="module")
def composer() -> Composer:
    return Composer()


@pytest.fixture(scope="module")
def tiny_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(cfg).eval()


def test_cached_decoder_logits_match_transformers(tiny_model):
    dec = CachedDecoder(tiny_model)
    prompt = [3, 7, 1, 9, 4, 4, 2]
    with torch.no_grad():
        ref = tiny_model(torch.tensor([prompt])).logits[0, -1]
    torch.testing.assert_close(dec.prompt_logits(prompt), ref, rtol=1e-4, atol=1e-4)


def test_cached_decoder_step_logits_match_transformers_per_row(tiny_model):
    """The one-token step (what sampling runs) gives every row of a batch the logits
    the full model gives its whole sequence, rows with different tokens."""
    dec = CachedDecoder(tiny_model)
    prompt = [3, 7, 1]
    rows = torch.tensor([[4, 9, 2], [11, 0, 5], [7, 7, 7]])
    _, k, v = dec._prefill(prompt, 3)
    with torch.inference_mode():
        for j in range(rows.shape[1]):
            ours = dec._step(rows[:, j], len(prompt) + j, k, v)
            full = torch.cat([torch.tensor([prompt] * 3), rows[:, :j + 1]], dim=1)
            ref = tiny_model(full).logits[:, -1]
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_cached_decoder_greedy_matches_generate(tiny_model):
    dec = CachedDecoder(tiny_model)
    prompt = [5, 11, 2]
    ours = dec.sample(prompt, n=3, max_new_tokens=12, stop_ids=[], top_k=1)
    with torch.no_grad():
        ref = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                  pad_token_id=0)[0, 3:].tolist()
    assert ours == [ref] * 3


def test_cached_decoder_keeps_its_caches_without_carrying_state(tiny_model):
    """The KV caches are kept between calls (a long session's memory stays flat), per
    thread; what one call leaves in them never reaches the next: the same seed gives the
    same samples after a longer prompt, from a fresh decoder, and from two threads at once."""
    import threading

    dec = CachedDecoder(tiny_model)

    def draw(d: CachedDecoder, prompt: list[int], seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return d.sample(prompt, n=4, max_new_tokens=20, stop_ids=[], generator=g)

    first = draw(dec, [5, 11, 2], 1)
    draw(dec, list(range(1, 40)), 2)  # fills more positions of the same caches
    assert draw(dec, [5, 11, 2], 1) == first == draw(CachedDecoder(tiny_model), [5, 11, 2], 1)
    assert dec._new_cache(4, "batch")[0] is dec._new_cache(4, "batch")[0]

    got: dict[int, list] = {}
    other_cache = []

    def worker(i: int) -> None:
        got[i] = [draw(dec, [5, 11, 2], 1) for _ in range(5)]
        other_cache.append(dec._new_cache(4, "batch")[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] == got[1] == [first] * 5
    mine = dec._new_cache(4, "batch")[0]
    assert all(c is not mine for c in other_cache) and other_cache[0] is not other_cache[1]


def test_cached_decoder_rejects_bad_arguments(tiny_model):
    dec = CachedDecoder(tiny_model)
    with pytest.raises(ValueError, match="at least one token"):
        dec.sample([], 1, 4, [])
    with pytest.raises(ValueError, match="exceeds the context"):
        dec.sample([1] * 60, 1, 10, [])
    with pytest.raises(ValueError, match="temperature"):
        dec.sample([1], 1, 4, [], temperature=0.0)


KNOB_GRID = [Knobs(v, t, e) for v in (0.1, 0.9) for t in (0.1, 0.9) for e in (0.0, 0.5, 1.0)]


def test_every_phrase_parses_with_two_independent_parsers(composer):
    phrases = [composer.compose(k, seed=i) for i, k in enumerate(KNOB_GRID)]
    reports = check_many([p.abc for p in phrases])
    assert [r.errors for r in reports] == [()] * len(phrases)
    for p in phrases:
        score = music21.converter.parse(p.abc, format="abc")
        measures = score.parts[0].getElementsByClass("Measure") if score.parts else []
        assert len(measures) >= 4, p.abc
        assert len(split_bars(p.body)) == 4


def test_key_follows_valence_and_q_follows_tempo(composer):
    dark = composer.compose(Knobs(0.1, 0.0, 0.5), seed=1)
    bright = composer.compose(Knobs(0.9, 1.0, 0.5), seed=1)
    assert parse_key(dark.key).family == "minor"
    assert parse_key(bright.key).family == "major"
    assert "Q:1/4=50\n" in dark.abc and "Q:1/4=160\n" in bright.abc


def test_context_is_continued_and_key_changes_with_mode_family(composer):
    first = composer.compose(Knobs(0.8, 0.5, 0.5), seed=3)
    same = composer.compose(Knobs(0.6, 0.5, 0.2), context=first, seed=4)
    assert same.key == first.key and same.meter == first.meter
    other = composer.compose(Knobs(0.2, 0.5, 0.2), context=first, seed=5)
    assert parse_key(other.key).family == "minor"


def test_longer_pieces_and_seeds(composer):
    piece = composer.compose(Knobs(0.3, 0.3, 0.3), bars=12, seed=7)
    assert piece.bars == 12 and len(piece.body.splitlines()) == 3
    again = composer.compose(Knobs(0.3, 0.3, 0.3), bars=12, seed=7)
    assert again.abc == piece.abc
    assert check_many([piece.abc])[0].ok


def test_energy_knob_moves_melodic_density(composer):
    from fractions import Fraction

    from st_agent.tokenizer.abc_text import body_stats

    def density(e: float) -> float:
        vals = []
        for s in range(6):
            p = composer.compose(Knobs(0.7, 0.5, e), seed=100 + s)
            vals.append(body_stats(p.body, Fraction(p.unit),
                                   parse_key(p.key).accidentals()).notes_per_quarter)
        return float(np.mean(vals))

    assert density(0.0) < density(1.0)


@pytest.mark.parametrize("bars", [0, 3, 6, -4, 4.0])
def test_bad_bars(composer, bars):
    with pytest.raises(ValueError, match="multiple of 4"):
        composer.compose(Knobs(0.5, 0.5, 0.5), bars=bars)


def test_knobs_must_be_knobs(composer):
    with pytest.raises(TypeError, match="Knobs"):
        composer.compose((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"energy must be in \[0, 1\], got 1.5"):
        Knobs(0.5, 0.5, 1.5)


def test_unfinishable_phrase_raises_composer_error():
    c = Composer(ComposerConfig(max_new_tokens=2, max_tries=2, candidates=2))
    with pytest.raises(ComposerError, match=r"no valid .* after 2 batches"):
        c.compose(Knobs(0.5, 0.5, 0.5), seed=0)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_generator(tmp_path / "nothing")
    ck = tmp_path / "ck"
    shutil.copytree(BUNDLED_COMPOSER, ck)
    (ck / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        load_generator(ck)


def test_pickled_weights_are_refused(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(BUNDLED_COMPOSER, ck)
    (ck / "model.safetensors").unlink()
    (ck / "pytorch_model.bin").write_bytes(b"not even loaded")
    with pytest.raises(FileNotFoundError, match="pickled weights are refused"):
        load_generator(ck)


def test_bundled_checkpoint_is_small():
    total = sum(p.stat().st_size for p in BUNDLED_COMPOSER.iterdir())
    assert total < 25 * 2**20


def test_from_pretrained_loads_a_checkpoint_folder(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(BUNDLED_COMPOSER, ck)
    c = Composer.from_pretrained(ck, candidates=2)
    assert c.checkpoint == ck and c.config.candidates == 2
    assert check_many([c.compose(Knobs(0.3, 0.4, 0.5), seed=0).abc])[0].ok
    run = tmp_path / "run"
    shutil.copytree(BUNDLED_COMPOSER, run / "checkpoint")
    assert Composer.from_pretrained(str(run)).checkpoint == run / "checkpoint"  # a run folder
    with pytest.raises(TypeError, match="unknown ComposerConfig settings"):
        Composer.from_pretrained(ck, temprature=0.5)
    with pytest.raises(TypeError, match="str or Path"):
        Composer.from_pretrained(3)
    (ck / "model.safetensors").unlink()
    (ck / "pytorch_model.bin").write_bytes(b"not even loaded")
    with pytest.raises(FileNotFoundError, match="pickled weights are refused"):
        Composer.from_pretrained(ck)


PROPERTY_GRID = [Knobs(v, t, e) for v in (0.1, 0.6) for t in (0.0, 0.5, 1.0)
                 for e in (0.0, 0.5, 1.0)]


@pytest.mark.slow
def test_meter_aware_decoding_never_emits_an_invalid_bar(composer):
    """Property over many seeds and knob settings: the bars are the model's own (no
    re-barring), four full bars each, read the same by music21 and abc2midi."""
    from st_agent.music.bar_grammar import bars_are_valid

    assert composer.config.meter_aware
    phrases = [composer.compose(k, seed=100 + i) for i, k in enumerate(PROPERTY_GRID)]
    phrases.append(composer.compose(Knobs(0.3, 0.2, 0.2), bars=8, seed=7,
                                    context=phrases[0]))
    for p in phrases:
        assert p.extra["raw_body"] == p.body  # nothing was repaired
        for line in p.body.splitlines():
            assert bars_are_valid(line, 0.5, 4.0, 4), line
        score = music21.converter.parse(p.abc, format="abc")
        measures = list(score.parts[0].getElementsByClass("Measure"))
        assert len(measures) == p.bars, p.abc
        assert all(m.duration.quarterLength == 4.0 for m in measures), p.abc
    reports = check_many([p.abc for p in phrases])
    assert [r.errors for r in reports] == [()] * len(phrases)


def test_free_sampling_with_rebarring_is_still_available():
    from st_agent.music.bar_grammar import bars_are_valid

    c = Composer(ComposerConfig(meter_aware=False))
    p = c.compose(Knobs(0.4, 0.5, 0.5), seed=1)
    assert check_many([p.abc])[0].ok and len(split_bars(p.body)) == 4
    assert bars_are_valid(p.body, 0.5, 4.0, 4)  # re-barred: valid after the repair
    assert p.extra["meter_aware"] is False and "raw_body" in p.extra


def test_calm_corner_repetition_bound(composer):
    """The calm corner (61 BPM, energy 0.1) on a seeded sample: no run of 6+ repeated
    notes, and the penalty never picks a longer run of 4+ than no penalty would (the
    candidates are the same, only the ranking differs)."""
    from fractions import Fraction

    from st_agent.tokenizer.abc_text import body_stats

    def longest(c: Composer) -> list[int]:
        out = []
        for s in range(8):
            p = c.compose(Knobs(0.2 if s % 2 else 0.8, 0.1, 0.1), seed=s)
            out.append(body_stats(p.body, Fraction(p.unit),
                                  parse_key(p.key).accidentals()).longest_repeat)
        return out

    with_penalty = longest(composer)
    without = longest(Composer(ComposerConfig(repeat_penalty=0.0)))
    assert max(with_penalty) <= 5
    excess = [[max(0, r - 3) for r in runs] for runs in (with_penalty, without)]
    assert all(a <= b for a, b in zip(*excess, strict=True))
    with pytest.raises(ValueError, match="repeat_penalty"):
        ComposerConfig(repeat_penalty=-1.0)


def test_a_batch_that_runs_out_of_tokens_gets_a_larger_budget():
    """A context in sixteenth notes takes ~20 tokens a bar: when every candidate of a
    batch runs out of ``max_new_tokens``, the next batch has twice as many, instead of
    failing the phrase after ``max_tries`` batches cut short the same way."""
    comp = Composer(ComposerConfig(max_new_tokens=6, max_tries=4))
    p = comp.compose(Knobs(0.6, 0.5, 0.9), seed=3)
    assert p.tries >= 2  # 6 tokens never hold four bars
    assert len(split_bars(p.body)) == 4
    assert p.extra["rejections"].get("cut", 0) >= comp.config.candidates
