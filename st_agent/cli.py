"""The ``st-agent`` command: one subcommand per entry point, each driven by its
config dataclass (``st-agent <command> --help`` lists every setting).

The command line answers at once: ``st-agent --help``, ``st-agent <command>
--help`` and every argument error load only the command's config module (no
torch, transformers, mne, brainflow or stable-baselines3). The module that does
the work is imported when the command runs. This is also the one place that
ties ``st_agent`` to ``st_agent.envs`` and ``st_agent.policies``.

An error the user can fix is printed as one line, ``st-agent <command>: error:
<message>``, and the command exits with the status of :mod:`st_agent.errors`
(:data:`EXIT_STATUS_HELP`): the project's typed errors carry their own
(``UsageError`` 2, ``DataError`` 3, ``DeviceError`` 4); a plain ``ValueError``,
``OSError``, ``RuntimeError`` or ``ImportError`` from a module that does not
raise typed errors yet is a usage error (2), as before. Anything else is a bug
and keeps its traceback (exit 1).
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
from st_agent.errors import EXIT_INTERRUPTED, EXIT_USAGE, STAgentError

__all__ = ["COMMANDS", "EXIT_STATUS_HELP", "Command", "app", "main"]

logger = logging.getLogger("st_agent")

#: The exit statuses, as ``st-agent --help`` lists them (see :mod:`st_agent.errors`).
EXIT_STATUS_HELP = """exit status:
  0    done
  1    an unexpected error (a bug: please report it with the traceback)
  2    usage: a bad option or value, an unknown command
  3    data: a file you handed (recording, session, policy, model, ABC, key)
       is missing, malformed or unsafe
  4    device: a board, audio or MIDI device, a stream or a system tool is
       missing or failed
  130  interrupted before the session could stop cleanly (Ctrl-C twice)
Errors you can fix are printed as one line: st-agent <command>: error: <message>
"""


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
    Command("report", "st_agent.live.longitudinal:ReportCommandConfig",  # --subject
            "st_agent.live.longitudinal:run_report_command",
            "Rebuild a session's report.html, or compare a subject's sessions (--subject)."),
    Command("dashboard", "st_agent.live.dashboard_cli:DashboardConfig",
            "st_agent.live.dashboard_cli:run_dashboard",
            "Review a finished session on the dashboard page (local, read-only)."),
    Command("render-video", "st_agent.live.visuals:RenderVideoConfig", f"{_H}:run_render_video",
            "A recorded session as a video with its music, or a page that plays it."),
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
    Command("consent", "st_agent.biometrics.consent_auth:ConsentConfig",
            "st_agent.subject_commands:run_consent_command",
            "Record a listener's new consent on a recorded session (authenticated)."),
    Command("subjects", "st_agent.subjects:SubjectsConfig",
            "st_agent.subject_commands:run_subjects_command",
            "List the subjects: pseudonym, sessions, first and last date, personal files."),
    Command("calibrate", "st_agent.biometrics.calibrate_protocol:CalibrateConfig",
            f"{_H}:run_calibrate_command",
            "Play calm and energetic blocks, fit this listener's arousal map (JSON)."),
    Command("fit-listener", "st_agent.listener.fitting:FitListenerConfig",
            f"{_H}:run_fit_listener_command",
            "Fit a simulated listener to a person's recorded sessions."),
    Command("train", "st_agent.policies.config:TrainConfig", f"{_H}:run_train",
            "Train a PPO controller on simulated listeners."),
    Command("evaluate", "st_agent.policies.evaluate:EvaluateConfig", f"{_H}:run_evaluate",
            "Compare controllers on held-out simulated listeners."),
    Command("ope", "st_agent.policies.ope:OPEConfig", "st_agent.policies.ope:run_ope",
            "Estimate a policy's value on logged sessions (off-policy evaluation)."),
    Command("train-offline", "st_agent.policies.offline:TrainOfflineConfig",
            "st_agent.policies.offline:run_train_offline",
            "Train a controller from logged sessions (IQL) in the policy format."),
    Command("train-jam", "st_agent.policies.config:TrainJamConfig", f"{_H}:run_train_jam",
            "Train one shared PPO policy for the performers of a jam."),
    Command("evaluate-jam", "st_agent.policies.config:EvaluateJamConfig",
            f"{_H}:run_evaluate_jam", "Compare jam policies on held-out groups."),
    Command("combine-jam", "st_agent.policies.config:CombineJamConfig",
            f"{_H}:run_combine_jam", "Combine trained jam policies into an ensemble."),
    Command("export-rllib", "st_agent.policies.rllib_export:ExportRLlibConfig",
            "st_agent.policies.rllib_export:run_export_rllib_command",
            "Convert an RLlib checkpoint into a policy file (safetensors + JSON)."),
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
              "  --version   show the version and exit", "", EXIT_STATUS_HELP]
    return "\n".join(lines)


def _unknown(name: str) -> int:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    sys.stderr.write(f"st-agent: error: unknown command {name!r}{hint} "
                     f"Choose from: {', '.join(_BY_NAME)}\n")
    return EXIT_USAGE


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def _one_line(e: BaseException) -> str:
    """The message of a user-facing error on one line, naming the file of an ``OSError``."""
    if isinstance(e, OSError) and not isinstance(e, STAgentError) and e.filename \
            and str(e.filename) not in str(e.strerror or ""):
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def _typed_cause(e: BaseException) -> STAgentError | None:
    """The project's typed error that led to ``e``, if any (its context chain)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, STAgentError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _fail(command: str, e: BaseException, code: int) -> int:
    sys.stderr.write(f"st-agent {command}: error: {_one_line(e)}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``st-agent``; returns the exit status (see :data:`EXIT_STATUS_HELP`)."""
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
        # tyro shows a config's own validation error in its box and exits 2; a typed
        # error (a DataError for a malformed file) keeps its documented status
        typed = _typed_cause(e)
        return typed.exit_code if typed is not None else int(e.code or 0)
    except STAgentError as e:
        return _fail(command.name, e, e.exit_code)
    except (ValueError, OSError) as e:
        return _fail(command.name, e, EXIT_USAGE)
    _setup_logging()
    try:
        command.load_handler()(cfg)
    except STAgentError as e:
        # User-facing errors: one clear line, no traceback, the documented status.
        return _fail(command.name, e, e.exit_code)
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        # Modules that do not raise typed errors yet: a usage error, as before.
        return _fail(command.name, e, EXIT_USAGE)
    except KeyboardInterrupt:
        sys.stderr.write(f"st-agent {command.name}: interrupted\n")
        return EXIT_INTERRUPTED
    return 0


def app() -> None:
    """Console-script wrapper."""
    raise SystemExit(main())
