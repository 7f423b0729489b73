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

**Hearing the audio** (:func:`heard_features`, :func:`audio_feature_vector`;
``VirtualListenerSource(hearing="audio")``, ``st-agent session
--listener-hears audio``): the loudness and density entries come from the
rendered audio (:mod:`st_agent.music.audio_features`) instead of the MIDI:
loudness from the integrated loudness in LUFS, density from the onset rate;
tempo, mode and register stay from the MIDI (the audio measures no key, and
the spectral centroid follows the timbre and the voicing as much as the
melody's register: r = 0.31 with the melody's mean pitch on 24 rendered
phrases). Why these two: loudness and tempo/event rate are the features that
drive rated and physiological arousal most consistently (Gomez & Danuser
2007, Emotion 7(2), tables 3-4: loudness, tempo and rhythmic articulation
with arousal; Schubert 2004, Music Perception 21(4): loudness and tempo
predict continuous arousal). The magnitudes are an assumption, unsourced:
each audio view is the linear map fitted to the MIDI view on 24 phrases of
the bundled composer and renderer (``benchmarks/bench_voices_v2.py``:
``loudness = (LUFS + 39.8) / 9.3``, r = 0.90 with the velocity entry;
``density = log2(onset_rate / 2.6 Hz) / 1.41``, r = 0.88 with the notes/s
entry), so that a phrase's two views agree on average and the listener
models keep their fitted gains; what differs is what the MIDI does not
show (the synthesiser's level per instrument, notes masked by others).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from st_agent.types import MusicFeatures

if TYPE_CHECKING:
    from st_agent.music.audio_features import AudioFeatures

__all__ = ["AUDIO_VIEW", "FEATURE_NAMES", "HEARING", "N_FEATURES", "audio_feature_vector",
           "feature_matrix", "feature_vector", "heard_features", "is_silence",
           "random_features"]

#: What a simulated listener can respond to: the MIDI features or the rendered audio's.
HEARING = ("midi", "audio")
#: The audio view's maps (module docstring; fitted to the MIDI view: assumption, unsourced):
#: loudness entry = (LUFS - ref) / scale; density entry = log2(onsets/s / ref) / scale.
AUDIO_VIEW = {"loudness_ref_lufs": -39.8, "loudness_scale_lu": 9.3,
              "onset_ref_hz": 2.6, "onset_scale_octaves": 1.41}

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


def heard_features(features: MusicFeatures | None, audio: AudioFeatures | None
                   ) -> MusicFeatures | None:
    """``features`` with loudness and density as heard in the audio (module docstring).

    The returned MusicFeatures' ``mean_velocity`` and ``notes_per_sec`` are
    the values whose :func:`feature_vector` entries equal the audio view's, so
    every consumer of MusicFeatures (the listener families, the virtual
    listener's queue) hears the audio unchanged.

    Parameters
    ----------
    features : MusicFeatures or None
        Measured from the phrase's MIDI (None: silence, returned as is).
    audio : AudioFeatures or None
        Measured from its rendered audio; None returns ``features`` unchanged.

    Returns
    -------
    heard : MusicFeatures or None
    """
    if features is None or audio is None or features.n_notes == 0:
        return features
    v = AUDIO_VIEW
    loud = float(np.clip((audio.loudness_lufs - v["loudness_ref_lufs"])
                         / v["loudness_scale_lu"], -_CLIP, _CLIP))
    dens = float(np.clip(math.log2(max(audio.onset_rate_hz, 0.25) / v["onset_ref_hz"])
                         / v["onset_scale_octaves"], -_CLIP, _CLIP))
    return dataclasses.replace(features, mean_velocity=max(0.0, 73.0 + 38.0 * loud),
                               notes_per_sec=5.0 * 2.0 ** (1.5 * dens))


def audio_feature_vector(features: MusicFeatures | None, audio: AudioFeatures | None
                         ) -> np.ndarray:
    """:func:`feature_vector` of the phrase as heard (:func:`heard_features`), shape (6,)."""
    return feature_vector(heard_features(features, audio))


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
