"""Read a recorded session folder back, without modifying any of its files.

:func:`read_session` returns a :class:`Session`: the samples as an MNE
``RawArray`` (gaps NaN and annotated), the events table, the metadata and a
:class:`~st_agent.biometrics.segments.DropReport` of what could not be read
(after a crash: at most the last, incomplete segment; after damage: each
corrupt segment alone, see :mod:`~st_agent.biometrics.segment_scan`). MNE is
imported only when a session with samples is read.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_agent.biometrics.crypto import aead_for, default_key_file, key_id, resolve_key
from st_agent.biometrics.segment_scan import first_segment_time, scan_segments
from st_agent.biometrics.segments import (
    DropReport,
    LostSpan,
    Segment,
    decode_event_line,
)
from st_agent.biometrics.session_meta import (
    EVENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    SAMPLES_FILE,
    CorruptSessionError,
    EncryptionKeyError,
    RecordingError,
    SessionMeta,
    SessionNotFoundError,
)

if TYPE_CHECKING:
    import mne

__all__ = ["Session", "is_session", "read_events", "read_session"]

logger = logging.getLogger(__name__)

# MNE has no "ppg" or "eda" channel types; these are its nearest ones ("bio" would be
# taken as volts and scaled to µV on EDF export).
_MNE_CH_TYPE = {"ppg": "misc", "eda": "gsr"}  # ppg is in arbitrary units, not volts
_MAX_META_BYTES = 1 << 20  # session.json is about 1 kB; a larger one is not ours


@dataclass
class Session:
    """A recorded session, read back.

    Parameters
    ----------
    folder : Path
        Session folder.
    meta : SessionMeta
        Its metadata.
    raw : mne.io.RawArray or None
        Samples in SI units from the first recorded sample (time 0) to the
        last. Gaps are NaN and annotated ``BAD_gap``; lost (corrupt) segments
        between good ones are NaN and annotated ``BAD_lost``; runs of NaN inside
        recorded segments are annotated ``BAD_nan``; events are annotations (see
        :func:`read_session`). None when no sample was recorded.
    events : list of dict
        One row per event: ``seq``, ``kind``, ``t_sec`` (source clock),
        ``onset_sec`` (seconds from the first sample of ``raw``), ``wall_unix``
        and ``payload`` (a dict).
    dropped : DropReport
        What could not be read.
    first_sample : int
        Stream index of ``raw``'s first column.
    t0_sec : float
        Source-clock time of ``raw``'s first column.
    """

    folder: Path
    meta: SessionMeta
    raw: mne.io.RawArray | None
    events: list[dict[str, Any]]
    dropped: DropReport
    first_sample: int = 0
    t0_sec: float = 0.0

    @property
    def n_times(self) -> int:
        """Samples per channel in ``raw`` (gaps included)."""
        return 0 if self.raw is None else self.raw.n_times


def load_meta_doc(folder: Path) -> dict[str, Any]:
    """The parsed ``session.json`` of ``folder``, its format checked.

    Raises
    ------
    SessionNotFoundError
        If ``folder`` does not exist or holds no ``session.json`` (a
        ``FileNotFoundError``).
    CorruptSessionError
        If ``session.json`` is not JSON, too large, not a recording's, of another
        format version, or its ``closed`` block is malformed.
    """
    path = folder / META_FILE
    if not folder.is_dir():
        raise SessionNotFoundError(f"session folder {folder} does not exist")
    try:
        if path.stat().st_size > _MAX_META_BYTES:
            raise CorruptSessionError(f"{path} is {path.stat().st_size} bytes; a session's "
                                      f"meta file is at most {_MAX_META_BYTES}")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SessionNotFoundError(f"{folder} is not a session folder: no {META_FILE}") from e
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptSessionError(f"{path} is not valid UTF-8 JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CorruptSessionError(f"{path} is not an {FORMAT_NAME} meta file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CorruptSessionError(f"{path} has format version "
                                  f"{doc.get('format_version')!r:.40}; this software reads "
                                  f"version {FORMAT_VERSION}")
    closed = doc.get("closed")
    if closed is not None and not (isinstance(closed, dict) and isinstance(
            closed.get("stop_reason"), str | None)):
        raise CorruptSessionError(f"{path}: field 'closed' must be null or an object whose "
                                  f"stop_reason is null or a string, got {closed!r:.80}")
    return doc


def is_session(folder: str | Path) -> bool:
    """Whether ``folder`` holds a recording (a valid ``session.json``)."""
    try:
        SessionMeta.from_json(load_meta_doc(Path(folder)).get("meta"))
    except (FileNotFoundError, RecordingError, OSError):
        return False
    return True


def _read_events(path: Path, meta: SessionMeta, aead: Any
                 ) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of ``events.jsonl`` and the number of bad lines (a torn last line included)."""
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return rows, bad
    sid = meta.session_id.encode("ascii")
    for i, line in enumerate(raw_lines):
        if not line.strip():
            continue
        try:
            rows.append(decode_event_line(line, aead, sid))
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            bad.append(i + 1)
            last = i == len(raw_lines) - 1
            logger.warning("%s line %d %s: %s", path.name, i + 1,
                           "is torn (crash while writing)" if last else "is bad", e)
    return rows, bad


