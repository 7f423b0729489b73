"""The listener-model family: each member's documented response, vectorisation, bad input."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from st_agent.listener.adaptation import AdaptationParams
from st_agent.listener.base import logu, uniform_block
from st_agent.listener.entrainment import EntrainmentParams
from st_agent.listener.family import (
    FAMILY_NAMES,
    PARAMS_CLASSES,
    check_families,
    family_of,
    params_from_dict,
    params_to_dict,
    sample_family,
    sample_population,
    sample_population_columns,
)
from st_agent.listener.fast import EstimatorNoise, FastListeners
from st_agent.listener.features import feature_vector, is_silence
from st_agent.listener.first_order import ListenerParams
from st_agent.listener.two_timescale import TwoTimescaleParams
from st_agent.types import MusicFeatures

QUIET = {"noise_std": 0.0, "drift_std": 0.0}


def _music(bpm: float = 105.0, mode: str = "major", velocity: float = 73.0,
           nps: float = 5.0, pitch: float = 72.0) -> np.ndarray:
    return feature_vector(MusicFeatures(
        duration_sec=8.0, bpm=bpm, notes_per_sec=nps, notes_per_beat=2.0, mode=mode,
        mode_confidence=0.6, key=f"A {mode}", mean_pitch=pitch, pitch_range=12.0,
        mean_velocity=velocity, n_notes=40))


SILENCE = np.zeros(6)


def _play(params, segments, dt: float = 1.0) -> np.ndarray:
    """Noise-free latent trajectory (one row per dt) over ``[(x, seconds), ...]``."""
    group = FastListeners([params], noise=EstimatorNoise())
    out = []
    for x, seconds in segments:
        for _ in range(round(seconds / dt)):
            out.append(group.advance(x, dt, noisy=False)[0].copy())
    return np.array(out)


def _breathing(params, segments, dt: float = 1.0) -> np.ndarray:
    group = FastListeners([params], noise=EstimatorNoise())
    out = []
    for x, seconds in segments:
        for _ in range(round(seconds / dt)):
            group.advance(x, dt, noisy=False)
            out.append(group.breathing_per_min[0])
    return np.array(out)


def _quiet(cls, **kw):
    return cls(**{**QUIET, **kw})


ONE_OF_EACH = [_quiet(ListenerParams, habituation_strength=0.0), _quiet(TwoTimescaleParams),
               _quiet(AdaptationParams), _quiet(EntrainmentParams)]


# ------------------------------------------------------------------ documented responses


def test_entrainment_breathing_follows_tempo():
    p = _quiet(EntrainmentParams, entrain_strength=0.6, beats_per_breath=6.0)
    rest = p.breath_rest_per_min
    fast = _breathing(p, [(_music(bpm=150), 240.0)])[-1]
    slow = _breathing(p, [(_music(bpm=55), 240.0)])[-1]
    assert fast > rest + 3 and slow < rest - 2  # paced toward 150/6 = 25 and 55/6 = 9 /min
    # and arousal goes with breathing (tempo acts through it)
    a_fast = _play(p, [(_music(bpm=150), 240.0)])[-1, 1]
    a_slow = _play(p, [(_music(bpm=55), 240.0)])[-1, 1]
    assert a_fast > a_slow + 0.3
    # a listener who does not entrain breathes at rest whatever the tempo
    flat = dataclasses.replace(p, entrain_strength=0.0)
    assert _breathing(flat, [(_music(bpm=150), 240.0)])[-1] == pytest.approx(rest)


def test_adaptation_shows_a_transient_after_a_change():
    p = _quiet(AdaptationParams, arousal_tempo=1.0, arousal_density=0.0, arousal_loudness=0.0,
               adapt_strength=0.6, adapt_tau_sec=60.0, novelty_gain=0.0, tau_arousal_sec=5.0)
    traj = _play(p, [(_music(bpm=105), 300.0), (_music(bpm=160), 400.0)])[:, 1]
    before, after = traj[299], traj[300:]
    peak = after.max()
    assert peak > before + 0.3  # the step up raises arousal...
    assert after[-1] < peak - 0.15  # ...then it adapts back toward a sustained level
    assert after[-1] > before  # partly: the new level stays above the old one
    # novelty: an arousal rise when the music changes, decaying in seconds
    q = dataclasses.replace(p, adapt_strength=0.0, novelty_gain=0.8, novelty_tau_sec=8.0,
                            arousal_tempo=0.0)
    nov = _play(q, [(_music(bpm=105), 120.0), (_music(bpm=140, mode="minor"), 60.0)])[:, 1]
    assert nov[120] > nov[119] + 0.2 and nov[-1] == pytest.approx(nov[119], abs=0.02)


def test_two_timescale_delay_and_slow_component():
    p = _quiet(TwoTimescaleParams, arousal_tempo=1.0, arousal_density=0.0,
               arousal_loudness=0.0, tau_delay_sec=6.0, tau_fast_sec=10.0, tau_slow_sec=300.0,
               fast_weight=0.5)
    a = _play(p, [(_music(bpm=160), 900.0)], dt=0.5)[:, 1]
    rest = p.rest_state[1]
    assert a[1] - rest < 0.25 * (a[20] - rest)  # delayed: a slow start, not a jump in slope
    assert a[120] - rest < 0.8 * (a[-1] - rest)  # after 60 s the slow component still grows
    assert a[-1] > a[600]


def test_minor_preferring_listener_valence_rises_with_minor():
    kw = {"valence_tempo": 0.0, "preference": 0.0, "valence_register": 0.0}
    for cls in (ListenerParams, TwoTimescaleParams, AdaptationParams, EntrainmentParams):
        likes_minor = _quiet(cls, valence_mode=-0.5, **kw)
        v_minor = _play(likes_minor, [(_music(mode="minor"), 300.0)])[-1, 0]
        v_major = _play(likes_minor, [(_music(mode="major"), 300.0)])[-1, 0]
        assert v_minor > v_major + 0.3, cls.__name__
        usual = _quiet(cls, valence_mode=0.5, **kw)
        assert _play(usual, [(_music(mode="minor"), 300.0)])[-1, 0] < \
            _play(usual, [(_music(mode="major"), 300.0)])[-1, 0] - 0.3


def test_tempo_raises_valence():
    p = _quiet(ListenerParams, valence_tempo=0.6, habituation_strength=0.0)
    assert _play(p, [(_music(bpm=155), 300.0)])[-1, 0] > \
        _play(p, [(_music(bpm=60), 300.0)])[-1, 0] + 0.4


def test_slow_minor_backfires_for_an_agitated_listener():
    slow_minor = _music(bpm=55, mode="minor", velocity=45, nps=2.0)
    for cls in (ListenerParams, AdaptationParams):
        calm = _quiet(cls, slow_minor_arousal=0.0)
        agitated = _quiet(cls, slow_minor_arousal=0.9)
        rest = calm.rest_state[1]
        assert _play(calm, [(slow_minor, 300.0)])[-1, 1] < rest - 0.2  # calms most people
        assert _play(agitated, [(slow_minor, 300.0)])[-1, 1] > rest  # agitates this one


@pytest.mark.parametrize("params", ONE_OF_EACH, ids=lambda p: p.family)
def test_pause_after_music_lowers_arousal_below_rest(params):
    p = dataclasses.replace(params, silence_arousal=-0.5, exposure_tau_sec=30.0)
    rest = p.rest_state[1]
    before = _play(p, [(SILENCE, 120.0)])[-1, 1]
    assert before == pytest.approx(rest, abs=1e-9)  # calibration rest: at baseline
    after = _play(p, [(_music(bpm=105), 180.0), (SILENCE, 120.0)])[-1, 1]
    assert after < rest - 0.15  # Bernardi et al. 2006: below baseline


def test_repeating_calm_music_stays_calming():
    """Habituation weakens only the arousing drive: varied music is not more calming."""
    p = _quiet(ListenerParams, habituation_strength=0.8, habituation_tau_sec=30.0)
    calm_a, calm_b = _music(bpm=55, velocity=45, nps=2.0), _music(bpm=62, velocity=40, nps=1.6,
                                                                   pitch=66)
    same = _play(p, [(calm_a, 600.0)])[-60:, 1].mean()
    varied = _play(p, [(calm_a, 30.0), (calm_b, 30.0)] * 10)[-60:, 1].mean()
    assert same <= varied + 0.02


@pytest.mark.parametrize("params", ONE_OF_EACH, ids=lambda p: p.family)
def test_update_is_exact_for_any_step(params):
    p = dataclasses.replace(params, silence_arousal=-0.3)
    one = FastListeners([p], noise=EstimatorNoise())
    many = FastListeners([p], noise=EstimatorNoise())
    for x in (_music(bpm=150), _music(bpm=60, mode="minor"), SILENCE):
        one.advance(x, 40.0, noisy=False)
        for _ in range(400):
            many.advance(x, 0.1, noisy=False)
        np.testing.assert_allclose(one.state, many.state, atol=1e-9)


# ------------------------------------------------------------------ vectorised


def test_mixed_population_equals_each_listener_alone_with_the_same_noise():
    params = sample_population(24, rng=3)
    assert len({family_of(p) for p in params}) == len(FAMILY_NAMES)
    rng = np.random.default_rng(0)
    xs = rng.choice([0, 1, 2], size=(30, 24))
    feats = np.stack([SILENCE, _music(bpm=150), _music(bpm=60, mode="minor")])
    z = rng.standard_normal((30, 24, 4))
    dt = rng.uniform(4.0, 9.0, (30, 24))
    mixed = FastListeners(params, noise=EstimatorNoise())
    alone = [FastListeners([p], noise=EstimatorNoise()) for p in params]
    for t in range(30):
        mixed.advance(feats[xs[t]], dt[t], z=z[t])
        for i, g in enumerate(alone):
            g.advance(feats[xs[t, i]], dt[t, i:i + 1], z=z[t, i:i + 1])
        np.testing.assert_array_equal(mixed.state, np.stack([g.state[0] for g in alone]))
    np.testing.assert_array_equal(mixed.breathing_per_min,
                                  [g.breathing_per_min[0] for g in alone])


def test_seeded_population_and_dynamics_are_reproducible():
    assert sample_population(40, rng=5) == sample_population(40, rng=5)
    assert sample_population(40, rng=5) != sample_population(40, rng=6)

    def run(seed):
        g = FastListeners(sample_population(16, rng=1), rng=seed)
        return np.stack([g.step(_music(bpm=120), 6.0) for _ in range(10)])

    np.testing.assert_array_equal(run(2), run(2))
    assert not np.array_equal(run(2), run(3))


def test_replace_can_change_a_rows_family():
    a = FastListeners(sample_population(6, rng=0, families=["first_order"]), rng=0)
    for _ in range(3):
        a.step(_music(), 5.0)
    kept = copy.deepcopy(a)
    fresh = FastListeners(sample_population(2, rng=1, families=["entrainment"]), rng=1)
    a.replace(np.array([1, 4]), fresh)
    assert list(a.families) == ["first_order", "entrainment", "first_order", "first_order",
                                "entrainment", "first_order"]
    for x in (_music(bpm=150), SILENCE):
        a.advance(x, 7.0, noisy=False)
        kept.advance(x, 7.0, noisy=False)
        fresh.advance(x, 7.0, noisy=False)
    np.testing.assert_allclose(a.state[[0, 2, 3, 5]], kept.state[[0, 2, 3, 5]], atol=1e-12)
    np.testing.assert_allclose(a.state[[1, 4]], fresh.state, atol=1e-12)


def test_predict_is_noise_free_advance_and_keeps_the_state():
    g = FastListeners(sample_population(8, rng=2), rng=0)
    g.step(_music(), 8.0)
    before = g.state.copy()
    seq = np.stack([_music(bpm=150), SILENCE, _music(bpm=60)])
    traj = g.predict(seq, np.array([8.0, 6.0, 8.0]))
    np.testing.assert_array_equal(g.state, before)
    twin = copy.deepcopy(g)
    for k, x in enumerate(seq):
        twin.advance(x, [8.0, 6.0, 8.0][k], noisy=False)
        np.testing.assert_allclose(traj[:, k], twin.state, atol=1e-12)


def test_each_family_has_its_documented_population_spread():
    for name in FAMILY_NAMES:
        group = sample_family(name, 300, rng=0)
        assert {family_of(p) for p in group} == {name}
        mode = np.array([p.valence_mode for p in group])
        agit = np.array([p.slow_minor_arousal for p in group])
        assert 0.1 < (mode < 0).mean() < 0.3  # minor-preferring listeners (20 %)
        assert 0.15 < (agit > 0).mean() < 0.35  # slow minor agitates a quarter
        arr = np.stack([p.as_array() for p in group])
        lo = np.array([r[0] for r in type(group[0]).RANGES.values()])
        hi = np.array([r[1] for r in type(group[0]).RANGES.values()])
        assert (arr >= lo).all() and (arr <= hi).all()


def test_params_round_trip_through_dicts():
    for p in sample_population(12, rng=4):
        assert params_from_dict(params_to_dict(p)) == p
    assert params_from_dict(ListenerParams().as_dict()) == ListenerParams()  # legacy files


def test_silence_is_the_zero_vector_and_music_never_is():
    assert is_silence(feature_vector(None))
    assert not is_silence(_music(bpm=105, velocity=73, nps=5.0, pitch=72.0))


# ------------------------------------------------------------------ bad input


def test_unknown_family_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown listener family 'sleepy'.*first_order"):
        check_families(["first_order", "sleepy"])
    with pytest.raises(ValueError, match="at least one"):
        check_families([])
    with pytest.raises(ValueError, match="repeat"):
        check_families(["adaptation", "adaptation"])
    with pytest.raises(ValueError, match="unknown listener family"):
        sample_population(3, rng=0, families=["nope"])
    with pytest.raises(ValueError, match="unknown listener family"):
        params_from_dict({"family": "nope"})


@pytest.mark.parametrize("cls", list(PARAMS_CLASSES.values()), ids=lambda c: c.family)
def test_out_of_range_parameters_name_value_and_range(cls):
    name = next(n for n in cls.RANGES if n not in ListenerParams.RANGES) \
        if cls is not ListenerParams else "tau_arousal_sec"
    lo, hi = cls.RANGES[name]
    with pytest.raises(ValueError, match=rf"{name} must be in \[{lo:g}, {hi:g}\].*{hi + 1}"):
        cls(**{name: hi + 1})
    with pytest.raises(ValueError, match="unknown listener parameters"):
        cls.from_dict({"tempo_love": 1.0})


def test_fast_listeners_rejects_what_is_not_a_listener():
    with pytest.raises(TypeError, match="first_order"):
        FastListeners([{"baseline_valence": 0.1}])
    with pytest.raises(ValueError, match="z must have shape"):
        FastListeners([ListenerParams()]).advance(SILENCE, 1.0, z=np.zeros((2, 4)))


def test_predict_candidates_equals_predict_of_each_candidate():
    g = FastListeners(sample_population(5, rng=7), rng=0)
    g.step(_music(), 8.0)
    cands = np.stack([np.stack([_music(bpm=b), SILENCE]) for b in (60, 100, 150)])  # (3, 2, 6)
    got = g.predict_candidates(cands, np.array([8.0, 6.0]), i=3)
    for c in range(3):
        want = g.predict(cands[c], np.array([8.0, 6.0]))[3]
        np.testing.assert_allclose(got[c], want, atol=1e-12)


def test_pickled_and_copied_groups_step_like_the_original():
    import pickle

    g = FastListeners(sample_population(9, rng=8), rng=0)
    g.step(_music(), 8.0)
    twins = [pickle.loads(pickle.dumps(g)), copy.deepcopy(g)]
    for _ in range(3):
        want = g.step(_music(bpm=140), 7.0)
        for t in twins:
            np.testing.assert_array_equal(t.step(_music(bpm=140), 7.0), want)


@pytest.mark.parametrize("families", [None, ["entrainment"], ["first_order", "adaptation"]])
def test_population_columns_are_the_population_draws(families):
    """The array path (vectorised env resets) draws exactly what the objects hold."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    objs = sample_population(23, rng=a, families=families)
    seen = 0
    for name, rows, cols in sample_population_columns(23, rng=b, families=families):
        assert set(cols) == set(PARAMS_CLASSES[name].RANGES)
        for j, r in enumerate(rows):
            assert family_of(objs[r]) == name
            assert objs[r].as_dict() == {k: float(v[j]) for k, v in cols.items()}
            seen += 1
    assert seen == 23
    assert a.random() == b.random()  # the generators advanced alike


def test_uniform_block_is_the_uniform_calls_one_after_another():
    spec = (("a", -0.5, 0.25, False), ("b", 10.0, 400.0, True), ("c", 0.0, 1.0, False))
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    block = uniform_block(a, spec, 17)
    want = [b.uniform(-0.5, 0.25, 17), logu(b, 10.0, 400.0, 17), b.uniform(0.0, 1.0, 17)]
    np.testing.assert_array_equal(block, np.stack(want))  # bit for bit
    assert a.random() == b.random()
