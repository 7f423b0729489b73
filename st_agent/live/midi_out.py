"""MIDI out (``--midi-out NAME``): the arranged music, live, to a DAW or a synthesiser.

:class:`MidiOut` is a :class:`~st_agent.live.outputs.SessionOutput`. Each part of the
arranged phrase (melody, bass, chords; in a jam one voice per performer, then bass and
chords) gets its own MIDI channel, in the order the parts first appear (0, 1, 2, ...,
channel 9 kept for drums); the part's General MIDI program is sent as a program change
when the part first plays and whenever it changes. The phrase's notes (its PrettyMIDI)
leave at their times from the phrase's start:

* **real time**: a clock thread sends each message when it is due. Session time is
  mapped to :func:`time.perf_counter` when the first phrase starts, so phrases follow
  one another on the music's clock however late the loop hands them over;
* **accelerated** (``realtime=False``, a simulated clock): no wall clock to keep, the
  messages leave in their order as the session clock passes them (each call of
  ``phrase``/``state``/``marker`` carries the session time).

*All notes off* (a note-off for every held note, then CC 123 *all notes off* and
CC 120 *all sound off* on every channel used) is sent on a marker that starts with
``stop``, ``pause`` or ``override`` and always on :meth:`MidiOut.close` (a crash
exit too), so no note hangs. ``stop`` and ``pause`` also drop what was still to
play (a ``pause`` until the next phrase).

The port is any mido-style object with ``send(msg)`` and ``close()``
(:func:`open_midi_port` opens a real one: an existing port by name, else a virtual
port named NAME where the platform has them, Linux and macOS). A port that
disappears mid-session (``send`` raises, or the port leaves the system's list) does
not stop the music: the output says so (logged, kept in :attr:`MidiOut.notices`,
handed to ``on_notice``: the session marks it) and tries to reopen it at most once
per ``retry_sec``; messages due meanwhile are dropped and counted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from st_agent.errors import DeviceError, UsageError
from st_agent.live.common import Playing
from st_agent.types import EmotionState, Knobs

__all__ = ["NO_ALSA_SEQ", "MidiOut", "RecordingPort", "alsa_sequencer_missing",
           "check_midi_flags", "list_output_ports", "open_midi_port", "part_label"]

logger = logging.getLogger(__name__)

#: Why a virtual port cannot be made on a Linux machine without the ALSA sequencer.
NO_ALSA_SEQ = "no ALSA sequencer: /dev/snd/seq missing"

#: Markers (first word, lower case) that silence every held note.
PANIC_MARKERS = ("stop", "pause", "override")

# event kinds in the order they apply at one instant: note-offs, program changes, note-ons
_OFF, _PROGRAM, _ON = 0, 1, 2
_DRUM_CHANNEL = 9


def alsa_sequencer_missing() -> str | None:
    """Why virtual MIDI ports cannot work here, or None when they may.

    Returns
    -------
    reason : str or None
        :data:`NO_ALSA_SEQ` on Linux without ``/dev/snd/seq``; None elsewhere.
    """
    if sys.platform.startswith("linux") and not Path("/dev/snd/seq").exists():
        return NO_ALSA_SEQ
    return None


def list_output_ports() -> list[str]:
    """The MIDI output ports of this machine (mido with the python-rtmidi backend).

    Raises
    ------
    DeviceError
        When the MIDI system cannot be reached (e.g. no ALSA sequencer).
    """
    import mido

    try:
        return list(mido.get_output_names())
    except Exception as e:  # rtmidi raises its own SystemError/RtMidiError (OSError)
        reason = alsa_sequencer_missing()
        raise DeviceError(f"cannot list MIDI ports ({reason or e}); on Linux load the ALSA "
                          "sequencer (sudo modprobe snd-seq)") from e


def _match_port(name: str, ports: list[str]) -> str | None:
    """The port ``name`` means: exact, or without ALSA's ``client:port`` numbers."""
    if name in ports:
        return name
    bare = [p for p in ports if p.rsplit(" ", 1)[0] == name or p.split(":", 1)[0] == name]
    return bare[0] if len(bare) == 1 else None


