"""The report measures each phrase from session.wav and says what changed audibly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.live.phrase_audio import measure_session_audio
from st_agent.live.report import write_report

SR = 44100


def _events(starts: list[float]) -> list[dict]:
    """phrase_start events as the session records them (t_session; onset offset by 60 s)."""
    return [{"kind": "phrase_start", "onset_sec": 60.0 + t,
             "payload": {"t_session": 60.0 + t, "index": i, "knobs": [0.5, 0.5, 0.5],
                         "reason": f"reason {i}"}} for i, t in enumerate(starts)]


def _tone(freq: float, amp: float, sec: float) -> np.ndarray:
    t = np.arange(round(sec * SR)) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def test_a_louder_or_brighter_phrase_is_heard_as_such(tmp_path: Path) -> None:
    # four 2 s phrases: A4 at 0.1; A4 at 0.2 (+6.02 dB); A5 at 0.2 (an octave up); A4 at 0.1
    x = np.concatenate([_tone(440, 0.1, 2), _tone(440, 0.2, 2), _tone(880, 0.2, 2),
                        _tone(440, 0.1, 2)])
    wav = tmp_path / "session.wav"
    # float samples: 16-bit quantisation noise alone moves a steady tone's flux (0.002 ->
    # 0.03 at amplitude 0.1), which would be named before the loudness
    wavfile.write(wav, SR, x.astype(np.float32))
    audio = measure_session_audio(wav, _events([0.0, 2.0, 4.0, 6.0]))
    p = audio.phrases
    assert [q.index for q in p] == [0, 1, 2, 3] and p[1].start_sec == pytest.approx(2.0)
    assert p[3].end_sec == pytest.approx(8.0) and p[1].reason == "reason 1"
    d_lufs = p[1].features.loudness_lufs - p[0].features.loudness_lufs
    assert d_lufs == pytest.approx(20 * np.log10(2), abs=0.05)
    assert p[2].features.spectral_centroid_hz == pytest.approx(880, rel=0.02)
    assert p[0].heard == "first phrase"
    assert p[1].heard == "louder (+6.0 LU)"
    assert p[2].heard.startswith("brighter (+4")  # K-weighting: +0.5 LU at 880 Hz, not named
    assert "softer (-6." in p[3].heard and "darker (-4" in p[3].heard
    assert audio.ms_per_phrase > 0
    d = audio.as_dict()
    assert len(d["phrases"]) == 4 and d["phrases"][1]["features"]["loudness_lufs"] < 0


def test_no_wav_or_a_too_short_phrase(tmp_path: Path) -> None:
    assert measure_session_audio(tmp_path / "none.wav", _events([0.0])).phrases == []
    wav = tmp_path / "session.wav"
    wavfile.write(wav, SR, (_tone(440, 0.1, 2.2) * 32767).astype(np.int16))
    p = measure_session_audio(wav, _events([0.0, 0.1, 1.0])).phrases
    assert p[0].features is None and p[0].heard == "too short to measure"
    assert p[1].heard == "first phrase" and p[2].features is not None


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_pcm_read_segment_by_segment_measures_what_the_float_file_does(tmp_path: Path,
                                                                       dtype) -> None:
    """Session WAVs (integer PCM, stereo) are read one phrase at a time with ``wave``;
    float WAVs through SciPy's memory map: the same audio gives the same features, and
    stereo is the mean of the two channels."""
    left = np.concatenate([_tone(440, 0.1, 2), _tone(660, 0.3, 2)])
    right = np.concatenate([_tone(440, 0.3, 2), _tone(990, 0.1, 2)])
    scale = np.iinfo(dtype).max
    stereo = np.round(np.stack([left, right], axis=1) * scale).astype(dtype)
    wavfile.write(tmp_path / "pcm.wav", SR, stereo)
    wavfile.write(tmp_path / "float.wav", SR, (stereo.astype(np.float64) / scale
                                               ).mean(axis=1).astype(np.float32))
    events = _events([0.0, 2.0])
    pcm = measure_session_audio(tmp_path / "pcm.wav", events).phrases
    flt = measure_session_audio(tmp_path / "float.wav", events).phrases
    assert [p.end_sec for p in pcm] == pytest.approx([2.0, 4.0])
    for a, b in zip(pcm, flt, strict=True):
        assert a.features.loudness_lufs == pytest.approx(b.features.loudness_lufs, abs=1e-3)
        assert a.features.spectral_centroid_hz == pytest.approx(
            b.features.spectral_centroid_hz, rel=1e-4)
    assert pcm[1].features.spectral_centroid_hz > pcm[0].features.spectral_centroid_hz


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from st_agent.live.session import DemoConfig, run_session
    from st_agent.policies.controllers import make_controller

    cfg = DemoConfig(minutes=1.0, calibration_sec=10.0, out=tmp_path_factory.mktemp("demo"),
                     name="demo").session_config()
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    return run_session(cfg, controller, name)


@pytest.mark.slow
def test_demo_report_has_the_features_of_every_phrase(demo) -> None:
    folder = demo.folder
    page = (folder / "report.html").read_text()
    assert 'alt="audio"' in page and (folder / "audio.png").stat().st_size > 0
    assert "What each phrase sounded like" in page and "ms per phrase" in page
    data = json.loads((folder / "phrase_audio.json").read_text())
    assert len(data["phrases"]) == demo.summary["phrases"] >= 5
    for p in data["phrases"]:  # every phrase measured and named in the page
        f = p["features"]
        assert -70 < f["loudness_lufs"] < 0 and f["spectral_centroid_hz"] > 50
        assert f"{f['loudness_lufs']:.1f}" in page
        assert p["heard"] in page
    assert data["phrases"][0]["end_sec"] == pytest.approx(data["phrases"][1]["start_sec"])


@pytest.mark.slow
def test_a_louder_phrase_of_the_demo_is_reported_louder(demo) -> None:
    folder = demo.folder
    before = measure_session_audio(folder / "session.wav", read_session(folder).events)
    lufs = np.array([p.features.loudness_lufs for p in before.phrases])
    k = 1 + int(np.argmin(np.abs(np.diff(lufs))[:-1]))  # a phrase with a next one
    sr, x = wavfile.read(folder / "session.wav")
    a, b = (round(s * sr) for s in (before.phrases[k].start_sec, before.phrases[k].end_sec))
    y = x.astype(np.float64) * 0.25  # every other phrase 12 dB down
    y[a:b] = x[a:b]
    wavfile.write(folder / "session.wav", sr, np.round(y).astype(np.int16))
    write_report(folder)
    after = json.loads((folder / "phrase_audio.json").read_text())["phrases"]
    gain = 20 * np.log10(4)
    new = after[k]["features"]["loudness_lufs"] - after[k - 1]["features"]["loudness_lufs"]
    assert new == pytest.approx(lufs[k] - lufs[k - 1] + gain, abs=0.2)
    assert after[k]["heard"].startswith("louder (+")
    assert after[k + 1]["heard"].startswith("softer (-")
    page = (folder / "report.html").read_text()
    assert after[k]["heard"] in page
