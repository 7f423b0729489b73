"""The music files of a session: the whole piece as one WAV (the score is written by
:mod:`st_agent.live.session_score`, the MIDI file by :mod:`st_agent.live.session_midi`).

A live session streams its WAV to disk as it goes (:class:`SessionWavOutput`, a
:class:`~st_agent.live.outputs.SessionOutput`): each phrase is rendered when it
starts and appended to ``session.wav``, whose header is made right after each
append, so the file is a complete WAV up to the last phrase even after a crash,
and memory stays flat whatever the session's length. :func:`write_session_wav`
renders a list of phrases in one go (in memory) for callers that have them all.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.live.common import Playing
from st_agent.live.wav_stream import OverlapAdd, WavStream
from st_agent.types import Knobs

__all__ = ["SESSION_WAV_GAIN", "RenderQueue", "SessionWavOutput", "join_phrases",
           "write_session_wav", "write_wav"]

logger = logging.getLogger(__name__)

#: Fixed gain of the streamed session WAV on the renderer's output (FluidSynth gain
#: 0.2, stereo mean, full scale 1.0). A stream cannot be normalised after the fact as
#: :func:`write_wav` does (loudest sample at 0.89 = -1 dBFS). Measured headroom
#: (``benchmarks/bench_wav_gain.py``, 54 phrases on the knob grid): the loudest
#: phrase peaks at 0.152 of full scale, the median one at 0.067; gain 5.8 puts the
#: loudest at 0.88, so nothing on the grid clips; samples beyond full scale (tails
#: overlapping a loud next phrase) are clipped, counted and logged. A quiet session
#: streams quieter than a normalised one (its loudest phrase the median one: peak 0.39,
#: -7 dB) until :data:`FINAL_PEAK` raises the finished file.
SESSION_WAV_GAIN = 5.8

#: At the session's end the finished WAV is raised (never lowered) so that its loudest
#: sample is at -1 dBFS, as the old in-memory WAV was (:meth:`WavStream.finish`); a
#: crash leaves it at the streamed level above.
FINAL_PEAK = 0.89

#: Phrases whose render time and sound :class:`SessionWavOutput` keeps (the latest).
RECENT_PHRASES = 200

#: Most phrases handed to the WAV's render thread and not yet on disk. A session
#: that runs faster than FluidSynth renders (``--accelerated``, a loaded machine)
#: waits at this bound instead of queueing every phrase with its MIDI and audio
#: (part of the +11.9 MB per simulated hour a 6 h accelerated session grew by on a slow
#: machine; +6.0 with this bound and the bar grammar's caches bounded).
MAX_PENDING_RENDERS = 4

#: Seconds rendered past a phrase's musical end (release and reverb), added onto the
#: start of the next phrase.
TAIL_SEC = 2.0


def join_phrases(played: list[Playing]) -> Any:
    """One PrettyMIDI of the whole session: each phrase shifted to its start."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    by_key: dict[tuple[int, bool, str], pretty_midi.Instrument] = {}
    t0 = played[0].start_sec
    for p in played:
        shift = p.start_sec - t0
        for inst in p.pm.instruments:
            k = (inst.program, inst.is_drum, inst.name)
            if k not in by_key:
                by_key[k] = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
                out.instruments.append(by_key[k])
            dst = by_key[k]
            for n in inst.notes:
                dst.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start + shift,
                                                  n.end + shift))
    return out


def write_session_wav(path: Path, played: list[Playing], music_sec: float, fade_sec: float,
                      soundfont: Path | None = None) -> Path:
    """The whole session as one WAV: the phrases at their times, cut at ``music_sec``,
    the last ``fade_sec`` faded out, the loudest sample at -1 dBFS."""
    from st_agent.music.render import AudioRenderer

    with AudioRenderer(soundfont) as synth:
        audio = synth.synthesize(join_phrases(played))
        n = min(audio.size, round(music_sec * synth.sample_rate))
        audio = audio[:n].copy()
        fade = min(n, round(fade_sec * synth.sample_rate))
        if fade:
            audio[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        write_wav(path, audio, synth.sample_rate)
    return path


def write_wav(path: Path, audio: np.ndarray, sample_rate: int, peak: float = 0.89) -> None:
    """Mono float audio to 16-bit PCM WAV, the loudest sample at ``peak`` of full scale
    (as :meth:`~st_agent.music.render.AudioRenderer.write_wav`).

    Parameters
    ----------
    path : Path
    audio : ndarray of float, shape (n_samples,)
    sample_rate : int
        Hz.
    peak : float
        Fraction of full scale of the loudest sample.
    """
    from scipy.io import wavfile

    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0:
        audio = audio * (peak / top)
    wavfile.write(path, sample_rate, np.round(audio * 32767).astype(np.int16))


def libc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def lower_priority() -> None:
    """Run this (worker) thread at a lower CPU priority where the OS allows it (Linux
    nices threads one by one), so rendering the WAV never delays composing the next
    phrase or reading the board."""
    try:
        import threading

        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 5))
    except (AttributeError, OSError) as e:  # not Linux, or not permitted: same priority
        logger.debug("session-wav worker keeps its priority: %s", e)


