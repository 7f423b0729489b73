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

Where the parts live: this module holds the settings (:class:`JamConfig`,
validated when built) and :func:`run_jam`; the loop and the performers are
:mod:`st_agent.live.jam_loop`, the outputs :mod:`st_agent.live.jam_report`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import tyro

from st_agent.contract import HISTORY_LEN, JAM_MAX_PERFORMERS, SafetyBounds, resolve_target
from st_agent.errors import UsageError
from st_agent.live.common import (
    DEFAULT_CONSENT,
    VIRTUAL_BOARD,
    check_dropout,
    check_fraction,
    check_minutes,
    check_network_outputs,
    check_seconds,
    check_writable,
    load_or_create_key,
    open_player,
)
from st_agent.live.inputs import BoardSpec, check_board_specs, load_boards_file, parse_boards
from st_agent.live.jam_loop import JamController, JamLoop, Performer, blend_features
from st_agent.live.midi_out import check_midi_flags
from st_agent.live.session import SessionConfig

__all__ = ["DEFAULT_BOARDS", "JamConfig", "JamController", "JamResult", "blend_features",
           "jam_folder", "run_jam"]


#: Boards of a jam when none are given: three BrainFlow synthetic boards.
DEFAULT_BOARDS = "synthetic,synthetic,synthetic"


