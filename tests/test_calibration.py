"""Calibration that cannot fail silently; eye artifacts that cost samples; montages."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import signal

from st_agent.biometrics.artifacts import GateCounter, masked_welch
from st_agent.biometrics.calibration import reliability_weights
from st_agent.biometrics.eeg_markers import peak_alpha_frequency
from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.montage import montage
from st_agent.types import SignalChunk

SFREQ = 250.0
NAMES = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2")
TYPES = ("eeg",) * len(NAMES)


def _eeg(seconds: float, seed: int = 0, alpha_hz: float = 10.0, alpha_uv: float = 10.0,
         names: tuple[str, ...] = NAMES) -> np.ndarray:
    """Pink-ish background + alpha (largest at O1/O2) + beta, volts."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    bg = signal.lfilter([1.0], [1.0, -0.95], rng.normal(0, 1.5, (len(names), n)), axis=-1)
    alpha_env = 1 + 0.3 * np.sin(2 * np.pi * 0.2 * t)
    gain = np.array([1.0 if n_.upper().startswith(("O", "P")) else 0.4 for n_ in names])
    x = bg + gain[:, None] * alpha_uv * alpha_env * np.sin(2 * np.pi * alpha_hz * t
                                                           + rng.uniform(0, 6.28))
    x += 2.0 * rng.normal(0, 1, (len(names), n))
    return x * 1e-6


def _blinks(x: np.ndarray, times_sec, amp_uv: float = 300.0) -> np.ndarray:
    t = np.arange(x.shape[1]) / SFREQ
    y = x.copy()
    for b in times_sec:
        y[:2] += amp_uv * 1e-6 * np.exp(-0.5 * ((t - b) / 0.07) ** 2)
    return y


def _push(est: StateEstimator, x: np.ndarray, names=NAMES, start: int = 0, chunk: int = 125):
    types = ("eeg",) * len(names)
    out = []
    for i in range(0, x.shape[1], chunk):
        out += est.push(SignalChunk(x[:, i:i + chunk], SFREQ, names, types,
                                    first_sample=start + i, t0_sec=(start + i) / SFREQ))
    return out


# ------------------------------------------------------------------ eye artifacts


def test_masked_welch_equals_scipy_when_all_clean():
    x = np.random.default_rng(0).normal(size=(3, 4, 500))
    f0, p0 = signal.welch(x, fs=SFREQ, nperseg=250, axis=-1)
    f1, p1 = masked_welch(x, np.ones((3, 500), dtype=bool), SFREQ, 250, taper=12)
    np.testing.assert_allclose(f0, f1)
    np.testing.assert_allclose(p0, p1, rtol=1e-10)


def test_a_blink_costs_its_samples_not_the_window():
    clean = _eeg(10.0, seed=1)
    est = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    ref = _push(est, clean)[-1]
    blinked = _blinks(clean, [9.0])  # inside the last window (8-10 s)
    est = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    last = _push(est, blinked)[-1]
    assert not last.bad and not last.quality["blink"]
    assert 0.1 < last.quality["eye_excluded"] < 0.5
    for k in ("eeg/alpha_post_power", "eeg/alpha_power", "eeg/beta_power"):
        assert last.features[k] == pytest.approx(ref.features[k], rel=0.25), k
    # without removing it, the blink would dominate the delta power; removed, delta is
    # estimated from less data (lower, within a factor of 2) but not inflated
    off = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False, blink_uv=1e5))
    raw = _push(off, blinked)[-1]
    delta = ref.features["eeg/delta_power"]
    assert raw.features["eeg/delta_power"] > 3 * delta
    assert 0.5 * delta < last.features["eeg/delta_power"] < 1.25 * delta
    assert est.gate_report().eye_excluded_share > 0
    assert est.gate_report().n_rejected == 0


def test_brief_spikes_cost_samples_and_lasting_ones_the_channel():
    x = _eeg(6.0, seed=2)
    x[:, 1300] = 5e-3  # one 5 mV sample on every channel (as in the eye-state file)
    est = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    out = _push(est, x)
    hit = [e for e in out if e.state.t_sec * SFREQ - 500 <= 1300 < e.state.t_sec * SFREQ]
    assert hit and all(not e.bad and not e.quality["saturated"] for e in hit)
    assert all(0 < e.quality["excluded"] < 0.2 for e in hit)
    assert all(math.isfinite(e.features["eeg/alpha_power"]) for e in hit)


