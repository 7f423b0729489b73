"""The subject registry (st_agent.subjects), --subject on session/jam/demo, and the
authentication of consent records (st_agent.biometrics.consent_auth)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.consent_auth import (
    ConsentTamperedError,
    UnauthenticatedConsentError,
    verify_consent,
)
from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
from st_agent.biometrics.session_reader import load_meta_doc
from st_agent.errors import DataError, UsageError
from st_agent.types import SignalChunk

NAMES, TYPES = ("Fz", "ECG"), ("eeg", "ecg")


@pytest.fixture(autouse=True)
def _own_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ST_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ST_AGENT_CONFIG_DIR", str(tmp_path / "config"))


def _record(folder: Path, subject: str, created: str, key: bytes | None = None,
            number: int | None = None) -> Path:
    meta = SessionMeta(100.0, NAMES, TYPES, consent=ConsentRecord("v1", ("record", "export")),
                       subject_id=subject, created_utc=created, session_number=number)
    with SessionRecorder(folder, meta, key=key) as rec:
        rec.write_chunk(SignalChunk(np.zeros((2, 100)), 100.0, NAMES, TYPES))
    return folder


def test_resolve_subject_registers_given_and_new_pseudonyms() -> None:
    from st_agent.subjects import is_registered, registry_path, resolve_subject

    a, b = resolve_subject(None), resolve_subject("")
    assert a != b and is_registered(a) and is_registered(b)
    assert resolve_subject("p0042") == "p0042" and is_registered("p0042")
    assert resolve_subject("p0042") == "p0042"  # the same subject again
    doc = json.loads(registry_path().read_text())
    assert set(doc["subjects"]) == {a, b, "p0042"}
    assert registry_path().stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("bad", ["alice", "s 123", "../s1", "s1/x", "ab"])
def test_a_name_or_path_is_not_a_pseudonym(bad: str) -> None:
    from st_agent.subjects import resolve_subject, subject_dir

    with pytest.raises(UsageError, match="--subject"):
        resolve_subject(bad)
    with pytest.raises(UsageError):
        subject_dir(bad)


def test_session_numbers_and_sessions_oldest_first(tmp_path: Path) -> None:
    from st_agent.subjects import note_session, sessions_for_subject

    root = tmp_path / "runs"
    assert [note_session("s1111", root / n) for n in ("x", "y")] == [1, 2]
    later = _record(root / "b", "s1111", "2026-03-02T10:00:00+00:00")
    earlier = _record(root / "jam" / "performer_0", "s1111", "2026-03-01T10:00:00+00:00")
    _record(root / "c", "s2222", "2026-03-01T09:00:00+00:00")
    assert sessions_for_subject("s1111", root) == [earlier.resolve(), later.resolve()]
    # the registry's folders are found wherever they are (here: none of x, y exist)
    elsewhere = _record(tmp_path / "elsewhere", "s1111", "2026-03-03T10:00:00+00:00")
    note_session("s1111", elsewhere)
    assert elsewhere.resolve() in sessions_for_subject("s1111")


def test_list_subjects_shows_sessions_dates_and_personal_files(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    from st_agent.cli import main
    from st_agent.subjects import list_subjects, resolve_subject, subject_dir

    root = tmp_path / "runs"
    _record(root / "a", "s1111", "2026-03-01T10:00:00+00:00")
    _record(root / "b", "s1111", "2026-03-05T10:00:00+00:00")
    resolve_subject("s3333")
    (subject_dir("s1111", create=True) / "listener.json").write_text("{}")
    rows = {r.subject: r for r in list_subjects(root)}
    assert rows["s1111"].sessions == 2 and not rows["s1111"].registered
    assert rows["s1111"].first_utc.startswith("2026-03-01")
    assert rows["s1111"].last_utc.startswith("2026-03-05")
    assert rows["s1111"].personal_files == ("listener.json",)
    assert rows["s3333"].sessions == 0 and rows["s3333"].registered
    assert main(["subjects", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "s1111" in out and "2026-03-01" in out and "listener.json" in out


def test_damaged_registry_names_the_file_and_the_fix() -> None:
    from st_agent.subjects import registry_path, resolve_subject

    path = registry_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"move .* aside"):
        resolve_subject(None)
    assert path.read_text() == "{not json"  # never overwritten


def test_omitted_subject_is_new_and_printed_with_how_to_reuse_it() -> None:
    from st_agent.subject_commands import announce_subject

    subject, line = announce_subject("")
    assert f"--subject {subject}" in line
    again, line = announce_subject(subject)
    assert again == subject and "0 earlier session" in line


def test_subject_flags_are_checked_before_anything(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from st_agent.cli import main
    from st_agent.live.jam import JamConfig

    for cmd in (["session", "--record"], ["demo", "--out"]):
        where = tmp_path / cmd[0]
        assert main([*cmd, str(where), "--subject", "alice"]) == 2
        assert "pseudonym" in capsys.readouterr().err
        assert not where.exists()
    with pytest.raises(ValueError, match="one per performer"):
        JamConfig(boards="synthetic,synthetic", subject="s0001")
    with pytest.raises(ValueError, match="twice"):
        JamConfig(boards="synthetic,synthetic", subject="s0001,s0001")
    cfg = JamConfig(boards="synthetic,synthetic,synthetic", subject="s0001,,s0003")
    assert [cfg.performer_config(i).subject for i in range(3)] == ["s0001", "", "s0003"]


def test_consent_record_is_authenticated_and_bound_to_its_session(tmp_path: Path) -> None:
    from st_agent.biometrics.crypto import create_key_file

    plain = _record(tmp_path / "p", "s1111", "2026-03-01T10:00:00+00:00")
    key = create_key_file(tmp_path / "k.key")
    enc = _record(tmp_path / "e", "s1111", "2026-03-01T10:00:00+00:00", key=key)
    local_key = Path(os.environ["ST_AGENT_CONFIG_DIR"]) / "consent.key"
    assert local_key.stat().st_mode & 0o077 == 0
    for folder, k, how in ((plain, None, "local key"), (enc, key, "session key")):
        doc = load_meta_doc(folder)
        meta = SessionMeta.from_json(doc["meta"])
        assert verify_consent(doc, meta, k) == how
        # a subject or a time swapped, or the record moved to another session: detected
        for field, value in (("subject_id", "s9999"), ("created_utc",
                                                       "2026-03-02T10:00:00+00:00")):
            forged = SessionMeta.from_json({**doc["meta"], field: value})
            with pytest.raises(ConsentTamperedError, match="edited"):
                verify_consent(doc, forged, k)
        # the seal removed: this account sealed the session, so it is caught
        with pytest.raises(ConsentTamperedError, match="has been removed"):
            verify_consent({**doc, "consent_auth": None}, meta, k, accept_unauthenticated=True)
        bad = {**doc, "consent_auth": {**doc["consent_auth"], "scheme": "md5"}}
        with pytest.raises(ConsentTamperedError, match="malformed"):
            verify_consent(bad, meta, k)
    # a session sealed elsewhere (not in this account's ledger) without its seal: an old
    # session, refused unless the override is asked for
    (Path(os.environ["ST_AGENT_CONFIG_DIR"]) / "sealed_sessions.txt").unlink()
    doc = load_meta_doc(plain)
    meta = SessionMeta.from_json(doc["meta"])
    with pytest.raises(UnauthenticatedConsentError, match="--accept-unauthenticated"):
        verify_consent({**doc, "consent_auth": None}, meta, None)
    assert verify_consent({**doc, "consent_auth": None}, meta, None,
                          accept_unauthenticated=True) == "unauthenticated (accepted)"
    # an encrypted session whose consent was sealed with the local key: edited
    doc = load_meta_doc(plain)
    forged = SessionMeta.from_json({**doc["meta"], "encrypted": True, "key_id": "0" * 16})
    with pytest.raises(ConsentTamperedError, match="encrypted=True"):
        verify_consent(doc, forged, key)


def test_a_pseudonym_or_session_id_with_a_trailing_newline_is_refused() -> None:
    from st_agent.biometrics.session_meta import check_pseudonym, check_session_id

    with pytest.raises(ValueError, match="pseudonym"):
        check_pseudonym("abc1\n")
    with pytest.raises(ValueError):
        check_session_id("x1\n")
    assert check_pseudonym("abc1") == "abc1"
