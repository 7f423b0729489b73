"""Family ``entrainment``: the music's tempo paces breathing, breathing sets arousal.

Model
-----
Breathing rate ``r`` (breaths per minute) relaxes (``tau_breath_sec``) toward
a rate paced by the music: one breath per ``beats_per_breath`` beats, pulled
from the listener's resting rate by ``entrain_strength``. In a pause after
music breathing settles below rest (scaled by the exposure)::

    r* = r_rest + entrain_strength * (bpm / beats_per_breath - r_rest)   (music; in [4, 30])
    r* = r_rest * (1 + 0.25 * silence_arousal * e)                       (silence)
    dr/dt   = (r* - r) / tau_breath
    ds/dt   = (u_a - s) / tau_arousal        (the rest of the appraisal drive)
    dc/dt   = (u_v - c) / tau_valence
    arousal = tanh(baseline_arousal + d_a + breath_arousal * (r - r_rest) / r_rest + s + n_a)
    valence = tanh(baseline_valence + d_v + c + n_v)

Heart rate then follows arousal in the raw-signal listener, with respiratory
sinus arrhythmia at the breathing rate (:mod:`st_agent.listener.virtual`).
Tempo raises breathing rate, ventilation and heart rate (Bernardi, Porta &
Sleight 2006; musicians more than non-musicians, hence the per-listener
``entrain_strength``); music built to slow breathing slowed it and lowered
heart rate and electrodermal activity (Leslie et al. 2019). The pacing rule
(one breath per few beats) and every magnitude are assumptions
(``docs/listener_assumptions.md``). Exact for features held over a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from st_agent.listener.base import (
    SHARED_RANGES,
    Kernel,
    SharedParams,
    clip1,
    sample_shared,
)

__all__ = ["ENTRAINMENT_RANGES", "EntrainmentKernel", "EntrainmentParams",
           "paced_breathing", "sample_entrainment"]

#: Allowed ranges, ``name -> (low, high)``.
ENTRAINMENT_RANGES: dict[str, tuple[float, float]] = SHARED_RANGES | {
    "tau_arousal_sec": (5.0, 120.0),
    "tau_valence_sec": (5.0, 180.0),
    "breath_rest_per_min": (6.0, 24.0),
    "beats_per_breath": (2.0, 12.0),
    "entrain_strength": (0.0, 1.0),
    "tau_breath_sec": (5.0, 120.0),
    "breath_arousal": (0.0, 2.0),
}
_BREATH_MIN, _BREATH_MAX = 4.0, 30.0  # breaths per minute the pacing can reach
_SILENCE_BREATH = 0.25  # relative breathing change per unit of silence_arousal * exposure


@dataclass(frozen=True, repr=False)
class EntrainmentParams(SharedParams):
    """A breathing-entrainment listener (module docstring).

    Parameters
    ----------
    tau_arousal_sec, tau_valence_sec : float
        Time constants of the non-respiratory arousal drive and of valence, s.
    breath_rest_per_min : float
        Resting breathing rate, breaths per minute.
    beats_per_breath : float
        Beats of the music per paced breath.
    entrain_strength : float
        How far breathing moves toward the paced rate, [0, 1].
    tau_breath_sec : float
        Time constant of the breathing rate, seconds.
    breath_arousal : float
        Arousal drive per relative change of the breathing rate.
    **shared
        :class:`~st_agent.listener.base.SharedParams` (here ``arousal_tempo``
        is the direct, non-respiratory tempo effect; population draws keep it small).
    """

    tau_arousal_sec: float = 20.0
    tau_valence_sec: float = 30.0
    breath_rest_per_min: float = 14.0
    beats_per_breath: float = 6.0
    entrain_strength: float = 0.4
    tau_breath_sec: float = 30.0
    breath_arousal: float = 1.0

    RANGES: ClassVar[dict[str, tuple[float, float]]] = ENTRAINMENT_RANGES
    family: ClassVar[str] = "entrainment"


def sample_entrainment(n: int, rng: np.random.Generator) -> list[EntrainmentParams]:
    """Population draws (``docs/listener_assumptions.md``), ``n`` listeners."""
    cols = entrainment_columns(n, rng)
    return [EntrainmentParams(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


def entrainment_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """:func:`sample_entrainment` as columns, ``name -> (n,)`` (the same draws)."""
    return sample_shared(n, rng, _OWN_DRAWS)


#: The family's own draws (after the shared ones): ``(name, low, high, log-uniform)``;
#: ``arousal_tempo`` is drawn again, small: tempo acts mostly through breathing.
_OWN_DRAWS = (("arousal_tempo", 0.0, 0.2, False), ("tau_arousal_sec", 10.0, 40.0, True),
              ("tau_valence_sec", 15.0, 60.0, True), ("breath_rest_per_min", 11.0, 17.0, False),
              ("beats_per_breath", 4.0, 8.0, False), ("entrain_strength", 0.1, 0.6, False),
              ("tau_breath_sec", 15.0, 60.0, True), ("breath_arousal", 0.5, 1.5, False))


def paced_breathing(p: dict[str, np.ndarray], x: np.ndarray, exposure: np.ndarray
                    ) -> np.ndarray:
    """The breathing rate the music paces toward, ``r*`` (module docstring), shape (n,)."""
    rest = p["breath_rest_per_min"]
    bpm = 105.0 + 55.0 * x[:, 0]
    paced = np.minimum(np.maximum(
        rest + p["entrain_strength"] * (bpm / p["beats_per_breath"] - rest), _BREATH_MIN),
        _BREATH_MAX)
    quiet = rest * (1.0 + _SILENCE_BREATH * p["silence_arousal"] * exposure)
    return np.where(x[:, 3] != 0, paced, quiet)


class EntrainmentKernel(Kernel):
    """Vectorised breathing-entrainment dynamics (module docstring)."""

    family: ClassVar[str] = "entrainment"
    params_cls: ClassVar[type] = EntrainmentParams

    def noise_taus(self, p: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)

    def prepare(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return super().prepare(p) | {
            "_tau": np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)}

    def init(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = p["baseline_valence"].shape[0]
        return {"breath": p["breath_rest_per_min"].copy(), "y": np.zeros((n, 2))}

    def step(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
             dt: np.ndarray, u: np.ndarray, playing: np.ndarray, z: np.ndarray | None
             ) -> dict[str, np.ndarray]:
        target = paced_breathing(p, x, s["exposure"])
        al_r = np.exp(-dt / p["tau_breath_sec"])
        al = np.exp(-dt[:, None] / p["_tau"])
        return {"breath": target + (s["breath"] - target) * al_r, "y": u + (s["y"] - u) * al}

    def latent(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        rest, nd = p["breath_rest_per_min"], s["nd"]
        drive = p["_base"] + nd[:, 0:2] + nd[:, 2:4] + s["y"]
        drive[:, 1] += p["breath_arousal"] * (s["breath"] - rest) / rest
        return clip1(np.tanh(drive))

    def breathing(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        return s["breath"]