def open_midi_port(name: str, virtual: bool = True,
                   list_ports: Callable[[], list[str]] | None = None,
                   opener: Callable[..., Any] | None = None) -> tuple[Any, bool]:
    """Open the MIDI output ``--midi-out NAME`` names.

    Parameters
    ----------
    name : str
        An existing output port (as :func:`list_output_ports` names it, with or without
        ALSA's ``client:port`` numbers) or the name of a virtual port to create.
    virtual : bool
        Create a virtual port named ``name`` when no port has that name (Linux, macOS).
    list_ports : callable, optional
        ``() -> list of str``; the system's output ports (default
        :func:`list_output_ports`).
    opener : callable, optional
        ``(name, virtual=bool) -> port``; default :func:`mido.open_output`.

    Returns
    -------
    port, is_virtual
        A mido output port and whether it is a virtual one.

    Raises
    ------
    UsageError
        When ``name`` is empty.
    DeviceError
        When no port has that name and none can be created; the message lists the ports
        that exist.
    """
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"--midi-out must name a MIDI port, got {name!r}; "
                         "`st-agent session --midi-out st-agent` creates a virtual port")
    if opener is None:
        import mido

        opener = mido.open_output
    if list_ports is None:
        list_ports = list_output_ports
    try:
        ports = list_ports()
        listing = None
    except DeviceError as e:
        ports, listing = [], str(e)
    found = _match_port(name, ports)
    if found is not None:
        try:
            return opener(found, virtual=False), False
        except Exception as e:  # the backend's own error types
            raise DeviceError(f"MIDI port {found!r} exists but did not open: {e}") from e
    can_virtual = virtual and not sys.platform.startswith("win")
    why = "virtual ports are off (--no-midi-virtual)" if not virtual else \
        "this platform has no virtual MIDI ports" if not can_virtual else ""
    if can_virtual:
        try:
            return opener(name, virtual=True), True
        except Exception as e:  # rtmidi: RtMidiError (OSError) without a sequencer
            why = f"a virtual port could not be created ({alsa_sequencer_missing() or e})"
    have = ", ".join(repr(p) for p in ports) if ports else "none"
    raise DeviceError(f"MIDI port {name!r} does not exist and {why}; the output ports are: "
                      f"{have}" + (f" ({listing})" if listing else ""))


def check_midi_flags(midi_out: str, no_audio: bool, play: bool) -> None:
    """Validate ``--midi-out``, ``--no-audio`` and ``--play`` together (no device touched).

    Raises
    ------
    UsageError
        ``--midi-out`` not a string (or only spaces), or ``--no-audio`` with ``--play``.
    """
    if not isinstance(midi_out, str) or (midi_out and not midi_out.strip()):
        raise UsageError(f"--midi-out must name a MIDI port (empty: off), got {midi_out!r}")
    if no_audio and play:
        raise UsageError("--no-audio leaves the sound to the DAW or synthesiser on "
                         "--midi-out; it cannot be combined with --play")


def part_label(name: str) -> str:
    """A part's name in files and messages: ``"voice 2"`` (a jam) -> ``"performer_2"``."""
    if name.startswith("voice ") and name[6:].isdigit():
        return f"performer_{name[6:]}"
    return name.strip().replace(" ", "_") or "part"


class RecordingPort:
    """A mido-style output port that keeps what it is sent, stamped with
    :func:`time.perf_counter` (tests, benchmarks, a dry run).

    ``messages`` holds ``(perf_counter_sec, mido.Message)``. ``fail_after`` (a count)
    makes ``send`` raise :class:`OSError` from that message on, as a port that
    disappeared.
    """

    def __init__(self, fail_after: int | None = None) -> None:
        self.messages: list[tuple[float, Any]] = []
        self.closed = False
        self.fail_after = fail_after

    def send(self, msg: Any) -> None:
        """Keep ``msg`` with the time it arrived."""
        if self.closed:
            raise OSError("port closed")
        if self.fail_after is not None and len(self.messages) >= self.fail_after:
            raise OSError("MIDI device disappeared")
        self.messages.append((time.perf_counter(), msg))

    def close(self) -> None:
        """Close; later sends raise."""
        self.closed = True


