"""Family ``first_order``: a first-order lag toward a saturating driven target.

The project's original listener model, with the corrections of issue 21
(silence after music lowers arousal; habituation weakens only the arousing
drive, so varying the music is not a way to calm; minor-preferring listeners,
tempo -> valence and slow-minor agitation through the shared appraisal of
:mod:`st_agent.listener.base`).

Model
-----
With the appraisal drives ``u_v, u_a`` (:func:`~st_agent.listener.base.appraisal`),
habituation ``h`` (a running mean ``m`` of ``x`` with time constant
``habituation_tau_sec`` measures how familiar the material is)::

    h = habituation_strength * exp(-|x - m|^2 / (2 * 0.5^2))   while music plays
    target_a = tanh(baseline_arousal + d_a + (1 - h) * max(u_a, 0) + min(u_a, 0))
    target_v = tanh(baseline_valence + d_v + u_v)
    a <- alpha_a * a + (1 - alpha_a) * target_a + noise_std * sqrt(1 - alpha_a^2) * N(0, 1)

with ``alpha = exp(-dt / tau)`` (the same for ``v``). Habituation of the
orienting (arousing) response to repeated material follows Sokolov (1963);
Bernardi et al. (2006) saw no habituation of the tempo-driven responses over
their 2-4 min tracks, so the calming part of the drive does not habituate.
Without noise and drift the state converges to the target whatever the step
size (the update is exact for features held over ``dt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from st_agent.listener.base import (
    SHARED_RANGES,
    Kernel,
    SharedParams,
    appraisal,
    clip1,
    sample_shared,
)
from st_agent.listener.features import N_FEATURES, feature_vector
from st_agent.types import MusicFeatures

__all__ = ["PARAM_RANGES", "FirstOrderKernel", "ListenerParams", "ListenerState",
           "initial_state", "sample_listeners", "simulate", "step"]

_HAB_WIDTH = 0.5  # feature distance at which material stops feeling familiar

#: Allowed range of every first-order parameter, ``name -> (low, high)``.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    **{k: SHARED_RANGES[k] for k in (
        "baseline_valence", "baseline_arousal", "arousal_tempo", "arousal_density",
        "arousal_loudness", "valence_mode", "valence_register", "preference")},
    "tau_arousal_sec": (5.0, 120.0),
    "tau_valence_sec": (5.0, 180.0),
    "habituation_strength": (0.0, 0.9),
    "habituation_tau_sec": (10.0, 600.0),
    **{k: SHARED_RANGES[k] for k in ("drift_std", "drift_tau_sec", "noise_std",
                                     "valence_tempo", "slow_minor_arousal",
                                     "silence_arousal", "exposure_tau_sec")},
}


@dataclass(frozen=True, repr=False)
class ListenerParams(SharedParams):
    """A first-order listener; the shared parameters are those of :class:`SharedParams`.

    Parameters
    ----------
    tau_arousal_sec, tau_valence_sec : float
        Time constants of the first-order dynamics, seconds.
    habituation_strength : float
        Largest fraction of the arousing drive lost to fully familiar material
        (the calming drive and valence do not habituate).
    habituation_tau_sec : float
        Time constant of the running mean of the features, seconds.
    **shared
        :class:`~st_agent.listener.base.SharedParams` (baselines, appraisal,
        silence, drift, noise). The defaults of the newer ones
        (``valence_tempo``, ``slow_minor_arousal``, ``silence_arousal``) are 0:
        ``ListenerParams()`` is the original default listener; population
        draws (:func:`sample_listeners`) vary them.

    Raises
    ------
    ValueError
        Naming the parameter, its allowed range (:data:`PARAM_RANGES`) and the value.
    """

    tau_arousal_sec: float = 20.0
    tau_valence_sec: float = 30.0
    habituation_strength: float = 0.2
    habituation_tau_sec: float = 90.0

    RANGES: ClassVar[dict[str, tuple[float, float]]] = PARAM_RANGES
    family: ClassVar[str] = "first_order"


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return int(n)


def sample_listeners(n: int, rng: np.random.Generator | int | None = None,
                     ) -> list[ListenerParams]:
    """Draw ``n`` first-order listeners from the population (``docs/listener_assumptions.md``).

    Parameters
    ----------
    n : int
        Number of listeners, >= 1.
    rng : numpy.random.Generator or int or None
        Source of randomness (or a seed); the same seed gives the same listeners.

    Returns
    -------
    listeners : list of ListenerParams
    """
    n = _check_n(n)
    cols = first_order_columns(n, np.random.default_rng(rng))
    return [ListenerParams(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


def first_order_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """:func:`sample_listeners` as columns, ``name -> (n,)`` (the same draws, no objects)."""
    return sample_shared(n, rng, _OWN_DRAWS)


#: The family's own draws (after the shared ones): ``(name, low, high, log-uniform)``.
_OWN_DRAWS = (("tau_arousal_sec", 10.0, 40.0, True), ("tau_valence_sec", 15.0, 60.0, True),
              ("habituation_strength", 0.0, 0.4, False),
              ("habituation_tau_sec", 30.0, 200.0, True))


# --------------------------------------------------------------------------- dynamics


@dataclass
class ListenerState:
    """Latent state of one first-order listener (mutable; :func:`step` replaces it).

    Parameters
    ----------
    valence, arousal : float
        Latent valence and arousal in (-1, 1).
    familiar : ndarray, shape (6,)
        Running mean of the feature vector (habituation memory).
    drift : ndarray, shape (2,)
        Current drift of the (valence, arousal) baselines.
    t_sec : float
        Simulated time.
    exposure : float
        Exposure to music so far, in [0, 1] (:mod:`st_agent.listener.base`).
    """

    valence: float
    arousal: float
    familiar: np.ndarray
    drift: np.ndarray
    t_sec: float = 0.0
    exposure: float = 0.0

    def copy(self) -> ListenerState:
        """Independent copy."""
        return ListenerState(self.valence, self.arousal, self.familiar.copy(),
                             self.drift.copy(), self.t_sec, self.exposure)


def initial_state(params: ListenerParams) -> ListenerState:
    """The resting state: ``tanh`` of the baselines, no drift, familiarity or exposure."""
    v, a = params.rest_state
    return ListenerState(v, a, np.zeros(N_FEATURES), np.zeros(2), 0.0, 0.0)


def _targets(p: dict[str, Any], x: np.ndarray, familiar: np.ndarray, drift: np.ndarray,
             exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Driven targets (valence, arousal), shapes (...,); scalars or arrays.

    ``p`` maps parameter names to floats or arrays of shape (N,); ``x`` and
    ``familiar`` have shape (..., 6); ``drift`` shape (..., 2); ``exposure`` (...,).
    """
    u_v, u_a, playing = appraisal(p, x, exposure)
    dist2 = np.sum((x - familiar) ** 2, axis=-1)
    h = p["habituation_strength"] * np.exp(-dist2 / (2 * _HAB_WIDTH ** 2)) * playing
    # habituation weakens the arousing drive only: repeating calm music stays calming
    u_a = np.where(u_a > 0, (1 - h) * u_a, u_a)
    tv = np.tanh(p["baseline_valence"] + drift[..., 0] + u_v)
    ta = np.tanh(p["baseline_arousal"] + drift[..., 1] + u_a)
    return tv, ta


