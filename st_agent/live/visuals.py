"""Visuals in time with the music of a recorded session: a video and a page.

``st-agent render-video FOLDER`` reads a finished session back
(:func:`st_agent.biometrics.recording.read_events`) and shows, in time with
its ``session.wav``:

* the estimated state's trail in the valence/arousal plane, with the target
  region shaded (as the report's state plot);
* the three knobs of the phrase that plays (valence, tempo, energy) as bars,
  and the controller's next knobs as ticks once it has decided them;
* a beat pulse, from each phrase's start time, tempo (``Q:1/4=bpm``) and meter,
  the downbeat larger;
* the phrase index, tempo, key and meter, the frame flashing when a phrase starts;
* a timeline of valence and arousal over the whole music with a cursor.

Two outputs, the same picture:

* ``video.mp4`` (:func:`st_agent.live.video.render_video`): Matplotlib (Agg)
  frames piped to the ffmpeg of the ``imageio-ffmpeg`` wheel, H.264 with the
  session's music as AAC;
* ``visuals.html`` (:func:`write_visuals_page`): one self-contained page in the
  session folder, an ``<audio>`` element playing ``session.wav`` beside it and a
  ``<canvas>`` drawn on every animation frame from ``audio.currentTime``. All
  data is embedded as JSON; the page loads nothing else (its Content-Security-Policy
  forbids every fetch but the audio file).

Times here are *music time*: seconds of ``session.wav``, 0 at the start of the
first phrase (the WAV starts there; the calibration before it has no music).
This module is light (NumPy and the standard library); Matplotlib and ffmpeg load
in :mod:`st_agent.live.video`.
"""

from __future__ import annotations

import html
import json
import logging
import math
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from st_agent.errors import DataError, UsageError

__all__ = [
    "FLASH_SEC",
    "PAGE_FILE",
    "PULSE_TAU_SEC",
    "TRAIL_SEC",
    "RenderVideoConfig",
    "Timeline",
    "load_timeline",
    "timeline_from_events",
    "wav_duration",
    "write_visuals_page",
]

logger = logging.getLogger(__name__)

#: File name of the page in the session folder.
PAGE_FILE = "visuals.html"
#: Seconds a phrase change flashes.
FLASH_SEC = 0.6
#: Seconds of recent trail drawn bright in the valence/arousal plane.
TRAIL_SEC = 12.0
#: Time constant of the beat pulse's decay, seconds.
PULSE_TAU_SEC = 0.16

_MAX_SIZE = (3840, 2160)
_MIN_SIZE = (320, 240)


