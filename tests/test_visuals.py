"""Visuals in time with the music (issue 17): the timeline of a recorded session, the
video ``st-agent render-video`` writes, and the page ``visuals.html`` run in a real
browser (headless Chromium through Selenium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.cli import main
from st_agent.errors import DataError, DeviceError
from st_agent.live.video import FrameRenderer, ffmpeg_exe, probe_video
from st_agent.live.visuals import (
    PAGE_FILE,
    load_timeline,
    timeline_from_events,
    write_visuals_page,
)
from st_agent.live.visuals_page import CSP

SIZE = (640, 360)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short accelerated demo, encrypted at rest: (folder, key file)."""
    tmp = tmp_path_factory.mktemp("visuals")
    key = tmp / "keys" / "demo.key"
    assert main(["demo", "--minutes", "0.6", "--calibration-sec", "5", "--out", str(tmp),
                 "--name", "demo", "--key-file", str(key)]) == 0
    return tmp / "demo", key


@pytest.fixture(scope="module")
def timeline(session):
    folder, key = session
    return load_timeline(folder, key)


def _pixels(renderer: FrameRenderer, t: float) -> np.ndarray:
    w, h = renderer.size
    return np.asarray(renderer.frame(t)).reshape(h, w, 4)[:, :, :3].astype(float).copy()


# --------------------------------------------------------------------------- timeline


@pytest.mark.slow
def test_timeline_follows_the_recording(session, timeline) -> None:
    folder, key = session
    events = read_session(folder, key=key).events
    starts = [e for e in events if e["kind"] == "phrase_start"]
    sr, audio = wavfile.read(folder / "session.wav")
    tl = timeline
    assert tl.duration_sec == pytest.approx(audio.shape[0] / sr)  # frames (stereo or mono)
    assert len(tl.phrases) == len(starts) >= 3
    # music time 0 is the first phrase; phrases keep their recorded spacing
    t0 = starts[0]["onset_sec"]
    assert [p["t"] for p in tl.phrases] == pytest.approx([e["onset_sec"] - t0 for e in starts])
    assert np.array([p["knobs"] for p in tl.phrases]) == pytest.approx(
        np.array([e["payload"]["knobs"] for e in starts]))
    for p in tl.phrases:  # beats at the phrase's tempo (quarter notes), a downbeat a bar
        b = tl.beats[(tl.beats[:, 0] >= p["t"]) & (tl.beats[:, 0] < p["end"])]
        assert np.diff(b[:, 0]) == pytest.approx(60.0 / p["bpm"])
        num, den = map(int, p["meter"].split("/"))
        assert b[0, 1] == 1.0 and b[:, 1].sum() == np.ceil(len(b) / (num * 4 / den))
        assert b[-1, 0] < p["t"] + p["sec"]
    decision = next(e for e in events if e["kind"] == "decision")
    assert tl.region_at(0.0) == tuple(decision["payload"]["target_region"])
    assert tl.states[:, 0].min() <= 0.5 and tl.states[:, 0].max() <= tl.duration_sec
    assert (tl.states[:, 3] > 0).all()  # no "no estimate" rows in the trail


def _events(meters: list[str], bpms: list[float], gap: float = 0.5) -> list[dict]:
    """Events as a session records them: calibration states, then phrases (4 bars each)."""
    ev, t = [], 20.0
    ev += [{"kind": "state", "onset_sec": x, "payload": {"valence": 0.0, "arousal": 0.0,
                                                       "confidence": 0.0}} for x in (18.0, 19.5)]
    for i, (meter, bpm) in enumerate(zip(meters, bpms, strict=True)):
        num, den = map(int, meter.split("/"))
        sec = 4 * num * 4 / den * 60 / bpm
        ev.append({"kind": "phrase", "onset_sec": t, "payload": {
            "bpm": bpm, "meter": meter, "key": "G", "duration_sec": sec}})
        ev.append({"kind": "phrase_start", "onset_sec": t, "payload": {
            "index": i, "knobs": [0.1 * i, 0.5, 0.9]}})
        ev += [{"kind": "state", "onset_sec": t + k, "payload": {
            "valence": 0.1 * k, "arousal": -0.1 * k, "confidence": 0.8}} for k in range(3)]
        ev.append({"kind": "decision", "onset_sec": t + 2.0, "payload": {
            "knobs": [0.1 * (i + 1), 0.5, 0.9], "target": [0.2, -0.5]}})  # an older recording
        t += sec + gap
    ev.append({"kind": "signal_lost", "onset_sec": 25.0, "payload": {}})
    ev.append({"kind": "signal_restored", "onset_sec": 27.0, "payload": {}})
    ev.append({"kind": "signal_lost", "onset_sec": 40.0, "payload": {}})
    return ev


