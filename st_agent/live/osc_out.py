"""OSC out (``st-agent session --osc HOST:PORT``): the loop's state, knobs, phrases and beats.

Open Sound Control messages over UDP to TouchDesigner, Max/MSP, Pure Data, Sonic Pi,
a lighting desk... The address space (``docs/osc.md``), under a prefix (``--osc-prefix``,
default ``/st``):

=================  ==========================================  ===========================
address            arguments (OSC types)                       sent
=================  ==========================================  ===========================
``/st/start``      session name (s)                            once, when the session opens
``/st/state``      valence, arousal (f, [-1, 1]), confidence   each decision with a usable
                   (f, [0, 1]), t_sec (f)                      estimate
``/st/knobs``      valence, tempo, energy (f, [0, 1]), t_sec   each decision
``/st/phrase``     index (i), bpm (f), key (s), meter (s),     when a phrase starts
                   duration_sec (f), t_sec (f)
``/st/beat``       beat (i, from 0 over the session), phrase   on each beat
                   (i), beat in phrase (i), t_sec (f)
``/st/marker``     text (s), t_sec (f)                         calibration done, a stop...
``/st/end``        reason (s)                                  once, when the session ends
=================  ==========================================  ===========================

``t_sec`` is the session clock in seconds (the clock of ``events.jsonl``). In a real-time
session ``/st/beat`` leaves on the beat from a clock thread; in an accelerated session
(no wall clock to keep) a phrase's beats leave together right after its ``/st/phrase``,
each stamped with the session time it falls on.

The host is ``127.0.0.1`` unless given: the estimated state of a listener is personal
data, and OSC is plain UDP; a host off this machine is allowed only when named and is
logged as a warning.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import math
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_agent.errors import UsageError
from st_agent.live.common import Playing
from st_agent.types import EmotionState, Knobs

__all__ = ["DEFAULT_OSC_HOST", "DEFAULT_OSC_PREFIX", "OscOutput", "OscTarget", "SessionClock",
           "check_osc_address", "parse_osc_target", "phrase_beats"]

logger = logging.getLogger(__name__)

DEFAULT_OSC_HOST = "127.0.0.1"
DEFAULT_OSC_PREFIX = "/st"

_FORM = "PORT or HOST:PORT (e.g. 9000, 127.0.0.1:9000, studio-mac.local:9000, [::1]:9000)"
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
# OSC 1.0: an address part is printable ASCII except space # * , / ? [ ] { }
_OSC_PART = re.compile(r"[!-~]+")
_OSC_FORBIDDEN = set(" #*,/?[]{}")


@dataclass(frozen=True)
class OscTarget:
    """Where OSC goes.

    Parameters
    ----------
    host : str
        As given (or the default), without brackets.
    port : int
        UDP port, 1 to 65535.
    ip : str
        The address it resolved to (what packets are sent to).
    loopback : bool
        Whether that address is this machine.
    """

    host: str
    port: int
    ip: str
    loopback: bool

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _bad(value: str, why: str) -> UsageError:
    return UsageError(f"--osc {value!r}: {why}; expected {_FORM}")


def _split_host_port(value: str) -> tuple[str, str]:
    text = value.strip()
    if text.startswith("["):  # [IPv6]:PORT
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise _bad(value, "an IPv6 host in brackets must be followed by :PORT")
        return host, port
    if ":" not in text:
        return DEFAULT_OSC_HOST, text
    host, _, port = text.rpartition(":")
    if ":" in host:
        raise _bad(value, "an IPv6 host needs brackets, e.g. [::1]:9000")
    return host, port


def parse_osc_target(value: str, resolve: bool = True) -> OscTarget:
    """Read ``--osc``: ``PORT`` (host 127.0.0.1) or ``HOST:PORT``.

    Parameters
    ----------
    value : str
        The flag's value.
    resolve : bool
        Look the host name up now (an IP literal needs no lookup). Off: the target's
        ``ip`` is the host as given and ``loopback`` is judged from it alone.

    Returns
    -------
    OscTarget

    Raises
    ------
    UsageError
        For an empty value or host, a port that is not a whole number in [1, 65535], a
        host that is neither an IP address nor a host name, or a name that does not
        resolve; the message names the value and the form expected.
    """
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"--osc needs a destination, got {value!r}; expected {_FORM}")
    host, port_text = _split_host_port(value)
    if not host.strip():
        raise _bad(value, "the host is empty (leave out the colon for 127.0.0.1)")
    if not port_text.isdigit():
        raise _bad(value, f"the port {port_text!r} is not a whole number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _bad(value, f"the port {port} is out of range [1, 65535]")
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise _bad(value, f"the host {host!r} is neither an IP address nor a host "
                       "name") from None
        ip = host
        if resolve:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as e:
                raise _bad(value, f"the host {host!r} does not resolve ({e})") from e
            ip = str(infos[0][4][0])
    try:
        loopback = ipaddress.ip_address(ip).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return OscTarget(host, port, ip, loopback)


def check_osc_address(address: str, what: str = "--osc-prefix") -> str:
    """Refuse a malformed OSC address (pattern characters, spaces, empty parts).

    Parameters
    ----------
    address : str
        E.g. ``"/st"`` or ``"/room1/st"``: starts with ``/``, no trailing ``/``, each part
        printable ASCII without space ``# * , / ? [ ] { }`` (OSC 1.0).
    what : str
        How messages name it.

    Returns
    -------
    address : str

    Raises
    ------
    UsageError
        Naming the address, the bad part and the rule.
    """
    if not isinstance(address, str) or not address.startswith("/") or address == "/":
        raise UsageError(f"{what} {address!r} is not an OSC address: it must start with '/' "
                         "and name at least one part, e.g. /st or /room1/st")
    for part in address[1:].split("/"):
        bad = sorted(set(part) & _OSC_FORBIDDEN)
        if not part or bad or not _OSC_PART.fullmatch(part):
            why = (f"contains {', '.join(map(repr, bad))}" if bad
                   else "is empty or not printable ASCII")
            raise UsageError(
                f"{what} {address!r} is not an OSC address: part {part!r} {why}; parts are "
                "printable ASCII without space # * , / ? [ ] { } (OSC 1.0)")
    return address


def phrase_beats(playing: Playing) -> list[float]:
    """Session times of a phrase's beats, seconds.

    The beat is the meter's (a quarter in 4/4 and 3/4, a dotted quarter in 6/8, a half
    in 2/2: :func:`st_agent.music.meter.parse_meter`) at the phrase's measured tempo
    (``features.bpm``, quarter notes per minute).

    Parameters
    ----------
    playing : Playing

    Returns
    -------
    times : list of float, shape (n_beats,)
        ``start_sec + k * beat_sec`` for every beat starting before the phrase ends.
    """
    from st_agent.music.meter import parse_meter

    bpm = float(playing.features.bpm)
    dur = float(playing.features.duration_sec)
    if not bpm > 0 or not dur > 0:
        return []
    try:
        _, beat_q, _ = parse_meter(playing.phrase.meter)
    except (TypeError, ValueError):
        beat_q = 1.0
    beat_sec = beat_q * 60.0 / bpm
    n = max(1, math.ceil(dur / beat_sec - 1e-6))
    return [playing.start_sec + k * beat_sec for k in range(n)]


class SessionClock:
    """Another clock's time of session time in a real-time session: ``offset + t_sec``.

    A phrase starts, and a decision is made, at the session time it carries (the call
    comes at most a loop turn later), so the smallest ``now() - t_sec`` seen is the
    best estimate of the offset.

    Parameters
    ----------
    now : callable
        The other clock, seconds (default :func:`time.monotonic`; LSL: ``local_clock``).
    """

    def __init__(self, now: Any = time.monotonic) -> None:
        self.now = now
        self.offset: float | None = None
        self._lock = threading.Lock()

    def seen(self, t_sec: float | None) -> None:
        """A call carrying session time ``t_sec`` happens now."""
        if t_sec is None:
            return
        lag = self.now() - float(t_sec)
        with self._lock:
            self.offset = lag if self.offset is None else min(self.offset, lag)

    def wall(self, t_sec: float) -> float:
        """The other clock's time of session time ``t_sec`` (now, before any call)."""
        with self._lock:
            offset = self.offset if self.offset is not None else self.now() - t_sec
        return offset + t_sec


