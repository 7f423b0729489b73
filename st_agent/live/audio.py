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
import struct
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.live.common import Playing
from st_agent.types import Knobs

__all__ = ["SESSION_WAV_GAIN", "OverlapAdd", "SessionWavOutput", "WavStream", "join_phrases",
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


# --------------------------------------------------------------------------- streaming

_HEADER_BYTES = 44


def _wav_header(n_samples: int, sample_rate: int, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV holding ``n_samples`` frames of
    ``channels`` (1 mono, 2 stereo) samples."""
    data = 2 * channels * n_samples
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate,
                                    2 * channels * sample_rate, 2 * channels, 16)
            + b"data" + struct.pack("<I", data))


class WavStream:
    """A 16-bit PCM WAV file (mono or stereo) written in appends; a valid WAV after each one.

    The header's RIFF and data sizes are rewritten after every :meth:`append`
    and the file is flushed and fsynced, so a crash (or ``kill -9``) leaves a
    WAV that holds everything appended before it.

    Parameters
    ----------
    path : Path
        The file to create (it must not exist).
    sample_rate : int
        Hz.
    channels : {1, 2}
        Mono (default) or stereo (left, right interleaved). ``n_samples`` and the
        other counts are in frames (one sample per channel).
    """

    #: Largest mono WAV a RIFF header can describe, samples (4 GiB of 16-bit samples);
    #: a stereo file holds half as many frames.
    MAX_SAMPLES = (2**32 - 1 - 36) // 2

    def __init__(self, path: Path, sample_rate: int, channels: int = 1) -> None:
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise ValueError(f"sample_rate must be an int in [8000, 192000] Hz, got "
                             f"{sample_rate!r}")
        if channels not in (1, 2) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {channels!r}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.n_samples = 0
        self.clipped = 0
        self.peak = 0.0  # loudest sample appended so far, fraction of full scale
        self.boost = 1.0  # factor :meth:`finish` raised the level by
        self._f = open(self.path, "xb+")  # kept open across appends
        self._f.write(_wav_header(0, sample_rate, channels))
        self._sync()

    def _sync(self) -> None:
        f = self._f
        f.seek(0)
        f.write(_wav_header(self.n_samples, self.sample_rate, self.channels))
        f.seek(_HEADER_BYTES + 2 * self.channels * self.n_samples)
        f.flush()
        os.fsync(f.fileno())

    def append(self, audio: np.ndarray) -> None:
        """Append float samples (full scale 1.0; beyond it clipped and counted).

        Parameters
        ----------
        audio : ndarray of float, shape (n,) for a mono file, (n, 2) for a stereo one
        """
        a = np.asarray(audio, dtype=np.float32)
        if self.channels == 2 and (a.ndim != 2 or a.shape[1] != 2):
            raise ValueError(f"{self.path}: a stereo WAV takes audio of shape (n, 2), got "
                             f"{a.shape}")
        a = a.reshape(-1)
        if not a.size:
            return
        frames = a.size // self.channels
        if self.n_samples + frames > self.MAX_SAMPLES // self.channels:
            raise ValueError(f"{self.path}: a WAV holds at most {self.MAX_SAMPLES} samples; "
                             "the session is longer than a WAV file can be")
        a = np.nan_to_num(a, nan=0.0)
        over = int(np.count_nonzero(np.abs(a) > 1.0))
        if over:
            self.clipped += over
            a = np.clip(a, -1.0, 1.0)
        self._f.write(np.round(a * 32767).astype("<i2").tobytes())
        self.n_samples += frames
        self.peak = max(self.peak, float(np.max(np.abs(a))))
        self._sync()

    def finish(self, n_keep: int | None = None, fade_samples: int = 0,
               peak: float | None = None, max_boost: float = 8.0,
               boost: float | None = None) -> None:
        """Cut the file to ``n_keep`` samples, fade out its last ``fade_samples`` in
        place, raise the level so that the loudest sample is at ``peak``, and close it.
        Safe to call twice.

        Parameters
        ----------
        n_keep : int, optional
            Samples to keep (default: all).
        fade_samples : int
            Length of the linear fade-out at the end, samples.
        peak : float, optional
            Fraction of full scale for the loudest sample (0.89 = -1 dBFS, as
            :func:`write_wav`); the file is only ever raised, never lowered, by at most
            ``max_boost``, in one pass of 1 Mi-sample blocks (memory stays flat).
            None keeps the streamed level. A crash before this leaves the streamed level.
        max_boost : float
            Largest factor ``peak`` may raise the level by (a near-silent session is not
            raised to full scale).
        boost : float, optional
            Instead of ``peak``: raise the level by exactly this factor (>= 1), e.g. the
            factor another file was raised by, so that files that add up keep adding up.
        """
        if boost is not None and not (math.isfinite(boost) and boost >= 1.0):
            raise ValueError(f"boost must be a finite factor >= 1, got {boost!r}")
        if self._f.closed:
            return
        f = self._f
        n = self.n_samples if n_keep is None else max(0, min(int(n_keep), self.n_samples))
        if boost is not None and n:
            self.boost = float(boost)
            self._raise_level(n, self.boost)
        elif peak is not None and self.peak > 0 and n:
            self.boost = max(1.0, min(max_boost, peak / self.peak))
            self._raise_level(n, self.boost)
        fade = max(0, min(int(fade_samples), n))
        ch = self.channels
        if fade:
            at = _HEADER_BYTES + 2 * ch * (n - fade)
            f.seek(at)
            tail = np.frombuffer(f.read(2 * ch * fade), dtype="<i2").astype(np.float32)
            tail = tail.reshape(fade, ch) * np.linspace(1.0, 0.0, fade,
                                                        dtype=np.float32)[:, None]
            f.seek(at)
            f.write(np.round(tail).astype("<i2").tobytes())
        f.truncate(_HEADER_BYTES + 2 * ch * n)
        self.n_samples = n
        self._sync()
        f.close()


    def _raise_level(self, n: int, factor: float, block: int = 1 << 20) -> None:
        """Multiply the first ``n`` samples on disk by ``factor`` (> 1), block by block."""
        if factor <= 1.0:
            return
        f = self._f
        n *= self.channels  # samples, not frames
        for start in range(0, n, block):
            count = min(block, n - start)
            at = _HEADER_BYTES + 2 * start
            f.seek(at)
            x = np.frombuffer(f.read(2 * count), dtype="<i2").astype(np.float32) * factor
            f.seek(at)
            f.write(np.round(np.clip(x, -32767, 32767)).astype("<i2").tobytes())
        self.peak *= factor


class OverlapAdd:
    """A :class:`WavStream` fed renders that ring past their end: each render's audio
    up to its phrase's end is final and appended at once; the rest (release and
    reverb, :data:`TAIL_SEC`) is carried and added onto the next render (overlap-add),
    so memory holds one render and one tail.

    Parameters
    ----------
    wav : WavStream
        The file; frame 0 is the start of the first phrase.
    """

    def __init__(self, wav: WavStream) -> None:
        self.wav = wav
        self.tail = np.zeros((0, 2) if wav.channels == 2 else 0, dtype=np.float32)

    def add(self, audio: np.ndarray, start: int, end: int) -> int:
        """Add ``audio`` at frame ``start`` and commit the file up to frame ``end``.

        Parameters
        ----------
        audio : ndarray of float, shape (n,) mono, (n, 2) stereo
            May be empty: the carried tail and silence are committed up to ``end``.
        start, end : int
            Frames from the start of the file; ``start`` at or after the frames
            written so far (phrases in order).

        Returns
        -------
        clipped : int
            Samples clipped at full scale by this commit.
        """
        wav = self.wav
        audio = np.asarray(audio, dtype=np.float32).reshape(-1, *self.tail.shape[1:])
        offset = start - wav.n_samples  # the carried tail begins at wav.n_samples
        if offset < 0:  # cannot happen with phrases in order; keep the file consistent
            logger.warning("%s: phrase starts %d samples before the written end",
                           wav.path.name, -offset)
            audio, offset = audio[-offset:], 0
        n = len(audio)
        buf = np.zeros((max(len(self.tail), offset + n, end - wav.n_samples),
                        *self.tail.shape[1:]), dtype=np.float32)
        buf[:len(self.tail)] = self.tail
        buf[offset:offset + n] += audio
        commit = max(0, end - wav.n_samples)
        clipped = wav.clipped
        wav.append(buf[:commit])
        self.tail = buf[commit:].copy()
        return wav.clipped - clipped

    def pad_to(self, n_frames: int, block: int = 1 << 20) -> None:
        """Append silence until the file holds ``n_frames`` (a part that first plays
        late starts where the others are), in blocks so memory stays flat."""
        shape = self.tail.shape[1:]
        while self.wav.n_samples < n_frames:
            self.wav.append(np.zeros((min(block, n_frames - self.wav.n_samples), *shape),
                                     dtype=np.float32))


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
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._jobs: list[concurrent.futures.Future] = []
        self._stream: OverlapAdd | None = None
        self._t0: float | None = None
        self._stop_sec: float | None = None
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
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="session-wav", initializer=lower_priority)

    def _collect(self, wait: bool = False) -> None:
        """Raise the error of a finished render (so the session drops this output)."""
        while self._jobs and (wait or self._jobs[0].done()):
            self._jobs.pop(0).result()

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Render phrase ``index`` and append it (in the worker)."""
        if self._pool is None:
            raise RuntimeError("session-wav: phrase() before open()")
        self._collect()
        while len(self._jobs) >= MAX_PENDING_RENDERS:  # back-pressure: memory stays bounded
            self._jobs.pop(0).result()
        if self._t0 is None:
            self._t0 = float(playing.start_sec)
        start = round((playing.start_sec - self._t0) * self.sample_rate)
        end = round((playing.end_sec - self._t0) * self.sample_rate)
        self._jobs.append(self._pool.submit(self._add, playing.pm, start, end, knobs))

    @property
    def pending(self) -> int:
        """Phrases handed to the render thread whose audio is not on disk yet (at most
        :data:`MAX_PENDING_RENDERS`)."""
        return sum(not job.done() for job in self._jobs)

    def wait(self) -> None:
        """Block until every phrase handed so far is on disk (raises a render's error)."""
        self._collect(wait=True)

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
        if text.startswith("stop") and self._stop_sec is None:
            self._stop_sec = float(t_sec)

    def close(self, reason: str) -> None:
        """Finish the file: cut at the stop plus the fade (or the last phrase's end),
        fade out, close (a WAV without a sample is removed). Safe to call twice."""
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._collect(wait=True)
        finally:
            self._pool = None
            if self._wav is not None:
                n_keep = None
                if self._stop_sec is not None and self._t0 is not None:
                    n_keep = round((self._stop_sec - self._t0 + self.fade_sec)
                                   * self.sample_rate)
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
