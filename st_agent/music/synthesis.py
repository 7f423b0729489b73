"""Sound from a MIDI with FluidSynth: offline to audio and WAV, or live through a driver.

:class:`AudioRenderer` synthesises audio offline with one FluidSynth instance
that loads the soundfont once; :class:`LivePlayer` plays through FluidSynth's
audio driver in real time, queueing phrases back to back. Times are in seconds
(``*_sec``), rates in Hz.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import pretty_midi

from st_agent.music.meter import musical_span_sec

__all__ = [
    "FLUIDSYNTH_INSTALL_HINT",
    "SESSION_EFFECTS",
    "AudioDeviceError",
    "AudioRenderer",
    "LivePlayer",
    "find_soundfont",
]

logger = logging.getLogger(__name__)


FLUIDSYNTH_INSTALL_HINT = (
    "install the FluidSynth library (Debian/Ubuntu: sudo apt-get install libfluidsynth3; "
    "macOS: brew install fluid-synth) and the Python binding (pip install pyfluidsynth)"
)


#: FluidSynth reverb and chorus for a listening session (a medium warm room, a slow,
#: shallow chorus); pass as ``AudioRenderer(settings=SESSION_EFFECTS)``. Names are
#: FluidSynth 2 settings (``fluidsynth -o help``).
SESSION_EFFECTS: dict[str, float | int] = {
    "synth.reverb.room-size": 0.7, "synth.reverb.damp": 0.4, "synth.reverb.width": 0.9,
    "synth.reverb.level": 0.6, "synth.chorus.nr": 3, "synth.chorus.level": 1.2,
    "synth.chorus.speed": 0.3, "synth.chorus.depth": 6.0,
}


def find_soundfont(path: str | Path | None = None) -> Path:
    """Locate a General MIDI soundfont.

    Parameters
    ----------
    path : str or Path, optional
        A ``.sf2`` file. Default: ``TimGM6mb.sf2`` that ships with pretty_midi.

    Returns
    -------
    path : Path
        Absolute path of an existing file.

    Raises
    ------
    FileNotFoundError
        Naming the path looked at.
    """
    if path is None:
        p = Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"
        hint = "reinstall pretty_midi (pip install --force-reinstall pretty_midi) or pass a path"
    else:
        p = Path(path).expanduser().resolve()
        hint = "pass the path of an existing .sf2 General MIDI soundfont"
    if not p.is_file():
        raise FileNotFoundError(f"soundfont not found at {p}; {hint}")
    return p


def _import_fluidsynth() -> ModuleType:
    """Import pyfluidsynth, or say which package is missing."""
    try:
        return importlib.import_module("fluidsynth")
    except ImportError as e:  # also OSError-like failures inside the binding
        raise ImportError(
            f"FluidSynth is not usable ({e}); {FLUIDSYNTH_INSTALL_HINT}"
        ) from e
    except OSError as e:
        raise ImportError(
            f"the FluidSynth library failed to load ({e}); {FLUIDSYNTH_INSTALL_HINT}"
        ) from e


def _channel_map(pm: pretty_midi.PrettyMIDI) -> list[int]:
    """MIDI channel per instrument: 9 for drums, 0-8 and 10-15 for the others."""
    free = [c for c in range(16) if c != 9]
    out = []
    k = 0
    for inst in pm.instruments:
        if inst.is_drum:
            out.append(9)
        else:
            if k >= len(free):
                raise ValueError(
                    f"at most {len(free)} melodic instruments can play at once, got "
                    f"{sum(not i.is_drum for i in pm.instruments)}; merge some instruments"
                )
            out.append(free[k])
            k += 1
    return out


# event kinds in the order they apply at one instant: note-offs before note-ons
_OFF, _CC, _BEND, _ON = 0, 1, 2, 3


def _events(
    pm: pretty_midi.PrettyMIDI, channels: list[int]
) -> list[tuple[float, int, int, int, int]]:
    """Sorted ``(time_sec, kind, channel, a, b)`` events of all instruments."""
    ev: list[tuple[float, int, int, int, int]] = []
    for inst, ch in zip(pm.instruments, channels, strict=True):
        for n in inst.notes:
            ev.append((n.start, _ON, ch, n.pitch, n.velocity))
            ev.append((n.end, _OFF, ch, n.pitch, 0))
        for c in inst.control_changes:
            ev.append((c.time, _CC, ch, c.number, c.value))
        for p in inst.pitch_bends:
            ev.append((p.time, _BEND, ch, p.pitch, 0))
    ev.sort()
    return ev


class _SynthBase:
    """A FluidSynth instance with the soundfont loaded once."""

    def __init__(self, sf2_path: str | Path | None, sample_rate: int, gain: float,
                 settings: Mapping[str, str | int | float] | None = None) -> None:
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise ValueError(
                f"sample_rate must be an int in [8000, 192000] Hz, got {sample_rate!r}"
            )
        if not 0.0 < float(gain) <= 10.0:
            raise ValueError(f"gain must be in (0, 10], got {gain!r}")
        self.sf2_path = find_soundfont(sf2_path)
        self.sample_rate = sample_rate
        self._fl = _import_fluidsynth()
        self._synth: Any = self._fl.Synth(gain=float(gain), samplerate=float(sample_rate),
                                          **dict(settings or {}))
        self._sfid = self._synth.sfload(str(self.sf2_path))
        if self._sfid == -1:
            self._synth.delete()
            self._synth = None
            raise RuntimeError(
                f"FluidSynth could not load the soundfont {self.sf2_path}; "
                "check that it is a valid .sf2 file"
            )

    def _apply(self, kind: int, ch: int, a: int, b: int) -> None:
        s = self._synth
        if kind == _ON:
            s.noteon(ch, a, b)
        elif kind == _OFF:
            s.noteoff(ch, a)
        elif kind == _CC:
            s.cc(ch, a, b)
        else:
            s.pitch_bend(ch, a)

    def _select_programs(self, pm: pretty_midi.PrettyMIDI, channels: list[int]) -> None:
        for inst, ch in zip(pm.instruments, channels, strict=True):
            bank = 128 if inst.is_drum else 0
            if self._synth.program_select(ch, self._sfid, bank, inst.program) == -1:
                self._synth.program_select(ch, self._sfid, bank, 0)


def _write_s16(synth: Any, out: np.ndarray) -> None:
    """Render ``len(out)`` stereo frames of ``synth`` into ``out`` in place.

    ``out`` is int16, shape (n, 2), C-contiguous (left, right interleaved, as FluidSynth
    writes them). pyfluidsynth's ``get_samples`` allocates a ctypes buffer per call
    (whose array type ctypes caches for good, one per distinct length) and copies it
    twice; this writes straight into the phrase's array.
    """
    import fluidsynth

    if len(out):
        ptr = out.ctypes.data
        fluidsynth.fluid_synth_write_s16(synth.synth, len(out), ptr, 0, 2, ptr, 1, 2)


class AudioRenderer(_SynthBase):
    """Offline synthesis with FluidSynth, the soundfont loaded once and reused.

    Parameters
    ----------
    sf2_path : str or Path, optional
        Soundfont; default the ``TimGM6mb.sf2`` of pretty_midi (:func:`find_soundfont`).
    sample_rate : int
        Output rate in Hz, default 44100.
    release_sec : float
        Audio kept after the musical end (the end of the last bar) so that the
        last notes can ring out; default 0, so the length matches the score.
    gain : float
        FluidSynth master gain (0.2 is its default; lower avoids clipping with
        many voices).
    stereo : bool
        :meth:`synthesize` returns (n, 2) left/right samples and :meth:`write_wav`
        writes a stereo file (default mono, the mean of the two).
    settings : mapping, optional
        More FluidSynth settings, e.g. :data:`SESSION_EFFECTS` (reverb and chorus
        of a session); ignored for reverb and chorus when ``effects=False``.
    effects : bool
        Reverb and chorus on (default). Renders of the same MIDI sound the same
        but are not sample-identical, as the chorus LFO and the reverb carry
        state from one piece to the next; with ``effects=False`` they differ by
        well under 1 % of the RMS (dither of the 16-bit output, modulator
        phases). A fresh renderer gives bit-identical audio for the same MIDI.

    Raises
    ------
    FileNotFoundError
        When the soundfont is missing.
    ImportError
        When the FluidSynth library or pyfluidsynth is missing, with the packages
        that provide them (Debian ``libfluidsynth3``, pip ``pyfluidsynth``).

    Examples
    --------
    >>> with AudioRenderer() as r:  # doctest: +SKIP
    ...     r.write_wav(render_phrase(abc, "G", knobs), "phrase.wav")
    """

    def __init__(self, sf2_path: str | Path | None = None, sample_rate: int = 44100,
                 release_sec: float = 0.0, gain: float = 0.2, effects: bool = True,
                 stereo: bool = False,
                 settings: Mapping[str, str | int | float] | None = None) -> None:
        if not math.isfinite(release_sec) or not 0.0 <= release_sec <= 30.0:
            raise ValueError(f"release_sec must be in [0, 30] seconds, got {release_sec!r}")
        if not isinstance(stereo, bool):
            raise TypeError(f"stereo must be a bool, got {type(stereo).__name__}")
        fx = dict(settings or {})
        if not effects:
            fx.update({"synth.reverb.active": 0, "synth.chorus.active": 0})
        super().__init__(sf2_path, sample_rate, gain, fx)
        self.release_sec = float(release_sec)
        self.stereo = stereo

    def __enter__(self) -> AudioRenderer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Free the synthesizer; safe to call twice."""
        if getattr(self, "_synth", None) is not None:
            self._synth.delete()
            self._synth = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass

    def synthesize(self, pm: pretty_midi.PrettyMIDI) -> np.ndarray:
        """Render a MIDI to mono audio.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI

        Returns
        -------
        audio : ndarray, shape (n_samples,) or (n_samples, 2) when ``stereo``, float32
            Samples in [-1, 1] at ``sample_rate``; ``n_samples`` is the end
            of the last bar (:func:`~st_agent.music.meter.musical_span_sec`) plus ``release_sec``,
            times the rate.
        """
        if self._synth is None:
            raise RuntimeError("this AudioRenderer is closed; create a new one")
        if not isinstance(pm, pretty_midi.PrettyMIDI):
            raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
        _, end_sec = musical_span_sec(pm)
        n_total = round((end_sec + self.release_sec) * self.sample_rate)
        channels = _channel_map(pm)
        s = self._synth
        s.system_reset()
        self._select_programs(pm, channels)
        out = np.zeros((n_total, 2), dtype=np.int16)  # left, right, written in place
        cursor = 0
        for t, kind, ch, a, b in _events(pm, channels):
            at = min(round(t * self.sample_rate), n_total)
            if at > cursor:
                _write_s16(s, out[cursor:at])
                cursor = at
            if cursor >= n_total and kind == _ON:
                continue
            self._apply(kind, ch, a, b)
        if n_total > cursor:
            _write_s16(s, out[cursor:])
        for ch in set(channels):
            s.all_sounds_off(ch)
        self._flush(n_total)
        stereo = out.astype(np.float32)  # (n, 2) int16 range
        if self.stereo:
            return stereo / np.float32(32768.0)
        return (stereo.mean(axis=1) / 32768.0).astype(np.float32)

    def _flush(self, n_generated: int) -> None:
        """Drain reverb and chorus so the next piece starts from silence.

        FluidSynth renders in blocks of 64 samples and applies events at block
        starts; padding the output to whole blocks makes every piece start at a
        block start, so the same MIDI gives the same samples each time.
        """
        s = self._synth
        s.system_reset()
        scratch = np.empty((1024, 2), dtype=np.int16)
        for _ in range(50):  # at most 50 * 1024 samples
            _write_s16(s, scratch)
            if not scratch.any():
                break
        pad = -n_generated % 64
        if pad:
            _write_s16(s, scratch[:pad])

    def write_wav(self, pm: pretty_midi.PrettyMIDI, path: str | Path,
                  peak: float = 0.89) -> Path:
        """Render a MIDI and write a 16-bit PCM WAV file (mono, or stereo when ``stereo``).

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI
        path : str or Path
            Output file; its folder must exist.
        peak : float
            The loudest sample is scaled to this fraction of full scale
            (0.89 = -1 dBFS), so nothing clips.

        Returns
        -------
        path : Path
        """
        from scipy.io import wavfile

        if not 0.0 < peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1], got {peak!r}")
        out = Path(path)
        if not out.parent.is_dir():
            raise FileNotFoundError(f"folder {out.parent} does not exist; create it first")
        audio = self.synthesize(pm)
        top = float(np.max(np.abs(audio))) if audio.size else 0.0
        if top > 0:
            audio = audio * (peak / top)
        else:
            logger.warning("writing a silent WAV to %s: the MIDI has no audible notes", out)
        wavfile.write(out, self.sample_rate, np.round(audio * 32767).astype(np.int16))
        return out