def test_timeline_beats_follow_tempo_and_meter() -> None:
    tl = timeline_from_events(_events(["4/4", "3/4", "6/8"], [120.0, 90.0, 60.0]), 60.0, "x")
    assert [p["t"] for p in tl.phrases] == pytest.approx([0.0, 8.5, 17.0])
    per_phrase = [tl.beats[(tl.beats[:, 0] >= p["t"]) & (tl.beats[:, 0] < p["end"])]
                  for p in tl.phrases]
    assert [len(b) for b in per_phrase] == [16, 12, 12]  # 4 bars of 4, 3 and 3 quarters
    assert [int(b[:, 1].sum()) for b in per_phrase] == [4, 4, 4]  # one downbeat a bar
    assert tl.beat_at(8.5 + 2 * 60 / 90 + 0.1)[1:] == (False, 3)
    assert tl.beat_at(8.5 + 3 * 60 / 90 + 0.1)[1:] == (True, 1)
    assert tl.beat_at(-1.0) == (float("inf"), False, 0)
    # no "no estimate" state; the trail starts at the music
    assert (tl.states[:, 3] > 0).all() and tl.states[0, 0] == 0.0
    assert tl.region_at(0.0) == (0.2, 0.2, -0.5, -0.5)  # a point target: a region of size 0
    assert tl.lost == [(5.0, 7.0), (20.0, float("inf"))]
    assert tl.phrase_at(8.49) == 0 and tl.phrase_at(8.5) == 1 and tl.phrase_at(99.0) == 2
    doc = json.loads(json.dumps(tl.as_json(), allow_nan=False))
    assert doc["lost"][1] == [20.0, None] and len(doc["beats"]) == len(tl.beats)


def test_timeline_needs_music() -> None:
    with pytest.raises(DataError, match="played no phrase"):
        timeline_from_events([{"kind": "state", "onset_sec": 1.0, "payload": {
            "valence": 0.0, "arousal": 0.0, "confidence": 1.0}}], 10.0)


def test_a_failing_ffmpeg_leaves_no_video(tmp_path, monkeypatch) -> None:
    import st_agent.live.video as video

    tl = timeline_from_events(_events(["4/4"], [120.0]), 8.0)
    monkeypatch.setattr(video, "ffmpeg_exe", lambda: shutil.which("false"))
    out = tmp_path / "v.mp4"
    with pytest.raises(DeviceError, match="ffmpeg failed"):
        video.render_video(tl, tmp_path / "none.wav", out, fps=5, size=SIZE)
    assert not out.exists()


# --------------------------------------------------------------------------- frames


