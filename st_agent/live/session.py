"""The live closed loop: a session in real time, or on an accelerated clock for the demo.

One loop, four jobs (see ``DESIGN.md``)::

    source.read() ─▶ recorder.write_chunk ─▶ estimator.push ─▶ latest state
                                                                   │  (a lead before the
                                                                   ▼   current phrase ends)
    music: phrase k plays ◀── composer thread writes phrase k+1 ◀── policy: next knobs

* **Acquisition and estimation** run in the main loop; every chunk is recorded
  before it is analysed, so a crash loses at most one recorder segment.
* **Decision**: ``decision_lead_sec`` before the current phrase ends, the
  observation is built with :func:`st_agent.contract.build_observation` (the
  same function the environments use) and the policy's action becomes knobs
  through :func:`st_agent.contract.action_to_knobs` under the therapist's
  :class:`~st_agent.contract.SafetyBounds`, whatever the policy says. The time
  from the arrival of the chunk that completed the latest window to the new
  knobs is the *decision latency*.
* **Composition** runs in a worker thread while the current phrase plays; the
  time between the next phrase being ready and the current one ending is the
  *lead time*. The music never waits on a decision.
* **Safety**: when the signal is lost (no samples for ``signal_timeout_sec``) or
  unusable (estimator confidence below ``min_confidence``), the knobs hold
  their last safe values and the session says so. A manual override
  (``knobs``) replaces the policy by a fixed setting reached at the rate limit.
  A stop (time up or Ctrl-C) fades the music out over ``fade_sec``.

Every knob change is logged with its reason in words, e.g. ``tempo down
(0.55→0.43): arousal +0.62 above target -0.50``, in the recording's events and
in the report.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.contract import (
    KNOB_NAMES,
    SafetyBounds,
    Target,
    action_to_knobs,
    build_observation,
    resolve_target,
)
from st_agent.types import EmotionState, Knobs, MusicFeatures, Phrase, SignalChunk

__all__ = [
    "DemoConfig",
    "LiveSession",
    "SessionConfig",
    "SessionResult",
    "SessionStatus",
    "explain_change",
    "open_source",
    "run_demo",
    "run_session",
    "write_session_wav",
]

logger = logging.getLogger(__name__)

#: Boards that are not BrainFlow boards.
VIRTUAL_BOARD = "virtual"


# --------------------------------------------------------------------------- config


@dataclass
class SessionConfig:
    """A live closed-loop session (``st-agent session``); every field is a flag."""

    board: str = "synthetic"
    """BrainFlow board name or id (``st-agent boards`` lists them; ``synthetic`` needs no
    hardware), or ``virtual``: a simulated listener streaming EEG, ECG and EMG."""
    serial_port: str = ""
    """Serial port of the board or its dongle (Cyton: ``/dev/ttyUSB0``)."""
    mac_address: str = ""
    """Bluetooth MAC address (Muse, Ganglion native)."""
    other_info: str = ""
    """BrainFlow's ``other_info`` for boards that need it; it also tells apart several
    sessions on the same board type (a jam gives each performer its own)."""
    target: str = "calm"
    """Target preset: calm, focus, uplift or energize."""
    minutes: float = 20.0
    """Length of the music part of the session, minutes (after calibration)."""
    policy: str = "calm"
    """Controller: a bundled policy name (calm), a trained policy folder
    (policy.safetensors + policy.json), or a baseline: pid, random, fixed."""
    knobs: tuple[float, float, float] | None = None
    """Manual override: hold these (valence, tempo, energy) knobs instead of the policy
    (reached at the rate limit)."""
    play: bool = False
    """Play live through FluidSynth's audio driver (a WAV is always written)."""
    record: Path = Path("runs/sessions")
    """Folder under which the session folder is created."""
    name: str = ""
    """Session folder name; empty: ``session-<UTC time>``."""
    calibration_sec: float = 60.0
    """Rest baseline before the music, seconds of good signal."""
    valence_range: tuple[float, float] = (0.0, 1.0)
    """Therapist's bounds (lo, hi) of the valence knob, within [0, 1]."""
    tempo_range: tuple[float, float] = (0.0, 1.0)
    """Therapist's bounds of the tempo knob (0 = 50 BPM, 1 = 160 BPM)."""
    energy_range: tuple[float, float] = (0.0, 1.0)
    """Therapist's bounds of the energy knob."""
    max_delta: float = 0.25
    """Largest change of any knob per phrase (the rate limit), knob units."""
    start_knobs: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Knobs of the first phrase (clipped to the bounds)."""
    listener: Path | None = None
    """Fitted listener.json from this listener's earlier sessions (``st-agent
    fit-listener``): with ``--board virtual`` the session simulates that listener, to try
    a policy (e.g. one trained on the same file) before their next real session."""
    accelerated: bool = False
    """Run on a simulated clock as fast as the CPU allows (virtual board only)."""
    seed: int = 0
    """Seed of the virtual listener, the composer and random policies."""
    key_file: Path | None = None
    """Encrypt the recording at rest with this key file (created when missing)."""
    inject_dropout: tuple[float, float] | None = None
    """Fault injection: (start_sec, duration_sec) of wall time after the board starts
    during which the board delivers nothing."""
    decision_lead_sec: float = 2.0
    """Decide and start composing the next phrase this long before the current ends."""
    signal_timeout_sec: float = 1.0
    """No samples for this long counts as a lost signal (knobs hold)."""
    min_confidence: float = 0.2
    """Estimates below this confidence are unusable (knobs hold)."""
    fade_sec: float = 4.0
    """Fade-out at the stop, seconds."""
    soundfont: Path | None = None
    """SoundFont (.sf2); default: the one pretty_midi ships."""
    consent_version: str = "st-agent-local-v1"
    """Version of the consent text the listener agreed to (recorded with the session)."""
    report: bool = True
    """Write report.html (plots and summary) at the end."""
    status_sec: float = 1.0
    """Seconds between status lines (session clock)."""

    def bounds(self) -> SafetyBounds:
        """The therapist's :class:`SafetyBounds` (ranges and ``max_delta``)."""
        return SafetyBounds(self.valence_range, self.tempo_range, self.energy_range,
                            self.max_delta)


