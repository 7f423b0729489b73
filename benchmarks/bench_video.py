"""Figures of the visuals (issue 17): video render time per minute of music, and the
frame rate of ``visuals.html`` in headless Chromium.

    nice .venv/bin/python benchmarks/bench_video.py            # a fresh 2-minute demo
    nice .venv/bin/python benchmarks/bench_video.py --session runs/demo-calm-...

Prints, for the video at its defaults (1280x720, 25 fps, H.264 + AAC):

* drawing only (:class:`st_agent.live.video.FrameRenderer`, blitted): ms per
  frame and seconds per minute of music;
* the whole ``render-video`` (drawing, piping, encoding, muxing): seconds per
  minute of music, and the check that the file has the expected frames and an
  audio stream;

and for the page: frames drawn per second of the audio clock while it plays
(``requestAnimationFrame``; the browser caps it at the display rate, 60 Hz in
headless Chromium), over ``--page-sec`` seconds.

Timings depend on the machine and its load (the numbers in the notes were taken
on 2 shared CPU cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _demo(minutes: float, out: Path) -> Path:
    from st_agent.cli import main

    if main(["demo", "--minutes", str(minutes), "--calibration-sec", "10", "--out", str(out),
             "--name", "bench-video"]) != 0:
        raise SystemExit("the demo failed")
    return out / "bench-video"


def bench_drawing(timeline, size=(1280, 720), fps: int = 25, n: int = 500) -> float:
    """Milliseconds per blitted frame over ``n`` frames from the middle of the music."""
    from st_agent.live.video import FrameRenderer

    r = FrameRenderer(timeline, size)
    t0 = max(0.0, timeline.duration_sec / 2 - n / fps / 2)
    start = time.perf_counter()
    for i in range(n):
        r.frame(t0 + i / fps)
    ms = (time.perf_counter() - start) / n * 1000
    r.close()
    return ms


def bench_page(folder: Path, seconds: float) -> dict:
    """Frames the page draws per second of its audio clock, in headless Chromium."""
    chromium, driver_exe = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_exe is None:
        raise SystemExit("headless Chromium and chromedriver are needed: run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from st_agent.live.visuals import PAGE_FILE

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1320,900"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(driver_exe), options=opts)
    try:
        d.get((folder / PAGE_FILE).as_uri())
        time.sleep(1.0)
        d.execute_script("document.getElementById('audio').play()")
        time.sleep(1.0)
        read = "return [+document.body.dataset.frames, +document.body.dataset.time]"
        f0, t0 = d.execute_script(read)
        w0 = time.perf_counter()
        time.sleep(seconds)
        f1, t1 = d.execute_script(read)
        wall = time.perf_counter() - w0
    finally:
        d.quit()
    return {"frames": f1 - f0, "audio_sec": t1 - t0, "wall_sec": wall,
            "fps": (f1 - f0) / max(t1 - t0, 1e-9)}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--session", type=Path, help="a recorded session folder (else a demo)")
    ap.add_argument("--minutes", type=float, default=2.0, help="minutes of the fresh demo")
    ap.add_argument("--page-sec", type=float, default=10.0, help="seconds the page plays")
    args = ap.parse_args(argv)

    from st_agent.live.video import probe_video, render_video
    from st_agent.live.visuals import load_timeline, write_visuals_page

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.session or _demo(args.minutes, Path(tmp))
        tl = load_timeline(folder)
        minutes = tl.duration_sec / 60
        print(f"session {folder}: {tl.duration_sec:.1f} s of music, {len(tl.phrases)} phrases")
        ms = bench_drawing(tl)
        print(f"drawing only (1280x720, blitted): {ms:.1f} ms per frame = "
              f"{ms * 25 * 60 / 1000:.1f} s per minute of music at 25 fps")
        out = Path(tmp) / "video.mp4"
        res = render_video(tl, folder / "session.wav", out)
        info = probe_video(out)
        print(f"render-video (draw + H.264/AAC encode, 1280x720, 25 fps): {res.render_sec:.1f} s "
              f"for {minutes:.2f} min = {res.render_sec / minutes:.1f} s per minute of music "
              f"({res.seconds * 25 / res.render_sec:.0f} frames/s)")
        print(f"  file: {info['frames']} frames (expected {res.frames}), {info['seconds']:.2f} s, "
              f"audio: {'yes' if info['audio'] else 'NO'}, {out.stat().st_size / 1e6:.1f} MB")
        write_visuals_page(folder, tl)
        page = bench_page(folder, args.page_sec)
        print(f"visuals.html in headless Chromium: {page['frames']} frames over "
              f"{page['audio_sec']:.2f} s of audio clock ({page['wall_sec']:.2f} s wall) = "
              f"{page['fps']:.1f} frames/s")
        print(json.dumps({"render_sec_per_music_min": res.render_sec / minutes,
                          "draw_ms_per_frame": ms, "page_fps": page["fps"]}))


if __name__ == "__main__":
    sys.exit(main())
