"""Each part of the music in its own WAV (stems), and a jam's stereo mix, streamed.

:class:`PartStreams` is a :class:`~st_agent.live.outputs.SessionOutput`. When a phrase
starts, each of its parts (``melody``, ``bass``, ``chords``; in a jam ``performer_<i>``,
``bass``, ``chords``: the names :func:`~st_agent.live.midi_out.part_label` gives) is
rendered alone with the project's :class:`~st_agent.music.render.AudioRenderer`, in a
worker thread, with :data:`~st_agent.live.audio.TAIL_SEC` of release past the phrase's
end that is added onto the part's next phrase (overlap-add,
:class:`~st_agent.live.audio.OverlapAdd`, as ``session.wav`` is streamed). Each part's
audio is appended to

* ``stems/<part>.wav`` (``stems=True``): mono in a session; in a jam stereo, each
  performer panned by the equal-power law (:func:`pan_gains`), the accompaniment in
  the centre;
* a jam's ``session.wav`` (``mix=True``): the sum of the panned parts, so the stems
  add up to the mix.

Memory holds one phrase and one tail per part however long the music. (The
in-memory render this replaced held every part of the whole piece until the end: for
a three-performer jam of an hour, five float parts of 159 M samples, panned to
stereo float64: about 16 GB.)

Levels: everything streams at one fixed ``gain`` on FluidSynth's output. At
:meth:`PartStreams.close` the files are cut at the stop plus the fade (else at the last
phrase's end) and faded out. A jam's mix is then raised (never lowered) so that its
loudest sample is at -1 dBFS (:data:`~st_agent.live.audio.FINAL_PEAK`), and every stem
by the same factor ``b``, so the stems still add up to the mix: to half a 16-bit step
per file when streamed (times ``b``), when raised and when faded, at most
``(b + 2) (n + 1) / 2`` steps for ``n`` stems (15 measured in a two-performer jam). A
session's stems keep the streamed level, the level of the plain session WAV before its
final raise (:data:`~st_agent.live.audio.SESSION_WAV_GAIN`).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.live.audio import FINAL_PEAK, SESSION_WAV_GAIN, TAIL_SEC, RenderQueue, libc_trim
from st_agent.live.common import Playing
from st_agent.live.wav_stream import OverlapAdd, WavStream
from st_agent.types import Knobs

__all__ = ["JAM_WAV_GAIN", "PartStreams", "jam_wav_gain", "pan_gains"]

logger = logging.getLogger(__name__)

#: Fixed gain of an 8-performer jam's streamed mix and stems on FluidSynth's output
#: (before the final raise to -1 dBFS); ``n`` performers stream at
#: :func:`jam_wav_gain` = ``JAM_WAV_GAIN * sqrt(8 / n)``. Measured
#: (``benchmarks/bench_jam_wav.py``, 27 knob settings per size): at gain 1 the mix peaks
#: at 0.119, 0.153, 0.169 and 0.235 of full scale for 2, 3, 4 and 8 performers, close to
#: sqrt(n) (voices add incoherently), so every size streams its loudest setting near 0.6
#: (4.5 dB of headroom) and a quiet jam is raised less at the end.
JAM_WAV_GAIN = 2.5


def jam_wav_gain(n_performers: int) -> float:
    """The streaming gain of a jam of ``n_performers`` (:data:`JAM_WAV_GAIN` at 8)."""
    if isinstance(n_performers, bool) or not isinstance(n_performers, int) or n_performers < 1:
        raise ValueError(f"n_performers must be an int >= 1, got {n_performers!r}")
    return JAM_WAV_GAIN * math.sqrt(8 / n_performers)


def pan_gains(n: int, width: float = 0.8) -> np.ndarray:
    """Equal-power (left, right) gains of ``n`` performers spread over the stereo field.

    Parameters
    ----------
    n : int
        Performers, >= 1.
    width : float
        Spread, in (0, 1]: the outer performers sit at ``-width`` and ``+width``
        (1 = hard left and right); one performer sits in the centre.

    Returns
    -------
    gains : ndarray, shape (n, 2)
        ``cos θ, sin θ`` with ``θ = (p + 1) π / 4``: each row has unit power.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 performers, got {n!r}")
    if not (isinstance(width, (int, float)) and 0.0 < width <= 1.0):
        raise ValueError(f"width must be in (0, 1], got {width!r}")
    pos = np.zeros(1) if n == 1 else np.linspace(-width, width, n)
    theta = (pos + 1.0) * math.pi / 4.0
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _parts(pm: Any) -> dict[str, Any]:
    """The phrase's parts by label, each a copy of ``pm`` (same tempo and meter, so the
    same length when rendered) holding only that part's instruments."""
    from st_agent.live.midi_out import part_label

    by_label: dict[str, list[Any]] = {}
    for inst in pm.instruments:
        by_label.setdefault(part_label(inst.name or f"program {inst.program}"), []).append(inst)
    out = {}
    for label, insts in by_label.items():
        one = copy.copy(pm)  # shallow: shares notes and tempo map, its own instrument list
        one.instruments = insts
        out[label] = one
    return out


