"""Issue 20: the streaming (stateful) and shared computations equal their batch versions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from st_agent.biometrics.artifacts import masked_welch
from st_agent.biometrics.cardiac import rr_spectrum
from st_agent.listener.first_order import ListenerParams
from st_agent.listener.virtual import SignalModel, VirtualListenerSource, _Filter
from st_agent.types import MusicFeatures

SFREQ = 250.0


def _features(duration: float = 12.0) -> MusicFeatures:
    return MusicFeatures(duration_sec=duration, bpm=60.0, notes_per_sec=4.0,
                         notes_per_beat=4.0, mode="minor", mode_confidence=0.8, key="Am",
                         mean_pitch=64.0, pitch_range=12.0, mean_velocity=80.0,
                         n_notes=round(4 * duration))


def _source(seed: int, model: SignalModel) -> VirtualListenerSource:
    src = VirtualListenerSource(ListenerParams(), model=model, rng=seed)
    src.start()
    src.hear(None, 3.0)
    src.hear(_features())
    src.hear(_features(7.5))
    return src


@pytest.mark.parametrize("chunk_sec", [1.0, 0.25])
def test_source_block_equals_its_chunks(chunk_sec):
    """read_block synthesises the chunks read() returns one by one (same draws, filters
    streamed with their state)."""
    model = SignalModel(chunk_sec=chunk_sec, respiration=True, blink_rate_per_min=40.0)
    one, block = _source(3, model), _source(3, model)
    n = round(chunk_sec * SFREQ)
    k = -(-round(24.0 * SFREQ) // n)  # whole chunks covering 24 s (62-sample chunks: 97)
    chunks = [one.read() for _ in range(k)]
    got = block.read_block(24.0)
    ref = np.concatenate([c.data for c in chunks], axis=1)
    assert got.data.shape == ref.shape == (len(model.montage) + 3, k * n)
    assert got.first_sample == 0 and got.t0_sec == 0.0
    np.testing.assert_allclose(got.data, ref, rtol=1e-9, atol=1e-15)
    # the state carries on: the next chunk is the same either way
    np.testing.assert_allclose(block.read().data, one.read().data, rtol=1e-9, atol=1e-15)
    assert block.latent == pytest.approx(one.latent, abs=1e-12)
    assert got.data[: len(model.montage)].std() > 1e-6  # µV-scale EEG, not zeros
    assert block.read_block(0.1).n_times == n  # rounded up to one whole chunk


def test_source_block_rejects_bad_arguments():
    src = VirtualListenerSource(ListenerParams(), rng=0)
    src.start()
    for bad in (0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="seconds"):
            src.read_block(bad)
    live = VirtualListenerSource(ListenerParams(), rng=0, realtime=True)
    live.start()
    with pytest.raises(ValueError, match="realtime"):
        live.read_block(1.0)
    src.stop()
    assert src.read_block(1.0) is None


def test_stateful_filter_streamed_equals_one_batch_call():
    """The listener's IIR filters, fed chunk by chunk with their carried state, give
    sosfilt over the whole signal at once."""
    sos = signal.butter(4, [20.0, 110.0], "bandpass", fs=SFREQ, output="sos")
    white = np.random.default_rng(1).standard_normal((3, 5000))
    streamed = _Filter(sos, 3)
    parts = [streamed(white[:, a:b]) for a, b in ((0, 1), (1, 250), (250, 1999), (1999, 5000))]
    batch = _Filter(sos, 3)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), batch(white), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(batch(np.zeros((3, 1))) * 0, 0)  # state shape kept
    ref = signal.sosfilt(sos, white, axis=-1) * streamed.scale
    np.testing.assert_allclose(np.concatenate(parts, axis=1), ref, rtol=1e-12, atol=1e-12)


def test_shared_welch_segments_equal_per_window_welch():
    """Consecutive windows share their overlapping segments; windows with excluded samples
    or their own repairs take the general path; the PSDs are the same."""
    rng = np.random.default_rng(2)
    hop, n_win, n_times = 125, 30, 500
    stream = rng.standard_normal((8, n_times + (n_win - 1) * hop))
    uv = np.stack([stream[:, w * hop:w * hop + n_times] for w in range(n_win)])
    clean = np.ones((n_win, n_times), dtype=bool)
    clean[4, 100:140] = False  # an eye artifact in one window
    uv[9, 2, 300] += 40.0  # a repair of one window's copy only
    f0, p0 = masked_welch(uv, clean, SFREQ, 250, taper=12)
    f1, p1 = masked_welch(uv, clean, SFREQ, 250, taper=12, hop=hop)
    np.testing.assert_array_equal(f0, f1)
    np.testing.assert_allclose(p1, p0, rtol=1e-10, atol=1e-14)
    # and both equal SciPy's Welch on a clean window
    _, ref = signal.welch(uv[0], SFREQ, nperseg=250)
    np.testing.assert_allclose(p1[0], ref, rtol=1e-9)
    # unrelated windows (hop that does not fit): the general path, same answer
    np.testing.assert_allclose(masked_welch(uv, clean, SFREQ, 250, 12, hop=100)[1], p0,
                               rtol=1e-10, atol=1e-14)


def test_rr_spectrum_detrend_equals_polyfit():
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.uniform(0.7, 1.0, 40))
    rr = 800 + 30 * np.sin(2 * np.pi * 0.25 * t) + 2.0 * t + rng.normal(0, 5, t.size)
    freqs, psd = rr_spectrum(t, rr)
    grid = np.arange(t[0], t[-1], 0.25)
    y = np.interp(grid, t, rr)
    y = y - np.polyval(np.polyfit(grid - grid[0], y, 1), grid - grid[0])
    w = np.hanning(y.size)
    ref = np.abs(np.fft.rfft(y * w, 1024)) ** 2 / (4.0 * (w ** 2).sum())
    ref[1:] *= 2.0
    np.testing.assert_allclose(psd, ref, rtol=1e-8, atol=1e-8 * ref.max())
    assert abs(freqs[np.argmax(psd)] - 0.25) < 0.02
