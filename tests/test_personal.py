"""Personalisation through the command line, on virtual listeners (issue 16): sessions
recorded under a subject, fit-listener --subject (with its refusal threshold), train
--subject, session --subject picking the personal controller, and report --subject."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from st_agent.cli import main

SUBJECT = "p0042"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session(root: Path, name: str, seed: int, *extra: str) -> None:
    rc = main(["session", "--board", "virtual", "--accelerated", "--minutes", "1",
               "--calibration-sec", "12", "--subject", SUBJECT, "--record", str(root),
               "--name", name, "--no-report", "--status-sec", "60", "--seed", str(seed),
               *extra])
    assert rc == 0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short accelerated sessions of SUBJECT, recorded through the CLI."""
    base = tmp_path_factory.mktemp("personal")
    mp = pytest.MonkeyPatch()
    mp.setenv("ST_AGENT_DATA_DIR", str(base / "data"))
    mp.setenv("ST_AGENT_RUNS_DIR", str(base / "runs"))
    root = base / "sessions"
    _session(root, "first", 0)
    _session(root, "second", 1)
    yield root
    mp.undo()


@pytest.mark.slow
def test_a_poor_fit_is_refused_and_written_only_with_force(
        recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from st_agent.subjects import subject_dir

    out = subject_dir(SUBJECT) / "listener.json"
    args = ["fit-listener", "--subject", SUBJECT, "--sessions-root", str(recorded),
            "--min-minutes", "1"]
    assert main(args) == 3  # a data error: the fit is not good enough
    err = capsys.readouterr().err
    assert "refused" in err and "below 0.3" in err and "--force" in err
    assert not out.exists()
    assert main([*args, "--force"]) == 0
    doc = json.loads(out.read_text())
    assert doc["subject"] == SUBJECT and len(doc["sessions"]) == 2
    assert doc["quality"]["forced"] is True
    assert any("below 0.3" in w for w in doc["quality"]["warnings"])
    assert doc["heldout_r2"] < 0.3
    assert "warning:" in capsys.readouterr().out


@pytest.mark.slow
def test_train_and_session_use_the_subjects_files(
        recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from st_agent.biometrics.recording import read_session
    from st_agent.subjects import subject_dir

    folder = subject_dir(SUBJECT)
    if not (folder / "listener.json").exists():  # this test may run alone
        assert main(["fit-listener", "--subject", SUBJECT, "--sessions-root", str(recorded),
                     "--min-minutes", "1", "--force"]) == 0
    assert main(["train", "--subject", SUBJECT, "--name", "personal", "--total-timesteps",
                 "128", "--n-envs", "4", "--n-steps", "32", "--batch-size", "64",
                 "--n-epochs", "1", "--eval-freq", "0", "--checkpoint-freq", "0",
                 "--listener-draws", "8"]) == 0
    ctrl = folder / "controller"
    personal = json.loads((ctrl / "personal.json").read_text())
    assert personal["listener_sha256"] == _sha(folder / "listener.json")
    assert "personal controller" in capsys.readouterr().out
    ev = recorded.parent / "eval"
    assert main(["evaluate", "--subject", SUBJECT, "--controllers", "fixed", "--n-listeners",
                 "2", "--tune-listeners", "4", "--adaptive-trials", "1", "--max-steps", "4",
                 "--n-boot", "50", "--out", str(ev)]) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["config"]["listener"] == str(folder / "listener.json")
    (block,) = res["sets"].values()
    assert set(block["controllers"]) == {"fixed", str(ctrl)}  # on the subject's listener
    later = recorded.parent / "later"  # outside the root the report test compares
    rc = main(["session", "--board", "virtual", "--accelerated", "--minutes", "0.3",
               "--calibration-sec", "5", "--subject", SUBJECT, "--record", str(later),
               "--name", "third", "--no-report", "--status-sec", "60"])
    assert rc == 0
    said = capsys.readouterr().out
    assert f"subject {SUBJECT}: personal controller {ctrl}" in said
    assert "simulates their fitted listener" in said
    events = read_session(later / "third").events
    files = next(e["payload"] for e in events if e["kind"] == "controller_files")
    assert files["policy"] == str(ctrl)
    for name in ("policy.json", "policy.safetensors", "personal.json"):
        assert files["files"][f"controller:{name}"]["sha256"] == _sha(ctrl / name)
    assert files["files"]["listener"]["sha256"] == _sha(folder / "listener.json")


@pytest.mark.slow
def test_report_compares_the_subjects_sessions(
        recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from st_agent.biometrics.recording import read_session
    from st_agent.live.report import session_metrics

    out = tmp_path / "long"
    assert main(["report", "--subject", SUBJECT, "--sessions-root", str(recorded),
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert " first " in table and " second " in table
    doc = json.loads((out / "longitudinal.json").read_text())
    rows = doc["sessions"]
    assert [Path(r["folder"]).name for r in rows] == ["first", "second"]
    for r in rows:
        m = session_metrics(read_session(r["folder"]).events)
        assert r["distance_last_half"] == pytest.approx(m["distance_last_half"])
        assert r["time_to_target_sec"] == m["time_to_target_sec"]
        for k in ("hr_rest_bpm", "hr_end_bpm"):
            assert r[k] is not None and 40 < r[k] < 120 and math.isfinite(r[k])
    page = (out / "longitudinal.html").read_text()
    assert "data:image/png;base64," in page and (out / "longitudinal.png").stat().st_size > 0
    assert main(["report", "--subject", "z9999", "--sessions-root", str(recorded)]) == 2
    assert main(["report"]) == 2  # neither a folder nor a subject


def test_listener_on_a_real_board_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    listener = tmp_path / "listener.json"
    listener.write_text("{}")
    rc = main(["session", "--board", "synthetic", "--listener", str(listener),
               "--record", str(tmp_path)])
    assert rc == 2
    assert "--listener" in capsys.readouterr().err


def test_the_quality_gate_thresholds() -> None:
    from dataclasses import replace

    from st_agent.listener.fit_quality import assess_fit
    from st_agent.listener.fitting import FitResult
    from st_agent.listener.model import PARAM_RANGES, ListenerParams

    res = FitResult(ListenerParams(), {}, 20.0, heldout_r2=0.6)
    assert assess_fit(res).warnings == ()
    q = assess_fit(replace(res, heldout_r2=0.4))
    assert not q.refusals and "below 0.5" in q.warnings[0]
    assert "below 0.3" in assess_fit(replace(res, heldout_r2=0.235)).refusals[0]
    names = ("arousal_tempo", "valence_mode", "preference", "arousal_density",
             "tau_arousal_sec")
    edge = {n: PARAM_RANGES[n][1] for n in names}
    at = replace(res, params=replace(ListenerParams(), **edge))
    assert set(assess_fit(at).at_bounds) == set(edge) and assess_fit(at).refusals  # 5 > 4
    assert not assess_fit(at, max_at_bounds=5).refusals and assess_fit(at).warnings
    # no habituation is a finding, not a parameter pushed to its bound
    none = replace(res, params=replace(ListenerParams(), habituation_strength=0.0,
                                       habituation_tau_sec=600.0))
    assert assess_fit(none).at_bounds == ()
    with pytest.raises(ValueError, match="--warn-r2"):
        assess_fit(res, min_r2=0.5, warn_r2=0.4)


def test_draws_around_a_fitted_listener(tmp_path: Path) -> None:
    from st_agent.listener.fitting import FitResult
    from st_agent.listener.model import ListenerParams
    from st_agent.policies.personal import personal_listeners

    fit = ListenerParams(arousal_tempo=0.5, tau_arousal_sec=30.0)
    path = tmp_path / "listener.json"
    path.write_text(json.dumps(FitResult(fit, {"arousal_tempo": 0.05,
                                               "tau_arousal_sec": 3.0}, 20.0).to_json()))
    draws = personal_listeners(path, draws=32, jitter=0.1, seed=0)
    assert draws[0] == fit and len(draws) == 32
    tempo = [d.arousal_tempo for d in draws[1:]]
    assert len(set(tempo)) == 31 and abs(sum(tempo) / 31 - 0.5) < 0.15
    assert all(d.baseline_valence == fit.baseline_valence for d in draws)  # not fitted
    assert personal_listeners(path, draws=4, jitter=0.1, seed=0) == draws[:4]


def test_session_subject_picks_what_exists_and_an_explicit_policy_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from st_agent.live.session import SessionConfig
    from st_agent.policies.personal import apply_subject
    from st_agent.subjects import subject_dir

    monkeypatch.setenv("ST_AGENT_DATA_DIR", str(tmp_path))
    folder = subject_dir("q0001", create=True)
    cfg = SessionConfig(board="synthetic", subject="q0001")
    assert "no personal controller yet" in apply_subject(cfg) and cfg.policy == "calm"
    (folder / "controller").mkdir()
    for name in ("controller/policy.json", "calibration.json", "listener.json"):
        (folder / name).write_text("{}")
    cfg = SessionConfig(board="synthetic", subject="q0001")
    line = apply_subject(cfg)
    assert cfg.policy == str(folder / "controller")
    assert cfg.calibration == folder / "calibration.json" and "personal calibration" in line
    assert cfg.listener is None  # a real board: no simulated listener
    cfg = SessionConfig(board="synthetic", subject="q0001", policy="pid")
    assert "not used: --policy pid" in apply_subject(cfg) and cfg.policy == "pid"
    assert apply_subject(SessionConfig(board="synthetic")) == ""
