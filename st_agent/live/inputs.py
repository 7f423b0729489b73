"""Opening a session's biometric source and choosing its estimator settings.

A session reads one source: a BrainFlow board (``synthetic`` needs no
hardware) or ``virtual``, a simulated listener streaming raw EEG, ECG and EMG
(:class:`st_agent.listener.virtual.VirtualListenerSource`) that hears the music
the session plays. Fault injection wraps either in a
:class:`st_agent.biometrics.faults.DropoutSource`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.live.common import VIRTUAL_BOARD

if TYPE_CHECKING:
    from st_agent.live.session import SessionConfig

__all__ = ["check_board", "estimator_config", "open_source"]

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
        rng=cfg.seed + 1, realtime=not cfg.accelerated)


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
                          other_info=cfg.other_info or None)
    if cfg.inject_dropout is not None:
        from st_agent.biometrics.faults import DropoutSource

        src = DropoutSource(src, *cfg.inject_dropout)
    return src


def estimator_config(cfg: SessionConfig) -> Any:
    """Estimator settings for the board.

    BrainFlow's synthetic board streams noise that is mostly above 30 Hz and
    hundreds of µV, which the default artifact gates reject window after
    window; for it the gates are opened so the loop can be exercised.
    """
    from st_agent.biometrics.estimator import EstimatorConfig

    ec = EstimatorConfig(calibration_sec=cfg.calibration_sec, reference_model=False)
    if cfg.board == "synthetic":
        logger.info("synthetic board: artifact gates opened (its EEG is broadband noise)")
        ec.muscle_ratio, ec.max_abs_uv, ec.blink_uv = 1.0, 1e4, 1e5
    return ec
