"""What a listener responds to: the normalised feature vector of what plays.

Every family of listener models (:mod:`st_agent.listener.family`) is driven by
the same vector ``x`` (:func:`feature_vector`), computed from the
:class:`~st_agent.types.MusicFeatures` *measured* from the rendered phrase,
never from the knobs. Each entry is about [-1, 1]::

    tempo      = (bpm - 105) / 55
    density    = log2(notes_per_sec / 5) / 1.5
    loudness   = (mean_velocity - 73) / 38
    mode       = +1 major, -1 minor
    register   = (mean_pitch - 72) / 8
    slow_minor = [mode is minor] * max(0, -tempo)

**Silence** (a rest phrase, ``None``, or a phrase without notes) is the zero
vector. Music always has ``mode = ±1``, so ``x[3] == 0`` exactly when nothing
plays (:func:`is_silence`); silence is therefore distinguishable from a
neutral phrase, and the families give it its own, measured effect (a pause
after music lowers arousal below rest: Bernardi, Porta & Sleight 2006).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from st_agent.types import MusicFeatures

__all__ = ["FEATURE_NAMES", "N_FEATURES", "feature_matrix", "feature_vector", "is_silence",
           "random_features"]

#: Entries of :func:`feature_vector`, in order.
FEATURE_NAMES = ("tempo", "density", "loudness", "mode", "register", "slow_minor")
N_FEATURES = len(FEATURE_NAMES)
_CLIP = 1.5  # |normalised feature| is clipped here


def feature_vector(features: MusicFeatures | None) -> np.ndarray:
    """Normalised features that drive the listener (module docstring).

    Parameters
    ----------
    features : MusicFeatures or None
        What is playing; ``None`` (or a phrase with no notes) is silence.

    Returns
    -------
    x : ndarray, shape (6,)
        ``tempo, density, loudness, mode, register, slow_minor``
        (:data:`FEATURE_NAMES`), each clipped to [-1.5, 1.5]; all zeros in silence.
    """
    if features is None:
        return np.zeros(N_FEATURES)
    if not isinstance(features, MusicFeatures):
        raise TypeError(f"features must be MusicFeatures or None, got "
                        f"{type(features).__name__}")
    if features.n_notes == 0:
        return np.zeros(N_FEATURES)
    tempo = (features.bpm - 105.0) / 55.0
    density = math.log2(max(features.notes_per_sec, 0.25) / 5.0) / 1.5
    loud = (features.mean_velocity - 73.0) / 38.0
    mode = 1.0 if features.mode == "major" else -1.0
    register = (features.mean_pitch - 72.0) / 8.0
    x = np.clip([tempo, density, loud, mode, register, 0.0], -_CLIP, _CLIP)
    x[5] = (mode < 0) * max(0.0, -x[0])
    return x


def is_silence(x: np.ndarray) -> np.ndarray:
    """Whether feature vectors are silence, shape ``x.shape[:-1]`` (bool).

    Parameters
    ----------
    x : ndarray, shape (..., 6)
        Feature vectors (:func:`feature_vector`).
    """
    return np.asarray(x)[..., 3] == 0


def feature_matrix(features: Sequence[MusicFeatures | None]) -> np.ndarray:
    """Stack :func:`feature_vector` of several phrases, shape (n, 6)."""
    return np.stack([feature_vector(f) for f in features]) if len(features) else \
        np.zeros((0, N_FEATURES))


def random_features(rng: np.random.Generator, duration_sec: float = 8.0) -> MusicFeatures:
    """A random but plausible phrase, for simulations without the composer.

    Ranges follow the renderer's output: 50-160 BPM, 1.5-15 notes/s,
    velocity 35-112, melody mean pitch 62-82, either mode.

    Parameters
    ----------
    rng : numpy.random.Generator
    duration_sec : float
        Phrase length, seconds.

    Returns
    -------
    features : MusicFeatures
    """
    mode = "major" if rng.random() < 0.5 else "minor"
    nps = float(np.exp(rng.uniform(math.log(1.5), math.log(15.0))))
    bpm = float(rng.uniform(50.0, 160.0))
    return MusicFeatures(duration_sec=float(duration_sec), bpm=bpm, notes_per_sec=nps,
                         notes_per_beat=nps * 60.0 / bpm / 2.0, mode=mode,
                         mode_confidence=0.5, key=f"C {mode}",
                         mean_pitch=float(rng.uniform(62.0, 82.0)), pitch_range=12.0,
                         mean_velocity=float(rng.uniform(35.0, 112.0)),
                         n_notes=max(1, round(nps * duration_sec)))
