"""Authenticated consent: the consent record of a session cannot be changed by hand.

A session's consent (scopes, consent-text version, time, who gave it) sits in its
``session.json`` in the clear, so that anyone can read what was agreed to. Beside it
the recorder writes a ``consent_auth`` block: an HMAC-SHA256 over the canonical JSON of
the consent record bound to its session (session id, subject pseudonym, creation time,
encryption flag, key fingerprint, session number)::

    "consent_auth": {"scheme": "hmac-sha256", "key": "session" | "local",
                     "key_id": "<fingerprint>", "mac": "<64 hex digits>"}

The HMAC key is derived (HMAC-SHA256 with a fixed label, a one-block HKDF-Expand) from

* ``"session"``: the session's AES-256 key, for an encrypted session. Only a holder of
  the key file can write a record that verifies; anyone who can read the session holds
  it anyway.
* ``"local"``: for a plaintext session, a random per-user key in the user's st-agent
  config folder (``consent.key``, created ``0600`` on first use, in
  :func:`st_agent.paths.config_dir`).

What this protects against: a consent record edited after recording (scopes added by
hand, a subject or session swapped, a record copied from another session) by anyone who
cannot read the key; an accidental edit. What it does **not** protect against: someone
who can read the key (the same OS account or root for the local key, any holder of the
session key file) can write a record that verifies; it is not a signature a third party
can check, and it does not prove that a person agreed, only that st-agent wrote these
scopes when the session was recorded (or re-consented with :func:`record_consent`).
A plaintext session moved to another account or machine cannot be verified there
without that account's ``consent.key``.

:func:`verify_consent` is what export runs; :func:`record_consent` (``st-agent
consent``) records a listener's new consent on an existing session, keeping the
previous records in ``consent_history``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import tyro

from st_agent.biometrics.session_meta import (
    CONSENT_SCOPES,
    META_FILE,
    ConsentRecord,
    EncryptionKeyError,
    SessionMeta,
    utc_now_iso,
)
from st_agent.errors import DataError

__all__ = ["CONSENT_AUTH_FIELD", "ConsentConfig", "ConsentKeyError", "ConsentTamperedError",
           "UnauthenticatedConsentError", "local_consent_key_path", "record_consent",
           "run_consent", "seal_consent", "try_seal_consent", "verify_consent",
           "was_sealed_here"]

logger = logging.getLogger(__name__)

#: Top-level field of ``session.json`` holding the authentication of the consent record.
CONSENT_AUTH_FIELD = "consent_auth"
_SCHEME = "hmac-sha256"
_LABEL = b"st-agent consent-auth key v1"
_PURPOSE = "st-agent consent record v1"
_LOCAL_KEY_NAME = "consent.key"
_RECONSENT = ("record it again with `st-agent consent <session folder> --scopes "
              "record,store_local,export` (with the listener's agreement; add --key-file for "
              "an encrypted session)")


class ConsentTamperedError(DataError):
    """The consent record in ``session.json`` does not match its authentication."""


class UnauthenticatedConsentError(DataError):
    """The session has no authenticated consent record (older session, or removed)."""


class ConsentKeyError(DataError):
    """The key that authenticates a plaintext session's consent is missing or another."""


def local_consent_key_path() -> Path:
    """Where this user's local consent key lives: ``<config_dir>/consent.key``."""
    from st_agent.paths import config_dir

    return config_dir() / _LOCAL_KEY_NAME


def _local_key(create: bool) -> bytes | None:
    """This user's local consent key; created (``0600``) when ``create`` and missing."""
    from st_agent.biometrics.crypto import create_key_file, load_key_file

    path = local_consent_key_path()
    if path.exists() or path.is_symlink():
        return load_key_file(path)
    if not create:
        return None
    try:
        return create_key_file(path)
    except FileExistsError:  # another process made it meanwhile
        return load_key_file(path)


