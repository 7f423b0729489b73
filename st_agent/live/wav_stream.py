"""A WAV file written as the music plays: valid after every append, so a crash keeps it.

:class:`WavStream` appends 16-bit PCM (mono or stereo) and rewrites the header after
each append; :class:`OverlapAdd` feeds it renders that ring past their phrase's end (the
part up to the end is final at once, the tail is added onto the next render). The
session WAV (:class:`~st_agent.live.audio.SessionWavOutput`) and the stems and a jam's
mix (:class:`~st_agent.live.stems.PartStreams`) are written this way.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["OverlapAdd", "WavStream"]

logger = logging.getLogger(__name__)

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
    reverb, :data:`st_agent.live.audio.TAIL_SEC`) is carried and added onto the next
    render (overlap-add), so memory holds one render and one tail.

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