# ------------------------------------------------------------------------------ live


class AudioDeviceError(RuntimeError):
    """No audio output device could be opened for live playback."""


def _default_drivers() -> tuple[str, ...]:
    if sys.platform == "darwin":
        return ("coreaudio",)
    if sys.platform.startswith("win"):
        return ("wasapi", "dsound")
    return ("pulseaudio", "pipewire", "alsa")


class LivePlayer(_SynthBase):
    """Real-time playback through FluidSynth's audio driver.

    A scheduler thread sends note events to the synthesizer at their wall-clock
    times; :meth:`play` returns at once and queues a piece after what is already
    queued, so consecutive phrases join without a gap.

    Parameters
    ----------
    sf2_path : str or Path, optional
        Soundfont (:func:`find_soundfont`).
    driver : str or sequence of str, optional
        FluidSynth audio driver(s) to try in order, e.g. ``"alsa"``,
        ``"pulseaudio"``, ``"coreaudio"``, or ``"file"`` (writes the audio to
        ``audio.file.name`` in real time, for machines without sound).
        Default: the usual drivers of the platform.
    sample_rate : int
        Hz, default 44100.
    gain : float
        FluidSynth master gain.
    settings : mapping, optional
        Extra FluidSynth settings, e.g. ``{"audio.file.name": "out.raw"}``.
    lead_sec : float
        A piece queued on an idle player starts this long after :meth:`play`,
        so its first notes are not late.

    Raises
    ------
    AudioDeviceError
        When no driver can open an output device (no sound card, no sound
        server). Render to a WAV with :meth:`AudioRenderer.write_wav` instead.
    """

    def __init__(self, sf2_path: str | Path | None = None,
                 driver: str | tuple[str, ...] | list[str] | None = None,
                 sample_rate: int = 44100, gain: float = 0.2,
                 settings: Mapping[str, str | int | float] | None = None,
                 lead_sec: float = 0.05) -> None:
        if not math.isfinite(lead_sec) or not 0.0 <= lead_sec <= 5.0:
            raise ValueError(f"lead_sec must be in [0, 5] seconds, got {lead_sec!r}")
        drivers = _default_drivers() if driver is None else (
            (driver,) if isinstance(driver, str) else tuple(driver))
        if not drivers:
            raise ValueError("driver must name at least one FluidSynth audio driver")
        super().__init__(sf2_path, sample_rate, gain, settings)
        self.lead_sec = float(lead_sec)
        self._driver_ptr: int | None = None
        self.driver: str | None = None
        for name in drivers:
            self._synth.setting("audio.driver", name)
            ptr = self._fl.new_fluid_audio_driver(self._synth.settings, self._synth.synth)
            if ptr:
                self._driver_ptr, self.driver = ptr, name
                break
            logger.debug("FluidSynth audio driver %r could not start", name)
        if self._driver_ptr is None:
            self._synth.delete()
            self._synth = None
            raise AudioDeviceError(
                f"no audio output device: FluidSynth could not start any of the drivers "
                f"{list(drivers)} (no sound card or sound server on this machine?). "
                "Live playback is not possible here; write a WAV instead with "
                "AudioRenderer.write_wav, or pass driver='file' to record the live stream."
            )
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, int, int, int, int]] = []  # heap
        self._seq = itertools.count()
        self._queue_end = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="LivePlayer", daemon=True)
        self._thread.start()
        logger.info("live playback on FluidSynth driver %r", self.driver)

    def __enter__(self) -> LivePlayer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def play(self, pm: pretty_midi.PrettyMIDI, gain: float | None = None) -> float:
        """Queue a piece after everything already queued; returns at once.

        Parameters
        ----------
        pm : pretty_midi.PrettyMIDI
        gain : float, optional
            FluidSynth master gain from the piece's start on, in (0, 10] (a session's
            loudness-matched phrase: :func:`st_agent.live.session_sound.play_phrase`);
            None keeps the gain in force.

        Returns
        -------
        start_in_sec : float
            Seconds from now until the piece starts.
        """
        if not isinstance(pm, pretty_midi.PrettyMIDI):
            raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
        if gain is not None and not (isinstance(gain, int | float) and 0.0 < gain <= 10.0):
            raise ValueError(f"gain must be in (0, 10] or None, got {gain!r}")
        channels = _channel_map(pm)
        _, end_sec = musical_span_sec(pm)
        with self._cond:
            if self._closed:
                raise RuntimeError("this LivePlayer is closed; create a new one")
            now = time.monotonic()
            start = max(now + self.lead_sec, self._queue_end)
            if gain is not None:  # the level, then the programs, at the piece's start
                heapq.heappush(self._queue, (start, -2, next(self._seq), 0,
                                             round(gain * 1e6), 0))
            # programs are set at the start of the piece, through the same queue
            for inst, ch in zip(pm.instruments, channels, strict=True):
                heapq.heappush(self._queue, (start, -1, next(self._seq), ch,
                                             inst.program, int(inst.is_drum)))
            for t, kind, ch, a, b in _events(pm, channels):
                heapq.heappush(self._queue, (start + t, kind, next(self._seq), ch, a, b))
            self._queue_end = start + end_sec
            self._cond.notify()
        return start - now

    @property
    def remaining_sec(self) -> float:
        """Seconds until everything queued has played."""
        with self._cond:
            return max(self._queue_end - time.monotonic(), 0.0)

    def wait(self, timeout_sec: float | None = None) -> bool:
        """Block until the queue has played; True if it did within the timeout."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while True:
            left = self.remaining_sec
            with self._cond:
                if self._closed or (not self._queue and left <= 0):
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = 0.05 if deadline is None else min(0.05, max(deadline - time.monotonic(), 0))
            time.sleep(max(min(left, pause), 0.001))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._queue:
                        delay = self._queue[0][0] - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(timeout=delay)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, kind, _, ch, a, b = heapq.heappop(self._queue)
                if kind == -2:  # master gain, in millionths
                    self._synth.setting("synth.gain", a / 1e6)
                elif kind == -1:
                    bank = 128 if b else 0
                    if self._synth.program_select(ch, self._sfid, bank, a) == -1:
                        self._synth.program_select(ch, self._sfid, bank, 0)
                else:
                    self._apply(kind, ch, a, b)

    def fade_out(self, duration_sec: float = 4.0, steps: int = 40) -> None:
        """Lower every channel's volume (MIDI CC 7) to silence over ``duration_sec``,
        then drop what is still queued. Blocks for ``duration_sec``."""
        if not (isinstance(duration_sec, int | float) and 0 <= duration_sec <= 60):
            raise ValueError(f"duration_sec must be in [0, 60] seconds, got {duration_sec!r}")
        for i in range(1, steps + 1):
            if getattr(self, "_synth", None) is None:
                return
            vol = round(100 * (1 - i / steps))
            for ch in range(16):
                self._synth.cc(ch, 7, vol)
            time.sleep(duration_sec / steps)
        with self._cond:
            self._queue.clear()
            self._queue_end = time.monotonic()
        for ch in range(16):
            self._synth.all_notes_off(ch)

    def close(self) -> None:
        """Stop playback and release the audio driver; safe to call twice."""
        cond = getattr(self, "_cond", None)
        if cond is not None:
            with cond:
                self._closed = True
                self._queue.clear()
                cond.notify_all()
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._thread.join(timeout=2.0)
        if getattr(self, "_synth", None) is not None:
            for ch in range(16):
                self._synth.all_notes_off(ch)
            if self._driver_ptr:
                self._fl.delete_fluid_audio_driver(self._driver_ptr)
                self._driver_ptr = None
            self._synth.delete()
            self._synth = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass
