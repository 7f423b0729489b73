"""A live jam: several performers, one board each, one piece that moves each of them.

The loop of :mod:`st_agent.live.session` with N sources, N estimators and N
recordings. Once per phrase each performer's observation is built with
:func:`st_agent.contract.build_jam_observations` (what :class:`st_agent.envs.jam.JamEnv`
uses), one controller maps the N observations to N knob changes (a shared jam
policy, or one controller per performer), the knobs are clipped to each
performer's safety bounds, and :class:`st_agent.music.ensemble.Ensemble` negotiates the
shared tempo and mode and composes one voice per performer while the current
phrase plays.

A performer whose stream drops out (no samples for ``signal_timeout_sec``) or
is unusable keeps their voice on its last knobs; the others go on; the gap is
recorded in that performer's recording.

Outputs, under ``<record>/<name>/``: ``performer_<i>/`` (each a session folder
with its own recording and ``report.html``), ``session.wav`` (the mix),
``score.abc`` (the phrases as a tunebook of multi-voice tunes), ``summary.json``
and ``report.html`` for the group.
"""

from __future__ import annotations

import concurrent.futures
import html
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.contract import (
    HISTORY_LEN,
    SafetyBounds,
    action_to_knobs,
    build_jam_observations,
    build_observations,
    resolve_target,
)
from st_agent.live.session import (
    VIRTUAL_BOARD,
    SessionConfig,
    _check_writable,
    _jsonable,
    _Playing,
    estimator_config,
    explain_change,
    write_session_wav,
)
from st_agent.types import Knobs, MusicFeatures

__all__ = ["JamConfig", "JamResult", "blend_features", "run_jam"]

logger = logging.getLogger(__name__)

#: Controller of a jam: observations (N, n_obs) -> actions (N, 3).
JamController = Callable[[np.ndarray], np.ndarray]


@dataclass
class JamConfig:
    """A live jam (``st-agent jam``); every field is a flag."""

    boards: str = "synthetic,synthetic,synthetic"
    """One board per performer, comma-separated (2 to 8): BrainFlow names or ids, or
    ``virtual`` (a simulated listener)."""
    targets: str = "calm"
    """Target preset of every performer, or one per performer, comma-separated."""
    minutes: float = 10.0
    """Minutes of music after calibration."""
    policy: str = "jam3"
    """Controller: a bundled jam policy (jam3), a jam policy folder, ``independent``
    (the bundled single-listener policy per performer), ``pid`` or ``random``."""
    play: bool = False
    """Play live through FluidSynth's audio driver (a WAV is always written)."""
    record: Path = Path("runs/jams")
    """Folder under which the jam folder is created."""
    name: str = ""
    """Jam folder name; empty: ``jam-<UTC time>``."""
    calibration_sec: float = 60.0
    """Rest baseline of every performer before the music, seconds."""
    max_delta: float = 0.25
    """Largest change of any knob per phrase."""
    accelerated: bool = False
    """Simulated clock, as fast as the CPU allows (virtual boards only)."""
    seed: int = 0
    """Seed of virtual listeners, the composer and random controllers."""
    key_file: Path | None = None
    """Encrypt every performer's recording at rest with this key file (created when
    missing)."""
    inject_dropout: tuple[int, float, float] | None = None
    """Fault injection: (performer, start_sec, duration_sec): that performer's board
    stops delivering."""
    own_weight: float = 0.6
    """How much of what a (virtual) performer hears is their own voice (the rest: the
    mix), as in the environment."""
    decision_lead_sec: float = 2.0
    """Decide and compose the next phrase this long before the current ends."""
    signal_timeout_sec: float = 1.0
    """No samples for this long counts as a lost stream (that voice holds)."""
    min_confidence: float = 0.2
    """Estimates below this confidence are unusable (that voice holds)."""
    fade_sec: float = 4.0
    """Fade-out at the end of the WAV, seconds."""
    report: bool = True
    """Write the reports."""
    status_sec: float = 5.0
    """Seconds between status lines (session clock)."""

    def board_list(self) -> list[str]:
        """The boards, validated: 2 to 8 of them."""
        from st_agent.music.ensemble import check_performers

        boards = [b.strip() for b in self.boards.split(",") if b.strip()]
        try:
            check_performers(len(boards))
        except ValueError as e:
            raise ValueError(f"--boards names {len(boards)} board(s) ({self.boards!r}): {e}; "
                             "give one board per performer, e.g. synthetic,synthetic") from e
        return boards

    def target_list(self, n: int) -> list[str]:
        """One target preset per performer."""
        targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        if len(targets) == 1:
            targets = targets * n
        if len(targets) != n:
            raise ValueError(f"--targets names {len(targets)} targets but --boards names {n} "
                             "performers; give one target for all or one per performer")
        for t in targets:
            resolve_target(t)
        return targets

    def performer_config(self, i: int, board: str) -> SessionConfig:
        """Settings of performer ``i`` as a one-listener session (board, calibration,
        fault injection...)."""
        inject = None
        if self.inject_dropout is not None and int(self.inject_dropout[0]) == i:
            inject = (float(self.inject_dropout[1]), float(self.inject_dropout[2]))
        return SessionConfig(board=board, target=self.target_list(len(self.board_list()))[i],
                             minutes=self.minutes, calibration_sec=self.calibration_sec,
                             max_delta=self.max_delta, accelerated=self.accelerated,
                             seed=self.seed + 1000 * i, record=self.record,
                             other_info=f"st-agent-performer-{i}", inject_dropout=inject)


