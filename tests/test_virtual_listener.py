"""Virtual listener source: signals, the real estimator on them, seeding, replay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.listener.model import ListenerParams
from st_agent.listener.virtual import MONTAGE, SignalModel, VirtualListenerSource
from st_agent.types import MusicFeatures


def _fixed(valence: float, arousal: float) -> ListenerParams:
    """A listener held at one latent state (no noise, drift or music response)."""
    return ListenerParams(baseline_valence=float(np.arctanh(valence)),
                          baseline_arousal=float(np.arctanh(arousal)), noise_std=0.0,
                          drift_std=0.0)


def _features(src: VirtualListenerSource, seconds: float, est: StateEstimator) -> list[dict]:
    out = []
    for _ in range(round(seconds / src.model.chunk_sec)):
        out += [e for e in est.push(src.read()) if not e.bad]
    return out


def test_chunks_are_volts_with_named_montage_and_contiguous():
    with VirtualListenerSource(ListenerParams(), rng=0) as src:
        a, b = src.read(), src.read()
    assert a.ch_names[:len(MONTAGE)] == MONTAGE and {"F3", "F4", "Fz", "O1"} <= set(a.ch_names)
    assert a.ch_types[-2:] == ("ecg", "emg")
    assert b.first_sample == a.first_sample + a.n_times
    eeg = a.data[a.picks("eeg")]
    assert 1e-6 < eeg.std() < 1e-4  # tens of µV, in volts


def test_seed_makes_every_draw_reproducible():
    def stream(seed):
        with VirtualListenerSource(ListenerParams(), rng=seed) as src:
            return np.hstack([src.read().data for _ in range(20)])

    np.testing.assert_array_equal(stream(3), stream(3))
    assert not np.array_equal(stream(3), stream(4))


def test_calm_state_has_more_alpha_through_the_real_estimator():
    cfg = EstimatorConfig(calibration_sec=0, reference_model=False)
    alpha = {}
    for name, arousal in (("calm", -0.5), ("aroused", 0.5)):
        src = VirtualListenerSource(_fixed(0.0, arousal), rng=1)
        with src, StateEstimator(cfg) as est:
            feats = _features(src, 30.0, est)
        # 59 windows in 30 s; at 17 blinks/min (Bentivoglio et al. 1997) the blink gate
        # rejects a good share of the 2 s windows
        assert len(feats) > 25
        alpha[name] = np.mean([e.features["eeg/alpha_power"] for e in feats])
        alpha[name + "_hr"] = np.mean([e.features["hr/bpm"] for e in feats
                                       if "hr/bpm" in e.features])
    assert alpha["calm"] > 1.5 * alpha["aroused"]
    assert alpha["aroused_hr"] > alpha["calm_hr"] + 5


def test_estimator_tracks_state_after_calibration():
    """Rest calibration on a neutral listener, then a jump to a happy, aroused state."""
    src = VirtualListenerSource(ListenerParams(noise_std=0.0, drift_std=0.0,
                                               habituation_strength=0.0, arousal_tempo=1.2,
                                               valence_mode=1.0, tau_arousal_sec=5,
                                               tau_valence_sec=5, baseline_valence=0.0,
                                               baseline_arousal=0.0), rng=2)
    bright_fast = MusicFeatures(8.0, 160.0, 10.0, 3.0, "major", 0.8, "C major", 76.0, 12.0,
                                100.0, 80)
    src.hear(None, 30.0)
    src.hear(bright_fast, 60.0)
    est = StateEstimator(EstimatorConfig(calibration_sec=20, reference_model=False))
    with src, est:
        states = [e.state for e in _features(src, 90.0, est)]
    late = [s for s in states if s.t_sec > 60]
    assert np.mean([s.arousal for s in late]) > 0.4
    assert np.mean([s.valence for s in late]) > 0.2


def test_blinks_are_gated_not_passed_through():
    model = SignalModel(blink_rate_per_min=30.0)
    src = VirtualListenerSource(ListenerParams(), model=model, rng=0)
    est = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    with src, est:
        out = [e for _ in range(240) for e in est.push(src.read())]
    blinks = [e for e in out if e.quality["blink"]]
    assert 0.1 < len(blinks) / len(out) < 0.9
    assert all(e.bad for e in blinks)


def test_ppg_variant_gives_heart_rate():
    model = SignalModel(cardiac="ppg")
    src = VirtualListenerSource(_fixed(0.0, 0.0), model=model, rng=0)
    est = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    with src, est:
        feats = _features(src, 20.0, est)
    hr = [e.features["hr/bpm"] for e in feats if "hr/bpm" in e.features]
    assert src.ch_types[-2] == "ppg"
    assert abs(np.mean(hr) - src.hr_rest_bpm) < 5


def test_hear_validates_and_queues():
    src = VirtualListenerSource(ListenerParams(), rng=0)
    with pytest.raises(ValueError, match="duration_sec"):
        src.hear(None)
    with pytest.raises(TypeError, match="MusicFeatures"):
        src.hear({"bpm": 100}, 5.0)
    with pytest.raises(ValueError, match="blink_rate_per_min"):
        SignalModel(blink_rate_per_min=-1)


def test_realtime_mode_waits_for_the_clock():
    src = VirtualListenerSource(ListenerParams(), rng=0, realtime=True,
                                model=dataclasses.replace(SignalModel(), chunk_sec=0.1))
    with src:
        assert src.read(timeout_sec=0.0) is None  # the first chunk is not due yet
        assert src.read(timeout_sec=1.0) is not None


@pytest.fixture(scope="module")
def composed_features() -> dict[str, MusicFeatures]:
    """Features measured from phrases of the bundled composer, rendered for real."""
    from st_agent.music.composer import Composer
    from st_agent.music.render import measure_features, render_phrase
    from st_agent.types import Knobs

    composer = Composer()
    out = {}
    for name, knobs in (("fast_loud", Knobs(0.9, 0.9, 0.9)), ("slow_quiet", Knobs(0.3, 0.0, 0.0))):
        ph = composer.compose(knobs, seed=0)
        out[name] = measure_features(render_phrase(ph.abc, ph.key, ph.knobs))
    return out


def test_composed_fast_phrase_raises_arousal_of_tempo_sensitive_listener(composed_features):
    """Composer -> renderer -> measured features -> listener dynamics -> signals -> estimator."""
    fast, slow = composed_features["fast_loud"], composed_features["slow_quiet"]
    assert fast.bpm > slow.bpm and fast.notes_per_sec > slow.notes_per_sec
    params = ListenerParams(arousal_tempo=1.0, noise_std=0.0, drift_std=0.0,
                            habituation_strength=0.0, tau_arousal_sec=15.0)
    rest = params.rest_state[1]
    latent, estimated = {}, {}
    for name, feats in (("fast_loud", fast), ("slow_quiet", slow)):
        src = VirtualListenerSource(params, rng=7)
        src.hear(None, 30.0)  # rest: the estimator's calibration
        src.hear(feats, 60.0)  # the phrase, looped
        est = StateEstimator(EstimatorConfig(calibration_sec=25, reference_model=False))
        with src, est:
            states = [e.state for e in _features(src, 90.0, est)]
        latent[name] = src.latent[1]
        estimated[name] = np.mean([s.arousal for s in states if s.t_sec > 70])
    assert latent["fast_loud"] > rest + 0.3  # arousal ends well above rest
    assert latent["slow_quiet"] < latent["fast_loud"] - 0.5  # the quiet phrase raises it less
    assert latent["slow_quiet"] <= rest + 1e-9  # (slow, sparse, soft: it lowers it)
    # and the real estimator, from the synthesised signals, sees the same order
    assert estimated["fast_loud"] > estimated["slow_quiet"] + 0.3
    assert estimated["fast_loud"] > 0.2


@pytest.mark.parametrize("family", ["first_order", "two_timescale", "adaptation",
                                    "entrainment"])
def test_renders_every_family_member(family):
    from st_agent.listener.family import sample_family

    params = sample_family(family, 1, rng=0)[0]
    with VirtualListenerSource(params, rng=0) as src:
        src.hear(None, 2.0)
        chunks = [src.read() for _ in range(12)]
    assert src.family == family
    assert src.state.t_sec == pytest.approx(sum(c.n_times for c in chunks) / src.sfreq)
    data = np.hstack([c.data for c in chunks])
    assert np.isfinite(data).all() and data.shape[0] == len(MONTAGE) + 2


def test_entrainment_breathing_follows_the_tempo_in_the_signals():
    """The RESP belt (and the sinus arrhythmia) run at the breathing rate the tempo paces."""
    from st_agent.listener.entrainment import EntrainmentParams

    params = EntrainmentParams(entrain_strength=0.8, beats_per_breath=6.0, tau_breath_sec=10.0,
                               noise_std=0.0, drift_std=0.0)
    peak, rate = {}, {}
    for name, bpm in (("fast", 150.0), ("slow", 55.0)):
        feats = MusicFeatures(duration_sec=8.0, bpm=bpm, notes_per_sec=4.0, notes_per_beat=1.5,
                              mode="major", mode_confidence=0.6, key="C major",
                              mean_pitch=72.0, pitch_range=12.0, mean_velocity=70.0,
                              n_notes=32)
        src = VirtualListenerSource(params, model=SignalModel(respiration=True, chunk_sec=1.0),
                                    rng=3)
        src.hear(feats, 200.0)
        with src:
            chunks = [src.read() for _ in range(200)]
        resp = np.concatenate([c.data[-1] for c in chunks[-120:]])  # last 120 s
        assert chunks[0].ch_types[-1] == "resp"
        spec = np.abs(np.fft.rfft(resp - resp.mean()))
        freqs = np.fft.rfftfreq(resp.size, 1 / src.sfreq)
        peak[name] = freqs[np.argmax(spec)]
        rate[name] = src.breathing_per_min / 60.0
    assert peak["fast"] == pytest.approx(rate["fast"], abs=0.02)
    assert peak["slow"] == pytest.approx(rate["slow"], abs=0.02)
    assert rate["fast"] > rate["slow"] + 0.15  # about 23 vs 10 breaths per minute
