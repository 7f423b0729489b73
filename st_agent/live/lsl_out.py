"""LSL outlet (``st-agent session --lsl-out``): state, knobs and phrases as LSL streams.

So that LabRecorder records the loop beside the raw EEG in one XDF file, the session
offers four Lab Streaming Layer streams, named ``<prefix>-<kind>`` (prefix
``--lsl-out-name``, default ``st-agent``):

=============  ==============  ========  ==========================================
stream         type            format    channels (label, unit)
=============  ==============  ========  ==========================================
``-state``     EmotionState    float32   valence (a.u., [-1, 1]), arousal (a.u.,
                                         [-1, 1]), confidence ([0, 1]); each decision
                                         with a usable estimate
``-knobs``     Knobs           float32   valence, tempo, energy ([0, 1]); each decision
``-phrases``   Markers         string    index, bpm (quarter notes per minute), key
                                         (ABC ``K:``); when a phrase starts
``-markers``   Markers         string    text; calibration done, stop, the end...
=============  ==============  ========  ==========================================

All are irregular-rate. Each sample is stamped on LSL's clock (``local_clock``) at the
session time it belongs to: in a real-time session ``offset + t_sec`` with the offset
estimated as in :class:`st_agent.live.osc_out.SessionClock` (so a phrase marker falls on
the phrase's start, not on the moment the loop got round to it); in an accelerated
session the local clock at :meth:`LslOutput.open` plus the session time (a simulated
timeline, running ahead of the wall clock). Timestamps of each stream never go back.

A name clash (a stream of one of these names already on the network, e.g. a second
session on the same lab network) is refused before the session starts
(:func:`check_lsl_names`), naming the stream and its host: LabRecorder tells streams
apart by name, and two sessions under one name would mix in one recording. Choose
another prefix with ``--lsl-out-name``.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from st_agent.errors import DeviceError, UsageError
from st_agent.live.common import Playing
from st_agent.live.osc_out import SessionClock
from st_agent.types import EmotionState, Knobs

__all__ = ["DEFAULT_LSL_PREFIX", "LSL_STREAMS", "LslOutput", "check_lsl_names",
           "check_lsl_prefix", "lsl_stream_names"]

logger = logging.getLogger(__name__)

DEFAULT_LSL_PREFIX = "st-agent"

#: kind -> (LSL type, channel format, ((label, unit, channel type), ...))
LSL_STREAMS: dict[str, tuple[str, str, tuple[tuple[str, str, str], ...]]] = {
    "state": ("EmotionState", "float32", (("valence", "a.u. [-1,1]", "Valence"),
                                          ("arousal", "a.u. [-1,1]", "Arousal"),
                                          ("confidence", "[0,1]", "Confidence"))),
    "knobs": ("Knobs", "float32", (("valence", "[0,1]", "Knob"), ("tempo", "[0,1]", "Knob"),
                                   ("energy", "[0,1]", "Knob"))),
    "phrases": ("Markers", "string", (("index", "phrase", "Marker"),
                                      ("bpm", "quarter notes per minute", "Marker"),
                                      ("key", "ABC K: field", "Marker"))),
    "markers": ("Markers", "string", (("text", "", "Marker"),)),
}

_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")


def check_lsl_prefix(prefix: str) -> str:
    """Refuse a stream-name prefix LabRecorder could not show or tell apart.

    Parameters
    ----------
    prefix : str
        1 to 48 characters: letters, digits, ``_ . -``, starting with a letter or digit.

    Raises
    ------
    UsageError
        Naming the value and the rule.
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise UsageError(f"--lsl-out-name {prefix!r} is not a stream name prefix: use 1 to "
                         "48 letters, digits, '_', '.' or '-', starting with a letter or "
                         "digit, e.g. st-agent-room1")
    return prefix


def lsl_stream_names(prefix: str = DEFAULT_LSL_PREFIX) -> dict[str, str]:
    """``{kind: "<prefix>-<kind>"}`` for the kinds of :data:`LSL_STREAMS`."""
    check_lsl_prefix(prefix)
    return {kind: f"{prefix}-{kind}" for kind in LSL_STREAMS}


def _pylsl() -> Any:
    try:
        import pylsl
    except (ImportError, RuntimeError) as e:  # pylsl raises RuntimeError without liblsl
        raise DeviceError(f"--lsl-out needs pylsl and liblsl: {e}; `pip install pylsl`") \
            from e
    return pylsl


