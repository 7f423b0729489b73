"""The corpus in the composer's condition: exact renotation, segmentation, the training option."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from st_agent.music.config import TrainGeneratorConfig
from st_agent.theory import parse_key
from st_agent.tokenizer.abc_renotate import (
    RenotationError,
    Transposition,
    renotate_bars,
    split_at_bar_lines,
    transposition_to,
)
from st_agent.tokenizer.abc_text import normalise_tune, split_tunes
from st_agent.tokenizer.condition_check import check_conditioning
from st_agent.tokenizer.corpus import _tune_family, music21_abc_files
from st_agent.tokenizer.corpus_condition import ConditionError, condition_tune


def test_nearest_interval_to_a_spells_by_letter():
    assert transposition_to("G", 7) == Transposition(1, 2)
    assert transposition_to("E", 4) == Transposition(3, 5)
    assert transposition_to("E", 3) == Transposition(-4, -6)  # Eb down a tritone
    assert transposition_to("A", 10) == Transposition(0, -1)  # A# -> A
    assert transposition_to("A", 9) == Transposition(0, 0)
    with pytest.raises(ValueError, match="tonic_letter"):
        transposition_to("H", 0)


def test_pitches_move_by_the_interval_under_signature_and_bar_accidentals():
    g, a = parse_key("G"), parse_key("A")
    tr = transposition_to("G", 7)
    # F is F# in G: G# in A is in A's signature; =f becomes =g; ^c holds for C in any
    # octave; two source bars make one output bar, so the last G# is written out (a =g
    # came before it in the output bar)
    r = renotate_bars(["GABc d2 =f2 | ", "^c c C F|"], g, a, tr, Fraction(1, 8), Fraction(1))
    assert r.text == "ABcd e2 =g2 ^d ^d ^D ^G|"
    assert r.pitches == [69, 71, 73, 74, 76, 79, 75, 75, 63, 68]
    assert r.duration == Fraction(3, 2)  # 8 + 4 eighths


def test_unit_lengths_are_scaled_exactly_with_tuplets_and_broken_rhythm():
    c = parse_key("C")
    r = renotate_bars(["A2B/c3 (3DEF G>A z4|"], c, c, Transposition(), Fraction(1, 16),
                      Fraction(1, 2))
    assert r.text == "AB/4c3/2 (3D/E/F/ G/>A/ z2|"
    same = renotate_bars(["A2B/c3 (3DEF G>A z4|"], c, c, Transposition(), Fraction(1, 16),
                         Fraction(1))
    assert r.duration == same.duration == Fraction(2 + Fraction(1, 2) + 3 + 2 + 2 + 4, 16)


def test_chords_and_unwritable_pitches_are_refused():
    c = parse_key("C")
    with pytest.raises(RenotationError, match="chord"):
        renotate_bars(["[CE]2 D2|"], c, c, Transposition(), Fraction(1, 8), Fraction(1))
    with pytest.raises(RenotationError, match="semitones"):
        renotate_bars(["^^B|"], c, c, Transposition(0, 1), Fraction(1, 8), Fraction(1))


def test_a_bar_holding_two_is_cut_at_the_bar_line_or_refused():
    assert split_at_bar_lines("d4c4z4 d3cd2c2A2F2 |", Fraction(1, 16), Fraction(3, 4)) == [
        "d4c4z4|", " d3cd2c2A2F2 |"]
    # a note across the would-be bar line: no exact cut
    assert split_at_bar_lines("d4c4z2 d6c2A2F2 |", Fraction(1, 16), Fraction(3, 4)) is None


def _tune(body: str, meter: str = "2/4", unit: str = "1/16", key: str = "D") -> str:
    return f"X:1\nT:t\nM:{meter}\nL:{unit}\nK:{key}\n{body}\n"


def test_two_four_pairs_into_four_four_with_the_pickup_on_its_own_line():
    body = "A2|d4 f4|a4 f4|g4 e4|c4 A4|d4 f4|a4 f4|g4 e4|d8|" + "d4 f4|a4 f4|g2"
    tune = normalise_tune(_tune(body))
    c = condition_tune(tune)
    ct = c.tune
    assert (ct.meter, ct.unit, ct.key, ct.semitones) == ("4/4", "1/8", "A", -5)
    assert ct.pickup == "E|"
    assert ct.phrases == ("A2 c2 e2 c2|d2 B2 G2 E2|A2 c2 e2 c2|d2 B2 A4|",)
    assert ct.text().startswith("M:4/4\nL:1/8\nK:A\nE|\nA2 c2")
    # the two 2/4 bars after the whole phrase (and the short last bar) are dropped
    assert c.counts["short_tail"] == 1 and c.counts["final_partial"] == 1
    assert (ct.original_key, ct.original_meter, ct.original_unit) == ("D", "2/4", "1/16")


def test_a_bar_split_by_a_repeat_is_joined_and_minor_goes_to_a_minor():
    body = "E2|:A2B2 c2d2|e4 A2E2|A2B2 c2d2|e4 A2:|E2|A8|A2B2 c2d2|e4 A4|"
    c = condition_tune(normalise_tune(_tune(body, "4/4", "1/8", "Em")), "minor")
    assert c.tune.key == "Am" and c.tune.semitones == 5 and c.counts["merged"] == 1
    assert all(b == "" or b for b in c.tune.phrases[0].split("|"))
    with pytest.raises(ConditionError, match="fewer than 4 whole bars"):
        condition_tune(normalise_tune(_tune("A2B2 c2d2|e4 A4|", "4/4", "1/8")))
    with pytest.raises(ConditionError, match="explicit accidentals"):
        condition_tune(normalise_tune(_tune("A8|A8|A8|A8|", "4/4", "1/8", "D exp ^f")))


def test_music21_reads_the_renotation_as_the_source_moved_by_the_interval():
    files = [f for f in music21_abc_files() if f.stat().st_size < 6000]
    checked = 0
    kinds = set()
    for f in files[::40]:
        for raw in split_tunes(f.read_text(encoding="utf-8", errors="replace"))[:1]:
            try:
                tune = normalise_tune(raw)
                c = condition_tune(tune, _tune_family(tune))
            except ValueError:
                continue
            res = check_conditioning(c, tune.meter, tune.unit, tune.key)
            assert res.ok, (f.name, res.detail)
            assert res.n_events > 0
            checked += 1
            kinds.add((tune.meter, tune.unit, c.tune.semitones != 0))
        if checked >= 6:
            break
    assert checked >= 6 and any(t for _, _, t in kinds)


def test_train_generator_on_the_conditioned_corpus(tmp_path: Path):
    from st_agent.music.generator import load_generator, train_generator
    from st_agent.tokenizer.corpus_condition import load_condition_corpus

    abc_dir = tmp_path / "abc"
    abc_dir.mkdir()
    for f in [f for f in music21_abc_files() if f.stat().st_size < 8000][:60]:
        shutil.copy(f, abc_dir / f.name)
    corpus, _ = load_condition_corpus(files=[], extra_dirs=[abc_dir])
    assert corpus.train and corpus.validation
    texts = [t.training_text() for t in corpus.train]
    assert all("\nK:A\n" in x or "\nK:Am\n" in x for x in texts)
    assert all(x.count("|") >= 4 for x in texts)
    cfg = TrainGeneratorConfig(
        name="cond", runs_dir=tmp_path / "runs", music21=False, extra_abc_dirs=(abc_dir,),
        corpus="condition", max_steps=2, eval_every=1, eval_batches=1, batch_size=2,
        block_size=32, n_layer=1, n_embd=32, n_head=2, vocab_size=300, threads=1, bf16=False)
    run = train_generator(cfg)
    saved = json.loads((run / "checkpoint" / "corpus_report.json").read_text())
    assert saved["tunes"]["train"]["conditioned"] == len(corpus.train)
    assert json.loads((run / "config.json").read_text())["corpus"] == "condition"
    assert load_generator(run).model.config.n_layer == 1


def test_the_shipped_models_corpus_is_the_default_and_bad_kinds_are_refused():
    assert TrainGeneratorConfig().corpus == "condition"
    with pytest.raises(ValueError, match="corpus must be one of"):
        TrainGeneratorConfig(corpus="transposed")