class _BeatThread(threading.Thread):
    """Sends each scheduled beat when the session clock reaches it."""

    def __init__(self, clock: SessionClock, send: Any) -> None:
        super().__init__(name="osc-beats", daemon=True)
        self.clock, self.send = clock, send
        self._queue: list[tuple[float, int, int, int]] = []
        self._cond = threading.Condition()
        self._stopped = False

    def schedule(self, beats: list[tuple[float, int, int, int]]) -> None:
        """``(t_sec, beat, phrase, beat_in_phrase)``; beats of an older phrase at or
        after the first new one are dropped (the new phrase took over)."""
        with self._cond:
            if beats:
                self._queue = [b for b in self._queue if b[0] < beats[0][0]]
                heapq.heapify(self._queue)
            for b in beats:
                heapq.heappush(self._queue, b)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify()
        self.join(timeout=2.0)

    def run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if not self._queue:
                    self._cond.wait()
                    continue
                due = self.clock.wall(self._queue[0][0]) - time.monotonic()
                if due > 0:
                    self._cond.wait(timeout=due)
                    continue
                t_sec, beat, phrase, k = heapq.heappop(self._queue)
            self.send("beat", beat, phrase, k, t_sec)


class OscOutput:
    """A :class:`~st_agent.live.outputs.SessionOutput` sending the address space above.

    Parameters
    ----------
    target : OscTarget or str
        Where to (a str is read by :func:`parse_osc_target`).
    prefix : str
        Address prefix, checked by :func:`check_osc_address`.
    accelerated : bool
        The session runs on a simulated clock: beats leave with their phrase.

    Attributes
    ----------
    sent : Counter
        Messages sent per address.
    errors : int
        Messages the network refused (logged; the output goes on).
    """

    name = "osc"

    def __init__(self, target: OscTarget | str, prefix: str = DEFAULT_OSC_PREFIX,
                 accelerated: bool = False) -> None:
        self.target = parse_osc_target(target) if isinstance(target, str) else target
        self.prefix = check_osc_address(prefix)
        self.accelerated = bool(accelerated)
        self.sent: Counter[str] = Counter()
        self.errors = 0
        self._client: Any = None
        self._lock = threading.Lock()
        self._clock = SessionClock()
        self._beats: _BeatThread | None = None
        self._n_beats = 0
        if not self.target.loopback:
            logger.warning("OSC goes to %s, off this machine: the listener's estimated state "
                           "leaves it as plain UDP", self.target)

    # ------------------------------------------------------------------ sending
    def _send(self, what: str, *args: Any) -> None:
        address = f"{self.prefix}/{what}"
        with self._lock:
            if self._client is None:
                return
            try:
                self._client.send_message(address, list(args))
            except OSError as e:  # UDP: a refused packet is lost, the session goes on
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    logger.warning("OSC to %s: %s (%d message(s) lost so far)", self.target,
                                   e, self.errors)
                return
            self.sent[address] += 1

    # ------------------------------------------------------------------ SessionOutput
    def open(self, folder: Path) -> None:
        """Open the UDP socket (and, in real time, the beat clock); send ``/start``."""
        from pythonosc.udp_client import SimpleUDPClient

        with self._lock:
            self._client = SimpleUDPClient(self.target.ip, self.target.port, timeout=1.0)
        if not self.accelerated:
            self._beats = _BeatThread(self._clock, self._send)
            self._beats.start()
        logger.info("OSC out to %s under %s", self.target, self.prefix)
        self._send("start", Path(folder).name)

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Send ``/phrase``; schedule its beats (accelerated: send them now)."""
        self._clock.seen(playing.start_sec)
        f = playing.features
        self._send("phrase", int(index), float(f.bpm), str(playing.phrase.key),
                   str(playing.phrase.meter), float(f.duration_sec), float(playing.start_sec))
        beats = [(t, self._n_beats + k, int(index), k)
                 for k, t in enumerate(phrase_beats(playing))]
        self._n_beats += len(beats)
        if self._beats is not None:
            self._beats.schedule(beats)
        else:
            for t, beat, phrase, k in beats:
                self._send("beat", beat, phrase, k, t)

    def state(self, t_sec: float, state: EmotionState | None, knobs: Knobs) -> None:
        """Send ``/state`` (when the estimate is usable) and ``/knobs``."""
        self._clock.seen(t_sec)
        if state is not None:
            self._send("state", float(state.valence), float(state.arousal),
                       float(state.confidence), float(t_sec))
        self._send("knobs", float(knobs.valence), float(knobs.tempo), float(knobs.energy),
                   float(t_sec))

    def marker(self, t_sec: float | None, text: str) -> None:
        """Send ``/marker`` (``t_sec`` NaN when the caller gave none)."""
        self._send("marker", str(text), math.nan if t_sec is None else float(t_sec))

    def close(self, reason: str) -> None:
        """Stop the beat clock (beats not yet due are not sent); send ``/end``."""
        if self._beats is not None:
            self._beats.stop()
            self._beats = None
        self._send("end", str(reason))
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
        logger.info("OSC out closed: %s", dict(self.sent))
