"""State estimator: known-answer band powers, mapping, gating, real EEG, whole chain."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.estimator import (
    Baseline,
    EstimatorConfig,
    StateEstimator,
    features_from_window,
    normalize_ch_name,
)
from st_agent.biometrics.sources import BrainFlowSource, FileSource
from st_agent.types import SignalChunk

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
REAL_EDFS = sorted(EEG_DIR.glob("*.edf")) if EEG_DIR.is_dir() else []
needs_real = pytest.mark.skipif(not REAL_EDFS, reason=f"real EEG folder {EEG_DIR} is absent")

SFREQ = 250.0
NAMES = ("EEG Fp1", "EEG Fp2", "EEG F3", "EEG F4", "EEG C3", "EEG C4", "EEG O1", "EEG O2")
TYPES = ("eeg",) * len(NAMES)


def _eeg(seconds: float, alpha_uv: float = 10.0, beta_uv: float = 3.0, seed: int = 0,
         n_ch: int = len(NAMES), noise_uv: float = 1.0) -> np.ndarray:
    """EEG-like signal in volts: 10 Hz alpha + 20 Hz beta + white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SFREQ)) / SFREQ
    phase = rng.uniform(0, 2 * np.pi, (n_ch, 2))
    x = (alpha_uv * np.sin(2 * np.pi * 10 * t + phase[:, :1])
         + beta_uv * np.sin(2 * np.pi * 20 * t + phase[:, 1:])
         + rng.normal(0, noise_uv, (n_ch, t.size)))
    return x * 1e-6


def _chunks(data: np.ndarray, names=NAMES, types=TYPES, chunk: int = 125, start: int = 0):
    for i in range(0, data.shape[1], chunk):
        yield SignalChunk(data[:, i:i + chunk], SFREQ, names, types, first_sample=start + i,
                          t0_sec=(start + i) / SFREQ)


def _run(est: StateEstimator, data: np.ndarray, **kw) -> list:
    return [e for c in _chunks(data, **kw) for e in est.push(c)]


def _config(**kw) -> EstimatorConfig:
    kw.setdefault("calibration_sec", 5.0)
    kw.setdefault("reference_model", False)
    return EstimatorConfig(**kw)


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(("raw", "label"), [
    ("EEG Fp1", "FP1"), ("Fc5.", "FC5"), ("FP1", "FP1"), ("fp1", "FP1"), ("Fp1-REF", "FP1"),
    ("EEG A2-A1", "A2"), ("AF8", "AF8"), ("Cz..", "CZ"), ("EEG-T3", "T3"),
    ("ECG ECG", None), ("EEG1", None), ("Marker", None),
])
def test_normalize_ch_name(raw, label):
    assert normalize_ch_name(raw) == label


# ------------------------------------------------------------------ known answers


@pytest.mark.parametrize(("freq", "band"), [(2.5, "delta"), (6.0, "theta"), (10.0, "alpha"),
                                            (20.0, "beta"), (38.0, "gamma")])
def test_sinusoid_lands_in_its_band_with_known_power(freq, band):
    amp_uv = 10.0
    t = np.arange(500) / SFREQ
    x = np.tile(amp_uv * 1e-6 * np.sin(2 * np.pi * freq * t), (4, 1))
    f, q = features_from_window(x, SFREQ, ("F3", "F4", "C3", "C4"), ("eeg",) * 4,
                                EstimatorConfig(muscle_ratio=1.0))
    assert f[f"eeg/{band}_rel"] > 0.9
    # a sine of amplitude A has power A^2/2 (Welch with a Hann window, within 10 %)
    assert f[f"eeg/{band}_power"] == pytest.approx(amp_uv**2 / 2, rel=0.1)
    assert f[f"eeg/{band}_de"] == pytest.approx(
        0.5 * math.log(2 * math.pi * math.e * f[f"eeg/{band}_power"]), rel=0.05)
    assert not q["bad"]


def test_faa_sign_and_pair_choice():
    x = _eeg(2.0, seed=1)
    names = list(NAMES)
    x[names.index("EEG F4")] *= 2.0  # more right-frontal alpha
    f, q = features_from_window(x, SFREQ, NAMES, TYPES, _config())
    assert q["faa_pair"] == ("F4", "F3")
    assert f["eeg/faa"] == pytest.approx(math.log(4.0), abs=0.3)  # power ratio 4
    muse = ("TP9", "AF7", "AF8", "TP10")
    f, q = features_from_window(_eeg(2.0, n_ch=4), SFREQ, muse, ("eeg",) * 4, _config())
    assert q["faa_pair"] == ("AF8", "AF7") and math.isfinite(f["eeg/faa"])


