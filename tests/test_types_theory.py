"""Typed values guard their rules; keys, modes and key-finding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from st_agent.theory import find_key, parse_key
from st_agent.types import EmotionState, Knobs, MusicFeatures, Phrase, bpm_from_tempo


@pytest.mark.parametrize("name", ["valence", "tempo", "energy"])
@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf])
def test_knob_out_of_range_names_knob_and_value(name, bad):
    values = {"valence": 0.5, "tempo": 0.5, "energy": 0.5, name: bad}
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\], got {bad!r}"):
        Knobs(**values)


def test_knob_type_and_bpm():
    with pytest.raises(TypeError, match="tempo must be a number"):
        Knobs(0.5, "fast", 0.5)
    assert Knobs(0.0, 0.0, 0.0).bpm == 50.0 and Knobs(0, 1, 0).bpm == 160.0
    assert bpm_from_tempo(0.3) == 83.0
    assert "valence=0.20" in repr(Knobs(0.2, 0.3, 0.1))


def test_emotion_state_and_features_validate():
    EmotionState(-1.0, 1.0, 0.5, 3.0)
    with pytest.raises(ValueError, match="arousal must be in"):
        EmotionState(0.0, 1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        MusicFeatures(1, 100, 1, 1, "dorian", 0.5, "A", 60, 5, 80, 10)
    with pytest.raises(ValueError, match="notes_per_sec must be finite"):
        MusicFeatures(1, 100, math.nan, 1, "major", 0.5, "A", 60, 5, 80, 10)


def test_phrase_requires_a_complete_tune():
    k = Knobs(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="K: field"):
        Phrase(abc="ABC|", body="ABC|", knobs=k, meter="4/4", unit="1/8", key="G", bars=1)
    with pytest.raises(TypeError, match="knobs must be a Knobs"):
        Phrase(abc="K:G\nA|", body="A|", knobs=(1, 2, 3), meter="4/4", unit="1/8", key="G",
               bars=1)


@pytest.mark.parametrize("value, pc, mode, family, acc", [
    ("G", 7, "ionian", "major", {"F": 1}),
    ("Em", 4, "aeolian", "minor", {"F": 1}),
    ("Ador", 9, "dorian", "minor", {"F": 1}),
    ("D Mixolydian", 2, "mixolydian", "major", {"F": 1}),
    ("Bb", 10, "ionian", "major", {"B": -1, "E": -1}),
    ("F#m", 6, "aeolian", "minor", {"F": 1, "G": 1, "C": 1}),
    ("A Minor", 9, "aeolian", "minor", {}),
])
def test_parse_key(value, pc, mode, family, acc):
    key = parse_key(value)
    assert (key.tonic_pc, key.mode, key.family) == (pc, mode, family)
    assert key.accidentals() == acc


@pytest.mark.parametrize("bad", ["H", "", "Xyz", "Gfoo"])
def test_parse_key_rejects_junk(bad):
    with pytest.raises(ValueError, match="key"):
        parse_key(bad)


def test_find_key_on_scales_and_triads():
    c_major = np.zeros(12)
    c_major[[0, 2, 4, 5, 7, 9, 11]] = 1
    c_major[[0, 4, 7]] += 2  # tonic triad emphasised
    assert find_key(c_major)[:2] == (0, "major")
    a_minor = np.zeros(12)
    a_minor[[9, 11, 0, 2, 4, 5, 7]] = 1
    a_minor[[9, 0, 4]] += 2
    assert find_key(a_minor)[:2] == (9, "minor")
    assert find_key(np.zeros(12)) == (0, "major", 0.0)
    with pytest.raises(ValueError, match="shape"):
        find_key(np.ones(7))