def _payload(meta: SessionMeta) -> bytes:
    """The canonical bytes the MAC covers: the consent record bound to its session."""
    doc = {"purpose": _PURPOSE, "session_id": meta.session_id, "subject_id": meta.subject_id,
           "created_utc": meta.created_utc, "encrypted": meta.encrypted,
           "key_id": meta.key_id, "session_number": meta.session_number,
           "consent": {"text_version": meta.consent.text_version,
                       "scopes": list(meta.consent.scopes),
                       "given_at_utc": meta.consent.given_at_utc,
                       "given_by": meta.consent.given_by}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mac(key: bytes, meta: SessionMeta) -> str:
    derived = hmac.new(key, _LABEL, hashlib.sha256).digest()
    return hmac.new(derived, _payload(meta), hashlib.sha256).hexdigest()


def seal_consent(meta: SessionMeta, session_key: bytes | None) -> dict[str, Any]:
    """The ``consent_auth`` block for ``meta``'s consent record.

    Parameters
    ----------
    meta : SessionMeta
        The session's final metadata (``encrypted`` and ``key_id`` set).
    session_key : bytes or None
        The session's 32-byte key when it is encrypted; None: the local consent key
        is used (created on first use).

    Returns
    -------
    auth : dict
        ``{"scheme", "key", "key_id", "mac"}`` (JSON types).

    Raises
    ------
    EncryptionKeyError
        If the local consent key file is damaged or cannot be created.
    """
    from st_agent.biometrics.crypto import key_id

    if meta.encrypted != (session_key is not None):
        raise ValueError(f"session_key must be given exactly when the session is encrypted "
                         f"(encrypted={meta.encrypted})")
    if session_key is not None:
        return {"scheme": _SCHEME, "key": "session", "key_id": key_id(session_key),
                "mac": _mac(session_key, meta)}
    local = _local_key(create=True)
    assert local is not None
    return {"scheme": _SCHEME, "key": "local", "key_id": key_id(local),
            "mac": _mac(local, meta)}


#: One session id per line: the sessions this account sealed (so a removed seal is caught).
_SEALED_LEDGER = "sealed_sessions.txt"
_MAX_LEDGER_BYTES = 64 << 20


def _ledger_path() -> Path:
    from st_agent.paths import config_dir

    return config_dir() / _SEALED_LEDGER


def was_sealed_here(session_id: str) -> bool:
    """Whether this account sealed the consent of ``session_id`` when recording it."""
    path = _ledger_path()
    try:
        if path.stat().st_size > _MAX_LEDGER_BYTES:
            logger.warning("%s is larger than %d bytes; not read", path, _MAX_LEDGER_BYTES)
            return False
        return session_id in path.read_text(encoding="ascii", errors="replace").split()
    except FileNotFoundError:
        return False


def _note_sealed(session_id: str) -> None:
    """Append ``session_id`` to this account's ledger of sealed sessions (mode 0600)."""
    if was_sealed_here(session_id):
        return
    path = _ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (session_id + "\n").encode("ascii"))
    finally:
        os.close(fd)


def try_seal_consent(meta: SessionMeta, session_key: bytes | None) -> dict[str, Any] | None:
    """:func:`seal_consent`, or None (and a warning) when the local consent key cannot be
    read or made: the session still records, and export says it is not authenticated.
    A sealed session is noted in this account's ledger (:func:`was_sealed_here`), so that
    removing its seal later is caught rather than taken for an old session."""
    try:
        auth = seal_consent(meta, session_key)
    except (OSError, EncryptionKeyError) as e:
        logger.warning("session %s: consent record not authenticated (%s); export will "
                       "refuse it until `st-agent consent` records it again", meta.session_id, e)
        return None
    try:
        _note_sealed(meta.session_id)
    except OSError as e:
        logger.warning("session %s: could not note the seal in %s (%s)", meta.session_id,
                       _ledger_path(), e)
    return auth


def _check_auth_block(auth: object, where: str) -> dict[str, str]:
    fields = ("scheme", "key", "key_id", "mac")
    if not (isinstance(auth, dict) and set(auth) == set(fields)
            and all(isinstance(auth[f], str) for f in fields)
            and auth["scheme"] == _SCHEME and auth["key"] in ("session", "local")
            and re.fullmatch(r"[0-9a-f]{64}", auth["mac"])):
        raise ConsentTamperedError(
            f"{where}: field '{CONSENT_AUTH_FIELD}' is malformed ({auth!r:.120}); it must be "
            f"an object with {list(fields)} (scheme {_SCHEME!r}, key 'session' or 'local'). "
            f"Restore the original session.json, or {_RECONSENT}")
    return auth