@dataclass
class DemoConfig:
    """The demo (``st-agent demo``): a virtual listener, the bundled composer and policy,
    a few minutes of session on an accelerated clock."""

    policy: str = "calm"
    """Controller: calm (the bundled PPO policy), pid, random, fixed, or a policy folder."""
    target: str = "calm"
    """Target preset: calm, focus, uplift or energize."""
    minutes: float = 5.0
    """Minutes of music in the session (simulated clock)."""
    calibration_sec: float = 30.0
    """Rest baseline before the music, seconds (simulated clock)."""
    seed: int = 0
    """Seed of the virtual listener and the composer (same seed: same listener)."""
    out: Path = Path("runs")
    """Parent folder of ``demo-<time>/``."""
    name: str = ""
    """Folder name; empty: ``demo-<policy>-<UTC time>``."""
    listener: Path | None = None
    """Simulate this fitted listener.json instead of a population draw."""

    def session_config(self) -> SessionConfig:
        """The :class:`SessionConfig` the demo runs."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        return SessionConfig(
            board=VIRTUAL_BOARD, target=self.target, minutes=self.minutes, policy=self.policy,
            record=self.out, name=self.name or f"demo-{Path(self.policy).name}-{stamp}",
            calibration_sec=self.calibration_sec, accelerated=True, seed=self.seed,
            listener=self.listener, status_sec=30.0)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class SessionStatus:
    """What the terminal shows, once per ``status_sec`` of session time."""

    t_sec: float
    phase: str
    state: EmotionState | None
    target: tuple[float, float]
    knobs: Knobs
    signal: str
    phrases: int

    def line(self) -> str:
        """One line of text."""
        st = ("  --    --  " if self.state is None else
              f"{self.state.valence:+.2f} {self.state.arousal:+.2f} c{self.state.confidence:.1f}")
        k = self.knobs
        return (f"{self.t_sec:7.1f}s {self.phase:<11} state {st}  target "
                f"{self.target[0]:+.2f} {self.target[1]:+.2f}  knobs v{k.valence:.2f} "
                f"t{k.tempo:.2f} e{k.energy:.2f}  signal {self.signal:<8} phrases {self.phrases}")


@dataclass
class SessionResult:
    """Where a session's outputs are and its headline figures."""

    folder: Path
    wav_path: Path | None
    score_path: Path
    report_path: Path | None
    summary: dict[str, Any]