class FirstOrderKernel(Kernel):
    """Vectorised first-order dynamics (module docstring)."""

    family: ClassVar[str] = "first_order"
    params_cls: ClassVar[type] = ListenerParams

    def noise_taus(self, p: dict[str, np.ndarray]) -> np.ndarray:
        # the state noise enters the update directly (not an OU state); unused
        return np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)

    def prepare(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return super().prepare(p) | {
            "_tau": np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)}

    def init(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = p["baseline_valence"].shape[0]
        return {"va": np.tanh(p["_base"]), "familiar": np.zeros((n, N_FEATURES))}

    def step(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
             dt: np.ndarray, u: np.ndarray, playing: np.ndarray, z: np.ndarray | None
             ) -> dict[str, np.ndarray]:
        dist2 = np.sum((x - s["familiar"]) ** 2, axis=-1)
        h = p["habituation_strength"] * np.exp(-dist2 / (2 * _HAB_WIDTH ** 2)) * playing
        ua = u[:, 1]
        u = u.copy()
        u[:, 1] = np.where(ua > 0, (1 - h) * ua, ua)  # only the arousing drive habituates
        target = np.tanh(p["_base"] + s["nd"][:, 2:4] + u)  # drift at the step's start
        al = np.exp(-dt[:, None] / p["_tau"])
        va = al * s["va"] + (1 - al) * target
        if z is not None:
            va = va + p["noise_std"][:, None] * np.sqrt(1 - al ** 2) * z
        be = np.exp(-dt / p["habituation_tau_sec"])[:, None]
        return {"va": clip1(va), "familiar": be * s["familiar"] + (1 - be) * x}

    def latent(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        return s["va"]


_KERNEL = FirstOrderKernel()


def _check_dt(dt_sec: float) -> float:
    if not (isinstance(dt_sec, int | float) and math.isfinite(dt_sec) and dt_sec > 0):
        raise ValueError(f"dt_sec must be a positive number of seconds, got {dt_sec!r}")
    return float(dt_sec)


def _arrays(params: ListenerParams) -> dict[str, np.ndarray]:
    p = {k: np.array([v]) for k, v in params.as_dict().items()}
    return p | _KERNEL.prepare(p)


def step(params: ListenerParams, state: ListenerState, features: MusicFeatures | None,
         dt_sec: float, rng: np.random.Generator | None = None) -> ListenerState:
    """Advance one first-order listener by ``dt_sec`` while ``features`` play.

    Parameters
    ----------
    params : ListenerParams
    state : ListenerState
        State at the start of the step (not modified).
    features : MusicFeatures or None
        What plays during the step; ``None`` is silence.
    dt_sec : float
        Step length in seconds (> 0); the update is exact for any length.
    rng : numpy.random.Generator or None
        Noise and drift source; ``None`` gives the deterministic (noise- and
        drift-free) dynamics.

    Returns
    -------
    state : ListenerState
        The state at ``t_sec + dt_sec``.
    """
    if not isinstance(params, ListenerParams):
        raise TypeError(f"params must be a ListenerParams, got {type(params).__name__}")
    dt = _check_dt(dt_sec)
    s = {"va": np.array([[state.valence, state.arousal]]),
         "familiar": state.familiar[None, :],
         "nd": np.concatenate([[0.0, 0.0], state.drift])[None, :],
         "exposure": np.array([state.exposure])}
    z = None if rng is None else rng.standard_normal(4)[None, :]
    new = _KERNEL.step_all(_arrays(params), s, feature_vector(features)[None, :],
                           np.array([dt]), z)
    return ListenerState(float(new["va"][0, 0]), float(new["va"][0, 1]), new["familiar"][0],
                         new["nd"][0, 2:4].copy(), state.t_sec + dt, float(new["exposure"][0]))


def simulate(params: ListenerParams, x: np.ndarray, dt_sec: float,
             state: ListenerState | None = None) -> np.ndarray:
    """Deterministic (noise- and drift-free) trajectory on a regular grid.

    Parameters
    ----------
    params : ListenerParams
    x : ndarray, shape (n_steps, 6)
        Feature vector playing during each step (:func:`feature_vector`).
    dt_sec : float
        Grid step, seconds.
    state : ListenerState, optional
        Start state (default :func:`initial_state`).

    Returns
    -------
    traj : ndarray, shape (n_steps + 1, 2)
        ``(valence, arousal)`` at the grid points, the start included.
    """
    from scipy.signal import lfilter

    dt = _check_dt(dt_sec)
    x = np.asarray(x, dtype=float)
    state = state or initial_state(params)
    p = params.as_dict()
    be = math.exp(-dt / params.habituation_tau_sec)
    # running mean before each step: m_{n+1} = be m_n + (1 - be) x_n
    m_next, _ = lfilter([1 - be], [1, -be], x, axis=0, zi=(be * state.familiar)[None, :])
    m = np.vstack([state.familiar[None, :], m_next[:-1]]) if len(x) else m_next
    # exposure before each step: 1 - e_n = (1 - e_0) * exp(-dt / tau * music steps before n)
    played = np.concatenate([[0.0], np.cumsum(x[:, 3] != 0)[:-1]]) if len(x) else np.zeros(0)
    expo = 1.0 - (1.0 - state.exposure) * np.exp(-dt / params.exposure_tau_sec * played)
    tv, ta = _targets(p, x, m, np.broadcast_to(state.drift, (len(x), 2)), expo)
    out = np.empty((len(x) + 1, 2))
    out[0] = state.valence, state.arousal
    for k, (tgt, tau) in enumerate(((tv, params.tau_valence_sec),
                                    (ta, params.tau_arousal_sec))):
        al = math.exp(-dt / tau)
        y, _ = lfilter([1 - al], [1, -al], tgt, zi=[al * out[0, k]])
        out[1:, k] = y
    return out
