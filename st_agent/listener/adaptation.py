"""Family ``adaptation``: adaptation to the sustained level, arousal rise on a change.

Model
-----
While music plays, an adapted level ``m`` follows the arousal drive ``u_a``
(:func:`~st_agent.listener.base.appraisal`) with time constant
``adapt_tau_sec``, and arousal responds to the drive *relative to that level*:
a sustained setting loses ``adapt_strength`` of its effect (habituation to
the level, calming and arousing alike), and a step in the music produces an
overshoot. Separately, every change of the music (a new phrase that differs
from the previous one, or music starting after silence) adds a brief
*novelty* rise to arousal, ``novelty_gain * min(|dx|, 2)``, which decays with
``novelty_tau_sec``::

    dm/dt   = (u_a - m) / adapt_tau                       (music; m decays to 0 in silence)
    ds/dt   = (u_a - adapt_strength * m - s) / tau_arousal  (music; silence: (u_a - s) / tau)
    dc/dt   = (u_v - c) / tau_valence
    arousal = tanh(baseline_arousal + d_a + s + nu + n_a)
    valence = tanh(baseline_valence + d_v + c + n_v)

``|dx|`` is the Euclidean change of (tempo, density, loudness, mode / 2,
register) between consecutive phrases. A pause after music keeps its
measured effect (the silence drive is not adapted). Adaptation-level theory
(Helson 1964) and novelty-driven arousal (Berlyne 1971) are the hypotheses
this family stands for; Bernardi et al. (2006) saw no habituation, so it is
an alternative, not the population's default (``docs/listener_assumptions.md``).
The update is exact for features held over a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from st_agent.listener.base import (
    SHARED_RANGES,
    Kernel,
    SharedParams,
    cascade,
    clip1,
    sample_shared,
)
from st_agent.listener.features import N_FEATURES

__all__ = ["ADAPTATION_RANGES", "AdaptationKernel", "AdaptationParams", "change_size",
           "sample_adaptation"]

#: Allowed ranges, ``name -> (low, high)``.
ADAPTATION_RANGES: dict[str, tuple[float, float]] = SHARED_RANGES | {
    "tau_arousal_sec": (5.0, 120.0),
    "tau_valence_sec": (5.0, 180.0),
    "adapt_strength": (0.0, 0.9),
    "adapt_tau_sec": (20.0, 600.0),
    "novelty_gain": (0.0, 1.0),
    "novelty_tau_sec": (2.0, 60.0),
}
_CHANGE_W = np.array([1.0, 1.0, 1.0, 0.25, 1.0, 0.0])  # squared weights; mode change 2 -> 1


@dataclass(frozen=True, repr=False)
class AdaptationParams(SharedParams):
    """An adaptation-to-level listener with change-triggered arousal (module docstring).

    Parameters
    ----------
    tau_arousal_sec, tau_valence_sec : float
        Time constants of arousal and valence, seconds.
    adapt_strength : float
        Share of a sustained arousal drive lost to adaptation, [0, 0.9].
    adapt_tau_sec : float
        Time constant of the adapted level, seconds.
    novelty_gain : float
        Arousal rise per unit of change of the music (before ``tanh``).
    novelty_tau_sec : float
        Decay time constant of that rise, seconds.
    **shared
        :class:`~st_agent.listener.base.SharedParams`.
    """

    tau_arousal_sec: float = 20.0
    tau_valence_sec: float = 30.0
    adapt_strength: float = 0.5
    adapt_tau_sec: float = 90.0
    novelty_gain: float = 0.3
    novelty_tau_sec: float = 10.0

    RANGES: ClassVar[dict[str, tuple[float, float]]] = ADAPTATION_RANGES
    family: ClassVar[str] = "adaptation"


def sample_adaptation(n: int, rng: np.random.Generator) -> list[AdaptationParams]:
    """Population draws (``docs/listener_assumptions.md``), ``n`` listeners."""
    cols = adaptation_columns(n, rng)
    return [AdaptationParams(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


def adaptation_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """:func:`sample_adaptation` as columns, ``name -> (n,)`` (the same draws)."""
    return sample_shared(n, rng, _OWN_DRAWS)


#: The family's own draws (after the shared ones): ``(name, low, high, log-uniform)``.
_OWN_DRAWS = (("tau_arousal_sec", 10.0, 40.0, True), ("tau_valence_sec", 15.0, 60.0, True),
              ("adapt_strength", 0.2, 0.7, False), ("adapt_tau_sec", 40.0, 180.0, True),
              ("novelty_gain", 0.1, 0.5, False), ("novelty_tau_sec", 5.0, 20.0, True))


def change_size(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """How much the music changed, ``|dx|`` (module docstring), shape (n,)."""
    return np.sqrt(np.sum(_CHANGE_W * (x - prev) ** 2, axis=-1))


class AdaptationKernel(Kernel):
    """Vectorised adaptation-to-level dynamics (module docstring)."""

    family: ClassVar[str] = "adaptation"
    params_cls: ClassVar[type] = AdaptationParams

    def noise_taus(self, p: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)

    def init(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = p["baseline_valence"].shape[0]
        zero = np.zeros(n)
        return {"level": zero, "y": np.zeros((n, 2)), "novelty": zero,
                "prev": np.zeros((n, N_FEATURES))}

    def step(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
             dt: np.ndarray, u: np.ndarray, playing: np.ndarray, z: np.ndarray | None
             ) -> dict[str, np.ndarray]:
        ua = u[:, 1]
        # a change of the music (music after silence included) adds a brief arousal rise
        jump = np.where(playing, np.minimum(change_size(x, s["prev"]), 2.0), 0.0)
        novelty = (s["novelty"] + p["novelty_gain"] * jump) * np.exp(-dt / p["novelty_tau_sec"])
        # in music arousal follows the drive minus the adapted level; in silence the plain
        # (silence) drive, while the level decays
        level, sa = cascade(s["level"], s["y"][:, 1], np.where(playing, ua, 0.0),
                            p["adapt_tau_sec"], p["tau_arousal_sec"], dt,
                            gain=np.where(playing, -p["adapt_strength"], 0.0), offset=ua)
        y = np.empty_like(u)
        y[:, 0] = u[:, 0] + (s["y"][:, 0] - u[:, 0]) * np.exp(-dt / p["tau_valence_sec"])
        y[:, 1] = sa
        return {"level": level, "y": y, "novelty": novelty, "prev": x.copy()}

    def latent(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        nd = s["nd"]
        drive = p["_base"] + nd[:, 0:2] + nd[:, 2:4] + s["y"]
        drive[:, 1] += s["novelty"]
        return clip1(np.tanh(drive))
