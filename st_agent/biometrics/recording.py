"""Crash-safe, append-only session recordings; reading them back; export; deletion.

A session folder holds three files, each written only by appending (the meta
file is replaced atomically):

``session.json``
    :class:`SessionMeta` (pseudonymous subject id, consent record, channels,
    sampling rate, software version, encryption flag and key fingerprint), the
    recording parameters, and a ``closed`` block written by :meth:`SessionRecorder.close`
    (absent after a crash: the reader then says the session was not closed cleanly).
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

After ``kill -9`` at any moment the folder opens without repair: the reader
stops at the first segment that is incomplete or fails its checksum (never
touching the file) and ignores a torn last event line, and reports what it
dropped. At most the samples not yet making up a full segment (< 1 s) are lost.

Privacy: subject ids are pseudonyms (letters and digits with at least one
digit, random by default), file names carry no names, the EDF header carries
only the pseudonym, files are created ``0600`` in a ``0700`` folder, and a key
for encryption at rest lives in a key file that must not be inside the session
folder. Deleting the key file makes an encrypted session unreadable
("crypto-shredding"), which is the only dependable erase on SSDs and journaling
file systems.

Nothing here unpickles anything: samples are raw little-endian floats read with
``np.frombuffer`` and everything else is JSON.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import tyro

from st_agent import __version__
from st_agent.types import CH_TYPES, EmotionState, Knobs, MusicFeatures, Phrase, SignalChunk

if TYPE_CHECKING:
    import mne

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
    "read_session",
    "run_delete",
    "run_export",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "st-agent-recording"
FORMAT_VERSION = 1
META_FILE = "session.json"
SAMPLES_FILE = "samples.seg"
EVENTS_FILE = "events.jsonl"

_MAGIC = b"STSG"
_HEAD = struct.Struct("<4sHHQQdIII")  # 44 bytes, followed by its CRC32
_U32 = struct.Struct("<I")
_HEADER_LEN = _HEAD.size + 4  # 48
_FLAG_ENCRYPTED = 1
_FLAG_FLOAT64 = 2
_NONCE_LEN = 12
_TAG_LEN = 16
_KEY_LEN = 32  # AES-256
_SEG_AAD = b"st-agent-seg"
_EVT_AAD = b"st-agent-evt"

#: What a subject may consent to.
CONSENT_SCOPES = ("record", "store_local", "export", "share_pseudonymized")
_GIVEN_BY = ("participant", "legal_guardian", "participant_and_guardian")
_DTYPES = ("float32", "float64")
_EXPORT_FORMATS = ("edf", "fif", "bids")
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)

_PSEUDONYM_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# MNE has no "ppg" or "eda" channel types; these are its nearest ones ("bio" would be
# taken as volts and scaled to µV on EDF export).
_MNE_CH_TYPE = {"ppg": "misc", "eda": "gsr"}  # ppg is in arbitrary units, not volts


class RecordingError(RuntimeError):
    """The recording cannot go on or cannot be read (disk full, closed, bad key...)."""


class DiskFullError(RecordingError):
    """The disk filled up (ENOSPC, EFBIG, EDQUOT); recording stopped, data so far kept."""


class EncryptionKeyError(RecordingError):
    """An encrypted session was opened without its key, or with another key."""


# --------------------------------------------------------------------------- identifiers


def new_pseudonym() -> str:
    """Return a random pseudonymous subject id such as ``"s04817263"``.

    Returns
    -------
    subject_id : str
        ``"s"`` followed by 8 random digits: letters and digits only, so it is
        also a valid BIDS subject label.
    """
    return f"s{secrets.randbelow(10**8):08d}"


def new_session_id() -> str:
    """Return a new session id: UTC date-time plus 6 random hex digits.

    Returns
    -------
    session_id : str
        E.g. ``"20240501T101500-3fa9c1"``.
    """
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _check_pseudonym(subject_id: object) -> str:
    if not isinstance(subject_id, str) or not _PSEUDONYM_RE.match(subject_id):
        raise ValueError(
            f"subject_id must be a pseudonym of 3-32 letters and digits (no spaces, path "
            f"separators or punctuation), got {subject_id!r}; use new_pseudonym()"
        )
    if not any(c.isdigit() for c in subject_id):
        raise ValueError(
            f"subject_id {subject_id!r} looks like a name; a pseudonym must contain at least "
            f"one digit (e.g. {new_pseudonym()!r} from new_pseudonym())"
        )
    return subject_id


def _check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not _SESSION_ID_RE.match(session_id):
        raise ValueError(
            f"session_id must be 1-64 letters, digits, '-' or '_' starting with a letter or "
            f"digit, got {session_id!r}; use new_session_id()"
        )
    return session_id


def _utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_iso(name: str, value: object) -> str:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise ValueError(f"{name} must be an ISO 8601 time, got {value!r}") from e
    if parsed.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (e.g. '+00:00'), got {value!r}")
    return str(value)


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ConsentRecord:
    """Who consented to what, when, under which consent text.

    Parameters
    ----------
    text_version : str
        Version of the consent text that was shown, e.g. ``"2024-05-v1"``.
    scopes : tuple of str
        What was consented to, a subset of :data:`CONSENT_SCOPES`. Recording
        needs ``"record"``; export needs ``"export"``.
    given_at_utc : str
        ISO 8601 time with time zone at which consent was given.
    given_by : {"participant", "legal_guardian", "participant_and_guardian"}
        Who gave it (a role, never a name: the person is the session's
        pseudonymous subject).
    """

    text_version: str
    scopes: tuple[str, ...] = ("record", "store_local")
    given_at_utc: str = field(default_factory=_utc_now_iso)
    given_by: str = "participant"

    def __post_init__(self) -> None:
        if not isinstance(self.text_version, str) or not self.text_version.strip():
            raise ValueError(f"text_version must be a non-empty string, got "
                             f"{self.text_version!r}")
        scopes = (self.scopes,) if isinstance(self.scopes, str) else tuple(self.scopes)
        bad = sorted(set(scopes) - set(CONSENT_SCOPES))
        if bad or not scopes:
            raise ValueError(f"scopes must be a non-empty subset of {CONSENT_SCOPES}, "
                             f"got {self.scopes!r}")
        object.__setattr__(self, "scopes", scopes)
        _check_iso("given_at_utc", self.given_at_utc)
        if self.given_by not in _GIVEN_BY:
            raise ValueError(f"given_by must be one of {_GIVEN_BY}, got {self.given_by!r}")

    def allows(self, scope: str) -> bool:
        """Whether ``scope`` was consented to."""
        return scope in self.scopes


@dataclass(frozen=True)
class SessionMeta:
    """What a recording says about itself; stored in ``session.json``.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz of the recorded stream.
    ch_names : tuple of str
        Channel names, one per row of every chunk.
    ch_types : tuple of str
        One of :data:`~st_agent.types.CH_TYPES` per channel.
    consent : ConsentRecord
        The consent record; recording refuses to start without ``"record"``.
    subject_id : str
        Pseudonymous subject id (letters and digits, at least one digit).
        Random by default; never a name.
    session_id : str
        Session id (letters, digits, ``-``, ``_``). Random by default.
    created_utc : str
        ISO 8601 creation time.
    software : str
        Software name and version that wrote the recording.
    line_freq : float or None
        Mains frequency in Hz (50 or 60) if known; written to BIDS sidecars.
    encrypted : bool
        Set by the recorder: samples and events are encrypted with AES-256-GCM.
    key_id : str or None
        Set by the recorder: fingerprint of the key (not the key), to tell a
        wrong key from a corrupt file.
    dtype : {"float32", "float64"}
        Sample type on disk.
    segment_samples : int
        Samples per full segment (about one second); set by the recorder.

    Examples
    --------
    >>> meta = SessionMeta(250.0, ("Fz", "Pz"), ("eeg", "eeg"),
    ...                    consent=ConsentRecord("v1"), subject_id="s00000042")
    >>> meta.n_channels
    2
    """

    sfreq: float
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    consent: ConsentRecord
    subject_id: str = field(default_factory=new_pseudonym)
    session_id: str = field(default_factory=new_session_id)
    created_utc: str = field(default_factory=_utc_now_iso)
    software: str = f"st_agent {__version__}"
    line_freq: float | None = None
    encrypted: bool = False
    key_id: str | None = None
    dtype: str = "float32"
    segment_samples: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.consent, dict):
            object.__setattr__(self, "consent", ConsentRecord(**self.consent))
        if not isinstance(self.consent, ConsentRecord):
            raise TypeError(f"consent must be a ConsentRecord, got "
                            f"{type(self.consent).__name__}")
        if not (isinstance(self.sfreq, int | float) and math.isfinite(self.sfreq)
                and self.sfreq > 0):
            raise ValueError(f"sfreq must be a positive number of Hz, got {self.sfreq!r}")
        object.__setattr__(self, "sfreq", float(self.sfreq))
        names, types = tuple(self.ch_names), tuple(self.ch_types)
        object.__setattr__(self, "ch_names", names)
        object.__setattr__(self, "ch_types", types)
        if not names or len(names) != len(types):
            raise ValueError(f"need one type per channel name and at least one channel, got "
                             f"{len(names)} names and {len(types)} types")
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        bad = sorted(set(types) - set(CH_TYPES))
        if bad:
            raise ValueError(f"unknown channel types {bad}; allowed: {CH_TYPES}")
        _check_pseudonym(self.subject_id)
        _check_session_id(self.session_id)
        _check_iso("created_utc", self.created_utc)
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.line_freq is not None and not (math.isfinite(self.line_freq)
                                               and self.line_freq > 0):
            raise ValueError(f"line_freq must be None or a positive number of Hz, got "
                             f"{self.line_freq!r}")

    @classmethod
    def from_chunk(cls, chunk: SignalChunk, consent: ConsentRecord, **kwargs: Any) -> SessionMeta:
        """Meta for recording the stream that ``chunk`` comes from.

        Parameters
        ----------
        chunk : SignalChunk
            Any chunk of the stream (sampling rate and channels are taken from it).
        consent : ConsentRecord
            The consent record.
        **kwargs
            Other :class:`SessionMeta` fields (``subject_id``, ``session_id``...).
        """
        return cls(sfreq=chunk.sfreq, ch_names=chunk.ch_names, ch_types=chunk.ch_types,
                   consent=consent, **kwargs)

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.ch_names)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for ``session.json``."""
        d = asdict(self)
        d["ch_names"] = list(self.ch_names)
        d["ch_types"] = list(self.ch_types)
        d["consent"]["scopes"] = list(self.consent.scopes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionMeta:
        """Inverse of :meth:`to_json`; validates every field."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown session meta fields {unknown}; known: {sorted(known)}")
        return cls(**d)


# --------------------------------------------------------------------------- keys


def default_key_file(session_id: str) -> Path:
    """Where a session's key file goes by default: outside any session folder.

    Parameters
    ----------
    session_id : str
        The session id.

    Returns
    -------
    path : Path
        ``$XDG_CONFIG_HOME/st-agent/keys/<session_id>.key`` (``~/.config`` when
        ``XDG_CONFIG_HOME`` is unset).
    """
    _check_session_id(session_id)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "st-agent" / "keys" / f"{session_id}.key"


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"st-agent key id\x00" + key).hexdigest()[:16]


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != _KEY_LEN:
        shown = f"{len(key)} bytes" if isinstance(key, bytes | bytearray) else type(key).__name__
        raise EncryptionKeyError(f"key must be {_KEY_LEN} bytes (AES-256), got {shown}; "
                                 f"make one with create_key_file()")
    return bytes(key)


def create_key_file(path: str | Path) -> bytes:
    """Create a new random AES-256 key in a new file readable only by its owner.

    Parameters
    ----------
    path : str or Path
        Key file to create (its folder is created ``0700``). Keep it apart from
        the recordings, e.g. :func:`default_key_file`.

    Returns
    -------
    key : bytes
        The 32-byte key, to pass to :class:`SessionRecorder`.

    Raises
    ------
    FileExistsError
        If ``path`` exists (a key is never overwritten: that would make the
        sessions encrypted with it unreadable).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(_KEY_LEN)
    doc = {"cipher": "AES-256-GCM", "key_id": _key_id(key),
           "key": base64.b64encode(key).decode("ascii")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    logger.info("created key file %s (key id %s)", path, doc["key_id"])
    return key


def load_key_file(path: str | Path) -> bytes:
    """Read a key file written by :func:`create_key_file`.

    Parameters
    ----------
    path : str or Path
        The key file.

    Returns
    -------
    key : bytes
        The 32-byte key.

    Raises
    ------
    EncryptionKeyError
        If the file is missing or not a key file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        key = base64.b64decode(doc["key"], validate=True)
    except FileNotFoundError as e:
        raise EncryptionKeyError(f"key file {path} does not exist") from e
    except (ValueError, KeyError, TypeError) as e:
        raise EncryptionKeyError(f"{path} is not an st-agent key file: {e}") from e
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("key file %s is readable by others; chmod 600 it", path)
    return _check_key(key)


def _resolve_key(key: bytes | str | Path | None, folder: Path) -> bytes | None:
    """Key bytes from bytes or a key-file path; refuse a key kept in the session folder."""
    if key is None or isinstance(key, bytes | bytearray):
        return None if key is None else _check_key(key)
    path = Path(key).resolve()
    if path.is_relative_to(folder.resolve()):
        raise EncryptionKeyError(
            f"key file {path} is inside the session folder {folder}; keep keys apart from "
            f"the data (e.g. {default_key_file('SESSION')})"
        )
    return load_key_file(path)


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # pragma: no cover - dependency missing
        raise ImportError("encryption needs the 'cryptography' package: "
                          "pip install cryptography") from e
    return AESGCM(key)


# --------------------------------------------------------------------------- low-level IO


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _json_default(obj: Any) -> Any:
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


# --------------------------------------------------------------------------- writer


class SessionRecorder:
    """Write a session crash-safely: samples in ~1 s segments, events as JSON Lines.

    Every full segment and every event is written with one ``write`` call and
    ``fsync``-ed before the call returns, so after ``kill -9`` (or a power cut)
    at most the samples buffered for the current segment (< ``segment_sec``) are
    lost, and the folder reads without repair.

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
        Seconds per segment, in (0, 1]; also the most a crash can lose.
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
                 *, segment_sec: float = 1.0, dtype: str | None = None) -> None:
        if not isinstance(meta, SessionMeta):
            raise TypeError(f"meta must be a SessionMeta, got {type(meta).__name__}")
        if not meta.consent.allows("record"):
            raise ValueError(f"consent scopes {meta.consent.scopes} do not include 'record'; "
                             f"recording needs the subject's consent to record")
        if not (isinstance(segment_sec, int | float) and 0 < segment_sec <= 1.0):
            raise ValueError(f"segment_sec must be in (0, 1] seconds, got {segment_sec!r}")
        dtype = meta.dtype if dtype is None else dtype
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.folder = Path(folder)
        key_bytes = _resolve_key(key, self.folder)
        self._aead = _aesgcm(key_bytes) if key_bytes is not None else None
        self.meta = replace(
            meta, encrypted=key_bytes is not None,
            key_id=_key_id(key_bytes) if key_bytes is not None else None,
            dtype=dtype, segment_samples=max(1, round(meta.sfreq * segment_sec)),
        )
        self._dtype = np.dtype("<f4" if dtype == "float32" else "<f8")
        self._flags = ((_FLAG_ENCRYPTED if self._aead else 0)
                       | (_FLAG_FLOAT64 if dtype == "float64" else 0))
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
            _write_json_atomic(folder / META_FILE, self._meta_doc(closed=None))
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._seg_fd = os.open(folder / SAMPLES_FILE, flags, 0o600)
            self._evt_fd = os.open(folder / EVENTS_FILE, flags, 0o600)
            _fsync_dir(folder)
        except OSError as e:
            self._close_fds()
            if e.errno in _DISK_FULL:
                raise DiskFullError(f"cannot start recording in {folder}: disk full "
                                    f"({errno.errorcode.get(e.errno, e.errno)})") from e
            raise
        logger.info("recording session %s (subject %s) to %s%s", self.meta.session_id,
                    self.meta.subject_id, folder, ", encrypted" if self._aead else "")

    def _meta_doc(self, closed: dict[str, Any] | None) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "meta": self.meta.to_json(), "closed": closed}

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
        """Samples per channel durably on disk (in full segments)."""
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
            closed = {"closed_utc": _utc_now_iso(), "n_samples": self._n_written,
                      "n_segments": self._seg_seq, "n_events": self._evt_seq,
                      "stop_reason": self.stop_reason}
            try:
                _write_json_atomic(self.folder / META_FILE, self._meta_doc(closed))
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
        """Buffer a chunk and write every full segment (fsync-ed before returning).

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
        if not isinstance(chunk, SignalChunk):
            raise TypeError(f"chunk must be a SignalChunk, got {type(chunk).__name__}")
        m = self.meta
        if not math.isclose(chunk.sfreq, m.sfreq, rel_tol=1e-9):
            raise ValueError(f"chunk.sfreq is {chunk.sfreq} Hz but the session records "
                             f"{m.sfreq} Hz")
        if chunk.ch_names != m.ch_names or chunk.ch_types != m.ch_types:
            raise ValueError(f"chunk channels {chunk.ch_names} of types {chunk.ch_types} differ "
                             f"from the session's {m.ch_names} of types {m.ch_types}")
        with self._lock:
            self._check_active()
            if chunk.n_times == 0:
                return
            first = chunk.first_sample + self._offset
            if self._next_sample is not None and first != self._next_sample:
                if first > self._next_sample:
                    n_missing = first - self._next_sample
                    self._flush_buffer()
                    self._write_event_locked("gap", self._last_t_end, {
                        "first_missing_sample": self._next_sample, "n_missing": n_missing,
                        "source": "recorder"})
                    logger.warning("gap of %d samples before sample %d", n_missing, first)
                else:
                    self._offset += self._next_sample - first
                    self._write_event_locked("discontinuity", chunk.t0_sec, {
                        "source_first_sample": chunk.first_sample,
                        "placed_at_sample": self._next_sample})
                    logger.warning("source sample count went back to %d; recording it as "
                                   "continuing at sample %d", chunk.first_sample,
                                   self._next_sample)
                    first = self._next_sample
            if self._buf_n == 0:
                self._buf_first, self._buf_t0 = first, chunk.t0_sec
            self._buf.append(np.array(chunk.data, dtype=self._dtype))  # a copy: sources may reuse
            self._buf_n += chunk.n_times
            self._next_sample = first + chunk.n_times
            self._last_t_end = chunk.t0_sec + chunk.duration_sec
            seg = m.segment_samples
            if self._buf_n >= seg:
                data = np.concatenate(self._buf, axis=1) if len(self._buf) > 1 else self._buf[0]
                n_full = (self._buf_n // seg) * seg
                for start in range(0, n_full, seg):
                    self._write_segment(data[:, start:start + seg],
                                        self._buf_first + start,
                                        self._buf_t0 + start / m.sfreq)
                rest = data[:, n_full:]
                self._buf_first += n_full
                self._buf_t0 += n_full / m.sfreq
                self._buf = [rest] if rest.shape[1] else []
                self._buf_n = rest.shape[1]

    def _flush_buffer(self) -> None:
        if self._buf_n:
            data = np.concatenate(self._buf, axis=1)
            self._write_segment(data, self._buf_first, self._buf_t0)
            self._buf, self._buf_n = [], 0

    def _write_segment(self, data: np.ndarray, first_sample: int, t0_sec: float) -> None:
        """Append one segment record; data shape (n_channels, n_times)."""
        t_start = time.perf_counter()
        payload = np.ascontiguousarray(data, dtype=self._dtype).tobytes()
        n_ch, n_times = data.shape
        body_len = len(payload) + (_NONCE_LEN + _TAG_LEN if self._aead else 0)
        head = _HEAD.pack(_MAGIC, FORMAT_VERSION, self._flags, self._seg_seq, first_sample,
                          float(t0_sec), n_ch, n_times, body_len)
        header = head + _U32.pack(zlib.crc32(head))
        if self._aead is not None:
            nonce = os.urandom(_NONCE_LEN)
            body = nonce + self._aead.encrypt(nonce, payload, _SEG_AAD + self._sid + header)
        else:
            body = payload
        record = header + body + _U32.pack(zlib.crc32(body))
        self._append(self._seg_fd, record, "samples")
        self._seg_seq += 1
        self._n_written += n_times
        self.segment_write_sec.append(time.perf_counter() - t_start)

    def _append(self, fd: int, record: bytes, what: str) -> None:
        """Write and fsync ``record``; on any failure cut the partial record and stop.

        A full disk (ENOSPC, EFBIG, EDQUOT) raises :class:`DiskFullError`; other
        I/O errors raise :class:`RecordingError`. Either way the recording stops,
        since a retry could duplicate or reorder records.
        """
        size_before = os.fstat(fd).st_size
        try:
            _write_all(fd, record)
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
            _write_all(self._evt_fd, line)
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
            self._write_event_locked(kind, t_sec, payload)

    def _event_line(self, kind: str, t_sec: float | None, payload: dict[str, Any]) -> bytes:
        doc = {"seq": self._evt_seq,
               "t_sec": float(self._last_t_end if t_sec is None else t_sec),
               "kind": kind, "wall_unix": round(time.time(), 6), "payload": payload}
        text = json.dumps(doc, default=_json_default, separators=(",", ":"))
        if self._aead is not None:
            nonce = os.urandom(_NONCE_LEN)
            aad = _EVT_AAD + self._sid + struct.pack("<Q", self._evt_seq)
            ct = self._aead.encrypt(nonce, text.encode("utf-8"), aad)
            text = json.dumps({"seq": self._evt_seq,
                               "nonce": base64.b64encode(nonce).decode("ascii"),
                               "ct": base64.b64encode(ct).decode("ascii")},
                              separators=(",", ":"))
        return (text + "\n").encode("utf-8")

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


# --------------------------------------------------------------------------- reader


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
        The recorder's :meth:`~SessionRecorder.close` ran (False after a crash).
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


def _load_meta_doc(folder: Path) -> dict[str, Any]:
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
        _load_meta_doc(Path(folder))
    except (FileNotFoundError, RecordingError):
        return False
    return True


def _scan_segments(buf: bytes, meta: SessionMeta, aead: Any
                   ) -> tuple[list[tuple[int, float, np.ndarray]], DropReport]:
    """Parse segment records until the first bad one; never past it."""
    n_ch = meta.n_channels
    dtype = np.dtype("<f4" if meta.dtype == "float32" else "<f8")
    flags_expected = ((_FLAG_ENCRYPTED if meta.encrypted else 0)
                      | (_FLAG_FLOAT64 if meta.dtype == "float64" else 0))
    sid = meta.session_id.encode("ascii")
    segments: list[tuple[int, float, np.ndarray]] = []
    report = DropReport()
    pos, seq, next_first = 0, 0, -1

    def parse_header(at: int) -> tuple | None:
        if len(buf) - at < _HEADER_LEN:
            return None
        head = buf[at:at + _HEAD.size]
        (crc,) = _U32.unpack_from(buf, at + _HEAD.size)
        if zlib.crc32(head) != crc:
            return None
        fields = _HEAD.unpack(head)
        magic, version, flags, _, _, _, nc, nt, blen = fields
        plain = nc * nt * dtype.itemsize
        want = plain + (_NONCE_LEN + _TAG_LEN if meta.encrypted else 0)
        if magic != _MAGIC or version != FORMAT_VERSION or flags != flags_expected \
                or nc != n_ch or blen != want:
            return None
        return fields

    while pos < len(buf):
        fields = parse_header(pos)
        if fields is None:
            report.reason = (f"incomplete segment header at byte {pos}"
                             if len(buf) - pos < _HEADER_LEN
                             else f"bad segment header at byte {pos}")
            break
        _, _, _, s_seq, first, t0, _, n_times, blen = fields
        end = pos + _HEADER_LEN + blen + 4
        if end > len(buf):
            report.reason = f"segment {s_seq} at byte {pos} is truncated"
            break
        body = buf[pos + _HEADER_LEN:pos + _HEADER_LEN + blen]
        (crc,) = _U32.unpack_from(buf, end - 4)
        if zlib.crc32(body) != crc:
            report.reason = f"segment {s_seq} at byte {pos} fails its checksum"
            break
        if s_seq != seq or first < next_first:
            report.reason = (f"segment at byte {pos} is out of order (sequence {s_seq}, "
                             f"first_sample {first}; expected sequence {seq})")
            break
        if aead is not None:
            from cryptography.exceptions import InvalidTag
            nonce = body[:_NONCE_LEN]
            try:
                body = aead.decrypt(nonce, body[_NONCE_LEN:],
                                    _SEG_AAD + sid + buf[pos:pos + _HEADER_LEN])
            except InvalidTag:
                report.reason = f"segment {s_seq} at byte {pos} fails authentication"
                break
        data = np.frombuffer(body, dtype=dtype).reshape(n_ch, n_times)
        segments.append((first, t0, data))
        report.n_segments += 1
        report.n_samples += n_times
        seq, next_first, pos = seq + 1, first + n_times, end

    if pos < len(buf):
        # Count what lies after the stop: headers that still parse give exact counts.
        report.dropped_bytes = len(buf) - pos
        frame = n_ch * dtype.itemsize
        at, unparsed = pos, 0
        while at < len(buf):
            fields = parse_header(at)
            if fields is not None:
                report.dropped_samples += fields[7]
                at += _HEADER_LEN + fields[8] + 4
                continue
            nxt = buf.find(_MAGIC, at + 1)
            nxt = len(buf) if nxt < 0 else nxt
            unparsed += nxt - at
            at = nxt
        if unparsed > _HEADER_LEN + 4:
            report.approximate = True
            report.dropped_samples += (unparsed - _HEADER_LEN - 4) // frame
    return segments, report


def _read_events(path: Path, meta: SessionMeta, aead: Any
                 ) -> tuple[list[dict[str, Any]], int]:
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
            doc = json.loads(line)
            if aead is not None:
                from cryptography.exceptions import InvalidTag
                aad = _EVT_AAD + sid + struct.pack("<Q", int(doc["seq"]))
                try:
                    plain = aead.decrypt(base64.b64decode(doc["nonce"]),
                                         base64.b64decode(doc["ct"]), aad)
                except InvalidTag as e:
                    raise ValueError("fails authentication") from e
                doc = json.loads(plain)
            row = {"seq": int(doc["seq"]), "kind": str(doc["kind"]),
                   "t_sec": float(doc["t_sec"]), "wall_unix": doc.get("wall_unix"),
                   "payload": dict(doc.get("payload") or {})}
        except (ValueError, KeyError, TypeError) as e:
            bad += 1
            last = i == len(raw_lines) - 1
            logger.warning("%s line %d %s: %s", path.name, i + 1,
                           "is torn (crash while writing)" if last else "is bad", e)
            continue
        rows.append(row)
    return rows, bad


def _annotation_desc(row: dict[str, Any]) -> str | None:
    kind, p = row["kind"], row["payload"]
    if kind in ("gap", "dropped"):
        return None  # missing samples are annotated from the sample coverage, as BAD_gap
    if kind == "marker" and p.get("label"):
        return f"marker/{p['label']}"
    return kind


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
    doc = _load_meta_doc(folder)
    meta = SessionMeta.from_json(doc["meta"])
    key_bytes = _resolve_key(key, folder)
    aead = None
    if meta.encrypted:
        if key_bytes is None:
            raise EncryptionKeyError(
                f"session {meta.session_id} is encrypted (key id {meta.key_id}); pass its key "
                f"or key file (by default {default_key_file(meta.session_id)})")
        if _key_id(key_bytes) != meta.key_id:
            raise EncryptionKeyError(
                f"wrong key for session {meta.session_id}: it was encrypted with key id "
                f"{meta.key_id}, the key given has id {_key_id(key_bytes)}")
        aead = _aesgcm(key_bytes)
    elif key_bytes is not None:
        logger.info("session %s is not encrypted; the key is not needed", meta.session_id)

    seg_path = folder / SAMPLES_FILE
    buf = seg_path.read_bytes() if seg_path.exists() else b""
    segments, report = _scan_segments(buf, meta, aead)
    del buf
    events, report.bad_event_lines = _read_events(folder / EVENTS_FILE, meta, aead)
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

    first_sample = segments[0][0] if segments else 0
    t0 = segments[0][1] if segments else (events[0]["t_sec"] if events else 0.0)
    for row in events:
        row["onset_sec"] = row["t_sec"] - t0
    raw = _build_raw(meta, segments, events) if segments else None
    if raw is None:
        logger.info("session %s has no recorded samples", meta.session_id)
    return Session(folder=folder, meta=meta, raw=raw, events=events, dropped=report,
                   first_sample=first_sample, t0_sec=t0)


def _nan_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of runs of True in a 1-D bool array."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


def _build_raw(meta: SessionMeta, segments: list[tuple[int, float, np.ndarray]],
               events: list[dict[str, Any]]) -> mne.io.RawArray:
    import mne

    origin = segments[0][0]
    n_total = segments[-1][0] + segments[-1][2].shape[1] - origin
    data = np.full((meta.n_channels, n_total), np.nan)
    covered = np.zeros(n_total, dtype=bool)
    for first, _, seg in segments:
        i = first - origin
        data[:, i:i + seg.shape[1]] = seg
        covered[i:i + seg.shape[1]] = True
    sf = meta.sfreq
    onsets: list[float] = []
    durations: list[float] = []
    descs: list[str] = []
    for start, stop in _nan_runs(~covered):
        onsets.append(start / sf)
        durations.append((stop - start) / sf)
        descs.append("BAD_gap")
    for start, stop in _nan_runs(covered & np.isnan(data).any(axis=0)):
        onsets.append(start / sf)
        durations.append((stop - start) / sf)
        descs.append("BAD_nan")
    for row in events:
        desc = _annotation_desc(row)
        if desc is None or not 0 <= row["onset_sec"] <= n_total / sf:
            continue
        dur = row["payload"].get("duration_sec", 0.0)
        onsets.append(row["onset_sec"])
        durations.append(float(dur) if isinstance(dur, int | float) and dur >= 0 else 0.0)
        descs.append(desc)
    ch_types = [_MNE_CH_TYPE.get(t, t) for t in meta.ch_types]
    info = mne.create_info(list(meta.ch_names), sf, ch_types, verbose="error")
    info["subject_info"] = {"his_id": meta.subject_id}
    if meta.line_freq is not None:
        info["line_freq"] = meta.line_freq
    info.set_meas_date(datetime.fromisoformat(meta.created_utc).astimezone(timezone.utc))
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(onsets, durations, descs), verbose="error")
    return raw


# --------------------------------------------------------------------------- export


def _bids_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def export_session(folder: str | Path, fmt: str = "edf", out: str | Path | None = None,
                   key: bytes | str | Path | None = None, *, task: str = "music",
                   overwrite: bool = False) -> list[Path]:
    """Export a session through MNE as EDF+, FIF or a BIDS folder.

    File names carry only the pseudonym and the session id. EDF cannot hold
    NaN: gaps and NaN runs are written as 0 and stay marked by their
    ``BAD_gap``/``BAD_nan`` annotations. EDF stores 16-bit integers scaled
    per channel, so values come back within (max - min) / 65535 of each
    channel. EDF and FIF exports get an ``_events.json`` sidecar with the full
    events table. An encrypted session is exported in the clear: the export is
    an explicit decision to share the data.

    Parameters
    ----------
    folder : str or Path
        Session folder.
    fmt : {"edf", "fif", "bids"}
        Output format.
    out : str or Path or None
        Output folder; None = ``<folder>/export/<fmt>``.
    key : bytes or str or Path or None
        Key or key file for an encrypted session.
    task : str
        BIDS task label (letters and digits).
    overwrite : bool
        Replace existing output files.

    Returns
    -------
    paths : list of Path
        Files written.

    Raises
    ------
    ValueError
        If ``fmt`` is unknown, the consent does not include ``"export"``, or
        the session has no samples.
    """
    if fmt not in _EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {_EXPORT_FORMATS}, got {fmt!r}")
    if not _bids_label(task) or _bids_label(task) != task:
        raise ValueError(f"task must be letters and digits only, got {task!r}")
    folder = Path(folder)
    session = read_session(folder, key)
    meta = session.meta
    if not meta.consent.allows("export"):
        raise ValueError(f"consent scopes {meta.consent.scopes} of session {meta.session_id} "
                         f"do not include 'export'; exporting needs the subject's consent")
    if session.raw is None:
        raise ValueError(f"session {meta.session_id} has no samples to export")
    out = folder / "export" / fmt if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = session.raw
    ses = _bids_label(meta.session_id)
    stem = f"sub-{meta.subject_id}_ses-{ses}"
    written: list[Path] = []
    if fmt in ("edf", "bids"):
        raw = raw.copy()
        data = raw._data  # preloaded RawArray: replace NaN in place on the copy
        data[np.isnan(data)] = 0.0
    if fmt == "edf":
        import mne

        path = out / f"{stem}.edf"
        mne.export.export_raw(path, raw, fmt="edf", physical_range="channelwise",
                              overwrite=overwrite, verbose="error")
        written.append(path)
    elif fmt == "fif":
        path = out / f"{stem}_raw.fif"
        raw.save(path, overwrite=overwrite, verbose="error")
        written.append(path)
    else:
        written.extend(_export_bids(raw, meta, out, task, overwrite))
    if fmt in ("edf", "fif"):
        side = out / f"{stem}_events.json"  # shared by the EDF and FIF exports
        side.write_text(json.dumps({"session_id": meta.session_id,
                                    "subject_id": meta.subject_id,
                                    "events": session.events}, indent=1, default=str),
                        encoding="utf-8")
        written.append(side)
    if meta.encrypted:
        logger.warning("session %s is encrypted at rest; the export in %s is not",
                       meta.session_id, out)
    logger.info("exported session %s as %s: %s", meta.session_id, fmt,
                ", ".join(str(p) for p in written))
    return written


def _export_bids(raw: mne.io.BaseRaw, meta: SessionMeta, root: Path, task: str,
                 overwrite: bool) -> list[Path]:
    try:
        from mne_bids import BIDSPath, write_raw_bids
    except ImportError as e:
        raise ImportError("BIDS export needs mne-bids: pip install mne-bids") from e
    before = {p for p in root.rglob("*") if p.is_file()}
    # BIDS has no datatype for ECG/EMG/PPG alone; they go as auxiliary channels of "eeg".
    bids_path = BIDSPath(subject=meta.subject_id, session=_bids_label(meta.session_id),
                         task=task, datatype="eeg", root=root)
    if raw.info["line_freq"] is None:
        raw.info["line_freq"] = 50.0  # unknown; BIDS requires a number
        logger.warning("line frequency unknown; BIDS sidecar says 50 Hz "
                       "(set SessionMeta.line_freq)")
    write_raw_bids(raw, bids_path, format="EDF", allow_preload=True, overwrite=overwrite,
                   verbose="error")
    return sorted(p for p in root.rglob("*") if p.is_file() and p not in before)


# --------------------------------------------------------------------------- delete


def delete_session(folder: str | Path, key_file: str | Path | None = None, *,
                   dry_run: bool = False) -> list[Path]:
    """Delete a session folder and everything in it (exports inside it included).

    Parameters
    ----------
    folder : str or Path
        Session folder; refused unless it holds a valid ``session.json``.
    key_file : str or Path or None
        Also delete this key file (crypto-shredding: copies of the encrypted
        data elsewhere become unreadable).
    dry_run : bool
        List what would be removed and remove nothing.

    Returns
    -------
    removed : list of Path
        Files removed (or that would be), the key file last.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a session folder.
    ValueError
        If ``folder`` is a symbolic link.

    Notes
    -----
    Files are unlinked, not overwritten: on SSDs and journaling or
    copy-on-write file systems overwriting gives no guarantee. Encrypt at rest
    and delete the key for an erase that holds.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise ValueError(f"{folder} is a symbolic link; pass the session folder itself")
    _load_meta_doc(folder)  # refuses non-sessions
    files = sorted((p for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()),
                   key=lambda p: (p.name == META_FILE, str(p)))  # meta last
    key_path = Path(key_file) if key_file is not None else None
    if key_path is not None and not key_path.is_file():
        raise FileNotFoundError(f"key file {key_path} does not exist")
    removed = [*files, *([key_path] if key_path is not None else [])]
    if dry_run:
        return removed
    for p in files:
        p.unlink()
    shutil.rmtree(folder)  # the now-empty sub-folders
    if key_path is not None:
        key_path.unlink()
    logger.info("deleted session folder %s (%d files)%s", folder, len(files),
                f" and key file {key_path}" if key_path else "")
    return removed


