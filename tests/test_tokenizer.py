"""Corpus normalisation, phrase segmentation, control labels and the BPE tokenizer."""

from __future__ import annotations

from fractions import Fraction

import pytest

from st_agent.music.generator import BUNDLED_COMPOSER
from st_agent.tokenizer.abc_text import body_stats, normalise_tune, split_bars, split_tunes
from st_agent.tokenizer.bpe import load_tokenizer, train_tokenizer
from st_agent.tokenizer.corpus import (
    N_ENERGY,
    SPECIAL_TOKENS,
    Controls,
    LabelStats,
    _tune_family,
    label_tune,
    load_corpus,
)
from st_agent.types import Knobs

A_MINOR_AIR = """X:1
T:A slow air in A minor
R:air
M:3/4
L:1/4
K:Am
A,2 C | E2 D | C2 B, | A,3 | E2 F | E2 D | C2 B, | A,3 |
"""

REEL = """X:2
T:A reel
R:reel
M:4/4
L:1/8
K:D
|:A2FA dAFA|d2fd edcB|A2FA dAFA|BAGF E2D2:|
|:fdfa gefg|fdfa gfed|fdfa gefg|fedc d4:|
"""


@pytest.fixture(scope="session")
def corpus():
    return load_corpus()


def test_split_tunes_drops_file_header():
    text = "% file comment\nX:1\nK:G\nGAB|\n\nX:2\nK:D\nDEF|\n"
    tunes = split_tunes(text)
    assert len(tunes) == 2 and tunes[0].startswith("X:1") and "DEF" in tunes[1]


def test_normalise_drops_free_text_and_keeps_fields():
    raw = ('X:7\nT:Title\nC:Someone\nN:a note\nR:reel\nM:C|\nL:1/8\nQ:1/4=120\nK:G\n'
           '"G"GABc !trill!d2 (3efg|"D"fedc BAGF|% comment\nG4 G4|]\n')
    tune = normalise_tune(raw)
    text = tune.text()
    assert text.startswith("M:2/2\nL:1/8\nQ:1/4=120\nK:G\n")
    for junk in ("Title", "Someone", "note", '"G"', "trill", "comment", "X:"):
        assert junk not in text
    assert "(3efg" in text  # tuplets stay
    assert tune.rhythm == "reel"


def test_phrases_are_four_bars_with_pickup_in_the_first():
    tune = normalise_tune(
        "X:1\nM:6/8\nL:1/8\nK:G\nD|G2B ABc|B2G FED|G2B ABc|d3 D2D|"
        "G2B ABc|B2G FED|EFG AFD|G3 G2|]\n")
    assert len(tune.phrases) == 2
    assert tune.phrases[0].startswith("D|G2B")
    assert len(split_bars(tune.phrases[1])) == 4


def test_body_stats_counts_durations_and_broken_rhythm():
    s = body_stats("A>B c2 (3def z2|", Fraction(1, 8))
    # A>B = 1.5+0.5 eighths, c2 = 2, triplet = 2, z2 = 2 -> 8 eighths = 4 quarters
    assert s.quarters == pytest.approx(4.0)
    assert s.n_onsets == 6


@pytest.mark.parametrize("raw, reason", [
    ("X:1\nT:no key\nM:4/4\nABC|\n", "no K:"),
    ("X:1\nM:none\nK:G\nABC|DEF|\n", "free meter"),
    ("X:1\nM:4/4\nK:G\nV:1\nABC|DEF|\n", "voices"),
])
def test_unusable_tunes_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        normalise_tune(raw)


def _labelled(raw: str, stats: LabelStats):
    from st_agent.tokenizer.corpus import LabelledTune, _measure, _tempo_bin

    tune = normalise_tune(raw)
    lt = LabelledTune(tune=tune, family=_tune_family(tune), tempo_bin=_tempo_bin(tune),
                      measures=_measure(tune), source="test")
    return label_tune(lt, stats)


def test_a_minor_tune_gets_low_valence(corpus):
    lt = _labelled(A_MINOR_AIR, corpus.stats)
    assert lt.family == "minor"
    assert all(c.valence < 2 for c in lt.controls)