@dataclass
class _Playing:
    """A phrase on the session clock."""

    phrase: Phrase
    features: MusicFeatures
    pm: Any
    start_sec: float
    reason: str = ""
    abc: str = ""  # the whole tune when it is more than ``phrase`` (a jam's voices)

    @property
    def end_sec(self) -> float:
        return self.start_sec + self.features.duration_sec


def explain_change(old: Knobs, new: Knobs, state: tuple[float, float] | None,
                   target: tuple[float, float], tol: float = 0.005) -> list[str]:
    """Each knob change in words, with the state and target that bear on it.

    Valence is the knob for the valence axis; tempo and energy act on arousal.

    Examples
    --------
    >>> explain_change(Knobs(0.5, 0.55, 0.5), Knobs(0.5, 0.43, 0.5), (0.1, 0.62), (0.2, -0.5))
    ['tempo down (0.55→0.43): arousal +0.62 above target -0.50']
    """
    out = []
    for name in KNOB_NAMES:
        a, b = getattr(old, name), getattr(new, name)
        if abs(b - a) <= tol:
            continue
        axis = 0 if name == "valence" else 1
        axis_name = "valence" if axis == 0 else "arousal"
        words = f"{name} {'up' if b > a else 'down'} ({a:.2f}→{b:.2f})"
        if state is None or not math.isfinite(state[axis]):
            out.append(f"{words}: no usable estimate; policy's choice")
            continue
        s, t = state[axis], target[axis]
        rel = "above" if s > t + 0.05 else ("below" if s < t - 0.05 else "at")
        out.append(f"{words}: {axis_name} {s:+.2f} {rel} target {t:+.2f}")
    return out


# --------------------------------------------------------------------------- parts


def _check_writable(folder: Path) -> None:
    """Refuse before starting when ``folder`` cannot hold a recording."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot record into {folder}: {e.strerror or e}; choose a writable "
                      "folder with --record") from e


def open_source(cfg: SessionConfig) -> Any:
    """The session's biometric source (not started)."""
    from st_agent.biometrics.sources import BrainFlowSource

    if cfg.board == VIRTUAL_BOARD:
        from st_agent.listener.model import sample_listeners
        from st_agent.listener.virtual import SignalModel, VirtualListenerSource

        if cfg.listener is not None:
            from st_agent.listener.fitting import load_fit

            if not Path(cfg.listener).is_file():
                raise FileNotFoundError(f"listener file {cfg.listener} does not exist; write "
                                        "one with `st-agent fit-listener`")
            params = load_fit(cfg.listener)
        else:
            params = sample_listeners(1, rng=cfg.seed)[0]
        src: Any = VirtualListenerSource(
            params, model=SignalModel(chunk_sec=1.0 if cfg.accelerated else 0.25),
            rng=cfg.seed + 1, realtime=not cfg.accelerated)
    else:
        if cfg.accelerated:
            raise ValueError("--accelerated needs --board virtual: a real board streams in "
                             "real time")
        from st_agent.biometrics.sources import UnknownBoardError

        board: str | int = int(cfg.board) if cfg.board.strip().isdigit() else cfg.board
        try:
            src = BrainFlowSource(board, serial_port=cfg.serial_port or None,
                                  mac_address=cfg.mac_address or None,
                                  other_info=cfg.other_info or None)
        except UnknownBoardError as e:
            raise UnknownBoardError(f"{e}; or {VIRTUAL_BOARD!r} for a simulated listener. "
                                    "`st-agent boards` lists every board") from e
    if cfg.inject_dropout is not None:
        if cfg.accelerated:
            raise ValueError("--inject-dropout needs a real-time session (not --accelerated)")
        from st_agent.biometrics.faults import DropoutSource

        src = DropoutSource(src, *cfg.inject_dropout)
    return src


def estimator_config(cfg: SessionConfig) -> Any:
    """Estimator settings for the board.

    BrainFlow's synthetic board streams noise that is mostly above 30 Hz and
    hundreds of µV, which the default artifact gates reject window after
    window; for it the gates are opened so the loop can be exercised.
    """
    from st_agent.biometrics.estimator import EstimatorConfig

    ec = EstimatorConfig(calibration_sec=cfg.calibration_sec, reference_model=False)
    if cfg.board == "synthetic":
        logger.info("synthetic board: artifact gates opened (its EEG is broadband noise)")
        ec.muscle_ratio, ec.max_abs_uv, ec.blink_uv = 1.0, 1e4, 1e5
    return ec