@dataclass
class JamResult:
    """Where a jam's outputs are and its headline figures."""

    folder: Path
    performer_folders: list[Path]
    wav_path: Path | None
    report_path: Path | None
    summary: dict[str, Any]


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


class _Performer:
    """One performer's source, estimator, recording and state."""

    def __init__(self, index: int, cfg: SessionConfig, folder: Path, history_len: int) -> None:
        from st_agent.biometrics.estimator import StateEstimator
        from st_agent.live.session import open_source

        self.index = index
        self.cfg = cfg
        self.folder = folder
        self.board = cfg.board
        self.source = open_source(cfg)
        self.estimator = StateEstimator(estimator_config(cfg))
        self.recorder: Any = None
        self.latest: Any = None
        self.usable = False
        self.signal = "ok"
        self.last_wall = time.monotonic()
        self.last_chunk = (0.0, time.monotonic())
        self.hist_est: deque = deque(maxlen=history_len)
        self.hist_knobs: deque = deque(maxlen=history_len)
        self.t_stream = 0.0
        self.pending_chunk: Any = None  # the first chunk, read before the recorder opened

    def source_now(self) -> float:
        t_end, wall = self.last_chunk
        return t_end + (time.monotonic() - wall)


def run_jam(cfg: JamConfig, controller: JamController, controller_name: str = "",
            on_status: Callable[[str], None] | None = None,
            history_len: int = HISTORY_LEN) -> JamResult:
    """Run a live jam to its end; write recordings, WAV, score and reports.

    Parameters
    ----------
    cfg : JamConfig
    controller : callable
        ``obs (N, n_obs) -> actions (N, 3)``
        (``st_agent.policies.controllers.make_jam_controller``).
    controller_name : str
        How the reports name it.
    on_status : callable, optional
        Receives a status text every ``cfg.status_sec``.
    history_len : int
        Past phrases in each observation, as the controller was trained with.
    """
    from st_agent.biometrics.recording import ConsentRecord, SessionMeta, SessionRecorder
    from st_agent.music.ensemble import Ensemble

    boards = cfg.board_list()
    n = len(boards)
    targets = [resolve_target(t) for t in cfg.target_list(n)]
    if cfg.inject_dropout is not None and not 0 <= int(cfg.inject_dropout[0]) < n:
        raise ValueError(f"--inject-dropout performer must be in [0, {n - 1}], got "
                         f"{cfg.inject_dropout[0]!r}")
    if cfg.accelerated and any(b != VIRTUAL_BOARD for b in boards):
        raise ValueError("--accelerated needs every board to be 'virtual'")
    if not (isinstance(cfg.minutes, int | float) and math.isfinite(cfg.minutes)
            and cfg.minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {cfg.minutes!r}")
    bounds = SafetyBounds(max_delta=cfg.max_delta)
    folder = Path(cfg.record) / (cfg.name or "jam-" + datetime.now(timezone.utc).strftime(
        "%Y%m%dT%H%M%S"))
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"jam folder {folder} exists and is not empty; choose another --name")
    _check_writable(Path(cfg.record))
    folder.mkdir(parents=True, exist_ok=True)
    perf = []
    for i, board in enumerate(boards):
        perf.append(_Performer(i, cfg.performer_config(i, board), folder / f"performer_{i}",
                               history_len))
    ensemble = Ensemble()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jam-composer")
    player = None
    if cfg.play:
        from st_agent.music.render import AudioDeviceError, LivePlayer

        try:
            player = LivePlayer()
        except AudioDeviceError as e:
            logger.warning("--play: %s Falling back to the WAV only.", e)
    played: list[_Playing] = []
    clashes: list[float] = []
    wall0 = time.monotonic()
    latencies: list[float] = []
    key = None
    if cfg.key_file is not None:
        from st_agent.biometrics.recording import create_key_file, load_key_file

        key = (load_key_file(cfg.key_file) if Path(cfg.key_file).exists()
               else create_key_file(cfg.key_file))
    try:
        for p in perf:
            p.source.start()
        for p in perf:
            first = None
            deadline = time.monotonic() + 10.0
            while first is None and time.monotonic() < deadline:
                first = p.source.read(timeout_sec=0.5)
            if first is None:
                raise RuntimeError(f"performer {p.index}'s board {p.board!r} delivered no "
                                   "samples in 10 s")
            meta = SessionMeta.from_chunk(first, ConsentRecord("st-agent-local-v1"))
            p.recorder = SessionRecorder(p.folder, meta, key=key)
            p.recorder.write_marker("session_start", first.t0_sec, board=p.board,
                                    policy=controller_name, target=targets[p.index].name,
                                    performer=p.index, performers=n, jam=folder.name)
            p.pending_chunk = first
        knobs = np.full((n, 3), 0.5)
        calibrated_at = None
        current: _Playing | None = None
        pending = None
        context = None
        tempo, major, cpb = 0.5, True, 0.0
        music_end = math.inf
        next_status = 0.0
        reasons: list[list[str]] = [[] for _ in range(n)]
        while True:
            t_read = time.monotonic()
            for p in perf:
                chunk = p.pending_chunk if p.pending_chunk is not None else p.source.read(
                    timeout_sec=0.0 if cfg.accelerated else 0.02)
                p.pending_chunk = None
                if chunk is not None:
                    t_read = time.monotonic()  # decisions are timed from the last arrival
                    p.recorder.write_chunk(chunk)
                    p.t_stream = (chunk.first_sample + chunk.n_times) / chunk.sfreq
                    if p.signal == "lost":
                        p.recorder.write_event("signal_restored", p.source_now(),
                                               detail="samples again")
                        logger.warning("performer %d: signal restored", p.index)
                        p.signal = "ok"
                    p.last_wall = time.monotonic()
                    p.last_chunk = (chunk.t0_sec + chunk.n_times / chunk.sfreq, p.last_wall)
                    for est in p.estimator.push(chunk):
                        p.recorder.write_state(est.state)
                        if not est.quality.get("calibrating"):
                            p.latest = est.state
                            p.usable = not est.bad and est.state.confidence >= cfg.min_confidence
                for ev in p.source.pop_events():
                    p.recorder.write_source_event(ev)
                if (not cfg.accelerated and p.signal != "lost"
                        and time.monotonic() - p.last_wall > cfg.signal_timeout_sec):
                    p.signal = "lost"
                    p.recorder.write_event("signal_lost", p.source_now(), detail=(
                        "no samples; this voice holds its knobs, the others go on"))
                    logger.warning("performer %d: signal lost; their voice holds its knobs",
                                   p.index)
                if p.signal != "lost":
                    p.signal = "ok" if p.usable or calibrated_at is None else "unusable"
            now = perf[0].t_stream if cfg.accelerated else time.monotonic() - wall0
            if calibrated_at is None:
                done = all(p.estimator.is_calibrated for p in perf)
                if done or now > 2 * cfg.calibration_sec + 10.0:
                    calibrated_at = now
                    for p in perf:
                        p.recorder.write_marker("calibration_done", None, t_session=now)
                    context, pm, m = _compose(ensemble, knobs, None, cfg.seed, bounds)
                    current = _start(now, context, pm, m, knobs, perf, played, player,
                                     cfg.own_weight, [["first phrase"]] * n)
                    clashes.append(m.clashes_per_bar)
                    tempo, major = context.negotiation.tempo, context.negotiation.mode == "major"
                    cpb = m.clashes_per_bar
                    music_end = now + 60.0 * cfg.minutes
            elif current is not None:
                if pending is None and now >= current.end_sec - cfg.decision_lead_sec \
                        and current.end_sec < music_end:
                    t_targets = np.array([t.at(now - calibrated_at) for t in targets])
                    est = np.array([(p.latest.valence, p.latest.arousal) if p.latest is not None
                                    and p.signal == "ok" else (math.nan, math.nan)
                                    for p in perf])
                    conf = np.array([p.latest.confidence if p.latest is not None
                                     and p.signal == "ok" else 0.0 for p in perf])
                    m_hist = max(history_len, 1)
                    he = np.full((n, m_hist, 2), np.nan)
                    hk = np.zeros((n, m_hist, 3))
                    count = np.zeros(n, dtype=int)
                    for i, p in enumerate(perf):
                        count[i] = len(p.hist_est)
                        for j, (e, k) in enumerate(zip(p.hist_est, p.hist_knobs, strict=True)):
                            he[i, j], hk[i, j] = e, k
                    base = build_observations(est, t_targets, knobs, conf, he, hk, count,
                                              history_len)
                    lost = np.array([p.signal != "ok" for p in perf])
                    obs = build_jam_observations(base, knobs, tempo, major, cpb, lost)
                    actions = np.asarray(controller(obs)).reshape(n, 3)
                    new = knobs.copy()
                    for i, p in enumerate(perf):
                        p.hist_est.appendleft(est[i])
                        p.hist_knobs.appendleft(knobs[i].copy())
                        old = Knobs(*knobs[i])
                        if p.signal == "ok":
                            k = action_to_knobs(actions[i], old, bounds)
                            reasons[i] = explain_change(old, k, tuple(est[i]),
                                                        tuple(t_targets[i])) or [
                                "knobs unchanged: the policy holds"]
                            new[i] = k.as_tuple()
                        else:
                            reasons[i] = [f"knobs hold: signal {p.signal}"]
                        latency_ms = (time.monotonic() - t_read) * 1e3
                        p.recorder.write_knobs(Knobs(*new[i]), None)
                        p.recorder.write_event("decision", None, t_session=now,
                                               reasons=reasons[i], latency_ms=latency_ms,
                                               signal=p.signal, knobs=tuple(new[i]),
                                               target=tuple(t_targets[i]))
                    latencies.append((time.monotonic() - t_read) * 1e3)
                    knobs = new
                    pending = pool.submit(_compose, ensemble, knobs.copy(), context,
                                          cfg.seed + 7919 * len(played), bounds)
                if now >= current.end_sec:
                    if current.end_sec >= music_end:
                        break
                    if pending is None:
                        pending = pool.submit(_compose, ensemble, knobs.copy(), context,
                                              cfg.seed + 7919 * len(played), bounds)
                    context, pm, m = pending.result()
                    pending = None
                    tempo, major = context.negotiation.tempo, context.negotiation.mode == "major"
                    cpb = m.clashes_per_bar
                    clashes.append(cpb)
                    current = _start(current.end_sec, context, pm, m, knobs, perf, played,
                                     player, cfg.own_weight, reasons)
            if on_status is not None and now >= next_status:
                next_status = now + cfg.status_sec
                on_status(_status_line(now, perf, knobs, targets, cpb, calibrated_at))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for p in perf:
            p.source.stop()
            if p.recorder is not None:
                for ev in p.source.pop_events():
                    p.recorder.write_source_event(ev)
                p.recorder.write_marker("session_end", None, reason="time up")
                p.recorder.close()
            p.estimator.close()
        if player is not None:
            player.wait(timeout_sec=30.0)
            player.close()
    return _finish(cfg, folder, perf, played, clashes, latencies, targets, controller_name,
                   time.monotonic() - wall0)