@pytest.mark.slow
def test_frames_flash_on_a_phrase_change_and_pulse_on_the_beat(timeline, tmp_path) -> None:
    tl = timeline
    r = FrameRenderer(tl, SIZE)
    w, h = SIZE
    t1 = tl.phrases[1]["t"]
    border = (slice(h // 3, 2 * h // 3), slice(0, 3))  # the frame's left edge
    flash, calm = _pixels(r, t1 + 0.02)[border], _pixels(r, t1 + 1.0)[border]
    assert flash.mean(axis=(0, 1))[0] > calm.mean(axis=(0, 1))[0] + 60  # yellow border
    beat = next(b for b in tl.beats[:, 0] if b > t1 + 1.5)
    cy, cx = round(405 / 720 * h), round(700 / 1280 * w)
    on, off = _pixels(r, beat + 0.01)[cy, cx], _pixels(r, beat + 0.45)[cy, cx]
    assert on.sum() > off.sum() + 100  # the pulse is bright on the beat and fades
    # the knob bars follow the phrase that plays
    bar_y = round((90 + 17) / 720 * h)  # the valence bar's middle row
    row = _pixels(r, tl.phrases[1]["t"] + 0.5)[bar_y, round(760 / 1280 * w):round(1200 / 1280 * w)]
    filled = np.abs(row - (255, 169, 77)).sum(axis=1) < 30  # the valence colour, #ffa94d
    assert filled.mean() == pytest.approx(tl.phrases[1]["knobs"][0], abs=0.03)
    assert r.save_png(t1, tmp_path / "f.png").stat().st_size > 1000
    r.close()


# --------------------------------------------------------------------------- video


def _decoded_audio(path: Path, sr: int) -> np.ndarray:
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "s16le", "-ac",
                          "1", "-ar", str(sr), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.int16).astype(float)


def _envelope(x: np.ndarray, sr: int, hop_sec: float = 0.01) -> np.ndarray:
    hop = round(sr * hop_sec)
    n = x.size // hop
    return np.sqrt((x[:n * hop].reshape(n, hop) ** 2).mean(axis=1))


@pytest.mark.slow
def test_render_video_has_the_frames_and_the_music_in_time(session, timeline, tmp_path) -> None:
    folder, key = session
    fps, start = 10, 2.0
    out = tmp_path / "v.mp4"
    assert main(["render-video", str(folder), "--key-file", str(key), "--fps", str(fps),
                 "--size", *map(str, SIZE), "--start-sec", str(start), "--out", str(out)]) == 0
    info = probe_video(out)
    expected = round((timeline.duration_sec - start) * fps)
    assert abs(info["frames"] - expected) <= 1
    assert info["seconds"] == pytest.approx(expected / fps, abs=1.0 / fps)
    assert info["container_sec"] == pytest.approx(expected / fps, abs=1.5 / fps)
    assert "640x360" in info["video"] and "aac" in info["audio"]
    # the audio track is session.wav from start_sec: its loudness envelope lines up
    sr, wav = wavfile.read(folder / "session.wav")
    mono = wav.mean(axis=1) if wav.ndim == 2 else wav.astype(float)  # as ffmpeg's -ac 1
    ref = _envelope(mono[round(start * sr):], sr)
    got = _envelope(_decoded_audio(out, sr), sr)
    n = min(ref.size, got.size) - 40
    lags = range(-20, 21)
    corr = [np.corrcoef(ref[20:20 + n], got[20 + lag:20 + lag + n])[0, 1] for lag in lags]
    assert max(corr) > 0.9 and abs(lags[int(np.argmax(corr))]) * 0.01 <= 1.0 / fps
    # the decoded frame at the second phrase's start flashes, one second later it does not
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(out), pix_fmt="rgb24")
    next(gen)  # metadata
    frames = [np.frombuffer(f, np.uint8).reshape(SIZE[1], SIZE[0], 3) for f in gen]
    k = round((timeline.phrases[1]["t"] - start) * fps)
    edge = (slice(SIZE[1] // 3, 2 * SIZE[1] // 3), slice(0, 3), 0)
    assert frames[k][edge].mean() > frames[k + fps][edge].mean() + 60


@pytest.mark.parametrize("args, code, match", [
    (["--fps", "0"], 2, "fps must be an int in [1, 60]"),
    (["--size", "641", "360"], 2, "size must be two even ints"),
    (["--end-sec", "1", "--start-sec", "2"], 2, "end_sec must be a number > start_sec"),
    (["--format", "html", "--out", "x.mp4"], 2, "--format html writes only the page"),
    (["--out", "x.avi"], 2, "out must be an .mp4 file"),
])
def test_render_video_refuses_bad_options(tmp_path, capsys, args, code, match) -> None:
    assert main(["render-video", str(tmp_path), *args]) == code
    err = capsys.readouterr().err  # without the box tyro may draw and its line breaks
    assert match in " ".join(err.translate(str.maketrans("│╭╮╰╯─|", "       ")).split())


@pytest.mark.slow
def test_render_video_refuses_what_it_cannot_show(session, tmp_path, capsys) -> None:
    folder, key = session
    assert main(["render-video", str(tmp_path)]) == 3
    assert "is not a session folder" in capsys.readouterr().err
    assert main(["render-video", str(folder), "--format", "html"]) == 3  # no key
    assert "encrypted" in capsys.readouterr().err
    assert main(["render-video", str(folder), "--key-file", str(key), "--start-sec",
                 "1000"]) == 3
    assert "after the end of the music" in capsys.readouterr().err
    copy = tmp_path / "nowav"
    shutil.copytree(folder, copy)
    (copy / "session.wav").unlink()
    assert main(["render-video", str(copy), "--key-file", str(key)]) == 3
    assert "session.wav is missing" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page


def _chromium():
    """Headless Chromium through Selenium, with its network and console logs."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("headless Chromium and chromedriver are needed to test visuals.html "
                    "(Debian packages chromium and chromium-driver): run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1320,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _body(driver) -> dict[str, str]:
    return driver.execute_script("return Object.assign({}, document.body.dataset)")


def _wait(driver, cond, timeout: float = 30.0) -> dict[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = _body(driver)
        if cond(data):
            return data
        time.sleep(0.1)
    raise AssertionError(f"the page did not get there in {timeout} s: {_body(driver)}")


def test_page_is_self_contained(timeline, tmp_path) -> None:
    page = write_visuals_page(tmp_path, timeline).read_text(encoding="utf-8")
    assert f'content="{CSP}"' in page and "default-src 'none'" in CSP
    for needle in ("http://", "https://", "<script src", "<link", "@import", "url("):
        assert needle not in page, needle
    data = page.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    doc = json.loads(data)
    assert len(doc["phrases"]) == len(timeline.phrases) and doc["duration"] > 30
    assert 'src="session.wav"' in page


@pytest.mark.slow
def test_page_animates_with_the_audio_in_chromium(session, timeline) -> None:
    folder, key = session
    assert main(["render-video", str(folder), "--format", "html", "--key-file", str(key)]) == 0
    page = folder / PAGE_FILE
    tl = timeline
    t = tl.phrases[1]["t"] + 1.3 * 60.0 / tl.phrases[1]["bpm"]  # inside phrase 2, beat 2
    driver = _chromium()
    try:
        driver.get(page.as_uri() + f"#t={t}")
        data = _wait(driver, lambda d: int(d.get("frames", 0)) > 5)
        assert float(data["time"]) == pytest.approx(t, abs=1e-3)
        assert int(data["phrase"]) == tl.phrases[tl.phrase_at(t)]["index"] == 1
        assert int(data["beat"]) == tl.beat_at(t)[2] == 2
        frames0 = int(data["frames"])
        driver.execute_script("document.getElementById('audio').play()")
        data = _wait(driver, lambda d: float(d["time"]) > t + 1.5)  # the audio clock runs
        assert data["audio"] == "playing" and int(data["frames"]) > frames0 + 20
        # at the page's own clock the phrase it shows is the timeline's
        assert int(data["phrase"]) == tl.phrases[tl.phrase_at(float(data["time"]))]["index"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        urls = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                for e in driver.get_log("performance")
                if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
        allowed = {page.as_uri(), (folder / "session.wav").as_uri()}
        assert (folder / "session.wav").as_uri() in urls
        assert [u for u in urls if u.split("#")[0] not in allowed
                and not u.startswith("data:")] == []
        # and the page could not fetch anything if it tried: its CSP refuses
        got = driver.execute_async_script(
            "const cb = arguments[0]; fetch('summary.json').then(() => cb('loaded'))"
            ".catch(() => cb('refused'))")
        assert got == "refused"
    finally:
        driver.quit()