def _annotation_desc(row: dict[str, Any]) -> str | None:
    kind, p = row["kind"], row["payload"]
    if kind in ("gap", "dropped"):
        return None  # missing samples are annotated from the sample coverage, as BAD_gap
    if kind == "marker" and p.get("label"):
        return f"marker/{p['label']}"
    return kind


def _session_aead(meta: SessionMeta, key: bytes | str | Path | None, folder: Path) -> Any:
    """The cipher of an encrypted session (None in the clear), the key checked."""
    key_bytes = resolve_key(key, folder)
    if not meta.encrypted:
        if key_bytes is not None:
            logger.info("session %s is not encrypted; the key is not needed", meta.session_id)
        return None
    if key_bytes is None:
        raise EncryptionKeyError(
            f"session {meta.session_id} is encrypted (key id {meta.key_id}); pass its key "
            f"or key file (by default {default_key_file(meta.session_id)})")
    if key_id(key_bytes) != meta.key_id:
        raise EncryptionKeyError(
            f"wrong key for session {meta.session_id}: it was encrypted with key id "
            f"{meta.key_id}, the key given has id {key_id(key_bytes)}; pass the key file it "
            f"was recorded with (a key file's \"key_id\" field names its key)")
    return aead_for(key_bytes)


def _open_session(folder: Path, key: bytes | str | Path | None
                  ) -> tuple[dict[str, Any], SessionMeta, Any]:
    """``session.json`` parsed and checked, its metadata, and the session's cipher."""
    doc = load_meta_doc(folder)
    meta = SessionMeta.from_json(doc.get("meta"), source=str(folder / META_FILE))
    return doc, meta, _session_aead(meta, key, folder)


def _finish_report(report: DropReport, doc: dict[str, Any], events: list[dict[str, Any]],
                   meta: SessionMeta) -> None:
    """Fill in how the recording ended, and log what reading could not use."""
    closed = doc.get("closed")
    report.closed_cleanly = closed is not None
    report.stop_reason = (closed or {}).get("stop_reason")
    if report.stop_reason is None:
        report.stop_reason = next((r["payload"].get("reason") for r in events
                                   if r["kind"] == "recording_stopped"), None)
    if report.reason:
        logger.warning("session %s: kept %d good segments (%d samples); %s%d samples in "
                       "%d span(s) could not be read (the file was not modified): %s",
                       meta.session_id, report.n_segments, report.n_samples,
                       "about " if report.approximate else "", report.dropped_samples,
                       len(report.lost), "; ".join(str(s) for s in report.lost)
                       or report.reason)
    if not report.closed_cleanly:
        logger.info("session %s was not closed cleanly (crash or still recording)",
                    meta.session_id)