@dataclass
class JamConfig:
    """A live jam (``st-agent jam``); every field is a flag."""

    boards: str = DEFAULT_BOARDS
    """One board per performer, comma-separated (2 to 8): BrainFlow names or ids,
    ``virtual`` (a simulated listener), ``lsl:<stream>`` or ``file:<path>``; a real board
    takes its connection after a colon: ``cyton:/dev/ttyUSB0,muse_2:00:55:DA:B0:12:34``
    (a serial port or a Bluetooth MAC address)."""
    boards_file: Path | None = None
    """Instead of --boards: a TOML (or .json) file with one ``[[performer]]`` table per
    performer: board, serial_port, mac_address, other_info."""
    targets: str = "calm"
    """Target preset of every performer, or one per performer, comma-separated."""
    minutes: float = 10.0
    """Minutes of music after calibration."""
    policy: str = "jam3"
    """Controller: a bundled jam policy (jam3), a jam policy folder, ``independent``
    (the bundled single-listener policy per performer), ``pid`` (gains tuned per
    target), ``adaptive`` (the shipped adaptive controller per performer) or ``random``."""
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
    missing); the reports are written with it, the derived files (WAV, score, summaries,
    reports) are plaintext."""
    consent: str = DEFAULT_CONSENT
    """What every performer consented to, comma-separated (recorded with each
    recording): record, store_local, export, share_pseudonymized. Default
    ``record,store_local``; ``st-agent export`` needs ``export``."""
    subject: str = ""
    """Each performer's pseudonym, comma-separated in performer order;
    an empty entry (or an empty list): a new pseudonym for that performer, printed with
    how to reuse it. ``st-agent subjects`` lists them."""
    line_freq: float | None = None
    """Mains frequency where the jam is recorded, Hz (50 or 60); stored with each
    recording (a BIDS export needs it)."""
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
    midi_out: str = ""
    """Send the music live to this MIDI port, one channel per part (empty: off): an
    existing output port by name, else a virtual port of that name (Linux, macOS)."""
    midi_virtual: bool = True
    """With --midi-out: create a virtual port when no port has that name
    (--no-midi-virtual: a missing port is an error that lists the ports)."""
    no_audio: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False  # no --no-no-audio
    """No live sound from this program (--play is refused): leave the sound to the DAW or
    synthesiser on --midi-out. The WAV is still written."""
    stems: bool = False
    """Also write stems/performer_<i>.wav, bass.wav and chords.wav: stereo, panned as in
    the mix and at its gain, so they add up to session.wav."""
    osc: str = ""
    """Send phrases, beats and markers as OSC to PORT or HOST:PORT (host default
    127.0.0.1; docs/osc.md). A jam sends no /st/state or /st/knobs (one per performer:
    not in the address space yet)."""
    osc_prefix: str = "/st"
    """OSC address prefix of those messages."""
    lsl_out: bool = False
    """Open LSL outlets for the jam's phrase markers and markers (LabRecorder)."""
    lsl_out_name: str = ""
    """Name prefix of those LSL streams (default st-agent); giving one turns them on."""

    # --- the live dashboard (st_agent.live.dashboard_jam)
    dashboard: bool = False
    """Serve a live dashboard: each performer's state, target and knobs, the phrases and
    the score, and two controls (fade out and stop, markers); the command prints
    ``dashboard: http://127.0.0.1:<port>/?token=...``."""
    dashboard_host: str = "127.0.0.1"
    """Address the dashboard binds; another than this machine's is allowed (you gave
    it), with a warning."""
    dashboard_port: int = 0
    """TCP port of the dashboard; 0 picks a free one."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate every setting (run when the config is built).

        Raises
        ------
        ValueError
            Naming the setting, the bad value and what is allowed.
        """
        from st_agent.live.dashboard import check_dashboard_flags

        check_dashboard_flags(self.dashboard, self.dashboard_host, self.dashboard_port)
        specs = self.board_specs()
        boards = [spec.board for spec in specs]
        n = len(boards)
        self.target_list(n)
        if self.inject_dropout is not None:
            who = self.inject_dropout[0]
            if isinstance(who, bool) or not isinstance(who, numbers.Integral) \
                    or not 0 <= who < n:
                raise ValueError(f"--inject-dropout performer must be in [0, {n - 1}], got "
                                 f"{who!r}")
            check_dropout(self.inject_dropout[1:])
        if self.accelerated and any(b != VIRTUAL_BOARD for b in boards):
            raise ValueError(f"--accelerated needs every board to be {VIRTUAL_BOARD!r}, got "
                             f"{','.join(boards)!r}")
        check_minutes(self.minutes)
        SafetyBounds(max_delta=self.max_delta)
        for name in ("calibration_sec", "decision_lead_sec", "signal_timeout_sec", "fade_sec"):
            check_seconds(name, getattr(self, name))
        check_seconds("status_sec", self.status_sec, positive=True)
        check_midi_flags(self.midi_out, self.no_audio, self.play)
        check_network_outputs(self.osc, self.osc_prefix, self.lsl_out_name)
        check_fraction("own_weight", self.own_weight)
        check_fraction("min_confidence", self.min_confidence)
        check_board_specs(specs, "--boards-file" if self.boards_file is not None
                          else "--boards")
        for i in range(n):
            self.performer_config(i)  # each performer is a valid session

    def board_specs(self) -> list[BoardSpec]:
        """Each performer's board and connection (from --boards or --boards-file): 2 to 8
        of them (connections are checked by :meth:`check`)."""
        if self.boards_file is not None:
            if self.boards != DEFAULT_BOARDS:
                raise UsageError(f"give --boards or --boards-file, not both (got --boards "
                                 f"{self.boards!r} and --boards-file {self.boards_file})")
            specs, flag = load_boards_file(self.boards_file), f"--boards-file {self.boards_file}"
        else:
            specs, flag = parse_boards(self.boards), "--boards"
        if not 2 <= len(specs) <= JAM_MAX_PERFORMERS:
            shown = self.boards_file if self.boards_file is not None else repr(self.boards)
            raise UsageError(f"{flag.split()[0]} names {len(specs)} board(s) ({shown}): "
                             f"performers must be an int in [2, {JAM_MAX_PERFORMERS}], got "
                             f"{len(specs)}; give one board per performer, e.g. "
                             "synthetic,synthetic")
        return specs

    def board_list(self) -> list[str]:
        """The boards' names, validated: 2 to 8 of them."""
        return [spec.board for spec in self.board_specs()]

    def subject_list(self, n: int) -> list[str]:
        """One pseudonym (or "" for a new one) per performer, from --subject."""
        if not isinstance(self.subject, str):
            raise ValueError(f"--subject must be comma-separated pseudonyms, got "
                             f"{self.subject!r}")
        if not self.subject.strip():
            return [""] * n
        subjects = [s.strip() for s in self.subject.split(",")]
        if len(subjects) != n:
            raise ValueError(f"--subject names {len(subjects)} pseudonym(s) but there are {n} "
                             f"performers; give one per performer, comma-separated (an empty "
                             f"entry makes a new one), e.g. s00000001,,s00000003")
        named = [s for s in subjects if s]
        if len(set(named)) != len(named):
            raise ValueError(f"--subject {self.subject!r} names a pseudonym twice; each "
                             "performer is another person")
        return subjects

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

    def performer_config(self, i: int, board: str | None = None) -> SessionConfig:
        """Settings of performer ``i`` as a one-listener session (board and its
        connection, calibration, fault injection...).

        ``board`` (optional, as before) must be performer ``i``'s board; ``other_info``
        is the file's, else ``st-agent-performer-<i>`` (BrainFlow tells two boards of one
        type apart by their parameters).
        """
        specs = self.board_specs()
        spec = specs[i]
        if board is not None and board != spec.board:
            raise ValueError(f"performer {i}'s board is {spec.board!r}, not {board!r}")
        inject = None
        if self.inject_dropout is not None and int(self.inject_dropout[0]) == i:
            inject = (float(self.inject_dropout[1]), float(self.inject_dropout[2]))
        other = spec.other_info if spec.other_info is not None else f"st-agent-performer-{i}"
        return SessionConfig(board=spec.board, target=self.target_list(len(specs))[i],
                             minutes=self.minutes, calibration_sec=self.calibration_sec,
                             max_delta=self.max_delta, accelerated=self.accelerated,
                             seed=self.seed + 1000 * i, record=self.record,
                             serial_port=spec.serial_port, mac_address=spec.mac_address,
                             other_info=other, inject_dropout=inject, consent=self.consent,
                             subject=self.subject_list(len(specs))[i],
                             line_freq=self.line_freq, min_confidence=self.min_confidence)


