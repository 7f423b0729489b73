"""Read a recorded session folder back, without modifying any of its files.

:func:`read_session` returns a :class:`Session`: the samples as an MNE
``RawArray`` (gaps NaN and annotated), the events table, the metadata and a
:class:`~st_agent.biometrics.segments.DropReport` of what could not be read
(after a crash: at most the last, incomplete segment). MNE is imported only
when a session with samples is read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_agent.biometrics.crypto import aead_for, default_key_file, key_id, resolve_key
from st_agent.biometrics.segments import (
    DropReport,
    Segment,
    decode_event_line,
    scan_segments,
)
from st_agent.biometrics.session_meta import (
    EVENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    SAMPLES_FILE,
    EncryptionKeyError,
    RecordingError,
    SessionMeta,
)

if TYPE_CHECKING:
    import mne

__all__ = ["Session", "is_session", "read_session"]

logger = logging.getLogger(__name__)

# MNE has no "ppg" or "eda" channel types; these are its nearest ones ("bio" would be
# taken as volts and scaled to µV on EDF export).
_MNE_CH_TYPE = {"ppg": "misc", "eda": "gsr"}  # ppg is in arbitrary units, not volts


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
        last. Gaps are NaN and annotated ``BAD_gap``; runs of NaN inside recorded
        segments are annotated ``BAD_nan``; events are annotations (see
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
    FileNotFoundError
        If ``folder`` does not exist or holds no ``session.json``.
    RecordingError
        If ``session.json`` is not JSON, not a recording's, or of another format version.
    """
    path = folder / META_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"session folder {folder} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{folder} is not a session folder: no {META_FILE}") from e
    except json.JSONDecodeError as e:
        raise RecordingError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise RecordingError(f"{path} is not an {FORMAT_NAME} meta file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise RecordingError(f"{path} has format version {doc.get('format_version')!r}; this "
                             f"software reads version {FORMAT_VERSION}")
    return doc


def is_session(folder: str | Path) -> bool:
    """Whether ``folder`` holds a recording (a valid ``session.json``)."""
    try:
        load_meta_doc(Path(folder))
    except (FileNotFoundError, RecordingError):
        return False
    return True


def _read_events(path: Path, meta: SessionMeta, aead: Any
                 ) -> tuple[list[dict[str, Any]], int]:
    """Rows of ``events.jsonl`` and the number of bad lines (a torn last line included)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return rows, 0
    sid = meta.session_id.encode("ascii")
    for i, line in enumerate(raw_lines):
        if not line.strip():
            continue
        try:
            rows.append(decode_event_line(line, aead, sid))
        except (ValueError, KeyError, TypeError) as e:
            bad += 1
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
            f"{meta.key_id}, the key given has id {key_id(key_bytes)}")
    return aead_for(key_bytes)


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
        logger.warning("session %s: reading stopped at the last good segment (%d segments, "
                       "%d samples): %s; %s%d samples dropped; the file was not modified",
                       meta.session_id, report.n_segments, report.n_samples, report.reason,
                       "about " if report.approximate else "", report.dropped_samples)
    if not report.closed_cleanly:
        logger.info("session %s was not closed cleanly (crash or still recording)",
                    meta.session_id)


def read_session(folder: str | Path, key: bytes | str | Path | None = None) -> Session:
    """Read a session folder back, without modifying any of its files.

    Reading stops at the first segment that is incomplete, fails its checksum
    or authentication, or is out of order; the samples after it are counted in
    ``Session.dropped`` and a warning is logged. A torn last event line is
    skipped.

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
    FileNotFoundError
        If ``folder`` is not a session folder.
    EncryptionKeyError
        If the session is encrypted and no key or another key was given.
    """
    folder = Path(folder)
    doc = load_meta_doc(folder)
    meta = SessionMeta.from_json(doc["meta"])
    aead = _session_aead(meta, key, folder)
    seg_path = folder / SAMPLES_FILE
    buf = seg_path.read_bytes() if seg_path.exists() else b""
    segments, report = scan_segments(buf, meta, aead)
    del buf
    events, report.bad_event_lines = _read_events(folder / EVENTS_FILE, meta, aead)
    _finish_report(report, doc, events, meta)

    first_sample = segments[0][0] if segments else 0
    t0 = segments[0][1] if segments else (events[0]["t_sec"] if events else 0.0)
    for row in events:
        row["onset_sec"] = row["t_sec"] - t0
    raw = _build_raw(meta, segments, events) if segments else None
    if raw is None:
        logger.info("session %s has no recorded samples", meta.session_id)
    return Session(folder=folder, meta=meta, raw=raw, events=events, dropped=report,
                   first_sample=first_sample, t0_sec=t0)


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


def _annotations(data: np.ndarray, covered: np.ndarray, sfreq: float,
                 events: list[dict[str, Any]]) -> tuple[list[float], list[float], list[str]]:
    """Onsets (s), durations (s) and descriptions: gaps, NaN runs, then events."""
    onsets: list[float] = []
    durations: list[float] = []
    descs: list[str] = []
    for mask, desc in ((~covered, "BAD_gap"), (covered & np.isnan(data).any(axis=0), "BAD_nan")):
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
        onsets.append(row["onset_sec"])
        durations.append(float(dur) if isinstance(dur, int | float) and dur >= 0 else 0.0)
        descs.append(desc)
    return onsets, durations, descs


def _build_raw(meta: SessionMeta, segments: list[Segment],
               events: list[dict[str, Any]]) -> mne.io.RawArray:
    import mne

    data, covered = _assemble(meta.n_channels, segments)
    onsets, durations, descs = _annotations(data, covered, meta.sfreq, events)
    ch_types = [_MNE_CH_TYPE.get(t, t) for t in meta.ch_types]
    info = mne.create_info(list(meta.ch_names), meta.sfreq, ch_types, verbose="error")
    info["subject_info"] = {"his_id": meta.subject_id}
    if meta.line_freq is not None:
        info["line_freq"] = meta.line_freq
    info.set_meas_date(datetime.fromisoformat(meta.created_utc).astimezone(timezone.utc))
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(onsets, durations, descs), verbose="error")
    return raw
