"""``st-agent calibrate``: the calm/energetic protocol, its CV, its refusal, its JSON map."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from st_agent.biometrics.calibrate_protocol import (
    CalibrateConfig,
    ProtocolController,
    fit_recording,
)
from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.replay import ReplaySource
from st_agent.biometrics.supervised import (
    SupervisedMapError,
    fit_supervised,
    load_map,
    save_map,
)
from st_agent.cli import main
from st_agent.types import SignalChunk

SFREQ = 250.0
EEG = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2")


def _noise_recording(folder, blocks: int = 6, block_sec: float = 30.0, rest_sec: float = 30.0,
                     seed: int = 0, played: int | None = None) -> CalibrateConfig:
    """A protocol recorded from a listener whose signals do not respond: stationary noise
    (like BrainFlow's synthetic board), phrase_start events alternating calm/energetic."""
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder

    cfg = CalibrateConfig(blocks=blocks, block_sec=block_sec, calibration_sec=rest_sec)
    rng = np.random.default_rng(seed)
    n = round((rest_sec + blocks * block_sec) * SFREQ)
    from scipy import signal

    data = signal.lfilter([1.0], [1.0, -0.95], rng.normal(0, 4e-6, (len(EEG), n)), axis=1)
    hop = round(SFREQ)
    chunks = [SignalChunk(data[:, i:i + hop], SFREQ, EEG, ("eeg",) * len(EEG), first_sample=i,
                          t0_sec=i / SFREQ) for i in range(0, n, hop)]
    meta = SessionMeta.from_chunk(chunks[0], ConsentRecord("test-v1", scopes=("record",)))
    rec = SessionRecorder(folder, meta)
    phrase_t = rest_sec
    for c in chunks:
        rec.write_chunk(c)
        t_end = c.t0_sec + c.n_times / SFREQ
        while phrase_t < t_end and phrase_t < rest_sec + (played or blocks) * block_sec:
            k = int((phrase_t - rest_sec) // block_sec)
            knobs = cfg.energetic_knobs if k % 2 else cfg.calm_knobs
            rec.write_event("phrase_start", phrase_t, knobs=list(knobs), index=0)
            phrase_t += 10.0
    rec.close()
    return cfg


def test_a_listener_whose_signals_do_not_respond_gets_no_map(tmp_path):
    cfg = _noise_recording(tmp_path / "noise")
    ec = EstimatorConfig(calibration_sec=cfg.calibration_sec, reference_model=False)
    out = fit_recording(tmp_path / "noise", cfg, ec)
    assert out.figures["blocks_found"] == 6 and out.figures["cv"]["n_excerpts"] == 6
    assert out.mapping is None and "not above chance" in out.refused
    lo, hi = out.figures["cv"]["auc_ci"]
    assert lo <= 0.5 <= hi


def test_too_few_blocks_are_refused_with_the_reason(tmp_path):
    # stopped after two blocks: one calm and one energetic excerpt
    cfg = _noise_recording(tmp_path / "short", blocks=4, block_sec=20.0, played=2)
    ec = EstimatorConfig(calibration_sec=cfg.calibration_sec, reference_model=False)
    out = fit_recording(tmp_path / "short", cfg, ec)
    assert out.mapping is None and "usable blocks" in out.refused


def test_protocol_controller_alternates_blocks_by_session_time():
    cfg = CalibrateConfig(blocks=4, block_sec=30.0)
    ctrl = ProtocolController(cfg, lead_sec=2.0)
    ctrl.clock(10.0, "calibrating")
    ctrl.clock(40.0, "music")  # music starts at 40 s
    seen = []
    for now in (45.0, 70.0, 80.0, 95.0, 100.0):
        ctrl.clock(now, "music")
        action, _ = ctrl.predict(None)
        seen.append(ctrl.knobs)
        assert np.all(np.abs(action) <= 1.0)
    calm, energetic = cfg.calm_knobs, cfg.energetic_knobs
    # a decision at t is for the phrase starting about lead_sec later
    assert seen == [calm, energetic, energetic, energetic, calm]


def test_config_refuses_bad_protocols(tmp_path):
    with pytest.raises(ValueError, match="--blocks must be an even"):
        CalibrateConfig(blocks=5)
    with pytest.raises(ValueError, match="--skip-sec"):
        CalibrateConfig(block_sec=10.0, skip_sec=8.0)
    with pytest.raises(ValueError, match="--min-auc"):
        CalibrateConfig(min_auc=0.4)
    with pytest.raises(ValueError, match="--accelerated needs --board virtual"):
        CalibrateConfig(board="synthetic", accelerated=True)
    with pytest.raises(ValueError, match="is a folder"):
        CalibrateConfig(out=tmp_path)


def test_map_json_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2 * 5 + 1)), np.arange(40) % 2
    m = fit_supervised(X, y, markers=("hr/bpm",), ch_names=("O1", "O2"))
    m.rest_score = -0.3
    path = save_map(m, tmp_path / "cal.json")
    back = load_map(path)
    assert back.markers == ("hr/bpm",) and back.ch_names == ("O1", "O2")
    bands = rng.normal(size=(2, 5))
    assert math.isclose(back.score(bands, {"hr/bpm": 70.0}), m.score(bands, {"hr/bpm": 70.0}))
    assert math.isclose(back.rest_score, -0.3)
    with pytest.raises(SupervisedMapError, match="does not exist"):
        load_map(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    for text, match in (("{", "not valid JSON"), ('{"format": "x"}', "not a calibration map")):
        bad.write_text(text)
        with pytest.raises(SupervisedMapError, match=match):
            load_map(bad)
    doc = m.to_dict()
    doc["scale"] = doc["scale"][:-1]
    bad.write_text(json.dumps(doc))
    with pytest.raises(SupervisedMapError, match="one length"):
        load_map(bad)
    doc = m.to_dict()
    doc["coef"][0] = None
    bad.write_text(json.dumps(doc))
    with pytest.raises(SupervisedMapError, match="'coef'"):
        load_map(bad)


def test_a_map_of_other_channels_is_not_used_and_the_estimator_says_so():
    rng = np.random.default_rng(1)
    m = fit_supervised(rng.normal(size=(40, 3 * 5)), np.arange(40) % 2,
                       ch_names=("C3", "C4", "Cz"))
    est = StateEstimator(EstimatorConfig(calibration_sec=2.0, reference_model=False,
                                         supervised=m))
    data = rng.normal(0, 5e-6, (len(EEG), 1000))
    est.push(SignalChunk(data, SFREQ, EEG, ("eeg",) * len(EEG)))
    events = [e for e in est.pop_events() if e.payload.get("marker") == "supervised_map"]
    assert events and "arousal from the markers instead" in events[0].detail
    assert est._supervised is None


def test_session_refuses_a_bad_calibration_file(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"format": "nope"}')
    code = main(["session", "--board", "virtual", "--accelerated", "--minutes", "0.2",
                 "--calibration-sec", "2", "--record", str(tmp_path / "rec"),
                 "--calibration", str(bad), "--no-report"])
    assert code == 3


@pytest.mark.slow
def test_calibrate_end_to_end_on_the_virtual_listener(tmp_path, capsys):
    """The virtual listener hears the blocks; the map separates them in time-blocked CV and
    then drives arousal: energetic excerpts score above calm ones."""
    out = tmp_path / "cal.json"
    code = main(["calibrate", "--board", "virtual", "--accelerated", "--blocks", "6",
                 "--block-sec", "30", "--calibration-sec", "30", "--record",
                 str(tmp_path / "rec"), "--name", "cal", "--out", str(out), "--seed", "0",
                 "--subject", "p0042"])
    assert code == 0, capsys.readouterr().err
    assert "CV AUC" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    # recorded under the subject, and installed as their personal calibration
    from st_agent.subjects import PERSONAL_CALIBRATION_FILE, subject_dir

    meta = json.loads((tmp_path / "rec" / "cal" / "session.json").read_text())
    assert meta["meta"]["subject_id"] == "p0042"
    assert json.loads((subject_dir("p0042") / PERSONAL_CALIBRATION_FILE).read_text()) == doc
    cv = doc["info"]["cv"]
    # measured with these settings: AUC 0.992 (95 % CI 0.976-1.000), accuracy 0.945, fold
    # AUCs 0.99/1.00/0.99. The floor leaves room for another platform's composer output;
    # shorter blocks are weaker (6 x 24 s: a last calm block of 18 s, fold AUC 0.41, CI
    # 0.46-1.00, refused), so this test keeps the default 30 s
    assert cv["auc"] > 0.9 and cv["auc_ci"][0] > 0.5 and cv["n_excerpts"] == 6
    kept = json.loads((tmp_path / "rec" / "cal" / "calibration_cv.json").read_text())
    assert kept["refused"] == "" and kept["cv"]["auc"] == cv["auc"]
    # the saved map drives arousal on the recording (as `session --calibration` would)
    mapping = load_map(out)
    src = ReplaySource(tmp_path / "rec" / "cal", chunk_sec=1.0)
    est = StateEstimator(EstimatorConfig(calibration_sec=30.0, reference_model=False,
                                         supervised=mapping))
    phrases = [(e["t_sec"], e["payload"]["knobs"][1] > 0.5) for e in src.events
               if e["kind"] == "phrase_start"]
    arousal = {True: [], False: []}
    with src:
        while (chunk := src.read()) is not None:
            for e in est.push(chunk):
                if e.quality.get("calibrating") or e.bad:
                    continue
                starts = [p for p in phrases if p[0] <= e.state.t_sec - 10.0]
                if starts:
                    arousal[starts[-1][1]].append(e.state.arousal)
    assert np.mean(arousal[True]) > np.mean(arousal[False]) + 0.3
