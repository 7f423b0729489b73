"""The ``st-agent`` command: one subcommand per entry point, each driven by its
config dataclass (``st-agent <command> --help`` lists every setting)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import tyro

from st_agent.biometrics.recording import DeleteConfig, ExportConfig, run_delete, run_export
from st_agent.listener.fitting import FitListenerConfig, run_fit_listener
from st_agent.live.jam import JamConfig, run_jam
from st_agent.live.report import ReportConfig, write_report
from st_agent.live.session import (
    DemoConfig,
    SessionConfig,
    SessionResult,
    SessionStatus,
    run_session,
)
from st_agent.music.generate import GenerateConfig, generate
from st_agent.music.generator import TrainGeneratorConfig, train_generator

# The command line is the one place that ties st_agent to envs and policies.
from st_agent.policies.evaluate import EvaluateConfig, evaluate
from st_agent.policies.jam import (
    CombineJamConfig,
    EvaluateJamConfig,
    TrainJamConfig,
    combine_jam,
    evaluate_jam,
    train_jam,
)
from st_agent.policies.train import TrainConfig, train
from st_agent.types import Knobs

logger = logging.getLogger("st_agent")


@dataclass
class BoardsConfig:
    """List the BrainFlow boards ``st-agent session --board`` accepts."""


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


def _run_session(cfg: SessionConfig) -> SessionResult:
    from st_agent.policies.controllers import make_controller

    override = Knobs(*cfg.knobs) if cfg.knobs is not None else None
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, override, cfg.seed)
    result = run_session(cfg, controller, name, _status_printer())
    sys.stderr.write("\n")
    s = result.summary
    lat = s["decision_latency_ms"]
    m = s.get("metrics", {})
    lines = [
        f"session written to {result.folder}",
        f"  report     {result.report_path}" if result.report_path else "",
        f"  audio      {result.wav_path}" if result.wav_path else "",
        f"  score      {result.score_path}",
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
    sys.stdout.write("\n".join(x for x in lines if x) + "\n")
    return result

_COMMANDS = {
    "demo": DemoConfig,
    "session": SessionConfig,
    "jam": JamConfig,
    "report": ReportConfig,
    "boards": BoardsConfig,
    "generate": GenerateConfig,
    "train-generator": TrainGeneratorConfig,
    "export": ExportConfig,
    "delete": DeleteConfig,
    "fit-listener": FitListenerConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "train-jam": TrainJamConfig,
    "evaluate-jam": EvaluateJamConfig,
    "combine-jam": CombineJamConfig,
}


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def _report_generate(cfg: GenerateConfig) -> None:
    result = generate(cfg)
    f = result.features
    lines = [
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
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _run_jam(cfg: JamConfig) -> None:
    from st_agent.policies.controllers import make_jam_controller

    n = len(cfg.board_list())
    cfg.target_list(n)  # validate before loading anything
    controller, name, history_len = make_jam_controller(cfg.policy, n, cfg.seed)
    tty = sys.stderr.isatty()
    res = run_jam(cfg, controller, name, lambda line: sys.stderr.write(
        ("\r" + line[:200] + "\x1b[K") if tty else line + "\n"), history_len)
    s = res.summary
    g = s["group_distance_last_half"]
    lines = [f"\njam written to {res.folder}",
             f"  group report {res.report_path}" if res.report_path else "",
             f"  audio        {res.wav_path}" if res.wav_path else "",
             *(f"  performer {i}: {f / 'report.html'}" for i, f in
               enumerate(res.performer_folders)),
             f"  {s['phrases']} phrases, {s['music_sec']:.0f} s with {name}; group mean distance "
             f"over the last half {'–' if g is None else f'{g:.3f}'}; clashes per bar "
             f"{s['clashes_per_bar'] or 0:.2f}"]
    sys.stdout.write("\n".join(x for x in lines if x) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``st-agent``; returns the exit status."""
    _setup_logging()
    cfg = tyro.extras.subcommand_cli_from_dict(_COMMANDS, args=argv, prog="st-agent")
    try:
        if isinstance(cfg, DemoConfig):
            _run_session(cfg.session_config())
        elif isinstance(cfg, SessionConfig):
            _run_session(cfg)
        elif isinstance(cfg, JamConfig):
            _run_jam(cfg)
        elif isinstance(cfg, ReportConfig):
            sys.stdout.write(f"wrote {write_report(cfg.folder, cfg.key_file)}\n")
        elif isinstance(cfg, BoardsConfig):
            from st_agent.biometrics.sources import list_boards

            for name, board_id in sorted(list_boards().items(), key=lambda kv: kv[1]):
                sys.stdout.write(f"{board_id:4d}  {name}\n")
        elif isinstance(cfg, GenerateConfig):
            _report_generate(cfg)
        elif isinstance(cfg, TrainGeneratorConfig):
            run = train_generator(cfg)
            sys.stdout.write(f"run written to {run}\n")
        elif isinstance(cfg, ExportConfig):
            for path in run_export(cfg):
                sys.stdout.write(f"wrote {path}\n")
        elif isinstance(cfg, FitListenerConfig):
            res = run_fit_listener(cfg)
            sys.stdout.write(
                f"wrote {cfg.out}: {res.minutes_used:.1f} min of music, held-out R² "
                f"{res.heldout_r2:.2f} on 10 s blocks ({res.heldout_r2_window:.2f} per window)\n")
        elif isinstance(cfg, TrainConfig):
            sys.stdout.write(f"run written to {train(cfg)}\n")
        elif isinstance(cfg, EvaluateConfig):
            from st_agent.policies.evaluate import format_table

            sys.stdout.write(format_table(evaluate(cfg)) + "\n")
        elif isinstance(cfg, TrainJamConfig):
            sys.stdout.write(f"run written to {train_jam(cfg)}\n")
        elif isinstance(cfg, CombineJamConfig):
            sys.stdout.write(f"ensemble policy written to {combine_jam(cfg)}\n")
        elif isinstance(cfg, EvaluateJamConfig):
            from st_agent.policies.jam import format_jam_table

            sys.stdout.write(format_jam_table(evaluate_jam(cfg)) + "\n")
        elif isinstance(cfg, DeleteConfig):
            removed = run_delete(cfg)
            verb = "would remove" if cfg.dry_run else "removed"
            for path in removed:
                sys.stdout.write(f"{verb} {path}\n")
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        # User-facing errors: one clear line, no traceback.
        sys.stderr.write(f"st-agent: error: {e}\n")
        return 2
    return 0


def app() -> None:
    """Console-script wrapper."""
    raise SystemExit(main())
