"""Opening a session's biometric source and choosing its estimator settings.

A session reads one source: a BrainFlow board (``synthetic`` needs no
hardware) or ``virtual``, a simulated listener streaming raw EEG, ECG and EMG
(:class:`st_agent.listener.virtual.VirtualListenerSource`) that hears the music
the session plays. Fault injection wraps either in a
:class:`st_agent.biometrics.faults.DropoutSource`.

A jam's performers each name a board with its connection (:class:`BoardSpec`), on the
command line (:func:`parse_boards`: ``cyton:/dev/ttyUSB0,muse_2:00:55:DA:B0:12:34``) or
in a small TOML/JSON file (:func:`load_boards_file`), checked together before anything
opens (:func:`check_board_specs`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.live.board_specs import (
    BoardSpec,
    check_board_specs,
    load_boards_file,
    parse_board_item,
    parse_boards,
)
from st_agent.live.common import VIRTUAL_BOARD

if TYPE_CHECKING:
    from st_agent.live.session import SessionConfig

__all__ = [
    "BoardSpec",
    "check_board",
    "check_board_specs",
    "estimator_config",
    "load_boards_file",
    "open_source",
    "parse_board_item",
    "parse_boards",
    "start_source",
]

logger = logging.getLogger(__name__)


def _board_spec(board: str) -> str | int:
    return int(board) if board.strip().isdigit() else board


def check_board(board: str) -> None:
    """Refuse an unknown BrainFlow board before anything loads (``virtual`` passes).

    Raises
    ------
    UnknownBoardError
        Naming the board and how to list the valid ones.
    """
    if board == VIRTUAL_BOARD:
        return
    from st_agent.biometrics.sources import UnknownBoardError, check_source_spec

    try:
        check_source_spec(_board_spec(board))  # also lsl:<name> and file:<path>
    except UnknownBoardError as e:
        raise UnknownBoardError(f"{e}; or {VIRTUAL_BOARD!r} for a simulated listener. "
                                "`st-agent boards` lists every board") from e


def _virtual_source(cfg: SessionConfig) -> Any:
    from st_agent.listener.model import sample_listeners
    from st_agent.listener.virtual import SignalModel, VirtualListenerSource

    if cfg.listener is not None:
        from st_agent.listener.fitting import load_fit

        if not Path(cfg.listener).is_file():
            raise FileNotFoundError(f"listener file {cfg.listener} does not exist; write "
                                    "one with `st-agent fit-listener`")
        params = load_fit(cfg.listener)
    else:
        params = sample_listeners(1, rng=cfg.seed)[0]
    return VirtualListenerSource(
        params, model=SignalModel(chunk_sec=1.0 if cfg.accelerated else 0.25),
        rng=cfg.seed + 1, realtime=not cfg.accelerated,
        hearing=getattr(cfg, "listener_hears", "midi"))  # --listener-hears


def open_source(cfg: SessionConfig) -> Any:
    """The session's biometric source (not started).

    Parameters
    ----------
    cfg : SessionConfig
        ``board`` (and ``serial_port``, ``mac_address``, ``other_info``),
        ``listener``, ``accelerated``, ``seed``, ``inject_dropout``.

    Raises
    ------
    UnknownBoardError
        For a board BrainFlow does not know.
    FileNotFoundError
        When ``cfg.listener`` names no file.
    """
    if cfg.board == VIRTUAL_BOARD:
        src = _virtual_source(cfg)
    else:
        from st_agent.biometrics.sources import make_source

        check_board(cfg.board)
        src = make_source(_board_spec(cfg.board), serial_port=cfg.serial_port or None,
                          mac_address=cfg.mac_address or None,
                          other_info=cfg.other_info or None,
                          realtime=not getattr(cfg, "accelerated", False))
    if cfg.inject_dropout is not None:
        from st_agent.biometrics.faults import DropoutSource

        src = DropoutSource(src, *cfg.inject_dropout)
    return src


def estimator_config(cfg: SessionConfig) -> Any:
    """Estimator settings for the board (and ``cfg.calibration``'s map, if any).

    BrainFlow's synthetic board streams noise that is mostly above 30 Hz and
    hundreds of µV, which the default artifact gates reject window after
    window; for it the gates are opened so the loop can be exercised.
    """
    from st_agent.biometrics.estimator import EstimatorConfig

    ec = EstimatorConfig(calibration_sec=cfg.calibration_sec, reference_model=False)
    calibration = getattr(cfg, "calibration", None)
    if calibration is not None:  # st-agent calibrate's map (SupervisedMapError if bad)
        from st_agent.biometrics.supervised import load_map

        ec.supervised = load_map(calibration)
        logger.info("arousal from the calibration map %s (CV AUC %s)", calibration,
                    ec.supervised.info.get("cv", {}).get("auc"))
    if cfg.board == "synthetic":
        logger.info("synthetic board: artifact gates opened (its EEG is broadband noise)")
        ec.muscle_ratio, ec.max_abs_uv, ec.blink_uv = 1.0, 1e4, 1e5
    return ec


def start_source(source: Any) -> None:
    """Start a biometric source; a board that cannot start says how to list the boards
    and that ``--board virtual`` needs no hardware."""
    try:
        source.start()
    except Exception as e:
        from st_agent.biometrics.sources import SourceError

        if isinstance(e, SourceError):
            raise SourceError(f"{e}. `st-agent boards` lists the boards and their "
                              "ids; --board virtual needs no hardware") from e
        raise
