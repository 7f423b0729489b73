"""Standard MIDI files written directly: the tempo map, tracks encoded from arrays, and
a file that grows phrase by phrase.

:func:`st_agent.live.session_midi.session_midi_bytes` builds ``session.mid`` from every
phrase at once; :class:`GrowingMidi` builds the same bytes from phrases added one at a
time, keeping each track's finished events in a file of its own, so rewriting the
file after a phrase costs time and memory for that phrase, not for the whole session
(``session.mid``'s checkpoints; ``tests/test_midi_out.py`` checks the two byte for byte).

Events are ``(tick, order, rank)``-sorted: ``order`` puts meta events (0), program
changes (1), note-offs (2) and note-ons (3) of one tick in that order; ``rank`` keeps
the rest as given.
"""

from __future__ import annotations

import bisect
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OFF_ORDER", "ON_ORDER", "Conductor", "Events", "GrowingMidi", "TempoMap", "TrackNotes",
           "encode_events", "marker_events", "meta_event", "smf_bytes", "track_chunk", "varlen"]

#: Event order at one tick: note-offs before note-ons.
OFF_ORDER, ON_ORDER = 2, 3

_SMALL = [bytes((i,)) for i in range(128)]
_END_OF_TRACK = b"\xff\x2f\x00"


def varlen(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((0x80 | (n >> 7), n & 0x7F))
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def meta_event(kind: int, data: bytes) -> bytes:
    """A meta event (``FF kind len data``), without its delta time."""
    return bytes([0xFF, kind]) + varlen(len(data)) + data


class Conductor:
    """Track 0's tempo and meter events, one at each change (:meth:`add` per phrase)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, bytes]] = []  # (tick, order, event)
        self._us: int | None = None
        self._meter: tuple[int, int] | None = None

    def add(self, tick: int, tempo_us: int, meter: tuple[int, int]) -> None:
        """A phrase at ``tick``: a ``set_tempo`` and a time signature where they change."""
        if tempo_us != self._us:
            self.events.append((tick, 0, meta_event(0x51, tempo_us.to_bytes(3, "big"))))
            self._us = tempo_us
        if tuple(meter) != self._meter:
            num, den = meter
            self.events.append((tick, 1, meta_event(0x58, bytes(
                [num, max(den.bit_length() - 1, 0), 24, 8]))))
            self._meter = (num, den)


def marker_events(tempo: TempoMap, markers: Iterable[tuple[float, str]], t0_sec: float,
                  end_tick: int) -> list[tuple[int, int, bytes]]:
    """Track 0's marker events: each ``(t_sec, text)`` (session clock) at its tick from the
    first phrase at ``t0_sec`` (earlier ones at the start, later ones at ``end_tick``),
    text cut to 120 characters."""
    return [(min(tempo.tick(max(float(t) - t0_sec, 0.0)), end_tick), 2,
             meta_event(0x06, str(text)[:120].encode("utf-8"))) for t, text in markers]


class TempoMap:
    """Seconds (from the first phrase) to ticks, piecewise per phrase; grows with
    :meth:`append`."""

    def __init__(self, tpq: int) -> None:
        self.tpq = tpq
        self.segments: list[tuple[float, int, int]] = []  # (sec, tick, us per quarter)
        self._starts: list[float] = []
        self._array: np.ndarray | None = None  # the segments as (S, 3), made when asked

    def append(self, start_sec: float, tempo_us: int) -> None:
        """A phrase starting ``start_sec`` after the first at ``tempo_us`` per quarter
        (one that does not start after the last segment changes nothing)."""
        if self.segments and start_sec <= self.segments[-1][0]:
            return
        tick = self.tick(start_sec) if self.segments else 0
        self.segments.append((start_sec, tick, tempo_us))
        self._starts.append(start_sec)
        self._array = None

    def ticks(self, t_sec: np.ndarray) -> np.ndarray:
        """:meth:`tick` of every entry of ``t_sec``, shape kept, int64."""
        if self._array is None:
            self._array = np.asarray(self.segments, dtype=np.float64).reshape(-1, 3)
        seg = self._array
        t = np.asarray(t_sec, dtype=np.float64)
        i = np.clip(np.searchsorted(seg[:, 0], t, side="right") - 1, 0, None)
        frac = np.maximum(t - seg[i, 0], 0.0) * 1e6 / seg[i, 2] * self.tpq
        return seg[i, 1].astype(np.int64) + np.round(frac).astype(np.int64)

    def tick(self, t_sec: float) -> int:
        """The tick of ``t_sec`` (seconds from the first phrase)."""
        i = max(bisect.bisect_right(self._starts, t_sec) - 1, 0)
        s, tick, us = self.segments[i]
        return tick + round(max(t_sec - s, 0.0) * 1e6 / us * self.tpq)


@dataclass(frozen=True)
class TrackNotes:
    """A part's notes for :func:`track_chunk`, as arrays of shape (n,) (int): each a
    note-on at ``on_tick`` and a note-off at ``off_tick`` on ``channel``."""

    channel: int
    on_tick: np.ndarray
    off_tick: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray


@dataclass
class Events:
    """Track events as arrays, shape (k,): ``tick``, ``order``, ``rank`` (int64) and
    each event's bytes, concatenated in ``payload`` (uint8) with lengths ``size``."""

    tick: np.ndarray
    order: np.ndarray
    rank: np.ndarray
    payload: np.ndarray
    size: np.ndarray

    @classmethod
    def empty(cls) -> Events:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, np.zeros(0, dtype=np.uint8), z)

    @classmethod
    def of(cls, items: Iterable[tuple[int, int, int, bytes]]) -> Events:
        """From ``(tick, order, rank, bytes)`` tuples (the few non-note events)."""
        rows = list(items)
        if not rows:
            return cls.empty()
        tick, order, rank, data = zip(*rows, strict=True)
        return cls(np.asarray(tick, dtype=np.int64), np.asarray(order, dtype=np.int64),
                   np.asarray(rank, dtype=np.int64),
                   np.frombuffer(b"".join(data), dtype=np.uint8).copy(),
                   np.asarray([len(d) for d in data], dtype=np.int64))

    @classmethod
    def notes(cls, notes: TrackNotes, rank0: int) -> Events:
        """Note ``i``'s on (rank ``rank0 + 2i``) and off (``rank0 + 2i + 1``)."""
        n = len(notes.on_tick)
        tick = np.empty(2 * n, dtype=np.int64)
        tick[0::2], tick[1::2] = notes.on_tick, notes.off_tick
        order = np.tile(np.array([ON_ORDER, OFF_ORDER], dtype=np.int64), n)
        pay = np.empty((n, 2, 3), dtype=np.uint8)
        pay[:, 0, 0], pay[:, 1, 0] = 0x90 | notes.channel, 0x80 | notes.channel
        pay[:, :, 1] = np.asarray(notes.pitch)[:, None]
        pay[:, 0, 2], pay[:, 1, 2] = notes.velocity, 0
        return cls(tick, order, rank0 + np.arange(2 * n, dtype=np.int64), pay.reshape(-1),
                   np.full(2 * n, 3, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.tick)

    def take(self, sel: np.ndarray) -> Events:
        """The events where boolean ``sel`` holds, in their order."""
        return Events(self.tick[sel], self.order[sel], self.rank[sel],
                      self.payload[np.repeat(sel, self.size)], self.size[sel])

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if not parts:
            return Events.empty()
        return Events(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("tick", "order", "rank", "payload", "size")))


