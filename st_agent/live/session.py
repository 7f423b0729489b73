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
  unusable (estimator confidence below ``min_confidence`` for longer than
  ``signal_hold_sec``: a blink's few windows are bridged by the last usable
  estimate), the knobs hold their last safe values and the session says so. A manual override
  (``knobs``) replaces the policy by a fixed setting reached at the rate limit.
  A stop (time up or Ctrl-C) fades the music out over ``fade_sec``.

Every knob change is logged with its reason in words, e.g. ``tempo down
(0.55→0.43): arousal +0.62 above target -0.50``, in the recording's events and
in the report.

Where the parts live: this module holds the settings (:class:`SessionConfig`,
:class:`DemoConfig`, validated when built, so the command line refuses a bad
value before anything loads) and the entry points; the loop is
:mod:`st_agent.live.runtime`, the source :mod:`st_agent.live.inputs`, composing
ahead :mod:`st_agent.live.composing`, the music files :mod:`st_agent.live.audio`
and what the jam shares :mod:`st_agent.live.common`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import tyro

from st_agent.contract import SafetyBounds, resolve_target
from st_agent.live.audio import write_session_wav
from st_agent.live.common import (
    DEFAULT_CONSENT,
    VIRTUAL_BOARD,
    check_dropout,
    check_fraction,
    check_minutes,
    check_seconds,
    explain_change,
    parse_consent,
)
from st_agent.live.inputs import estimator_config, open_source
from st_agent.live.midi_out import check_midi_flags
from st_agent.live.runtime import LiveSession, SessionResult, SessionStatus
from st_agent.types import Knobs