def _compose(ensemble: Any, knobs: np.ndarray, context: Any, seed: int,
             bounds: SafetyBounds) -> tuple[Any, Any, Any]:
    """Compose, render and measure the next jam phrase; if the composer fails (no
    valid phrase for a voice in all its tries), the previous phrase plays again."""
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


def _start(t: float, phrase: Any, pm: Any, m: Any, knobs: np.ndarray, perf: list[_Performer],
           played: list[_Playing], player: Any, own_weight: float,
           reasons: list[list[str]]) -> _Playing:
    """Phrase ``phrase`` starts at ``t``: record it for every performer; they hear it."""
    p0 = _Playing(phrase.voices[0], m.mix, pm, t, abc=phrase.abc)
    played.append(p0)
    for i, p in enumerate(perf):
        p.recorder.write_phrase(phrase.voices[i], None, duration_sec=m.mix.duration_sec,
                                features=m.voices[i])
        p.recorder.write_event("phrase_start", None, t_session=t, index=len(played) - 1,
                               knobs=tuple(float(x) for x in knobs[i]),
                               reason="; ".join(reasons[i]),
                               tempo=phrase.negotiation.tempo, mode=phrase.negotiation.mode,
                               clashes_per_bar=m.clashes_per_bar)
        hear = getattr(getattr(p.source, "inner", p.source), "hear", None)
        if hear is not None:
            hear(blend_features(m.voices[i], m.mix, own_weight), m.mix.duration_sec)
    if player is not None:
        player.play(pm)
    return p0


