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


def test_cached_decoder_greedy_matches_generate(tiny_model):
    dec = CachedDecoder(tiny_model)
    prompt = [5, 11, 2]
    ours = dec.sample(prompt, n=3, max_new_tokens=12, stop_ids=[], top_k=1)
    with torch.no_grad():
        ref = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                  pad_token_id=0)[0, 3:].tolist()
    assert ours == [ref] * 3


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
