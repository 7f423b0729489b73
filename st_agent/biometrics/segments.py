"""On-disk formats of a session's two append-only files, both ways.

``samples.seg``
    Raw samples in segments of about one second. Each segment is one
    self-delimiting record, written with a single ``write`` and ``fsync``-ed::

        offset size  field (little-endian)
        0      4     magic b"STSG"
        4      2     format version (1)
        6      2     flags: bit 0 encrypted, bit 1 float64 (else float32)
        8      8     sequence number, 0, 1, 2, ... (uint64)
        16     8     first_sample: stream index of the first column (uint64)
        24     8     t0_sec: time of the first column on the source clock (float64)
        32     4     n_channels (uint32)
        36     4     n_times (uint32)
        40     4     body_len: bytes of the body (uint32)
        44     4     CRC32 of bytes 0..43
        48     body  samples, shape (n_channels, n_times), C order, '<f4' or '<f8';
                     encrypted: 12-byte nonce + AES-256-GCM ciphertext + 16-byte tag,
                     associated data = b"st-agent-seg" + session id + bytes 0..47
        48+n   4     CRC32 of the body

    NaN samples are stored as they are. Consecutive segments need not be
    contiguous: a jump in ``first_sample`` is a gap.
``events.jsonl``
    One JSON object per line, ``fsync``-ed per line:
    ``{"seq", "t_sec", "kind", "wall_unix", "payload"}``. Encrypted sessions
    store ``{"seq", "nonce", "ct"}`` per line (base64; AES-256-GCM over the plain
    line, associated data = b"st-agent-evt" + session id + seq).

Reading never goes past the first bad segment and never modifies the file;
:class:`DropReport` says what could not be read. Samples are raw
little-endian floats read with ``np.frombuffer``; nothing is unpickled.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from st_agent.biometrics.crypto import (
    NONCE_LEN,
    SEAL_OVERHEAD,
    event_aad,
    seal,
    segment_aad,
    unseal,
)
from st_agent.biometrics.session_meta import FORMAT_VERSION, SessionMeta
from st_agent.types import Knobs

__all__ = ["DropReport"]

MAGIC = b"STSG"
_HEAD = struct.Struct("<4sHHQQdIII")  # 44 bytes, followed by its CRC32
_U32 = struct.Struct("<I")
#: Bytes of a segment header, its CRC32 included.
HEADER_LEN = _HEAD.size + 4  # 48
_FLAG_ENCRYPTED = 1
_FLAG_FLOAT64 = 2

#: One segment read back: (first_sample, t0_sec, data of shape (n_channels, n_times)).
Segment = tuple[int, float, np.ndarray]


@dataclass
class DropReport:
    """What reading a session could not use, and why.

    Parameters
    ----------
    n_segments : int
        Good segments read.
    n_samples : int
        Samples per channel read from them.
    dropped_samples : int
        Samples per channel written but not read: in the bad segment where
        reading stopped and in any later segment whose header is intact.
    dropped_bytes : int
        Bytes of ``samples.seg`` after the last good segment.
    approximate : bool
        True when some dropped bytes had no readable header, so
        ``dropped_samples`` was estimated from their size.
    reason : str or None
        Why reading stopped early (None: the file ended cleanly).
    bad_event_lines : int
        Event lines that were torn, not JSON, or failed authentication.
    closed_cleanly : bool
        The recorder's :meth:`~st_agent.biometrics.recording.SessionRecorder.close`
        ran (False after a crash).
    stop_reason : str or None
        Why the recorder stopped early (e.g. disk full), as it recorded it.
    """

    n_segments: int = 0
    n_samples: int = 0
    dropped_samples: int = 0
    dropped_bytes: int = 0
    approximate: bool = False
    reason: str | None = None
    bad_event_lines: int = 0
    closed_cleanly: bool = True
    stop_reason: str | None = None


def sample_dtype(dtype: str) -> np.dtype:
    """Little-endian numpy dtype of a recording's ``"float32"``/``"float64"`` samples."""
    return np.dtype("<f4" if dtype == "float32" else "<f8")


def segment_flags(encrypted: bool, dtype: str) -> int:
    """The header's flags field for a session."""
    return (_FLAG_ENCRYPTED if encrypted else 0) | (_FLAG_FLOAT64 if dtype == "float64" else 0)


