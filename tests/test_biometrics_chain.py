"""Board -> estimator -> recording -> read back and export, as a session runs it."""

from __future__ import annotations

import time

import mne
import numpy as np

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.recording import (
    ConsentRecord,
    SessionMeta,
    SessionRecorder,
    export_session,
    read_session,
)
from st_agent.biometrics.sources import BrainFlowSource


def test_synthetic_board_is_estimated_recorded_read_back_and_exported(tmp_path):
    cfg = EstimatorConfig(calibration_sec=0.5, muscle_ratio=1.0, max_abs_uv=1e4, blink_uv=1e5,
                          reference_model=False)
    folder = tmp_path / "session"
    handed = 0
    states = 0
    with BrainFlowSource("synthetic") as src, StateEstimator(cfg) as est:
        consent = ConsentRecord(text_version="test-1", scopes=("record", "store_local", "export"))
        meta = SessionMeta(sfreq=src.sfreq, ch_names=src.ch_names, ch_types=src.ch_types,
                           consent=consent)
        with SessionRecorder(folder, meta) as rec:
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end:
                chunk = src.read(0.2)
                if chunk is None:
                    continue
                rec.write_chunk(chunk)
                handed += chunk.n_times
                for e in est.push(chunk):
                    rec.write_state(e.state)
                    states += 1
                for ev in src.pop_events():
                    rec.write_source_event(ev)
    assert handed > 250 and states >= 2
    session = read_session(folder)
    assert session.raw is not None and session.raw.n_times == handed
    assert sum(e["kind"] == "state" for e in session.events) == states
    eeg = mne.pick_types(session.raw.info, eeg=True)
    assert len(eeg) > 0 and np.isfinite(session.raw.get_data(picks=eeg)).all()
    # the subject appears only as a pseudonym
    assert meta.subject_id not in ("", None) and meta.subject_id in str(session.meta.subject_id)
    paths = export_session(folder, fmt="edf", out=tmp_path / "edf")
    edf = next(p for p in paths if p.suffix == ".edf")
    raw = mne.io.read_raw_edf(edf, preload=True, infer_types=True, verbose="error")
    # EDF stores whole 1 s data records: the last one is padded
    assert handed <= raw.n_times < handed + session.raw.info["sfreq"]
    ch = session.raw.ch_names[eeg[0]]
    np.testing.assert_allclose(raw.get_data(picks=[ch])[0, :handed],
                               session.raw.get_data(picks=[ch])[0], atol=1e-6)
