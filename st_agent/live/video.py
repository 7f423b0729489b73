"""The video of a recorded session: Matplotlib frames piped to ffmpeg, the music muxed in.

:func:`render_video` draws the picture of :mod:`st_agent.live.visuals` with
Matplotlib's Agg backend and writes raw RGBA frames to the ffmpeg binary of the
``imageio-ffmpeg`` wheel (no system ffmpeg needed), which encodes H.264
(``yuv420p``, plays everywhere) and adds ``session.wav`` as an AAC track cut to
the same seconds.

Drawing is blitted: the figure's static parts (axes, labels, the timeline of
the whole session) are drawn once; each frame restores that background and
draws only the artists that move (trail, head, region, knob bars, pulse, texts,
cursor, flash). :class:`FrameRenderer` does one frame; ``bench_video.py``
measures the render time per minute of music.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.errors import DataError, DeviceError
from st_agent.live.visuals import FLASH_SEC, PULSE_TAU_SEC, TRAIL_SEC, Timeline

__all__ = ["FrameRenderer", "VideoResult", "ffmpeg_exe", "probe_video", "render_video"]

logger = logging.getLogger(__name__)

_BG, _PANEL, _GRID, _DIM, _TEXT = "#15181e", "#222731", "#2a2f38", "#5c6370", "#e6e6e6"
_COL = {"valence": "#ffa94d", "arousal": "#4dabf7", "tempo": "#69db7c", "energy": "#ff6b6b",
        "beat": "#ffd43b"}
_KNOBS = ("valence", "tempo", "energy")


@dataclass
class VideoResult:
    """What :func:`render_video` wrote.

    Parameters
    ----------
    path : Path
        The video file.
    frames : int
        Frames written.
    seconds : float
        Seconds of video (``frames / fps``).
    render_sec : float
        Wall-clock seconds of drawing and encoding.
    """

    path: Path
    frames: int
    seconds: float
    render_sec: float


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel.

    Raises
    ------
    DeviceError
        When the wheel or its binary is missing.
    """
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise DeviceError(f"no ffmpeg ({e}); install the imageio-ffmpeg wheel "
                          "(pip install 'imageio-ffmpeg>=0.5', or scripts/setup.sh)") from e