def _status_line(now: float, perf: list[_Performer], knobs: np.ndarray, targets: list[Any],
                 cpb: float, calibrated_at: float | None) -> str:
    parts = [f"{now:7.1f}s {'calibrating' if calibrated_at is None else 'music':<11} "
             f"clashes/bar {cpb:.2f}"]
    for i, p in enumerate(perf):
        st = p.latest
        s = "--" if st is None else f"{st.valence:+.2f},{st.arousal:+.2f}"
        parts.append(f"P{i} {s} k{np.round(knobs[i], 2).tolist()} {p.signal}")
    return " | ".join(parts)


def _finish(cfg: JamConfig, folder: Path, perf: list[_Performer], played: list[_Playing],
            clashes: list[float], latencies: list[float], targets: list[Any], name: str,
            wall_sec: float) -> JamResult:
    from st_agent.biometrics.recording import read_session
    from st_agent.live.report import session_metrics, write_report

    wav = None
    if played:
        wav = write_session_wav(folder / "session.wav", played,
                                played[-1].end_sec - played[0].start_sec, cfg.fade_sec)
    (folder / "score.abc").write_text("\n".join(
        _retitle(p.abc, i) for i, p in enumerate(played)), encoding="utf-8")
    per = []
    for i, p in enumerate(perf):
        m = session_metrics(read_session(p.folder, key=cfg.key_file).events)
        summary = {"board": p.board, "policy": name, "target": targets[i].name,
                   "target_point": targets[i].at(0.0), "phrases": len(played),
                   "music_sec": (played[-1].end_sec - played[0].start_sec) if played else 0.0,
                   "performer": i, "metrics": m, "wall_sec": wall_sec,
                   "accelerated": cfg.accelerated, "stop_reason": "time up",
                   "decision_latency_ms": {}, "lead_time_sec": {}}
        (p.folder / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
        if cfg.report:
            write_report(p.folder, key_file=cfg.key_file)
        per.append(m)
    dists = [m["distance_last_half"] for m in per if m["distance_last_half"] is not None]
    lat = np.asarray(latencies)
    summary = {
        "performers": len(perf), "boards": [p.board for p in perf], "policy": name,
        "targets": [t.name for t in targets], "phrases": len(played),
        "music_sec": (played[-1].end_sec - played[0].start_sec) if played else 0.0,
        "group_distance_last_half": float(np.mean(dists)) if dists else None,
        "distance_last_half": [m["distance_last_half"] for m in per],
        "clashes_per_bar": float(np.mean(clashes)) if clashes else None,
        "signal_lost_events": [m["signal_lost_events"] for m in per],
        "decision_latency_ms": {"p50": float(np.percentile(lat, 50)) if lat.size else None,
                                "p95": float(np.percentile(lat, 95)) if lat.size else None},
        "wall_sec": wall_sec, "accelerated": cfg.accelerated, "config": asdict(cfg),
    }
    (folder / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    report = _group_report(folder, summary, perf, cfg.key_file) if cfg.report else None
    return JamResult(folder, [p.folder for p in perf], wav, report, summary)


def _retitle(abc: str, i: int) -> str:
    lines = [ln for ln in abc.strip().splitlines() if not ln.startswith(("X:", "T:"))]
    return "\n".join([f"X:{i + 1}", f"T:jam phrase {i + 1}", *lines]) + "\n"


def _group_plot(folder: Path, perf: list[_Performer], key_file: Path | None) -> str:
    """Each performer's distance to their target, and the shared music, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from st_agent.biometrics.recording import read_session
    from st_agent.live.report import _png

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    starts: list[dict[str, Any]] = []
    for i, p in enumerate(perf):
        ev = read_session(p.folder, key=key_file).events
        dec = [e for e in ev if e["kind"] == "decision"]
        t_music = next((e["onset_sec"] for e in ev if e["kind"] == "phrase_start"), 0.0)
        st = [e for e in ev if e["kind"] == "state" and e["onset_sec"] >= t_music]
        if dec and st:
            tv, ta = dec[0]["payload"]["target"]
            t = [e["onset_sec"] for e in st]
            d = [math.hypot(e["payload"]["valence"] - tv, e["payload"]["arousal"] - ta)
                 for e in st]
            ax1.plot(t, d, lw=1, label=f"performer {i}")
        for e in ev:
            if e["kind"] == "signal_lost":
                ax1.axvline(e["onset_sec"], color=f"C{i}", ls=":", lw=1)
        if i == 0:
            starts = [e for e in ev if e["kind"] == "phrase_start"]
    ax1.set(ylabel="distance to own target", title="Each performer's distance to their "
            "target (dotted: their signal lost)")
    ax1.legend(fontsize=8)
    if starts:
        t = [e["onset_sec"] for e in starts]
        ax2.step(t, [e["payload"]["clashes_per_bar"] for e in starts], where="post",
                 color="tab:red", label="clashes per bar")
        ax2b = ax2.twinx()
        ax2b.step(t, [e["payload"]["tempo"] for e in starts], where="post", color="tab:green",
                  label="negotiated tempo knob")
        ax2b.set(ylabel="tempo knob", ylim=(-0.02, 1.02))
        ax2b.legend(fontsize=8, loc="upper right")
    ax2.set(xlabel="time (s)", ylabel="clashes per bar", title="The shared music")
    ax2.legend(fontsize=8, loc="upper left")
    img = _png(fig, folder / "group.png")
    plt.close(fig)
    return img


def _group_report(folder: Path, summary: dict[str, Any], perf: list[_Performer],
                  key_file: Path | None = None) -> Path:
    img = _group_plot(folder, perf, key_file)
    rows = []
    for i, p in enumerate(perf):
        d = summary["distance_last_half"][i]
        rows.append(f"<tr><td><a href=\"performer_{i}/report.html\">performer {i}</a></td>"
                    f"<td>{html.escape(p.board)}</td>"
                    f"<td>{html.escape(summary['targets'][i])}</td>"
                    f"<td>{'–' if d is None else f'{d:.3f}'}</td>"
                    f"<td>{summary['signal_lost_events'][i]}</td></tr>")
    g = summary["group_distance_last_half"]
    c = summary["clashes_per_bar"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Jam {html.escape(folder.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>Jam {html.escape(folder.name)}</h1>
<p>{summary['performers']} performers, {summary['phrases']} phrases,
{summary['music_sec']:.0f} s of music, controller {html.escape(summary['policy'])}.</p>
<table><tr><th>group mean distance to targets, last half</th>
<td>{'–' if g is None else f'{g:.3f}'}</td></tr>
<tr><th>clashes per bar (mean)</th><td>{'–' if c is None else f'{c:.2f}'}</td></tr></table>
<h2>Performers</h2>
<table><tr><th>performer</th><th>board</th><th>target</th>
<th>distance, last half</th><th>signal lost</th></tr>
{''.join(rows)}</table>
<h2>Over time</h2>
<img alt="group" style="max-width:100%" src="data:image/png;base64,{img}">
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
