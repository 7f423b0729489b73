"""Export a recorded session (EDF+, FIF, BIDS) and delete one; ``st-agent export/delete``.

Exports go through MNE (and ``mne-bids`` for BIDS), imported only when an export
runs, so that the command line can show ``--help`` at once.

What an export holds: file names carry only the pseudonym and the session id (BIDS:
the subject's session number). EDF cannot hold NaN: gaps and NaN runs are written as 0
and stay marked by their ``BAD_gap``/``BAD_nan`` annotations. EDF stores 16-bit
integers scaled per channel, so values come back within (max - min) / 65535 of each
channel. EDF signal labels carry the channel type as EDF+ prefixes (``EEG Fp1``,
``ECG ECG``, ``EMG EMG``, ``RESP ...``, ``MISC PPG``/``MISC EDA``), which
``mne.io.read_raw_edf(path, infer_types=True)`` turns back into types and names. EDF and
FIF exports get an ``_events.json`` sidecar with the full events table. BIDS
(:mod:`st_agent.biometrics.bids_export`): ``sub-<pseudonym>/ses-<NN>``, the power-line
frequency from ``--line-freq`` or the recording (never guessed), ``events.tsv`` with
the knobs and the estimated state in effect at each event as columns, and a
``dataset_description.json`` naming the dataset, its licence and st-agent. An encrypted
session is exported in the clear: the export is an explicit decision to share the data.
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

from st_agent.biometrics.consent_auth import verify_consent
from st_agent.biometrics.crypto import resolve_key
from st_agent.biometrics.session_meta import META_FILE, SessionMeta
from st_agent.biometrics.session_reader import Session, load_meta_doc, read_session
from st_agent.errors import DataError, UsageError

if TYPE_CHECKING:
    import mne

__all__ = ["DeleteConfig", "ExportConfig", "delete_session", "export_session", "run_delete",
           "run_export"]

logger = logging.getLogger(__name__)

_EXPORT_FORMATS = ("edf", "fif", "bids")


def _bids_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _exportable(folder: Path, fmt: str, key: bytes | str | Path | None, task: str,
                accept_unauthenticated: bool = False) -> Session:
    """The session read back, once format, task, consent (authenticated) and samples
    are checked."""
    if fmt not in _EXPORT_FORMATS:
        raise UsageError(f"fmt must be one of {_EXPORT_FORMATS}, got {fmt!r}")
    if not _bids_label(task) or _bids_label(task) != task:
        raise UsageError(f"--task must be letters and digits only, got {task!r}")
    session = read_session(folder, key)
    meta = session.meta
    key_bytes = resolve_key(key, folder) if meta.encrypted else None
    verify_consent(load_meta_doc(folder), meta, key_bytes, where=str(folder / META_FILE),
                   accept_unauthenticated=accept_unauthenticated)
    if not meta.consent.allows("export"):
        raise UsageError(
            f"consent scopes {meta.consent.scopes} of session {meta.session_id} do not "
            f"include 'export'; exporting needs the subject's consent: record it when the "
            f"session is recorded (`st-agent session|demo|jam --consent "
            f"record,store_local,export`) or, when the listener agrees later, with "
            f"`st-agent consent {folder} --scopes record,store_local,export`")
    if session.raw is None:
        raise DataError(f"session {meta.session_id} in {folder} has no samples to export")
    return session


def export_session(folder: str | Path, fmt: str = "edf", out: str | Path | None = None,
                   key: bytes | str | Path | None = None, *, task: str = "music",
                   overwrite: bool = False, line_freq: float | None = None,
                   license: str | None = None, dataset_name: str | None = None,
                   accept_unauthenticated: bool = False) -> list[Path]:
    """Export a session through MNE as EDF+, FIF or a BIDS folder (see the module
    docstring for what each format holds). The consent record is verified first
    (:func:`st_agent.biometrics.consent_auth.verify_consent`).

    Parameters
    ----------
    folder : str or Path
        Session folder.
    fmt : {"edf", "fif", "bids"}
        Output format.
    out : str or Path or None
        Output folder (BIDS: the dataset root); None = ``<folder>/export/<fmt>``.
    key : bytes or str or Path or None
        Key or key file for an encrypted session.
    task : str
        BIDS task label (letters and digits).
    overwrite : bool
        Replace existing output files.
    line_freq : float or None
        Mains frequency in Hz (50 or 60) where the session was recorded; None: the
        recording's own (``SessionMeta.line_freq``). BIDS needs one: never guessed.
    license : str or None
        BIDS ``License`` of the dataset (e.g. ``CC0``, ``CC-BY-4.0``); None: the
        dataset's own (an earlier export into ``out``), else ``n/a``.
    dataset_name : str or None
        BIDS ``Name`` of the dataset; None: the dataset's own, else "st-agent sessions".
    accept_unauthenticated : bool
        Export a session recorded before consent was authenticated, trusting its plain
        consent record (logged). A record that fails verification is never exported.

    Returns
    -------
    paths : list of Path
        Files written.

    Raises
    ------
    st_agent.errors.UsageError
        If ``fmt`` or ``task`` is bad, the consent does not include ``"export"``, or
        a BIDS export has no line frequency.
    st_agent.errors.DataError
        If the consent record is not authenticated, was edited, or cannot be verified
        on this account; or the session has no samples.
    """
    folder = Path(folder)
    if fmt == "bids":  # refused before anything is read or written
        line_freq = _bids_line_freq(folder, line_freq)
    elif line_freq is not None:
        _check_line_freq(line_freq)
    session = _exportable(folder, fmt, key, task, accept_unauthenticated)
    meta = session.meta
    out = folder / "export" / fmt if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = session.raw
    if line_freq is not None:
        raw.info["line_freq"] = float(line_freq)
    written = _write_format(session, raw, fmt, out, task, overwrite, license, dataset_name)
    if meta.encrypted:
        logger.warning("session %s is encrypted at rest; the export in %s is not",
                       meta.session_id, out)
    logger.info("exported session %s as %s: %s", meta.session_id, fmt,
                ", ".join(str(p) for p in written))
    return written


def _write_format(session: Session, raw: mne.io.BaseRaw, fmt: str, out: Path, task: str,
                  overwrite: bool, license: str | None, dataset_name: str | None
                  ) -> list[Path]:
    """Write ``raw`` of ``session`` as ``fmt`` into ``out``; the files written."""
    meta = session.meta
    stem = f"sub-{meta.subject_id}_ses-{_bids_label(meta.session_id)}"
    written: list[Path] = []
    if fmt in ("edf", "bids"):
        raw = raw.copy()
        data = raw._data  # preloaded RawArray: replace NaN in place on the copy
        data[np.isnan(data)] = 0.0
    if fmt == "edf":
        import mne

        path = out / f"{stem}.edf"
        mne.export.export_raw(path, _typed_labels(raw), fmt="edf",
                              physical_range="channelwise", overwrite=overwrite,
                              verbose="error")
        written.append(path)
    elif fmt == "fif":
        path = out / f"{stem}_raw.fif"
        raw.save(path, overwrite=overwrite, verbose="error")
        written.append(path)
    else:
        from st_agent.biometrics.bids_export import write_bids

        written.extend(write_bids(raw, session, out, task, overwrite,
                                  license=license, dataset_name=dataset_name))
    if fmt in ("edf", "fif"):
        written.append(_write_events_sidecar(session, out / f"{stem}_events.json"))
    return written


#: EDF+ signal-label type prefix of each MNE channel type (the ones MNE's EDF reader
#: maps back with ``infer_types=True``; it has none for skin conductance or PPG).
_EDF_TYPE_PREFIX = {"eeg": "EEG", "ecg": "ECG", "emg": "EMG", "eog": "EOG", "resp": "RESP",
                    "misc": "MISC", "gsr": "MISC", "bio": "BIO", "temperature": "TEMP",
                    "stim": "STIM"}
_EDF_LABEL_LEN = 16  # characters of an EDF signal label


def _typed_labels(raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
    """``raw`` with each channel renamed ``"<TYPE> <name>"`` (EDF+ signal labels)."""
    mapping = {}
    for name, kind in zip(raw.ch_names, raw.get_channel_types(), strict=True):
        label = f"{_EDF_TYPE_PREFIX.get(kind, 'MISC')} {name}"
        if len(label) > _EDF_LABEL_LEN:
            logger.warning("EDF label %r is longer than %d characters; the reader may cut "
                           "it", label, _EDF_LABEL_LEN)
        mapping[name] = label
    return raw.rename_channels(mapping, verbose="error")


def _check_line_freq(line_freq: object) -> float:
    if isinstance(line_freq, bool) or not isinstance(line_freq, int | float) \
            or not 0 < line_freq <= 1000:
        raise UsageError(f"--line-freq must be the mains frequency in Hz (50 or 60), got "
                         f"{line_freq!r}")
    return float(line_freq)


def _bids_line_freq(folder: Path, line_freq: float | None) -> float:
    """The power-line frequency for a BIDS export: given, or the recording's; else refuse."""
    if line_freq is not None:
        return _check_line_freq(line_freq)
    recorded = SessionMeta.from_json(load_meta_doc(folder).get("meta"),
                                     str(folder / META_FILE)).line_freq
    if recorded is None:
        raise UsageError(
            f"BIDS needs the power-line frequency of session {folder}, and the recording "
            f"does not say it: pass --line-freq 50 (Europe, most of Africa and Asia) or "
            f"--line-freq 60 (the Americas, parts of Japan...), where it was recorded "
            f"(record it with `st-agent session --line-freq` next time)")
    return float(recorded)


