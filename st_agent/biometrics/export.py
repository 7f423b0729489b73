"""Export a recorded session (EDF+, FIF, BIDS) and delete one; ``st-agent export/delete``.

Exports go through MNE (and ``mne-bids`` for BIDS), imported only when an export
runs, so that the command line can show ``--help`` at once.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import tyro

from st_agent.biometrics.session_meta import META_FILE, SessionMeta
from st_agent.biometrics.session_reader import Session, load_meta_doc, read_session

if TYPE_CHECKING:
    import mne

__all__ = ["DeleteConfig", "ExportConfig", "delete_session", "export_session", "run_delete",
           "run_export"]

logger = logging.getLogger(__name__)

_EXPORT_FORMATS = ("edf", "fif", "bids")


def _bids_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _exportable(folder: Path, fmt: str, key: bytes | str | Path | None, task: str) -> Session:
    """The session read back, once format, task, consent and samples are checked."""
    if fmt not in _EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {_EXPORT_FORMATS}, got {fmt!r}")
    if not _bids_label(task) or _bids_label(task) != task:
        raise ValueError(f"task must be letters and digits only, got {task!r}")
    session = read_session(folder, key)
    meta = session.meta
    if not meta.consent.allows("export"):
        raise ValueError(f"consent scopes {meta.consent.scopes} of session {meta.session_id} "
                         f"do not include 'export'; exporting needs the subject's consent, "
                         f"given when the session is recorded: `st-agent session|demo|jam "
                         f"--consent record,store_local,export`")
    if session.raw is None:
        raise ValueError(f"session {meta.session_id} has no samples to export")
    return session


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
    folder = Path(folder)
    session = _exportable(folder, fmt, key, task)
    meta = session.meta
    out = folder / "export" / fmt if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = session.raw
    stem = f"sub-{meta.subject_id}_ses-{_bids_label(meta.session_id)}"
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
        written.append(_write_events_sidecar(session, out / f"{stem}_events.json"))
    if meta.encrypted:
        logger.warning("session %s is encrypted at rest; the export in %s is not",
                       meta.session_id, out)
    logger.info("exported session %s as %s: %s", meta.session_id, fmt,
                ", ".join(str(p) for p in written))
    return written


def _write_events_sidecar(session: Session, path: Path) -> Path:
    """The full events table beside an EDF or FIF export (shared by both)."""
    meta = session.meta
    path.write_text(json.dumps({"session_id": meta.session_id, "subject_id": meta.subject_id,
                                "events": session.events}, indent=1, default=str),
                    encoding="utf-8")
    return path


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
    load_meta_doc(folder)  # refuses non-sessions
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