# --------------------------------------------------------------------------- commands


@dataclass
class ExportConfig:
    """Export a recorded session as EDF+, FIF or BIDS (``st-agent export``)."""

    session: Annotated[Path, tyro.conf.Positional]
    """Session folder (holds session.json, samples.seg, events.jsonl)."""
    format: Literal["edf", "fif", "bids"] = "edf"
    """Output format: EDF+ file, MNE FIF file, or a BIDS folder (EDF inside)."""
    out: Path | None = None
    """Output folder; None = <session>/export/<format>."""
    key_file: Path | None = None
    """Key file of an encrypted session (never inside the session folder)."""
    task: str = "music"
    """BIDS task label (letters and digits)."""
    overwrite: bool = False
    """Replace existing output files."""


@dataclass
class DeleteConfig:
    """Delete a recorded session and everything in its folder (``st-agent delete``)."""

    session: Annotated[Path, tyro.conf.Positional]
    """Session folder; refused unless it holds a valid session.json."""
    key_file: Path | None = None
    """Also delete this key file, so encrypted copies elsewhere become unreadable."""
    dry_run: bool = False
    """List what would be removed; remove nothing."""


def run_export(cfg: ExportConfig) -> list[Path]:
    """Do what ``st-agent export`` does; return the files written."""
    return export_session(cfg.session, cfg.format, cfg.out, cfg.key_file, task=cfg.task,
                          overwrite=cfg.overwrite)


def run_delete(cfg: DeleteConfig) -> list[Path]:
    """Do what ``st-agent delete`` does; return the files removed (or, dry run, listed)."""
    return delete_session(cfg.session, cfg.key_file, dry_run=cfg.dry_run)