class FrameRenderer:
    """Draw the visuals of a :class:`Timeline` one frame at a time (Agg, blitted).

    Parameters
    ----------
    timeline : Timeline
        What to show.
    size : (int, int)
        Width and height in pixels.

    Examples
    --------
    >>> r = FrameRenderer(timeline, (1280, 720))  # doctest: +SKIP
    >>> rgba = r.frame(12.5)  # memoryview, height x width x 4 bytes
    """

    def __init__(self, timeline: Timeline, size: tuple[int, int]) -> None:
        # an Agg canvas of its own: no pyplot, no global backend switch
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.tl = timeline
        self.size = size
        w, h = size
        self.fig = Figure(figsize=(w / 100, h / 100), dpi=100, facecolor=_BG)
        self.canvas = FigureCanvasAgg(self.fig)
        self._scale = h / 720  # fonts and line widths follow the height
        self._animated: list[Any] = []
        self._build()
        self.canvas.draw()
        self._bg = self.canvas.copy_from_bbox(self.fig.bbox)
        self._text_layer, self._text_key = self._bg, None

    # ------------------------------------------------------------------ layout
    def _fs(self, pt: float) -> float:
        return pt * self._scale

    def _anim(self, artist: Any) -> Any:
        artist.set_animated(True)
        self._animated.append(artist)
        return artist

    def _axes(self, rect: tuple[float, float, float, float], **kw: Any) -> Any:
        ax = self.fig.add_axes(rect, facecolor=kw.pop("facecolor", _BG), **kw)
        for sp in ax.spines.values():
            sp.set_color(_GRID)
        ax.tick_params(colors=_DIM, labelsize=self._fs(9))
        return ax

    def _build(self) -> None:
        w, h = self.size
        # the plane is square: 440 px of a 1280x720 frame, smaller in a narrower one
        side = min(440 / 720 * h, 440 / 1280 * w)
        self.ax_plane = self._axes((70 / 1280, 1 - 70 / 720 - side / h, side / w, side / h))
        self._build_plane()
        self.ax_knobs = self._axes((760 / 1280, 1 - (90 + 3 * 62) / 720, 440 / 1280,
                                    3 * 62 / 720), facecolor=_BG)
        self._build_knobs()
        self.ax_beat = self._axes((620 / 1280, 1 - 480 / 720, 160 / 1280, 150 / 720))
        self._build_beat()
        self.ax_time = self._axes((70 / 1280, 1 - 680 / 720, 1140 / 1280, 100 / 720))
        self._build_timeline()
        over = self.fig.add_axes((0, 0, 1, 1), facecolor="none")
        over.set_axis_off()
        over.set(xlim=(0, 1), ylim=(0, 1))
        self.ax_over = over
        from matplotlib.patches import Rectangle

        self.flash = self._anim(over.add_patch(Rectangle(
            (0.004, 0.007), 0.992, 0.986, fill=True, facecolor=(1, 0.83, 0.23, 0.0),
            edgecolor=(1, 0.83, 0.23, 0.0), lw=self._fs(10))))
        self.title = self._anim(over.text(70 / 1280, 1 - 40 / 720, "", color=_TEXT,
                                          fontsize=self._fs(12), va="baseline"))
        self.lost = self._anim(over.text(80 / 1280, 1 - 94 / 720, "", color=_COL["energy"],
                                         fontsize=self._fs(13), weight="bold"))

    def _build_plane(self) -> None:
        from matplotlib.patches import Rectangle

        ax = self.ax_plane
        ax.set(xlim=(-1, 1), ylim=(-1, 1), xticks=[-1, 0, 1], yticks=[-1, 0, 1])
        ax.set_xlabel("valence", color=_DIM, fontsize=self._fs(11), labelpad=2)
        ax.set_ylabel("arousal", color=_DIM, fontsize=self._fs(11), labelpad=2)
        ax.axhline(0, color=_GRID, lw=1)
        ax.axvline(0, color=_GRID, lw=1)
        for word, v, a in (("tense", -0.62, 0.88), ("excited", 0.62, 0.88),
                           ("sad", -0.62, -0.92), ("calm", 0.62, -0.92)):
            ax.text(v, a, word, color=_DIM, ha="center", va="center", fontsize=self._fs(10))
        self.region = self._anim(ax.add_patch(Rectangle(
            (0, 0), 0, 0, facecolor=(0.41, 0.86, 0.49, 0.18), edgecolor=_COL["tempo"],
            ls="--", lw=self._fs(1.5))))
        self.path_all, = ax.plot([], [], color=(0.8, 0.8, 0.8, 0.25), lw=self._fs(1))
        self.path_recent, = ax.plot([], [], color="#f8f9fa", lw=self._fs(2.5))
        self.head, = ax.plot([], [], "o", color=_COL["beat"], ms=self._fs(11), mec="none")
        for a in (self.path_all, self.path_recent, self.head):
            self._anim(a)

    def _build_knobs(self) -> None:
        ax = self.ax_knobs
        ax.set(xlim=(0, 1), ylim=(2.75, -0.25), yticks=[0, 1, 2], xticks=[0, 0.5, 1])
        ax.set_yticklabels(_KNOBS, color=_TEXT, fontsize=self._fs(12))
        for sp in ax.spines.values():
            sp.set_visible(False)
        ax.barh([0, 1, 2], [1, 1, 1], height=0.55, color=_PANEL)
        self.bars = [self._anim(b) for b in ax.barh(
            [0, 1, 2], [0, 0, 0], height=0.55, color=[_COL[k] for k in _KNOBS])]
        self.knob_text = [self._anim(ax.text(1.03, i, "", color=_TEXT, va="center",
                                             fontsize=self._fs(12),
                                             transform=ax.get_yaxis_transform()))
                          for i in range(3)]
        self.next_ticks, = ax.plot([], [], "|", color="white", ms=self._fs(30), mew=self._fs(3))
        self._anim(self.next_ticks)
        self.knob_note = self._anim(ax.text(0.3, 2.62, "", color=_DIM, fontsize=self._fs(9),
                                            va="center"))

    def _build_beat(self) -> None:
        from matplotlib.patches import Circle

        ax = self.ax_beat
        ax.set_axis_off()
        ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal")
        ax.add_patch(Circle((0, 0), 0.8, fill=False, edgecolor=_COL["beat"], lw=self._fs(2)))
        self.pulse = self._anim(ax.add_patch(Circle((0, 0), 0.4, facecolor=_COL["beat"],
                                                    edgecolor="none")))
        over = self.fig
        self.phrase_text = self._anim(over.text(800 / 1280, 1 - 385 / 720, "", color=_TEXT,
                                                fontsize=self._fs(21), weight="bold"))
        self.music_text = self._anim(over.text(800 / 1280, 1 - 420 / 720, "", color=_TEXT,
                                               fontsize=self._fs(16)))
        self.beat_text = self._anim(over.text(800 / 1280, 1 - 452 / 720, "", color=_DIM,
                                              fontsize=self._fs(16)))

    def _build_timeline(self) -> None:
        tl, ax = self.tl, self.ax_time
        dur = max(tl.duration_sec, 1e-6)
        ax.set(xlim=(0, dur), ylim=(-1.05, 1.05), yticks=[-1, 0, 1])
        ax.text(0.0, 1.04, "music time (s)", color=_DIM, fontsize=self._fs(9),
                transform=ax.transAxes, va="bottom")
        region = tl.region_at(0.0)
        if region is not None:
            ax.axhspan(region[0], region[1], color=_COL["valence"], alpha=0.10, lw=0)
            ax.axhspan(region[2], region[3], color=_COL["arousal"], alpha=0.10, lw=0)
        for p in tl.phrases:
            ax.axvline(p["t"], color=(1, 1, 1, 0.12), lw=1)
        s = tl.states
        if len(s):
            t = np.maximum(s[:, 0], 0.0)
            ax.plot(t, s[:, 1], color=_COL["valence"], lw=self._fs(1.3), label="valence")
            ax.plot(t, s[:, 2], color=_COL["arousal"], lw=self._fs(1.3), label="arousal")
            leg = ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=self._fs(8),
                            ncol=2, frameon=False, borderaxespad=0.1)
            for text in leg.get_texts():
                text.set_color(_TEXT)
        self.cursor = self._anim(ax.axvline(0, color="white", lw=self._fs(2)))

    # ------------------------------------------------------------------ frames
    def update(self, t: float) -> None:
        """Set every moving artist to music time ``t`` (s)."""
        tl = self.tl
        pi = tl.phrase_at(t)
        p = tl.phrases[pi]
        region = tl.region_at(t)
        if region is not None:
            v0, v1, a0, a1 = region
            self.region.set_bounds(v0, a0, max(v1 - v0, 0.01), max(a1 - a0, 0.01))
        s = tl.states
        n = int(np.searchsorted(s[:, 0], t, side="right")) if len(s) else 0
        hv, ha = tl.state_at(t)
        first = int(np.searchsorted(s[:, 0], t - TRAIL_SEC, side="right")) if len(s) else 0
        self.path_all.set_data(np.append(s[:n, 1], hv), np.append(s[:n, 2], ha))
        self.path_recent.set_data(np.append(s[first:n, 1], hv), np.append(s[first:n, 2], ha))
        self.head.set_data([hv], [ha])
        for bar, text, k in zip(self.bars, self.knob_text, p["knobs"], strict=True):
            bar.set_width(k)
            text.set_text(f"{k:.2f}")
        di = tl.decision_at(t)
        nxt = tl.decisions[di]["knobs"] if di >= 0 and tl.decisions[di]["t"] > p["t"] else None
        self.next_ticks.set_data(nxt or [], [0, 1, 2] if nxt else [])
        self.next_ticks.set_visible(nxt is not None)
        self.knob_note.set_text("white tick: the next phrase's knobs" if nxt
                                else "knobs of the phrase playing")
        dt, down, beat_no = tl.beat_at(t)
        pulse = math.exp(-dt / PULSE_TAU_SEC) if math.isfinite(dt) else 0.0
        self.pulse.set_radius(0.8 * (0.45 + (0.55 if down else 0.4) * pulse))
        self.pulse.set_alpha(0.25 + 0.75 * pulse)
        self.phrase_text.set_text(f"phrase {p['index'] + 1} of {len(tl.phrases)}")
        self.music_text.set_text(f"{round(p['bpm'])} bpm · key {p['key']} · {p['meter']}")
        self.beat_text.set_text(f"beat {beat_no}" if beat_no else "")
        self.cursor.set_xdata([t, t])
        self.title.set_text(f"{tl.name}   {_clock(t)} / {_clock(tl.duration_sec)}")
        lost = any(a <= t < b for a, b in tl.lost)
        self.lost.set_text("signal lost: holding the knobs" if lost else "")
        since = t - p["t"]
        f = 1.0 - since / FLASH_SEC if 0 <= since < FLASH_SEC else 0.0
        self.flash.set_visible(f > 0)  # an invisible artist costs nothing to draw
        self.flash.set_facecolor((1, 0.83, 0.23, 0.12 * f))
        self.flash.set_edgecolor((1, 0.83, 0.23, f))

    def frame(self, t: float) -> memoryview:
        """The frame at music time ``t``: RGBA bytes, shape (height, width, 4)."""
        from matplotlib.text import Text

        self.update(t)
        texts = [a for a in self._animated if isinstance(a, Text)]
        # text is most of the drawing time and changes a few times a second: a second
        # cached layer holds the background with the texts
        key = tuple(a.get_text() for a in texts)
        if key != self._text_key:
            self.canvas.restore_region(self._bg)
            for a in texts:
                self.fig.draw_artist(a)
            self._text_layer = self.canvas.copy_from_bbox(self.fig.bbox)
            self._text_key = key
        self.canvas.restore_region(self._text_layer)
        for a in self._animated:
            if not isinstance(a, Text):
                self.fig.draw_artist(a)
        return self.canvas.buffer_rgba()

    def save_png(self, t: float, path: str | Path) -> Path:
        """Save the frame at ``t`` as a PNG (to look at it)."""
        from PIL import Image

        w, h = self.size
        img = np.asarray(self.frame(t)).reshape(h, w, 4)
        Image.fromarray(img[:, :, :3].copy()).save(path)
        return Path(path)

    def close(self) -> None:
        """Free the figure."""
        self.fig.clear()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clock(t: float) -> str:
    m, s = divmod(int(max(t, 0.0)), 60)
    return f"{m}:{s:02d}"


