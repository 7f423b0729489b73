"""What the live session, the jam and the reports share.

Small, light helpers (no torch, mne or brainflow at import): the phrase on the
session clock (:class:`Playing`), the reason of a knob change in words
(:func:`explain_change`), the checks of user settings the configs run before
anything is created, and the file helpers every live output uses.
"""

from __future__ import annotations

import base64
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.types import Knobs, MusicFeatures, Phrase

__all__ = ["DEFAULT_CONSENT", "VIRTUAL_BOARD", "Playing", "check_dropout", "check_fraction",
           "check_key_file",
           "check_minutes", "check_seconds", "check_writable", "explain_change", "jsonable",
           "load_or_create_key", "open_player", "parse_consent", "png_base64",
           "read_first_chunk"]

logger = logging.getLogger(__name__)

#: Boards that are not BrainFlow boards.
VIRTUAL_BOARD = "virtual"

#: What a session or jam records as consented to, unless ``--consent`` says otherwise:
#: recording and keeping the data on this machine. Export (``st-agent export``) needs the
#: listener's explicit consent: ``--consent record,store_local,export``.
DEFAULT_CONSENT = "record,store_local"


@dataclass
class Playing:
    """A phrase on the session clock.

    Parameters
    ----------
    phrase : Phrase
        What was composed (for a jam: the first voice).
    features : MusicFeatures
        Measured from ``pm`` (for a jam: the mix).
    pm : pretty_midi.PrettyMIDI
        The rendered phrase.
    start_sec : float
        Session time at which it starts, seconds.
    reason : str
        Why its knobs are what they are, in words.
    abc : str
        The whole tune when it is more than ``phrase`` (a jam's voices).
    """

    phrase: Phrase
    features: MusicFeatures
    pm: Any
    start_sec: float
    reason: str = ""
    abc: str = ""

    @property
    def end_sec(self) -> float:
        """Session time at which it ends, seconds."""
        return self.start_sec + self.features.duration_sec


def explain_change(old: Knobs, new: Knobs, state: tuple[float, float] | None,
                   target: tuple[float, float], tol: float = 0.005, *,
                   action: Sequence[float] | None = None, bounds: Any = None,
                   info: dict[str, Any] | None = None) -> list[str]:
    """Each knob change in words: what the controller used, and the limits that shaped it.

    The texts of :func:`st_agent.live.explain.explain_decision` (its module docstring
    says what each kind of controller's reason states); a reason never contradicts
    the direction of its change.

    Parameters
    ----------
    old, new : Knobs
        Knobs before and after the decision.
    state : (float, float) or None
        Estimated (valence, arousal), estimator units; None without a usable estimate.
    target : (float, float) or TargetPoint
        Target (valence, arousal); a TargetPoint carries its region.
    tol : float
        Changes up to this (knob units) are not reported.
    action : array-like, shape (3,), optional
        The controller's action (fraction of ``max_delta``), for the rate limit and
        bound it met.
    bounds : SafetyBounds, optional
        The session's bounds (default: full range, ``max_delta`` 0.25).
    info : dict, optional
        What the controller's decision used
        (:func:`st_agent.live.explain.controller_info`); None: it exposes nothing,
        and the reason says so.

    Returns
    -------
    reasons : list of str
        One entry per knob that moved (or that a bound kept from moving).

    Examples
    --------
    >>> words = explain_change(Knobs(0.5, 0.55, 0.5), Knobs(0.5, 0.43, 0.5), (0.1, 0.62),
    ...                        (0.2, -0.5))
    >>> words[0].split("; ")[1]
    'arousal +0.62 above target -0.50'
    """
    from st_agent.live.explain import explain_decision

    return [r.text for r in explain_decision(old, new, state, target, action=action,
                                             bounds=bounds, info=info, tol=tol)]


