"""Heart, breathing and EDA markers: known rates recovered, and what happens without them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from st_agent.biometrics.cardiac import BeatTracker, belt_rate, eda_tonic, rr_spectrum
from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.types import SignalChunk

EEG_NAMES = ("Fp1", "Fp2", "O1", "O2")


def _beats(seconds: float, hr_bpm: float, resp_bpm: float, rsa_sec: float, seed: int,
           ) -> np.ndarray:
    """Beat times (s): mean RR 60/hr, modulated by breathing (respiratory sinus arrhythmia)."""
    rng = np.random.default_rng(seed)
    f_r = resp_bpm / 60.0
    t, out = float(rng.uniform(0.1, 0.5)), []
    while t < seconds:
        out.append(t)
        t += 60.0 / hr_bpm + rsa_sec * math.sin(2 * math.pi * f_r * t) + rng.normal(0, 0.005)
    return np.asarray(out)


def _ecg(seconds: float, sfreq: float, hr_bpm: float, resp_bpm: float, seed: int = 0,
         ) -> np.ndarray:
    """ECG in volts: Q, R, S and T waves per beat, R amplitude modulated by breathing."""
    t = np.arange(round(seconds * sfreq)) / sfreq
    x = np.random.default_rng(seed + 1).normal(0, 20e-6, t.size)
    for b in _beats(seconds, hr_bpm, resp_bpm, 0.04, seed):
        amp = 1e-3 * (1 + 0.15 * math.sin(2 * math.pi * resp_bpm / 60 * b))
        x += amp * (np.exp(-0.5 * ((t - b) / 0.010) ** 2)
                    - 0.15 * np.exp(-0.5 * ((t - b - 0.02) / 0.008) ** 2)
                    - 0.1 * np.exp(-0.5 * ((t - b + 0.02) / 0.008) ** 2)
                    + 0.25 * np.exp(-0.5 * ((t - b - 0.25) / 0.040) ** 2))
    return x


def _ppg(seconds: float, sfreq: float, hr_bpm: float, resp_bpm: float, seed: int = 0,
         ) -> np.ndarray:
    """PPG (arbitrary units): systolic and dicrotic waves per beat."""
    t = np.arange(round(seconds * sfreq)) / sfreq
    x = np.random.default_rng(seed + 1).normal(0, 0.01, t.size)
    for b in _beats(seconds, hr_bpm, resp_bpm, 0.04, seed):
        amp = 1 + 0.15 * math.sin(2 * math.pi * resp_bpm / 60 * b)
        x += amp * (np.exp(-0.5 * ((t - b - 0.15) / 0.06) ** 2)
                    + 0.4 * np.exp(-0.5 * ((t - b - 0.40) / 0.08) ** 2))
    return x


def _stream(heart: np.ndarray | None, sfreq: float, kind: str = "ecg", extra=None,
            config: EstimatorConfig | None = None, chunk_sec: float = 0.5):
    """Push EEG noise (plus the given channels) through a StateEstimator; all estimates."""
    n = heart.size if heart is not None else round(40 * sfreq)
    rng = np.random.default_rng(7)
    rows, names, types = [rng.normal(0, 10e-6, (len(EEG_NAMES), n))], list(EEG_NAMES), \
        ["eeg"] * len(EEG_NAMES)
    if heart is not None:
        rows.append(heart[None])
        names.append(kind.upper())
        types.append(kind)
    for name, kind_, x in extra or ():
        rows.append(x[None])
        names.append(name)
        types.append(kind_)
    data = np.vstack(rows)
    cfg = config or EstimatorConfig(calibration_sec=0, reference_model=False)
    est = StateEstimator(cfg)
    step = round(chunk_sec * sfreq)
    out = []
    for i in range(0, n, step):
        out += est.push(SignalChunk(data[:, i:i + step], sfreq, tuple(names), tuple(types),
                                    first_sample=i, t0_sec=i / sfreq))
    return out, est


@pytest.mark.parametrize(("kind", "sfreq", "hr", "resp"), [
    ("ecg", 250.0, 66.0, 12.0), ("ecg", 500.0, 84.0, 18.0), ("ppg", 100.0, 72.0, 15.0)])
def test_known_heart_and_breathing_rates_are_recovered(kind, sfreq, hr, resp):
    sig = (_ecg if kind == "ecg" else _ppg)(70.0, sfreq, hr, resp, seed=3)
    out, est = _stream(sig, sfreq, kind)
    late = [e.features for e in out if e.state.t_sec > 40]
    assert late
    assert np.median([f["hr/bpm"] for f in late]) == pytest.approx(hr, abs=1.5)
    assert np.median([f["resp/rate_bpm"] for f in late]) == pytest.approx(resp, abs=1.5)
    rmssd = np.median([f["hr/rmssd_ms"] for f in late])
    assert 10 < rmssd < 150  # RSA of ±40 ms gives tens of ms
    assert all(f["hr/ln_hf"] == pytest.approx(math.log(f["hr/hf_ms2"])) for f in late)
    assert not any(k.startswith(("hr/", "resp/")) for k in est.marker_status())


def test_higher_breathing_rate_gives_more_hf_power_share():
    """HF power (0.15-0.4 Hz) of the RR series holds the RSA when breathing is in-band."""
    slow = BeatTracker("ecg", 250.0, hrv_window_sec=32.0)
    fast = BeatTracker("ecg", 250.0, hrv_window_sec=32.0)
    slow.update(_ecg(40.0, 250.0, 70.0, 6.0, seed=1), 0)  # 0.1 Hz: below the HF band
    fast.update(_ecg(40.0, 250.0, 70.0, 15.0, seed=1), 0)  # 0.25 Hz: inside it
    n = 40 * 250
    assert fast.features(n)["hr/hf_ms2"] > 3 * slow.features(n)["hr/hf_ms2"]


def test_ppg_too_slow_for_hrv_gives_heart_rate_and_says_why():
    sig = _ppg(50.0, 25.0, 70.0, 15.0, seed=2)
    out, est = _stream(sig, 25.0, "ppg")
    late = [e.features for e in out if e.state.t_sec > 20]
    hr = [f["hr/bpm"] for f in late if "hr/bpm" in f]
    assert len(hr) > 0.8 * len(late)  # 25 Hz: some beats are missed, their intervals dropped
    assert np.median(hr) == pytest.approx(70, abs=2)
    assert not any("hr/rmssd_ms" in f or "resp/rate_bpm" in f for f in late)
    status = est.marker_status()
    for k in ("hr/rmssd_ms", "hr/hf_ms2", "resp/rate_bpm"):
        assert "25 Hz" in status[k] and "100 Hz" in status[k]


@pytest.mark.parametrize("fault", ["flat", "saturated"])
def test_bad_heart_channel_is_named_and_eeg_goes_on(fault, caplog):
    sig = _ecg(30.0, 250.0, 70.0, 12.0)
    if fault == "flat":
        sig[:] = 0.0
    else:
        sig = np.clip(sig * 20, -2e-3, 2e-3)  # an amplifier at its rails
    with caplog.at_level("WARNING"):
        out, est = _stream(sig, 250.0)
    assert len(out) > 50 and all(math.isfinite(e.features["eeg/alpha_power"]) for e in out)
    assert not any("hr/bpm" in e.features for e in out)
    assert fault in est.marker_status()["hr/bpm"]
    assert sum(fault in r.getMessage() for r in caplog.records) == 1  # logged once


def test_no_heart_channel_is_reported_not_fatal():
    out, est = _stream(None, 250.0)
    assert out and all("hr/bpm" not in e.features for e in out)
    status = est.marker_status()
    assert status["hr/bpm"] == "no ECG or PPG channel"
    assert "resp/rate_bpm" in status and "eda/tonic_us" in status
    kinds = [ev.kind for ev in est.pop_events()]
    assert "marker_unavailable" in kinds and est.pop_events() == []


def test_gap_in_the_ecg_does_not_make_a_long_interval():
    sig = _ecg(40.0, 250.0, 60.0, 12.0)
    tr = BeatTracker("ecg", 250.0)
    first, second = sig[:(15 * 250)], sig[(16 * 250):]
    tr.update(first, 0)
    gap = np.full(250, np.nan)
    tr.update(np.concatenate([first[-250:], gap, second]), 14 * 250)
    feats = tr.features(sig.size)
    assert feats["hr/bpm"] == pytest.approx(60, abs=1.5)
    assert feats["hr/rmssd_ms"] < 100  # a 2 s "interval" across the gap would dominate it


def test_eda_tonic_level_and_belt_breathing_rate():
    sfreq = 128.0
    t = np.arange(round(40 * sfreq)) / sfreq
    eda = (5.0 + 0.01 * t) * 1e-6  # slowly rising tonic level, µS -> S
    for onset in (8.0, 20.0, 31.0):  # phasic responses on top
        rise = np.clip(t - onset, 0, None)
        eda += 0.5e-6 * (1 - np.exp(-rise / 0.7)) * np.exp(-rise / 4.0)
    tonic = eda_tonic(eda[-round(10 * sfreq):], sfreq)
    assert tonic == pytest.approx(5.39, abs=0.15)
    belt = np.sin(2 * np.pi * (14 / 60) * t) + 0.1 * np.random.default_rng(0).normal(size=t.size)
    assert belt_rate(belt[-round(32 * sfreq):], sfreq) == pytest.approx(14, abs=1)
    assert belt_rate(belt[:round(4 * sfreq)], sfreq) is None  # too short
    assert rr_spectrum(np.arange(3.0), np.ones(3)) is None


def test_eda_and_belt_through_the_estimator():
    sfreq = 128.0
    t = np.arange(round(40 * sfreq)) / sfreq
    eda = np.full(t.size, 3e-6)
    belt = np.sin(2 * np.pi * (10 / 60) * t)
    out, est = _stream(None, sfreq, extra=[("EDA", "eda", eda), ("Resp", "resp", belt)])
    last = out[-1].features
    assert last["eda/tonic_us"] == pytest.approx(3.0, abs=0.05)
    assert last["resp/rate_bpm"] == pytest.approx(10, abs=1)
    assert "resp/rate_bpm" not in est.marker_status()


def test_beat_tracker_validates_kind():
    with pytest.raises(ValueError, match="kind must be 'ecg' or 'ppg'"):
        BeatTracker("eeg", 250.0)


@pytest.mark.parametrize("sfreq", [100.0, 250.0, 500.0])
def test_cached_filters_equal_neurokit2_and_scipy(sfreq):
    import warnings

    import neurokit2 as nk
    from scipy import signal

    from st_agent.biometrics.filters import design, filtfilt, neurokit_clean

    x = _ecg(6.0, sfreq, 70.0, 12.0) + np.linspace(0, 1e-4, round(6 * sfreq))  # with drift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, ref in (("ecg", nk.ecg_clean), ("ppg", nk.ppg_clean), ("eda", nk.eda_clean)):
            np.testing.assert_allclose(neurokit_clean(kind, x, sfreq),
                                       np.asarray(ref(x, sampling_rate=round(sfreq))),
                                       rtol=1e-9, atol=1e-12 * np.abs(x).max())
    sos, zi, pad = design(2, (0.5, 5.0), "bandpass", sfreq)
    y = np.random.default_rng(0).normal(size=(3, 2, round(2 * sfreq)))
    np.testing.assert_allclose(filtfilt(sos, zi, pad, y), signal.sosfiltfilt(sos, y, axis=-1))
    with pytest.raises(ValueError, match="too short"):
        filtfilt(sos, zi, pad, y[..., :pad])
    with pytest.raises(ValueError, match="kind must be"):
        neurokit_clean("emg", x, sfreq)
