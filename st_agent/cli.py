"""The ``st-agent`` command: one subcommand per entry point, each driven by its
config dataclass (``st-agent <command> --help`` lists every setting)."""

from __future__ import annotations

import logging
import sys

import tyro

# The command line is the one place that ties st_agent to envs and policies.
from policies.evaluate import EvaluateConfig, evaluate
from policies.train import TrainConfig, train

from .fitting import FitListenerConfig, run_fit_listener
from .generate import GenerateConfig, generate
from .generator import TrainGeneratorConfig, train_generator
from .recording import DeleteConfig, ExportConfig, run_delete, run_export

logger = logging.getLogger("st_agent")

_COMMANDS = {
    "generate": GenerateConfig,
    "train-generator": TrainGeneratorConfig,
    "export": ExportConfig,
    "delete": DeleteConfig,
    "fit-listener": FitListenerConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``st-agent``; returns the exit status."""
    _setup_logging()
    cfg = tyro.extras.subcommand_cli_from_dict(_COMMANDS, args=argv, prog="st-agent")
    try:
        if isinstance(cfg, GenerateConfig):
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
            from policies.evaluate import format_table

            sys.stdout.write(format_table(evaluate(cfg)) + "\n")
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