class _PhraseMaker:
    """Composes, arranges and measures phrases in one worker thread."""

    def __init__(self, seed: int) -> None:
        from st_agent.music.composer import Composer

        self.composer = Composer()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="composer")
        self._seed = seed
        self._n = 0
        self.last: tuple[Phrase, MusicFeatures, Any] | None = None
        self.errors: list[str] = []  # composer failures covered by a repeat

    def _make(self, knobs: Knobs, context: Phrase | None) -> tuple[Phrase, MusicFeatures, Any,
                                                                    float]:
        from st_agent.music.abc import AbcError
        from st_agent.music.composer import ComposerError
        from st_agent.music.render import measure_features, render_phrase

        try:
            phrase = self.composer.compose(knobs, context=context, seed=self._seed + self._n)
            pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter)
        except (ComposerError, AbcError) as e:
            if self.last is None:
                raise
            # the music must not stop: play the last phrase again and say so
            logger.warning("composer failed (%s); repeating the last phrase", e)
            self.errors.append(str(e))
            return (*self.last, time.monotonic())
        finally:
            self._n += 1
        feats = measure_features(pm)
        self.last = (phrase, feats, pm)
        return phrase, feats, pm, time.monotonic()

    def submit(self, knobs: Knobs, context: Phrase | None) -> concurrent.futures.Future:
        return self._pool.submit(self._make, knobs, context)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- session


