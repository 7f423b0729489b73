"""``st-agent calibrate``: play known calm and energetic excerpts, fit a per-listener map.

The protocol (after Ehrlich et al. 2019 and Daly et al. 2016, who alternate blocks of
known affective music and fit a per-listener classifier on the EEG they evoke):

1. **Rest**: the session's own rest calibration (``calibration_sec``, default 60 s):
   the baseline, and the map's rest score.
2. **Blocks**: ``blocks`` (6) blocks of ``block_sec`` (30 s) of music composed by the
   project's composer at fixed knobs, alternating *calm* (``calm_knobs``: slow, sparse)
   and *energetic* (``energetic_knobs``: fast, dense), calm first. A block changes at
   the first phrase boundary after its time is up (phrases are 6-19 s), so the blocks
   are whole phrases; what was played when is read back from the recording's
   ``phrase_start`` events, not assumed. The live loop plays music without pauses, so
   there is no silent rest between blocks: instead the first ``skip_sec`` (8 s) of each
   block, while the state moves between the two (time constants of 5-40 s in the
   simulated listeners), are left out of the labels.

It is recorded as a session (:class:`~st_agent.live.runtime.LiveSession`: consent,
recorder, WAV, events), under ``--record`` with the name ``--name``. The recording is
then replayed through a fresh :class:`~st_agent.biometrics.estimator.StateEstimator`
(the session's settings) and every good window inside a block (after ``skip_sec``) gets
its block's label. The map (:func:`~st_agent.biometrics.supervised.fit_supervised`:
shrinkage LDA by default) maps the per-channel log band powers plus the scalar
markers the montage gives in most windows (heart rate, HRV, breathing, EDA, EMG) to
the label. It is evaluated with time-blocked CV (one calm and one energetic block held
out per fold, a ``gap_sec`` gap), pooled held-out AUC and accuracy with 95 % CIs from a
bootstrap over blocks (:func:`~st_agent.biometrics.supervised.cv_summary`).

A map whose CV AUC is not above chance (the CI's lower bound at or below 0.5) or below
``min_auc`` is **not saved**: :class:`CalibrationRefused` says why. Either way
``calibration_cv.json`` in the session folder keeps the figures. A saved map (JSON, no
pickles) is what ``st-agent session --calibration FILE`` uses for arousal.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from st_agent.errors import DataError
from st_agent.live.common import DEFAULT_CONSENT, VIRTUAL_BOARD

__all__ = ["CalibrateConfig", "CalibrationOutcome", "CalibrationRefused", "ProtocolController",
           "fit_recording", "run_calibration"]

logger = logging.getLogger(__name__)

#: Markers (``Estimate.features``) a map may use besides the band powers.
SCALAR_MARKERS = ("hr/bpm", "hr/ln_rmssd", "hr/ln_hf", "resp/rate_bpm", "eda/tonic_us",
                  "emg/ln_rms")


class CalibrationRefused(DataError):
    """The recorded calibration does not support a map (no better than chance)."""


@dataclass
class CalibrateConfig:
    """The supervised calibration protocol (``st-agent calibrate``); every field is a flag."""

    board: str = VIRTUAL_BOARD
    """BrainFlow board name or id, ``lsl:<name>``, ``file:<path>``, or ``virtual`` (a
    simulated listener that hears the music)."""
    out: Path = Path("calibration.json")
    """Where the map is written (JSON), for ``st-agent session --calibration``."""
    serial_port: str = ""
    """Serial port of the board or its dongle."""
    mac_address: str = ""
    """Bluetooth MAC address (Muse, Ganglion native)."""
    other_info: str = ""
    """BrainFlow's ``other_info`` for boards that need it."""
    blocks: int = 6
    """Number of music blocks, alternating calm and energetic (even, >= 4)."""
    block_sec: float = 30.0
    """Length of each block, seconds (whole phrases: a block ends at the first phrase
    boundary after this). Shorter blocks are weaker: on a simulated listener 6 x 24 s
    left a last calm block of 18 s in which the state had not settled (CV refused)."""
    skip_sec: float = 8.0
    """Seconds at the start of each block left out of the labels (the transition)."""
    calibration_sec: float = 60.0
    """Rest baseline before the music, seconds of good signal."""
    calm_knobs: tuple[float, float, float] = (0.5, 0.05, 0.05)
    """(valence, tempo, energy) knobs of the calm excerpts."""
    energetic_knobs: tuple[float, float, float] = (0.5, 0.95, 0.95)
    """(valence, tempo, energy) knobs of the energetic excerpts."""
    model: str = "lda"
    """lda (shrinkage LDA) or logreg (L2 logistic regression)."""
    min_auc: float = 0.6
    """Least pooled CV AUC to save a map (and the CI's lower bound must be above 0.5)."""
    gap_sec: float = 4.0
    """Training windows this close to a held-out block are dropped in the CV, seconds."""
    record: Path = Path("runs/sessions")
    """Folder under which the calibration's session folder is created."""
    name: str = ""
    """Session folder name; empty: ``calibration-<UTC time>`` (set when the config is
    built)."""
    accelerated: bool = False
    """Simulated clock as fast as the CPU allows (virtual board only)."""
    seed: int = 0
    """Seed of the virtual listener, the composer and the bootstrap."""
    listener: Path | None = None
    """With --board virtual: simulate this fitted listener.json."""
    consent: str = DEFAULT_CONSENT
    """What the listener consented to, comma-separated (recorded with the session)."""
    consent_version: str = "st-agent-local-v1"
    """Version of the consent text the listener agreed to."""
    key_file: Path | None = None
    """Encrypt the recording at rest with this key file (created when missing)."""
    play: bool = False
    """Play live through FluidSynth's audio driver (a WAV is always written)."""
    soundfont: Path | None = None
    """SoundFont (.sf2); default: the one pretty_midi ships."""
    report: bool = False
    """Also write the session's report.html."""
    subject: str = ""
    """The listener's pseudonym: the calibration is recorded under it and the map is also
    installed as their personal calibration (``<subject folder>/calibration.json``, which
    ``st-agent session --subject`` uses). Empty: a new pseudonym, nothing installed."""

    def __post_init__(self) -> None:
        if isinstance(self.name, str) and not self.name:  # one name for every later call
            from datetime import datetime, timezone

            self.name = "calibration-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.check()

    def check(self) -> None:
        """Validate the protocol's own settings and build the session's (which checks the
        rest).

        Raises
        ------
        ValueError
            Naming the setting, the bad value and what is allowed.
        """
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) \
                or self.blocks < 4 or self.blocks % 2:
            raise ValueError(f"--blocks must be an even int >= 4 (calm and energetic "
                             f"alternate; the CV holds out one pair per fold), got "
                             f"{self.blocks!r}")
        for name, lo in (("block_sec", 10.0), ("skip_sec", 0.0), ("gap_sec", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be a number >= {lo:g} "
                                 f"seconds, got {v!r}")
        if self.skip_sec > self.block_sec - 4.0:
            raise ValueError(f"--skip-sec ({self.skip_sec}) must leave at least 4 s of each "
                             f"block (--block-sec {self.block_sec})")
        if self.model not in ("lda", "logreg"):
            raise ValueError(f"--model must be lda or logreg, got {self.model!r}")
        if isinstance(self.min_auc, bool) or not isinstance(self.min_auc, int | float) \
                or not 0.5 <= self.min_auc < 1.0:
            raise ValueError(f"--min-auc must be in [0.5, 1), got {self.min_auc!r}")
        if Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is a folder; give the path of a .json file")
        if self.calm_knobs == self.energetic_knobs:
            raise ValueError("--calm-knobs and --energetic-knobs must differ")
        self.session_config()

    def session_config(self) -> Any:
        """The :class:`~st_agent.live.session.SessionConfig` the protocol records with."""
        from st_agent.live.session import SessionConfig

        return SessionConfig(
            board=self.board, serial_port=self.serial_port, mac_address=self.mac_address,
            other_info=self.other_info, minutes=self.blocks * self.block_sec / 60.0,
            policy="fixed", record=self.record, name=self.name,
            calibration_sec=self.calibration_sec, max_delta=1.0,
            start_knobs=tuple(self.calm_knobs), listener=self.listener,
            accelerated=self.accelerated, seed=self.seed, key_file=self.key_file,
            consent=self.consent, consent_version=self.consent_version, play=self.play,
            soundfont=self.soundfont, report=self.report, status_sec=1.0,
            subject=self.subject)


class ProtocolController:
    """The protocol as a session controller: calm and energetic blocks by session time.

    ``clock(t_sec, phase)`` (fed from the session's status) says where the session is;
    a decision for the phrase starting about ``lead_sec`` later sets the knobs of the
    block that phrase starts in. Rate limit 1 (``max_delta=1``): the knobs jump.
    """

    def __init__(self, cfg: CalibrateConfig, lead_sec: float) -> None:
        self.cfg, self.lead_sec = cfg, float(lead_sec)
        self.knobs = tuple(cfg.calm_knobs)
        self.music_t0: float | None = None
        self.now = 0.0

    def clock(self, t_sec: float, phase: str) -> None:
        """The session's time and phase (``calibrating``/``music``)."""
        self.now = float(t_sec)
        if phase == "music" and self.music_t0 is None:
            self.music_t0 = self.now

    def block_knobs(self, t_music: float) -> tuple[float, float, float]:
        """Knobs of the block that session-music time ``t_music`` lies in."""
        k = int(max(t_music, 0.0) // self.cfg.block_sec)
        return tuple(self.cfg.energetic_knobs if k % 2 else self.cfg.calm_knobs)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[Any, None]:
        """Action that moves the knobs to the next phrase's block (policy interface)."""
        import numpy as np

        t0 = self.now if self.music_t0 is None else self.music_t0
        target = self.block_knobs(self.now + self.lead_sec - t0)
        action = np.clip(np.subtract(target, self.knobs), -1.0, 1.0)
        self.knobs = target
        return action, None


@dataclass
class CalibrationOutcome:
    """What the protocol measured (``figures``), the map if it earned its place."""

    folder: Path
    figures: dict[str, Any]
    mapping: Any = None
    refused: str = ""
    """Why no map is saved (empty when it is)."""
    excerpts: list[Any] = field(default_factory=list)


def _excerpts(events: list[dict[str, Any]], cfg: CalibrateConfig, end_sec: float,
              ) -> list[Any]:
    """Blocks of equal-label phrases from the recording's ``phrase_start`` events."""
    from st_agent.biometrics.supervised import Excerpt

    calm, energetic = cfg.calm_knobs, cfg.energetic_knobs
    starts = []
    for ev in events:
        if ev["kind"] != "phrase_start":
            continue
        k = ev.get("payload", {}).get("knobs")
        if not (isinstance(k, list | tuple) and len(k) == 3
                and all(isinstance(x, int | float) for x in k)):
            logger.warning("phrase_start event without three knobs skipped: %r", k)
            continue
        d = [sum((a - b) ** 2 for a, b in zip(k, ref, strict=True)) for ref in (calm, energetic)]
        starts.append((float(ev["t_sec"]), int(d[1] < d[0])))
    blocks: list[list[float]] = []  # [label, start]
    for t, label in starts:
        if not blocks or blocks[-1][0] != label:
            blocks.append([label, t])
    out = []
    for i, (label, t0) in enumerate(blocks):
        t1 = blocks[i + 1][1] if i + 1 < len(blocks) else end_sec
        if t1 - t0 - cfg.skip_sec >= 4.0:
            out.append(Excerpt(int(label), t0 + cfg.skip_sec, t1))
    return out


def _replay(folder: Path, ec: Any, key: Any,
            ) -> tuple[list[Any], list[dict[str, Any]], float, tuple[str, ...]]:
    """Every estimate of the recording, its events, its end (source clock, s) and its EEG
    channel names."""
    from st_agent.biometrics.estimator import StateEstimator
    from st_agent.biometrics.montage import montage
    from st_agent.biometrics.replay import ReplaySource

    src = ReplaySource(folder, realtime=False, chunk_sec=1.0, key=key)
    out, names = [], ()
    with StateEstimator(ec) as est:
        src.start()
        while (chunk := src.read()) is not None:
            if not names:
                names = tuple(chunk.ch_names[i]
                              for i in montage(chunk.ch_names, chunk.ch_types).eeg)
            out += est.push(chunk)
        src.stop()
    return out, src.events, src.t0_sec + src.duration_sec, names


def fit_recording(folder: str | Path, cfg: CalibrateConfig, ec: Any,
                  key: Any = None) -> CalibrationOutcome:
    """Fit and cross-validate the map on a recorded protocol session.

    Parameters
    ----------
    folder : str or Path
        The session folder the protocol recorded.
    cfg : CalibrateConfig
        Knobs, ``skip_sec``, ``model``, ``gap_sec``, ``min_auc``, ``seed``.
    ec : EstimatorConfig
        Estimator settings of the session (no supervised map).
    key : bytes or Path, optional
        Key of an encrypted recording.

    Returns
    -------
    outcome : CalibrationOutcome
        ``mapping`` None and ``refused`` set when the map is not better than chance.
    """
    import numpy as np

    from st_agent.biometrics.supervised import (
        blocked_cv,
        cv_summary,
        design_row,
        fit_supervised,
        label_windows,
    )

    folder = Path(folder)
    estimates, events, end_sec, ch_names = _replay(folder, ec, key)
    excerpts = _excerpts(events, cfg, end_sec)
    labels_seen = {e.label for e in excerpts}
    figures: dict[str, Any] = {"blocks_found": len(excerpts), "model": cfg.model,
                               "skip_sec": cfg.skip_sec, "gap_sec": cfg.gap_sec}
    if len(excerpts) < 4 or labels_seen != {0, 1}:
        return CalibrationOutcome(folder, figures, None, (
            f"the recording holds {len(excerpts)} usable blocks (labels {sorted(labels_seen)}); "
            "at least 2 calm and 2 energetic are needed: was the session stopped early?"),
            excerpts)
    t = np.array([e.state.t_sec for e in estimates])
    y, groups = label_windows(t, excerpts, ec.window_sec)
    good = np.array([not e.bad and e.log_bands is not None for e in estimates])
    use = (y >= 0) & good
    present = [k for k in SCALAR_MARKERS
               if np.mean([math.isfinite(estimates[i].features.get(k, math.nan))
                           for i in np.flatnonzero(use)] or [0.0]) >= 0.8]
    figures.update(windows_labelled=int((y >= 0).sum()), windows_used=int(use.sum()),
                   markers=present)
    if use.sum() < 20 or len(set(y[use])) < 2:
        return CalibrationOutcome(folder, figures, None, (
            f"only {int(use.sum())} good labelled windows of {int((y >= 0).sum())}: the "
            "signal was rejected (artifacts) for most of the blocks"), excerpts)
    X = np.stack([design_row(estimates[i].log_bands, estimates[i].features, tuple(present))
                  for i in np.flatnonzero(use)])
    cv = blocked_cv(X, y[use], groups[use], t[use], model=cfg.model, gap_sec=cfg.gap_sec)
    summary = cv_summary(cv, np.random.default_rng(cfg.seed))
    figures["cv"] = summary.as_dict()
    refused = ""
    if not summary.auc_ci[0] > 0.5:
        refused = (f"CV AUC {summary.auc:.2f} (95 % CI {summary.auc_ci[0]:.2f}-"
                   f"{summary.auc_ci[1]:.2f}) is not above chance: the signals did not "
                   "follow the calm/energetic blocks")
        if summary.auc_ci[1] < 0.5:
            refused += (" (below chance: what the map learned from the other blocks, e.g. "
                        "a slow drift, runs against the held-out ones)")
    elif summary.auc < cfg.min_auc:
        refused = f"CV AUC {summary.auc:.2f} is below --min-auc {cfg.min_auc:g}"
    if refused:
        return CalibrationOutcome(folder, figures, None, refused, excerpts)
    mapping = fit_supervised(X, y[use], cfg.model, tuple(present), ch_names)
    rest = [mapping.score(e.log_bands, e.features) for e in estimates
            if e.quality.get("calibrating") and not e.bad and e.log_bands is not None]
    mapping.rest_score = float(np.nanmean(rest)) if np.isfinite(rest).sum() >= 10 else math.nan
    mapping.info = {"protocol": "st-agent calibrate", "session": folder.name,
                    "blocks": len(excerpts), "calm_knobs": list(cfg.calm_knobs),
                    "energetic_knobs": list(cfg.energetic_knobs), **figures}
    return CalibrationOutcome(folder, figures, mapping, "", excerpts)


def run_calibration(cfg: CalibrateConfig, on_status: Any = None) -> CalibrationOutcome:
    """Record the protocol as a session, fit the map, write it unless refused.

    Writes ``calibration_cv.json`` in the session folder in every case, and
    ``cfg.out`` when the map is saved.

    Raises
    ------
    CalibrationRefused
        When the map is not better than chance (the session stays recorded).
    """
    import json

    from st_agent.biometrics.supervised import save_map
    from st_agent.live.common import load_or_create_key
    from st_agent.live.inputs import estimator_config
    from st_agent.live.session import run_session

    scfg = cfg.session_config()
    ctrl = ProtocolController(cfg, scfg.decision_lead_sec)

    def status(s: Any) -> None:
        ctrl.clock(s.t_sec, s.phase)
        if on_status is not None:
            on_status(s)

    logger.info("calibration protocol: %.0f s rest, then %d blocks of %.0f s (calm %s, "
                "energetic %s)", cfg.calibration_sec, cfg.blocks, cfg.block_sec,
                cfg.calm_knobs, cfg.energetic_knobs)
    result = run_session(scfg, ctrl, "calibration protocol", status)
    key = load_or_create_key(cfg.key_file) if cfg.key_file is not None else None
    outcome = fit_recording(result.folder, cfg, estimator_config(scfg), key)
    doc = {"refused": outcome.refused, "out": None if outcome.refused else str(cfg.out),
           **outcome.figures}
    (result.folder / "calibration_cv.json").write_text(json.dumps(doc, indent=1) + "\n",
                                                       encoding="utf-8")
    if outcome.refused:
        raise CalibrationRefused(f"no calibration map written: {outcome.refused} (recording "
                                 f"and figures kept in {result.folder})")
    save_map(outcome.mapping, cfg.out)
    if cfg.subject:  # the subject's personal calibration, for session --subject
        from st_agent.subjects import PERSONAL_CALIBRATION_FILE, subject_dir

        personal = subject_dir(cfg.subject, create=True) / PERSONAL_CALIBRATION_FILE
        save_map(outcome.mapping, personal)
        logger.info("installed as %s's personal calibration: %s", cfg.subject, personal)
    return outcome