class MidiOut:
    """The session's music to a MIDI port, one channel per part.

    Parameters
    ----------
    port : mido-style port
        Anything with ``send(msg)`` and ``close()``.
    port_name : str
        How messages name it.
    realtime : bool
        True: a clock thread sends messages on time; False (an accelerated session): in
        order, as the session clock reaches them.
    reopen : callable, optional
        ``() -> port``: opens the port again after it disappeared (None: no reconnect).
    present : callable, optional
        ``() -> bool``: whether the port is still on the system (checked at most every
        ``retry_sec`` in real time); None: only a failing ``send`` tells.
    retry_sec : float
        Least time between two reconnect attempts (and presence checks), seconds.
    on_notice : callable, optional
        ``(t_sec, text)``: told when the port is lost and when it is back.
    keep_timing : bool
        Keep ``(due_perf_sec, kind)`` of every message sent in :attr:`timing`
        (benchmarks).
    """

    name = "midi-out"

    def __init__(self, port: Any, port_name: str = "", realtime: bool = True,
                 reopen: Callable[[], Any] | None = None,
                 present: Callable[[], bool] | None = None, retry_sec: float = 2.0,
                 on_notice: Callable[[float, str], None] | None = None,
                 keep_timing: bool = False) -> None:
        if not callable(getattr(port, "send", None)) or not callable(getattr(port, "close",
                                                                             None)):
            raise TypeError(f"port must have send(msg) and close(), got {type(port).__name__}")
        if not (isinstance(retry_sec, (int, float)) and math.isfinite(retry_sec)
                and retry_sec > 0):
            raise ValueError(f"retry_sec must be a positive number of seconds, got "
                             f"{retry_sec!r}")
        import mido

        self._mido = mido
        self.port: Any = port
        self.port_name = port_name or type(port).__name__
        self.realtime = bool(realtime)
        self.reopen, self.present, self.retry_sec = reopen, present, float(retry_sec)
        self.on_notice = on_notice
        self.notices: list[tuple[float, str]] = []
        self.timing: list[tuple[float, int]] | None = [] if keep_timing else None
        self.sent = 0
        self.dropped = 0
        self.channels: dict[str, int] = {}
        self._programs: dict[int, int] = {}
        self._held: dict[int, tuple[int, int]] = {}  # note id -> (channel, pitch)
        self._heap: list[tuple[float, int, int, tuple[int, int, int, int]]] = []
        self._seq = itertools.count()
        self._note_ids = itertools.count()
        self._cond = threading.Condition()
        self._anchor: float | None = None  # perf_counter time of session time 0
        self._now = -math.inf  # the latest session time seen
        self._connected = True
        self._next_check = time.perf_counter() + self.retry_sec
        self._closed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def to_port(cls, name: str, virtual: bool = True, realtime: bool = True,
                list_ports: Callable[[], list[str]] | None = None,
                opener: Callable[..., Any] | None = None, **kw: Any) -> MidiOut:
        """Open ``name`` (:func:`open_midi_port`) and send to it; it is reopened the same
        way after it disappears.

        Raises
        ------
        DeviceError
            When the port does not exist and cannot be created (lists the ports).
        """
        port, is_virtual = open_midi_port(name, virtual, list_ports, opener)
        listing = list_ports or list_output_ports

        def present() -> bool:
            try:
                return _match_port(name, listing()) is not None
            except DeviceError:
                return False

        return cls(port, name, realtime,
                   reopen=lambda: open_midi_port(name, virtual, list_ports, opener)[0],
                   present=None if is_virtual else present, **kw)

    # ------------------------------------------------------------ SessionOutput
    def open(self, folder: Path) -> None:
        """Start the clock thread (real time)."""
        if self.realtime and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="midi-out", daemon=True)
            self._thread.start()

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Schedule the phrase's notes (and program changes) from ``playing.start_sec``."""
        start = float(playing.start_sec)
        with self._cond:
            if self._closed:
                return
            if self._anchor is None:
                self._anchor = time.perf_counter() - start
            if not self.realtime:
                self._advance(start)
            self._now = max(self._now, start)
            for inst in playing.pm.instruments:
                ch = self._channel(inst)
                self._push(start, (_PROGRAM, -1, ch, int(inst.program)))
                for n in inst.notes:
                    nid = next(self._note_ids)
                    pitch = int(min(max(n.pitch, 0), 127))
                    vel = int(min(max(n.velocity, 1), 127))
                    self._push(start + float(n.start), (_ON, nid, ch, pitch * 128 + vel))
                    self._push(start + max(float(n.end), float(n.start)),
                               (_OFF, nid, ch, pitch * 128))
            self._cond.notify_all()

    def state(self, t_sec: float, state: EmotionState | None, knobs: Knobs) -> None:
        """Accelerated: what is due by ``t_sec`` leaves."""
        self._seen(t_sec)

    def marker(self, t_sec: float | None, text: str) -> None:
        """``stop``/``pause``: all notes off, the rest dropped; ``override``: all notes
        off, the phrase goes on."""
        self._seen(t_sec)
        word = (text.split() or [""])[0].lower().rstrip(":,.")
        if word not in PANIC_MARKERS:
            return
        with self._cond:
            if word in ("stop", "pause"):
                self.dropped += sum(1 for *_, ev in self._heap if ev[0] == _ON)
                self._heap.clear()
            self._panic()

    def close(self, reason: str) -> None:
        """Stop the clock; send what is due, drop the rest, then all notes off (always)
        and close the port."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._cond:
            try:
                if self.realtime:
                    self._due(time.perf_counter())
                else:
                    self._advance(math.inf if reason == "time up" else self._now)
                self.dropped += sum(1 for *_, ev in self._heap if ev[0] == _ON)
                self._heap.clear()
            finally:
                self._panic()
                try:
                    self.port.close()
                except Exception as e:  # closing a vanished port; nothing left to lose
                    logger.debug("closing MIDI port %s: %s", self.port_name, e)

    # ------------------------------------------------------------ scheduling
    def _channel(self, inst: Any) -> int:
        label = part_label(inst.name or f"program {inst.program}")
        if inst.is_drum:
            return _DRUM_CHANNEL
        if label not in self.channels:
            free = [c for c in range(16) if c != _DRUM_CHANNEL
                    and c not in self.channels.values()]
            if not free:
                raise ValueError(f"MIDI has 15 melodic channels; part {label!r} is one more "
                                 f"(parts: {sorted(self.channels)})")
            self.channels[label] = free[0]
        return self.channels[label]

    def _push(self, t: float, ev: tuple[int, int, int, int]) -> None:
        heapq.heappush(self._heap, (t, ev[0], next(self._seq), ev))

    def _seen(self, t_sec: float | None) -> None:
        if t_sec is None or not math.isfinite(t_sec):
            return
        with self._cond:
            self._now = max(self._now, float(t_sec))
            if not self.realtime and not self._closed:
                self._advance(self._now)

    def _advance(self, t_session: float) -> None:
        """Send every event due by session time ``t_session`` (lock held)."""
        while self._heap and self._heap[0][0] <= t_session:
            t, _, _, ev = heapq.heappop(self._heap)
            self._apply(ev, t)

    def _due(self, perf_now: float) -> None:
        """Send every event due by ``perf_now`` (lock held; real time)."""
        assert self._anchor is not None or not self._heap
        while self._heap and self._anchor + self._heap[0][0] <= perf_now:
            t, _, _, ev = heapq.heappop(self._heap)
            self._apply(ev, t)

    def _apply(self, ev: tuple[int, int, int, int], t: float) -> None:
        kind, nid, ch, data = ev
        mido = self._mido
        if kind == _PROGRAM:
            if self._programs.get(ch) == data:
                return
            self._programs[ch] = data
            self._send(mido.Message("program_change", channel=ch, program=data), t, kind)
        elif kind == _ON:
            pitch, vel = divmod(data, 128)
            if self._send(mido.Message("note_on", channel=ch, note=pitch, velocity=vel), t,
                          kind):
                self._held[nid] = (ch, pitch)
        elif nid in self._held:  # a note-off only for a note that sounds
            ch, pitch = self._held.pop(nid)
            self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0), t, kind)

    def _panic(self) -> None:
        """A note-off per held note, then CC 123 and CC 120 on every channel (lock held)."""
        mido = self._mido
        for ch, pitch in sorted(set(self._held.values())):
            self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0))
        self._held.clear()
        for ch in sorted(set(self.channels.values()) | set(self._programs)):
            self._send(mido.Message("control_change", channel=ch, control=123, value=0))
            self._send(mido.Message("control_change", channel=ch, control=120, value=0))

    # ------------------------------------------------------------ the port
    def _send(self, msg: Any, t: float | None = None, kind: int = -1) -> bool:
        """Send one message; False when the port is gone (it is dropped)."""
        if not self._connected and not self._reconnect():
            self.dropped += 1
            return False
        try:
            self.port.send(msg)
        except Exception as e:  # the port vanished: the backend's own error types
            self._lost(f"{type(e).__name__}: {e}")
            self.dropped += 1
            return False
        self.sent += 1
        if self.timing is not None and t is not None and self._anchor is not None:
            self.timing.append((self._anchor + t, kind))
        return True

    def _session_now(self) -> float:
        if self.realtime and self._anchor is not None:
            return time.perf_counter() - self._anchor
        return self._now if math.isfinite(self._now) else 0.0

    def _notice(self, text: str) -> None:
        t = self._session_now()
        self.notices.append((t, text))
        logger.warning("%s", text)
        if self.on_notice is not None:
            try:
                self.on_notice(t, text)
            except Exception as e:  # a notice must not break the music
                logger.warning("MIDI notice handler failed: %s", e)

    def _lost(self, why: str) -> None:
        self._connected = False
        self._held.clear()  # what was held is gone with the port
        try:
            self.port.close()
        except Exception as e:  # already gone
            logger.debug("closing lost MIDI port: %s", e)
        self._next_check = time.perf_counter() + self.retry_sec
        self._notice(f"MIDI port {self.port_name!r} lost ({why}); the music goes on, "
                     f"reconnecting every {self.retry_sec:g} s")

    def _reconnect(self) -> bool:
        """Try to reopen the port, at most once per ``retry_sec`` (lock held)."""
        now = time.perf_counter()
        if self.reopen is None or now < self._next_check:
            return False
        self._next_check = now + self.retry_sec
        try:
            self.port = self.reopen()
        except Exception as e:  # still gone; try again later
            logger.debug("MIDI port %s not back: %s", self.port_name, e)
            return False
        self._connected = True
        self._notice(f"MIDI port {self.port_name!r} reconnected")
        mido = self._mido
        for ch, prog in sorted(self._programs.items()):
            self._send(mido.Message("program_change", channel=ch, program=prog))
        return True

    def _check_due(self) -> bool:
        """Real time (lock held): reconnect when due; True when the port's presence is to
        be checked now (at most once per ``retry_sec``; outside the lock: listing the
        system's ports takes milliseconds)."""
        now = time.perf_counter()
        if now < self._next_check:
            return False
        if not self._connected:
            self._reconnect()
            return False
        self._next_check = now + self.retry_sec
        return self.present is not None

    def _run(self) -> None:
        """The clock thread: sleep until the next message is due, send it on time."""
        while True:
            with self._cond:
                if self._closed:
                    return
                if not self._check_due():
                    if not self._heap or self._anchor is None:
                        self._cond.wait(self.retry_sec)
                        continue
                    wait = self._anchor + self._heap[0][0] - time.perf_counter()
                    if wait > 0:  # no spinning: a busy wait would take the loop's CPU
                        self._cond.wait(min(wait, self.retry_sec))
                        continue
                    self._due(time.perf_counter())
                    continue
            assert self.present is not None
            here = self.present()
            if not here:
                with self._cond:
                    if self._connected and not self._closed:
                        self._lost("it left the system's port list")
