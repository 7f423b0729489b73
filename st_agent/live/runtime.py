"""The loop of one live session: acquisition, estimation, decisions, music, recording.

One loop, four jobs (see ``DESIGN.md`` and :mod:`st_agent.live.session`)::

    source.read() ─▶ recorder.write_chunk ─▶ estimator.push ─▶ latest state
                                                                   │  (a lead before the
                                                                   ▼   current phrase ends)
    music: phrase k plays ◀── composer thread writes phrase k+1 ◀── policy: next knobs

Each turn of :meth:`LiveSession._loop` runs named steps: acquire a chunk,
watch the signal, calibrate (then the first phrase), decide when the lead is
reached, queue the next phrase for live audio, hand over to it when the
current one ends, and show the status.

Besides the speakers, every phrase, decision and marker goes to the session's
outputs (:func:`st_agent.live.session_outputs.build_outputs`: the streaming
``session.wav`` first); an output that fails is dropped and recorded as an
``output_failed`` event, the session goes on. The controller is guarded
(:mod:`st_agent.live.guarded`): one that raises or returns a non-finite action is
replaced by its fallback, recorded as a ``controller_fallback`` event.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from st_agent.contract import Target, action_to_knobs, build_observation
from st_agent.live.common import (
    Playing,
    explain_change,
    open_player,
    read_first_chunk,
)
from st_agent.live.composing import PhraseMaker
from st_agent.live.dashboard_controls import ControlState, adjust_knobs, apply_controls
from st_agent.live.dashboard_session import DashboardMixin
from st_agent.live.explain import controller_info
from st_agent.live.guarded import Fallback, GuardedController
from st_agent.live.inputs import estimator_config, open_source, start_source
from st_agent.live.outputs import OutputFailure, OutputSet
from st_agent.live.session_files import open_recorder, write_session_files
from st_agent.live.session_outputs import (
    MARKER_CALIBRATED,
    MARKER_CONTROLLER,
    MARKER_LATE,
    MARKER_STOP,
    WAV_OUTPUT,
    build_outputs,
)
from st_agent.live.session_score import ScoreFile
from st_agent.live.session_sound import phrase_programs, play_phrase, player_settings
from st_agent.live.session_types import (
    LoopParts,
    LoopState,
    SessionResult,
    SessionStatus,
    UsableEstimate,
    session_folder,
)
from st_agent.types import Knobs, SignalChunk

if TYPE_CHECKING:
    from st_agent.live.session import SessionConfig

__all__ = ["LiveSession", "SessionResult", "SessionStatus", "session_folder"]

logger = logging.getLogger(__name__)


class LiveSession(DashboardMixin):  # the dashboard's hooks (dashboard_session.py)
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
    outputs : sequence of SessionOutput, optional
        Outputs added after those ``config`` asks for
        (:func:`~st_agent.live.session_outputs.build_outputs`).
    on_dashboard : callable, optional
        With ``config.dashboard``: called with the dashboard's URL (token included) once
        it serves (the command line prints it).

    Use :meth:`run`; :meth:`request_stop` (thread-safe, also what SIGINT does
    under :func:`st_agent.live.session.run_session`) ends the session cleanly
    with a fade-out.
    """

    def __init__(self, config: SessionConfig, controller: Any, controller_name: str = "",
                 on_status: Callable[[SessionStatus], None] | None = None,
                 outputs: Sequence[Any] = (),
                 on_dashboard: Callable[[str], None] | None = None) -> None:
        cfg = config
        cfg.check()  # the config may have changed since it was built
        self.config = cfg
        self.bounds = cfg.bounds()
        # --target-schedule, and planned knob paths at target changes
        from st_agent.live.target_change import for_session, session_target

        self.target: Target = session_target(cfg.target, getattr(cfg, "target_schedule", ""))
        self.target_change = for_session(cfg, self.bounds)
        from st_agent.live.phrase_audio import ListenerHearing  # --listener-hears

        self._hearing = ListenerHearing(getattr(cfg, "listener_hears", "midi"), cfg.soundfont,
                                        sound=cfg.sound)
        if not callable(getattr(controller, "predict", None)):
            raise TypeError(f"controller must have a predict(obs) method, got "
                            f"{type(controller).__name__}")
        self.controller = controller
        self.controller_name = controller_name or type(controller).__name__
        self.guard = GuardedController(controller, self.controller_name,
                                       None if cfg.knobs is not None else self._pid_fallback)
        self.on_status = on_status
        from st_agent.music.render import find_soundfont

        find_soundfont(cfg.soundfont)  # the session WAV needs it: refuse before creating
        self.outputs: OutputSet = build_outputs(cfg, tuple(outputs))
        self.folder = session_folder(cfg)  # last: it creates cfg.record
        self._stop = threading.Event()
        self._stop_reason = ""
        self.latencies_ms: list[float] = []
        self.leads_sec: list[float] = []
        self.gap_detect_sec: list[float] = []
        self._music_end_wall = time.monotonic()
        self._last_chunk = (0.0, time.monotonic())  # (source-clock end, wall time read)
        self._stopped_at: float | None = None
        self._calibrated_at: float | None = None
        self._estimator_report: dict[str, Any] = {}
        self._maker_errors: list[str] = []
        self._recorder: Any = None
        self._outputs_open = False
        # off-policy evaluation: behaviour noise (--explore-std), one "transition" event per
        # decision (st_agent.policies.transitions documents the payload)
        from st_agent.policies.transitions import Exploration, TransitionLog, policy_fingerprint

        self.transitions = TransitionLog(
            self.bounds.max_delta, Exploration(getattr(cfg, "explore_std", 0.0),
                                               np.random.default_rng([cfg.seed, 18])),
            self.controller_name, policy_fingerprint(cfg.policy, cfg.target))
        self._now = 0.0  # session time of the loop's latest turn, seconds
        # the live dashboard (st_agent.live.dashboard*); its controls act on these
        self.controls = ControlState()
        self.hub: Any = None  # the DashboardHub while a dashboard serves
        self._dashboard: Any = None
        self._on_dashboard = on_dashboard

    def _pid_fallback(self) -> tuple[Any, str]:
        """The tuned PID of the session's target (the guard's fallback)."""
        from st_agent.policies.controllers import make_controller

        ctrl, name = make_controller("pid", self.bounds, self.config.target)
        return ctrl, f"fallback {name}"

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop.is_set()

    def request_stop(self, reason: str = "stop requested") -> None:
        """End the session at the next loop turn, fading the music out."""
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    # ------------------------------------------------------------------ run
    def run(self) -> SessionResult:
        """Run the session to its end (or a stop); write WAV, score and report."""
        from st_agent.biometrics.estimator import StateEstimator

        cfg = self.config
        source = open_source(cfg)
        player = open_player(cfg.soundfont, player_settings(cfg.sound)) if cfg.play else None
        try:  # the session sound: the composer thread renders ahead when a live player
            # needs each phrase's loudness gain before it plays (live/session_sound.py)
            maker = PhraseMaker(cfg.seed, sound=cfg.sound, render_ahead=player is not None,
                                soundfont=cfg.soundfont)
        except BaseException:
            if player is not None:
                player.close()
            raise
        estimator = StateEstimator(estimator_config(cfg))
        recorder = None
        wall0 = time.monotonic()
        self._maker_errors = maker.errors
        created = not self.folder.exists()
        try:
            start_source(source)
            first = read_first_chunk(source, f"the board {cfg.board!r}")
            recorder = self._recorder = open_recorder(
                cfg, self.folder, first, self.controller_name, self.target.name, self.bounds)
            self._output_failures(self.outputs.open(self.folder))
            self._outputs_open = True
            self._start_dashboard(first)
            score = ScoreFile(self.folder / "score.abc", f"st-agent session {self.folder.name}")
            self._loop(LoopParts(source, estimator, maker, recorder, player, score,
                                 time.monotonic()), first)
        except BaseException as e:
            self._close(source, maker, estimator, player, recorder,
                        f"crashed: {type(e).__name__}: {e}")
            self._discard_if_empty(recorder, created)
            raise
        self._close(source, maker, estimator, player, recorder, self._stop_reason or "time up")
        # what the estimator rejected and how its calibration went, for the summary
        self._estimator_report = {"gates": estimator.gate_report().as_dict(),
                                  "calibration": asdict(estimator.calibration_status()),
                                  "markers_unavailable": estimator.marker_status()}
        return self._finish(score, time.monotonic() - wall0)

    def _close(self, source: Any, maker: PhraseMaker, estimator: Any, player: Any,
               recorder: Any, reason: str) -> None:
        """Stop everything; the music fades out on a stop, else plays to its end. The
        outputs are closed whatever happened (``reason`` says what)."""
        maker.close()
        self.target_change.close()
        self._hearing.close()
        source.stop()
        if player is not None:
            if self._stop.is_set():
                player.fade_out(self.config.fade_sec)
            else:
                player.wait(timeout_sec=max(0.0, self._music_end_wall - time.monotonic()))
            player.close()
        if self._outputs_open:
            self._outputs_open = False
            self._output_failures(self.outputs.close(reason))
        if recorder is not None:
            for ev in source.pop_events():
                recorder.write_source_event(ev)
            self._target_change_events(recorder)
            recorder.write_marker("session_end", None, reason=self._stop_reason or "time up")
            recorder.close()
        estimator.close()
        self._stop_dashboard(reason)

    def _discard_if_empty(self, recorder: Any, created: bool) -> None:
        """A start that failed before a single sample was recorded leaves no folder (it
        would block a rerun with the same ``--name``)."""
        if recorder is None or not created or recorder.n_samples_written > 0:
            return
        logger.warning("the session failed before recording anything; removing %s",
                       self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _output_failures(self, failures: list[OutputFailure]) -> None:
        """Record each output that failed (and was dropped) as an ``output_failed`` event,
        and each notice an output posted (a MIDI port lost or back) as ``output_notice``."""
        for t_sec, text in self.outputs.pop_notices():
            logger.debug("t=%.1fs %s", t_sec, text)  # the output has logged it
            if self._recorder is not None and self._recorder.active:
                self._recorder.write_event("output_notice", None, t_session=t_sec,
                                           detail=text)
        for f in failures:
            if self._recorder is not None and self._recorder.active:
                self._recorder.write_event("output_failed", None, output=f.name,
                                           during=f.during, error=f.error,
                                           t_session=self._now)

    def _fallback_event(self, fb: Fallback, now: float) -> None:
        """Record and mark a controller that was replaced."""
        if self._recorder is not None:
            self._recorder.write_event("controller_fallback", None, t_session=now,
                                       failed=fb.failed, error=fb.error, now=fb.now)
        self._output_failures(self.outputs.marker(
            now, f"{MARKER_CONTROLLER}: {fb.failed} failed ({fb.error}); {fb.now} decides"))

    def _clock(self, t_stream: float, wall0: float) -> float:
        """Session time, seconds: the stream's on an accelerated clock, else the wall's."""
        if self.config.accelerated:
            return t_stream
        return time.monotonic() - wall0

    # ------------------------------------------------------------------ loop
    def _loop(self, parts: LoopParts, first: SignalChunk) -> None:
        cfg = self.config
        self._last_chunk = (first.t0_sec, parts.wall0)
        st = LoopState(knobs=self.bounds.clip(Knobs(*cfg.start_knobs)), chunk=first,
                        t_stream=(first.first_sample + first.n_times) / first.sfreq,
                        t_read=time.monotonic(), last_data_wall=time.monotonic(),
                        usable=UsableEstimate(cfg.signal_hold_sec, cfg.min_confidence))
        self._music_end_wall = time.monotonic()
        while True:
            self._acquire(st, parts)
            now = self._now = self._clock(st.t_stream, parts.wall0)
            self._watch_signal(st, parts)
            if self.hub is not None:  # the dashboard's controls (pause, stop, ...)
                apply_controls(self, self.hub, parts.recorder, now)
            if st.calibrated_at is None:
                self._calibrate(st, parts, now)
            elif st.current is not None:
                self._decide_if_due(st, parts, now)
                self._queue_live(st, parts)
                if now >= st.current.end_sec:  # the next phrase takes over
                    if st.current.end_sec >= st.music_end or self._stop.is_set():
                        break
                    self._next_phrase(st, parts)
            if self._stop.is_set():
                break
            self._show_status(st, parts, now)
            st.chunk = parts.source.read(timeout_sec=0.1)
            st.t_read = time.monotonic()
            if st.chunk is None and cfg.accelerated:
                raise RuntimeError("the virtual listener stopped delivering")
        self._stopped_at = now
        self._calibrated_at = st.calibrated_at
        self._output_failures(self.outputs.marker(
            now, f"{MARKER_STOP}: {self._stop_reason or 'time up'}"))

    def _acquire(self, st: LoopState, parts: LoopParts) -> None:
        """Record the chunk read last turn, then estimate from it."""
        chunk, recorder = st.chunk, parts.recorder
        if chunk is not None:
            recorder.write_chunk(chunk)
            st.t_stream = (chunk.first_sample + chunk.n_times) / chunk.sfreq
            if st.signal == "lost":
                gap = time.monotonic() - (st.lost_since or time.monotonic())
                recorder.write_event("signal_restored", self._source_now(),
                                     detail=f"samples again after {gap:.1f} s")
                logger.warning("signal restored after %.1f s", gap)
                st.signal = "ok"
            st.last_data_wall = st.t_read
            self._last_chunk = (chunk.t0_sec + chunk.n_times / chunk.sfreq, st.t_read)
            if self.hub is not None:
                self._dash_chunk(chunk)
            for est in parts.estimator.push(chunk):
                recorder.write_state(est.state)
                if self.hub is not None:
                    self._dash_estimate(est, parts.estimator)
                if not est.quality.get("calibrating"):
                    st.latest = est.state
                    st.usable.update(est.state, est.bad)
            # calibration warnings and fallbacks, markers the montage cannot give
            for ev in parts.estimator.pop_events():
                recorder.write_event(ev.kind, ev.t_sec, detail=ev.detail, **ev.payload)
        for ev in parts.source.pop_events():
            recorder.write_source_event(ev)

    def _watch_signal(self, st: LoopState, parts: LoopParts) -> None:
        """No samples for ``signal_timeout_sec``: lost; a poor estimate: unusable."""
        cfg = self.config
        # silent: the last read brought nothing, and nothing came for signal_timeout_sec
        # (the time this turn spent on a chunk that did arrive is not silence)
        silent = time.monotonic() - st.last_data_wall
        if st.chunk is None and not cfg.accelerated and st.signal != "lost" \
                and silent > cfg.signal_timeout_sec:
            st.signal = "lost"
            st.lost_since = st.last_data_wall
            self.gap_detect_sec.append(time.monotonic() - st.last_data_wall)
            parts.recorder.write_event("signal_lost", self._source_now(), detail=(
                f"no samples for {time.monotonic() - st.last_data_wall:.1f} s; knobs hold"))
            logger.warning("signal lost: no samples for %.1f s; the music holds its knobs",
                           time.monotonic() - st.last_data_wall)
        if st.signal != "lost":
            st.signal = "ok" if st.usable.ok or st.calibrated_at is None else "unusable"

    def _calibrate(self, st: LoopState, parts: LoopParts, now: float) -> None:
        """Wait for the rest baseline (or its deadline), then play the first phrase."""
        cfg, estimator = self.config, parts.estimator
        if st.calib_deadline is None:
            st.calib_deadline = now + 2 * cfg.calibration_sec + 10.0
        if not (estimator.is_calibrated or cfg.calibration_sec == 0 or now > st.calib_deadline):
            return
        if not estimator.is_calibrated and cfg.calibration_sec > 0:
            logger.warning("calibration incomplete after %.0f s (signal unusable?); "
                           "starting without a baseline", now)
        st.calibrated_at = now
        parts.recorder.write_marker("calibration_done", None, t_session=now)
        self._output_failures(self.outputs.marker(now, MARKER_CALIBRATED))
        phrase, feats, pm, _ = parts.maker.submit(st.knobs, None).result()
        # the first phrase starts when it is composed (the player starts it then), not
        # when calibration ended: every later start is chained from this one
        start = self._clock(st.t_stream, parts.wall0)
        st.context = phrase
        st.current = self._start_phrase(
            Playing(phrase, feats, pm, start, "first phrase at the start knobs"), st.knobs,
            parts, parts.player)
        st.music_end = start + 60.0 * cfg.minutes

    def _decide_if_due(self, st: LoopState, parts: LoopParts, now: float) -> None:
        """A lead before the current phrase ends: choose the knobs, start composing."""
        cfg, cur = self.config, st.current
        assert cur is not None and st.calibrated_at is not None
        if st.pending is not None or self._stop.is_set() \
                or now < cur.end_sec - cfg.decision_lead_sec or cur.end_sec >= st.music_end:
            return
        tgt = self.target_change.current_target(self.target)  # a requested change
        target = tgt.at(now - st.calibrated_at)
        # a blink's few unusable windows do not hold the knobs: the last usable estimate
        # (at most signal_hold_sec older) decides
        latest = st.usable.state
        usable = st.signal == "ok" and latest is not None
        obs = build_observation(latest if usable else None, target, st.knobs,
                                latest.confidence if usable else 0.0, list(st.history))
        new, words, applied, logp, mean = self._controller_step(st, obs, target, now, usable)
        # after a target change the knobs follow the planned path (target_change.py)
        planned = self.target_change.decide(now, now - st.calibrated_at, tgt, st.knobs,
                                            parts.maker)
        if planned is not None:
            new, words = planned.knobs, planned.words
        self._target_change_events(parts.recorder)
        # the dashboard's pause and knob override come last (a planned target
        # change waits while they hold)
        if self.controls.active:
            new, words = adjust_knobs(self.controls, st.knobs, new, words, self.bounds)
            planned = None
        latency_ms = (time.monotonic() - st.t_read) * 1e3
        if usable and st.chunk is not None:
            self.latencies_ms.append(latency_ms)
        st.history.appendleft((latest.valence if latest else math.nan,
                               latest.arousal if latest else math.nan, st.knobs))
        parts.recorder.write_knobs(new, None)
        parts.recorder.write_event("decision", None, t_session=now, reasons=words,
                                   latency_ms=latency_ms, signal=st.signal,
                                   knobs=new.as_tuple(), target=tuple(target),
                                   target_region=getattr(target, "region", None),
                                   controller=self.guard.using)
        if self.hub is not None:
            from st_agent.live.dashboard_feed import publish_decision

            publish_decision(self.hub, now, new, target, words, self.guard.using)
        # the transition (off-policy evaluation); knobs set by a planned target change or
        # a control (or held) are logged as held, with the change that was applied
        held = not usable or new != action_to_knobs(applied, st.knobs, self.bounds)
        if held:
            applied = mean = (np.asarray(new.as_tuple()) - st.knobs.as_tuple()) \
                / self.bounds.max_delta
            logp = 0.0
        parts.recorder.write_event("transition", None, **self.transitions.payload(
            obs, applied, logp, mean, held=held, name=self.guard.using))
        self._output_failures(self.outputs.state(now, latest if usable else None, new))
        for w in words:
            logger.debug("t=%.1fs %s", now, w)
        st.knobs = new
        st.pending = planned.submit(parts.maker, st.context) \
            if planned is not None and planned.submit is not None \
            else parts.maker.submit(st.knobs, st.context)  # a planned step's phrase
        st.pending_reason = "; ".join(words)

    def _controller_step(self, st: LoopState, obs: np.ndarray, target: Target, now: float,
                         usable: bool) -> tuple[Knobs, list[str], np.ndarray, float, np.ndarray]:
        """The controller's knobs and their reasons; with the behaviour noise (OPE) the
        applied action, its log-density and the noise-free mean."""
        if not usable:
            return st.knobs, [f"knobs hold: signal {st.signal}"], np.zeros(3), 0.0, np.zeros(3)
        latest = st.usable.state
        assert latest is not None
        action, fallback = self.guard.predict(obs)
        applied, logp, mean = self.transitions.explore(action)  # behaviour noise (OPE)
        explored = self.transitions.exploration.std > 0  # then no controller reason
        new = action_to_knobs(applied, st.knobs, self.bounds)
        # the reason states what the controller used (its explain()), the rate
        # limit and the bound that shaped the move (st_agent.live.explain)
        words = explain_change(st.knobs, new, (latest.valence, latest.arousal), target,
                               action=applied if explored else action, bounds=self.bounds,
                               info=None if explored else controller_info(self.guard.active)) \
            or ["knobs unchanged: the controller holds them"]
        if explored:
            words = [*words, f"exploration noise on the action (--explore-std "
                             f"{self.transitions.exploration.std:g})"]
        if fallback is not None:
            self._fallback_event(fallback, now)
            words = [f"knobs hold: the controller failed ({fallback.error}); "
                     f"{fallback.now} decides from the next phrase"]
        return new, words, applied, logp, mean

    def _queue_live(self, st: LoopState, parts: LoopParts) -> None:
        """Live audio: queue the next phrase as soon as it is ready, so the player joins
        it to the current one without a gap."""
        if parts.player is not None and st.pending is not None and st.pending.done() \
                and not st.queued:
            play_phrase(parts.player, st.pending.result()[2])
            st.queued = True

    def _next_phrase(self, st: LoopState, parts: LoopParts) -> None:
        """The current phrase ended: the composed one (or, without a decision, one at the
        same knobs) starts; its lead time is measured."""
        cur = st.current
        assert cur is not None
        if st.pending is None:  # no decision yet (e.g. stop raced): hold knobs
            st.pending = parts.maker.submit(st.knobs, st.context)
            st.pending_reason = "knobs hold"
        phrase, feats, pm, ready_wall = st.pending.result()
        self._target_change_events(parts.recorder)  # the step's measured audio
        lead = self._lead(cur, ready_wall, parts.wall0)
        self.leads_sec.append(lead)
        if lead < 0:
            parts.recorder.write_event("late_phrase", None, lead_sec=lead)
            logger.warning("phrase ready %.2f s late", -lead)
            self._output_failures(self.outputs.marker(
                cur.end_sec, f"{MARKER_LATE}: ready {-lead:.2f} s late"))
        st.pending = None
        st.context = phrase
        if parts.player is not None and not st.queued:
            play_phrase(parts.player, pm)
        st.queued = False
        st.current = self._start_phrase(
            Playing(phrase, feats, pm, cur.end_sec, st.pending_reason), st.knobs, parts, None)

    def _target_change_events(self, recorder: Any) -> None:
        """Record the target change's events (target_change, target_change_step,
        target_change_done; st_agent.live.target_change documents them)."""
        for kind, payload in self.target_change.pop_events():
            recorder.write_event(kind, None, **payload)

    def _show_status(self, st: LoopState, parts: LoopParts, now: float) -> None:
        if self.hub is not None and now >= st.next_status:
            self._dash_status(st, parts, now)
        if self.on_status is not None and now >= st.next_status:
            st.next_status = now + self.config.status_sec
            phase = "calibrating" if st.calibrated_at is None else "music"
            note = parts.estimator.calibration_status().message if phase == "calibrating" \
                else ""
            self.on_status(SessionStatus(now, phase, st.latest, self.target.at(now), st.knobs,
                                         st.signal, parts.score.n_phrases, note,
                                         self.guard.using if self.guard.failed else ""))

    def _source_now(self) -> float:
        """Now on the source's clock: the last chunk's end plus the wall time since."""
        t_end, wall = self._last_chunk
        return t_end + (time.monotonic() - wall)

    def _lead(self, current: Playing, ready_wall: float, wall0: float) -> float:
        """Seconds between the next phrase being ready and the current one ending."""
        if self.config.accelerated:
            return math.nan
        return (wall0 + current.end_sec) - ready_wall

    def _start_phrase(self, p: Playing, knobs: Knobs, parts: LoopParts, player: Any) -> Playing:
        """``p`` starts: record it; the outputs get it; the (virtual) listener hears it;
        ``player`` plays it. Nothing of it is kept afterwards: ``score.abc`` and the
        outputs have it on disk."""
        index = parts.score.n_phrases
        parts.score.add(p)
        parts.recorder.write_phrase(p.phrase, None, duration_sec=p.features.duration_sec,
                                    features=p.features)
        parts.recorder.write_event("phrase_start", None, t_session=p.start_sec,
                                   index=index, knobs=knobs.as_tuple(), reason=p.reason,
                                   sound=self.config.sound, programs=phrase_programs(p.pm))
        self._output_failures(self.outputs.phrase(index, p, knobs))
        if self.hub is not None:
            from st_agent.live.dashboard_feed import publish_phrase

            publish_phrase(self.hub, index, p.start_sec, p.end_sec, knobs, p.reason,
                           p.phrase.abc)
        source = parts.source
        hear = getattr(getattr(source, "inner", source), "hear", None)
        if hear is not None:  # a virtual listener hears what plays
            hear(p.features, **self._hearing.audio_of(source, p.pm))  # its audio
        if player is not None:
            play_phrase(player, p.pm)
        self._music_end_wall = time.monotonic() + max(0.0, p.end_sec - p.start_sec)
        return p

    # ------------------------------------------------------------------ outputs
    def _finish(self, score: ScoreFile, wall_sec: float) -> SessionResult:
        """Finish the score; write ``summary.json`` and (``config.report``) the report;
        the WAV, the MIDI file and the score were streamed while the session went."""
        return write_session_files(self.folder, score, self._summary(score, wall_sec),
                                   self.config.key_file, report=self.config.report)

    def _summary(self, score: ScoreFile, wall_sec: float) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        leads = np.asarray([x for x in self.leads_sec if math.isfinite(x)])
        return {
            "board": self.config.board, "policy": self.controller_name,
            "target": self.target.name, "target_point": self.target.at(0.0),
            "phrases": score.n_phrases, "music_sec": score.music_sec,
            "score_error": score.error,
            "calibration_end_sec": self._calibrated_at,
            "stopped": self._stop.is_set(), "stop_reason": self._stop_reason or "time up",
            "wall_sec": wall_sec, "accelerated": self.config.accelerated,
            "decision_latency_ms": {"n": int(lat.size),
                                    "p50": float(np.percentile(lat, 50)) if lat.size else None,
                                    "p95": float(np.percentile(lat, 95)) if lat.size else None},
            "lead_time_sec": {"n": int(leads.size),
                              "min": float(leads.min()) if leads.size else None,
                              "p5": float(np.percentile(leads, 5)) if leads.size else None},
            "signal_lost_detect_sec": self.gap_detect_sec,
            "composer_repeats": len(self._maker_errors),
            "estimator": self._estimator_report,
            "controller_fallbacks": [asdict(f) for f in self.guard.fallbacks],
            "output_failures": [asdict(f) for f in self.outputs.failures],
            "wav_streamed": WAV_OUTPUT not in {f.name for f in self.outputs.failures},
        }