@dataclass
class JamResult:
    """Where a jam's outputs are and its headline figures."""

    folder: Path
    performer_folders: list[Path]
    wav_path: Path | None
    report_path: Path | None
    summary: dict[str, Any]


def jam_folder(cfg: JamConfig) -> Path:
    """The folder the jam will write, checked before anything starts.

    Raises
    ------
    ValueError
        When it exists and is not empty.
    OSError
        When ``cfg.record`` cannot hold recordings.
    """
    folder = Path(cfg.record) / (cfg.name or "jam-" + datetime.now(timezone.utc).strftime(
        "%Y%m%dT%H%M%S"))
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"jam folder {folder} exists and is not empty; choose another --name")
    check_writable(Path(cfg.record))
    return folder


def run_jam(cfg: JamConfig, controller: JamController, controller_name: str = "",
            on_status: Callable[[str], None] | None = None,
            history_len: int = HISTORY_LEN,
            on_dashboard: Callable[[str], None] | None = None) -> JamResult:
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
    on_dashboard : callable, optional
        With ``cfg.dashboard``: gets the dashboard's URL.
    """
    from st_agent.live.dashboard_jam import start_jam_dashboard, stop_jam_dashboard
    from st_agent.live.jam_report import write_jam_outputs

    cfg.check()  # the config may have changed since it was built
    boards = cfg.board_list()
    targets = [resolve_target(t) for t in cfg.target_list(len(boards))]
    folder = jam_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    perf = [Performer(i, cfg.performer_config(i, board), folder / f"performer_{i}",
                      history_len) for i, board in enumerate(boards)]
    player = open_player() if cfg.play else None
    loop = JamLoop(cfg, controller, targets, perf, player, history_len)
    key = load_or_create_key(cfg.key_file)
    dashboard = None
    try:
        loop.open(key, controller_name, folder.name)
        dashboard = start_jam_dashboard(cfg, loop, folder.name, on_dashboard)
        loop.run(on_status)
    finally:
        loop.close()
        stop_jam_dashboard(loop, dashboard)
    wav, report, summary = write_jam_outputs(cfg, folder, perf, loop.played, loop.clashes,
                                             loop.latencies, targets, controller_name,
                                             time.monotonic() - loop.wall0)
    return JamResult(folder, [p.folder for p in perf], wav, report, summary)