# --------------------------------------------------------------------------- writing


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new and renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _json_default(obj: Any) -> Any:
    """JSON for what event payloads may hold besides JSON types."""
    if isinstance(obj, Knobs):
        return {"valence": obj.valence, "tempo": obj.tempo, "energy": obj.energy}
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path | datetime):
        return str(obj)
    raise TypeError(f"cannot record a {type(obj).__name__} in an event; use JSON types, "
                    f"numpy scalars/arrays or dataclasses")


def encode_segment(data: np.ndarray, *, seq: int, first_sample: int, t0_sec: float,
                   dtype: np.dtype, flags: int, aead: Any, session_id: bytes) -> bytes:
    """One segment record, ready to append.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        The samples (SI units); stored as ``dtype``.
    seq : int
        Sequence number of the segment (0, 1, 2, ...).
    first_sample : int
        Stream index of ``data[:, 0]``.
    t0_sec : float
        Source-clock time of ``data[:, 0]``, seconds.
    dtype : numpy.dtype
        ``<f4`` or ``<f8`` (see :func:`sample_dtype`).
    flags : int
        From :func:`segment_flags`.
    aead : AESGCM or None
        Cipher of an encrypted session.
    session_id : bytes
        The session id (ASCII), bound into the encryption.

    Returns
    -------
    record : bytes
        Header, body and body CRC32.
    """
    payload = np.ascontiguousarray(data, dtype=dtype).tobytes()
    n_ch, n_times = data.shape
    body_len = len(payload) + (SEAL_OVERHEAD if aead is not None else 0)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, flags, seq, first_sample, float(t0_sec), n_ch,
                      n_times, body_len)
    header = head + _U32.pack(zlib.crc32(head))
    body = payload if aead is None else seal(aead, payload, segment_aad(session_id, header))
    return header + body + _U32.pack(zlib.crc32(body))


def encode_event_line(doc: dict[str, Any], aead: Any, session_id: bytes) -> bytes:
    """One ``events.jsonl`` line (newline included), encrypted when ``aead`` is given.

    Parameters
    ----------
    doc : dict
        ``{"seq", "t_sec", "kind", "wall_unix", "payload"}``; the payload may hold
        numpy scalars and arrays, dataclasses, :class:`~st_agent.types.Knobs`,
        paths and datetimes besides JSON types.
    aead : AESGCM or None
        Cipher of an encrypted session.
    session_id : bytes
        The session id (ASCII), bound into the encryption.
    """
    text = json.dumps(doc, default=_json_default, separators=(",", ":"))
    if aead is not None:
        sealed = seal(aead, text.encode("utf-8"), event_aad(session_id, doc["seq"]))
        text = json.dumps({"seq": doc["seq"],
                           "nonce": base64.b64encode(sealed[:NONCE_LEN]).decode("ascii"),
                           "ct": base64.b64encode(sealed[NONCE_LEN:]).decode("ascii")},
                          separators=(",", ":"))
    return (text + "\n").encode("utf-8")


# --------------------------------------------------------------------------- reading


