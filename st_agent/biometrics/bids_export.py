"""A session as a BIDS EEG dataset (``st-agent export --format bids``), through mne-bids.

* ``sub-<pseudonym>`` from the session's subject, ``ses-<NN>`` from the subject's
  session number (recorded by the subject registry, :mod:`st_agent.subjects`; for a
  session recorded without one, its place among the subject's sessions in the same
  parent folder, oldest first), so that one person's sessions sit under one subject.
* ``PowerLineFrequency`` from ``--line-freq`` or the recording (never guessed; the
  export refuses without one, :func:`st_agent.biometrics.export.export_session`).
* ``events.tsv``: mne-bids' rows (one per event: onset, duration, trial_type, value,
  sample) plus the knobs and the estimated state in effect at each onset
  (``knob_valence``, ``knob_tempo``, ``knob_energy``, ``state_valence``,
  ``state_arousal``, ``state_confidence``; ``n/a`` before the first), described in
  ``events.json``.
* ``dataset_description.json``: Name, BIDSVersion, DatasetType ``raw``, License (the
  user's choice, ``n/a`` when none; a later export into the same root keeps the name and
  licence unless given again), GeneratedBy st-agent (and MNE-BIDS), with no placeholder
  authors.

ECG, EMG, PPG, EDA and breathing go as auxiliary channels of the ``eeg`` datatype (BIDS
has no datatype for them alone); ``channels.tsv`` keeps their types.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent import __version__
from st_agent.biometrics.session_reader import Session

if TYPE_CHECKING:
    import mne

__all__ = ["DEFAULT_DATASET_NAME", "EVENT_COLUMNS", "bids_session_label", "write_bids"]

logger = logging.getLogger(__name__)

#: ``Name`` of a dataset whose name was never given.
DEFAULT_DATASET_NAME = "st-agent sessions"
#: Extra ``events.tsv`` columns: (column, event kind, payload field, description).
EVENT_COLUMNS = (
    ("knob_valence", "knobs", "valence", "valence knob in effect (0 dark, 1 bright)"),
    ("knob_tempo", "knobs", "tempo", "tempo knob in effect (0 = 50 BPM, 1 = 160 BPM)"),
    ("knob_energy", "knobs", "energy", "energy knob in effect (0 sparse and soft, 1 dense "
                                       "and loud)"),
    ("state_valence", "state", "valence", "latest estimated valence (z-scored frontal "
                                          "alpha asymmetry against the rest baseline)"),
    ("state_arousal", "state", "arousal", "latest estimated arousal (weighted z-scored "
                                          "markers against the rest baseline)"),
    ("state_confidence", "state", "confidence", "confidence of that estimate, 0-1"),
)
_TOL_SEC = 1e-3  # mne-bids rounds onsets; an event at the same time is in effect


def bids_session_label(session: Session) -> str:
    """The ``ses-`` label of a session: its subject's session number, two digits.

    Parameters
    ----------
    session : Session
        The session read back.

    Returns
    -------
    label : str
        E.g. ``"03"``.
    """
    n = session.meta.session_number
    if n is None:
        from st_agent.subjects import sessions_for_subject

        mine = session.folder.resolve()
        found = sessions_for_subject(session.meta.subject_id, mine.parent)
        n = found.index(mine) + 1 if mine in found else len(found) + 1
        logger.info("session %s has no recorded session number; ses-%02d is its place "
                    "among the %d sessions of subject %s found", session.meta.session_id,
                    n, len(found), session.meta.subject_id)
    return f"{n:02d}"


def write_bids(raw: mne.io.BaseRaw, session: Session, root: Path, task: str,
               overwrite: bool, *, license: str | None = None,
               dataset_name: str | None = None) -> list[Path]:
    """Write ``raw`` (NaN already replaced) of ``session`` into the BIDS dataset ``root``.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The samples, ``info["line_freq"]`` set.
    session : Session
        The session (meta, events) they come from.
    root : Path
        The dataset root (created).
    task : str
        BIDS task label.
    overwrite : bool
        Replace this session's files if present.
    license : str or None
        ``License`` of ``dataset_description.json``; None: the dataset's own (an earlier
        export into ``root``), else ``n/a``.
    dataset_name : str or None
        ``Name`` of ``dataset_description.json``; None: the dataset's own, else
        :data:`DEFAULT_DATASET_NAME`.

    Returns
    -------
    paths : list of Path
        The files written or rewritten.
    """
    try:
        from mne_bids import BIDSPath, write_raw_bids
    except ImportError as e:
        raise ImportError("BIDS export needs mne-bids: pip install mne-bids") from e
    if license is not None and (not isinstance(license, str) or not license.strip()):
        raise ValueError(f"--license must be a licence name or 'n/a', got {license!r}")
    if dataset_name is not None and (not isinstance(dataset_name, str)
                                     or not dataset_name.strip()):
        raise ValueError(f"--dataset-name must be a non-empty name, got {dataset_name!r}")
    assert raw.info["line_freq"] is not None, "export_session sets the line frequency"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    bids_path = BIDSPath(subject=session.meta.subject_id, session=bids_session_label(session),
                         task=task, datatype="eeg", root=root)
    write_raw_bids(raw, bids_path, format="EDF", allow_preload=True, overwrite=overwrite,
                   verbose="error")
    events_tsv = bids_path.copy().update(suffix="events", extension=".tsv").fpath
    if events_tsv.is_file():
        _add_event_columns(events_tsv, session.events)
    _write_description(root, license, dataset_name)
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and before.get(p) != p.stat().st_mtime_ns)


def _in_effect(events: list[dict[str, Any]], kind: str) -> list[tuple[float, dict]]:
    rows = [(float(e["onset_sec"]), e["payload"]) for e in events if e["kind"] == kind]
    return sorted(rows, key=lambda r: r[0])


def _fmt(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{float(value):.4f}"
    return "n/a"


def _add_event_columns(path: Path, events: list[dict[str, Any]]) -> None:
    """Add the knobs and state in effect at each row's onset to ``events.tsv`` and
    describe them in ``events.json``."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    series = {kind: _in_effect(events, kind) for kind in ("knobs", "state")}
    times = {kind: [t for t, _ in rows_] for kind, rows_ in series.items()}
    for row in rows:
        onset = float(row["onset"])
        for column, kind, field, _ in EVENT_COLUMNS:
            i = bisect.bisect_right(times[kind], onset + _TOL_SEC)  # events at or before
            row[column] = _fmt(series[kind][i - 1][1].get(field) if i else None)
    columns = list(rows[0]) if rows else ["onset", "duration", "trial_type", "value",
                                          "sample", *(c[0] for c in EVENT_COLUMNS)]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    sidecar = path.with_suffix(".json")
    desc = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    for column, _, _, text in EVENT_COLUMNS:
        desc[column] = {"Description": text, "Units": "arbitrary"}
    sidecar.write_text(json.dumps(desc, indent=4) + "\n", encoding="utf-8")


def _write_description(root: Path, license: str | None, name: str | None) -> None:
    """``dataset_description.json``: a real one, rewritten after mne-bids' own; a name or
    licence not given keeps the dataset's (from an earlier export), else the default."""
    import mne_bids
    from mne_bids.config import BIDS_VERSION

    path = root / "dataset_description.json"
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(old, dict) and any(g.get("Name") == "st-agent" for g in
                                          old.get("GeneratedBy", []) if isinstance(g, dict))):
        old = {}  # mne-bids' placeholder, not a dataset st-agent described
    name = name if name is not None else old.get("Name", DEFAULT_DATASET_NAME)
    license = license if license is not None else old.get("License", "n/a")
    doc = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
           "License": license,
           "GeneratedBy": [{"Name": "st-agent", "Version": __version__,
                            "Description": "closed-loop music sessions: recorded biometric "
                                           "signals, knobs, phrases and estimated states"},
                           {"Name": "MNE-BIDS", "Version": mne_bids.__version__,
                            "CodeURL": "https://mne.tools/mne-bids/"}]}
    path.write_text(json.dumps(doc, indent=4) + "\n", encoding="utf-8")