def encode_events(ev: Events, prev_tick: int = 0) -> tuple[bytes, int]:
    """The events sorted by (tick, order, rank), each after its delta time from the one
    before (the first from ``prev_tick``); and the last event's tick (``prev_tick``
    when there is none).

    Encoded with array operations, not an object per event: a checkpoint of hours of
    notes would otherwise make millions of small objects at once.
    """
    if not len(ev):
        return b"", prev_tick
    src = np.lexsort((ev.rank, ev.order, ev.tick))
    t = ev.tick[src]
    if t[0] < prev_tick:
        raise ValueError(f"events start at tick {int(t[0])}, before the track's last "
                         f"tick {prev_tick}")
    delta = np.diff(t, prepend=prev_tick)
    vlen = 1 + (delta >= 1 << 7) + (delta >= 1 << 14) + (delta >= 1 << 21)
    plen = ev.size[src]
    size = vlen + plen
    start = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), dtype=np.uint8)
    for k in range(4):  # the variable-length delta, most significant group first
        sel = vlen > k
        last = k == vlen[sel] - 1
        group = (delta[sel] >> (7 * (vlen[sel] - 1 - k))) & 0x7F
        buf[start[sel] + k] = np.where(last, group, group | 0x80)
    # each event's bytes after its delta: one gather and one scatter for all of them
    offset = (np.cumsum(ev.size) - ev.size)[src]
    within = np.arange(int(plen.sum())) - np.repeat(np.cumsum(plen) - plen, plen)
    buf[np.repeat(start + vlen, plen) + within] = ev.payload[np.repeat(offset, plen) + within]
    return buf.tobytes(), int(t[-1])


