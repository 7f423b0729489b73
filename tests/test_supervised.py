"""Per-listener supervised calibration: time-blocked CV, and the map driving arousal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.supervised import (
    Excerpt,
    blocked_cv,
    fit_supervised,
    label_windows,
    random_split_cv,
)
from st_agent.listener.model import ListenerParams
from st_agent.listener.virtual import VirtualListenerSource
from st_agent.types import MusicFeatures

CALM = MusicFeatures(8.0, 60.0, 2.0, 0.5, "major", 0.8, "C major", 64.0, 7.0, 45.0, 16)
ENERGETIC = MusicFeatures(8.0, 160.0, 12.0, 3.0, "major", 0.8, "C major", 76.0, 12.0, 105.0, 96)


def _drifting_blocks(seed: int, signal: float, n_feat: int = 30) -> tuple[np.ndarray, ...]:
    """Features like per-channel band powers: each excerpt has its own offset (slow state,
    electrode drift), windows overlap; optionally a real label effect on two features."""
    rng = np.random.default_rng(seed)
    n_exc, per = 8, 40  # 8 alternating excerpts of 40 windows (20 s at 0.5 s hops)
    y = np.repeat(np.arange(n_exc) % 2, per)
    groups = np.repeat(np.arange(n_exc), per)
    t = np.arange(y.size) * 0.5
    offsets = rng.normal(0, 1.0, (n_exc, n_feat))[groups]
    smooth = np.apply_along_axis(lambda c: np.convolve(c, np.ones(4) / 4, "same"), 0,
                                 rng.normal(0, 1, (y.size, n_feat)))  # window overlap
    effect = np.zeros(n_feat)
    effect[:2] = (1.0, -1.0)
    X = offsets + smooth + signal * y[:, None] * effect
    return X, y, groups, t


def test_time_blocked_cv_does_not_leak_where_random_splits_do():
    X, y, groups, t = _drifting_blocks(0, signal=0.0)  # no label effect at all
    leaky = random_split_cv(X, y, np.random.default_rng(0))
    honest = blocked_cv(X, y, groups, t)
    assert leaky > 0.85  # random folds learn each excerpt's offset from its neighbours
    assert abs(honest.mean_auc - 0.5) < 0.25 and len(honest.fold_auc) == 4


def test_a_real_label_effect_survives_blocked_cv():
    X, y, groups, t = _drifting_blocks(1, signal=3.0)
    assert blocked_cv(X, y, groups, t, model="lda").mean_auc > 0.9
    for model in ("lda", "logreg"):
        m = fit_supervised(X, y, model=model)
        assert m.model == model and m.score(X[y == 1].mean(0)) > m.score(X[y == 0].mean(0))


def test_label_windows_and_validation():
    ex = [Excerpt(0, 10.0, 20.0), Excerpt(1, 20.0, 30.0)]
    labels, groups = label_windows(np.array([11.0, 13.0, 21.0, 25.0, 31.0]), ex)
    assert labels.tolist() == [-1, 0, -1, 1, -1] and groups.tolist() == [-1, 0, -1, 1, -1]
    with pytest.raises(ValueError, match="label must be 0"):
        Excerpt(2, 0.0, 1.0)
    with pytest.raises(ValueError, match="end_sec"):
        Excerpt(0, 5.0, 5.0)
    with pytest.raises(ValueError, match="both labels"):
        fit_supervised(np.zeros((4, 3)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="model must be one of"):
        fit_supervised(np.zeros((4, 3)), np.array([0, 1, 0, 1]), model="svm")
    m = fit_supervised(np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2)
    with pytest.raises(ValueError, match="fitted on 3"):
        m.score(np.zeros(4))
    assert math.isnan(m.score(np.full(3, np.nan)))
    with pytest.raises(TypeError, match="SupervisedMap"):
        StateEstimator().set_supervised("lda")  # type: ignore[arg-type]


@pytest.mark.slow
def test_protocol_on_a_simulated_listener_drives_arousal():
    """Rest, alternating calm/energetic excerpts; fit with blocked CV; then the map steers."""
    params = ListenerParams(noise_std=0.0, drift_std=0.0, habituation_strength=0.0,
                            arousal_tempo=1.2, tau_arousal_sec=5.0)
    src = VirtualListenerSource(params, rng=4)
    src.hear(None, 40.0)
    excerpts, t0 = [], 40.0
    for k in range(10):
        label = k % 2
        src.hear(ENERGETIC if label else CALM, 30.0)
        excerpts.append(Excerpt(label, t0 + 10.0, t0 + 30.0))  # skip the transition
        t0 += 30.0
    est = StateEstimator(EstimatorConfig(calibration_sec=30.0, reference_model=False))
    n_chunks = round(30.0 / src.model.chunk_sec)
    with src, est:
        out = [e for _ in range(round(40.0 / src.model.chunk_sec) + 8 * n_chunks)
               for e in est.push(src.read())]
        t = np.array([e.state.t_sec for e in out])
        y, groups = label_windows(t, excerpts[:8])
        use = (y >= 0) & np.array([not e.bad for e in out])
        X = np.stack([out[i].log_bands for i in np.flatnonzero(use)])
        cv = blocked_cv(X, y[use], groups[use], t[use])
        assert cv.mean_auc > 0.8 and len(cv.fold_auc) == 4
        est.set_supervised(fit_supervised(X, y[use]))
        late = [e for _ in range(2 * n_chunks) for e in est.push(src.read())]
    arousal = {}
    for ex in excerpts[8:]:
        arousal[ex.label] = np.mean([e.state.arousal for e in late
                                     if ex.start_sec + 2 <= e.state.t_sec <= ex.end_sec])
    assert arousal[1] > arousal[0] + 0.5
