"""A small RGB frame of the closed loop, for ``render_mode="rgb_array"`` (NumPy only).

Left: the valence-arousal plane (valence to the right, arousal up) with the
target region (green), its nominal point, the noise-free state (white) and
the latest estimate (orange). Right: the three knobs as bars (valence, tempo,
energy), blue when the phrase is a rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["FRAME_SHAPE", "loop_frame"]

_H, _W = 128, 176
_PLANE = 128  # the plane is a 128 x 128 square at the left
#: Shape of :func:`loop_frame`'s image, ``(height, width, 3)``.
FRAME_SHAPE = (_H, _W, 3)


def _px(v: float, a: float) -> tuple[int, int]:
    """Plane coordinates (in [-1, 1]) to (row, col) pixels."""
    col = round((np.clip(v, -1, 1) + 1) / 2 * (_PLANE - 1))
    row = round((1 - np.clip(a, -1, 1)) / 2 * (_PLANE - 1))
    return row, col


def _dot(img: np.ndarray, v: float, a: float, color: Sequence[int], r: int = 3) -> None:
    if not (np.isfinite(v) and np.isfinite(a)):
        return
    row, col = _px(v, a)
    img[max(row - r, 0):row + r + 1, max(col - r, 0):col + r + 1] = color


def loop_frame(state: Sequence[float], estimate: Sequence[float],
               region: Sequence[float], nominal: Sequence[float],
               knobs: Sequence[float], rest: bool = False) -> np.ndarray:
    """Draw one frame.

    Parameters
    ----------
    state, estimate : (valence, arousal)
        Noise-free state and the estimator's estimate (NaN: not drawn).
    region : (v_lo, v_hi, a_lo, a_hi)
        Target region.
    nominal : (valence, arousal)
        Target's nominal point.
    knobs : (valence, tempo, energy)
        In [0, 1].
    rest : bool
        Whether the phrase playing is a rest.

    Returns
    -------
    frame : ndarray of uint8, shape (128, 176, 3)
    """
    img = np.full(FRAME_SHAPE, 24, dtype=np.uint8)
    mid = _PLANE // 2
    img[:, mid, :_PLANE] = 70  # axes
    img[mid, :_PLANE] = 70
    v_lo, v_hi, a_lo, a_hi = region
    r0, c0 = _px(v_lo, a_hi)
    r1, c1 = _px(v_hi, a_lo)
    img[r0:r1 + 1, c0:c1 + 1] = (30, 110, 50)
    _dot(img, nominal[0], nominal[1], (60, 220, 90), r=2)
    _dot(img, estimate[0], estimate[1], (240, 150, 40), r=2)
    _dot(img, state[0], state[1], (250, 250, 250), r=3)
    img[:, _PLANE:_PLANE + 2] = 60  # separator
    for k, value in enumerate(knobs):
        x0 = _PLANE + 6 + 14 * k
        top = round((1 - float(np.clip(value, 0, 1))) * (_H - 8)) + 4
        color = (70, 120, 230) if rest else (200, 200, 200)
        img[top:_H - 4, x0:x0 + 10] = color
    return img
