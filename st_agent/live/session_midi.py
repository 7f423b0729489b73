"""The session as a MIDI file with its tempo map.

* ``session.mid`` (:func:`session_midi`, written by the :class:`SessionMidiFile`
  output): a type-1 standard MIDI file beside ``session.wav``, time 0 at the first
  phrase (as the WAV). Track 0 holds the tempo map (a ``set_tempo`` at every tempo
  change, taken from each phrase's rendered MIDI), the time signatures and the
  session's markers; then one track per part (``melody``, ``bass``, ``chords``; in a
  jam ``performer_<i>``, then ``bass`` and ``chords``), each on its own channel with a
  program change at its start. Seconds become ticks through the tempo map, so a
  reader that follows it (pretty_midi, a DAW) finds every note where it played
  (to half a tick: 960 ticks per quarter note).

The stems (``stems/<part>.wav``, ``--stems``) and a jam's stereo mix are streamed
as the music plays by :class:`st_agent.live.stems.PartStreams`.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.live.common import Playing
from st_agent.live.midi_out import part_label
from st_agent.live.smf import (
    Conductor,
    GrowingMidi,
    TempoMap,
    TrackNotes,
    marker_events,
    meta_event,
    smf_bytes,
    track_chunk,
)
from st_agent.types import EmotionState, Knobs

__all__ = ["TICKS_PER_QUARTER", "MidiPhrase", "SessionMidiFile", "music_length_sec",
           "session_midi", "session_midi_bytes", "write_session_midi"]

logger = logging.getLogger(__name__)

#: The spool of :class:`SessionMidiFile` in the session folder (removed at close).
SPOOL_NAME = ".session-mid.jsonl"

#: The checkpoints' per-part files of :class:`SessionMidiFile` (removed at close).
PARTS_DIR_NAME = ".session-mid-parts"

#: Resolution of ``session.mid``.
TICKS_PER_QUARTER = 960


def _phrase_tempo_us(p: Playing) -> int:
    """Microseconds per quarter note of a phrase: its rendered MIDI's, else its BPM."""
    _, tempi = p.pm.get_tempo_changes()
    bpm = float(tempi[0]) if len(tempi) else float(getattr(p.phrase, "bpm", 120.0))
    return round(60e6 / bpm)


def _phrase_meter(p: Playing) -> tuple[int, int]:
    sigs = getattr(p.pm, "time_signature_changes", [])
    if sigs:
        return int(sigs[0].numerator), int(sigs[0].denominator)
    meter = str(getattr(p.phrase, "meter", "4/4")).strip()
    if meter in ("C", "C|"):
        return (4, 4) if meter == "C" else (2, 2)
    num, _, den = meter.partition("/")
    return (int(num), int(den)) if num.isdigit() and den.isdigit() else (4, 4)


@dataclass(frozen=True)
class MidiPhrase:
    """What the MIDI file and the stems need of a phrase: its notes, tempo and meter
    (no PrettyMIDI kept, so a long session's memory stays small).

    Parameters
    ----------
    start_sec, end_sec : float
        Session clock, seconds.
    tempo_us : int
        Microseconds per quarter note.
    meter : (int, int)
        Time signature.
    parts : tuple of (label, program, is_drum, notes)
        ``notes``: float array, shape (n, 4): start and end (seconds from the phrase's
        start), pitch, velocity.
    """

    start_sec: float
    end_sec: float
    tempo_us: int
    meter: tuple[int, int]
    parts: tuple[tuple[str, int, bool, np.ndarray], ...]

    @classmethod
    def of(cls, p: Playing | MidiPhrase) -> MidiPhrase:
        """The record of a playing phrase (a record is returned as it is)."""
        if isinstance(p, MidiPhrase):
            return p
        parts = tuple(
            (part_label(inst.name or f"program {inst.program}"), int(inst.program),
             bool(inst.is_drum),
             np.array([(n.start, max(n.end, n.start), n.pitch, n.velocity)
                       for n in inst.notes], dtype=np.float64).reshape(-1, 4))
            for inst in p.pm.instruments)
        return cls(float(p.start_sec), float(p.end_sec), _phrase_tempo_us(p),
                   _phrase_meter(p), parts)

    def to_json(self) -> str:
        """One line of JSON (floats as Python writes them, so they read back exactly)."""
        return json.dumps({"start_sec": self.start_sec, "end_sec": self.end_sec,
                           "tempo_us": self.tempo_us, "meter": list(self.meter),
                           "parts": [[label, program, drum, notes.tolist()]
                                     for label, program, drum, notes in self.parts]})

    @classmethod
    def from_json(cls, line: str) -> MidiPhrase:
        """The record :meth:`to_json` wrote."""
        d = json.loads(line)
        parts = tuple((str(label), int(program), bool(drum),
                       np.array(notes, dtype=np.float64).reshape(-1, 4))
                      for label, program, drum, notes in d["parts"])
        return cls(float(d["start_sec"]), float(d["end_sec"]), int(d["tempo_us"]),
                   (int(d["meter"][0]), int(d["meter"][1])), parts)