def test_ratios_heart_rate_emg_and_eda():
    n = round(8 * SFREQ)
    t = np.arange(n) / SFREQ
    ecg = np.zeros(n)
    beats = np.arange(0.3, 8, 60 / 72)  # 72 bpm
    for b in beats:
        ecg += 1e-3 * np.exp(-0.5 * ((t - b) / 0.01) ** 2)
    emg = np.random.default_rng(3).normal(0, 20e-6, n)
    eda = np.full(n, 2e-6)
    data = np.vstack([_eeg(8.0), ecg, emg, eda])
    names = (*NAMES, "ECG", "EMG", "EDA")
    types = (*TYPES, "ecg", "emg", "eda")
    f, _ = features_from_window(data, SFREQ, names, types, _config())
    assert f["hr/bpm"] == pytest.approx(72, abs=1)
    assert f["hr/rmssd_ms"] < 5  # regular beats
    assert f["emg/rms_uv"] == pytest.approx(20, rel=0.1)
    assert f["eda/level_us"] == pytest.approx(2.0)
    assert f["eeg/beta_alpha"] == pytest.approx(9 / 100, rel=0.2)
    assert f["eeg/engagement"] < f["eeg/beta_alpha"] + 1e-9


# ------------------------------------------------------------------ mapping


def test_alpha_up_beta_down_moves_arousal_down():
    est = StateEstimator(_config())
    calib = _run(est, _eeg(8.0, alpha_uv=10, beta_uv=3, seed=1))
    assert est.is_calibrated and all(e.state.confidence == 0 for e in calib[:5])
    relaxed = _run(est, _eeg(5.0, alpha_uv=20, beta_uv=1.5, seed=2), start=2000)
    assert np.mean([e.state.arousal for e in relaxed[-4:]]) < -0.5
    alert = _run(est, _eeg(5.0, alpha_uv=5, beta_uv=6, seed=3), start=3250)
    assert np.mean([e.state.arousal for e in alert[-4:]]) > 0.5
    assert all(-1 <= e.state.arousal <= 1 and -1 <= e.state.valence <= 1 for e in alert)


def test_right_frontal_alpha_moves_valence_up():
    est = StateEstimator(_config())
    _run(est, _eeg(8.0, seed=1))
    x = _eeg(4.0, seed=5)
    x[NAMES.index("EEG F4")] *= 1.6
    out = _run(est, x, start=2000)
    assert out[-1].state.valence > 0.5 and out[-1].z["eeg/faa"] > 2


def test_state_is_a_moving_average_of_the_per_window_drives():
    """smoothing_sec: EMA of gain·z before tanh, exp(-Δt/τ) per hop; raw_state unsmoothed;
    arousal with its own τ (arousal_smoothing_sec)."""
    tau, tau_a = 4.0, 2.5
    est = StateEstimator(_config(smoothing_sec=tau, arousal_smoothing_sec=tau_a))
    _run(est, _eeg(8.0, seed=1))
    est.reset()  # the average starts afresh with the next window
    x = np.hstack([_eeg(6.0, seed=2), _eeg(6.0, alpha_uv=7, beta_uv=4, seed=3)])
    out = [e for e in _run(est, x, start=2000) if not e.bad]
    assert len(out) > 15
    m_v = m_a = None
    t_prev = out[0].state.t_sec
    for e in out:
        a = math.exp(-(e.state.t_sec - t_prev) / tau)  # 0.5 s hops; longer across bad ones
        b = math.exp(-(e.state.t_sec - t_prev) / tau_a)
        t_prev = e.state.t_sec
        d_v = 0.5 * e.z["eeg/faa"]
        # no heart channel: the EEG arousal markers, weighted as the calibration set them
        weights = est.arousal_weights()
        assert set(weights) == {"eeg/log_beta_alpha", "eeg/alpha_post_lrel"}
        assert weights["eeg/log_beta_alpha"] > 0 > weights["eeg/alpha_post_lrel"]
        d_a = 0.5 * sum(w * e.z[k] for k, w in weights.items()) / sum(
            abs(w) for w in weights.values())
        m_v = d_v if m_v is None else a * m_v + (1 - a) * d_v
        m_a = d_a if m_a is None else b * m_a + (1 - b) * d_a
        assert e.state.valence == pytest.approx(math.tanh(m_v), abs=1e-9)
        assert e.state.arousal == pytest.approx(math.tanh(m_a), abs=1e-9)
        assert e.raw_state.arousal == pytest.approx(math.tanh(d_a), abs=1e-9)
        assert e.raw_state.valence == pytest.approx(math.tanh(d_v), abs=1e-9)
    # the average is smoother than the windows it averages
    raw = np.array([e.raw_state.valence for e in out])
    smooth = np.array([e.state.valence for e in out])
    assert np.diff(smooth).std() < 0.5 * np.diff(raw).std()


