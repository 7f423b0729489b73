"""Encryption at rest for session recordings: AES-256-GCM keys and key files.

A key lives in a JSON key file (``{"cipher", "key_id", "key"}``, created
``0600``) that must not be inside a session folder: deleting the key file makes
the session unreadable ("crypto-shredding"). Only the key's fingerprint
(:func:`key_id`) is stored with the session, to tell a wrong key from a corrupt
file.

Encrypted records are ``nonce (12 bytes) + ciphertext + tag (16 bytes)``; the
associated data binds each record to its session and position (see
:func:`segment_aad` and :func:`event_aad`). ``cryptography`` is imported only
when a key is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

from st_agent.biometrics.session_meta import EncryptionKeyError, check_session_id

__all__ = ["create_key_file", "default_key_file", "load_key_file"]

logger = logging.getLogger(__name__)

NONCE_LEN = 12
TAG_LEN = 16
#: Bytes an encrypted record adds to its plain text.
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN
_KEY_LEN = 32  # AES-256
_SEG_AAD = b"st-agent-seg"
_EVT_AAD = b"st-agent-evt"


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
    check_session_id(session_id)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "st-agent" / "keys" / f"{session_id}.key"


def key_id(key: bytes) -> str:
    """Fingerprint of a key (16 hex digits); safe to store beside the data."""
    return hashlib.sha256(b"st-agent key id\x00" + key).hexdigest()[:16]


def _check_key(key: object, source: str = "key") -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != _KEY_LEN:
        shown = f"{len(key)} bytes" if isinstance(key, bytes | bytearray) else type(key).__name__
        raise EncryptionKeyError(f"{source} must be {_KEY_LEN} bytes (AES-256), got {shown}; "
                                 "the key file is damaged, or make a new one with "
                                 "create_key_file() (`--key-file NEW_PATH`)")
    return bytes(key)


#: A key file is a small JSON object; anything larger is not one (and is not read).
_MAX_KEY_FILE_BYTES = 4096
_EXPECTED = ("expected a key file written by st-agent (a JSON object with \"cipher\", "
             "\"key_id\" and \"key\", e.g. made by `st-agent session --key-file NEW_PATH`)")


def _path_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as an existing key file, in words; None if it is a file."""
    if path.is_dir():
        return "is a folder, not a key file"
    if not path.exists():
        return ("does not exist (a dangling link)" if path.is_symlink() else "does not exist")
    if not path.is_file():
        return "is not a regular file (a device, socket or pipe)"
    return None


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
        The 32-byte key, to pass to :class:`~st_agent.biometrics.recording.SessionRecorder`.

    Raises
    ------
    FileExistsError
        If ``path`` is an existing file (a key is never overwritten: that would
        make the sessions encrypted with it unreadable).
    EncryptionKeyError
        If ``path`` is a folder or another non-file, or cannot be created
        (permissions, read-only disk); the message names the path.
    """
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise EncryptionKeyError(f"cannot create key file {path}: it {_path_problem(path)}; "
                                 "give the path of a new file, e.g. "
                                 f"{default_key_file('SESSION')}")
    key = secrets.token_bytes(_KEY_LEN)
    doc = {"cipher": "AES-256-GCM", "key_id": key_id(key),
           "key": base64.b64encode(key).decode("ascii")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(f"key file {path} exists already; a key is never overwritten "
                              "(sessions encrypted with it would become unreadable): use it "
                              "as it is, or give a new path") from None
    except OSError as e:
        raise EncryptionKeyError(f"cannot create key file {path}: {e.strerror or e}; choose a "
                                 "writable path for --key-file") from e
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
        If the path is missing, a folder, a device, unreadable, larger than a key
        file, or not a key file (not JSON, fields missing, a key of the wrong
        length or not matching its ``key_id``); the message names the path, what
        it is and what was expected.
    """
    path = Path(path)
    problem = _path_problem(path)
    if problem is not None:
        raise EncryptionKeyError(f"key file {path} {problem}; {_EXPECTED}")
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise EncryptionKeyError(f"cannot read key file {path}: {e.strerror or e}; check "
                                 "its permissions (it should be yours, mode 600)") from e
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise EncryptionKeyError(f"{path} is larger than {_MAX_KEY_FILE_BYTES} bytes, not a "
                                 f"key file; {_EXPECTED}")
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict):
            raise TypeError(f"the file holds a JSON {type(doc).__name__}, not an object")
        key = base64.b64decode(doc["key"], validate=True)
    except KeyError:
        raise EncryptionKeyError(f"{path} has no \"key\" field; {_EXPECTED}") from None
    except (ValueError, TypeError) as e:  # UnicodeDecodeError, JSONDecodeError, binascii
        raise EncryptionKeyError(f"{path} is not an st-agent key file ({e}); "
                                 f"{_EXPECTED}") from e
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("key file %s is readable by others; chmod 600 it", path)
    key = _check_key(key, f"the key in {path}")
    if "key_id" in doc and doc["key_id"] != key_id(key):
        raise EncryptionKeyError(f"{path}: the key does not match the file's key_id "
                                 f"{doc['key_id']!r}; the key file is damaged")
    return key


def resolve_key(key: bytes | str | Path | None, folder: Path) -> bytes | None:
    """Key bytes from bytes or a key-file path; refuse a key kept in the session folder.

    Parameters
    ----------
    key : bytes or str or Path or None
        A 32-byte key, a key file, or None (no encryption).
    folder : Path
        The session folder the key is for.

    Returns
    -------
    key : bytes or None
        The 32-byte key, or None when ``key`` is None.

    Raises
    ------
    EncryptionKeyError
        If the key has the wrong length, the key file is bad, or it lies inside ``folder``.
    """
    if key is None or isinstance(key, bytes | bytearray):
        return None if key is None else _check_key(key)
    path = Path(key).resolve()
    if path.is_relative_to(folder.resolve()):
        raise EncryptionKeyError(
            f"key file {path} is inside the session folder {folder}; keep keys apart from "
            f"the data (e.g. {default_key_file('SESSION')})"
        )
    return load_key_file(path)


def aead_for(key: bytes) -> Any:
    """An AES-256-GCM cipher object (``cryptography``'s ``AESGCM``) for ``key``."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # pragma: no cover - dependency missing
        raise ImportError("encryption needs the 'cryptography' package: "
                          "pip install cryptography") from e
    return AESGCM(key)


def segment_aad(session_id: bytes, header: bytes) -> bytes:
    """Associated data of a sample segment: its session and its 48-byte header."""
    return _SEG_AAD + session_id + header


def event_aad(session_id: bytes, seq: int) -> bytes:
    """Associated data of an event line: its session and its sequence number."""
    return _EVT_AAD + session_id + struct.pack("<Q", seq)


def seal(aead: Any, plain: bytes, aad: bytes) -> bytes:
    """Encrypt ``plain``: a fresh random nonce followed by ciphertext and tag."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + aead.encrypt(nonce, plain, aad)


def unseal(aead: Any, sealed: bytes, aad: bytes) -> bytes | None:
    """Inverse of :func:`seal`; None when the record fails authentication."""
    from cryptography.exceptions import InvalidTag

    try:
        return aead.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], aad)
    except InvalidTag:
        return None