def music_length_sec(played: Sequence[Playing | MidiPhrase],
                     cut_sec: float | None = None) -> float:
    """Seconds from the first phrase's start to the last's end (or to ``cut_sec``,
    session time, when it is earlier)."""
    if not played:
        return 0.0
    end = played[-1].end_sec if cut_sec is None else min(played[-1].end_sec, cut_sec)
    return max(0.0, end - played[0].start_sec)


def _collect_parts(played: list[MidiPhrase], cut_sec: float | None
                   ) -> dict[str, dict[str, Any]]:
    """Per part label: its notes (array (n, 4): start, end in seconds from the first
    phrase, pitch, velocity), program changes and whether it is drums."""
    t0 = played[0].start_sec
    parts: dict[str, dict[str, Any]] = {}
    for p in played:
        shift = p.start_sec - t0
        for label, program, drum, notes in p.parts:
            part = parts.setdefault(label, {"notes": [], "programs": [], "drum": drum})
            if not part["programs"] or part["programs"][-1][1] != program:
                part["programs"].append((shift, program))
            part["notes"].append(notes + np.array([shift, shift, 0.0, 0.0]))
    for part in parts.values():
        notes = np.concatenate(part["notes"]) if part["notes"] else np.zeros((0, 4))
        if cut_sec is not None:
            notes = notes[notes[:, 0] < cut_sec - t0]
            notes[:, 1] = np.minimum(notes[:, 1], cut_sec - t0)
        part["notes"] = notes
    return parts


def session_midi_bytes(played: Sequence[Playing | MidiPhrase], cut_sec: float | None = None,
                       markers: Iterable[tuple[float, str]] = (),
                       tpq: int = TICKS_PER_QUARTER) -> bytes:
    """The session as a type-1 standard MIDI file with its tempo map, as bytes.

    Written directly (a long session has tens of thousands of notes; building them as
    mido messages would take seconds on the loop's thread).

    Parameters
    ----------
    played : sequence of Playing or MidiPhrase
        The phrases as they played (session clock).
    cut_sec : float, optional
        Session time at which the music stopped: later notes are dropped, sounding ones
        end there.
    markers : iterable of (t_sec, text)
        Session markers (session clock; before the first phrase: at its start).
    tpq : int
        Ticks per quarter note.

    Returns
    -------
    smf : bytes
        A conductor track alone when nothing played.
    """
    if isinstance(tpq, bool) or not isinstance(tpq, int) or not 24 <= tpq < 2 ** 15:
        raise ValueError(f"tpq must be an int in [24, 32767] ticks per quarter, got {tpq!r}")
    if not played:
        return smf_bytes(tpq, [track_chunk([], 0)])
    records = [MidiPhrase.of(p) for p in played]
    t0 = records[0].start_sec
    tmap = TempoMap(tpq)
    for p in records:
        tmap.append(p.start_sec - t0, p.tempo_us)
    end_tick = tmap.tick(music_length_sec(records, cut_sec))
    conductor = Conductor()
    for p in records:
        conductor.add(tmap.tick(p.start_sec - t0), p.tempo_us, p.meter)
    meta = conductor.events + marker_events(tmap, markers, t0, end_tick)
    tracks = [track_chunk(meta, end_tick)]
    free = iter(c for c in range(16) if c != 9)
    for label, part in _collect_parts(records, cut_sec).items():
        ch = 9 if part["drum"] else next(free, None)
        if ch is None:
            raise ValueError(f"session.mid holds 15 melodic parts; {label!r} is one more")
        ev: list[tuple[int, int, bytes]] = [(0, 0, meta_event(0x03, label.encode("utf-8")))]
        for t, prog in part["programs"]:
            ev.append((tmap.tick(t), 1, bytes([0xC0 | ch, prog & 0x7F])))
        notes = part["notes"]
        on = tmap.ticks(notes[:, 0])
        tracks.append(track_chunk(ev, end_tick, TrackNotes(
            ch, on, np.maximum(tmap.ticks(notes[:, 1]), on),
            np.clip(notes[:, 2], 0, 127).astype(np.int64),
            np.clip(notes[:, 3], 1, 127).astype(np.int64))))
    return smf_bytes(tpq, tracks)