def verify_consent(doc: dict[str, Any], meta: SessionMeta, session_key: bytes | None, *,
                   where: str = META_FILE, accept_unauthenticated: bool = False) -> str:
    """Check that ``meta``'s consent record is the one the recorder authenticated.

    Parameters
    ----------
    doc : dict
        The parsed ``session.json``.
    meta : SessionMeta
        Its ``meta`` block, parsed.
    session_key : bytes or None
        The session's key (an encrypted session is read with it first).
    where : str
        The file named in errors.
    accept_unauthenticated : bool
        Accept a session without a ``consent_auth`` block (recorded before consent was
        authenticated), with a warning. A record that fails verification is never
        accepted.

    Returns
    -------
    how : str
        ``"session key"``, ``"local key"`` or ``"unauthenticated (accepted)"``.

    Raises
    ------
    UnauthenticatedConsentError
        No ``consent_auth`` block and ``accept_unauthenticated`` is False.
    ConsentTamperedError
        The block is malformed or the MAC does not match: the record was edited.
    ConsentKeyError
        A plaintext session whose local consent key is not this user's.
    """
    from st_agent.biometrics.crypto import key_id

    auth = doc.get(CONSENT_AUTH_FIELD)
    sid = meta.session_id
    if auth is None:
        if was_sealed_here(sid):
            raise ConsentTamperedError(
                f"{where}: session {sid} was recorded with an authenticated consent record "
                f"on this account, and its '{CONSENT_AUTH_FIELD}' block has been removed: "
                f"session.json was edited. Restore the original session.json, or {_RECONSENT}")
        if accept_unauthenticated:
            logger.warning("session %s: consent record not authenticated; accepted as asked "
                           "(--accept-unauthenticated): scopes %s", sid, meta.consent.scopes)
            return "unauthenticated (accepted)"
        raise UnauthenticatedConsentError(
            f"{where}: session {sid} has no authenticated consent record (it was recorded "
            f"before st-agent authenticated consent, or the record was removed), so its "
            f"scopes {list(meta.consent.scopes)} cannot be trusted; {_RECONSENT}, or pass "
            f"--accept-unauthenticated to rely on the plain record on your own responsibility")
    auth = _check_auth_block(auth, where)
    if (auth["key"] == "session") != meta.encrypted:
        raise ConsentTamperedError(
            f"{where}: session {sid} says encrypted={meta.encrypted} but its consent was "
            f"authenticated with the {auth['key']} key: session.json was edited. Restore the "
            f"original session.json, or {_RECONSENT}")
    if auth["key"] == "session":
        assert session_key is not None, "an encrypted session is read with its key"
        key = session_key
    else:
        key = _local_key(create=False)
        path = local_consent_key_path()
        if key is None or key_id(key) != auth["key_id"]:
            found = "does not exist" if key is None else f"has key id {key_id(key)}"
            raise ConsentKeyError(
                f"{where}: cannot verify the consent of session {sid}: it was authenticated "
                f"with the local consent key {auth['key_id']} of the account that recorded "
                f"it, and this account's {path} {found}. Export on that account, or point "
                f"ST_AGENT_CONFIG_DIR at a folder holding its consent.key, or {_RECONSENT}")
    if not hmac.compare_digest(_mac(key, meta), auth["mac"]):
        raise ConsentTamperedError(
            f"{where}: the consent record of session {sid} (scopes "
            f"{list(meta.consent.scopes)}, given {meta.consent.given_at_utc}) does not match "
            f"its authentication: session.json was edited after recording. Consent cannot be "
            f"changed by editing the file: restore the original session.json, or {_RECONSENT}")
    return f"{auth['key']} key"