# ------------------------------------------------------------------ calibration


def test_calibration_falls_back_after_timeout_and_says_why(caplog):
    """Blink flurries for 45 s but two short clean stretches: warning, then fallback."""
    x = _eeg(60.0, seed=3)
    flurry = [b for b in np.arange(0.3, 45, 0.6) if not (10 < b < 16 or 25 < b < 31)]
    x = _blinks(x, flurry)
    cfg = EstimatorConfig(calibration_sec=20.0, min_calibration_sec=5.0,
                          calibration_warn_sec=5.0, reference_model=False)
    est = StateEstimator(cfg)
    with caplog.at_level(logging.WARNING, logger="st_agent.biometrics.calibration"):
        early = _push(est, x[:, :round(30 * SFREQ)])
        st = est.calibration_status()
        assert st.phase == "calibrating" and not st.complete
        assert 0 < st.progress < 1 and st.blocking_gate == "blink" and st.blocking_share > 0.4
        assert "blink" in st.message and "falls back" in st.message
        assert any("blink" in r.getMessage() for r in caplog.records)
        assert all(e.state.confidence == 0 for e in early)
        late = _push(est, x[:, round(30 * SFREQ):], start=round(30 * SFREQ))
    st = est.calibration_status()
    assert st.phase == "fallback" and est.is_calibrated and est.baseline.fallback
    assert 0.3 < st.confidence < 1 and st.confidence == est.baseline.confidence
    t_done = next(e.state.t_sec for e in late if not e.quality["calibrating"])
    assert t_done == pytest.approx(40.5, abs=0.01)  # the timeout: 2 x 20 s of stream
    kinds = [ev.kind for ev in est.pop_events()]
    assert "calibration_warning" in kinds and "calibration_fallback" in kinds
    good = [e for e in late if not e.bad and not e.quality["calibrating"]]
    assert good and all(e.state.confidence <= st.confidence + 1e-9 for e in good)


def test_calibration_that_cannot_complete_keeps_saying_so():
    x = _eeg(50.0, seed=4)
    x[:5] = 0.0  # five of eight channels flat: every window fails the bad-channel gate
    cfg = EstimatorConfig(calibration_sec=10.0, reference_model=False)
    est = StateEstimator(cfg)
    out = _push(est, x)
    st = est.calibration_status()
    assert not est.is_calibrated and st.phase == "calibrating" and st.progress == 0
    assert st.blocking_gate == "bad_channels" and st.rejected_share == 1.0
    assert "waiting" in st.message and "bad_channels" in st.message
    assert all(e.state.confidence == 0 for e in out)
    assert est.gate_report().share("bad_channels") == 1.0


def test_completed_calibration_reports_done_with_full_confidence():
    est = StateEstimator(EstimatorConfig(calibration_sec=5.0, reference_model=False))
    _push(est, _eeg(10.0, seed=5))
    st = est.calibration_status()
    assert st.phase == "done" and st.confidence == 1.0 and st.progress == 1.0
    assert [ev.kind for ev in est.pop_events()].count("calibration_done") == 1
    off = StateEstimator(EstimatorConfig(calibration_sec=0, reference_model=False))
    assert off.calibration_status().phase == "disabled"


@pytest.mark.parametrize("alpha_hz", [9.0, 11.5])
def test_peak_alpha_frequency_sets_the_listeners_band(alpha_hz):
    est = StateEstimator(EstimatorConfig(calibration_sec=10.0, reference_model=False))
    _push(est, _eeg(14.0, seed=6, alpha_hz=alpha_hz))
    base = est.baseline
    assert base.paf_hz == pytest.approx(alpha_hz, abs=0.5)
    assert base.alpha_band == pytest.approx((base.paf_hz - 2, base.paf_hz + 2))
    assert est.calibration_status().alpha_band == base.alpha_band