def decode_event_line(line: bytes, aead: Any, session_id: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_event_line`, as an events-table row.

    Raises
    ------
    ValueError, KeyError, TypeError
        If the line is torn, not JSON, lacks a field or fails authentication.
    """
    doc = json.loads(line)
    if aead is not None:
        sealed = base64.b64decode(doc["nonce"]) + base64.b64decode(doc["ct"])
        plain = unseal(aead, sealed, event_aad(session_id, int(doc["seq"])))
        if plain is None:
            raise ValueError("fails authentication")
        doc = json.loads(plain)
    return {"seq": int(doc["seq"]), "kind": str(doc["kind"]), "t_sec": float(doc["t_sec"]),
            "wall_unix": doc.get("wall_unix"), "payload": dict(doc.get("payload") or {})}


class _Header(NamedTuple):
    seq: int
    first_sample: int
    t0_sec: float
    n_times: int
    body_len: int


class _Scanner:
    """Reads segment records of one session out of ``samples.seg``'s bytes."""

    def __init__(self, buf: bytes, meta: SessionMeta, aead: Any) -> None:
        self.buf = buf
        self.n_ch = meta.n_channels
        self.dtype = sample_dtype(meta.dtype)
        self.flags = segment_flags(meta.encrypted, meta.dtype)
        self.overhead = SEAL_OVERHEAD if meta.encrypted else 0
        self.aead = aead
        self.sid = meta.session_id.encode("ascii")

    def header(self, at: int) -> _Header | None:
        """The header at byte ``at`` if it is complete, intact and fits this session."""
        buf = self.buf
        if len(buf) - at < HEADER_LEN:
            return None
        head = buf[at:at + _HEAD.size]
        (crc,) = _U32.unpack_from(buf, at + _HEAD.size)
        if zlib.crc32(head) != crc:
            return None
        magic, version, flags, seq, first, t0, nc, nt, blen = _HEAD.unpack(head)
        want = nc * nt * self.dtype.itemsize + self.overhead
        if magic != MAGIC or version != FORMAT_VERSION or flags != self.flags \
                or nc != self.n_ch or blen != want:
            return None
        return _Header(seq, first, t0, nt, blen)

    def segment(self, pos: int, seq: int, next_first: int
                ) -> tuple[Segment | None, int, str | None]:
        """Read the segment at ``pos``: (segment, end byte, None) or (None, pos, why not)."""
        buf = self.buf
        h = self.header(pos)
        if h is None:
            return None, pos, (f"incomplete segment header at byte {pos}"
                               if len(buf) - pos < HEADER_LEN
                               else f"bad segment header at byte {pos}")
        end = pos + HEADER_LEN + h.body_len + 4
        if end > len(buf):
            return None, pos, f"segment {h.seq} at byte {pos} is truncated"
        body = buf[pos + HEADER_LEN:pos + HEADER_LEN + h.body_len]
        (crc,) = _U32.unpack_from(buf, end - 4)
        if zlib.crc32(body) != crc:
            return None, pos, f"segment {h.seq} at byte {pos} fails its checksum"
        if h.seq != seq or h.first_sample < next_first:
            return None, pos, (f"segment at byte {pos} is out of order (sequence {h.seq}, "
                               f"first_sample {h.first_sample}; expected sequence {seq})")
        if self.aead is not None:
            aad = segment_aad(self.sid, buf[pos:pos + HEADER_LEN])
            plain = unseal(self.aead, body, aad)
            if plain is None:
                return None, pos, f"segment {h.seq} at byte {pos} fails authentication"
            body = plain
        data = np.frombuffer(body, dtype=self.dtype).reshape(self.n_ch, h.n_times)
        return (h.first_sample, h.t0_sec, data), end, None

    def count_dropped(self, pos: int, report: DropReport) -> None:
        """Count what lies after the stop: headers that still parse give exact counts."""
        buf = self.buf
        report.dropped_bytes = len(buf) - pos
        frame = self.n_ch * self.dtype.itemsize
        at, unparsed = pos, 0
        while at < len(buf):
            h = self.header(at)
            if h is not None:
                report.dropped_samples += h.n_times
                at += HEADER_LEN + h.body_len + 4
                continue
            nxt = buf.find(MAGIC, at + 1)
            nxt = len(buf) if nxt < 0 else nxt
            unparsed += nxt - at
            at = nxt
        if unparsed > HEADER_LEN + 4:
            report.approximate = True
            report.dropped_samples += (unparsed - HEADER_LEN - 4) // frame


def scan_segments(buf: bytes, meta: SessionMeta, aead: Any
                  ) -> tuple[list[Segment], DropReport]:
    """Parse segment records until the first bad one; never past it.

    Parameters
    ----------
    buf : bytes
        Contents of ``samples.seg``.
    meta : SessionMeta
        The session's metadata (channels, dtype, encryption).
    aead : AESGCM or None
        Cipher of an encrypted session (its key already checked).

    Returns
    -------
    segments : list of (int, float, ndarray)
        ``(first_sample, t0_sec, data)``, data shape (n_channels, n_times).
    report : DropReport
        Segments and samples read, and what was dropped after the stop.
    """
    scanner = _Scanner(buf, meta, aead)
    segments: list[Segment] = []
    report = DropReport()
    pos, seq, next_first = 0, 0, -1
    while pos < len(buf):
        seg, end, reason = scanner.segment(pos, seq, next_first)
        if seg is None:
            report.reason = reason
            break
        segments.append(seg)
        report.n_segments += 1
        report.n_samples += seg[2].shape[1]
        seq, next_first, pos = seq + 1, seg[0] + seg[2].shape[1], end
    if pos < len(buf):
        scanner.count_dropped(pos, report)
    return segments, report
