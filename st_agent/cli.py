"""The ``st-agent`` command: one subcommand per entry point, each driven by its
config dataclass (``st-agent <command> --help`` lists every setting).

The command line answers at once: ``st-agent --help``, ``st-agent <command>
--help`` and every argument error load only the command's config module (no
torch, transformers, mne, brainflow or stable-baselines3). The module that does
the work is imported when the command runs. This is also the one place that
ties ``st_agent`` to ``st_agent.envs`` and ``st_agent.policies``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from st_agent import __version__

__all__ = ["COMMANDS", "Command", "app", "main"]

logger = logging.getLogger("st_agent")

#: Exit status of a usage error (bad option, unknown command) and of a refused run.
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """One subcommand: where its config lives and which handler runs it.

    ``config`` and ``handler`` are ``"module:attribute"`` strings so that
    nothing is imported before the command is chosen.
    """

    name: str
    config: str
    handler: str
    summary: str

    def load_config(self) -> type:
        """The config dataclass (imports only its light module)."""
        module, attr = self.config.split(":")
        return getattr(importlib.import_module(module), attr)

    def load_handler(self) -> Callable[[Any], None]:
        """The function that runs the command with a parsed config."""
        module, attr = self.handler.split(":")
        return getattr(importlib.import_module(module), attr)


_H = "st_agent.commands"
COMMANDS: tuple[Command, ...] = (
    Command("demo", "st_agent.live.session:DemoConfig", f"{_H}:run_demo",
            "The closed loop on a virtual listener, accelerated (no headset, no GPU)."),
    Command("session", "st_agent.live.session:SessionConfig", f"{_H}:run_session_command",
            "A live session: a board (or file, LSL stream, virtual listener) and the music."),
    Command("jam", "st_agent.live.jam:JamConfig", f"{_H}:run_jam_command",
            "Several performers, one piece: one board and one agent each."),
    Command("report", "st_agent.live.report:ReportConfig", f"{_H}:run_report",
            "Rebuild a session's report.html from its recording."),
    Command("boards", "st_agent.commands:BoardsConfig", f"{_H}:run_boards",
            "List the BrainFlow boards `session --board` accepts."),
    Command("generate", "st_agent.music.config:GenerateConfig", f"{_H}:run_generate",
            "Compose a piece under fixed knobs (ABC, MIDI, WAV)."),
    Command("train-generator", "st_agent.music.config:TrainGeneratorConfig",
            f"{_H}:run_train_generator", "Train the ABC GPT-2 composer from scratch."),
    Command("export", "st_agent.biometrics.recording:ExportConfig", f"{_H}:run_export_command",
            "Export a recorded session (EDF+, FIF, BIDS)."),
    Command("delete", "st_agent.biometrics.recording:DeleteConfig", f"{_H}:run_delete_command",
            "Delete a recorded session (all its files)."),
    Command("fit-listener", "st_agent.listener.fitting:FitListenerConfig",
            f"{_H}:run_fit_listener_command",
            "Fit a simulated listener to a person's recorded sessions."),
    Command("train", "st_agent.policies.config:TrainConfig", f"{_H}:run_train",
            "Train a PPO controller on simulated listeners."),
    Command("evaluate", "st_agent.policies.evaluate:EvaluateConfig", f"{_H}:run_evaluate",
            "Compare controllers on held-out simulated listeners."),
    Command("train-jam", "st_agent.policies.config:TrainJamConfig", f"{_H}:run_train_jam",
            "Train one shared PPO policy for the performers of a jam."),
    Command("evaluate-jam", "st_agent.policies.config:EvaluateJamConfig",
            f"{_H}:run_evaluate_jam", "Compare jam policies on held-out groups."),
    Command("combine-jam", "st_agent.policies.config:CombineJamConfig",
            f"{_H}:run_combine_jam", "Combine trained jam policies into an ensemble."),
    Command("sonify", "st_agent.music.piece_config:SonifyConfig", f"{_H}:run_sonify",
            "Turn any time series (CSV, Parquet, a recording) into music, phrase by phrase."),
    Command("transition", "st_agent.music.piece_config:TransitionConfig",
            f"{_H}:run_transition",
            "A smooth path from one musical state to another (bounded audio change per phrase)."),
    Command("brain-voices", "st_agent.music.piece_config:BrainVoicesConfig",
            f"{_H}:run_brain_voices",
            "Brain regions of an EEG recording as the voices of one multi-voice piece."),
)
_BY_NAME = {c.name: c for c in COMMANDS}


def _usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [f"usage: st-agent [-h] [--version] {{{','.join(c.name for c in COMMANDS)}}} ...",
             "",
             "Sonic Telegram agent: music composed phrase by phrase, steered by a listener's",
             "measured state. `st-agent <command> --help` lists every setting of a command.",
             "",
             "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS]
    lines += ["", "options:", "  -h, --help  show this message and exit",
              "  --version   show the version and exit"]
    return "\n".join(lines) + "\n"


def _unknown(name: str) -> int:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    sys.stderr.write(f"st-agent: error: unknown command {name!r}{hint} "
                     f"Choose from: {', '.join(_BY_NAME)}\n")
    return EXIT_USAGE


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``st-agent``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(_usage())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        sys.stdout.write(f"st-agent {__version__}\n")
        return 0
    command = _BY_NAME.get(args[0])
    if command is None:
        return _unknown(args[0])
    import tyro

    config_cls = command.load_config()
    try:
        # A config validates its own fields (__post_init__): bad values stop here,
        # before any model or device is loaded.
        cfg = tyro.cli(config_cls, args=args[1:], prog=f"st-agent {command.name}")
    except SystemExit as e:  # --help (0) or a usage error (tyro exits 2)
        return int(e.code or 0)
    except ValueError as e:
        sys.stderr.write(f"st-agent {command.name}: error: {e}\n")
        return EXIT_USAGE
    _setup_logging()
    try:
        command.load_handler()(cfg)
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        # User-facing errors: one clear line, no traceback.
        sys.stderr.write(f"st-agent: error: {e}\n")
        return EXIT_USAGE
    return 0


def app() -> None:
    """Console-script wrapper."""
    raise SystemExit(main())