def test_relative_minor_written_with_major_signature_is_found_from_the_notes():
    # Essen-style: K:C (no sharps/flats) but the tune sits on and ends on A.
    raw = A_MINOR_AIR.replace("K:Am", "K:C")
    assert _tune_family(normalise_tune(raw)) == "minor"


def test_reel_gets_higher_energy_and_tempo_than_slow_air(corpus):
    air = _labelled(A_MINOR_AIR, corpus.stats)
    reel = _labelled(REEL, corpus.stats)
    assert max(c.energy for c in air.controls) < min(c.energy for c in reel.controls)
    assert air.controls[0].tempo == 0 and reel.controls[0].tempo == 2
    assert reel.family == "major" and all(c.valence >= 2 for c in reel.controls)


def test_controls_from_knobs_span_the_bins():
    assert Controls.from_knobs(Knobs(0.0, 0.0, 0.0)) == Controls(0, 0, 0)
    assert Controls.from_knobs(Knobs(1.0, 1.0, 1.0)) == Controls(3, 2, N_ENERGY - 1)
    assert Controls.from_knobs(Knobs(0.49, 0.5, 0.5)).family == "minor"
    assert Controls.from_knobs(Knobs(0.5, 0.5, 0.5)).family == "major"
    with pytest.raises(ValueError, match="energy bin"):
        Controls(0, 0, N_ENERGY)


def test_corpus_is_deduplicated_and_split_by_tune(corpus):
    assert corpus.n_read > 12_000
    n = len(corpus.all_tunes())
    assert n > 11_000
    assert corpus.n_duplicates > 0
    texts = [t.tune.text() for t in corpus.all_tunes()]
    assert len(set(texts)) == n
    train = {t.tune.text() for t in corpus.train}
    assert not train & {t.tune.text() for t in corpus.test}
    assert 0.03 < len(corpus.test) / n < 0.07
    # every label bin is populated in the training split
    energies = {c.energy for t in corpus.train for c in t.controls}
    valences = {c.valence for t in corpus.train for c in t.controls}
    assert energies == set(range(N_ENERGY)) and valences == {0, 1, 2, 3}


def test_split_does_not_move_when_tunes_are_added():
    from st_agent.tokenizer.corpus import music21_abc_files

    # small files only (the property does not depend on file size; it keeps the test short)
    files = [f for f in music21_abc_files() if f.stat().st_size < 8000]
    small = load_corpus(files=files[:40])
    big = load_corpus(files=files[:80])
    for name in ("train", "validation", "test"):
        small_texts = {t.tune.text() for t in small.split(name)}
        big_texts = {t.tune.text() for t in big.split(name)}
        assert small_texts, f"the small corpus has no {name} tunes: the test would prove nothing"
        assert small_texts <= big_texts
    with pytest.raises(ValueError, match="split must be one of"):
        small.split("dev")


def test_user_abc_folder_is_added(tmp_path):
    (tmp_path / "mine.abc").write_text(REEL)
    c = load_corpus(files=[], extra_dirs=[tmp_path])
    assert len(c.all_tunes()) == 1
    with pytest.raises(FileNotFoundError, match=r"holds no \.abc"):
        load_corpus(files=[], extra_dirs=[tmp_path / "missing"])


def test_bundled_tokenizer_round_trips_the_whole_corpus(corpus):
    tok = load_tokenizer(BUNDLED_COMPOSER / "tokenizer.json")
    texts = [t.training_text() for t in corpus.all_tunes()]
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    bad = [i for i, (ids, x) in enumerate(zip(enc, texts, strict=True))
           if tok.decode(ids, skip_special_tokens=False) != x]
    assert bad == []
    # control tokens are single tokens, never split
    for t in SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert 600 <= len(tok) <= 1000


def test_train_tokenizer_small_and_bad_vocab():
    tok = train_tokenizer([REEL, A_MINOR_AIR] * 5, vocab_size=300)
    ids = tok.encode("<|v1|><|t0|><|e2|><|phrase|>A2FA dAFA|\n").ids
    assert tok.decode(ids, skip_special_tokens=False) == "<|v1|><|t0|><|e2|><|phrase|>A2FA dAFA|\n"
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tokenizer([REEL], vocab_size=100)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_tokenizer(bad)


