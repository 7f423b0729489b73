"""Fitting listeners to sessions: parameter recovery, bad input, recorded sessions, replay."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
from st_agent.biometrics.replay import ReplaySource
from st_agent.listener.fitting import (
    FitError,
    FitListenerConfig,
    SessionData,
    _predict,
    fit_listener,
    load_fit,
    load_session_data,
    run_fit_listener,
    simulated_session,
)
from st_agent.listener.model import EstimatorNoise, ListenerParams, random_features
from st_agent.listener.virtual import VirtualListenerSource
from st_agent.types import Knobs, Phrase

TRUE = ListenerParams(baseline_valence=0.1, baseline_arousal=-0.2, arousal_tempo=0.7,
                      arousal_density=0.3, arousal_loudness=0.2, valence_mode=0.5,
                      valence_register=0.2, preference=-0.4, tau_arousal_sec=20.0,
                      tau_valence_sec=35.0, habituation_strength=0.0, drift_std=0.02,
                      noise_std=0.03)
#: Tolerances of the recovery test (absolute; time constants relative).
TOL = {"baseline_valence": 0.1, "baseline_arousal": 0.1, "arousal_tempo": 0.15,
       "arousal_density": 0.15, "arousal_loudness": 0.15, "valence_mode": 0.15,
       "valence_register": 0.15, "preference": 0.25}
TAU_REL_TOL = 0.35


def test_fit_recovers_known_parameters_within_tolerance():
    data, latent = simulated_session(TRUE, 30.0, np.random.default_rng(0))
    res = fit_listener([data])
    for name, tol in TOL.items():
        got, want = getattr(res.params, name), getattr(TRUE, name)
        assert abs(got - want) < tol, f"{name}: fitted {got:.3f}, true {want:.3f}"
        assert res.stds[name] < tol  # the fit knows it is this precise
    for name in ("tau_arousal_sec", "tau_valence_sec"):
        got, want = getattr(res.params, name), getattr(TRUE, name)
        assert abs(got / want - 1) < TAU_REL_TOL, f"{name}: fitted {got:.1f}, true {want:.1f}"
    pred = _predict(res.params, data)  # noise-free prediction vs the true latent state
    sst = ((latent - latent.mean(axis=0)) ** 2).sum()
    assert 1 - ((pred - latent) ** 2).sum() / sst >= 0.7
    assert math.isfinite(res.heldout_r2)
    assert res.minutes_used == pytest.approx(30.0, abs=0.1)


def test_fit_is_reproducible():
    a = fit_listener([simulated_session(TRUE, 6.0, np.random.default_rng(1))[0]])
    b = fit_listener([simulated_session(TRUE, 6.0, np.random.default_rng(1))[0]])
    assert a.params == b.params


def test_too_short_says_how_much_is_needed():
    data, _ = simulated_session(TRUE, 2.0, np.random.default_rng(0))
    with pytest.raises(FitError, match=r"2\.0 minutes .* at least 5 minutes"):
        fit_listener([data])


def test_nan_features_rejected():
    with pytest.raises(FitError, match="NaN"):
        SessionData(np.full((10, 6), np.nan), np.zeros((11, 2)), 0.5)


# ------------------------------------------------------------------ recorded sessions

CONSENT = ConsentRecord("test-v1")


def _meta(src) -> SessionMeta:
    return SessionMeta(src.sfreq, src.ch_names, src.ch_types, consent=CONSENT)


def _phrase(knobs: Knobs) -> Phrase:
    return Phrase("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n", "CDEF GABc|", knobs, "4/4", "1/8",
                  "C", 1)


def _record(folder, minutes: float, seed: int = 0, with_features: bool = True):
    """Record a raw virtual-listener session: samples, phrases (+ features), states."""
    rng = np.random.default_rng(seed)
    params = dataclasses.replace(TRUE, arousal_tempo=1.0, valence_mode=0.8)
    src = VirtualListenerSource(params, rng=seed)
    est = StateEstimator(EstimatorConfig(calibration_sec=30, reference_model=False))
    plan, t = [], 30.0
    while t < 30 + minutes * 60:
        seg = float(rng.uniform(30, 60))
        plan.append((t, seg, random_features(rng, seg)))
        t += seg
    src.hear(None, 30.0)
    for _, seg, f in plan:
        src.hear(f, seg)
    with src, est, SessionRecorder(folder, _meta(src)) as rec:
        for t0, seg, f in plan:
            rec.write_phrase(_phrase(Knobs(0.5, 0.5, 0.5)), t_sec=t0, duration_sec=seg,
                             features=f if with_features else None)
        while src._next_sample / src.sfreq < t:
            chunk = src.read()
            rec.write_chunk(chunk)
            for e in est.push(chunk):
                if not e.bad and e.state.confidence > 0:
                    rec.write_state(e.state)
    return folder


@pytest.mark.slow
def test_fit_listener_on_a_recorded_raw_session(tmp_path):
    folder = _record(tmp_path / "s1", minutes=8.0)
    out = tmp_path / "out" / "listener.json"
    res = run_fit_listener(FitListenerConfig(sessions=[folder], out=out))
    doc = json.loads(out.read_text())
    assert doc["format"] == "st-agent-listener" and doc["version"] == 1
    assert set(doc["stds"]) <= set(doc["params"]) and doc["minutes_used"] > 5
    assert load_fit(out) == res.params
    assert math.isfinite(res.heldout_r2)
    # tempo is what drives this listener's arousal; the fit finds it
    assert res.params.arousal_tempo > 0.2


def test_session_without_music_features_says_what_is_missing(tmp_path):
    folder = tmp_path / "s"
    src = VirtualListenerSource(TRUE, rng=0)
    with src, SessionRecorder(folder, _meta(src)) as rec:
        rec.write_chunk(src.read())
        rec.write_phrase(_phrase(Knobs(0.5, 0.5, 0.5)), t_sec=0.0, duration_sec=8.0)
    with pytest.raises(FitError, match="features=measure_features"):
        load_session_data(folder)
    empty = tmp_path / "e"
    with src, SessionRecorder(empty, _meta(src)) as rec:
        rec.write_chunk(src.read())
    with pytest.raises(FitError, match="no phrase events"):
        load_session_data(empty)


def test_nan_in_recorded_features_is_named(tmp_path):
    folder = tmp_path / "s"
    src = VirtualListenerSource(TRUE, rng=0)
    feats = random_features(np.random.default_rng(0)).as_dict()
    feats["bpm"] = math.nan
    with src, SessionRecorder(folder, _meta(src)) as rec:
        rec.write_chunk(src.read())
        rec.write_event("phrase", 0.0, features=feats, duration_sec=8.0)
        for k in range(3):
            rec.write_event("state", k * 0.5, valence=0.0, arousal=0.0, confidence=1.0)
    with pytest.raises(FitError, match=r"bpm=nan"):
        load_session_data(folder)


def test_replay_streams_the_recorded_samples(tmp_path):
    folder = tmp_path / "s"
    src = VirtualListenerSource(TRUE, rng=0)
    with src, SessionRecorder(folder, _meta(src)) as rec:
        original = [src.read() for _ in range(12)]
        for c in original:
            rec.write_chunk(c)
    with ReplaySource(folder, chunk_sec=0.5) as rep:
        chunks = list(rep.iter_chunks())
    assert rep.ch_names == src.ch_names and rep.ch_types == src.ch_types
    got = np.hstack([c.data for c in chunks])
    want = np.hstack([c.data for c in original])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)  # float32 on disk
    assert chunks[1].first_sample == chunks[0].n_times


def test_identity_noise_model_observes_latent():
    noise = EstimatorNoise(std_valence=0.0, std_arousal=0.0, relative=False)
    data, latent = simulated_session(TRUE, 1.0, np.random.default_rng(0), noise=noise)
    np.testing.assert_allclose(data.obs[1:], latent[1:], atol=1e-12)
