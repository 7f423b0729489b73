"""Family ``two_timescale``: a response delay, then fast and slow arousal components.

Model
-----
The appraisal drives ``u_v, u_a`` (:func:`~st_agent.listener.base.appraisal`)
first pass a delay stage (a first-order lag with time constant
``tau_delay_sec``: the response starts seconds after the music changes, with
an S-shaped onset rather than a jump in slope). The delayed arousal drive
``y_a`` then feeds two components in parallel, a fast one (``tau_fast_sec``)
and a slow one (``tau_slow_sec``), mixed by ``fast_weight``; valence has one
component (``tau_valence_sec``). The saturation comes *after* the dynamics::

    dy/dt   = (u - y) / tau_delay                 (valence and arousal)
    df/dt   = (y_a - f) / tau_fast,   dg/dt = (y_a - g) / tau_slow
    dc/dt   = (y_v - c) / tau_valence
    arousal = tanh(baseline_arousal + d_a + w f + (1 - w) g + n_a)
    valence = tanh(baseline_valence + d_v + c + n_v)

``n`` is Ornstein-Uhlenbeck state noise (std ``noise_std``; time constants
``tau_fast_sec`` and ``tau_valence_sec``). The update is exact for features
held over a step (:func:`~st_agent.listener.base.cascade`). A fast and a slow
(phasic and tonic) component of autonomic responses, and a lag of seconds,
are the assumptions here (``docs/listener_assumptions.md``).
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

__all__ = ["TWO_TIMESCALE_RANGES", "TwoTimescaleKernel", "TwoTimescaleParams",
           "sample_two_timescale"]

#: Allowed ranges, ``name -> (low, high)``.
TWO_TIMESCALE_RANGES: dict[str, tuple[float, float]] = SHARED_RANGES | {
    "tau_delay_sec": (0.5, 8.0),
    "tau_fast_sec": (10.0, 60.0),
    "tau_slow_sec": (60.0, 900.0),
    "fast_weight": (0.0, 1.0),
    "tau_valence_sec": (10.0, 180.0),
}


@dataclass(frozen=True, repr=False)
class TwoTimescaleParams(SharedParams):
    """A delayed two-timescale listener (module docstring).

    Parameters
    ----------
    tau_delay_sec : float
        Time constant of the delay stage, seconds.
    tau_fast_sec, tau_slow_sec : float
        Time constants of the fast and slow arousal components, seconds.
    fast_weight : float
        Share of the fast component in arousal, [0, 1].
    tau_valence_sec : float
        Time constant of valence, seconds.
    **shared
        :class:`~st_agent.listener.base.SharedParams`.
    """

    tau_delay_sec: float = 4.0
    tau_fast_sec: float = 15.0
    tau_slow_sec: float = 180.0
    fast_weight: float = 0.6
    tau_valence_sec: float = 30.0

    RANGES: ClassVar[dict[str, tuple[float, float]]] = TWO_TIMESCALE_RANGES
    family: ClassVar[str] = "two_timescale"


def sample_two_timescale(n: int, rng: np.random.Generator) -> list[TwoTimescaleParams]:
    """Population draws (``docs/listener_assumptions.md``), ``n`` listeners."""
    cols = two_timescale_columns(n, rng)
    return [TwoTimescaleParams(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


def two_timescale_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """:func:`sample_two_timescale` as columns, ``name -> (n,)`` (the same draws)."""
    return sample_shared(n, rng, _OWN_DRAWS)


#: The family's own draws (after the shared ones): ``(name, low, high, log-uniform)``.
_OWN_DRAWS = (("tau_delay_sec", 2.0, 8.0, True), ("tau_fast_sec", 10.0, 30.0, True),
              ("tau_slow_sec", 90.0, 400.0, True), ("fast_weight", 0.3, 0.8, False),
              ("tau_valence_sec", 15.0, 60.0, True))


class TwoTimescaleKernel(Kernel):
    """Vectorised delayed two-timescale dynamics (module docstring)."""

    family: ClassVar[str] = "two_timescale"
    params_cls: ClassVar[type] = TwoTimescaleParams

    def noise_taus(self, p: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([p["tau_valence_sec"], p["tau_fast_sec"]], axis=-1)

    def prepare(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return super().prepare(p) | {
            # components: valence, fast arousal, slow arousal
            "_tau3": np.stack([p["tau_valence_sec"], p["tau_fast_sec"], p["tau_slow_sec"]],
                              axis=-1),
            "_td": p["tau_delay_sec"][:, None]}

    def init(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = p["baseline_valence"].shape[0]
        return {"delayed": np.zeros((n, 3)), "comp": np.zeros((n, 3))}

    def step(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
             dt: np.ndarray, u: np.ndarray, playing: np.ndarray, z: np.ndarray | None
             ) -> dict[str, np.ndarray]:
        # the delay stage of (valence, arousal, arousal) feeds (valence, fast, slow)
        delayed, comp = cascade(s["delayed"], s["comp"], u[:, [0, 1, 1]], p["_td"], p["_tau3"],
                                dt[:, None])
        return {"delayed": delayed, "comp": comp}

    def latent(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        c, w, nd = s["comp"], p["fast_weight"], s["nd"]
        drive = p["_base"] + nd[:, 0:2] + nd[:, 2:4]
        drive[:, 0] += c[:, 0]
        drive[:, 1] += w * c[:, 1] + (1 - w) * c[:, 2]
        return clip1(np.tanh(drive))