def test_smoothing_off_gives_the_per_window_state_and_bad_config_is_named():
    est = StateEstimator(_config(smoothing_sec=0, arousal_smoothing_sec=None))
    _run(est, _eeg(8.0, seed=1))
    out = [e for e in _run(est, _eeg(4.0, seed=2), start=2000) if not e.bad]
    assert out and all(e.state == e.raw_state for e in out)
    with pytest.raises(ValueError, match="smoothing_sec"):
        EstimatorConfig(smoothing_sec=-1.0)
    with pytest.raises(ValueError, match="smoothing_sec"):
        EstimatorConfig(smoothing_sec=math.nan)
    with pytest.raises(ValueError, match="arousal_smoothing_sec"):
        EstimatorConfig(arousal_smoothing_sec=-1.0)


def test_smoothing_restarts_after_reset_and_recalibration():
    est = StateEstimator(_config())
    _run(est, _eeg(8.0, seed=1))
    _run(est, _eeg(4.0, alpha_uv=20, beta_uv=1.5, seed=2), start=2000)
    assert est.state.arousal < -0.5
    est.reset()
    first = _run(est, _eeg(2.0, alpha_uv=5, beta_uv=6, seed=3), start=3000)[0]
    assert first.state == first.raw_state  # no memory of the relaxed stretch


def test_one_estimate_per_hop_with_window_end_times():
    est = StateEstimator(_config(calibration_sec=1.0))
    out = _run(est, _eeg(6.0))
    assert len(out) == 9  # windows ending at 2.0, 2.5, ..., 6.0 s
    assert [e.state.t_sec for e in out] == pytest.approx(np.arange(2.0, 6.01, 0.5))


# ------------------------------------------------------------------ gating


def _calibrated() -> tuple[StateEstimator, int]:
    est = StateEstimator(_config())
    _run(est, _eeg(8.0, seed=1))
    out = _run(est, _eeg(3.0, alpha_uv=20, beta_uv=1.5, seed=2), start=2000)
    assert not out[-1].bad and out[-1].state.confidence > 0.9
    return est, 2750


@pytest.mark.parametrize("artifact", ["nan", "inf", "flat", "saturation", "eye_movement",
                                      "muscle"])
def test_bad_windows_hold_the_state(artifact):
    est, start = _calibrated()
    held = est.state
    x = _eeg(2.0, alpha_uv=3, beta_uv=8, seed=9)  # would move arousal up if accepted
    t = np.arange(x.shape[1]) / SFREQ
    if artifact == "nan":
        x[2, 100:110] = np.nan
    elif artifact == "inf":
        x[0, 5] = np.inf
    elif artifact == "flat":
        x[:5] = 0.0
    elif artifact == "saturation":
        x[:5, 200:] = 2e-3  # 2 mV: the amplifier's rail
    elif artifact == "eye_movement":  # a flurry of three blinks covers most of the window
        for b in (0.35, 1.0, 1.65):
            x[:2] += 300e-6 * np.exp(-0.5 * ((t - b) / 0.07) ** 2)
    elif artifact == "muscle":
        x += np.random.default_rng(4).normal(0, 1, x.shape) * 80e-6 * np.sin(
            2 * np.pi * 40 * t)
    out = _run(est, x, start=start)
    # the last window lies wholly in the artifact; earlier ones overlap clean data
    assert out[-1].bad
    flags = out[-1].quality
    expected = {"nan": flags["nonfinite"], "inf": flags["nonfinite"],
                "flat": bool(flags["flat"]), "saturation": bool(flags["saturated"]),
                "eye_movement": flags["blink"], "muscle": flags["muscle"]}[artifact]
    assert expected
    prev = held
    for e in out:  # a bad window never moves the state; it only loses confidence
        if e.bad:
            assert (e.state.valence, e.state.arousal) == (prev.valence, prev.arousal)
            assert e.state.confidence < prev.confidence or prev.confidence == 0
        prev = e.state
    _, q = features_from_window(x, SFREQ, NAMES, TYPES, _config())
    if artifact == "eye_movement":  # one window alone has no running scale of the eye proxy:
        assert q["eye_excluded"] > 0.2  # its own spread sets the threshold, so less is found
    else:
        assert q["bad"]


def test_gap_in_first_sample_gives_bad_windows_not_bridged():
    est, start = _calibrated()
    held = est.state
    out = _run(est, _eeg(1.0, alpha_uv=3, beta_uv=8, seed=9), start=start + 250)
    assert out and all(e.bad and e.quality["nonfinite"] for e in out)
    assert out[-1].state.arousal == held.arousal


