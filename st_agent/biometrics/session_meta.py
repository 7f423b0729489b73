"""What a recording says about itself: ids, consent, channels, the folder layout.

:class:`SessionMeta` and :class:`ConsentRecord` are stored in ``session.json``;
the errors and file names here are shared by the writer
(:mod:`st_agent.biometrics.recording`), the reader
(:mod:`st_agent.biometrics.session_reader`) and export
(:mod:`st_agent.biometrics.export`).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from st_agent import __version__
from st_agent.errors import DataError
from st_agent.types import CH_TYPES, SignalChunk

__all__ = [
    "CONSENT_SCOPES",
    "EVENTS_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_CHANNELS",
    "META_FILE",
    "SAMPLES_FILE",
    "SFREQ_RANGE_HZ",
    "ConsentRecord",
    "CorruptSessionError",
    "DiskFullError",
    "EncryptionKeyError",
    "RecordingError",
    "SessionMeta",
    "SessionNotFoundError",
    "check_pseudonym",
    "new_pseudonym",
    "new_session_id",
]

FORMAT_NAME = "st-agent-recording"
FORMAT_VERSION = 1
META_FILE = "session.json"
SAMPLES_FILE = "samples.seg"
EVENTS_FILE = "events.jsonl"

#: What a subject may consent to.
CONSENT_SCOPES = ("record", "store_local", "export", "share_pseudonymized")
_GIVEN_BY = ("participant", "legal_guardian", "participant_and_guardian")
#: Sample types a recording may store.
DTYPES = ("float32", "float64")

#: Sampling rates a recording may have, Hz (inclusive). Lower end: the estimator's
#: windows are 2 s (``st_agent.biometrics.estimator_config``), so below 1 Hz a window
#: holds under 2 samples; slow sensors the project reads are above it (EDA at 4 Hz on
#: the Empatica E4, its data sheet). Upper end: the fastest EEG amplifiers sample at
#: 16 kHz (BioSemi ActiveTwo) and 38.4 kHz (g.tec g.HIamp), per their data sheets;
#: 100 kHz leaves margin. Anything outside is a corrupt or crafted file.
SFREQ_RANGE_HZ = (1.0, 100_000.0)
#: Most channels a recording may have: high-density EEG caps have 256 electrodes
#: (EGI HydroCel GSN 256); 1024 leaves margin for auxiliary channels.
MAX_CHANNELS = 1024
_MAX_NAME_LEN = 64  # characters per channel name (EDF allows 16, FIF 15; margin)

_PSEUDONYM_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class RecordingError(RuntimeError):
    """The recording cannot go on or cannot be read (disk full, closed, bad key...)."""


class DiskFullError(RecordingError):
    """The disk filled up (ENOSPC, EFBIG, EDQUOT); recording stopped, data so far kept."""


class EncryptionKeyError(RecordingError, DataError):
    """An encrypted session was opened without its key, or with another key."""


class CorruptSessionError(RecordingError, DataError):
    """A session file (``session.json``, ``samples.seg``) is malformed or holds values
    out of range; the message names the file, the place (field or segment) and the value."""


class SessionNotFoundError(DataError, FileNotFoundError):
    """The folder does not exist or holds no ``session.json``."""


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


def check_pseudonym(subject_id: object) -> str:
    """Return ``subject_id`` if it is a pseudonym; raise ValueError naming the fix."""
    if not isinstance(subject_id, str) or not _PSEUDONYM_RE.fullmatch(subject_id):
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


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a valid session id; raise ValueError otherwise."""
    if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(
            f"session_id must be 1-64 letters, digits, '-' or '_' starting with a letter or "
            f"digit, got {session_id!r}; use new_session_id()"
        )
    return session_id