def _end(end_tick: int, now: int) -> bytes:
    return varlen(max(end_tick - now, 0)) + _END_OF_TRACK


def track_chunk(events: list[tuple[int, int, bytes]], end_tick: int,
                notes: TrackNotes | None = None) -> bytes:
    """An ``MTrk`` chunk from absolute ``(tick, order, event)`` and ``notes``, sorted by
    tick, then order, then as given (``events`` first, then each note's on and off);
    ends at ``end_tick``."""
    m = len(events)
    ev = Events.of((t, o, i, e) for i, (t, o, e) in enumerate(events))
    if notes is not None:
        ev = Events.concat([ev, Events.notes(notes, m)])
    body, now = encode_events(ev)
    body += _end(end_tick, now)
    return b"MTrk" + len(body).to_bytes(4, "big") + body


def _header(tpq: int, n_tracks: int) -> bytes:
    return (b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big")
            + n_tracks.to_bytes(2, "big") + tpq.to_bytes(2, "big"))


def smf_bytes(tpq: int, tracks: list[bytes]) -> bytes:
    """A type-1 standard MIDI file of ``tracks`` (``MTrk`` chunks)."""
    return _header(tpq, len(tracks)) + b"".join(tracks)


# --------------------------------------------------------------------------- growing


@dataclass
class _Part:
    channel: int
    path: Path
    program: int | None = None
    last_tick: int = 0  # of the events already in the file
    n_bytes: int = 0  # in the file
    next_rank: int = 0
    #: events not in the file yet: their times (s from the first phrase), ticks later
    pending_sec: list[np.ndarray] = field(default_factory=list)
    pending: list[Events] = field(default_factory=list)


