"""Sessions recorded by the command line export by the command line (issue 16): EDF keeps
channel types, BIDS reads back with mne-bids under the subject's sub-/ses- labels, an
encrypted session writes its report, and consent is authenticated."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from st_agent.biometrics.recording import read_session
from st_agent.cli import main

SUBJECT = "s00000042"


def _err_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Two short CLI sessions of one subject: a plain one (no report, to keep the test
    short), then an encrypted one with its report."""
    base = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ST_AGENT_CONFIG_DIR", str(base / "config"))
        mp.setenv("ST_AGENT_DATA_DIR", str(base / "data"))
        out = base / "runs"
        assert main(["session", "--board", "virtual", "--accelerated", "--minutes", "0.3",
                     "--calibration-sec", "5", "--record", str(out), "--name", "plain",
                     "--subject", SUBJECT, "--consent", "record,store_local,export",
                     "--no-report", "--status-sec", "60"]) == 0
        key = base / "keys" / "enc.key"
        assert main(["session", "--board", "virtual", "--accelerated", "--minutes", "0.3",
                     "--calibration-sec", "5", "--record", str(out), "--name", "enc",
                     "--subject", SUBJECT, "--line-freq", "50", "--key-file", str(key),
                     "--consent", "record,store_local,export", "--status-sec", "60"]) == 0
        yield {"base": base, "out": out, "plain": out / "plain", "enc": out / "enc",
               "key": key}


@pytest.mark.slow
def test_edf_export_keeps_channel_types(runs, capsys: pytest.CaptureFixture) -> None:
    import mne

    folder = runs["plain"]
    sess = read_session(folder)
    assert sess.meta.subject_id == SUBJECT and sess.meta.session_number == 1
    assert main(["export", str(folder), "--format", "edf"]) == 0
    edf = next((folder / "export" / "edf").glob("*.edf"))
    raw = mne.io.read_raw_edf(edf, infer_types=True, verbose="error")
    assert raw.ch_names == sess.raw.ch_names
    assert raw.get_channel_types() == sess.raw.get_channel_types()
    assert {"ecg", "emg", "eeg"} <= set(raw.get_channel_types())


@pytest.mark.slow
def test_bids_export_reads_back_with_subject_sessions_and_event_columns(runs) -> None:
    import mne_bids

    root = runs["base"] / "bids"
    assert main(["export", str(runs["plain"]), "--format", "bids", "--out", str(root),
                 "--line-freq", "60", "--license", "CC0"]) == 0
    assert main(["export", str(runs["enc"]), "--format", "bids", "--out", str(root),
                 "--key-file", str(runs["key"])]) == 0  # its recorded --line-freq 50
    assert mne_bids.get_entity_vals(root, "subject") == [SUBJECT]
    assert mne_bids.get_entity_vals(root, "session") == ["01", "02"]
    for ses, line_freq in (("01", 60.0), ("02", 50.0)):
        bp = mne_bids.BIDSPath(subject=SUBJECT, session=ses, task="music", datatype="eeg",
                               root=root)
        raw = mne_bids.read_raw_bids(bp, verbose="error")
        assert raw.info["line_freq"] == line_freq
        assert {"ecg", "emg", "eeg"} <= set(raw.get_channel_types())
        tsv = bp.copy().update(suffix="events", extension=".tsv").fpath
        with tsv.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        knob_rows = [r for r in rows if r["trial_type"] == "knobs"]
        assert knob_rows and all(0.0 <= float(r["knob_tempo"]) <= 1.0 for r in knob_rows)
        late = [r for r in rows if r["state_arousal"] != "n/a"]
        assert late and all(0.0 <= float(r["state_confidence"]) <= 1.0 for r in late)
        desc = json.loads(tsv.with_suffix(".json").read_text())
        assert "Description" in desc["knob_valence"]
    dd = json.loads((root / "dataset_description.json").read_text())
    assert dd["DatasetType"] == "raw" and dd["License"] == "CC0" and dd["BIDSVersion"]
    assert dd["GeneratedBy"][0]["Name"] == "st-agent" and "Authors" not in dd
    assert "Unspecified" not in json.dumps(dd)


