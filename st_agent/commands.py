"""What each ``st-agent`` command does once its options are parsed.

Every handler takes its parsed config, imports the modules that do the work
(so the command line itself stays light, :mod:`st_agent.cli`), runs them and
writes a short summary to stdout. Errors a user can fix are raised as the
project's typed errors (:mod:`st_agent.errors`; older modules: ``ValueError``/
``OSError``/``RuntimeError``) and printed by the CLI as one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st_agent.biometrics.calibrate_protocol import CalibrateConfig
    from st_agent.biometrics.recording import DeleteConfig, ExportConfig
    from st_agent.listener.fitting import FitListenerConfig
    from st_agent.live.jam import JamConfig
    from st_agent.live.report import ReportConfig
    from st_agent.live.session import DemoConfig, SessionConfig, SessionResult, SessionStatus
    from st_agent.live.visuals import RenderVideoConfig
    from st_agent.music.config import GenerateConfig, TrainGeneratorConfig
    from st_agent.music.piece_config import BrainVoicesConfig, SonifyConfig, TransitionConfig
    from st_agent.policies.config import (
        CombineJamConfig,
        EvaluateJamConfig,
        TrainConfig,
        TrainJamConfig,
    )
    from st_agent.policies.evaluate import EvaluateConfig


@dataclass
class BoardsConfig:
    """List the BrainFlow boards ``st-agent session --board`` accepts."""


def _out(lines: list[str]) -> None:
    sys.stdout.write("\n".join(x for x in lines if x) + "\n")


def _status_printer() -> Callable[[SessionStatus], None]:
    """A live status line on a terminal, one line per update otherwise."""
    tty = sys.stderr.isatty()

    def show(status: SessionStatus) -> None:
        if tty:
            sys.stderr.write("\r" + status.line()[:160] + "\x1b[K")
        else:
            sys.stderr.write(status.line() + "\n")
        sys.stderr.flush()

    return show


def _announce_dashboard(url: str) -> None:
    """The line with the dashboard's URL (and its token), on stdout at once."""
    sys.stdout.write(f"dashboard: {url}\n")
    sys.stdout.flush()


def _session_lines(result: SessionResult) -> list[str]:
    s = result.summary
    lat = s["decision_latency_ms"]
    m = s.get("metrics", {})
    lines = [
        f"session written to {result.folder}",
        f"  report     {result.report_path}" if result.report_path else "",
        f"  audio      {result.wav_path}" if result.wav_path else "",
        f"  score      {result.score_path}",
        *(f"  {label:<10} {result.folder / name}"
          for label, name in (("midi", "session.mid"), ("visuals", "visuals.html"))
          if (result.folder / name).is_file()),
        f"  {s['phrases']} phrases, {s['music_sec']:.0f} s of music with {s['policy']}, "
        f"target {s['target']} {tuple(round(x, 2) for x in s['target_point'])}",
    ]
    if m.get("distance_last_half") is not None:
        ttt = m.get("time_to_target_sec")
        lines.append(f"  mean distance to target over the last half {m['distance_last_half']:.3f}; "
                     + (f"entered the target region after {ttt:.0f} s" if ttt is not None
                        else "never entered the target region"))
    if lat["p95"] is not None:
        lines.append(f"  decision latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")
    lines.append(f"  wall-clock {s['wall_sec']:.1f} s")
    return lines


def run_session_command(cfg: SessionConfig) -> SessionResult:
    """``st-agent session``: choose the controller, run the loop, summarise."""
    from st_agent.live.common import check_key_file
    from st_agent.live.inputs import check_board
    from st_agent.live.runtime import session_folder
    from st_agent.live.session import run_session

    # what the user can fix is refused before a model loads or a folder is made
    check_board(cfg.board)
    check_key_file(cfg.key_file)
    session_folder(cfg)
    from st_agent.subject_commands import announce_subjects  # --subject

    sys.stderr.write("\n".join(announce_subjects(cfg)) + "\n")
    from st_agent.policies.controllers import make_controller
    from st_agent.policies.personal import apply_subject
    from st_agent.types import Knobs

    picked = apply_subject(cfg)  # --subject's personal controller, calibration, listener
    if picked:
        _out([picked])
    override = Knobs(*cfg.knobs) if cfg.knobs is not None else None
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, override, cfg.seed)
    result = run_session(cfg, controller, name, _status_printer(),
                         on_dashboard=_announce_dashboard)  # --dashboard
    sys.stderr.write("\n")
    _out(_session_lines(result))
    return result