class LiveSession:
    """The closed loop with a wall clock (or an accelerated simulated clock).

    Parameters
    ----------
    config : SessionConfig
    controller : object
        Anything with ``predict(obs, deterministic=True) -> (action, state)``: a
        trained policy or a baseline (:func:`st_agent.policies.controllers.make_controller`
        builds the one ``config.policy`` names).
    controller_name : str
        How the report names it.
    on_status : callable, optional
        Called with a :class:`SessionStatus` every ``config.status_sec``.

    Use :meth:`run`; :meth:`request_stop` (thread-safe, also what SIGINT does
    under :func:`run_session`) ends the session cleanly with a fade-out.
    """

    def __init__(self, config: SessionConfig, controller: Any, controller_name: str = "",
                 on_status: Callable[[SessionStatus], None] | None = None) -> None:
        cfg = config
        if not (isinstance(cfg.minutes, int | float) and math.isfinite(cfg.minutes)
                and cfg.minutes > 0):
            raise ValueError(f"minutes must be a positive number, got {cfg.minutes!r}")
        for name in ("calibration_sec", "decision_lead_sec", "signal_timeout_sec", "fade_sec"):
            v = getattr(cfg, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")
        self.config = cfg
        self.bounds = cfg.bounds()
        self.target: Target = resolve_target(cfg.target)
        if not callable(getattr(controller, "predict", None)):
            raise TypeError(f"controller must have a predict(obs) method, got "
                            f"{type(controller).__name__}")
        self.controller = controller
        self.controller_name = controller_name or type(controller).__name__
        self.on_status = on_status
        self.folder = Path(cfg.record) / (
            cfg.name or "session-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S"))
        if self.folder.exists() and any(self.folder.iterdir()):
            raise ValueError(f"session folder {self.folder} exists and is not empty; choose "
                             "another --name")
        _check_writable(Path(cfg.record))
        if cfg.soundfont is not None or cfg.play:
            from st_agent.music.render import find_soundfont

            find_soundfont(cfg.soundfont)
        self._stop = threading.Event()
        self._stop_reason = ""

    def request_stop(self, reason: str = "stop requested") -> None:
        """End the session at the next loop turn, fading the music out."""
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    # -- main loop
    def run(self) -> SessionResult:
        """Run the session to its end (or a stop); write WAV, score and report."""
        from st_agent.biometrics.estimator import StateEstimator
        from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder

        cfg = self.config
        source = open_source(cfg)
        maker = _PhraseMaker(cfg.seed)
        estimator = StateEstimator(estimator_config(cfg))
        player = self._open_player() if cfg.play else None
        self._log: list[dict[str, Any]] = []
        played: list[_Playing] = []
        recorder = None
        wall0 = time.monotonic()
        self._maker_errors = maker.errors
        try:
            try:
                source.start()
            except Exception as e:
                from st_agent.biometrics.sources import SourceError

                if isinstance(e, SourceError):
                    raise SourceError(f"{e}. `st-agent boards` lists the boards and their "
                                      "ids; --board virtual needs no hardware") from e
                raise
            first = self._first_chunk(source)
            key = None
            if cfg.key_file is not None:
                from st_agent.biometrics.recording import create_key_file, load_key_file

                key = (load_key_file(cfg.key_file) if Path(cfg.key_file).exists()
                       else create_key_file(cfg.key_file))
            meta = SessionMeta.from_chunk(first, ConsentRecord(cfg.consent_version))
            recorder = SessionRecorder(self.folder, meta, key=key)
            recorder.write_marker("session_start", first.t0_sec, board=cfg.board,
                                  policy=self.controller_name, target=self.target.name,
                                  bounds=asdict(self.bounds), config=_jsonable(asdict(cfg)))
            self._loop(source, first, estimator, maker, recorder, player, played)
        finally:
            maker.close()
            source.stop()
            if player is not None:
                if self._stop.is_set():
                    player.fade_out(cfg.fade_sec)
                else:
                    player.wait(timeout_sec=max(0.0, self._music_end_wall - time.monotonic()))
                player.close()
            if recorder is not None:
                for ev in source.pop_events():
                    recorder.write_source_event(ev)
                recorder.write_marker("session_end", None, reason=self._stop_reason or "time up")
                recorder.close()
            estimator.close()
        wall = time.monotonic() - wall0
        return self._finish(played, wall)

    def _open_player(self) -> Any:
        from st_agent.music.render import AudioDeviceError, LivePlayer

        try:
            return LivePlayer(self.config.soundfont)
        except AudioDeviceError as e:
            logger.warning("--play: %s Falling back to the WAV only.", e)
            return None

    def _first_chunk(self, source: Any) -> SignalChunk:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            chunk = source.read(timeout_sec=0.5)
            if chunk is not None:
                return chunk
        raise RuntimeError(f"the board {self.config.board!r} delivered no samples in 10 s; "
                           "check that it is on and streaming")

    def _clock(self, t_stream: float, wall0: float) -> float:
        """Session time, seconds: the stream's on an accelerated clock, else the wall's."""
        if self.config.accelerated:
            return t_stream
        return time.monotonic() - wall0

    def _loop(self, source: Any, first: SignalChunk, estimator: Any, maker: _PhraseMaker,
              recorder: Any, player: Any, played: list[_Playing]) -> None:
        cfg = self.config
        wall0 = time.monotonic()
        self._last_chunk = (first.t0_sec, wall0)  # (source-clock end, wall time read)
        t_stream = (first.first_sample + first.n_times) / first.sfreq
        knobs = self.bounds.clip(Knobs(*cfg.start_knobs))
        history: deque = deque(maxlen=8)
        latest: EmotionState | None = None
        latest_ok = False
        last_data_wall = time.monotonic()
        signal_state = "ok"
        lost_since: float | None = None
        calibrated_at: float | None = None
        current: _Playing | None = None
        pending: concurrent.futures.Future | None = None
        pending_reason = ""
        queued = False  # the pending phrase is already in the live player's queue
        music_end = math.inf
        next_status = 0.0
        self.latencies_ms: list[float] = []
        self.leads_sec: list[float] = []
        self.gap_detect_sec: list[float] = []
        self._music_end_wall = time.monotonic()
        chunk: SignalChunk | None = first
        t_read = time.monotonic()
        context: Phrase | None = None
        calib_deadline = None

        while True:
            # ---- acquisition and estimation
            if chunk is not None:
                recorder.write_chunk(chunk)
                t_stream = (chunk.first_sample + chunk.n_times) / chunk.sfreq
                if signal_state == "lost":
                    gap = time.monotonic() - (lost_since or time.monotonic())
                    recorder.write_event("signal_restored", self._source_now(),
                                         detail=f"samples again after {gap:.1f} s")
                    logger.warning("signal restored after %.1f s", gap)
                signal_state = "ok" if signal_state == "lost" else signal_state
                last_data_wall = t_read
                self._last_chunk = (chunk.t0_sec + chunk.n_times / chunk.sfreq, t_read)
                for est in estimator.push(chunk):
                    recorder.write_state(est.state)
                    if not est.quality.get("calibrating"):
                        latest = est.state
                        latest_ok = (not est.bad and est.state.confidence >= cfg.min_confidence)
            for ev in source.pop_events():
                recorder.write_source_event(ev)
            now = self._clock(t_stream, wall0)
            if (not cfg.accelerated and signal_state != "lost"
                    and time.monotonic() - last_data_wall > cfg.signal_timeout_sec):
                signal_state = "lost"
                lost_since = last_data_wall
                self.gap_detect_sec.append(time.monotonic() - last_data_wall)
                recorder.write_event("signal_lost", self._source_now(), detail=(
                    f"no samples for {time.monotonic() - last_data_wall:.1f} s; knobs hold"))
                logger.warning("signal lost: no samples for %.1f s; the music holds its knobs",
                               time.monotonic() - last_data_wall)
            if signal_state != "lost":
                signal_state = "ok" if latest_ok or calibrated_at is None else "unusable"

            # ---- calibration, then the first phrase
            if calibrated_at is None:
                if calib_deadline is None:
                    calib_deadline = now + 2 * cfg.calibration_sec + 10.0
                if estimator.is_calibrated or cfg.calibration_sec == 0 or now > calib_deadline:
                    if not estimator.is_calibrated and cfg.calibration_sec > 0:
                        logger.warning("calibration incomplete after %.0f s (signal unusable?); "
                                       "starting without a baseline", now)
                    calibrated_at = now
                    recorder.write_marker("calibration_done", None, t_session=now)
                    phrase, feats, pm, _ = maker.submit(knobs, None).result()
                    context = phrase
                    current = self._start_phrase(now, phrase, feats, pm, knobs,
                                                 "first phrase at the start knobs",
                                                 source, recorder, player, played)
                    music_end = now + 60.0 * cfg.minutes
            elif current is not None:
                # ---- decision: a lead before the current phrase ends
                if pending is None and not self._stop.is_set() and \
                        now >= current.end_sec - cfg.decision_lead_sec and \
                        current.end_sec < music_end:
                    target = self.target.at(now - calibrated_at)
                    usable = signal_state == "ok" and latest is not None
                    obs = build_observation(latest if usable else None, target, knobs,
                                            latest.confidence if usable else 0.0,
                                            list(history))
                    if usable:
                        action, _ = self.controller.predict(obs, deterministic=True)
                        new = action_to_knobs(np.asarray(action).reshape(-1), knobs, self.bounds)
                        words = explain_change(knobs, new, (latest.valence, latest.arousal),
                                               target) or ["knobs unchanged: "
                                                           "the policy holds"]
                    else:
                        new = knobs
                        words = [f"knobs hold: signal {signal_state}"]
                    latency_ms = (time.monotonic() - t_read) * 1e3
                    if usable and chunk is not None:
                        self.latencies_ms.append(latency_ms)
                    history.appendleft((latest.valence if latest else math.nan,
                                        latest.arousal if latest else math.nan, knobs))
                    recorder.write_knobs(new, None)
                    recorder.write_event("decision", None, t_session=now, reasons=words,
                                         latency_ms=latency_ms, signal=signal_state,
                                         knobs=new.as_tuple(), target=target)
                    for w in words:
                        logger.debug("t=%.1fs %s", now, w)
                    knobs = new
                    pending = maker.submit(knobs, context)
                    pending_reason = "; ".join(words)
                # ---- live audio: queue the next phrase as soon as it is ready, so
                # the player joins it to the current one without a gap
                if player is not None and pending is not None and pending.done() \
                        and not queued:
                    player.play(pending.result()[2])
                    queued = True
                # ---- the next phrase takes over when the current one ends
                if now >= current.end_sec:
                    if current.end_sec >= music_end or self._stop.is_set():
                        break
                    if pending is None:  # no decision yet (e.g. stop raced): hold knobs
                        pending = maker.submit(knobs, context)
                        pending_reason = "knobs hold"
                    phrase, feats, pm, ready_wall = pending.result()
                    lead = self._lead(current, ready_wall, wall0)
                    self.leads_sec.append(lead)
                    if lead < 0:
                        recorder.write_event("late_phrase", None, lead_sec=lead)
                        logger.warning("phrase ready %.2f s late", -lead)
                    pending = None
                    context = phrase
                    if player is not None and not queued:
                        player.play(pm)
                    queued = False
                    current = self._start_phrase(current.end_sec, phrase, feats, pm, knobs,
                                                 pending_reason, source, recorder, None, played)
            if self._stop.is_set():
                break
            if self.on_status is not None and now >= next_status:
                next_status = now + cfg.status_sec
                phase = "calibrating" if calibrated_at is None else "music"
                self.on_status(SessionStatus(now, phase, latest, self.target.at(now), knobs,
                                             signal_state, len(played)))
            chunk = source.read(timeout_sec=0.1)
            t_read = time.monotonic()
            if chunk is None and cfg.accelerated:
                raise RuntimeError("the virtual listener stopped delivering")
        self._stopped_at = now
        self._calibrated_at = calibrated_at

    def _source_now(self) -> float:
        """Now on the source's clock: the last chunk's end plus the wall time since."""
        t_end, wall = self._last_chunk
        return t_end + (time.monotonic() - wall)

    def _lead(self, current: _Playing, ready_wall: float, wall0: float) -> float:
        """Seconds between the next phrase being ready and the current one ending."""
        if self.config.accelerated:
            return math.nan
        return (wall0 + current.end_sec) - ready_wall

    def _start_phrase(self, t: float, phrase: Phrase, feats: MusicFeatures, pm: Any,
                      knobs: Knobs, reason: str, source: Any, recorder: Any, player: Any,
                      played: list[_Playing]) -> _Playing:
        p = _Playing(phrase, feats, pm, t, reason)
        played.append(p)
        recorder.write_phrase(phrase, None, duration_sec=feats.duration_sec, features=feats)
        recorder.write_event("phrase_start", None, t_session=t, index=len(played) - 1,
                             knobs=knobs.as_tuple(), reason=reason)
        hear = getattr(getattr(source, "inner", source), "hear", None)
        if hear is not None:  # a virtual listener hears what plays
            hear(feats)
        if player is not None:
            player.play(pm)
        self._music_end_wall = time.monotonic() + max(0.0, p.end_sec - t)
        return p

    # -- outputs
    def _finish(self, played: list[_Playing], wall_sec: float) -> SessionResult:
        cfg = self.config
        folder = self.folder
        score = folder / "score.abc"
        score.write_text(session_score(played, title=f"st-agent session {folder.name}"),
                         encoding="utf-8")
        wav = None
        if played:
            stop_at = getattr(self, "_stopped_at", None)
            music_sec = played[-1].end_sec - played[0].start_sec
            if self._stop.is_set() and stop_at is not None:
                music_sec = min(music_sec, stop_at - played[0].start_sec + cfg.fade_sec)
            wav = write_session_wav(folder / "session.wav", played, music_sec, cfg.fade_sec,
                                    cfg.soundfont)
        summary = self._summary(played, wall_sec)
        from st_agent.biometrics.recording import read_session
        from st_agent.live.report import session_metrics

        summary["metrics"] = session_metrics(read_session(folder, key=cfg.key_file).events)
        (folder / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n",
                                             encoding="utf-8")
        report = None
        if cfg.report:
            from st_agent.live.report import write_report

            report = write_report(folder)
        return SessionResult(folder, wav, score, report, summary)

    def _summary(self, played: list[_Playing], wall_sec: float) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        leads = np.asarray([x for x in self.leads_sec if math.isfinite(x)])
        music = (played[-1].end_sec - played[0].start_sec) if played else 0.0
        return {
            "board": self.config.board, "policy": self.controller_name,
            "target": self.target.name, "target_point": self.target.at(0.0),
            "phrases": len(played), "music_sec": music,
            "calibration_end_sec": getattr(self, "_calibrated_at", None),
            "stopped": self._stop.is_set(), "stop_reason": self._stop_reason or "time up",
            "wall_sec": wall_sec, "accelerated": self.config.accelerated,
            "decision_latency_ms": {"n": int(lat.size),
                                    "p50": float(np.percentile(lat, 50)) if lat.size else None,
                                    "p95": float(np.percentile(lat, 95)) if lat.size else None},
            "lead_time_sec": {"n": int(leads.size),
                              "min": float(leads.min()) if leads.size else None,
                              "p5": float(np.percentile(leads, 5)) if leads.size else None},
            "signal_lost_detect_sec": self.gap_detect_sec,
            "composer_repeats": len(getattr(self, "_maker_errors", [])),
        }