def check_lsl_names(prefix: str = DEFAULT_LSL_PREFIX, wait_sec: float = 1.0) -> None:
    """Refuse when a stream with one of this session's names is already on the network.

    Parameters
    ----------
    prefix : str
    wait_sec : float
        How long to listen for streams, seconds.

    Raises
    ------
    UsageError
        Naming the stream, its host and source id, and the flag that picks another name.
    DeviceError
        When pylsl cannot be loaded.
    """
    names = set(lsl_stream_names(prefix).values())
    pylsl = _pylsl()
    for info in pylsl.resolve_streams(wait_time=wait_sec):
        if info.name() in names:
            raise UsageError(
                f"an LSL stream named {info.name()!r} is already on the network (host "
                f"{info.hostname()!r}, source_id {info.source_id()!r}), e.g. another "
                f"session streaming under --lsl-out-name {prefix}; LabRecorder tells streams "
                "apart by name, so give this session another one: --lsl-out-name "
                f"{prefix}-2")


class LslOutput:
    """A :class:`~st_agent.live.outputs.SessionOutput` offering the streams above.

    Parameters
    ----------
    prefix : str
        Stream-name prefix (:func:`check_lsl_prefix`).
    accelerated : bool
        The session runs on a simulated clock (timestamps: see the module).
    check_names : bool
        Refuse a name clash in :meth:`open` too (it is best checked before the session,
        with :func:`check_lsl_names`; this catches a stream that appeared since).

    Attributes
    ----------
    pushed : dict of str to int
        Samples pushed per stream kind.
    """

    name = "lsl-out"

    def __init__(self, prefix: str = DEFAULT_LSL_PREFIX, accelerated: bool = False,
                 check_names: bool = True) -> None:
        self.prefix = check_lsl_prefix(prefix)
        self.names = lsl_stream_names(prefix)
        self.accelerated = bool(accelerated)
        self.check_names = bool(check_names)
        self.pushed = dict.fromkeys(LSL_STREAMS, 0)
        self._outlets: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock: SessionClock | None = None

    def _info(self, pylsl: Any, kind: str, session: str) -> Any:
        lsl_type, fmt, channels = LSL_STREAMS[kind]
        cf = pylsl.cf_float32 if fmt == "float32" else pylsl.cf_string
        info = pylsl.StreamInfo(self.names[kind], lsl_type, len(channels),
                                pylsl.IRREGULAR_RATE, cf, f"{self.names[kind]}@{session}")
        desc = info.desc()
        desc.append_child_value("manufacturer", "st-agent")
        desc.append_child_value("session", session)
        chans = desc.append_child("channels")
        for label, unit, ch_type in channels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", ch_type)
        return info

    def _push(self, kind: str, sample: list[Any], t_sec: float | None) -> None:
        with self._lock:
            outlet, clock = self._outlets.get(kind), self._clock
            if outlet is None or clock is None:
                return
            ts = clock.wall(t_sec) if t_sec is not None else clock.now()
            ts = max(ts, self._last.get(kind, ts))  # never back in time
            self._last[kind] = ts
            outlet.push_sample(sample, ts)
            self.pushed[kind] += 1

    # ------------------------------------------------------------------ SessionOutput
    def open(self, folder: Path) -> None:
        """Create the outlets (after checking the names are free)."""
        pylsl = _pylsl()
        if self.check_names:
            check_lsl_names(self.prefix, wait_sec=0.5)
        clock = SessionClock(pylsl.local_clock)
        if self.accelerated:
            clock.offset = pylsl.local_clock()
        session = Path(folder).name or "session"
        outlets = {kind: pylsl.StreamOutlet(self._info(pylsl, kind, session))
                   for kind in LSL_STREAMS}
        with self._lock:
            self._outlets, self._clock = outlets, clock
        logger.info("LSL outlets: %s", ", ".join(self.names.values()))

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Push a phrase marker ``[index, bpm, key]`` at the phrase's start."""
        if self._clock is not None and not self.accelerated:
            self._clock.seen(playing.start_sec)
        self._push("phrases", [str(int(index)), f"{float(playing.features.bpm):.2f}",
                               str(playing.phrase.key)], playing.start_sec)

    def state(self, t_sec: float, state: EmotionState | None, knobs: Knobs) -> None:
        """Push the state (when the estimate is usable) and the knobs."""
        if self._clock is not None and not self.accelerated:
            self._clock.seen(t_sec)
        if state is not None:
            self._push("state", [float(state.valence), float(state.arousal),
                                 float(state.confidence)], t_sec)
        self._push("knobs", [float(knobs.valence), float(knobs.tempo), float(knobs.energy)],
                   t_sec)

    def marker(self, t_sec: float | None, text: str) -> None:
        """Push a session marker."""
        self._push("markers", [str(text)], t_sec)

    def close(self, reason: str) -> None:
        """Push an ``end`` marker and destroy the outlets (inlets see the streams end)."""
        self._push("markers", [f"end: {reason}"], None)
        with self._lock:
            self._outlets.clear()
            self._clock = None
        logger.info("LSL outlets closed: %s samples", self.pushed)