def read_session(folder: str | Path, key: bytes | str | Path | None = None) -> Session:
    """Read a session folder back, without modifying any of its files.

    A segment that is incomplete or fails its checksum or authentication is
    lost alone: reading resynchronises on the next intact segment and keeps
    every one that verifies (a verified segment out of order is refused, an
    exact duplicate skipped). Each lost span (stream index,
    samples, seconds, bytes) is listed in ``Session.dropped.lost`` and a warning
    names them; spans between good segments are NaN in ``raw`` and annotated
    ``BAD_lost``. A torn or bad event line is skipped (its number is in
    ``Session.dropped.bad_event_line_numbers``).

    Annotations of ``raw``: ``BAD_gap`` over stretches no segment covers (NaN
    in the data); ``BAD_nan`` over runs of NaN inside recorded segments; one
    annotation per event at ``onset_sec`` (``t_sec`` minus the source time of
    the first sample), described by its kind (``knobs``, ``phrase``,
    ``state``, ``marker/<label>``, ``reconnect``...; ``gap`` and ``dropped``
    events are covered by ``BAD_gap``), with the event's ``duration_sec`` if it
    has one. Events before the first sample keep a negative ``onset_sec`` in
    the events table but are not annotated.

    Parameters
    ----------
    folder : str or Path
        Session folder.
    key : bytes or str or Path or None
        Key (32 bytes) or key file, for an encrypted session.

    Returns
    -------
    session : Session
        Raw, events, meta and drop report.

    Raises
    ------
    SessionNotFoundError
        If ``folder`` is not a session folder (a ``FileNotFoundError``).
    CorruptSessionError
        If ``session.json`` is malformed or out of range (the message names the
        field, the value and the allowed range), or ``samples.seg`` breaks a bound
        on what it can hold (e.g. a forged ``first_sample`` jump) or holds a
        verified segment out of order.
    EncryptionKeyError
        If the session is encrypted and no key or another key was given.
    """
    folder = Path(folder)
    doc, meta, aead = _open_session(folder, key)
    seg_path = folder / SAMPLES_FILE
    buf = seg_path.read_bytes() if seg_path.exists() else b""
    segments, report = scan_segments(buf, meta, aead, source=str(seg_path))
    del buf
    events, bad_lines = _read_events(folder / EVENTS_FILE, meta, aead)
    report.bad_event_lines, report.bad_event_line_numbers = len(bad_lines), bad_lines
    _finish_report(report, doc, events, meta)

    first_sample = segments[0][0] if segments else 0
    t0 = segments[0][1] if segments else (events[0]["t_sec"] if events else 0.0)
    for row in events:
        row["onset_sec"] = row["t_sec"] - t0
    raw = _build_raw(meta, segments, events, report.lost) if segments else None
    if raw is None:
        logger.info("session %s has no recorded samples", meta.session_id)
    return Session(folder=folder, meta=meta, raw=raw, events=events, dropped=report,
                   first_sample=first_sample, t0_sec=t0)


def read_events(folder: str | Path, key: bytes | str | Path | None = None
                ) -> tuple[SessionMeta, list[dict[str, Any]]]:
    """The metadata and events table of a session, without reading its samples.

    The rows are those of :func:`read_session`'s ``Session.events``, ``onset_sec``
    included (it needs only the first segment that verifies, read through a memory
    map); for what is computed from events alone (a session's metrics, the visuals'
    timeline), at a fraction of the memory of reading hours of samples.

    Parameters
    ----------
    folder : str or Path
        Session folder.
    key : bytes or str or Path or None
        Key (32 bytes) or key file, for an encrypted session.

    Returns
    -------
    meta : SessionMeta
    events : list of dict
        As ``Session.events``.

    Raises
    ------
    SessionNotFoundError, CorruptSessionError, EncryptionKeyError
        As :func:`read_session` for ``session.json`` and the key; the samples are not
        checked beyond the first segment that verifies.
    """
    folder = Path(folder)
    _, meta, aead = _open_session(folder, key)
    events, bad_lines = _read_events(folder / EVENTS_FILE, meta, aead)
    first = None
    seg_path = folder / SAMPLES_FILE
    if seg_path.exists() and seg_path.stat().st_size > 0:
        with seg_path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            first = first_segment_time(buf, meta, aead, source=str(seg_path))
    t0 = first[1] if first is not None else (events[0]["t_sec"] if events else 0.0)
    for row in events:
        row["onset_sec"] = row["t_sec"] - t0
    if bad_lines:
        logger.info("session %s: %d bad event line(s) skipped", meta.session_id, len(bad_lines))
    return meta, events