def _write_events_sidecar(session: Session, path: Path) -> Path:
    """The full events table beside an EDF or FIF export (shared by both)."""
    meta = session.meta
    path.write_text(json.dumps({"session_id": meta.session_id, "subject_id": meta.subject_id,
                                "events": session.events}, indent=1, default=str),
                    encoding="utf-8")
    return path


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
    line_freq: float | None = None
    """Mains frequency in Hz (50 or 60) where the session was recorded; BIDS needs it
    (never guessed); default: the recording's own, if it has one."""
    license: str | None = None
    """BIDS: the dataset's licence (e.g. CC0, CC-BY-4.0); default: the dataset's own from
    an earlier export into --out, else n/a (none chosen)."""
    dataset_name: str | None = None
    """BIDS: the dataset's name in dataset_description.json; default: the dataset's own,
    else 'st-agent sessions'."""
    accept_unauthenticated: bool = False
    """Export a session recorded before consent was authenticated, trusting its plain
    consent record (logged); a record that fails verification is never exported."""


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
                          overwrite=cfg.overwrite, line_freq=cfg.line_freq,
                          license=cfg.license, dataset_name=cfg.dataset_name,
                          accept_unauthenticated=cfg.accept_unauthenticated)


def run_delete(cfg: DeleteConfig) -> list[Path]:
    """Do what ``st-agent delete`` does; return the files removed (or, dry run, listed)."""
    return delete_session(cfg.session, cfg.key_file, dry_run=cfg.dry_run)
