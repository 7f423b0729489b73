"""Zero-phase filters designed once: what NeuroKit2 and SciPy redo on every call.

NeuroKit2's cleaning functions design their Butterworth filter on every call
and :func:`scipy.signal.sosfiltfilt` solves for its initial state on every call;
at one call per second on a few seconds of signal that is most of the cost. Here
the designs (:func:`design`) and initial states are cached per sampling rate, and
:func:`filtfilt` is :func:`scipy.signal.sosfiltfilt` (odd padding, same pad
length) with the cached state. :func:`neurokit_clean` applies exactly the
filters of NeuroKit2's ``ecg_clean(method="neurokit")``, ``ppg_clean(method=
"elgendi")`` and ``eda_clean(method="neurokit")`` (tests check them against
NeuroKit2).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal

__all__ = ["design", "filtfilt", "neurokit_clean"]


@functools.lru_cache(maxsize=64)
def design(order: int, cutoff: float | tuple[float, float], btype: str, sfreq: float,
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """Butterworth SOS, its steady-state initial conditions and sosfiltfilt's pad length."""
    sos = signal.butter(order, cutoff, btype, fs=sfreq, output="sos")
    zi = signal.sosfilt_zi(sos)  # (n_sections, 2)
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return sos, zi, 3 * ntaps


def filtfilt(sos: np.ndarray, zi: np.ndarray, padlen: int, x: np.ndarray) -> np.ndarray:
    """Forward-backward filtering along the last axis, as ``scipy.signal.sosfiltfilt``.

    Parameters
    ----------
    sos, zi, padlen
        From :func:`design`.
    x : ndarray, shape (..., n_times)
        Signal; ``n_times`` must exceed ``padlen``.

    Returns
    -------
    y : ndarray, same shape as ``x``
    """
    if x.shape[-1] <= padlen:
        raise ValueError(f"signal of {x.shape[-1]} samples is too short for this filter "
                         f"(needs more than {padlen})")
    left, right = x[..., :1], x[..., -1:]
    ext = np.concatenate([2 * left - x[..., padlen:0:-1], x,
                          2 * right - x[..., -2:-(padlen + 2):-1]], axis=-1)
    shape = (zi.shape[0],) + (1,) * (x.ndim - 1) + (2,)
    z = zi.reshape(shape)
    y, _ = signal.sosfilt(sos, ext, axis=-1, zi=z * ext[..., :1])
    y, _ = signal.sosfilt(sos, y[..., ::-1], axis=-1, zi=z * y[..., -1:])
    return y[..., ::-1][..., padlen:-padlen]


def _powerline(x: np.ndarray, sfreq: float, line_hz: float = 50.0) -> np.ndarray:
    """NeuroKit2's powerline filter: a moving average one mains period long, forward-backward."""
    n = int(sfreq / line_hz) if sfreq >= 100 else 2
    b = np.ones(n) / n
    return signal.filtfilt(b, [1.0], x, method="pad")


def neurokit_clean(kind: str, x: np.ndarray, sfreq: float) -> np.ndarray:
    """NeuroKit2's default cleaning of an ECG, PPG or EDA trace, with cached filters.

    Parameters
    ----------
    kind : {"ecg", "ppg", "eda"}
        ECG: 0.5 Hz high-pass (Butterworth, order 5) then the 50 Hz powerline
        moving average; PPG: 0.5-8 Hz band-pass (order 2; Elgendi et al. 2013);
        EDA: 3 Hz low-pass (order 4).
    x : ndarray, shape (n_times,)
        Signal.
    sfreq : float
        Sampling rate, Hz (NeuroKit2 takes it as an integer).

    Returns
    -------
    y : ndarray, shape (n_times,)
    """
    fs = float(round(sfreq))
    if kind == "ecg":
        return _powerline(filtfilt(*design(5, 0.5, "highpass", fs), x), fs)
    if kind == "ppg":
        return filtfilt(*design(2, (0.5, min(8.0, 0.45 * fs)), "bandpass", fs), x)
    if kind == "eda":
        return x if fs <= 6 else filtfilt(*design(4, min(3.0, 0.45 * fs), "lowpass", fs), x)
    raise ValueError(f"kind must be 'ecg', 'ppg' or 'eda', got {kind!r}")