@dataclass
class RenderVideoConfig:
    """Render a recorded session as a video with its music, or as a page that plays it
    (``st-agent render-video``)."""

    folder: tyro.conf.Positional[Path]
    """Session folder (with session.json and session.wav)."""
    out: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Video file to write (.mp4); None = video.mp4 in the session folder."""
    format: Literal["mp4", "html"] = "mp4"
    """mp4: the video (and with --html the page too); html: only the page visuals.html
    in the session folder (it plays session.wav beside it)."""
    html: bool = False
    """Also write the page visuals.html into the session folder."""
    fps: int = 25
    """Frames per second of the video, 1 to 60."""
    size: tuple[int, int] = (1280, 720)
    """Width and height of the video in pixels, even numbers from 320x240 to 3840x2160."""
    start_sec: float = 0.0
    """First second of the music to render (0 = the first phrase)."""
    end_sec: float | None = None
    """Last second of the music to render; None = the end of session.wav."""
    key_file: Path | None = None
    """Key file of an encrypted session."""

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or not 1 <= self.fps <= 60:
            raise UsageError(f"fps must be an int in [1, 60], got {self.fps!r}")
        w, h = self.size
        if not (isinstance(w, int) and isinstance(h, int) and _MIN_SIZE[0] <= w <= _MAX_SIZE[0]
                and _MIN_SIZE[1] <= h <= _MAX_SIZE[1] and w % 2 == 0 and h % 2 == 0):
            raise UsageError(f"size must be two even ints, width in [{_MIN_SIZE[0]}, "
                             f"{_MAX_SIZE[0]}] and height in [{_MIN_SIZE[1]}, {_MAX_SIZE[1]}], "
                             f"got {self.size!r}")
        if not (math.isfinite(self.start_sec) and self.start_sec >= 0):
            raise UsageError(f"start_sec must be a finite number >= 0, got {self.start_sec!r}")
        if self.end_sec is not None and not (math.isfinite(self.end_sec)
                                             and self.end_sec > self.start_sec):
            raise UsageError(f"end_sec must be a number > start_sec ({self.start_sec}), "
                             f"got {self.end_sec!r}")
        if self.format == "html" and self.out is not None:
            raise UsageError(f"--out {self.out} is the video's file, but --format html writes "
                             f"only the page, always {PAGE_FILE} in the session folder (it "
                             "plays session.wav beside it); drop --out or use --format mp4")
        if self.out is not None and self.out.suffix.lower() != ".mp4":
            raise UsageError(f"out must be an .mp4 file, got {str(self.out)!r}")

    def video_path(self) -> Path:
        """Where the video goes."""
        return self.out if self.out is not None else self.folder / "video.mp4"


# --------------------------------------------------------------------------- timeline


@dataclass
class Timeline:
    """What the visuals show, on the music clock (seconds of ``session.wav``).

    Parameters
    ----------
    duration_sec : float
        Seconds of music (of ``session.wav``).
    states : ndarray, shape (n, 4)
        Estimated states: time (s), valence, arousal, confidence; times ascending.
    phrases : list of dict
        One per phrase, in order: ``index``, ``t`` (start, s), ``end`` (the next
        phrase's start or the music's end, s), ``sec`` (its own length, s), ``bpm``
        (quarter notes per minute), ``key``, ``meter``, ``knobs`` ([valence, tempo,
        energy] in [0, 1]).
    beats : ndarray, shape (m, 2)
        Beat times (s) and 1.0 for a downbeat (first beat of a bar), else 0.0.
    decisions : list of dict
        Controller decisions: ``t`` (s), ``region`` ([v_lo, v_hi, a_lo, a_hi]; a
        point has lo == hi), ``knobs`` (for the next phrase).
    lost : list of (float, float)
        Intervals (s) with the signal lost; the end is ``inf`` if never restored.
    name : str
        The session folder's name.
    """

    duration_sec: float
    states: np.ndarray
    phrases: list[dict[str, Any]]
    beats: np.ndarray
    decisions: list[dict[str, Any]]
    lost: list[tuple[float, float]] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        self._phrase_t = np.array([p["t"] for p in self.phrases], dtype=float)
        self._decision_t = np.array([d["t"] for d in self.decisions], dtype=float)

    def phrase_at(self, t: float) -> int:
        """Index into :attr:`phrases` of the phrase playing at ``t`` (0 before the first)."""
        return max(0, int(np.searchsorted(self._phrase_t, t, side="right")) - 1)

    def decision_at(self, t: float) -> int:
        """Index into :attr:`decisions` of the latest decision at or before ``t``; -1: none."""
        return int(np.searchsorted(self._decision_t, t, side="right")) - 1

    def region_at(self, t: float) -> tuple[float, float, float, float] | None:
        """The target region at ``t`` (the first decision's before it); None without one."""
        if not self.decisions:
            return None
        return tuple(self.decisions[max(0, self.decision_at(t))]["region"])

    def state_at(self, t: float) -> tuple[float, float]:
        """Valence and arousal at ``t``, linearly interpolated between estimates."""
        s = self.states
        if not len(s):
            return (0.0, 0.0)
        return (float(np.interp(t, s[:, 0], s[:, 1])), float(np.interp(t, s[:, 0], s[:, 2])))

    def beat_at(self, t: float) -> tuple[float, bool, int]:
        """Seconds since the last beat (inf before the first), whether it was a downbeat,
        and its number in the bar (1-based; 0 before the first beat)."""
        i = int(np.searchsorted(self.beats[:, 0], t, side="right")) - 1 if len(self.beats) else -1
        if i < 0:
            return (math.inf, False, 0)
        j = i
        while j > 0 and self.beats[j, 1] < 0.5:
            j -= 1
        return (t - float(self.beats[i, 0]), bool(self.beats[i, 1] > 0.5), i - j + 1)

    def as_json(self) -> dict[str, Any]:
        """The timeline as plain JSON types (what the page embeds), times rounded to ms."""
        def r(x: float) -> float | None:
            return round(float(x), 3) if math.isfinite(x) else None

        return {
            "name": self.name, "duration": r(self.duration_sec),
            "flash": FLASH_SEC, "trail": TRAIL_SEC, "tau": PULSE_TAU_SEC,
            "states": [[r(x) for x in row] for row in self.states],
            "phrases": [{**p, "t": r(p["t"]), "end": r(p["end"]), "sec": r(p["sec"]),
                         "knobs": [r(k) for k in p["knobs"]]} for p in self.phrases],
            "beats": [[r(t), int(d)] for t, d in self.beats],
            "decisions": [{"t": r(d["t"]), "region": [r(x) for x in d["region"]],
                           "knobs": [r(k) for k in d["knobs"]]} for d in self.decisions],
            "lost": [[r(a), r(b)] for a, b in self.lost],
        }


def _beats_per_bar(meter: str) -> int:
    """Quarter-note beats in a bar of ``meter`` (4/4: 4, 6/8: 3, 2/2: 4; at least 1)."""
    try:
        num, den = (int(x) for x in str(meter).split("/"))
    except ValueError:
        return 4
    return max(1, round(num * 4 / den)) if den > 0 else 4


def _phrase_beats(phrases: list[dict[str, Any]]) -> np.ndarray:
    """Beats of each phrase while it sounds (its own length, cut at the next phrase)."""
    rows = []
    for p in phrases:
        step = 60.0 / p["bpm"]
        per_bar = _beats_per_bar(p["meter"])
        n = max(1, math.ceil((min(p["end"], p["t"] + p["sec"]) - p["t"]) / step - 1e-6))
        rows += [(p["t"] + k * step, 1.0 if k % per_bar == 0 else 0.0) for k in range(n)]
    return np.array(rows, dtype=float).reshape(-1, 2)


def _knob_list(k: Any) -> list[float]:
    if isinstance(k, dict):
        return [float(k["valence"]), float(k["tempo"]), float(k["energy"])]
    return [float(x) for x in k][:3]


def timeline_from_events(events: list[dict[str, Any]], duration_sec: float,
                         name: str = "") -> Timeline:
    """The :class:`Timeline` of a session's events.

    Parameters
    ----------
    events : list of dict
        ``Session.events`` (``kind``, ``onset_sec``, ``payload``), in recorded order.
    duration_sec : float
        Seconds of music (of ``session.wav``); later events are dropped.
    name : str
        Shown in the picture.

    Raises
    ------
    DataError
        When the session played no phrase.
    """
    starts = [e for e in events if e["kind"] == "phrase_start"]
    texts = [e for e in events if e["kind"] == "phrase"]
    if not starts:
        raise DataError("the session played no phrase (no phrase_start event), so there is "
                        "no music to show; record a session that reaches its music")
    t0 = float(starts[0]["onset_sec"])
    phrases = []
    for i, st in enumerate(starts):
        ph = texts[i]["payload"] if i < len(texts) else {}
        t = float(st["onset_sec"]) - t0
        if t >= duration_sec:
            break
        end = (float(starts[i + 1]["onset_sec"]) - t0 if i + 1 < len(starts)
               else t + float(ph.get("duration_sec", duration_sec - t)))
        phrases.append({"index": int(st["payload"].get("index", i)), "t": t,
                        "end": min(end, duration_sec),
                        "sec": float(ph.get("duration_sec", end - t)),
                        "bpm": float(ph.get("bpm", 120.0)),
                        "key": str(ph.get("key", "?")), "meter": str(ph.get("meter", "4/4")),
                        "knobs": _knob_list(st["payload"]["knobs"])})
    states = np.array([[e["onset_sec"] - t0, e["payload"]["valence"], e["payload"]["arousal"],
                        e["payload"].get("confidence", 1.0)]
                       for e in events if e["kind"] == "state"
                       # confidence 0: no estimate (calibrating, signal lost)
                       and e["payload"].get("confidence", 1.0) > 0], dtype=float).reshape(-1, 4)
    # the last estimate before the music starts, then those during it
    first = max(0, int(np.searchsorted(states[:, 0], 0.0, side="right")) - 1)
    states = states[first:]
    states = states[states[:, 0] <= duration_sec]
    decisions = []
    for e in events:
        if e["kind"] != "decision":
            continue
        p = e["payload"]
        region = p.get("target_region")
        if region is None or len(region) != 4:
            v, a = p["target"][:2]
            region = (v, v, a, a)
        decisions.append({"t": float(e["onset_sec"]) - t0, "region": [float(x) for x in region],
                          "knobs": _knob_list(p["knobs"])})
    lost, t_lost = [], None
    for e in events:
        if e["kind"] == "signal_lost" and t_lost is None:
            t_lost = float(e["onset_sec"]) - t0
        elif e["kind"] == "signal_restored" and t_lost is not None:
            lost.append((t_lost, float(e["onset_sec"]) - t0))
            t_lost = None
    if t_lost is not None:
        lost.append((t_lost, math.inf))
    return Timeline(duration_sec=float(duration_sec), states=states, phrases=phrases,
                    beats=_phrase_beats(phrases), decisions=decisions, lost=lost, name=name)


def wav_duration(path: Path) -> float:
    """Seconds of a PCM WAV file (from its header).

    Raises
    ------
    DataError
        When the file is missing or not a PCM WAV.
    """
    if not path.is_file():
        raise DataError(f"{path} is missing: the session wrote no music (it ends before the "
                        "first phrase, or was killed before it could write its WAV)")
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError) as e:
        raise DataError(f"{path} is not a PCM WAV file ({e}); rebuild it or record again") from e


