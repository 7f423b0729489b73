"""Audio features on synthetic signals with a known answer (BS.1770 loudness, centroid,
onsets)."""

from __future__ import annotations

import numpy as np
import pytest

from st_agent.music.audio_features import (
    SILENCE_LUFS,
    AudioFeatures,
    describe_change,
    feature_coordinates,
    feature_distance,
    loudness_lufs,
    measure_audio,
    novelty_curve,
)

SR = 44100


def _sine(freq: float, amp: float = 1.0, sec: float = 3.0, sr: int = SR) -> np.ndarray:
    t = np.arange(round(sec * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def _bursts(rate_hz: float, sec: float = 3.0, freq: float = 440.0) -> np.ndarray:
    """Hann-shaped 100 ms tone bursts, ``rate_hz`` per second."""
    x = np.zeros(round(sec * SR))
    n = round(0.1 * SR)
    burst = 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR) * np.hanning(n)
    for start in np.arange(0.05, sec - 0.1, 1.0 / rate_hz):
        i = round(start * SR)
        x[i:i + n] += burst
    return x


@pytest.mark.parametrize("level_db", [0.0, -10.0, -23.0, -40.0])
def test_loudness_of_997hz_sine_follows_bs1770(level_db: float) -> None:
    # BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS
    x = _sine(997.0, 10 ** (level_db / 20))
    assert loudness_lufs(x, SR) == pytest.approx(-3.01 + level_db, abs=0.1)


def test_loudness_k_weighting_boosts_treble_and_cuts_bass() -> None:
    ref = loudness_lufs(_sine(997.0, 0.1), SR)
    # the K-weighting high shelf adds about +4 dB above 2 kHz; the RLB filter cuts low bass
    assert 3.0 < loudness_lufs(_sine(8000.0, 0.1), SR) - ref < 5.0
    assert loudness_lufs(_sine(30.0, 0.1), SR) - ref < -1.0


def test_loudness_of_silence_is_the_absolute_gate() -> None:
    assert loudness_lufs(np.zeros(SR), SR) == SILENCE_LUFS


def test_loudness_rates_other_than_44k() -> None:
    assert loudness_lufs(_sine(997.0, 0.5, sr=48000), 48000) == pytest.approx(
        -3.01 + 20 * np.log10(0.5), abs=0.1)


def test_centroid_of_tones() -> None:
    assert measure_audio(_sine(440.0, 0.5), SR).spectral_centroid_hz == pytest.approx(440, abs=5)
    two = _sine(500.0, 0.3) + _sine(1500.0, 0.3)
    assert measure_audio(two, SR).spectral_centroid_hz == pytest.approx(1000, abs=15)
    # the centroid does not depend on the level
    quiet = measure_audio(0.01 * two, SR).spectral_centroid_hz
    assert quiet == pytest.approx(measure_audio(two, SR).spectral_centroid_hz, rel=1e-6)


@pytest.mark.parametrize("rate", [2.0, 4.0, 6.0])
def test_onset_rate_of_tone_bursts(rate: float) -> None:
    f = measure_audio(_bursts(rate), SR)
    n_bursts = len(np.arange(0.05, 3.0 - 0.1, 1.0 / rate))
    assert f.onset_rate_hz == pytest.approx(n_bursts / 3.0, abs=1 / 3.0 + 1e-9)


def test_steady_tone_has_no_onsets_and_little_flux() -> None:
    steady = measure_audio(_sine(997.0, 0.5), SR)
    two_hz = measure_audio(_bursts(2.0), SR)
    four_hz = measure_audio(_bursts(4.0), SR)
    assert steady.onset_rate_hz == 0.0
    assert steady.spectral_flux < 0.1 * two_hz.spectral_flux
    # each burst adds the same novelty: twice the bursts, about twice the flux
    assert 1.6 < four_hz.spectral_flux / two_hz.spectral_flux < 2.4


def test_novelty_peaks_at_burst_starts() -> None:
    nov, rate = novelty_curve(_bursts(2.0), SR)
    assert rate == pytest.approx(100.0, rel=0.01)
    # frame k covers samples [k * hop, k * hop + 2048): its centre is 1024 samples on
    centre_sec = np.argmax(nov[:round(0.4 * rate)]) / rate + 1024 / SR
    # the first burst starts at 0.05 s; log compression makes the novelty peak as soon
    # as the burst enters the window, so within half a window (23 ms) and a hop
    assert abs(centre_sec - 0.05) < 0.035


def test_silence_features() -> None:
    f = measure_audio(np.zeros(SR), SR)
    assert (f.loudness_lufs, f.spectral_centroid_hz, f.onset_rate_hz) == (SILENCE_LUFS, 0.0, 0.0)


@pytest.mark.parametrize(("audio", "rate", "match"), [
    (np.zeros((2, SR)), SR, "mono"),
    (np.zeros(100), SR, "at least 0.4 s"),
    (np.full(SR, np.nan), SR, "NaN"),
    (np.zeros(SR), 1000, "sample_rate"),
])
def test_bad_audio_is_refused(audio: np.ndarray, rate: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure_audio(audio, rate)


def test_feature_distance_units() -> None:
    a = AudioFeatures(-30.0, -30.0, 800.0, 0.05, 2.0, 8.0)
    louder = AudioFeatures(-28.0, -28.0, 800.0, 0.05, 2.0, 8.0)
    brighter = AudioFeatures(-30.0, -30.0, 800.0 * 2 ** 0.25 + 2 ** 0.25 - 1, 0.05, 2.0, 8.0)
    assert feature_distance(a, a) == 0.0
    assert feature_distance(a, louder) == pytest.approx(1.0)  # 2 LU is one unit
    assert feature_distance(a, brighter) == pytest.approx(1.0)  # a quarter octave
    assert feature_coordinates(np.stack([a.as_vector(), louder.as_vector()])).shape == (2, 4)


def test_describe_change_names_the_largest_changes() -> None:
    a = AudioFeatures(-30.0, -30.0, 800.0, 0.05, 2.0, 8.0)
    b = AudioFeatures(-36.0, -36.0, 1200.0, 0.05, 2.0, 8.0)  # 3 units softer, 2.3 brighter
    text = describe_change(a, b)
    assert text.startswith("softer (-6.0 LU)") and "brighter" in text
    assert describe_change(a, a) == "no audible change"


def test_features_refuse_non_finite_values() -> None:
    with pytest.raises(ValueError, match="loudness_lufs"):
        AudioFeatures(float("nan"), 0.0, 1.0, 0.0, 0.0, 1.0)