class GrowingMidi:
    """``session.mid`` of phrases added one at a time (:meth:`add`), written whole at
    any point (:meth:`write`) in time for what was added since the last write.

    The same bytes as :func:`st_agent.live.session_midi.session_midi_bytes` of the
    phrases added (no cut). Each part's events before the start of the last phrase
    added can no longer move (later phrases start later, and the tempo map is final
    up to there): :meth:`write` appends them to the part's file under ``folder`` and
    keeps only the rest (the last phrase's notes and the notes still sounding) in
    memory. The conductor track (tempo, meter, markers) is small and kept in memory.

    Parameters
    ----------
    folder : Path
        Where the parts' finished events go (made if missing; :meth:`remove` deletes it).
    tpq : int
        Ticks per quarter note.
    """

    def __init__(self, folder: Path, tpq: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tpq = tpq
        self.tempo = TempoMap(tpq)
        self.n_phrases = 0
        self._t0: float | None = None
        self._shift = 0.0  # start of the last phrase added, s from the first
        self._end_sec = 0.0
        self._conductor = Conductor()
        self._parts: dict[str, _Part] = {}
        self._free = iter(c for c in range(16) if c != 9)

    def add(self, p: Any) -> None:
        """Add phrase ``p`` (a :class:`~st_agent.live.session_midi.MidiPhrase`).

        Raises
        ------
        ValueError
            When ``p`` starts before the last phrase added, or a note starts before its
            phrase (events already written would have to move: write the file whole
            instead), or a 16th melodic part appears.
        """
        if self._t0 is None:
            self._t0 = float(p.start_sec)
        shift = float(p.start_sec) - self._t0
        if self.n_phrases and shift < self._shift:
            raise ValueError(f"phrase starts at {p.start_sec} s, before the last one added "
                             f"({self._t0 + self._shift} s); phrases must come in order")
        for _, _, _, notes in p.parts:
            if len(notes) and float(np.min(notes[:, 0])) < 0:
                raise ValueError("a note starts before its phrase; write the file whole")
        self.tempo.append(shift, p.tempo_us)
        self._conductor.add(self.tempo.tick(shift), p.tempo_us, p.meter)
        for label, program, drum, notes in p.parts:
            part = self._parts.get(label) or self._new_part(label, drum)
            if part.program != program:
                self._pend(part, np.array([shift]), Events.of(
                    [(0, 1, part.next_rank, bytes([0xC0 | part.channel, program & 0x7F]))]))
                part.program = program
            n = len(notes)
            if n:  # each note's on, then its off (not before its on)
                times = np.column_stack([notes[:, 0], np.maximum(notes[:, 1], notes[:, 0])])
                times = (times + shift).reshape(-1)
                ev = Events.notes(TrackNotes(
                    part.channel, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                    np.clip(notes[:, 2], 0, 127).astype(np.int64),
                    np.clip(notes[:, 3], 1, 127).astype(np.int64)), part.next_rank)
                self._pend(part, times, ev)
        self._shift = shift
        self._end_sec = float(p.end_sec) - self._t0
        self.n_phrases += 1

    def _new_part(self, label: str, drum: bool) -> _Part:
        ch = 9 if drum else next(self._free, None)
        if ch is None:
            raise ValueError(f"session.mid holds 15 melodic parts; {label!r} is one more")
        part = self._parts[label] = _Part(ch, self.folder / f"part{len(self._parts)}.bin")
        part.path.write_bytes(b"")
        self._pend(part, np.array([0.0]), Events.of(
            [(0, 0, 0, meta_event(0x03, label.encode("utf-8")))]))
        return part

    @staticmethod
    def _pend(part: _Part, times: np.ndarray, ev: Events) -> None:
        part.pending_sec.append(np.asarray(times, dtype=np.float64))
        part.pending.append(ev)
        part.next_rank += len(ev)

    def write(self, path: Path, markers: Iterable[tuple[float, str]] = ()) -> Path:
        """Write the file of every phrase added so far to ``path`` atomically (a
        temporary file, renamed); ``markers`` as in ``session_midi_bytes``."""
        path = Path(path)
        if not self.n_phrases or self._t0 is None:
            raise ValueError("no phrase added yet")
        end_tick = self.tempo.tick(self._end_sec)
        final = self.tempo.tick(self._shift)  # events before it can no longer move
        meta = self._conductor.events + marker_events(self.tempo, markers, self._t0, end_tick)
        tails = []
        for part in self._parts.values():
            times = np.concatenate(part.pending_sec)
            ev = Events.concat(part.pending)
            ev.tick = self.tempo.ticks(times)
            old = ev.tick < final
            done, last_tick = encode_events(ev.take(old), part.last_tick)
            if done:  # the part's state changes only once its file holds them
                with open(part.path, "r+b") as f:
                    f.seek(part.n_bytes)
                    f.truncate()  # what a failed write may have left
                    f.write(done)
            part.n_bytes += len(done)
            part.last_tick = last_tick
            part.pending_sec, part.pending = [times[~old]], [ev.take(~old)]
            body, now = encode_events(part.pending[0], part.last_tick)
            tails.append(body + _end(end_tick, now))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_header(self.tpq, 1 + len(self._parts)))
            f.write(track_chunk(meta, end_tick))
            for part, tail in zip(self._parts.values(), tails, strict=True):
                f.write(b"MTrk" + (part.n_bytes + len(tail)).to_bytes(4, "big"))
                with open(part.path, "rb") as done_f:
                    shutil.copyfileobj(done_f, f)
                f.write(tail)
        os.replace(tmp, path)
        return path

    def remove(self) -> None:
        """Delete the parts' files and their folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