@pytest.mark.slow
def test_bids_without_line_frequency_is_refused(runs, capsys: pytest.CaptureFixture) -> None:
    out = runs["base"] / "bids-nolf"
    assert main(["export", str(runs["plain"]), "--format", "bids", "--out", str(out)]) == 2
    assert "--line-freq 50" in _err_line(capsys)
    assert not out.exists()


@pytest.mark.slow
def test_encrypted_cli_session_has_its_report_and_needs_its_key(
        runs, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    folder = runs["enc"]
    assert (folder / "report.html").read_text().count('src="data:image/png;base64,') >= 4
    assert b"valence" not in (folder / "events.jsonl").read_bytes()
    doc = json.loads((folder / "session.json").read_text())
    assert doc["consent_auth"]["key"] == "session"
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "fif"]) == 3
    assert "is encrypted" in _err_line(capsys)
    from st_agent.biometrics.crypto import create_key_file

    other = tmp_path / "other.key"

    create_key_file(other)
    assert main(["export", str(folder), "--format", "fif", "--key-file", str(other)]) == 3
    assert "wrong key" in _err_line(capsys)
    assert main(["export", str(folder), "--format", "fif", "--key-file",
                 str(tmp_path / "missing.key")]) == 3
    assert "does not exist" in _err_line(capsys)


@pytest.mark.slow
def test_tampered_or_missing_consent_is_detected(runs, capsys: pytest.CaptureFixture,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(runs["plain"], folder)
    shutil.rmtree(folder / "export", ignore_errors=True)
    meta_file = folder / "session.json"
    doc = json.loads(meta_file.read_text())
    doc["meta"]["consent"]["scopes"].append("share_pseudonymized")  # a hand edit
    meta_file.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "fif"]) == 3
    err = _err_line(capsys)
    assert "does not match its authentication" in err and "st-agent consent" in err
    # the seal removed from a session this account sealed: caught, even with the override
    del doc["consent_auth"]
    meta_file.write_text(json.dumps(doc))
    assert main(["export", str(folder), "--format", "fif", "--accept-unauthenticated"]) == 3
    assert "has been removed" in _err_line(capsys)
    # an older session (no authentication, not sealed here): refused unless asked for
    (Path(os.environ["ST_AGENT_CONFIG_DIR"]) / "sealed_sessions.txt").unlink()
    assert main(["export", str(folder), "--format", "fif"]) == 3
    assert "--accept-unauthenticated" in _err_line(capsys)
    assert main(["export", str(folder), "--format", "fif", "--accept-unauthenticated"]) == 0
    # the listener re-consents without export: refused with the reason and the fix
    assert main(["consent", str(folder), "--scopes", "record,store_local"]) == 0
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "fif", "--overwrite"]) == 2
    err = _err_line(capsys)
    assert "do not include 'export'" in err and "st-agent consent" in err
    history = json.loads(meta_file.read_text())["consent_history"]
    assert history[-1]["consent_auth"] is None
    # another account's local consent key: the reason and the fix
    assert main(["consent", str(folder), "--scopes", "record,store_local,export"]) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ST_AGENT_CONFIG_DIR", str(tmp_path / "another-account"))
        capsys.readouterr()
        assert main(["export", str(folder), "--format", "fif", "--overwrite"]) == 3
        assert "ST_AGENT_CONFIG_DIR" in _err_line(capsys)
    assert main(["export", str(folder), "--format", "fif", "--overwrite"]) == 0


@pytest.mark.slow
def test_subjects_command_lists_the_subject(runs, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["subjects", "--root", str(runs["out"])]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(SUBJECT)]
    assert len(lines) == 1 and lines[0].split()[1] == "2"
