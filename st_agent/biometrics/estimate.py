"""What the estimator gives per hop: :class:`Estimate`
(:class:`~st_agent.biometrics.estimator.StateEstimator` makes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from st_agent.types import EmotionState

__all__ = ["Estimate"]


@dataclass
class Estimate:
    """One output of the estimator, per hop.

    Parameters
    ----------
    state : EmotionState
        Valence, arousal, confidence and the time of the window's end.
    features : dict of str to float
        Named markers of the window (for logging).
    quality : dict
        Signal-quality flags (see :func:`features_from_window`) plus
        ``calibrating``.
    bad : bool
        The window was rejected; ``state`` is the previous one, held.
    z : dict of str to float
        z-scores of this window against the baseline (empty while calibrating),
        before any smoothing.
    raw_state : EmotionState or None
        This window's own state, before the moving average of
        ``smoothing_sec`` (equal to ``state`` when it is 0); ``None`` for bad
        and calibration windows. For logging and diagnostics.
    """

    state: EmotionState
    features: dict[str, float]
    quality: dict[str, Any]
    bad: bool
    z: dict[str, float] = field(default_factory=dict)
    raw_state: EmotionState | None = None
    log_bands: np.ndarray | None = None
    """ln band power (µV²) per EEG channel and band, shape (n_eeg, n_bands); NaN for bad
    channels. What :mod:`~st_agent.biometrics.supervised` fits."""