def run_demo(cfg: DemoConfig) -> SessionResult:
    """``st-agent demo``: the session on a virtual listener, accelerated."""
    return run_session_command(cfg.session_config())


def run_jam_command(cfg: JamConfig) -> None:
    """``st-agent jam``: one board and one agent per performer, one piece."""
    from st_agent.live.common import check_key_file
    from st_agent.live.inputs import check_board
    from st_agent.live.jam import jam_folder, run_jam

    # the config validated its values when built; boards, key and folder before a model loads
    boards = cfg.board_list()
    for board in boards:
        check_board(board)
    check_key_file(cfg.key_file)
    jam_folder(cfg)
    from st_agent.subject_commands import announce_subjects  # --subject

    sys.stderr.write("\n".join(announce_subjects(cfg)) + "\n")
    n = len(boards)
    from st_agent.policies.controllers import make_jam_controller

    controller, name, history_len = make_jam_controller(cfg.policy, n, cfg.seed,
                                                        cfg.target_list(n))
    tty = sys.stderr.isatty()
    res = run_jam(cfg, controller, name, lambda line: sys.stderr.write(
        ("\r" + line[:200] + "\x1b[K") if tty else line + "\n"), history_len,
        on_dashboard=_announce_dashboard)  # --dashboard
    s = res.summary
    g = s["group_distance_last_half"]
    _out([f"\njam written to {res.folder}",
          f"  group report {res.report_path}" if res.report_path else "",
          f"  audio        {res.wav_path}" if res.wav_path else "",
          *(f"  performer {i}: {f / 'report.html'}" for i, f in
            enumerate(res.performer_folders)),
          f"  {s['phrases']} phrases, {s['music_sec']:.0f} s with {name}; group mean distance "
          f"over the last half {'–' if g is None else f'{g:.3f}'}; clashes per bar "
          f"{s['clashes_per_bar'] or 0:.2f}"])


def run_report(cfg: ReportConfig) -> None:
    """``st-agent report``: rebuild report.html from a recording."""
    from st_agent.live.report import write_report

    _out([f"wrote {write_report(cfg.folder, cfg.key_file)}"])


def run_boards(cfg: BoardsConfig) -> None:
    """``st-agent boards``: BrainFlow's boards and their ids."""
    from st_agent.biometrics.sources import list_boards

    _out([f"{board_id:4d}  {name}"
          for name, board_id in sorted(list_boards().items(), key=lambda kv: kv[1])])


def run_generate(cfg: GenerateConfig) -> None:
    """``st-agent generate``: compose, render and print what was measured."""
    from st_agent.music.generate import generate

    result = generate(cfg)
    f = result.features
    _out([
        f"wrote {result.abc_path}, {result.midi_path}"
        + (f", {result.wav_path}" if result.wav_path else ""),
        "measured from the MIDI:",
        f"  tempo        {f.bpm:.1f} BPM",
        f"  key          {f.key} ({f.mode}, confidence {f.mode_confidence:.2f})",
        f"  density      {f.notes_per_beat:.2f} melody notes/beat, "
        f"{f.notes_per_sec:.2f} notes/s (all parts)",
        f"  melody       mean pitch {f.mean_pitch:.1f} (MIDI), range {f.pitch_range:.0f} semitones",
        f"  loudness     mean velocity {f.mean_velocity:.0f}",
        f"  duration     {f.duration_sec:.2f} s, {f.n_notes} notes",
    ])


def run_train_generator(cfg: TrainGeneratorConfig) -> None:
    """``st-agent train-generator``."""
    from st_agent.music.generator import train_generator

    _out([f"run written to {train_generator(cfg)}"])


def run_export_command(cfg: ExportConfig) -> None:
    """``st-agent export``."""
    from st_agent.biometrics.recording import run_export

    _out([f"wrote {path}" for path in run_export(cfg)])


