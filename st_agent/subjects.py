"""One subject across sessions: the local subject registry and ``st-agent subjects``.

A subject is a pseudonym (3-32 letters and digits with at least one digit,
:func:`check_pseudonym`): never a name. ``st-agent session|demo|jam --subject S``
records the session under ``S``; without ``--subject`` a **new** pseudonym is made for
that session, registered, and printed with how to reuse it (a default shared pseudonym
would silently merge different people's sessions, which personalisation and the
longitudinal report must never do).

The registry is one JSON file, ``<data_dir>/subjects.json``
(:func:`st_agent.paths.data_dir`; ``$ST_AGENT_DATA_DIR`` overrides), replaced
atomically under a lock::

    {"format": "st-agent-subjects", "version": 1,
     "subjects": {"s04817263": {"created_utc": "...",
                                "sessions": [{"folder": "/abs/path", "number": 1,
                                              "registered_utc": "..."}]}}}

It hands out each subject's session numbers (BIDS ``ses-`` labels) and remembers
where their sessions were recorded; :func:`sessions_for_subject` also finds sessions
by scanning a folder of recordings (every ``session.json`` whose subject matches), so a
session recorded elsewhere and copied under ``runs/`` is found too. Personal files
(a fitted ``listener.json``, a subject's controller) live in :func:`subject_dir`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_agent.biometrics.session_meta import (
    META_FILE,
    check_pseudonym,
    new_pseudonym,
    utc_now_iso,
)
from st_agent.errors import DataError, UsageError

__all__ = ["PERSONAL_CALIBRATION_FILE", "SubjectSummary", "SubjectsConfig", "check_pseudonym",
           "list_subjects",
           "note_session", "registry_path", "resolve_subject", "run_subjects",
           "sessions_for_subject", "subject_dir", "subject_fields"]

logger = logging.getLogger(__name__)

#: The personal arousal map inside :func:`subject_dir` (``st-agent calibrate --subject``
#: writes it; ``st-agent session --subject`` uses it).
PERSONAL_CALIBRATION_FILE = "calibration.json"

_FORMAT = "st-agent-subjects"
_VERSION = 1
_MAX_REGISTRY_BYTES = 16 << 20  # thousands of subjects and sessions fit in far less


def registry_path() -> Path:
    """The registry file: ``<data_dir>/subjects.json``."""
    from st_agent.paths import data_dir

    return data_dir() / "subjects.json"


def subject_dir(subject: str, *, create: bool = False) -> Path:
    """Where a subject's personal files live (fitted listener, controller, baseline).

    Parameters
    ----------
    subject : str
        The pseudonym (checked).
    create : bool
        Create the folder (``0700``) if missing.

    Returns
    -------
    folder : Path
        ``<data_dir>/subjects/<subject>/``.
    """
    from st_agent.paths import data_dir

    folder = data_dir() / "subjects" / _checked(subject)
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _checked(subject: object) -> str:
    try:
        return check_pseudonym(subject)
    except ValueError as e:
        raise UsageError(f"--subject: {e}") from None


# --------------------------------------------------------------------------- the file


def _empty() -> dict[str, Any]:
    return {"format": _FORMAT, "version": _VERSION, "subjects": {}}


def _load(path: Path) -> dict[str, Any]:
    """The registry, checked; an empty one when the file does not exist."""
    if not path.exists():
        return _empty()
    fix = (f"move {path} aside (sessions are still found by scanning runs/; a new registry "
           f"is started)")
    try:
        if path.stat().st_size > _MAX_REGISTRY_BYTES:
            raise DataError(f"subject registry {path} is larger than "
                            f"{_MAX_REGISTRY_BYTES} bytes, not a registry; {fix}")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise DataError(f"subject registry {path} is not valid JSON ({e}); {fix}") from None
    if not (isinstance(doc, dict) and doc.get("format") == _FORMAT
            and doc.get("version") == _VERSION and isinstance(doc.get("subjects"), dict)):
        raise DataError(f"{path} is not an st-agent subject registry (version {_VERSION}); "
                        f"{fix}")
    for name, entry in doc["subjects"].items():
        try:
            check_pseudonym(name)
            ok = isinstance(entry, dict) and isinstance(entry.get("sessions"), list) and all(
                isinstance(s, dict) and isinstance(s.get("folder"), str)
                and isinstance(s.get("number"), int) for s in entry["sessions"])
        except ValueError:
            ok = False
        if not ok:
            raise DataError(f"subject registry {path}: entry {name!r:.40} is malformed; {fix}")
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a crash leaves the old or the new file)."""
    from st_agent.biometrics.segments import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json_atomic(path, doc)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the registry beside it (POSIX ``flock``; none elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _update(change: Callable[[dict[str, Any]], Any]) -> Any:
    """Load, change and write the registry under its lock; ``change``'s result."""
    path = registry_path()
    with _locked(path):
        doc = _load(path)
        out = change(doc)
        _write(path, doc)
    return out


# --------------------------------------------------------------------------- the interface


def resolve_subject(name: str | None) -> str:
    """The registered pseudonym for a session: ``name`` (registered on first use), or a
    new pseudonym when ``name`` is None or empty.

    Parameters
    ----------
    name : str or None
        A pseudonym (letters and digits with at least one digit), or None for a new one.

    Returns
    -------
    subject : str
        The pseudonym, now in the registry.

    Raises
    ------
    st_agent.errors.UsageError
        If ``name`` is not a pseudonym (the message says what is allowed).
    st_agent.errors.DataError
        If the registry file is damaged (the message names it and the fix).
    """
    wanted = None if name is None or name == "" else _checked(name)

    def change(doc: dict[str, Any]) -> str:
        subjects = doc["subjects"]
        subject = wanted
        while subject is None or (wanted is None and subject in subjects):
            subject = new_pseudonym()
        if subject not in subjects:
            subjects[subject] = {"created_utc": utc_now_iso(), "sessions": []}
            logger.info("registered new subject %s in %s", subject, registry_path())
        return subject

    return _update(change)


def is_registered(subject: str) -> bool:
    """Whether ``subject`` is in the registry."""
    return _checked(subject) in _load(registry_path())["subjects"]


def note_session(subject: str, folder: Path) -> int:
    """Register a session folder of ``subject``; return its session number (1, 2, ...).

    Parameters
    ----------
    subject : str
        A pseudonym (registered here when it is not yet).
    folder : Path
        The session folder (it may not exist yet).

    Returns
    -------
    number : int
        One more than the subject's highest session number so far.
    """
    subject = _checked(subject)
    where = str(Path(folder).resolve())

    def change(doc: dict[str, Any]) -> int:
        entry = doc["subjects"].setdefault(subject, {"created_utc": utc_now_iso(),
                                                     "sessions": []})
        number = 1 + max((s["number"] for s in entry["sessions"]), default=0)
        entry["sessions"].append({"folder": where, "number": number,
                                  "registered_utc": utc_now_iso()})
        return number

    return _update(change)


def subject_fields(cfg: Any, folder: Path) -> dict[str, Any]:
    """The :class:`~st_agent.biometrics.session_meta.SessionMeta` fields a live session
    takes from its config: the subject (``cfg.subject``, resolved and registered), its
    session number (this folder registered) and ``cfg.line_freq``.

    Parameters
    ----------
    cfg : SessionConfig
        Any config with ``subject`` and ``line_freq`` (missing ones: a new subject, no
        line frequency).
    folder : Path
        The session folder being recorded.

    Returns
    -------
    fields : dict
        ``subject_id``, ``session_number`` and ``line_freq``.
    """
    subject = resolve_subject(getattr(cfg, "subject", "") or None)
    return {"subject_id": subject, "session_number": note_session(subject, folder),
            "line_freq": getattr(cfg, "line_freq", None)}


def _session_info(folder: Path) -> tuple[str, str] | None:
    """(subject_id, created_utc) of a session folder; None when it is not one."""
    from st_agent.biometrics.session_reader import load_meta_doc

    try:
        meta = load_meta_doc(folder).get("meta")
    except (OSError, DataError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("subject_id"), str):
        return None
    return meta["subject_id"], str(meta.get("created_utc", ""))


def _scan(root: Path) -> dict[Path, tuple[str, str]]:
    """Every session folder under ``root`` and its (subject, created time)."""
    found: dict[Path, tuple[str, str]] = {}
    if not root.is_dir():
        return found
    for meta_file in root.rglob(META_FILE):
        info = _session_info(meta_file.parent)
        if info is not None:
            found[meta_file.parent.resolve()] = info
    return found


def _all_sessions(root: Path | None) -> dict[Path, tuple[str, str]]:
    """Sessions under ``root``; with None, under ``runs_dir()`` plus every registered one."""
    if root is not None:
        return _scan(Path(root))
    from st_agent.paths import runs_dir

    found = _scan(runs_dir())
    for entry in _load(registry_path())["subjects"].values():
        for s in entry["sessions"]:
            folder = Path(s["folder"])
            if folder not in found:
                info = _session_info(folder)
                if info is not None:
                    found[folder] = info
    return found


def sessions_for_subject(subject: str, root: Path | None = None) -> list[Path]:
    """The session folders of ``subject``, oldest first.

    Parameters
    ----------
    subject : str
        A pseudonym.
    root : Path or None
        Search every ``session.json`` under this folder; None: under
        :func:`st_agent.paths.runs_dir` plus every folder the registry holds for the
        subject.

    Returns
    -------
    folders : list of Path
        Folders whose ``session.json`` names ``subject``, by creation time.
    """
    subject = _checked(subject)
    rows = [(created, str(folder), folder) for folder, (sub, created)
            in _all_sessions(root).items() if sub == subject]
    return [folder for _, _, folder in sorted(rows)]


@dataclass(frozen=True)
class SubjectSummary:
    """One line of ``st-agent subjects``."""

    subject: str
    sessions: int
    first_utc: str | None
    last_utc: str | None
    personal_files: tuple[str, ...]
    registered: bool


def list_subjects(root: Path | None = None) -> list[SubjectSummary]:
    """Every subject in the registry or with a session under ``root``.

    Parameters
    ----------
    root : Path or None
        As :func:`sessions_for_subject`.

    Returns
    -------
    subjects : list of SubjectSummary
        Sorted by pseudonym.
    """
    registry = _load(registry_path())["subjects"]
    by_subject: dict[str, list[str]] = {s: [] for s in registry}
    for subject, created in _all_sessions(root).values():
        by_subject.setdefault(subject, []).append(created)
    out = []
    for subject in sorted(by_subject):
        times = sorted(t for t in by_subject[subject] if t)
        try:
            folder = subject_dir(subject)
            files = tuple(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else ()
        except UsageError:  # a session.json with a non-pseudonym subject
            files = ()
        out.append(SubjectSummary(subject, len(by_subject[subject]),
                                  times[0] if times else None, times[-1] if times else None,
                                  files, subject in registry))
    return out


@dataclass
class SubjectsConfig:
    """List the subjects: pseudonym, sessions, first and last date, personal files
    (``st-agent subjects``)."""

    root: Path | None = None
    """Folder of recordings to search; default: runs/ plus every session the registry
    knows."""


def run_subjects(cfg: SubjectsConfig) -> list[SubjectSummary]:
    """Do what ``st-agent subjects`` does; return the rows (the command prints them)."""
    return list_subjects(cfg.root)
