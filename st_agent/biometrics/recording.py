"""Crash-safe, append-only session recordings; reading them back; export; deletion.

A session folder holds three files, each written only by appending (the meta
file is replaced atomically):

``session.json``
    :class:`SessionMeta` (pseudonymous subject id, consent record, channels,
    sampling rate, software version, encryption flag and key fingerprint), the
    authentication of the consent record (``consent_auth``,
    :mod:`~st_agent.biometrics.consent_auth`), the recording parameters, and a
    ``closed`` block written by :meth:`SessionRecorder.close`
    (absent after a crash: the reader then says the session was not closed cleanly).
``samples.seg``
    Raw samples in self-delimiting segments of at most one second (0.5 s by
    default), each with a sequence number and CRC32, written with a single
    ``write`` and ``fsync``-ed.
``events.jsonl``
    One JSON object per line, ``fsync``-ed per line.

The byte layout of both is in :mod:`st_agent.biometrics.segments`.

After ``kill -9`` at any moment the folder opens without repair: the reader
skips a segment that is incomplete or fails its checksum (never touching the
file), keeps every one that verifies, ignores a torn last event line, and
reports what it dropped. At most the samples buffered since the last write are
lost: under ``flush_sec`` (0.5 s by default) of samples.

Privacy: subject ids are pseudonyms (letters and digits with at least one
digit, random by default), file names carry no names, the EDF header carries
only the pseudonym, files are created ``0600`` in a ``0700`` folder, and a key
for encryption at rest lives in a key file that must not be inside the session
folder. Deleting the key file makes an encrypted session unreadable
("crypto-shredding"), which is the only dependable erase on SSDs and journaling
file systems.

Nothing here unpickles anything: samples are raw little-endian floats read with
``np.frombuffer`` and everything else is JSON.

This module holds the writer, :class:`SessionRecorder`, and re-exports the rest:
:mod:`~st_agent.biometrics.session_meta` (:class:`SessionMeta`, consent, errors,
file names), :mod:`~st_agent.biometrics.crypto` (key files),
:mod:`~st_agent.biometrics.segments` (the file formats),
:mod:`~st_agent.biometrics.session_reader` (:func:`read_session`) and
:mod:`~st_agent.biometrics.export` (EDF/FIF/BIDS, deletion). Importing it loads
neither MNE nor ``cryptography``; they load when used.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.biometrics.consent_auth import CONSENT_AUTH_FIELD, try_seal_consent
from st_agent.biometrics.crypto import (
    aead_for,
    create_key_file,
    default_key_file,
    key_id,
    load_key_file,
    resolve_key,
)
from st_agent.biometrics.export import (
    DeleteConfig,
    ExportConfig,
    delete_session,
    export_session,
    run_delete,
    run_export,
)
from st_agent.biometrics.segments import (
    DropReport,
    encode_event_line,
    encode_segment,
    fsync_dir,
    sample_dtype,
    segment_flags,
    write_all,
    write_json_atomic,
)
from st_agent.biometrics.session_meta import (
    CONSENT_SCOPES,
    DTYPES,
    EVENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    SAMPLES_FILE,
    ConsentRecord,
    DiskFullError,
    EncryptionKeyError,
    RecordingError,
    SessionMeta,
    new_pseudonym,
    new_session_id,
    utc_now_iso,
)
from st_agent.biometrics.session_reader import Session, is_session, read_events, read_session
from st_agent.types import EmotionState, Knobs, MusicFeatures, Phrase, SignalChunk

__all__ = [
    "CONSENT_SCOPES",
    "ConsentRecord",
    "DeleteConfig",
    "DiskFullError",
    "DropReport",
    "EncryptionKeyError",
    "ExportConfig",
    "RecordingError",
    "Session",
    "SessionMeta",
    "SessionRecorder",
    "create_key_file",
    "default_key_file",
    "delete_session",
    "export_session",
    "is_session",
    "load_key_file",
    "new_pseudonym",
    "new_session_id",
    "read_events",
    "read_session",
    "run_delete",
    "run_export",
]

logger = logging.getLogger(__name__)

_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# --------------------------------------------------------------------------- writer


class SessionRecorder:
    """Write a session crash-safely: samples in ~1 s segments, events as JSON Lines.

    Every segment and every event is written with one ``write`` call and
    ``fsync``-ed before the call returns. Samples are buffered until they fill a
    segment of ``segment_sec`` or span ``flush_sec`` (whichever first), or until
    the oldest buffered sample has waited ``flush_sec`` of wall-clock time (checked
    at each :meth:`write_chunk` and :meth:`write_event`); so after ``kill -9`` (or
    a power cut) at most ``flush_sec`` of samples (plus the chunk being handed
    over) are lost, and the folder reads without repair.

    Disk full: when a write fails with ENOSPC, EFBIG or EDQUOT the recorder cuts
    off the partial record, logs an error, tries to add a ``recording_stopped``
    event, and raises :class:`DiskFullError` (other I/O errors: the same, with
    :class:`RecordingError`). It is then stopped
    (:attr:`active` is False, :attr:`stop_reason` says why); later writes raise
    :class:`RecordingError`, and :meth:`close` still closes cleanly. Everything
    written before stays readable. A live session should catch
    :class:`RecordingError`, tell the user, and go on without recording.

    Parameters
    ----------
    folder : str or Path
        Session folder to create (must not exist, or be empty); created ``0700``.
    meta : SessionMeta
        Session metadata; its consent must include ``"record"``.
    key : bytes or str or Path or None
        AES-256 key (32 bytes) or key file to encrypt samples and events at
        rest; None records in the clear. A key file must not be inside ``folder``.
    segment_sec : float
        Most seconds per segment, in (0, 1].
    flush_sec : float or None
        Buffered samples are written (as a shorter segment) once they span this
        many seconds or the oldest has waited this long; in (0, ``segment_sec``].
        The most a crash can lose. None: write full segments only (a crash loses
        up to ``segment_sec``). The default 0.5 s keeps the worst loss of a
        real-time session, chunk latency included, under 1 s
        (``benchmarks/bench_crash.py``).
    dtype : {"float32", "float64"} or None
        Sample type on disk; None keeps ``meta.dtype``. float32 keeps about 7
        significant digits (far below EEG noise) at half the size.

    Examples
    --------
    >>> with SessionRecorder(folder, meta) as rec:  # doctest: +SKIP
    ...     for chunk in source:
    ...         rec.write_chunk(chunk)
    ...         rec.write_knobs(knobs, t_sec=chunk.t0_sec)
    """

    def __init__(self, folder: str | Path, meta: SessionMeta, key: bytes | str | Path | None = None,
                 *, segment_sec: float = 1.0, flush_sec: float | None = 0.5,
                 dtype: str | None = None) -> None:
        if not isinstance(meta, SessionMeta):
            raise TypeError(f"meta must be a SessionMeta, got {type(meta).__name__}")
        if not meta.consent.allows("record"):
            raise ValueError(f"consent scopes {meta.consent.scopes} do not include 'record'; "
                             f"recording needs the subject's consent to record")
        if not (isinstance(segment_sec, int | float) and 0 < segment_sec <= 1.0):
            raise ValueError(f"segment_sec must be in (0, 1] seconds, got {segment_sec!r}")
        if flush_sec is not None and not (isinstance(flush_sec, int | float)
                                          and 0 < flush_sec <= segment_sec):
            raise ValueError(f"flush_sec must be None or in (0, segment_sec={segment_sec}] "
                             f"seconds, got {flush_sec!r}")
        dtype = meta.dtype if dtype is None else dtype
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.folder = Path(folder)
        key_bytes = resolve_key(key, self.folder)
        self._aead = aead_for(key_bytes) if key_bytes is not None else None
        self.meta = replace(
            meta, encrypted=key_bytes is not None,
            key_id=key_id(key_bytes) if key_bytes is not None else None,
            dtype=dtype, segment_samples=max(1, round(meta.sfreq * segment_sec)),
        )
        self._consent_auth = try_seal_consent(self.meta, key_bytes)
        self._dtype = sample_dtype(dtype)
        self.flush_sec = None if flush_sec is None else float(flush_sec)
        self._flush_samples = (None if flush_sec is None
                               else max(1, round(meta.sfreq * flush_sec)))
        self._clock = time.monotonic  # seconds; tests may replace it
        self._buf_since = 0.0  # self._clock() when the oldest buffered sample came
        self._flags = segment_flags(self._aead is not None, dtype)
        self._sid = self.meta.session_id.encode("ascii")
        self._lock = threading.Lock()
        self._buf: list[np.ndarray] = []
        self._buf_n = 0
        self._buf_first: int | None = None  # stream index of the first buffered column
        self._buf_t0 = 0.0
        self._next_sample: int | None = None  # stream index expected next
        self._offset = 0  # added to source first_sample after a backward jump
        self._last_t_end = 0.0
        self._seg_seq = 0
        self._evt_seq = 0
        self._n_written = 0
        self._seg_fd = -1
        self._evt_fd = -1
        self.stop_reason: str | None = None
        self.closed = False
        #: Seconds each segment took to write and fsync (the latest 10,000).
        self.segment_write_sec: deque[float] = deque(maxlen=10_000)
        self._open_files()

    @classmethod
    def open(cls, folder: str | Path, meta: SessionMeta, key: bytes | str | Path | None = None,
             **kwargs: Any) -> SessionRecorder:
        """Create the session folder and start recording; same as the constructor."""
        return cls(folder, meta, key, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------

    def _open_files(self) -> None:
        folder = self.folder
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"session folder {folder} exists and is not empty; "
                                  f"record each session into a new folder")
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_json_atomic(folder / META_FILE, self._meta_doc(closed=None))
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._seg_fd = os.open(folder / SAMPLES_FILE, flags, 0o600)
            self._evt_fd = os.open(folder / EVENTS_FILE, flags, 0o600)
            fsync_dir(folder)
        except OSError as e:
            self._close_fds()
            if e.errno in _DISK_FULL:
                raise DiskFullError(f"cannot start recording in {folder}: disk full "
                                    f"({errno.errorcode.get(e.errno, e.errno)})") from e
            raise
        logger.info("recording session %s (subject %s) to %s%s", self.meta.session_id,
                    self.meta.subject_id, folder, ", encrypted" if self._aead else "")

    def _meta_doc(self, closed: dict[str, Any] | None) -> dict[str, Any]:
        auth = {} if self._consent_auth is None else {CONSENT_AUTH_FIELD: self._consent_auth}
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "meta": self.meta.to_json(), "closed": closed, **auth}

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("stopped" if self.stop_reason else "recording")
        return (f"SessionRecorder({str(self.folder)!r}, {state}, "
                f"{self._n_written} samples in {self._seg_seq} segments)")

    @property
    def active(self) -> bool:
        """True while writes are accepted (not closed, not stopped by an error)."""
        return not self.closed and self.stop_reason is None

    @property
    def n_samples_written(self) -> int:
        """Samples per channel durably on disk (in written segments)."""
        return self._n_written

    @property
    def n_samples_buffered(self) -> int:
        """Samples per channel waiting for the next segment (lost on a crash)."""
        return self._buf_n

    def close(self) -> None:
        """Write the buffered tail as a last (short) segment, finish the meta, close files.

        Safe to call twice and after the recorder stopped on an error.
        """
        with self._lock:
            if self.closed:
                return
            if self.stop_reason is None:
                try:
                    self._flush_buffer()
                except RecordingError:
                    logger.exception("could not write the last segment")
            self._close_fds()
            self.closed = True
            closed = {"closed_utc": utc_now_iso(), "n_samples": self._n_written,
                      "n_segments": self._seg_seq, "n_events": self._evt_seq,
                      "stop_reason": self.stop_reason}
            try:
                write_json_atomic(self.folder / META_FILE, self._meta_doc(closed))
            except OSError as e:
                logger.error("could not mark session %s closed (%s); it still reads, as "
                             "not closed cleanly", self.folder, e)
            logger.info("closed session %s: %d samples, %d segments, %d events%s",
                        self.meta.session_id, self._n_written, self._seg_seq, self._evt_seq,
                        f"; stopped early: {self.stop_reason}" if self.stop_reason else "")

    def _close_fds(self) -> None:
        for name in ("_seg_fd", "_evt_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def _check_active(self) -> None:
        if self.closed:
            raise RecordingError(f"recorder for {self.folder} is closed")
        if self.stop_reason is not None:
            raise RecordingError(f"recording to {self.folder} stopped: {self.stop_reason}")

    # -- samples -----------------------------------------------------------------------------

    def write_chunk(self, chunk: SignalChunk) -> None:
        """Buffer a chunk; write every full segment and a due flush (fsync-ed first).

        A jump forward in ``chunk.first_sample`` flushes the buffer and records a
        ``gap`` event; a jump backward (a source that restarted its count) records
        a ``discontinuity`` event and the chunk is placed right after the
        previous one.

        Parameters
        ----------
        chunk : SignalChunk
            Samples, shape (n_channels, n_times), with the meta's sampling rate,
            channel names and types. NaN samples are recorded as NaN.

        Raises
        ------
        ValueError
            If the chunk does not match the session's sfreq or channels.
        DiskFullError
            If the disk filled up; the recording stops, what was written is kept.
        RecordingError
            If the recorder is closed or already stopped.
        """
        self._check_chunk(chunk)
        with self._lock:
            self._check_active()
            if chunk.n_times == 0:
                return
            first = self._place(chunk)
            if self._buf_n == 0:
                self._buf_first, self._buf_t0 = first, chunk.t0_sec
                self._buf_since = self._clock()
            self._buf.append(np.array(chunk.data, dtype=self._dtype))  # a copy: sources may reuse
            self._buf_n += chunk.n_times
            self._next_sample = first + chunk.n_times
            self._last_t_end = chunk.t0_sec + chunk.duration_sec
            if self._buf_n >= self.meta.segment_samples:
                self._write_full_segments()
            self._flush_if_due()

    def _flush_if_due(self) -> None:
        """Write the buffer once it spans ``flush_sec`` or its oldest sample waited that long."""
        if self._flush_samples is None or not self._buf_n:
            return
        if self._buf_n >= self._flush_samples or \
                self._clock() - self._buf_since >= self.flush_sec:
            self._flush_buffer()

    def _check_chunk(self, chunk: SignalChunk) -> None:
        """Refuse a chunk of another stream (type, sampling rate, channels)."""
        if not isinstance(chunk, SignalChunk):
            raise TypeError(f"chunk must be a SignalChunk, got {type(chunk).__name__}")
        m = self.meta
        if not math.isclose(chunk.sfreq, m.sfreq, rel_tol=1e-9):
            raise ValueError(f"chunk.sfreq is {chunk.sfreq} Hz but the session records "
                             f"{m.sfreq} Hz")
        if chunk.ch_names != m.ch_names or chunk.ch_types != m.ch_types:
            raise ValueError(f"chunk channels {chunk.ch_names} of types {chunk.ch_types} differ "
                             f"from the session's {m.ch_names} of types {m.ch_types}")

    def _place(self, chunk: SignalChunk) -> int:
        """Stream index at which ``chunk`` is recorded; a jump is a gap or a discontinuity."""
        first = chunk.first_sample + self._offset
        if self._next_sample is None or first == self._next_sample:
            return first
        if first > self._next_sample:
            n_missing = first - self._next_sample
            self._flush_buffer()
            self._write_event_locked("gap", self._last_t_end, {
                "first_missing_sample": self._next_sample, "n_missing": n_missing,
                "source": "recorder"})
            logger.warning("gap of %d samples before sample %d", n_missing, first)
            return first
        self._offset += self._next_sample - first
        self._write_event_locked("discontinuity", chunk.t0_sec, {
            "source_first_sample": chunk.first_sample,
            "placed_at_sample": self._next_sample})
        logger.warning("source sample count went back to %d; recording it as "
                       "continuing at sample %d", chunk.first_sample, self._next_sample)
        return self._next_sample

    def _write_full_segments(self) -> None:
        """Write every full segment in the buffer; keep the rest buffered."""
        seg, sfreq = self.meta.segment_samples, self.meta.sfreq
        data = np.concatenate(self._buf, axis=1) if len(self._buf) > 1 else self._buf[0]
        n_full = (self._buf_n // seg) * seg
        for start in range(0, n_full, seg):
            self._write_segment(data[:, start:start + seg], self._buf_first + start,
                                self._buf_t0 + start / sfreq)
        rest = data[:, n_full:]
        self._buf_first += n_full
        self._buf_t0 += n_full / sfreq
        self._buf = [rest] if rest.shape[1] else []
        self._buf_n = rest.shape[1]
        self._buf_since = self._clock()

    def _flush_buffer(self) -> None:
        if self._buf_n:
            data = np.concatenate(self._buf, axis=1)
            self._write_segment(data, self._buf_first, self._buf_t0)
            self._buf, self._buf_n = [], 0

    def _write_segment(self, data: np.ndarray, first_sample: int, t0_sec: float) -> None:
        """Append one segment record; data shape (n_channels, n_times)."""
        t_start = time.perf_counter()
        record = encode_segment(data, seq=self._seg_seq, first_sample=first_sample,
                                t0_sec=t0_sec, dtype=self._dtype, flags=self._flags,
                                aead=self._aead, session_id=self._sid)
        self._append(self._seg_fd, record, "samples")
        self._seg_seq += 1
        self._n_written += data.shape[1]
        self.segment_write_sec.append(time.perf_counter() - t_start)

    def _append(self, fd: int, record: bytes, what: str) -> None:
        """Write and fsync ``record``; on any failure cut the partial record and stop.

        A full disk (ENOSPC, EFBIG, EDQUOT) raises :class:`DiskFullError`; other
        I/O errors raise :class:`RecordingError`. Either way the recording stops,
        since a retry could duplicate or reorder records.
        """
        size_before = os.fstat(fd).st_size
        try:
            write_all(fd, record)
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size_before)  # frees space; needs none
            code = errno.errorcode.get(e.errno, str(e.errno))
            full = e.errno in _DISK_FULL
            self._stop(f"{'disk full' if full else 'write failed'} ({code}: {e.strerror}) "
                       f"while writing {what}")
            raise (DiskFullError if full else RecordingError)(
                f"{'disk full' if full else f'cannot write ({e.strerror})'} while recording "
                f"to {self.folder}: recording stopped; {self._n_written} samples per channel "
                f"and {self._evt_seq} events kept"
            ) from e

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        logger.error("recording %s stopped: %s; %d samples per channel kept, %d buffered "
                     "samples lost", self.folder, reason, self._n_written, self._buf_n)
        self._buf, self._buf_n = [], 0
        # Best effort: say so in the events file (may fail too, if it is that file).
        size_before = -1
        try:
            size_before = os.fstat(self._evt_fd).st_size
            line = self._event_line("recording_stopped", self._last_t_end,
                                    {"reason": reason, "n_samples": self._n_written})
            write_all(self._evt_fd, line)
            os.fsync(self._evt_fd)
            self._evt_seq += 1
        except OSError:
            if size_before >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._evt_fd, size_before)

    # -- events ------------------------------------------------------------------------------

    def write_event(self, kind: str, t_sec: float | None = None, **payload: Any) -> None:
        """Append one event to ``events.jsonl`` (fsync-ed before returning).

        Parameters
        ----------
        kind : str
            Lower-case word: ``knobs``, ``phrase``, ``state``, ``gap``,
            ``reconnect``, ``dropped``, ``end``, ``marker``, ``note``...
        t_sec : float or None
            Time on the source clock (the clock of ``SignalChunk.t0_sec``);
            None = the end of the last chunk written.
        **payload
            JSON-serialisable values (numbers, strings, lists, dicts, numpy
            scalars/arrays, dataclasses).

        Raises
        ------
        ValueError
            If ``kind`` is not a lower-case word or ``t_sec`` is not finite.
        DiskFullError, RecordingError
            As :meth:`write_chunk`.
        """
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise ValueError(f"kind must be a lower-case word like 'marker' (a-z, 0-9, _), "
                             f"got {kind!r}")
        if t_sec is not None and not math.isfinite(t_sec):
            raise ValueError(f"t_sec must be finite, got {t_sec!r}")
        with self._lock:
            self._check_active()
            self._flush_if_due()
            self._write_event_locked(kind, t_sec, payload)

    def _event_line(self, kind: str, t_sec: float | None, payload: dict[str, Any]) -> bytes:
        doc = {"seq": self._evt_seq,
               "t_sec": float(self._last_t_end if t_sec is None else t_sec),
               "kind": kind, "wall_unix": round(time.time(), 6), "payload": payload}
        return encode_event_line(doc, self._aead, self._sid)

    def _write_event_locked(self, kind: str, t_sec: float | None,
                            payload: dict[str, Any]) -> None:
        line = self._event_line(kind, t_sec, payload)
        self._append(self._evt_fd, line, "events")
        self._evt_seq += 1

    def write_knobs(self, knobs: Knobs, t_sec: float | None = None) -> None:
        """Record the knobs the controller chose (event kind ``knobs``)."""
        if not isinstance(knobs, Knobs):
            raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
        self.write_event("knobs", t_sec, valence=knobs.valence, tempo=knobs.tempo,
                         energy=knobs.energy)

    def write_phrase(self, phrase: Phrase, t_sec: float | None = None,
                     duration_sec: float | None = None,
                     features: MusicFeatures | None = None) -> None:
        """Record a phrase that starts playing (event kind ``phrase``, ABC text included).

        ``features`` (the :class:`MusicFeatures` measured from its rendered MIDI)
        is stored as the ``features`` payload, a dict of its fields; fitting a
        listener (:mod:`st_agent.listener.fitting`) needs it.
        """
        if not isinstance(phrase, Phrase):
            raise TypeError(f"phrase must be a Phrase, got {type(phrase).__name__}")
        payload: dict[str, Any] = {"abc": phrase.abc, "knobs": phrase.knobs, "key": phrase.key,
                                   "meter": phrase.meter, "bars": phrase.bars,
                                   "bpm": phrase.bpm}
        if duration_sec is not None:
            payload["duration_sec"] = float(duration_sec)
        if features is not None:
            if not isinstance(features, MusicFeatures):
                raise TypeError(f"features must be MusicFeatures, got "
                                f"{type(features).__name__}")
            payload["features"] = features.as_dict()
        self.write_event("phrase", t_sec, **payload)

    def write_state(self, state: EmotionState) -> None:
        """Record an estimated state (event kind ``state``, at ``state.t_sec``)."""
        if not isinstance(state, EmotionState):
            raise TypeError(f"state must be an EmotionState, got {type(state).__name__}")
        self.write_event("state", state.t_sec, valence=state.valence, arousal=state.arousal,
                         confidence=state.confidence)

    def write_marker(self, label: str, t_sec: float | None = None, **payload: Any) -> None:
        """Record a user or experiment marker (event kind ``marker``)."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"label must be a non-empty string, got {label!r}")
        self.write_event("marker", t_sec, label=label, **payload)

    def write_source_event(self, event: Any) -> None:
        """Record a source's ``SourceEvent`` (kind ``gap``, ``reconnect``, ``dropped``, ``end``).

        Parameters
        ----------
        event : SourceEvent
            Any object with ``kind``, ``t_sec`` and optional ``first_missing_sample``,
            ``n_missing`` and ``detail`` attributes.
        """
        payload = {name: getattr(event, name) for name in
                   ("first_missing_sample", "n_missing", "detail")
                   if getattr(event, name, None) is not None}
        payload["source"] = "source"
        self.write_event(str(event.kind), float(event.t_sec), **payload)