def _ffmpeg_cmd(exe: str, size: tuple[int, int], fps: int, wav: Path, start: float,
                seconds: float, out: Path) -> list[str]:
    w, h = size
    return [exe, "-y", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
            "-ss", f"{start:.6f}", "-i", str(wav),
            "-map", "0:v:0", "-map", "1:a:0", "-t", f"{seconds:.6f}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart", str(out)]


def render_video(timeline: Timeline, wav: str | Path, out: str | Path, *, fps: int = 25,
                 size: tuple[int, int] = (1280, 720), start_sec: float = 0.0,
                 end_sec: float | None = None) -> VideoResult:
    """Render ``timeline`` from ``start_sec`` to ``end_sec`` as an MP4 with ``wav`` as audio.

    Parameters
    ----------
    timeline : Timeline
        What to show (music time, seconds).
    wav : str or Path
        The session's ``session.wav`` (music time 0 at its first sample).
    out : str or Path
        The ``.mp4`` to write (its folder is created).
    fps : int
        Frames per second.
    size : (int, int)
        Width and height, pixels (even).
    start_sec, end_sec : float
        Seconds of music to render; ``end_sec`` None = the end.

    Returns
    -------
    VideoResult
        ``round((end - start) * fps)`` frames.

    Raises
    ------
    DataError
        When the range holds no music.
    DeviceError
        When ffmpeg is missing or fails.
    """
    end = timeline.duration_sec if end_sec is None else min(end_sec, timeline.duration_sec)
    if not end - start_sec > 0:
        raise DataError(f"start_sec {start_sec} is at or after the end of the music "
                        f"({timeline.duration_sec:.1f} s of session.wav); choose a start before it")
    n = max(1, round((end - start_sec) * fps))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = _ffmpeg_cmd(ffmpeg_exe(), size, fps, Path(wav), start_sec, n / fps, out)
    t_wall = time.perf_counter()
    with FrameRenderer(timeline, size) as renderer:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            try:
                for i in range(n):
                    proc.stdin.write(renderer.frame(start_sec + i / fps))
            except BrokenPipeError:
                pass  # ffmpeg stopped: its message is read below
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            err = proc.stderr.read().decode("utf-8", "replace")
            rc = proc.wait()
        except BaseException:  # Ctrl-C or a drawing error: no half-written video is left
            proc.kill()
            proc.wait()
            out.unlink(missing_ok=True)
            raise
    if rc != 0:
        out.unlink(missing_ok=True)
        raise DeviceError(f"ffmpeg failed (exit {rc}) writing {out}: {err.strip()[-500:]}")
    render_sec = time.perf_counter() - t_wall
    logger.info("wrote %s: %d frames, %.1f s of video in %.1f s", out, n, n / fps, render_sec)
    return VideoResult(path=out, frames=n, seconds=n / fps, render_sec=render_sec)


def probe_video(path: str | Path) -> dict[str, Any]:
    """Frames, seconds and streams of a video file, from the bundled ffmpeg.

    Returns
    -------
    info : dict
        ``frames`` (int), ``seconds`` (float, from the decoded frames),
        ``container_sec`` (the file's duration, its longest stream), ``video``
        and ``audio`` (the ffmpeg stream description lines, or None).
    """
    import imageio_ffmpeg

    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                       text=True, check=False)
    lines = [x.strip() for x in r.stderr.splitlines() if x.strip().startswith("Stream #")]
    m = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", r.stderr)
    container = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])) if m else None
    return {"frames": int(frames), "seconds": float(secs), "container_sec": container,
            "video": next((x for x in lines if "Video:" in x), None),
            "audio": next((x for x in lines if "Audio:" in x), None)}