# --------------------------------------------------------------------------- to MNE


def _nan_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of runs of True in a 1-D bool array."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


def _assemble(n_channels: int, segments: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """Samples from the first segment to the end of the last, NaN where none covers.

    The span is bounded by :func:`~st_agent.biometrics.segment_scan.scan_segments`
    (``MAX_FILL_RATIO``) before this allocates it.

    Returns
    -------
    data : ndarray, shape (n_channels, n_total)
    covered : ndarray of bool, shape (n_total,)
    """
    origin = segments[0][0]
    n_total = segments[-1][0] + segments[-1][2].shape[1] - origin
    data = np.full((n_channels, n_total), np.nan)
    covered = np.zeros(n_total, dtype=bool)
    for first, _, seg in segments:
        i = first - origin
        data[:, i:i + seg.shape[1]] = seg
        covered[i:i + seg.shape[1]] = True
    return data, covered


def _lost_mask(n_total: int, origin: int, lost: list[LostSpan]) -> np.ndarray:
    """True over the lost spans that lie inside ``raw``; shape (n_total,)."""
    mask = np.zeros(n_total, dtype=bool)
    for span in lost:
        start = max(0, span.first_sample - origin)
        stop = min(n_total, span.first_sample - origin + span.n_samples)
        if stop > start:
            mask[start:stop] = True
    return mask


def _annotations(data: np.ndarray, covered: np.ndarray, lost: np.ndarray, sfreq: float,
                 events: list[dict[str, Any]]) -> tuple[list[float], list[float], list[str]]:
    """Onsets (s), durations (s) and descriptions: gaps, lost spans, NaN runs, events."""
    onsets: list[float] = []
    durations: list[float] = []
    descs: list[str] = []
    nan_cols = covered & np.isnan(data).any(axis=0)
    for mask, desc in ((~covered & ~lost, "BAD_gap"), (~covered & lost, "BAD_lost"),
                       (nan_cols, "BAD_nan")):
        for start, stop in _nan_runs(mask):
            onsets.append(start / sfreq)
            durations.append((stop - start) / sfreq)
            descs.append(desc)
    n_total = data.shape[1]
    for row in events:
        desc = _annotation_desc(row)
        if desc is None or not 0 <= row["onset_sec"] <= n_total / sfreq:
            continue
        dur = row["payload"].get("duration_sec", 0.0)
        ok = isinstance(dur, int | float) and math.isfinite(dur) and dur >= 0
        onsets.append(row["onset_sec"])
        durations.append(float(dur) if ok else 0.0)
        descs.append(desc)
    return onsets, durations, descs


def _build_raw(meta: SessionMeta, segments: list[Segment], events: list[dict[str, Any]],
               lost: list[LostSpan]) -> mne.io.RawArray:
    import mne

    data, covered = _assemble(meta.n_channels, segments)
    lost_mask = _lost_mask(data.shape[1], segments[0][0], lost)
    onsets, durations, descs = _annotations(data, covered, lost_mask, meta.sfreq, events)
    ch_types = [_MNE_CH_TYPE.get(t, t) for t in meta.ch_types]
    info = mne.create_info(list(meta.ch_names), meta.sfreq, ch_types, verbose="error")
    info["subject_info"] = {"his_id": meta.subject_id}
    if meta.line_freq is not None:
        info["line_freq"] = meta.line_freq
    info.set_meas_date(datetime.fromisoformat(meta.created_utc).astimezone(timezone.utc))
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(onsets, durations, descs), verbose="error")
    return raw