class PartStreams:
    """Stems (and a jam's stereo mix) streamed to WAV files as the music plays.

    Parameters
    ----------
    fade_sec : float
        Fade-out at the end, seconds (as ``session.wav``).
    soundfont : Path, optional
        Default: the one pretty_midi ships.
    stems : bool
        Write ``stems/<part>.wav``.
    n_performers : int, optional
        A jam of this many performers: files are stereo, ``performer_<i>`` panned by
        :func:`pan_gains` (``width``), the other parts centred. None: a session, mono.
    mix : bool
        Also write the jam's ``session.wav``, the sum of the panned parts (needs
        ``n_performers``), raised to -1 dBFS at the end with the stems by the same
        factor.
    gain : float
        Fixed gain on FluidSynth's output while streaming.
    width : float
        Stereo spread of the performers, in (0, 1].
    sample_rate : int
        Hz.

    Raises
    ------
    ValueError
        For a bad number, ``mix`` without ``n_performers``, or nothing to write.
    """

    def __init__(self, fade_sec: float, soundfont: Path | None = None, *, stems: bool = True,
                 n_performers: int | None = None, mix: bool = False,
                 gain: float = SESSION_WAV_GAIN, width: float = 0.8,
                 sample_rate: int = 44100) -> None:
        for label, v in (("fade_sec", fade_sec), ("gain", gain)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {v!r}")
        if mix and n_performers is None:
            raise ValueError("mix=True is a jam's stereo mix: give n_performers")
        if not (stems or mix):
            raise ValueError("PartStreams with stems=False and mix=False writes nothing; "
                             "ask for stems, a mix or both")
        self.pans = None if n_performers is None else pan_gains(n_performers, width)
        self.name = "jam-wav" if mix else "stems"
        self.fade_sec, self.soundfont, self.gain = float(fade_sec), soundfont, float(gain)
        self.stems, self.mix, self.sample_rate = bool(stems), bool(mix), sample_rate
        self.channels = 1 if n_performers is None else 2
        self.folder: Path | None = None
        self.paths: dict[str, Path] = {}  # part label (or "mix") -> its file
        self._streams: dict[str, OverlapAdd] = {}
        self._mix: OverlapAdd | None = None
        self._synth: Any = None
        self._queue = RenderQueue(self.name, sample_rate)
        self._committed = 0  # frames every file holds (the last phrase's end)
        self._boost = 1.0
        self._trim = libc_trim()
        #: Loudest sample of the mix as streamed (before the final raise), fraction
        #: of full scale; set by :meth:`close` (``benchmarks/bench_jam_wav.py``).
        self.streamed_peak: float | None = None

    def open(self, folder: Path) -> None:
        """Files go to ``folder`` (``session.wav``, ``stems/``)."""
        from st_agent.music.render import AudioRenderer

        self.folder = Path(folder)
        self._synth = AudioRenderer(self.soundfont, self.sample_rate, release_sec=TAIL_SEC)
        if self.mix:
            self.paths["mix"] = self.folder / "session.wav"
            self._mix = OverlapAdd(WavStream(self.paths["mix"], self.sample_rate, 2))
        self._queue.start()

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Render phrase ``index``'s parts and append them (in the worker; waits when
        :data:`~st_agent.live.audio.MAX_PENDING_RENDERS` are queued)."""
        self._queue.submit(self._add, playing)

    def wait(self) -> None:
        """Block until every phrase handed so far is on disk (raises a render's error)."""
        self._queue.wait()

    @property
    def pending(self) -> int:
        """Phrases handed to the worker whose audio is not on disk yet."""
        return self._queue.pending

    def _pan(self, label: str) -> np.ndarray:
        """(left, right) gains of a part in a jam."""
        assert self.pans is not None
        if label.startswith("performer_") and label[10:].isdigit():
            i = int(label[10:])
            if i < len(self.pans):
                return self.pans[i]
        return pan_gains(1)[0]

    def _stream(self, label: str) -> OverlapAdd:
        """The stem of ``label``; a part heard for the first time starts with silence
        up to where the others are."""
        if label not in self._streams:
            assert self.folder is not None
            path = self.folder / "stems" / f"{label}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.paths[label] = path
            self._streams[label] = OverlapAdd(WavStream(path, self.sample_rate, self.channels))
            self._streams[label].pad_to(self._committed)
        return self._streams[label]

    def _add(self, pm: Any, start: int, end: int) -> None:
        """Render each part of one phrase and commit every file up to frame ``end``."""
        audio = {label: self._synth.synthesize(one) * np.float32(self.gain)
                 for label, one in _parts(pm).items()}
        if self.pans is not None:
            audio = {label: a[:, None] * self._pan(label)[None, :].astype(np.float32)
                     for label, a in audio.items()}
        clipped = 0
        if self.stems:
            silent = np.zeros((0, self.channels), dtype=np.float32)  # a part not in it
            for label in sorted(set(audio) | set(self._streams)):
                clipped += self._stream(label).add(audio.get(label, silent), start, end)
        if self._mix is not None:
            n = max((len(a) for a in audio.values()), default=0)
            total = np.zeros((n, 2), dtype=np.float32)
            for a in audio.values():
                total[:len(a)] += a
            clipped += self._mix.add(total, start, end)
        if clipped:
            logger.info("%s: %d samples clipped at full scale", self.name, clipped)
        self._committed = max(self._committed, end)
        if self._trim is not None:
            self._trim(0)  # the phrase's render buffers back to the OS (as session-wav)

    def state(self, t_sec: float, state: Any, knobs: Knobs) -> None:
        """Nothing: the files hold music only."""

    def marker(self, t_sec: float, text: str) -> None:
        """Note the stop time (``text`` starting with ``"stop"``)."""
        self._queue.marker(t_sec, text)

    def close(self, reason: str) -> None:
        """Finish every file: cut at the stop plus the fade (or the last phrase's end),
        fade out, raise a jam's mix to -1 dBFS and the stems with it. Safe to call twice."""
        try:
            self._queue.shutdown()
        finally:
            n_keep = self._queue.keep_frames(self.fade_sec)
            fade = round(self.fade_sec * self.sample_rate)
            boost = None
            if self._mix is not None:
                self.streamed_peak = self._mix.wav.peak
                self._mix.wav.finish(n_keep, fade, peak=FINAL_PEAK)
                boost = self._boost = self._mix.wav.boost
            for stream in self._streams.values():
                stream.wav.finish(n_keep, fade, boost=boost)
            if not self._committed:  # no music, no files
                for path in self.paths.values():
                    path.unlink(missing_ok=True)
            self._mix = None
            self._streams = {}
            if self._synth is not None:
                self._synth.close()
                self._synth = None

    @property
    def boost(self) -> float:
        """Factor the mix and the stems were raised by at the end (1.0 before it)."""
        return self._boost