# --------------------------------------------------------------------------- checks


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_minutes(minutes: Any) -> None:
    """Raise ``ValueError`` unless ``minutes`` is a positive finite number."""
    if not (_is_number(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")


def check_seconds(name: str, value: Any, positive: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number of seconds >= 0 (> 0)."""
    if not (_is_number(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a number of seconds {'>' if positive else '>='} 0, "
                         f"got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1]."""
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_dropout(value: Sequence[float]) -> None:
    """Raise ``ValueError`` unless ``(start_sec, duration_sec)`` is >= 0 and > 0."""
    start, duration = value
    if not (_is_number(start) and start >= 0 and _is_number(duration) and duration > 0):
        raise ValueError(f"--inject-dropout needs start_sec >= 0 and duration_sec > 0, got "
                         f"{tuple(value)!r}")


def parse_consent(text: str) -> tuple[str, ...]:
    """The consent scopes of ``--consent`` (comma-separated), checked.

    Parameters
    ----------
    text : str
        E.g. ``"record,store_local,export"``; scopes from
        :data:`st_agent.biometrics.recording.CONSENT_SCOPES`.

    Returns
    -------
    scopes : tuple of str
        In the order given, without repeats.

    Raises
    ------
    ValueError
        For an unknown scope, or without ``record`` (a session records).
    """
    from st_agent.biometrics.recording import CONSENT_SCOPES

    if not isinstance(text, str):
        raise ValueError(f"--consent must be comma-separated scopes, got {text!r}")
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in CONSENT_SCOPES]
    if unknown:
        raise ValueError(f"--consent {text!r}: unknown scope(s) {unknown}; give "
                         f"comma-separated scopes from {list(CONSENT_SCOPES)}, e.g. "
                         "record,store_local,export")
    if "record" not in scopes:
        raise ValueError(f"--consent {text!r} does not include 'record': a session records "
                         "the signals; without the listener's consent to record, do not run "
                         "one")
    return scopes


def check_network_outputs(osc: str, osc_prefix: str, lsl_out_name: str) -> None:
    """``--osc``, ``--osc-prefix`` and ``--lsl-out-name`` of a session or a jam
    (:mod:`st_agent.live.osc_out`, :mod:`st_agent.live.lsl_out`).

    Raises
    ------
    st_agent.errors.UsageError
        Naming the value and the form expected.
    """
    from st_agent.live.lsl_out import check_lsl_prefix
    from st_agent.live.osc_out import check_osc_address, parse_osc_target

    if osc:
        parse_osc_target(osc)
    check_osc_address(osc_prefix)
    if lsl_out_name:
        check_lsl_prefix(lsl_out_name)


def check_writable(folder: Path) -> None:
    """Refuse before starting when ``folder`` cannot hold a recording (creates it).

    Raises
    ------
    OSError
        Naming the folder and the flag that chooses another.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot record into {folder}: {e.strerror or e}; choose a writable "
                      "folder with --record") from e


# --------------------------------------------------------------------------- running


def load_or_create_key(key_file: Path | None) -> bytes | None:
    """The recording key in ``key_file`` (created when missing); None without a file.

    Raises
    ------
    EncryptionKeyError
        If ``key_file`` is a folder, a device, unreadable or not a key file, or
        cannot be created; the message says what the path is and what was expected.
    """
    if key_file is None:
        return None
    from st_agent.biometrics.recording import create_key_file, load_key_file

    path = Path(key_file).expanduser()
    if path.exists() or path.is_symlink():
        return load_key_file(path)
    return create_key_file(path)


def check_key_file(key_file: Path | None) -> None:
    """Refuse a ``--key-file`` that cannot work, before anything is created.

    An existing path must be a valid key file (it is read, not changed); a new
    one must be creatable: the nearest existing parent is a writable folder.

    Raises
    ------
    EncryptionKeyError
        Naming the path, what it is and what was expected.
    """
    if key_file is None:
        return
    from st_agent.biometrics.session_meta import EncryptionKeyError

    path = Path(key_file).expanduser()
    if path.exists() or path.is_symlink():
        load_or_create_key(path)
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EncryptionKeyError(
            f"cannot create key file {path}: {parent} is "
            + ("not a folder" if not parent.is_dir() else "not writable")
            + "; choose a writable path for --key-file")


def open_player(soundfont: Path | None = None, settings: dict[str, Any] | None = None
                ) -> Any:
    """A :class:`~st_agent.music.render.LivePlayer`, or None (with a warning) without an
    audio device: the WAV is written either way. ``settings``: more FluidSynth settings
    (the session sound's reverb and chorus, :func:`st_agent.live.session_sound.player_settings`)."""
    from st_agent.music.render import AudioDeviceError, LivePlayer

    try:
        return LivePlayer(soundfont, settings=settings)
    except AudioDeviceError as e:
        logger.warning("--play: %s Falling back to the WAV only.", e)
        return None


def read_first_chunk(source: Any, what: str, timeout_sec: float = 10.0) -> Any:
    """The first chunk of a started source.

    Raises
    ------
    RuntimeError
        When nothing arrives within ``timeout_sec``; ``what`` names the board.
    """
    import time

    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        chunk = source.read(timeout_sec=0.5)
        if chunk is not None:
            return chunk
    raise RuntimeError(f"{what} delivered no samples in {timeout_sec:.0f} s; check that it "
                       "is on and streaming")


# --------------------------------------------------------------------------- files


def jsonable(x: Any) -> Any:
    """``x`` with paths as strings, NumPy scalars as Python ones and non-finite floats as
    None, for ``json.dumps``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def png_base64(fig: Any, path: Path) -> str:
    """Save a Matplotlib figure as PNG at ``path``; return it base64-encoded (for a
    ``data:`` URL in a self-contained report)."""
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return base64.b64encode(path.read_bytes()).decode("ascii")
