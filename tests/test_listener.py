"""Listener dynamics: steady state, tempo sensitivity, validation, seeding, fast mode."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from st_agent.listener.model import (
    PARAM_RANGES,
    EstimatorNoise,
    FastListeners,
    ListenerParams,
    feature_vector,
    initial_state,
    random_features,
    sample_listeners,
    simulate,
    step,
)
from st_agent.types import MusicFeatures


def _music(bpm: float = 105.0, mode: str = "major", velocity: float = 73.0,
           nps: float = 5.0, pitch: float = 72.0) -> MusicFeatures:
    return MusicFeatures(duration_sec=8.0, bpm=bpm, notes_per_sec=nps, notes_per_beat=2.0,
                         mode=mode, mode_confidence=0.6, key=f"A {mode}", mean_pitch=pitch,
                         pitch_range=12.0, mean_velocity=velocity, n_notes=40)


def _quiet(**kw) -> ListenerParams:
    """A listener without noise, drift or habituation (deterministic)."""
    base = dict(noise_std=0.0, drift_std=0.0, habituation_strength=0.0)
    return ListenerParams(**{**base, **kw})


def _run(p: ListenerParams, feats: MusicFeatures | None, seconds: float, dt: float = 0.5):
    s = initial_state(p)
    for _ in range(round(seconds / dt)):
        s = step(p, s, feats, dt)
    return s


def test_converges_to_driven_steady_state():
    p = _quiet(arousal_tempo=0.8, valence_mode=0.5, tau_arousal_sec=10, tau_valence_sec=15)
    feats = _music(bpm=160, mode="minor")
    x = feature_vector(feats)
    want_a = math.tanh(p.baseline_arousal + p.arousal_tempo * x[0]
                       + p.arousal_density * x[1] + p.arousal_loudness * x[2])
    want_v = math.tanh(p.baseline_valence + p.valence_mode * x[3]
                       + p.valence_register * x[4] + p.preference * x[5])
    s = _run(p, feats, 300.0)
    assert s.arousal == pytest.approx(want_a, abs=1e-6)
    assert s.valence == pytest.approx(want_v, abs=1e-6)
    # the update is exact: one big step lands on the same point as many small ones
    big = step(p, initial_state(p), feats, 300.0)
    assert big.arousal == pytest.approx(want_a, abs=1e-6)


def test_simulate_matches_step():
    p = _quiet(habituation_strength=0.5, habituation_tau_sec=30)
    rng = np.random.default_rng(3)
    feats = [random_features(rng) for _ in range(40)]
    s = initial_state(p)
    traj = [(s.valence, s.arousal)]
    for f in feats:
        s = step(p, s, f, 2.0)
        traj.append((s.valence, s.arousal))
    np.testing.assert_allclose(simulate(p, np.stack([feature_vector(f) for f in feats]), 2.0),
                               traj, atol=1e-9)


@pytest.mark.parametrize(("sensitivity", "rises"), [(1.0, True), (0.0, False)])
def test_faster_tempo_raises_arousal_only_for_sensitive_listener(sensitivity, rises):
    p = _quiet(arousal_tempo=sensitivity, arousal_density=0.0, arousal_loudness=0.0)
    slow = _run(p, _music(bpm=60), 120.0).arousal
    fast = _run(p, _music(bpm=150), 120.0).arousal
    if rises:
        assert fast - slow > 0.5
    else:
        assert fast == pytest.approx(slow, abs=1e-9)


def test_preference_splits_slow_minor_music():
    soothed = _run(_quiet(preference=0.8), _music(bpm=55, mode="minor"), 300.0).valence
    saddened = _run(_quiet(preference=-0.8), _music(bpm=55, mode="minor"), 300.0).valence
    assert soothed - saddened > 0.5


def test_habituation_weakens_repeated_material():
    p = _quiet(arousal_tempo=1.0, habituation_strength=0.8, habituation_tau_sec=30)
    feats = _music(bpm=160)
    early = _run(dataclasses.replace(p, habituation_strength=0.0), feats, 300.0).arousal
    late = _run(p, feats, 300.0).arousal
    assert late < early - 0.2


@pytest.mark.parametrize(("name", "value"), [("arousal_tempo", 5.0), ("tau_arousal_sec", 1.0),
                                             ("preference", -1.5), ("noise_std", math.nan)])
def test_out_of_range_parameter_names_value_and_range(name, value):
    lo, hi = PARAM_RANGES[name]
    with pytest.raises(ValueError, match=rf"{name} must be in \[{lo:g}, {hi:g}\].*{value}"):
        ListenerParams(**{name: value})


def test_unknown_parameter_in_dict():
    with pytest.raises(ValueError, match="unknown listener parameters"):
        ListenerParams.from_dict({"tempo_love": 1.0})


def test_population_within_ranges_and_seeded():
    a = sample_listeners(200, rng=7)
    b = sample_listeners(200, rng=7)
    assert a == b
    assert a != sample_listeners(200, rng=8)
    arr = np.stack([p.as_array() for p in a])
    lo = np.array([r[0] for r in PARAM_RANGES.values()])
    hi = np.array([r[1] for r in PARAM_RANGES.values()])
    assert (arr >= lo).all() and (arr <= hi).all()
    assert arr.std(axis=0).min() > 0  # every parameter varies in the population


def test_noisy_step_is_reproducible():
    p = sample_listeners(1, rng=0)[0]

    def roll(seed):
        rng, s = np.random.default_rng(seed), initial_state(p)
        for _ in range(50):
            s = step(p, s, _music(), 1.0, rng)
        return s.valence, s.arousal

    assert roll(1) == roll(1)
    assert roll(1) != roll(2)


def test_fast_listeners_match_step_without_noise():
    ps = [_quiet(arousal_tempo=k) for k in (0.0, 0.5, 1.0)]
    noise = EstimatorNoise(std_valence=0.0, std_arousal=0.0, relative=False)
    group = FastListeners(ps, rng=0, noise=noise)
    feats = [_music(bpm=150), _music(bpm=60, mode="minor"), _music(bpm=100)]
    x = np.stack([feature_vector(f) for f in feats])
    for _ in range(20):
        obs = group.step(x, 3.0)
    for i, p in enumerate(ps):
        s = _run(p, feats[i], 60.0, dt=3.0)
        assert obs[i] == pytest.approx([s.valence, s.arousal], abs=1e-9)


def test_fast_listeners_seeded_and_noise_from_measured_file():
    noise = EstimatorNoise.load()
    assert noise.source != "placeholder" and noise.std_arousal > 0
    ps = sample_listeners(64, rng=1)
    x = np.stack([feature_vector(random_features(np.random.default_rng(i))) for i in range(64)])
    runs = []
    for _ in range(2):
        g = FastListeners(ps, rng=5)
        runs.append(np.stack([g.step(x, 0.5) for _ in range(20)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape == (20, 64, 2)
    assert np.abs(runs[0]).max() <= 1.0


def test_silence_is_the_zero_vector():
    assert not feature_vector(None).any()
