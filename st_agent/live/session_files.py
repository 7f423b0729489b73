"""What a finished session writes beside its recording: the score, ``summary.json``,
the report and the visuals page (the WAV and MIDI were streamed while it went)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.live.common import jsonable, load_or_create_key
from st_agent.live.session_score import ScoreFile
from st_agent.live.session_types import SessionResult

if TYPE_CHECKING:
    from st_agent.live.session import SessionConfig
    from st_agent.types import SignalChunk

__all__ = ["open_recorder", "write_session_files"]

logger = logging.getLogger(__name__)


def write_session_files(folder: Path, score: ScoreFile, summary: dict[str, Any],
                        key_file: Path | None, report: bool = True) -> SessionResult:
    """Finish ``score.abc`` (written as the session played); write ``summary.json`` (with
    the metrics read back from the recording) and, with ``report``, ``report.html`` and
    ``visuals.html``.

    Parameters
    ----------
    folder : Path
        The session folder (its recording is closed).
    score : ScoreFile
        The session's score, every phrase in it.
    summary : dict
        The session's summary; ``"metrics"`` is added from the recording.
    key_file : Path or None
        The recording's key when it is encrypted (the derived files stay plaintext: said
        in the log).
    report : bool
        Also write the report and the visuals page.

    Returns
    -------
    result : SessionResult
    """
    from st_agent.biometrics.recording import read_events
    from st_agent.live.report import session_metrics

    score_path = score.close()
    wav: Path | None = folder / "session.wav"
    if not (score.n_phrases and wav.is_file()):
        wav = None
    # from the events alone: hours of samples need not be read for a few figures
    summary["metrics"] = session_metrics(read_events(folder, key=key_file)[1])
    (folder / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n",
                                         encoding="utf-8")
    html = None
    if report:
        from st_agent.live.report import write_report

        html = write_report(folder, key_file=key_file)
        if wav is not None:  # the visuals in time with the music, beside session.wav
            from st_agent.live.visuals import write_visuals_page

            write_visuals_page(folder, key_file=key_file)
    if key_file is not None:
        logger.info("the recording in %s is encrypted with %s; its derived files "
                    "(session.wav, session.mid, score.abc, summary.json, report.html, "
                    "visuals.html, *.png) are plaintext", folder, key_file)
    return SessionResult(folder, wav, score_path, html, summary)


def open_recorder(cfg: SessionConfig, folder: Path, first: SignalChunk, controller_name: str,
                  target_name: str, bounds: Any) -> Any:
    """Open the session's recording at its first chunk: the consent record and the
    subject's pseudonym in its metadata, a ``session_start`` marker with the whole
    config, and the SHA-256 of the files that define the controller (once).

    Parameters
    ----------
    cfg : SessionConfig
    folder : Path
        The session folder.
    first : SignalChunk
        The first chunk read from the source (its layout fixes the recording's).
    controller_name, target_name : str
        How the recording names the controller and the target.
    bounds : KnobBounds
        The knob bounds in force.

    Returns
    -------
    recorder : SessionRecorder
    """
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
    from st_agent.policies.personal import controller_files
    from st_agent.subjects import subject_fields

    key = load_or_create_key(cfg.key_file)
    meta = SessionMeta.from_chunk(first, ConsentRecord(cfg.consent_version,
                                                       scopes=cfg.consent_scopes()),
                                  **subject_fields(cfg, folder))
    recorder = SessionRecorder(folder, meta, key=key)
    recorder.write_marker("session_start", first.t0_sec, board=cfg.board,
                          policy=controller_name, target=target_name,
                          bounds=asdict(bounds), config=jsonable(asdict(cfg)))
    recorder.write_event("controller_files", first.t0_sec, policy=cfg.policy,
                         controller=controller_name, files=controller_files(
                             cfg.policy, cfg.target, cfg.knobs is not None,
                             {"listener": cfg.listener, "calibration": cfg.calibration}))
    return recorder