def session_midi(played: Sequence[Playing | MidiPhrase], cut_sec: float | None = None,
                 markers: Iterable[tuple[float, str]] = (),
                 tpq: int = TICKS_PER_QUARTER) -> Any:
    """:func:`session_midi_bytes` as a :class:`mido.MidiFile` (to inspect or edit)."""
    import io

    import mido

    return mido.MidiFile(file=io.BytesIO(session_midi_bytes(played, cut_sec, markers, tpq)))


def write_session_midi(path: Path, played: Sequence[Playing | MidiPhrase],
                       cut_sec: float | None = None,
                       markers: Iterable[tuple[float, str]] = ()) -> Path:
    """Write :func:`session_midi` to ``path`` atomically (a temporary file, renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(session_midi_bytes(played, cut_sec, markers))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- output


class SessionMidiFile:
    """Writes ``session.mid`` as the session goes and at close.

    A :class:`~st_agent.live.outputs.SessionOutput`. Each phrase's notes go to a spool
    file in the session folder (``.session-mid.jsonl``, a :class:`MidiPhrase` per line)
    as it starts, not to memory, so the output keeps no phrase however long the
    session (:meth:`spooled` reads them back). Every
    ``checkpoint_sec`` the file so far is written again (atomically, at a phrase start,
    in a worker thread, so the loop never waits for it; a checkpoint due while the last
    one is still being written is skipped). A checkpoint reads only the phrases spooled
    since the last one: :class:`~st_agent.live.smf.GrowingMidi` keeps each part's
    finished events in a file of its own beside the spool (``.session-mid-parts/``), so
    its time and memory do not grow with the session (reading the whole spool back
    each time made a peak that did, which stayed resident in the worker's malloc arena:
    ``benchmarks/bench_session_rss.py --vmas``). So a session that dies
    without closing still leaves what played up to then; :meth:`close` waits for it and
    writes the final one from the whole spool (cut at a stop or a crash: at the stop
    marker, or the last session time seen; whole on ``"time up"``) and removes the
    spool and the parts' files.

    Parameters
    ----------
    checkpoint_sec : float
        Rewrite ``session.mid`` at a phrase start when this much session time passed
        since the last rewrite (0: after every phrase; inf: only at close).
    """

    name = "session-mid"

    def __init__(self, checkpoint_sec: float = 30.0) -> None:
        if not (isinstance(checkpoint_sec, (int, float)) and checkpoint_sec >= 0):
            raise ValueError(f"checkpoint_sec must be a number of seconds >= 0, got "
                             f"{checkpoint_sec!r}")
        self.checkpoint_sec = float(checkpoint_sec)
        self._last_checkpoint = -math.inf
        self.folder: Path | None = None
        self.n_phrases = 0
        self._spool: Path | None = None
        self._last_end_sec = -math.inf
        self.markers: list[tuple[float, str]] = []
        self.path: Path | None = None
        self._now = -math.inf
        self._stop_at: float | None = None
        self._closed = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._checkpoint: concurrent.futures.Future | None = None
        self._growing: GrowingMidi | None = None  # the checkpoints' file, in the worker
        self._spool_read = (0, 0)  # (bytes, lines) of the spool the checkpoints have read

    def open(self, folder: Path) -> None:
        """Files go to ``folder`` (an earlier spool there is replaced)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._spool = self.folder / SPOOL_NAME
        self._spool.write_text("", encoding="utf-8")
        self._growing = GrowingMidi(self.folder / PARTS_DIR_NAME, TICKS_PER_QUARTER)
        self._spool_read = (0, 0)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="session-mid-checkpoint")

    def phrase(self, index: int, playing: Playing, knobs: Knobs) -> None:
        """Spool the phrase; rewrite the file so far when a checkpoint is due."""
        if self.folder is None or self._spool is None:
            raise RuntimeError("session-mid: phrase() before open()")
        record = MidiPhrase.of(playing)
        with open(self._spool, "a", encoding="utf-8") as f:
            f.write(record.to_json() + "\n")
        self.n_phrases += 1
        self._last_end_sec = record.end_sec
        self._seen(playing.start_sec)
        due = playing.start_sec - self._last_checkpoint >= self.checkpoint_sec
        if due and (self._checkpoint is None or self._checkpoint.done()):
            if self._checkpoint is not None:
                self._checkpoint.result()  # a failed write fails this output
            assert self._pool is not None
            self._last_checkpoint = playing.start_sec
            self._checkpoint = self._pool.submit(self._write_checkpoint, self.n_phrases,
                                                 list(self.markers))

    def _write_checkpoint(self, n_phrases: int, markers: list[tuple[float, str]]) -> None:
        """``session.mid`` with the first ``n_phrases`` spooled (in the worker): the
        phrases spooled since the last checkpoint are added to the growing file, which
        is written; if that cannot be (phrases out of order), from the whole spool."""
        assert self.folder is not None
        path = self.folder / "session.mid"
        if self._growing is not None:
            try:
                for record in self._read_new(n_phrases):
                    self._growing.add(record)
                if self._growing.n_phrases:
                    self._growing.write(path, markers)
                return
            except ValueError as e:
                logger.warning("session-mid: checkpoints write the whole file from now on "
                               "(%s)", e)
                self._growing.remove()
                self._growing = None
        write_session_midi(path, self.spooled(n_phrases), None, markers)

    def _read_new(self, n_phrases: int) -> list[MidiPhrase]:
        """The spool's records from where the last checkpoint stopped to line
        ``n_phrases`` (a line that does not parse is logged and left out)."""
        assert self._spool is not None
        pos, lines = self._spool_read
        out: list[MidiPhrase] = []
        with open(self._spool, "rb") as f:
            f.seek(pos)
            while lines < n_phrases:
                line = f.readline()
                if not line:
                    break
                pos, lines = pos + len(line), lines + 1
                try:
                    out.append(MidiPhrase.from_json(line.decode("utf-8")))
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    logger.warning("session-mid: line %d of %s is not a phrase record, "
                                   "left out (%s)", lines, self._spool, e)
        self._spool_read = (pos, lines)
        return out

    def wait(self) -> None:
        """Block until the checkpoint being written (if any) is on disk (raises its
        error)."""
        if self._checkpoint is not None:
            self._checkpoint.result()

    def spooled(self, limit: int | None = None) -> list[MidiPhrase]:
        """Every phrase spooled so far (or the first ``limit``), read back from the spool
        file, in order (a line that does not parse, such as one cut short by a full disk,
        is logged and left out)."""
        if self._spool is None or not self._spool.is_file():
            return []
        out: list[MidiPhrase] = []
        with open(self._spool, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if limit is not None and n > limit:
                    break  # a phrase the loop is appending now
                try:
                    out.append(MidiPhrase.from_json(line))
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    logger.warning("session-mid: line %d of %s is not a phrase record, "
                                   "left out (%s)", n, self._spool, e)
        return out

    def state(self, t_sec: float, state: EmotionState | None, knobs: Knobs) -> None:
        """Note the session time."""
        self._seen(t_sec)

    def marker(self, t_sec: float | None, text: str) -> None:
        """Keep the marker (a MIDI marker in track 0); a ``stop`` marker cuts the music."""
        t = self._now if t_sec is None else float(t_sec)
        self._seen(t)
        self.markers.append((t if math.isfinite(t) else 0.0, text))
        if (text.split() or [""])[0].lower().rstrip(":,.") == "stop" and self._stop_at is None:
            self._stop_at = t

    def close(self, reason: str) -> None:
        """Write the final ``session.mid``."""
        if self._closed or self.folder is None:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the checkpoint being written, if any
            self._pool = None
            if self._checkpoint is not None and self._checkpoint.exception() is not None:
                logger.warning("session-mid: a checkpoint failed (%s); writing the final "
                               "file", self._checkpoint.exception())
        cut = None
        if self._stop_at is not None:
            cut = self._stop_at
        elif reason != "time up" and math.isfinite(self._now):
            cut = self._now
        if cut is not None and cut >= self._last_end_sec:
            cut = None
        played = self.spooled()
        self.path = write_session_midi(self.folder / "session.mid", played, cut,
                                       self.markers)
        if self._spool is not None:
            self._spool.unlink(missing_ok=True)  # session.mid holds every phrase now
        if self._growing is not None:
            self._growing.remove()
            self._growing = None

    def _seen(self, t: float | None) -> None:
        if t is not None and math.isfinite(t):
            self._now = max(self._now, float(t))