def test_no_alpha_peak_keeps_the_default_band():
    freqs = np.arange(0, 65.0)
    pink = 1.0 / np.maximum(freqs, 1.0)
    paf, why = peak_alpha_frequency(freqs, pink)
    assert paf is None and "no alpha peak" in why
    bump = pink * (1 + 2 * np.exp(-0.5 * ((freqs - 10) / 1.0) ** 2))
    assert peak_alpha_frequency(freqs, bump)[0] == pytest.approx(10.0, abs=0.3)


def test_reliability_weights_favour_stable_markers():
    rng = np.random.default_rng(0)
    t = np.arange(120) * 0.5
    slow = np.cumsum(rng.normal(0, 0.3, t.size))  # drifts: reliable at a 2 s lag
    rows = [{"a": float(s), "b": float(rng.normal()), "hr/bpm": math.nan} for s in slow]
    w, notes = reliability_weights(rows, t, {"a": 1.0, "b": -1.0, "hr/bpm": 0.5, "c": 0.0},
                                   {"a": 2.0, "b": 2.0}, 0.5)
    assert w["a"] > 0.5 and -0.2 <= w["b"] < 0 and abs(w["a"]) > 3 * abs(w["b"])
    assert "hr/bpm" not in w and "absent" in notes["hr/bpm"] and "c" not in w


def test_gate_counter_and_report():
    gc = GateCounter()
    gc.add({"blink": True, "eye_excluded": 0.6, "flat": ["Fp1"], "saturated": []})
    gc.add({"muscle": True, "eye_excluded": 0.0, "flat": [], "saturated": []})
    gc.add({"eye_excluded": 0.1, "flat": [], "saturated": ["O2"]})
    rep = gc.report()
    assert rep.n_windows == 3 and rep.n_rejected == 2
    assert rep.share("blink") == pytest.approx(1 / 3) and rep.worst_gate() in ("blink", "muscle")
    assert rep.eye_excluded_share == pytest.approx(0.7 / 3)
    assert rep.flagged_channels == {"Fp1": 1, "O2": 1}
    assert rep.as_dict()["rejected_by_gate"]["muscle"] == pytest.approx(0.333)
    assert "67 % of 3 windows rejected" in rep.summary()
    with pytest.raises(ValueError, match="gate must be one of"):
        rep.share("eyes")


# ------------------------------------------------------------------ montages


@pytest.mark.parametrize(("names", "source", "sites"), [
    (("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"),
     "occipital/parietal", {"P7", "O1", "O2", "P8"}),
    (("TP9", "AF7", "AF8", "TP10"), "temporo-parietal", {"TP9", "TP10"}),
    (("Fp1", "Fp2", "F3", "F4"), "all channels (fallback)", {"Fp1", "Fp2", "F3", "F4"}),
    (("EEG Fp1", "EEG T5", "EEG T6", "EEG Pz", "EEG A2-A1"), "occipital/parietal",
     {"EEG T5", "EEG T6", "EEG Pz"}),
])
def test_alpha_sites_per_montage(names, source, sites):
    m = montage(names, ("eeg",) * len(names))
    assert m.alpha_source == source and set(m.alpha_names) == sites


def test_montage_without_occipital_channels_is_reported_and_estimated(caplog):
    names = ("Fp1", "Fp2", "F3", "F4")
    x = _eeg(8.0, seed=7, names=names)
    est = StateEstimator(EstimatorConfig(calibration_sec=2.0, reference_model=False))
    with caplog.at_level(logging.WARNING):
        out = _push(est, x, names=names)
    assert "no occipital/parietal channel" in est.marker_status()["eeg/alpha_post_lrel"]
    assert sum("no occipital" in r.getMessage() for r in caplog.records) == 1
    assert out[-1].state.confidence > 0 and math.isfinite(out[-1].features["eeg/alpha_post_lrel"])


def test_flat_eeg_channel_is_named_once_and_estimation_goes_on(caplog):
    x = _eeg(10.0, seed=8)
    x[NAMES.index("C3")] = 0.0
    est = StateEstimator(EstimatorConfig(calibration_sec=3.0, reference_model=False))
    with caplog.at_level(logging.WARNING):
        out = _push(est, x)
    assert "flat" in est.marker_status()["channel C3"]
    assert sum("C3 (flat)" in r.getMessage() for r in caplog.records) == 1
    assert not out[-1].bad and out[-1].state.confidence > 0
    assert out[-1].features["eeg/good_channels"] == len(NAMES) - 1