def test_bad_windows_do_not_enter_calibration():
    est = StateEstimator(_config(calibration_sec=2.0))
    x = _eeg(6.0)
    x[0, :] = np.nan
    _run(est, x)
    assert not est.is_calibrated


def test_stored_baseline_and_bad_input():
    base = Baseline({"eeg/faa": 0.0, "eeg/log_beta_alpha": -2.4},
                    {"eeg/faa": 0.1, "eeg/log_beta_alpha": 0.2}, 10)
    est = StateEstimator(_config(), baseline=base)
    out = _run(est, _eeg(2.5))
    assert est.is_calibrated and out[-1].state.confidence > 0
    with pytest.raises(TypeError, match="SignalChunk"):
        est.push(np.zeros((2, 10)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layout changed"):
        est.push(SignalChunk(np.zeros((2, 10)), SFREQ, ("Fp1", "Fp2"), ("eeg", "eeg")))
    with pytest.raises(ValueError, match="hop_sec"):
        EstimatorConfig(window_sec=1.0, hop_sec=2.0)
    with pytest.raises(ValueError, match="window_sec must be a positive number"):
        EstimatorConfig(window_sec=-1)
    with pytest.raises(ValueError, match="no EEG channel"):
        features_from_window(np.zeros((1, 500)), SFREQ, ["ECG"], ["ecg"])
    with pytest.raises(TypeError, match="Baseline"):
        est.set_baseline({})  # type: ignore[arg-type]


@pytest.mark.parametrize("n_ch", [4, 16, 64])
def test_any_montage_size(n_ch):
    from st_agent.biometrics.estimator import _LABELS

    names = ("Fp1", "Fp2", "F3", "F4", *sorted(_LABELS - {"FP1", "FP2", "F3", "F4"}))[:n_ch]
    f, q = features_from_window(_eeg(2.0, n_ch=n_ch), SFREQ, names, ("eeg",) * n_ch, _config())
    assert f["eeg/good_channels"] >= n_ch - 4  # reference sites may be left out
    assert math.isfinite(f["eeg/faa"]) and not q["bad"]


# ------------------------------------------------------------------ real data and chain


@needs_real
@pytest.mark.parametrize("path", REAL_EDFS, ids=lambda p: p.name)
def test_real_edf_reads_and_estimates(path):
    cfg = EstimatorConfig(calibration_sec=10.0, reference_model=False)
    with FileSource(path, chunk_sec=1.0) as src, StateEstimator(cfg) as est:
        out = [e for c in src.iter_chunks() for e in est.push(c)]
    good = [e for e in out if not e.bad]
    assert len(out) > 100 and len(good) > 0.3 * len(out)
    for e in good:
        for k in ("eeg/alpha_power", "eeg/beta_power", "eeg/faa", "eeg/beta_alpha",
                  "eeg/alpha_de"):
            assert math.isfinite(e.features[k]), k
    assert est.is_calibrated
    assert any(e.state.confidence > 0 for e in good)
    if "eegmat" in path.name:
        bpm = [e.features["hr/bpm"] for e in good if "hr/bpm" in e.features]
        assert bpm and 45 < np.median(bpm) < 120


def test_synthetic_board_through_the_whole_chain():
    # BrainFlow's synthetic "EEG" is mostly > 30 Hz sinusoids of hundreds of µV, which the
    # default gating rejects as muscle/saturation; relax it to exercise the whole chain.
    cfg = EstimatorConfig(calibration_sec=0.5, muscle_ratio=1.0, max_abs_uv=1e4,
                          blink_uv=1e5, reference_model=True)
    out, chunks = [], []
    with BrainFlowSource("synthetic") as src, StateEstimator(cfg) as est:
        t_end = time.monotonic() + 3.2
        while time.monotonic() < t_end:
            chunk = src.read(0.2)
            if chunk is not None:
                out += est.push(chunk)
                chunks.append(chunk)
    assert len(out) >= 3
    assert est.is_calibrated
    last = out[-1]
    assert not last.bad and last.state.confidence > 0
    assert math.isfinite(last.features["eeg/alpha_power"])
    assert "eda/level_us" in last.features
    assert 0 <= last.features["reference/mindfulness"] <= 1
    # default gating flags the synthetic signal instead of estimating from it
    data = np.concatenate([c.data for c in chunks], axis=1)[:, -500:]
    _, q = features_from_window(data, src.sfreq, src.ch_names, src.ch_types)
    # (muscle when enough of the window is spike-free to judge, else too few clean samples)
    assert q["bad"] and (q["muscle"] or q["saturated"] or q["spikes"]), q