__all__ = [
    "VIRTUAL_BOARD",
    "DemoConfig",
    "LiveSession",
    "SessionConfig",
    "SessionResult",
    "SessionStatus",
    "estimator_config",
    "explain_change",
    "open_source",
    "run_demo",
    "run_session",
    "write_session_wav",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config


@dataclass
class SessionConfig:
    """A live closed-loop session (``st-agent session``); every field is a flag."""

    board: str = "synthetic"
    """BrainFlow board name or id (``st-agent boards`` lists them; ``synthetic`` needs no
    hardware), or ``virtual``: a simulated listener streaming EEG, ECG and EMG, or
    ``lsl:<stream name>`` (a Lab Streaming Layer stream) or ``file:<path>`` (a recording
    played back in real time)."""
    serial_port: str = ""
    """Serial port of the board or its dongle (Cyton: ``/dev/ttyUSB0``)."""
    mac_address: str = ""
    """Bluetooth MAC address (Muse, Ganglion native)."""
    other_info: str = ""
    """BrainFlow's ``other_info`` for boards that need it; it also tells apart several
    sessions on the same board type (a jam gives each performer its own)."""
    target: str = "calm"
    """Target preset: calm, focus, uplift or energize."""
    target_schedule: str = ""
    """Target changes inside the session: comma-separated preset@time,
    the time from the music's start in seconds (600) or minutes (10m), e.g.
    ``--target calm --target-schedule focus@10m``. At each change the knobs follow a
    planned path to the new target's knobs with bounded audio-feature steps
    (:mod:`st_agent.live.target_change`), then the controller resumes. Empty: none."""
    transition_max_step: float = 3.0
    """Bound on the audio-feature step between consecutive phrases during a target change
    (units of st_agent.music.audio_features: 2 LU of loudness, a quarter octave of
    centroid, flux or onset rate); the plan uses half of it per phrase."""
    transition_candidates: int = 2
    """Phrases composed per step of a target change; the one nearest the plan (by its
    measured audio) plays."""
    listener_hears: str = "midi"
    """With --board virtual: what the simulated listener responds to: midi (the features
    measured from the MIDI) or audio (loudness in LUFS and onset rate measured from each
    phrase's rendered audio; st_agent.listener.features documents the map and sources)."""
    minutes: float = 20.0
    """Length of the music part of the session, minutes (after calibration)."""
    policy: str = "calm"
    """Controller: a shipped preset (calm, focus, uplift, energize: the adaptive
    controller), adaptive, a trained policy folder (policy.safetensors + policy.json),
    or a baseline: pid (tuned), random, fixed."""
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
    """Encrypt the recording at rest with this key file (created when missing; keep it
    outside the session folder). The report is written with it. What stays plaintext:
    the derived files (session.wav, score.abc, summary.json, report.html and its PNGs)."""
    inject_dropout: tuple[float, float] | None = None
    """Fault injection: (start_sec, duration_sec) of wall time after the board starts
    during which the board delivers nothing."""
    decision_lead_sec: float = 2.0
    """Decide and start composing the next phrase this long before the current ends."""
    signal_timeout_sec: float = 1.0
    """No samples for this long counts as a lost signal (knobs hold)."""
    min_confidence: float = 0.2
    """Estimates below this confidence are unusable (knobs hold)."""
    signal_hold_sec: float = 2.0
    """A decision during a run of unusable windows this short (a blink makes one to
    three) uses the last usable estimate instead of holding the knobs; 0 = hold at once."""
    fade_sec: float = 4.0
    """Fade-out at the stop, seconds."""
    soundfont: Path | None = None
    """SoundFont (.sf2); default: the one pretty_midi ships."""
    sound: str = "session"
    """How the music sounds: session (default: instruments chosen by energy and valence,
    stereo with reverb and chorus, each phrase set to the loudness of its energy,
    -26 to -18 LUFS, so phrases join without jumps; a stereo session.wav) or plain (the
    earlier sound: piano, acoustic bass, electric piano whatever the knobs, mono, one
    gain). st_agent.live.session_sound documents it."""
    consent: str = DEFAULT_CONSENT
    """What the listener consented to, comma-separated (recorded with the session):
    record, store_local, export, share_pseudonymized. Default ``record,store_local``;
    ``st-agent export`` needs ``export``: ``--consent record,store_local,export``."""
    consent_version: str = "st-agent-local-v1"
    """Version of the consent text the listener agreed to (recorded with the session)."""
    report: bool = True
    """Write report.html (plots and summary) at the end."""
    status_sec: float = 1.0
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
    """Also write each part alone as stems/<part>.wav."""
    osc: str = ""
    """Send state, knobs, phrases, beats and markers as OSC to PORT or HOST:PORT (host
    default 127.0.0.1; another host is allowed but warned about: the state is personal
    data); empty: off. Address space: docs/osc.md."""
    osc_prefix: str = "/st"
    """OSC address prefix of those messages (e.g. /room1/st)."""
    lsl_out: bool = False
    """Offer the state, knobs, phrase and session markers as LSL streams
    (<name>-state, -knobs, -phrases, -markers) for LabRecorder; refused when a stream of
    those names is already on the network."""
    lsl_out_name: str = ""
    """Name prefix of those LSL streams (default st-agent); giving one turns --lsl-out on."""
    calibration: Path | None = None
    """Per-listener arousal map from ``st-agent calibrate`` (JSON): arousal comes from it
    instead of the weighted markers (:mod:`st_agent.biometrics.supervised`)."""
    explore_std: float = 0.0
    """Exploration for off-policy evaluation (OPE, issue 18): each action gets noise of
    this standard deviation (a truncated normal on [-1, 1], in units of --max-delta), so
    the logged transitions let `st-agent ope` evaluate other policies; the knobs stay in
    the bounds. 0: the controller's own actions (deterministic). Typical: 0.05-0.3."""

    # --- one subject across sessions; the recording's mains frequency
    subject: str = ""
    """The listener's pseudonym (letters and digits with a digit, never a name), to join
    their sessions: ``st-agent subjects`` lists them. Empty: a new pseudonym is made and
    registered for this session, and printed with how to reuse it."""
    line_freq: float | None = None
    """Mains frequency where the session is recorded, Hz (50 or 60); stored with the
    recording (a BIDS export needs it)."""

    # --- the live dashboard (st_agent.live.dashboard*)
    dashboard: bool = False
    """Serve a live dashboard (plots, score, controls: override knobs, change target,
    pause, fade out and stop, markers) on this machine; the command prints
    ``dashboard: http://127.0.0.1:<port>/?token=...`` (open it in a browser)."""
    dashboard_host: str = "127.0.0.1"
    """Address the dashboard binds. Another than this machine's (127.0.0.1, localhost,
    ::1) exposes the listener's data to the network: it is allowed because you gave it,
    with a warning."""
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
        if not isinstance(self.board, str) or not self.board.strip():
            raise ValueError(f"board must be a board name or id, got {self.board!r}; "
                             "`st-agent boards` lists them")
        self._check_files()
        resolve_target(self.target)
        from st_agent.live.target_change import check_transition_flags

        check_transition_flags(self.target, self.target_schedule, self.transition_max_step,
                               self.transition_candidates)
        from st_agent.live.session_sound import check_sound

        check_sound(self.sound)
        if self.listener_hears not in ("midi", "audio"):
            raise ValueError(f"--listener-hears must be midi or audio, got "
                             f"{self.listener_hears!r}")
        if self.listener_hears == "audio" and self.board != VIRTUAL_BOARD:
            raise ValueError(f"--listener-hears audio sets what a simulated listener hears "
                             f"and needs --board {VIRTUAL_BOARD}, got --board {self.board!r}")
        check_minutes(self.minutes)
        self.bounds()
        for flag, knobs in (("--start-knobs", self.start_knobs), ("--knobs", self.knobs)):
            if knobs is not None:
                try:
                    Knobs(*knobs)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{flag} takes three knobs (valence, tempo, energy) in "
                                     f"[0, 1], got {knobs!r}: {e}") from e
        for name in ("calibration_sec", "decision_lead_sec", "signal_timeout_sec", "fade_sec",
                     "signal_hold_sec"):
            check_seconds(name, getattr(self, name))
        check_seconds("status_sec", self.status_sec, positive=True)
        check_midi_flags(self.midi_out, self.no_audio, self.play)
        check_fraction("min_confidence", self.min_confidence)
        if isinstance(self.explore_std, bool) or not isinstance(self.explore_std, int | float) \
                or not 0.0 <= self.explore_std <= 2.0:
            raise ValueError(f"--explore-std must be a number in [0, 2] (action units), got "
                             f"{self.explore_std!r}")
        self.consent_scopes()
        self._check_subject()
        self._check_dashboard()
        self._check_network_outputs()
        if not isinstance(self.consent_version, str) or not self.consent_version.strip():
            raise ValueError(f"--consent-version must name the consent text, got "
                             f"{self.consent_version!r}")
        if self.accelerated and self.board != VIRTUAL_BOARD:
            raise ValueError("--accelerated needs --board virtual: a real board streams in "
                             "real time")
        if self.inject_dropout is not None:
            if self.accelerated:
                raise ValueError("--inject-dropout needs a real-time session (not "
                                 "--accelerated)")
            check_dropout(self.inject_dropout)
        if self.listener is not None:
            if self.board != VIRTUAL_BOARD:
                raise ValueError(f"--listener simulates a fitted listener and needs --board "
                                 f"{VIRTUAL_BOARD}, got --board {self.board!r}")
            if not Path(self.listener).is_file():
                raise ValueError(f"--listener {self.listener} does not exist; write one with "
                                 "`st-agent fit-listener`")

    def _check_dashboard(self) -> None:
        """--dashboard, --dashboard-host and --dashboard-port."""
        from st_agent.live.dashboard import check_dashboard_flags

        check_dashboard_flags(self.dashboard, self.dashboard_host, self.dashboard_port)

    def _check_subject(self) -> None:
        """--subject (a pseudonym or empty) and --line-freq."""
        from st_agent.biometrics.session_meta import check_pseudonym

        if not isinstance(self.subject, str):
            raise ValueError(f"--subject must be a pseudonym, got {self.subject!r}")
        if self.subject:
            try:
                check_pseudonym(self.subject)
            except ValueError as e:
                raise ValueError(f"--subject: {e}") from None
        f = self.line_freq
        if f is not None and (isinstance(f, bool) or not isinstance(f, int | float)
                              or not 0 < f <= 1000):
            raise ValueError(f"--line-freq must be the mains frequency in Hz (50 or 60), "
                             f"got {f!r}")

    def _check_network_outputs(self) -> None:
        """--osc, --osc-prefix and --lsl-out-name (:mod:`st_agent.live.osc_out`,
        :mod:`st_agent.live.lsl_out`)."""
        from st_agent.live.common import check_network_outputs

        check_network_outputs(self.osc, self.osc_prefix, self.lsl_out_name)

    def _check_files(self) -> None:
        """The names, paths and plain flags; nothing is created or opened."""
        for flag in ("serial_port", "mac_address", "other_info", "policy"):
            if not isinstance(getattr(self, flag), str):
                raise ValueError(f"--{flag.replace('_', '-')} must be text, got "
                                 f"{getattr(self, flag)!r}")
        for flag in ("play", "accelerated", "report"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be an int >= 0, got {self.seed!r}")
        name = self.name
        if not isinstance(name, str) or (name and (
                name in (".", "..") or any(c in name for c in "/\\\0")
                or name != name.strip() or not name.isprintable())):
            raise ValueError(f"--name must be a plain folder name (no /, \\, leading or "
                             f"trailing spaces, not . or ..), got {name!r}")
        if not isinstance(self.record, str | Path) or not str(self.record).strip():
            raise ValueError(f"--record must be a folder, got {self.record!r}")
        if Path(self.record).exists() and not Path(self.record).is_dir():
            raise ValueError(f"--record {self.record} is a file, not a folder; choose a "
                             "folder with --record")
        if self.soundfont is not None and not Path(self.soundfont).expanduser().is_file():
            raise ValueError(f"--soundfont {self.soundfont} is not a file; pass the path of "
                             "an existing .sf2 General MIDI soundfont, or leave it out")
        if self.key_file is not None and Path(self.key_file).expanduser().is_dir():
            raise ValueError(f"--key-file {self.key_file} is a folder; give the path of a "
                             "key file (created when missing)")

    def consent_scopes(self) -> tuple[str, ...]:
        """The scopes of :attr:`consent`, checked (:func:`st_agent.live.common.parse_consent`)."""
        return parse_consent(self.consent)

    def bounds(self) -> SafetyBounds:
        """The therapist's :class:`SafetyBounds` (ranges and ``max_delta``)."""
        return SafetyBounds(self.valence_range, self.tempo_range, self.energy_range,
                            self.max_delta)


@dataclass
class DemoConfig:
    """The demo (``st-agent demo``): a virtual listener, the bundled composer and policy,
    a few minutes of session on an accelerated clock."""

    policy: str = "calm"
    """Controller: a shipped preset (calm, focus, uplift, energize: the adaptive controller),
    adaptive, pid (tuned), random, fixed, or a trained run folder."""
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
    consent: str = "record,store_local,export"
    """Consent scopes recorded with the demo, comma-separated. The demo's listener is
    simulated, so by default its recording may be exported (``st-agent export``)."""
    key_file: Path | None = None
    """Encrypt the recording at rest with this key file (created when missing)."""
    subject: str = ""
    """Pseudonym of the (simulated) listener; empty: a new one, printed with how to
    reuse it (``st-agent subjects`` lists them)."""
    sound: str = "session"
    """session (default: instruments by the knobs, stereo, reverb and chorus, matched
    loudness) or plain (the earlier sound); as ``st-agent session --sound``."""

    def __post_init__(self) -> None:
        self.session_config()  # validates every setting

    def session_config(self) -> SessionConfig:
        """The :class:`SessionConfig` the demo runs."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        return SessionConfig(
            board=VIRTUAL_BOARD, target=self.target, minutes=self.minutes, policy=self.policy,
            record=self.out, name=self.name or f"demo-{Path(self.policy).name}-{stamp}",
            calibration_sec=self.calibration_sec, accelerated=True, seed=self.seed,
            listener=self.listener, status_sec=30.0, consent=self.consent,
            key_file=self.key_file, subject=self.subject, sound=self.sound)


# --------------------------------------------------------------------------- entry points


def run_session(cfg: SessionConfig, controller: Any, controller_name: str = "",
                on_status: Callable[[SessionStatus], None] | None = None,
                outputs: Sequence[Any] = (),
                on_dashboard: Callable[[str], None] | None = None) -> SessionResult:
    """Run a session; the first Ctrl-C (SIGINT) stops it cleanly, a second aborts.

    ``outputs`` (:class:`~st_agent.live.outputs.SessionOutput`) are fed besides those
    the config asks for (:func:`~st_agent.live.session_outputs.build_outputs`);
    ``on_dashboard`` gets the dashboard's URL (``cfg.dashboard``).
    """
    session = LiveSession(cfg, controller, controller_name, on_status, outputs,
                          on_dashboard)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _handler(signum: int, frame: Any) -> None:
            if session.stop_requested:
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

