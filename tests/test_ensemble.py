"""Negotiation, clash measure and multi-voice composition/rendering of a jam."""

from __future__ import annotations

import re

import music21
import numpy as np
import pretty_midi
import pytest

from st_agent.contract import SafetyBounds
from st_agent.music.abc import check_abc
from st_agent.music.ensemble import (
    DEFAULT_PROGRAMS,
    Ensemble,
    check_per_performer,
    check_performers,
    count_clashes,
    negotiate,
    voice_masks,
)
from st_agent.types import Knobs


def test_negotiate_weighted_tempo_and_mode_vote():
    props = [Knobs(0.8, 0.2, 0.5), Knobs(0.6, 0.6, 0.5), Knobs(0.1, 1.0, 0.1)]
    n = negotiate(props)
    assert n.tempo == pytest.approx(0.6) and n.mode == "major" and n.key == "A"
    assert n.votes_major == pytest.approx(2 / 3)
    # voices keep their valence inside the family: the minor voter is lifted to 0.5
    assert n.voice_valence == pytest.approx((0.8, 0.6, 0.5))
    w = negotiate(props, weights=[0, 0, 1])
    assert w.tempo == pytest.approx(1.0) and w.mode == "minor" and w.key == "Am"
    assert max(w.voice_valence) < 0.5


def test_negotiate_tie_rules():
    tie = [Knobs(0.9, 0.5, 0.5), Knobs(0.2, 0.5, 0.5)]
    assert negotiate(tie, previous_mode="minor").mode == "minor"
    assert negotiate(tie, previous_mode="major").mode == "major"
    # no previous phrase: the side of the mean valence (0.55 -> major)
    assert negotiate(tie).mode == "major"
    assert negotiate([Knobs(0.7, 0.5, 0.5), Knobs(0.1, 0.5, 0.5)]).mode == "minor"


def test_negotiate_respects_every_performers_bounds():
    b0 = SafetyBounds(valence=(0.0, 0.45), tempo=(0.0, 0.4))
    b1 = SafetyBounds(valence=(0.3, 1.0), tempo=(0.3, 1.0))
    n = negotiate([Knobs(0.0, 0.0, 0.0), Knobs(1.0, 1.0, 1.0)], bounds=[b0, b1])
    assert 0.3 <= n.tempo <= 0.4
    assert n.mode == "minor"  # performer 0's valence bounds exclude major
    assert 0.3 <= n.voice_valence[1] < 0.5
    with pytest.raises(ValueError, match="tempo bounds do not overlap"):
        negotiate([Knobs(0, 0, 0)] * 2, bounds=[SafetyBounds(tempo=(0, 0.2)),
                                                 SafetyBounds(tempo=(0.5, 1))])


def test_performer_count_and_lists_are_checked():
    with pytest.raises(ValueError, match=r"performers must be an int in \[2, 8\], got 9"):
        check_performers(9)
    with pytest.raises(ValueError, match=r"in \[2, 8\], got 1"):
        negotiate([Knobs(0.5, 0.5, 0.5)])
    with pytest.raises(ValueError, match="boards has 2 entries but performers=3"):
        check_per_performer("boards", ["synthetic", "muse"], 3)
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        negotiate([Knobs(0.5, 0.5, 0.5)] * 2, weights=[1.0, -1.0])


def _bits(*pcs: int) -> int:
    return sum(1 << p for p in pcs)


def test_count_clashes_known_answers():
    # two voices, four sixteenth steps; C (0) against C# (1), G (7) and F# (6)
    sounding = np.array([[_bits(0), _bits(0), _bits(0), _bits(0)],
                         [_bits(1), _bits(7), _bits(6), _bits(1)]])
    onset = np.array([[_bits(0), 0, 0, 0],
                      [_bits(1), _bits(7), _bits(6), 0]])
    # step 0: m2 with an onset; step 1: fifth; step 2: tritone; step 3: m2, no onset
    assert int(count_clashes(sounding, onset)) == 2
    # a dissonance inside one voice is not a clash between voices
    one_voice = np.array([[_bits(0, 1)], [0]])
    assert int(count_clashes(one_voice, one_voice)) == 0
    # batched: shape (..., V, S)
    assert count_clashes(np.stack([sounding, sounding]), np.stack([onset, onset])).tolist() \
        == [2, 2]


def test_voice_masks_from_midi():
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)  # a quarter note = 0.5 s
    a, b = pretty_midi.Instrument(0), pretty_midi.Instrument(40)
    a.notes.append(pretty_midi.Note(80, 60, 0.0, 1.0))  # C, two quarters
    b.notes.append(pretty_midi.Note(80, 66, 0.5, 1.0))  # F#, from the second quarter
    pm.instruments = [a, b]
    sounding, onset = voice_masks(pm, [a, b], n_steps=8)
    assert sounding[0].tolist() == [1] * 8
    assert sounding[1].tolist() == [0] * 4 + [1 << 6] * 4
    assert onset[1].tolist() == [0, 0, 0, 0, 1 << 6, 0, 0, 0]
    assert int(count_clashes(sounding, onset)) == 1


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    return Ensemble()


def test_multivoice_phrase_parses_renders_and_measures(ensemble: Ensemble):
    props = [Knobs(0.2, 0.2, 0.2), Knobs(0.8, 0.6, 0.9), Knobs(0.6, 0.5, 0.5)]
    ph = ensemble.compose(props, seed=0)
    assert ph.negotiation.mode == "major" and all(v.key == "A" for v in ph.voices)
    assert re.search(r"^Q:1/4=(\d+)$", ph.abc, re.M).group(1) == str(round(ph.negotiation.bpm))
    assert ph.abc.count("\nV:") == 3
    assert check_abc(ph.abc).ok  # abc2midi, the project's independent parser
    score = music21.converter.parse(ph.abc, format="abc")
    assert len(score.parts) == 3 and all(len(p.flatten().notes) > 0 for p in score.parts)

    pm = ensemble.render(ph)
    voices = [i for i in pm.instruments if i.name.startswith("voice")]
    assert [i.name for i in voices] == ["voice 0", "voice 1", "voice 2"]
    assert [i.program for i in voices] == list(DEFAULT_PROGRAMS[:3])
    assert {i.name for i in pm.instruments} >= {"bass", "chords"}
    # the louder (higher-energy) voice plays louder
    vel = [np.mean([n.velocity for n in v.notes]) for v in voices]
    assert vel[1] > vel[0]
    m = ensemble.measure(pm, 3, ph.bars, ph.meter)
    assert len(m.voices) == 3 and m.n_bars == 4
    assert all(abs(f.bpm - ph.negotiation.bpm) < 0.5 for f in m.voices)
    s, o = voice_masks(pm, voices, 4 * 16)
    assert m.clashes == int(count_clashes(s, o)) and 0 <= m.clashes_per_bar <= 16

    # the next phrase continues each voice and keeps one key for the piece
    ph2 = ensemble.compose(props, context=ph, seed=1)
    assert {v.key for v in ph2.voices} == {ph2.negotiation.key}
    assert check_abc(ph2.abc).ok


def test_ensemble_rejects_bad_input(ensemble: Ensemble):
    with pytest.raises(ValueError, match=r"performers must be an int in \[2, 8\], got 1"):
        ensemble.compose([Knobs(0.5, 0.5, 0.5)])
    with pytest.raises(ValueError, match="distinct General MIDI programs"):
        Ensemble(composer=ensemble.composer, programs=(0, 0, 1))