def utc_now_iso() -> str:
    """The current UTC time, ISO 8601 to the second, with its time zone."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_iso(name: str, value: object) -> str:
    """Return ``value`` if it is an ISO 8601 time with a time zone (``name`` names it)."""
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
    given_at_utc: str = field(default_factory=utc_now_iso)
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
        check_iso("given_at_utc", self.given_at_utc)
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
    session_number : int or None
        This session's number among the subject's sessions (1 = first), handed out by
        the local subject registry (:mod:`st_agent.subjects`) when the session starts;
        BIDS ``ses-`` labels come from it. None: unknown (a session recorded without
        the registry, or before it existed).

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
    created_utc: str = field(default_factory=utc_now_iso)
    software: str = f"st_agent {__version__}"
    line_freq: float | None = None
    encrypted: bool = False
    key_id: str | None = None
    dtype: str = "float32"
    segment_samples: int = 0
    session_number: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.consent, dict):
            object.__setattr__(self, "consent", ConsentRecord(**self.consent))
        if not isinstance(self.consent, ConsentRecord):
            raise TypeError(f"consent must be a ConsentRecord, got "
                            f"{type(self.consent).__name__}")
        lo, hi = SFREQ_RANGE_HZ
        if not (_is_number(self.sfreq) and math.isfinite(self.sfreq)
                and lo <= self.sfreq <= hi):
            raise ValueError(f"sfreq must be a number of Hz in [{lo:g}, {hi:g}] "
                             f"(SFREQ_RANGE_HZ), got {self.sfreq!r}")
        object.__setattr__(self, "sfreq", float(self.sfreq))
        names, types = tuple(self.ch_names), tuple(self.ch_types)
        object.__setattr__(self, "ch_names", names)
        object.__setattr__(self, "ch_types", types)
        if not names or len(names) != len(types) or len(names) > MAX_CHANNELS:
            raise ValueError(f"need one type per channel name and 1-{MAX_CHANNELS} channels "
                             f"(MAX_CHANNELS), got {len(names)} names and {len(types)} types")
        bad_names = [n for n in names if not isinstance(n, str) or not 0 < len(n) <= _MAX_NAME_LEN]
        if bad_names:
            raise ValueError(f"ch_names must be strings of 1-{_MAX_NAME_LEN} characters, got "
                             f"{bad_names[:3]!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        bad = sorted(set(types) - set(CH_TYPES))
        if bad:
            raise ValueError(f"unknown channel types {bad}; allowed: {CH_TYPES}")
        check_pseudonym(self.subject_id)
        check_session_id(self.session_id)
        check_iso("created_utc", self.created_utc)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.line_freq is not None and not (_is_number(self.line_freq)
                                               and math.isfinite(self.line_freq)
                                               and 0 < self.line_freq <= hi):
            raise ValueError(f"line_freq must be None or a positive number of Hz, got "
                             f"{self.line_freq!r}")
        _check_bookkeeping(self)
        n = self.session_number
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                              or not 1 <= n <= 1_000_000):
            raise ValueError(f"session_number must be None or a whole number in [1, "
                             f"1000000], got {n!r}")

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
    def from_json(cls, d: dict[str, Any], source: str = META_FILE) -> SessionMeta:
        """Inverse of :meth:`to_json`; validates the type and range of every field.

        Parameters
        ----------
        d : dict
            The ``"meta"`` block of ``session.json``.
        source : str
            The file it came from, named in errors.

        Raises
        ------
        CorruptSessionError
            If a field is missing, unknown, of the wrong type or out of range; the
            message names ``source``, the field, the value and what is allowed.
        """
        if not isinstance(d, dict):
            raise CorruptSessionError(f"{source}: 'meta' must be an object, got "
                                      f"{type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise CorruptSessionError(f"{source}: unknown session meta fields {unknown}; "
                                      f"known: {sorted(known)}")
        missing = sorted(n for n in _REQUIRED_FIELDS if n not in d)
        if missing:
            raise CorruptSessionError(f"{source}: session meta lacks the fields {missing}")
        for name, value in d.items():
            kinds, allowed = _FIELD_TYPES[name]
            if not _has_kind(value, kinds):
                raise CorruptSessionError(f"{source}: field 'meta.{name}' is {value!r:.80}; "
                                          f"allowed: {allowed}")
        try:
            return cls(**d)
        except (ValueError, TypeError) as e:
            raise CorruptSessionError(f"{source}: {e}") from e


def _is_number(x: object) -> bool:
    """A real int or float (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _has_kind(value: object, kinds: tuple[str, ...]) -> bool:
    checks = {"number": _is_number, "int": lambda v: isinstance(v, int)
              and not isinstance(v, bool), "str": lambda v: isinstance(v, str),
              "bool": lambda v: isinstance(v, bool), "none": lambda v: v is None,
              "dict": lambda v: isinstance(v, dict),
              "strs": lambda v: isinstance(v, list | tuple)
              and all(isinstance(x, str) for x in v)}
    return any(checks[k](value) for k in kinds)


#: Type of each ``session.json`` meta field, and the message saying what is allowed.
_FIELD_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "sfreq": (("number",), f"a number of Hz in [{SFREQ_RANGE_HZ[0]:g}, "
                           f"{SFREQ_RANGE_HZ[1]:g}]"),
    "ch_names": (("strs",), f"a list of 1-{MAX_CHANNELS} strings"),
    "ch_types": (("strs",), f"a list of strings from {CH_TYPES}"),
    "consent": (("dict",), "an object with text_version, scopes, given_at_utc, given_by"),
    "subject_id": (("str",), "a pseudonym string"),
    "session_id": (("str",), "a session id string"),
    "created_utc": (("str",), "an ISO 8601 time string"),
    "software": (("str",), "a string"),
    "line_freq": (("number", "none"), "null or a number of Hz"),
    "encrypted": (("bool",), "true or false"),
    "key_id": (("str", "none"), "null or a key fingerprint string"),
    "dtype": (("str",), f"one of {DTYPES}"),
    "segment_samples": (("int",), "a whole number of samples, 0 to sfreq"),
    "session_number": (("int", "none"), "null or the subject's session number (1, 2, ...)"),
}
_REQUIRED_FIELDS = ("sfreq", "ch_names", "ch_types", "consent")


def _check_bookkeeping(meta: SessionMeta) -> None:
    """Fields the recorder sets: types and ranges (a segment holds at most one second)."""
    if not isinstance(meta.encrypted, bool):
        raise ValueError(f"encrypted must be true or false, got {meta.encrypted!r}")
    if meta.encrypted and not isinstance(meta.key_id, str):
        raise ValueError(f"key_id must be the key's fingerprint in an encrypted session, got "
                         f"{meta.key_id!r}")
    n = meta.segment_samples
    if not (isinstance(n, int) and not isinstance(n, bool)
            and 0 <= n <= max(1, round(meta.sfreq))):
        raise ValueError(f"segment_samples must be a whole number in [0, "
                         f"{max(1, round(meta.sfreq))}] (one second at {meta.sfreq:g} Hz), "
                         f"got {n!r}")