# --------------------------------------------------------------------------- music files


def join_phrases(played: list[_Playing]) -> Any:
    """One PrettyMIDI of the whole session: each phrase shifted to its start."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    by_key: dict[tuple[int, bool, str], pretty_midi.Instrument] = {}
    t0 = played[0].start_sec
    for p in played:
        shift = p.start_sec - t0
        for inst in p.pm.instruments:
            k = (inst.program, inst.is_drum, inst.name)
            if k not in by_key:
                by_key[k] = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
                out.instruments.append(by_key[k])
            dst = by_key[k]
            for n in inst.notes:
                dst.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start + shift,
                                                  n.end + shift))
    return out


def session_score(played: list[_Playing], title: str = "st-agent session") -> str:
    """The session as one ABC tune: each phrase a line, with inline tempo and key changes."""
    lines = ["X:1", f"T:{title}"]
    if not played:
        return "\n".join([*lines, "M:4/4", "L:1/8", "K:C", "z8|"]) + "\n"
    first = played[0].phrase
    lines += [f"M:{first.meter}", f"L:{first.unit}",
              f"Q:1/4={round(first.bpm)}", f"K:{first.key}"]
    key, bpm, meter = first.key, round(first.bpm), first.meter
    for i, p in enumerate(played):
        ph = p.phrase
        k = ph.knobs
        lines.append(f"% phrase {i}: t={p.start_sec:.1f}s knobs valence {k.valence:.2f} "
                     f"tempo {k.tempo:.2f} energy {k.energy:.2f}")
        head = ""
        if ph.meter != meter:
            head += f"[M:{ph.meter}]"
            meter = ph.meter
        if round(ph.bpm) != bpm:
            head += f"[Q:1/4={round(ph.bpm)}]"
            bpm = round(ph.bpm)
        if ph.key != key:
            head += f"[K:{ph.key}]"
            key = ph.key
        lines.append(head + ph.body.strip())
    return "\n".join(lines) + "\n"


def write_session_wav(path: Path, played: list[_Playing], music_sec: float, fade_sec: float,
                      soundfont: Path | None = None) -> Path:
    """The whole session as one WAV: the phrases at their times, cut at ``music_sec``,
    the last ``fade_sec`` faded out, the loudest sample at -1 dBFS."""
    from st_agent.music.render import AudioRenderer

    with AudioRenderer(soundfont) as synth:
        audio = synth.synthesize(join_phrases(played))
        n = min(audio.size, round(music_sec * synth.sample_rate))
        audio = audio[:n].copy()
        fade = min(n, round(fade_sec * synth.sample_rate))
        if fade:
            audio[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        _write_wav(path, audio, synth.sample_rate)
    return path


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int, peak: float = 0.89) -> None:
    """Mono float audio to 16-bit PCM WAV, the loudest sample at ``peak`` of full scale
    (as :meth:`~st_agent.music.render.AudioRenderer.write_wav`)."""
    from scipy.io import wavfile

    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0:
        audio = audio * (peak / top)
    wavfile.write(path, sample_rate, np.round(audio * 32767).astype(np.int16))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------- entry points


def run_session(cfg: SessionConfig, controller: Any, controller_name: str = "",
                on_status: Callable[[SessionStatus], None] | None = None) -> SessionResult:
    """Run a session; the first Ctrl-C (SIGINT) stops it cleanly, a second aborts."""
    session = LiveSession(cfg, controller, controller_name, on_status)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _handler(signum: int, frame: Any) -> None:
            if session._stop.is_set():
                raise KeyboardInterrupt
            logger.warning("Ctrl-C: stopping (fading out, writing the report); "
                           "press again to abort")
            session.request_stop("Ctrl-C")

        previous = signal.signal(signal.SIGINT, _handler)
    try:
        return session.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_demo(cfg: DemoConfig, controller: Any, controller_name: str = "",
             on_status: Callable[[SessionStatus], None] | None = None) -> SessionResult:
    """Run the demo session (:meth:`DemoConfig.session_config`)."""
    return run_session(cfg.session_config(), controller, controller_name, on_status)

