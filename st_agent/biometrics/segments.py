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
    contiguous: a jump in ``first_sample`` is a gap. A segment holds at most
    ``SessionMeta.segment_samples`` (one second) of samples; the recorder writes
    one at least every ``flush_sec`` (0.5 s by default).
``events.jsonl``
    One JSON object per line, ``fsync``-ed per line:
    ``{"seq", "t_sec", "kind", "wall_unix", "payload"}``. Encrypted sessions
    store ``{"seq", "nonce", "ct"}`` per line (base64; AES-256-GCM over the plain
    line, associated data = b"st-agent-evt" + session id + seq).

Reading (:mod:`st_agent.biometrics.segment_scan`) never modifies the file. A
segment that is torn, fails its checksum or authentication is lost alone: the
reader resynchronises on the next intact header (found by its magic and header
CRC) and keeps every segment that verifies; :class:`DropReport` lists each lost
span (:class:`LostSpan`). Every length and gap read from disk is bounded by what
the file can hold (see :data:`MAX_FILL_RATIO`); beyond that the file is refused
with :class:`~st_agent.biometrics.session_meta.CorruptSessionError`. Samples are
raw little-endian floats read with ``np.frombuffer``; nothing is unpickled.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.biometrics.crypto import (
    NONCE_LEN,
    SEAL_OVERHEAD,
    event_aad,
    seal,
    segment_aad,
    unseal,
)
from st_agent.biometrics.session_meta import FORMAT_VERSION
from st_agent.types import Knobs

__all__ = ["FILL_ALLOWANCE_VALUES", "MAX_FILL_RATIO", "DropReport", "LostSpan"]

MAGIC = b"STSG"
_HEAD = struct.Struct("<4sHHQQdIII")  # 44 bytes, followed by its CRC32
_U32 = struct.Struct("<I")
#: Bytes of a segment header, its CRC32 included.
HEADER_LEN = _HEAD.size + 4  # 48
_FLAG_ENCRYPTED = 1
_FLAG_FLOAT64 = 2
#: Longest event line read, bytes (a phrase event with its ABC text is a few kB).
MAX_EVENT_LINE_BYTES = 1 << 20

#: One segment read back: (first_sample, t0_sec, data of shape (n_channels, n_times)).
Segment = tuple[int, float, np.ndarray]

#: Bound on the NaN fill (gaps and lost spans between the first and the last good
#: segment) a reader allocates: at most this many times the samples the good
#: segments hold, plus :data:`FILL_ALLOWANCE_VALUES` values (samples x channels).
#: So reading costs at most about (1 + ratio) x the data the file holds plus
#: 128 MiB of float64. Sessions the recorder writes stay far inside it (a source
#: gap is recorded as it happens; a 1 h session at 250 Hz x 16 channels may hold
#: over an hour of gaps); a larger jump in ``first_sample`` is refused.
MAX_FILL_RATIO = 1.0
#: See :data:`MAX_FILL_RATIO`: 2**24 values (128 MiB of float64).
FILL_ALLOWANCE_VALUES = 2**24


@dataclass(frozen=True)
class LostSpan:
    """A run of samples that was written but cannot be read (torn, corrupt, forged).

    Parameters
    ----------
    first_sample : int
        Stream index of the first sample of the span.
    n_samples : int
        Samples per channel lost in it.
    start_sec : float
        Start relative to the session's first readable sample (``Session.raw``'s
        time 0), seconds; negative for a span before it.
    duration_sec : float
        ``n_samples / sfreq``, seconds.
    n_segments : int
        Segments lost in the span (from the sequence numbers around it; 1 for a
        torn last segment).
    byte_offset : int
        Where the unreadable bytes start in ``samples.seg``.
    n_bytes : int
        How many bytes are unreadable.
    exact : bool
        True when the span's place and length come from intact headers (or fill
        the whole stretch between good segments); False when ``n_samples`` is
        estimated from the byte count and the span lies somewhere in
        ``[first_sample, first_sample + extent)`` (``extent`` the stretch).
    reason : str
        What was wrong with the first unreadable segment.
    stream : str
        Which stream was hit (``"samples"``; event lines are counted in
        :attr:`DropReport.bad_event_line_numbers`).
    """

    first_sample: int
    n_samples: int
    start_sec: float
    duration_sec: float
    n_segments: int
    byte_offset: int
    n_bytes: int
    exact: bool
    reason: str
    stream: str = "samples"

    def __str__(self) -> str:
        approx = "" if self.exact else "about "
        return (f"{approx}{self.n_samples} samples ({self.duration_sec:.3f} s) from sample "
                f"{self.first_sample} (t={self.start_sec:.3f} s), {self.n_segments} "
                f"segment(s), bytes {self.byte_offset}-{self.byte_offset + self.n_bytes}: "
                f"{self.reason}")


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
        Samples per channel written but not read: the sum over :attr:`lost`.
    dropped_bytes : int
        Bytes of ``samples.seg`` in no good segment.
    approximate : bool
        True when some lost span had no readable header, so its
        ``n_samples`` was estimated from its size.
    reason : str or None
        What was wrong with the first unreadable segment (None: all verified).
    bad_event_lines : int
        Event lines that were torn, not JSON, or failed authentication.
    lost : list of LostSpan
        Every span of samples that could not be read, in stream order.
    bad_event_line_numbers : list of int
        1-based line numbers of the bad event lines.
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
    lost: list[LostSpan] = field(default_factory=list)
    bad_event_line_numbers: list[int] = field(default_factory=list)


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



def _json_object(text: str | bytes, what: str) -> dict:
    """``text`` parsed as one JSON object (``what`` names it in the error)."""
    try:
        doc = json.loads(text)
    except RecursionError as e:
        raise ValueError("nested too deeply") from e
    if not isinstance(doc, dict):
        raise TypeError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc

def decode_event_line(line: bytes, aead: Any, session_id: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_event_line`, as an events-table row.

    Raises
    ------
    ValueError, KeyError, TypeError
        If the line is torn, not JSON, nested too deeply, lacks a field or fails
        authentication.
    """
    if len(line) > MAX_EVENT_LINE_BYTES:
        raise ValueError(f"line of {len(line)} bytes is over {MAX_EVENT_LINE_BYTES}")
    doc = _json_object(line, "an event line")
    if aead is not None:
        sealed = base64.b64decode(doc["nonce"]) + base64.b64decode(doc["ct"])
        plain = unseal(aead, sealed, event_aad(session_id, int(doc["seq"])))
        if plain is None:
            raise ValueError("fails authentication")
        doc = _json_object(plain, "an event")
    payload = doc.get("payload") or {}
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a JSON object, got {type(payload).__name__}")
    return {"seq": int(doc["seq"]), "kind": str(doc["kind"]), "t_sec": float(doc["t_sec"]),
            "wall_unix": doc.get("wall_unix"), "payload": dict(payload)}
