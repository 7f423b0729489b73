"""Loudness of rendered phrases (ITU-R BS.1770 via pyloudnorm), so a session joins without jumps.

A phrase's loudness depends on its instruments, register and density as much as
on its velocities, so consecutive phrases rendered at one gain can jump by
several LU. :func:`match_loudness` sets each phrase to a target loudness that
the energy knob chooses (:func:`session_lufs`: louder with energy, so energy
still sounds like energy, but by a planned amount), with a peak limit so nothing
clips. Loudness in LUFS, gains in dB, audio float in [-1, 1], rates in Hz.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SESSION_LUFS_RANGE", "loudness_lufs", "match_loudness", "session_lufs"]

#: Target loudness (LUFS) at energy 0 and energy 1 for :func:`session_lufs`
#: (assumption, unsourced: an 8 LU range, quiet enough for a -1 dBFS peak limit).
SESSION_LUFS_RANGE = (-26.0, -18.0)


def _check_audio(audio: np.ndarray, rate: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] not in (1, 2)):
        raise ValueError(f"audio must have shape (n,) or (n, 2), got {a.shape}")
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise ValueError(f"rate must be an int in [8000, 192000] Hz, got {rate!r}")
    return a


def loudness_lufs(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness (LUFS, BS.1770-4 gating) of mono or stereo audio.

    Parameters
    ----------
    audio : ndarray, shape (n,) or (n, 2)
        Samples in [-1, 1]; at least 0.4 s.
    rate : int
        Sample rate in Hz.

    Returns
    -------
    lufs : float
        ``-inf`` for silence.
    """
    import pyloudnorm

    a = _check_audio(audio, rate)
    if a.shape[0] < int(0.4 * rate):
        raise ValueError(f"audio must hold at least 0.4 s ({int(0.4 * rate)} samples), "
                         f"got {a.shape[0]}")
    if not np.any(a):
        return -math.inf
    return float(pyloudnorm.Meter(rate).integrated_loudness(a))


def session_lufs(energy: float) -> float:
    """The target loudness of a phrase at ``energy`` in [0, 1] (linear in LUFS over
    :data:`SESSION_LUFS_RANGE`)."""
    if not (isinstance(energy, int | float) and 0.0 <= energy <= 1.0):
        raise ValueError(f"energy must be in [0, 1], got {energy!r}")
    lo, hi = SESSION_LUFS_RANGE
    return lo + (hi - lo) * float(energy)


def match_loudness(audio: np.ndarray, rate: int, target_lufs: float,
                   max_peak: float = 0.89, measured_lufs: float | None = None
                   ) -> tuple[np.ndarray, float]:
    """Scale audio to ``target_lufs``, never letting its peak pass ``max_peak``.

    Parameters
    ----------
    audio : ndarray, shape (n,) or (n, 2)
    rate : int
        Hz.
    target_lufs : float
        Wanted integrated loudness, in [-70, 0].
    max_peak : float
        Largest absolute sample after scaling (0.89 = -1 dBFS).
    measured_lufs : float, optional
        ``loudness_lufs(audio, rate)`` when the caller has it already (it is not
        measured twice); None measures it.

    Returns
    -------
    scaled : ndarray, float32, same shape
    gain_db : float
        The gain applied (0 for silence).
    """
    if not (isinstance(target_lufs, int | float) and -70.0 <= target_lufs <= 0.0):
        raise ValueError(f"target_lufs must be in [-70, 0] LUFS, got {target_lufs!r}")
    if not 0.0 < max_peak <= 1.0:
        raise ValueError(f"max_peak must be in (0, 1], got {max_peak!r}")
    a = _check_audio(audio, rate)
    if measured_lufs is not None and not isinstance(measured_lufs, int | float):
        raise TypeError(f"measured_lufs must be a number or None, got "
                        f"{type(measured_lufs).__name__}")
    now = loudness_lufs(a, rate) if measured_lufs is None else float(measured_lufs)
    if not math.isfinite(now):
        return a.astype(np.float32), 0.0
    gain_db = target_lufs - now
    peak = float(np.max(np.abs(a)))
    if peak * 10 ** (gain_db / 20) > max_peak:
        gain_db = 20 * math.log10(max_peak / peak)
    return (a * 10 ** (gain_db / 20)).astype(np.float32), float(gain_db)