def load_timeline(folder: str | Path, key_file: str | Path | None = None) -> Timeline:
    """Read a session folder's recording and WAV into a :class:`Timeline`.

    Parameters
    ----------
    folder : str or Path
        A session folder (``session.json``, ``events.jsonl``, ``session.wav``).
    key_file : str or Path, optional
        Key file of an encrypted session.

    Raises
    ------
    DataError
        When ``folder`` is not a session folder, has no WAV, or played no phrase.
    """
    from st_agent.biometrics.recording import is_session, read_events

    folder = Path(folder)
    if not is_session(folder):
        raise DataError(f"{folder} is not a session folder (no session.json); give the folder "
                        "that `st-agent session` or `st-agent demo` wrote")
    duration = wav_duration(folder / "session.wav")
    meta, events = read_events(folder, key=key_file)
    if meta.encrypted:
        logger.warning("%s is encrypted at rest, but its video and visuals.html are not: they "
                       "show the estimated states in the clear (as report.html does)", folder)
    return timeline_from_events(events, duration, folder.name)


# --------------------------------------------------------------------------- the page


def write_visuals_page(folder: str | Path, timeline: Timeline | None = None,
                       key_file: str | Path | None = None) -> Path:
    """Write ``visuals.html`` into a session folder; return its path.

    The page plays ``session.wav`` (beside it) in an ``<audio>`` element and draws
    the visuals on a ``<canvas>`` at every animation frame from the audio's
    current time. Everything it shows is embedded as JSON; it fetches nothing
    (a Content-Security-Policy allows only the audio file, inline script and
    style). ``visuals.html#t=SECONDS`` opens it at a time. The page writes what it
    drew last into ``<body>``'s data attributes (``data-frames``, ``data-time``,
    ``data-phrase``, ``data-beat``), for tests and benchmarks.

    Parameters
    ----------
    folder : str or Path
        The session folder.
    timeline : Timeline, optional
        Already loaded; None reads it (:func:`load_timeline`).
    key_file : str or Path, optional
        Key file of an encrypted session (when ``timeline`` is None).
    """
    from st_agent.live.visuals_page import page_html

    folder = Path(folder)
    tl = timeline if timeline is not None else load_timeline(folder, key_file)
    data = json.dumps(tl.as_json(), separators=(",", ":"), allow_nan=False)
    # inside <script> a "</" could close the element: escape it
    data = data.replace("</", "<\\/")
    path = folder / PAGE_FILE
    path.write_text(page_html(html.escape(tl.name), data), encoding="utf-8")
    logger.info("wrote %s", path)
    return path