class RenderQueue:
    """The phrases an output renders in one worker thread: in order, at most
    :data:`MAX_PENDING_RENDERS` waiting, placed on the file's frame clock (frame 0 at
    the first phrase's start), and the stop marker's time. Shared by
    :class:`SessionWavOutput` and :class:`~st_agent.live.stems.PartStreams`.

    Parameters
    ----------
    name : str
        The output's name (thread name, messages).
    sample_rate : int
        Hz.
    """

    def __init__(self, name: str, sample_rate: int) -> None:
        self.name, self.sample_rate = name, sample_rate
        self.stop_sec: float | None = None  # session time of the stop marker
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._jobs: list[concurrent.futures.Future] = []
        self._t0: float | None = None

    def start(self) -> None:
        """Start the worker (at a lower priority: rendering never delays the loop)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=self.name, initializer=lower_priority)

    def submit(self, fn: Any, playing: Playing, *args: Any) -> None:
        """Queue ``fn(playing.pm, start_frame, end_frame, *args)``; wait first while
        :data:`MAX_PENDING_RENDERS` are queued (back-pressure: memory stays bounded).
        Raises the error of a finished render (so the session drops the output)."""
        if self._pool is None:
            raise RuntimeError(f"{self.name}: phrase() before open()")
        while self._jobs and (len(self._jobs) >= MAX_PENDING_RENDERS or self._jobs[0].done()):
            self._jobs.pop(0).result()
        if self._t0 is None:
            self._t0 = float(playing.start_sec)
        start = round((playing.start_sec - self._t0) * self.sample_rate)
        end = round((playing.end_sec - self._t0) * self.sample_rate)
        self._jobs.append(self._pool.submit(fn, playing.pm, start, end, *args))

    @property
    def pending(self) -> int:
        """Phrases queued whose audio is not on disk yet (at most
        :data:`MAX_PENDING_RENDERS`)."""
        return sum(not job.done() for job in self._jobs)

    def wait(self) -> None:
        """Block until every queued phrase is on disk (raises a render's error)."""
        while self._jobs:
            self._jobs.pop(0).result()

    def shutdown(self) -> None:
        """Finish the queue and stop the worker (raises a render's error; the worker
        is gone either way)."""
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self.wait()
        finally:
            self._pool = None

    def marker(self, t_sec: float, text: str) -> None:
        """Note the stop time (``text`` starting with ``"stop"``)."""
        if text.startswith("stop") and self.stop_sec is None:
            self.stop_sec = float(t_sec)

    def keep_frames(self, fade_sec: float) -> int | None:
        """Frames to keep at the end: to the stop plus ``fade_sec``, or None (all)."""
        if self.stop_sec is None or self._t0 is None:
            return None
        return round((self.stop_sec - self._t0 + fade_sec) * self.sample_rate)


class SessionWavOutput:
    """``session.wav`` streamed as the session goes (a
    :class:`~st_agent.live.outputs.SessionOutput`).

    Each phrase is rendered (in a worker thread, so the loop does not wait) when
    it starts, at :data:`SESSION_WAV_GAIN`, with :data:`TAIL_SEC` of release
    and reverb past its end. Everything up to the phrase's end is final and is
    appended to the file at once; the tail is carried and added onto the start
    of the next phrase (overlap-add), so memory holds one phrase and one tail.
    At the stop marker (text starting with ``"stop"``) the session time is
    noted; :meth:`close` cuts the WAV at ``stop + fade_sec`` (or at the last
    phrase's end), drops the tail past it and fades the last ``fade_sec`` out,
    as :func:`write_session_wav` does.

    With ``sound="session"`` (what ``st-agent session`` and ``demo`` use unless
    ``--sound plain``; :mod:`st_agent.live.session_sound`) the file is stereo and
    each phrase is rendered with the session's reverb and chorus and set to the
    loudness of its energy (:class:`~st_agent.live.session_sound.PhraseSoundRenderer`;
    a render the composer thread made ahead for the live player is used instead of
    a new one); ``gain`` is then not applied and the finished file is not raised, so
    each phrase keeps its planned loudness (-26 to -18 LUFS, peaks at most -1 dBFS).

    Parameters
    ----------
    fade_sec : float
        Fade-out at the end, seconds.
    soundfont : Path, optional
        Default: the one pretty_midi ships.
    gain : float
        Applied to the renderer's output (:data:`SESSION_WAV_GAIN`); plain sound only.
    sample_rate : int
        Hz.
    sound : {"plain", "session"}
        ``"plain"`` (default here): mono, programs as the phrase's MIDI, one gain.
    """

    name = "session-wav"

    def __init__(self, fade_sec: float, soundfont: Path | None = None,
                 gain: float = SESSION_WAV_GAIN, sample_rate: int = 44100,
                 sound: str = "plain") -> None:
        from st_agent.live.session_sound import check_sound

        for label, v in (("fade_sec", fade_sec), ("gain", gain)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {v!r}")
        self.sound = check_sound(sound, "sound")
        self.fade_sec = float(fade_sec)
        self.soundfont = soundfont
        self.gain = float(gain)
        self.sample_rate = sample_rate
        self.channels = 2 if self.sound == "session" else 1
        # the last RECENT_PHRASES phrases' render wall time, ms (+ matching), and their
        # PhraseSound (session sound): bounded, so hours of phrases keep no memory
        self.render_ms: collections.deque[float] = collections.deque(maxlen=RECENT_PHRASES)
        self.sounds: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECENT_PHRASES)
        self.path: Path | None = None
        self._wav: WavStream | None = None
        self._synth: Any = None
        self._queue = RenderQueue(self.name, sample_rate)
        self._stream: OverlapAdd | None = None
        self._trim = libc_trim()

    def open(self, folder: Path) -> None:
        """Create ``folder/session.wav`` (empty, valid) and the renderer."""
        from st_agent.music.render import AudioRenderer

        self.path = Path(folder) / "session.wav"
        if self.sound == "session":
            from st_agent.live.session_sound import PhraseSoundRenderer

            self._synth = PhraseSoundRenderer(self.soundfont, TAIL_SEC, self.sample_rate)
        else:
            self._synth = AudioRenderer(self.soundfont, self.sample_rate, release_sec=TAIL_SEC)
        self._wav = WavStream(self.path, self.sample_rate, self.channels)
        self._stream = OverlapAdd(self._wav)
        self._queue.start()

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Render phrase ``index`` and append it (in the worker)."""
        self._queue.submit(self._add, playing, knobs)

    @property
    def pending(self) -> int:
        """Phrases handed to the render thread whose audio is not on disk yet (at most
        :data:`MAX_PENDING_RENDERS`)."""
        return self._queue.pending

    def wait(self) -> None:
        """Block until every phrase handed so far is on disk (raises a render's error)."""
        self._queue.wait()

    def _render(self, pm: Any, knobs: Knobs | None) -> np.ndarray:
        """The phrase's audio at the file's level: (n,) plain, (n, 2) session."""
        import time

        tic = time.perf_counter()
        if self.sound != "session":
            audio = self._synth.synthesize(pm) * np.float32(self.gain)
            self.render_ms.append(1e3 * (time.perf_counter() - tic))
            return audio
        from st_agent.live.session_sound import sound_of, take_audio, voice_for_knobs

        audio = take_audio(pm)  # rendered ahead by the composer thread (--play)
        if audio is None:
            if sound_of(pm) is None and knobs is not None:
                pm = voice_for_knobs(pm, knobs)  # not arranged for the session yet
            if knobs is None:
                raise ValueError("session-wav: the session sound needs the phrase's knobs")
            audio, _ = self._synth.render(pm, knobs)
        self.render_ms.append(1e3 * (time.perf_counter() - tic))
        sound = sound_of(pm)
        if sound is not None:
            self.sounds.append(sound.as_dict())
        return audio

    def _add(self, pm: Any, start: int, end: int, knobs: Knobs | None = None) -> None:
        """Overlap-add one phrase at frame ``start``; commit up to frame ``end``."""
        assert self._stream is not None
        clipped = self._stream.add(self._render(pm, knobs), start, end)
        if clipped:
            logger.info("session-wav: %d samples clipped at full scale", clipped)
        if self._trim is not None:
            # hand the freed render buffers back to the OS: without it glibc keeps them
            # and a long session's RSS creeps up (benchmarks/bench_session_rss.py --trim)
            self._trim(0)

    def state(self, t_sec: float, state: Any, knobs: Knobs) -> None:
        """Nothing: the WAV holds music only."""

    def marker(self, t_sec: float, text: str) -> None:
        """Note the stop time (``text`` starting with ``"stop"``)."""
        self._queue.marker(t_sec, text)

    def close(self, reason: str) -> None:
        """Finish the file: cut at the stop plus the fade (or the last phrase's end),
        fade out, close (a WAV without a sample is removed). Safe to call twice."""
        try:
            self._queue.shutdown()
        finally:
            if self._wav is not None:
                n_keep = self._queue.keep_frames(self.fade_sec)
                self._wav.finish(n_keep, round(self.fade_sec * self.sample_rate),
                                 peak=FINAL_PEAK if self.sound == "plain" else None)
                self._stream = None
                if self._wav.n_samples == 0 and self.path is not None:
                    self.path.unlink(missing_ok=True)  # no music, no WAV
            if self._synth is not None:
                self._synth.close()
                self._synth = None

    @property
    def boost(self) -> float:
        """Factor the finished file was raised by (1.0 before :meth:`close`)."""
        return 1.0 if self._wav is None else self._wav.boost

    @property
    def n_samples(self) -> int:
        """Samples on disk so far."""
        return 0 if self._wav is None else self._wav.n_samples
