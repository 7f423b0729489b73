"""Ranker v2: the density term, the join, and the ranking they give (behaviour only)."""

from __future__ import annotations

import numpy as np
import pytest

from st_agent.music.ranker import RankerWeights, melody_facts, penalty

# Two A-minor phrases with the same ending (A held two beats): one of running
# eighths, one of quarters and halves.
DENSE = "ABcd edcB|ABcd edcB|ABcd edcB|ABcB A4|"
SPARSE = "A2 c2 e4|d2 c2 B4|A2 B2 c4|B2 c2 A4|"


def test_onsets_per_quarter_counts_ties_once_and_rests_as_time():
    assert melody_facts(SPARSE, 0.5, "Am").onsets_per_quarter == pytest.approx(12 / 16)
    tied = melody_facts("A4-A4|z8|A8|A8|", 0.5, "Am")  # one tied note, a rest bar
    assert tied.onsets_per_quarter == pytest.approx(3 / 16)


def test_denser_candidate_wins_at_high_energy_and_sparser_at_low():
    w = RankerWeights()
    dense, sparse = melody_facts(DENSE, 0.5, "Am"), melody_facts(SPARSE, 0.5, "Am")
    high, low = 2.18, 0.67  # onsets per quarter the energy knob's ends ask for
    assert penalty(dense, w, target=high) < penalty(sparse, w, target=high)
    assert penalty(sparse, w, target=low) < penalty(dense, w, target=low)
    # the target acts through the density term alone
    off = RankerWeights(density=0.0)
    assert penalty(dense, off, target=high) - penalty(sparse, off, target=high) == \
        pytest.approx(penalty(dense, w) - penalty(sparse, w))
    assert penalty(dense, w, target=high) - penalty(dense, w) == pytest.approx(
        w.density * abs(dense.onsets_per_quarter - high) / high)


def test_a_ninth_at_the_join_ranks_below_a_step():
    w = RankerWeights()
    body = "c2 B2 A2 c2|e2 d2 c2 B2|A2 c2 B2 G2|B2 c2 A4|"  # starts on c (MIDI 72)
    step = melody_facts(body, 0.5, "Am", prev_pitch=71)  # B below: a semitone
    ninth = melody_facts(body, 0.5, "Am", prev_pitch=58)  # B flat an octave and a step down
    assert (step.join_leap, ninth.join_leap) == (1, 14)
    assert penalty(ninth, w, target=1.0) > penalty(step, w, target=1.0)
    assert penalty(ninth, w) - penalty(step, w) == pytest.approx(w.join)


@pytest.mark.parametrize("target", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_target_is_refused(target):
    facts = melody_facts(SPARSE, 0.5, "Am")
    with pytest.raises(ValueError, match="target"):
        penalty(facts, RankerWeights(), target=target)


def test_bad_density_weight_is_refused():
    with pytest.raises(ValueError, match=r"RankerWeights\.density"):
        RankerWeights(density=-0.5)


@pytest.fixture(scope="module")
def composer():
    import torch

    from st_agent.music.composer import Composer

    torch.set_num_threads(1)
    return Composer()


def test_composed_density_follows_the_energy_knob(composer):
    """Seeded: phrases asked for energy 0.95 are denser than those asked for 0.05,
    every seed, and the composer's ranking uses the density term."""
    from st_agent.types import Knobs

    dens = {}
    for e in (0.05, 0.95):
        dens[e] = [melody_facts(composer.compose(Knobs(0.3, 0.5, e), seed=s).body, 0.5,
                                "Am").onsets_per_quarter for s in range(3)]
    assert min(dens[0.95]) > max(dens[0.05]), dens
    assert composer.ranker_weights.density > 0
    assert np.mean(dens[0.95]) > 1.5 * np.mean(dens[0.05])


def test_a_melody_in_the_other_mode_family_ranks_below():
    """Asked for A minor: a melody that states C major (the relative major) costs the
    family term on top of the key term; one that states A minor costs neither."""
    w = RankerWeights()
    minor = melody_facts("A2 B2 c2 d2|e2 d2 c2 B2|A2 E2 A2 c2|B2 G2 A4|", 0.5, "Am")
    major = melody_facts("c2 e2 g2 e2|f2 d2 B2 G2|c2 e2 g2 c'2|B2 d2 c4|", 0.5, "Am")
    assert minor.key_gap == minor.family_gap == 0
    assert major.family_gap > 0 and major.key_gap >= major.family_gap
    assert penalty(major, w, target=1.0) > penalty(minor, w, target=1.0)
    no_family = RankerWeights(family=0.0)
    assert penalty(major, w) - penalty(major, no_family) == pytest.approx(
        w.family * major.family_gap)