def run_delete_command(cfg: DeleteConfig) -> None:
    """``st-agent delete`` (``--dry-run`` lists what it would remove)."""
    from st_agent.biometrics.recording import run_delete

    verb = "would remove" if cfg.dry_run else "removed"
    _out([f"{verb} {path}" for path in run_delete(cfg)])


def run_fit_listener_command(cfg: FitListenerConfig) -> None:
    """``st-agent fit-listener``."""
    from st_agent.listener.fitting import run_fit_listener

    res = run_fit_listener(cfg)
    q = res.quality
    _out([f"wrote {q.get('path', cfg.out)}: {res.minutes_used:.1f} min of music from "
          f"{len(res.sessions)} session(s), held-out R² {res.heldout_r2:.2f} on 10 s blocks "
          f"({res.heldout_r2_window:.2f} per window)",
          *(f"  warning: {w}" for w in q.get("warnings", ())),
          "  written with --force: the warnings are recorded in the file" if q.get("forced")
          else ""])


def run_train(cfg: TrainConfig) -> None:
    """``st-agent train``."""
    if cfg.backend != "sb3":  # --backend rllib (issue 18); ray is imported only there
        from st_agent.policies.rllib_backend import run_train_backend

        _out([f"run written to {run_train_backend(cfg)}"])
        return
    from st_agent.policies.train import train

    cfg.personal_listener()  # --listener / --subject: refused before anything is written
    run = train(cfg)
    _out([f"run written to {run}",
          f"  personal controller of {cfg.subject} installed (st-agent session --subject "
          f"{cfg.subject} uses it)" if cfg.subject else ""])


def run_evaluate(cfg: EvaluateConfig) -> Any:
    """``st-agent evaluate``: the comparison table on stdout."""
    from st_agent.policies.evaluate import evaluate, format_table

    results = evaluate(cfg)
    _out([format_table(results)])
    return results


def run_train_jam(cfg: TrainJamConfig) -> None:
    """``st-agent train-jam``."""
    if cfg.backend != "sb3":  # --backend rllib (issue 18); ray is imported only there
        from st_agent.policies.rllib_jam import run_train_jam_backend

        _out([f"run written to {run_train_jam_backend(cfg)}"])
        return
    from st_agent.policies.jam import train_jam

    _out([f"run written to {train_jam(cfg)}"])


def run_evaluate_jam(cfg: EvaluateJamConfig) -> None:
    """``st-agent evaluate-jam``."""
    from st_agent.policies.jam import evaluate_jam, format_jam_table

    _out([format_jam_table(evaluate_jam(cfg))])


def run_combine_jam(cfg: CombineJamConfig) -> None:
    """``st-agent combine-jam``."""
    from st_agent.policies.jam import combine_jam

    _out([f"ensemble policy written to {combine_jam(cfg)}"])


def run_sonify(cfg: SonifyConfig) -> None:
    """``st-agent sonify``: the piece, the legend and the per-column Spearman."""
    from st_agent.music.sonify import MEASURED, sonify

    res = sonify(cfg)
    lines = [f"wrote {res.folder}: {res.n_phrases} phrases, {res.music_sec:.0f} s of music",
             f"  audio {res.wav_path}" if res.wav_path else "", f"  midi  {res.midi_path}",
             f"  score {res.score_path}", f"  plot  {res.plot_path}" if res.plot_path else "",
             "legend (Spearman of the column with what it is heard as):"]
    for row in res.legend:
        if row["column"] is None:
            lines.append(f"  {row['knob']:<8} held at {row['held']:.2f}")
        else:
            rho = row["spearman_heard"]
            lines.append(f"  {row['knob']:<8} <- {'-' if row['inverted'] else ''}{row['column']}"
                         f"  {MEASURED[row['heard']][2]}: "
                         + ("n/a" if rho is None else f"{rho:+.2f}"))
    _out(lines)


