"""The loop of a live jam: N performers, one controller, one piece.

Each turn of :meth:`JamLoop.run` reads every performer's stream (recording it
first, then estimating), watches each stream for a loss, calibrates (then the
first phrase), decides for every performer a lead before the current phrase
ends (one call of the controller on the N observations), and hands over to
the next phrase, composed by :class:`st_agent.music.ensemble.Ensemble` in a
worker thread, when the current one ends.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_agent.contract import (
    SafetyBounds,
    Target,
    action_to_knobs,
    build_jam_observations,
    build_observations,
)
from st_agent.live.common import Playing, explain_change, read_first_chunk
from st_agent.live.inputs import estimator_config, open_source
from st_agent.live.outputs import OutputSet
from st_agent.live.session_types import UsableEstimate
from st_agent.types import Knobs, MusicFeatures

if TYPE_CHECKING:
    from st_agent.live.jam import JamConfig
    from st_agent.live.session import SessionConfig

__all__ = ["JamController", "JamLoop", "Performer", "PlayedTune", "blend_features",
           "compose_jam_phrase", "jam_outputs"]

logger = logging.getLogger(__name__)

#: Controller of a jam: observations (N, n_obs) -> actions (N, 3).
JamController = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PlayedTune:
    """What the jam keeps of a phrase once the outputs have it: when it played and its
    tune (for ``score.abc``), not its MIDI or audio.

    Parameters
    ----------
    start_sec, end_sec : float
        Session clock, seconds.
    abc : str
        The multi-voice tune.
    """

    start_sec: float
    end_sec: float
    abc: str


def blend_features(own: MusicFeatures, mix: MusicFeatures, own_weight: float) -> MusicFeatures:
    """What one performer hears: their voice weighted ``own_weight``, the mix the rest.

    Tempo, key and mode are the mix's (they are shared); density, register,
    range and loudness are weighted means.
    """
    w = float(own_weight)

    def mean(name: str) -> float:
        return w * getattr(own, name) + (1 - w) * getattr(mix, name)

    return replace(mix, notes_per_sec=mean("notes_per_sec"), notes_per_beat=mean("notes_per_beat"),
                   mean_pitch=mean("mean_pitch"), pitch_range=mean("pitch_range"),
                   mean_velocity=mean("mean_velocity"))


def compose_jam_phrase(ensemble: Any, knobs: np.ndarray, context: Any, seed: int,
                       bounds: SafetyBounds) -> tuple[Any, Any, Any]:
    """Compose, render and measure the next jam phrase.

    Parameters
    ----------
    ensemble : Ensemble
    knobs : ndarray, shape (N, 3)
        Each performer's proposal.
    context : EnsemblePhrase or None
        The phrase playing now (None for the first).
    seed : int
    bounds : SafetyBounds
        Every performer's bounds.

    Returns
    -------
    phrase, pm, measures
        The multi-voice phrase, its PrettyMIDI and its measures (``mix``,
        ``voices``, ``clashes_per_bar``). If the composer fails (no valid phrase
        for a voice in all its tries), the previous phrase plays again.
    """
    from st_agent.music.abc import AbcError
    from st_agent.music.composer import ComposerError

    proposals = [Knobs(*(float(x) for x in k)) for k in knobs]
    try:
        phrase = ensemble.compose(proposals, context=context, seed=seed,
                                  bounds=[bounds] * len(proposals))
        pm = ensemble.render(phrase)
    except (ComposerError, AbcError) as e:
        if context is None:
            raise
        logger.warning("composer failed (%s); the last jam phrase plays again", e)
        phrase = context
        pm = ensemble.render(phrase)
    return phrase, pm, ensemble.measure(pm, phrase.n_voices, phrase.bars, phrase.meter)


def jam_outputs(cfg: JamConfig, n_performers: int) -> OutputSet:
    """The jam's outputs: ``session.wav`` (stereo) and with ``--stems`` the stems, both
    streamed (:class:`~st_agent.live.stems.PartStreams`); ``session.mid`` (one channel
    per performer, then bass and chords); with ``--midi-out NAME``, the music live to
    that MIDI port; with ``--osc``, phrases, beats and markers as OSC; with
    ``--lsl-out``, LSL outlets.

    Raises
    ------
    st_agent.errors.DeviceError
        When the MIDI port does not exist and cannot be created (lists the ports).
    """
    from st_agent.live.midi_out import MidiOut
    from st_agent.live.session_midi import SessionMidiFile
    from st_agent.live.stems import PartStreams, jam_wav_gain

    outs: list[Any] = [PartStreams(cfg.fade_sec, n_performers=n_performers, mix=True,
                                   stems=getattr(cfg, "stems", False),
                                   gain=jam_wav_gain(n_performers)),
                       SessionMidiFile()]
    name = getattr(cfg, "midi_out", "")
    if name:
        outs.insert(0, MidiOut.to_port(name, virtual=getattr(cfg, "midi_virtual", True),
                                       realtime=not cfg.accelerated))
    if getattr(cfg, "osc", ""):  # phrases, beats and markers (docs/osc.md)
        from st_agent.live.osc_out import OscOutput

        outs.append(OscOutput(cfg.osc, cfg.osc_prefix, accelerated=cfg.accelerated))
    if getattr(cfg, "lsl_out", False) or getattr(cfg, "lsl_out_name", ""):
        from st_agent.live.lsl_out import DEFAULT_LSL_PREFIX, LslOutput, check_lsl_names

        prefix = cfg.lsl_out_name or DEFAULT_LSL_PREFIX
        check_lsl_names(prefix)  # a name clash is refused before the jam starts
        outs.append(LslOutput(prefix, accelerated=cfg.accelerated, check_names=False))
    return OutputSet(outs)


class Performer:
    """One performer's source, estimator, recording and state.

    Parameters
    ----------
    index : int
    cfg : SessionConfig
        The performer's settings as a one-listener session
        (:meth:`st_agent.live.jam.JamConfig.performer_config`).
    folder : Path
        Their session folder (``performer_<index>/``).
    history_len : int
        Past phrases kept for the observations.
    """

    def __init__(self, index: int, cfg: SessionConfig, folder: Path, history_len: int) -> None:
        from st_agent.biometrics.estimator import StateEstimator

        self.index = index
        self.cfg = cfg
        self.folder = folder
        self.board = cfg.board
        self.source = open_source(cfg)
        self.estimator = StateEstimator(estimator_config(cfg))
        self.recorder: Any = None
        self.latest: Any = None
        # the last usable estimate, held through a blink's few unusable windows
        self.usable = UsableEstimate(cfg.signal_hold_sec, cfg.min_confidence)
        self.signal = "ok"
        self.last_wall = time.monotonic()
        self.last_chunk = (0.0, time.monotonic())
        self.hist_est: deque = deque(maxlen=history_len)
        self.hist_knobs: deque = deque(maxlen=history_len)
        self.t_stream = 0.0
        self.pending_chunk: Any = None  # the first chunk, read before the recorder opened

    def source_now(self) -> float:
        """Now on this source's clock: the last chunk's end plus the wall time since."""
        t_end, wall = self.last_chunk
        return t_end + (time.monotonic() - wall)

    def open_recording(self, key: bytes | None, **start: Any) -> None:
        """Read the first chunk, open the recorder, mark the start with ``start``."""
        from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
        from st_agent.subjects import subject_fields

        first = read_first_chunk(self.source, f"performer {self.index}'s board {self.board!r}")
        meta = SessionMeta.from_chunk(first, ConsentRecord(self.cfg.consent_version,
                                                           scopes=self.cfg.consent_scopes()),
                                      **subject_fields(self.cfg, self.folder))
        self.recorder = SessionRecorder(self.folder, meta, key=key)
        self.recorder.write_marker("session_start", first.t0_sec, board=self.board,
                                   performer=self.index, **start)
        self.pending_chunk = first

    def acquire(self, cfg: JamConfig, calibrated: bool) -> float | None:
        """Record and estimate what arrived; watch the stream.

        Returns
        -------
        arrived : float or None
            Monotonic time at which a chunk was read; None when none came.
        """
        chunk = self.pending_chunk if self.pending_chunk is not None else self.source.read(
            timeout_sec=0.0 if cfg.accelerated else 0.02)
        arrived = time.monotonic() if chunk is not None else None
        self.pending_chunk = None
        if chunk is not None:
            self._take(chunk)
        for ev in self.source.pop_events():
            self.recorder.write_source_event(ev)
        # silent: nothing arrived now, nor for signal_timeout_sec (the time this turn spent
        # estimating what did arrive is not silence)
        if (chunk is None and not cfg.accelerated and self.signal != "lost"
                and time.monotonic() - self.last_wall > cfg.signal_timeout_sec):
            self.signal = "lost"
            self.recorder.write_event("signal_lost", self.source_now(), detail=(
                "no samples; this voice holds its knobs, the others go on"))
            logger.warning("performer %d: signal lost; their voice holds its knobs",
                           self.index)
        if self.signal != "lost":
            self.signal = "ok" if self.usable.ok or not calibrated else "unusable"
        return arrived

    def _take(self, chunk: Any) -> None:
        self.recorder.write_chunk(chunk)
        self.t_stream = (chunk.first_sample + chunk.n_times) / chunk.sfreq
        if self.signal == "lost":
            self.recorder.write_event("signal_restored", self.source_now(),
                                      detail="samples again")
            logger.warning("performer %d: signal restored", self.index)
            self.signal = "ok"
        self.last_wall = time.monotonic()
        self.last_chunk = (chunk.t0_sec + chunk.n_times / chunk.sfreq, self.last_wall)
        for est in self.estimator.push(chunk):
            self.recorder.write_state(est.state)
            if not est.quality.get("calibrating"):
                self.latest = est.state
                self.usable.update(est.state, est.bad)

    def close(self) -> None:
        """Stop the source; close the recording (``session_end``) and the estimator."""
        self.source.stop()
        if self.recorder is not None:
            for ev in self.source.pop_events():
                self.recorder.write_source_event(ev)
            self.recorder.write_marker("session_end", None, reason="time up")
            self.recorder.close()
        self.estimator.close()


class JamLoop:
    """The jam's clock, knobs and music, turned by :meth:`run`.

    Parameters
    ----------
    cfg : JamConfig
    controller : callable
        ``obs (N, n_obs) -> actions (N, 3)``.
    targets : list of Target
        One per performer.
    perf : list of Performer
        Their recordings are opened by :meth:`open`.
    player : LivePlayer or None
    history_len : int
        Past phrases in each observation.
    outputs : OutputSet, optional
        Where the music goes besides the player (default :func:`jam_outputs`); opened
        on the jam folder (the performers' folders' parent) by :meth:`open`.
    """

    def __init__(self, cfg: JamConfig, controller: JamController, targets: list[Target],
                 perf: list[Performer], player: Any, history_len: int,
                 outputs: OutputSet | None = None) -> None:
        from st_agent.live.composing import fix_mmap_threshold, share_malloc_arenas
        from st_agent.music.ensemble import Ensemble

        share_malloc_arenas(1)  # as a session: before the composer thread starts
        fix_mmap_threshold()
        n = len(perf)
        self.cfg, self.controller, self.targets, self.perf = cfg, controller, targets, perf
        self.player, self.history_len = player, history_len
        self.bounds = SafetyBounds(max_delta=cfg.max_delta)
        self.ensemble = Ensemble()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jam-composer")
        self.played: list[PlayedTune] = []  # not the MIDI: a long jam's memory stays small
        self.clashes: list[float] = []
        self.latencies: list[float] = []
        self.wall0 = time.monotonic()
        self.knobs = np.full((n, 3), 0.5)
        self.calibrated_at: float | None = None
        self.current: Playing | None = None
        self.pending: concurrent.futures.Future | None = None
        self.context: Any = None
        self.tempo, self.major, self.cpb = 0.5, True, 0.0
        self.music_end = math.inf
        self.next_status = 0.0
        self.reasons: list[list[str]] = [[] for _ in range(n)]
        self.t_read = time.monotonic()
        self.outputs = jam_outputs(cfg, n) if outputs is None else outputs
        self.stop_reason = "time up"
        self.notices: deque = deque()  # (t_sec, text) from an output's thread
        self.hub: Any = None  # the dashboard's hub (st_agent.live.dashboard_jam)
        self.dash_stop = False  # "fade out and stop" from the dashboard
        for out in self.outputs.outputs:
            if hasattr(out, "on_notice") and out.on_notice is None:
                out.on_notice = lambda t, text: self.notices.append((t, text))

    def open(self, key: bytes | None, controller_name: str, jam_name: str) -> None:
        """Start every source, then open every recording on its first chunk."""
        for p in self.perf:
            p.source.start()
        for p in self.perf:
            p.open_recording(key, policy=controller_name, target=self.targets[p.index].name,
                             performers=len(self.perf), jam=jam_name)
        self.outputs.open(self.perf[0].folder.parent)

    def run(self, on_status: Callable[[str], None] | None = None) -> None:
        """Turn until the music time is up (a crash is the outputs' stop reason)."""
        try:
            self._run(on_status)
        except BaseException as e:
            self.stop_reason = f"crash: {type(e).__name__}: {e}"
            raise

    def _run(self, on_status: Callable[[str], None] | None) -> None:
        cfg = self.cfg
        while True:
            self.t_read = time.monotonic()
            for p in self.perf:
                arrived = p.acquire(cfg, self.calibrated_at is not None)
                if arrived is not None:
                    self.t_read = arrived  # decisions are timed from the last arrival
            now = self.perf[0].t_stream if cfg.accelerated else time.monotonic() - self.wall0
            if self.hub is not None:  # controls (stop, marker), per-performer state
                from st_agent.live.dashboard_jam import jam_dashboard_step

                jam_dashboard_step(self, now)
                if self.dash_stop:
                    break
            if self.calibrated_at is None:
                self._calibrate(now)
            elif self.current is not None:
                self._decide_if_due(now)
                if now >= self.current.end_sec:
                    if self.current.end_sec >= self.music_end:
                        break
                    self._next_phrase()
            while self.notices:
                self._notice(*self.notices.popleft())
            if on_status is not None and now >= self.next_status:
                self.next_status = now + cfg.status_sec
                on_status(self.status_line(now))

    def close(self) -> None:
        """Stop composing, every source and recording, the player and the outputs (all
        notes off on a MIDI port, ``session.mid`` written)."""
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
            for p in self.perf:
                p.close()
            if self.player is not None:
                if self.dash_stop:  # stopped from the dashboard
                    self.player.fade_out(self.cfg.fade_sec)
                else:
                    self.player.wait(timeout_sec=30.0)
                self.player.close()
        finally:
            for fail in self.outputs.close(self.stop_reason):
                logger.warning("jam output %s failed at close: %s", fail.name, fail.error)

    # ------------------------------------------------------------------ steps
    def _calibrate(self, now: float) -> None:
        """Every performer calibrated (or the deadline passed): the first phrase."""
        cfg = self.cfg
        if not (all(p.estimator.is_calibrated for p in self.perf)
                or now > 2 * cfg.calibration_sec + 10.0):
            return
        self.calibrated_at = now
        for p in self.perf:
            p.recorder.write_marker("calibration_done", None, t_session=now)
        self._output_failures(self.outputs.marker(now, "calibration done"))
        phrase, pm, m = compose_jam_phrase(self.ensemble, self.knobs, None, cfg.seed,
                                           self.bounds)
        self.context = phrase
        self._start_phrase(now, phrase, pm, m, [["first phrase"]] * len(self.perf))
        self.music_end = now + 60.0 * cfg.minutes

    def _observations(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Jam observations (N, n_obs), estimates (N, 2) and targets (N, 2) now."""
        perf, n = self.perf, len(self.perf)
        assert self.calibrated_at is not None
        t_targets = np.array([t.at(now - self.calibrated_at) for t in self.targets])
        states = [p.usable.state if p.signal == "ok" else None for p in perf]
        est = np.array([(s.valence, s.arousal) if s is not None else (math.nan, math.nan)
                        for s in states])
        conf = np.array([s.confidence if s is not None else 0.0 for s in states])
        m_hist = max(self.history_len, 1)
        he = np.full((n, m_hist, 2), np.nan)
        hk = np.zeros((n, m_hist, 3))
        count = np.zeros(n, dtype=int)
        for i, p in enumerate(perf):
            count[i] = len(p.hist_est)
            for j, (e, k) in enumerate(zip(p.hist_est, p.hist_knobs, strict=True)):
                he[i, j], hk[i, j] = e, k
        base = build_observations(est, t_targets, self.knobs, conf, he, hk, count,
                                  self.history_len)
        lost = np.array([p.signal != "ok" for p in perf])
        obs = build_jam_observations(base, self.knobs, self.tempo, self.major, self.cpb, lost)
        return obs, est, t_targets

    def _decide_if_due(self, now: float) -> None:
        """A lead before the current phrase ends: new knobs for every performer whose
        stream is usable (the others hold), recorded with their reasons."""
        cfg, cur = self.cfg, self.current
        assert cur is not None
        if self.pending is not None or now < cur.end_sec - cfg.decision_lead_sec \
                or cur.end_sec >= self.music_end:
            return
        obs, est, t_targets = self._observations(now)
        actions = np.asarray(self.controller(obs)).reshape(len(self.perf), 3)
        new = self.knobs.copy()
        for i, p in enumerate(self.perf):
            p.hist_est.appendleft(est[i])
            p.hist_knobs.appendleft(self.knobs[i].copy())
            old = Knobs(*self.knobs[i])
            if p.signal == "ok":
                k = action_to_knobs(actions[i], old, self.bounds)
                self.reasons[i] = explain_change(old, k, tuple(est[i]), tuple(t_targets[i])) \
                    or ["knobs unchanged: the policy holds"]
                new[i] = k.as_tuple()
            else:
                self.reasons[i] = [f"knobs hold: signal {p.signal}"]
            latency_ms = (time.monotonic() - self.t_read) * 1e3
            p.recorder.write_knobs(Knobs(*new[i]), None)
            p.recorder.write_event("decision", None, t_session=now, reasons=self.reasons[i],
                                   latency_ms=latency_ms, signal=p.signal, knobs=tuple(new[i]),
                                   target=tuple(t_targets[i]))
        self.latencies.append((time.monotonic() - self.t_read) * 1e3)
        self.knobs = new
        self.pending = self._submit()

    def _submit(self) -> concurrent.futures.Future:
        return self.pool.submit(compose_jam_phrase, self.ensemble, self.knobs.copy(),
                                self.context, self.cfg.seed + 7919 * len(self.played),
                                self.bounds)

    def _next_phrase(self) -> None:
        """The current phrase ended: the composed one starts."""
        cur = self.current
        assert cur is not None
        if self.pending is None:
            self.pending = self._submit()
        phrase, pm, m = self.pending.result()
        self.pending = None
        self.context = phrase
        self._start_phrase(cur.end_sec, phrase, pm, m, self.reasons)

    def _start_phrase(self, t: float, phrase: Any, pm: Any, m: Any,
                      reasons: list[list[str]]) -> None:
        """``phrase`` starts at ``t``: record it for every performer; they hear it."""
        self.tempo, self.major = phrase.negotiation.tempo, phrase.negotiation.mode == "major"
        self.cpb = m.clashes_per_bar
        self.clashes.append(m.clashes_per_bar)
        p0 = Playing(phrase.voices[0], m.mix, pm, t, abc=phrase.abc)
        self.played.append(PlayedTune(t, p0.end_sec, phrase.abc))
        for i, p in enumerate(self.perf):
            p.recorder.write_phrase(phrase.voices[i], None, duration_sec=m.mix.duration_sec,
                                    features=m.voices[i])
            p.recorder.write_event("phrase_start", None, t_session=t,
                                   index=len(self.played) - 1,
                                   knobs=tuple(float(x) for x in self.knobs[i]),
                                   reason="; ".join(reasons[i]),
                                   tempo=phrase.negotiation.tempo, mode=phrase.negotiation.mode,
                                   clashes_per_bar=m.clashes_per_bar)
            hear = getattr(getattr(p.source, "inner", p.source), "hear", None)
            if hear is not None:
                hear(blend_features(m.voices[i], m.mix, self.cfg.own_weight),
                     m.mix.duration_sec)
        if self.player is not None:
            self.player.play(pm)
        if self.hub is not None:
            from st_agent.live.dashboard_jam import publish_jam_phrase

            publish_jam_phrase(self, t, phrase, reasons)
        self._output_failures(self.outputs.phrase(len(self.played) - 1, p0,
                                                  Knobs(*np.mean(self.knobs, axis=0))))
        self.current = p0

    def _notice(self, t: float, text: str) -> None:
        """An output's notice (a MIDI port lost or back): in every recording, and a
        marker for the other outputs."""
        for p in self.perf:
            p.recorder.write_event("output_notice", None, t_session=t, detail=text)
        self._output_failures(self.outputs.marker(t, text))

    def _output_failures(self, fails: list[Any]) -> None:
        """An output that failed is dropped; every performer's recording says so."""
        for fail in fails:
            for p in self.perf:
                p.recorder.write_event("output_failed", None, output=fail.name,
                                       during=fail.during, detail=fail.error)

    def status_line(self, now: float) -> str:
        """One line: time, phase, clashes, and each performer's state, knobs and signal."""
        phase = "calibrating" if self.calibrated_at is None else "music"
        parts = [f"{now:7.1f}s {phase:<11} clashes/bar {self.cpb:.2f}"]
        for i, p in enumerate(self.perf):
            st = p.latest
            s = "--" if st is None else f"{st.valence:+.2f},{st.arousal:+.2f}"
            parts.append(f"P{i} {s} k{np.round(self.knobs[i], 2).tolist()} {p.signal}")
        return " | ".join(parts)