def test_rebar_redraws_bar_lines_from_note_lengths():
    from st_agent.tokenizer.abc_text import rebar

    eighth, bar = Fraction(1, 8), Fraction(1)
    assert rebar("zA e2cc e2ccecA A2A|cAA2:|", eighth, bar, 2) == ["zA e2cc e2|", "ccecA A2A|"]
    # tuplets and broken rhythm stay whole inside a bar
    assert rebar("A>B c2 (3def z2 | A2B2 c4 |", eighth, bar, 2) == ["A>B c2 (3def z2|",
                                                                    "A2B2 c4|"]
    # a lone note across a bar line is split and tied; a rest is split untied
    assert rebar("A3 B6 c7 |", eighth, bar, 2) == ["A3 B5-|", "B c7|"]
    assert rebar("z6 A4 B6", eighth, bar, 2) == ["z6 A2-|", "A2 B6|"]
    with pytest.raises(ValueError, match="straddle"):
        rebar("A6 [ceg]4 B6", eighth, bar, 2)
    with pytest.raises(ValueError, match="only 1 full bars"):
        rebar("A8 B4", eighth, bar, 2)


def test_quarters_fast_agrees_with_body_stats(corpus):
    from st_agent.tokenizer.abc_text import quarters_fast

    phrases = [(p, Fraction(t.tune.unit)) for t in corpus.validation for p in t.tune.phrases]
    assert len(phrases) > 1000
    for p, unit in phrases:
        assert quarters_fast(p, float(unit) * 4) == pytest.approx(body_stats(p, unit).quarters)


def test_auto_tokenizer_loads_the_shipped_tokenizer(corpus):
    import json

    from transformers import AutoTokenizer

    ours = load_tokenizer(BUNDLED_COMPOSER)
    auto = AutoTokenizer.from_pretrained(str(BUNDLED_COMPOSER))
    texts = [t.training_text() for t in corpus.test[:50]]
    assert auto(texts, add_special_tokens=False)["input_ids"] == \
        ours(texts, add_special_tokens=False)["input_ids"]
    controls = Controls(1, 0, 2).tokens() + "A2FA dAFA|\n"
    assert auto(controls, add_special_tokens=False)["input_ids"] == \
        ours(controls, add_special_tokens=False)["input_ids"]
    for name in ("bos", "eos", "pad"):
        assert getattr(auto, f"{name}_token") == f"<|{name}|>"
        assert getattr(auto, f"{name}_token_id") == getattr(ours, f"{name}_token_id")
    n_positions = json.loads((BUNDLED_COMPOSER / "config.json").read_text())["n_positions"]
    assert auto.model_max_length == n_positions


def test_saved_tokenizer_wins_over_the_model_type_fallback(tmp_path):
    from transformers import AutoTokenizer, GPT2Config

    from st_agent.tokenizer.bpe import TOKENIZER_FILES, save_tokenizer, to_transformers

    # A GPT-2 config.json alone makes AutoTokenizer fall back to GPT-2's own tokenizer.
    GPT2Config(vocab_size=300).save_pretrained(tmp_path)
    tok = to_transformers(train_tokenizer([REEL, A_MINOR_AIR] * 5, vocab_size=300))
    written = save_tokenizer(tok, tmp_path, model_max_length=64)
    assert [p.name for p in written] == list(TOKENIZER_FILES)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "<|v1|><|t0|><|e2|><|phrase|>A2FA dAFA|\n<|eos|>"
    assert auto(text, add_special_tokens=False)["input_ids"] == \
        tok(text, add_special_tokens=False)["input_ids"]
    assert (auto.bos_token, auto.eos_token, auto.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert load_tokenizer(tmp_path)(text)["input_ids"] == auto(text)["input_ids"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_tokenizer(tok, tmp_path / "missing")


def test_model_card_has_metadata_and_sections():
    from huggingface_hub import ModelCard

    card = ModelCard.load(BUNDLED_COMPOSER / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "transformers"
    assert "music" in card.data.tags and card.data.datasets == ["music21 ABC corpus"]
    for heading in ("## Training data", "## Intended use", "## Limits (measured)",
                    "## How to load", "## Figures"):
        assert heading in card.text