def run_transition(cfg: TransitionConfig) -> None:
    """``st-agent transition``: plan, play and compare with a straight jump."""
    from st_agent.contract import TARGET_PRESETS
    from st_agent.music.piece_config import parse_knob_spec
    from st_agent.music.transition import transition
    from st_agent.policies.baselines import FIXED_KNOBS
    from st_agent.types import Knobs

    def knobs_of(name: str, spec: str) -> Knobs:
        # a preset plays the knobs its fixed baseline holds
        v = parse_knob_spec(name, spec, tuple(sorted(TARGET_PRESETS)))
        return Knobs(*(FIXED_KNOBS[v] if isinstance(v, str) else v))

    res = transition(cfg, knobs_of("from", cfg.from_), knobs_of("to", cfg.to))
    lines = [f"wrote {res.folder}: {res.n_phrases} phrases, {res.music_sec:.0f} s of music",
             f"  audio {res.wav_path}" if res.wav_path else "",
             f"  largest step in audio-feature space: planned {res.max_step_planned:.2f}"
             + (f", straight jump {res.max_step_direct:.2f}" if res.max_step_direct is not None
                else "") + f" (predicted {res.max_step_predicted:.2f})"]
    _out(lines)


def run_brain_voices(cfg: BrainVoicesConfig) -> None:
    """``st-agent brain-voices``: regions, voices, clashes and tracking."""
    from st_agent.live.brain_voices import brain_voices

    res = brain_voices(cfg)
    s = res.summary
    lines = [f"wrote {res.folder}: {s['phrases']} phrases, {s['music_sec']:.0f} s, voices "
             + ", ".join(s["voices"]),
             f"  audio {res.wav_path}" if res.wav_path else "",
             f"  clashes per bar {s['clashes_per_bar']:.2f} (independent voices "
             f"{s['clashes_per_bar_independent']:.2f})"]
    for name, r in s["tracking"].items():
        lines.append(f"  {name:<16} Spearman with its region's activity: density "
                     + ("n/a" if r["density"] is None else f"{r['density']:+.2f}"))
    _out(lines)


def run_render_video(cfg: RenderVideoConfig) -> None:
    """``st-agent render-video``: the video (with its music) and/or the page of a session."""
    from st_agent.live.visuals import load_timeline, write_visuals_page

    timeline = load_timeline(cfg.folder, cfg.key_file)
    lines = []
    if cfg.format == "mp4":
        from st_agent.live.video import render_video

        res = render_video(timeline, cfg.folder / "session.wav", cfg.video_path(), fps=cfg.fps,
                           size=cfg.size, start_sec=cfg.start_sec, end_sec=cfg.end_sec)
        lines.append(f"wrote {res.path}: {res.seconds:.1f} s, {res.frames} frames at {cfg.fps} "
                     f"fps in {res.render_sec:.1f} s")
    if cfg.format == "html" or cfg.html:
        lines.append(f"wrote {write_visuals_page(cfg.folder, timeline)} (open it in a browser; "
                     "it plays session.wav beside it)")
    _out(lines)


def run_calibrate_command(cfg: CalibrateConfig) -> None:
    """``st-agent calibrate``: record the calm/energetic protocol, fit and check the map."""
    from st_agent.biometrics.calibrate_protocol import run_calibration
    from st_agent.live.common import check_key_file
    from st_agent.live.inputs import check_board
    from st_agent.live.runtime import session_folder

    scfg = cfg.session_config()
    check_board(scfg.board)
    check_key_file(scfg.key_file)
    session_folder(scfg)
    out = run_calibration(cfg, _status_printer())
    sys.stderr.write("\n")
    cv = out.figures["cv"]
    _out([f"calibration recorded in {out.folder}",
          f"  {out.figures['blocks_found']} blocks, {cv['n_windows']} windows; time-blocked CV "
          f"AUC {cv['auc']:.3f} (95 % CI {cv['auc_ci'][0]:.3f}-{cv['auc_ci'][1]:.3f}), "
          f"accuracy {cv['accuracy']:.3f} ({cv['accuracy_ci'][0]:.3f}-"
          f"{cv['accuracy_ci'][1]:.3f})",
          f"  markers besides band powers: {', '.join(out.figures['markers']) or 'none'}",
          f"  map written to {cfg.out}: use it with st-agent session --calibration {cfg.out}"])