def record_consent(folder: str | Path, scopes: tuple[str, ...], key: bytes | str | Path | None
                   = None, *, text_version: str = "st-agent-local-v1",
                   given_by: str = "participant") -> ConsentRecord:
    """Record a listener's new consent on an existing session, authenticated.

    The previous record and its authentication move to ``consent_history`` in
    ``session.json`` (replaced atomically); samples and events are not touched.

    Parameters
    ----------
    folder : str or Path
        Session folder.
    scopes : tuple of str
        What the listener now agrees to (from :data:`CONSENT_SCOPES`, with ``record``).
    key : bytes or str or Path or None
        Key or key file of an encrypted session.
    text_version : str
        Version of the consent text the listener was shown.
    given_by : str
        ``participant``, ``legal_guardian`` or ``participant_and_guardian``.

    Returns
    -------
    consent : ConsentRecord
        The record now in force.

    Raises
    ------
    EncryptionKeyError
        An encrypted session without its key, or with another key.
    ValueError
        Bad scopes, text version or ``given_by``.
    """
    from st_agent.biometrics.crypto import key_id, resolve_key
    from st_agent.biometrics.segments import write_json_atomic
    from st_agent.biometrics.session_reader import load_meta_doc

    folder = Path(folder)
    if "record" not in scopes:
        raise ValueError(f"scopes must include 'record' (a recorded session), got {scopes!r}")
    doc = load_meta_doc(folder)
    meta = SessionMeta.from_json(doc.get("meta"), str(folder / META_FILE))
    key_bytes = resolve_key(key, folder)
    if meta.encrypted and (key_bytes is None or key_id(key_bytes) != meta.key_id):
        raise EncryptionKeyError(
            f"session {meta.session_id} is encrypted (key id {meta.key_id}); pass the key "
            f"file it was recorded with (--key-file)"
            + ("" if key_bytes is None else f", not the key with id {key_id(key_bytes)}"))
    consent = ConsentRecord(text_version, tuple(scopes), utc_now_iso(), given_by)
    new_meta = replace(meta, consent=consent)
    history = list(doc.get("consent_history") or [])
    history.append({"consent": doc["meta"]["consent"], CONSENT_AUTH_FIELD:
                    doc.get(CONSENT_AUTH_FIELD), "replaced_utc": consent.given_at_utc})
    doc["meta"] = new_meta.to_json()
    doc[CONSENT_AUTH_FIELD] = seal_consent(new_meta, key_bytes if meta.encrypted else None)
    doc["consent_history"] = history
    write_json_atomic(folder / META_FILE, doc)
    _note_sealed(meta.session_id)
    logger.info("session %s: consent now %s (was %s)", meta.session_id, consent.scopes,
                meta.consent.scopes)
    return consent


@dataclass
class ConsentConfig:
    """Record a listener's new consent on a recorded session (``st-agent consent``)."""

    session: Annotated[Path, tyro.conf.Positional]
    """Session folder (holds session.json)."""
    scopes: str = "record,store_local,export"
    """What the listener now agrees to, comma-separated, from record, store_local,
    export, share_pseudonymized (must include record)."""
    key_file: Path | None = None
    """Key file of an encrypted session."""
    text_version: str = "st-agent-local-v1"
    """Version of the consent text the listener was shown."""
    given_by: str = "participant"
    """participant, legal_guardian or participant_and_guardian."""

    def scope_tuple(self) -> tuple[str, ...]:
        """The scopes, checked against :data:`CONSENT_SCOPES`."""
        scopes = tuple(dict.fromkeys(s.strip() for s in self.scopes.split(",") if s.strip()))
        bad = [s for s in scopes if s not in CONSENT_SCOPES]
        if bad or "record" not in scopes:
            raise ValueError(f"--scopes {self.scopes!r}: give comma-separated scopes from "
                             f"{list(CONSENT_SCOPES)} including 'record'"
                             + (f" (unknown: {bad})" if bad else ""))
        return scopes

    def __post_init__(self) -> None:
        self.scope_tuple()


def run_consent(cfg: ConsentConfig) -> ConsentRecord:
    """Do what ``st-agent consent`` does; return the record now in force."""
    return record_consent(cfg.session, cfg.scope_tuple(), cfg.key_file,
                          text_version=cfg.text_version, given_by=cfg.given_by)
