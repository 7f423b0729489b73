"""The simulated listener: latent valence/arousal driven by what was actually played.

A listener is a :class:`ListenerParams` drawn from a population
(:func:`sample_listeners`). Its latent state (:class:`ListenerState`) follows
first-order dynamics driven by the :class:`~st_agent.types.MusicFeatures`
measured from the rendered phrase, never by the knobs, so an agent has to learn
what the composer really does. :func:`step` advances one listener;
:class:`FastListeners` advances many at once with NumPy arrays and, in place of
raw signals, adds estimator noise measured from the raw mode
(:class:`EstimatorNoise`, shipped in ``st_agent/listener/assets/estimator_noise.json``).
The raw-signal listener is :class:`st_agent.listener.virtual.VirtualListenerSource`.

Model
-----
Features are first mapped to a normalised vector ``x`` (:func:`feature_vector`,
each entry about [-1, 1], all 0 in silence)::

    tempo      = (bpm - 105) / 55
    density    = log2(notes_per_sec / 5) / 1.5
    loudness   = (mean_velocity - 73) / 38
    mode       = +1 major, -1 minor
    register   = (mean_pitch - 72) / 8
    slow_minor = [mode is minor] * max(0, -tempo)

Habituation: a running mean ``m`` of ``x`` (time constant ``habituation_tau_sec``)
measures how familiar the current material is,
``h = habituation_strength * exp(-|x - m|^2 / (2 * 0.5^2))`` while music plays,
and the musical part of the drive is scaled by ``1 - h``. Drift ``d`` is an
Ornstein-Uhlenbeck process (std ``drift_std``, time constant ``drift_tau_sec``)
added to both baselines. Targets and dynamics, with ``alpha = exp(-dt / tau)``::

    target_a = tanh(baseline_arousal + d_a + (1 - h) * (arousal_tempo * tempo
                    + arousal_density * density + arousal_loudness * loudness))
    target_v = tanh(baseline_valence + d_v + (1 - h) * (valence_mode * mode
                    + valence_register * register + preference * slow_minor))
    a <- alpha_a * a + (1 - alpha_a) * target_a + noise_std * sqrt(1 - alpha_a^2) * N(0, 1)

(the same for ``v``). The update is exact for features held over ``dt``, so
without noise and drift the state converges to the target (the driven steady
state) whatever the step size.

Assumptions and their sources
-----------------------------
- Faster tempo and louder, denser music raise arousal (Gabrielsson & Lindström
  2010, review; Husain, Thompson & Schellenberg 2002; Gomez & Danuser 2007),
  also physiologically: heart rate and breathing rate rise with tempo
  (Bernardi, Porta & Sleight 2006).
- Major mode and higher register raise valence (Hevner 1935, 1937; Husain et
  al. 2002; Ilie & Thompson 2006 for pitch height).
- People differ in how slow minor music feels: sad to some, soothing or
  pleasurable to others (Vuoskoski & Eerola 2012; Sachs, Damasio & Habibi
  2015); modelled by ``preference`` in [-1, 1].
- Responses habituate to repeated material and recover with novelty (orienting
  response habituation, Sokolov 1963; novelty and arousal potential, Berlyne
  1971).
- Responses lag the music by seconds to tens of seconds (continuous ratings,
  Schubert 2004; tonic physiological measures, Krumhansl 1997); the time
  constants are assumptions in that range.
- Signal side (see :mod:`st_agent.listener.virtual`): alpha power rises with
  relaxation and falls with arousal (Klimesch 1999; Barry et al. 2007), beta
  rises with alertness (Pope, Bogart & Bartolome 1995), frontal alpha asymmetry
  tracks approach/positive valence (Davidson 1992; Coan & Allen 2004; Schmidt &
  Trainor 2001 for music), heart rate rises with arousal (Bernardi et al.
  2006; Koelsch & Jäncke 2015), muscle tension raises EMG RMS.

Population ranges
-----------------
=========================  ============  =====================================
parameter                  allowed       population draw (:func:`sample_listeners`)
=========================  ============  =====================================
``baseline_valence``       [-0.6, 0.6]   normal(0.1, 0.2), clipped
``baseline_arousal``       [-0.6, 0.6]   normal(-0.1, 0.2), clipped
``arousal_tempo``          [0, 1.2]      uniform(0, 0.8)
``arousal_density``        [0, 0.8]      uniform(0, 0.4)
``arousal_loudness``       [0, 0.8]      uniform(0, 0.4)
``valence_mode``           [0, 1.0]      uniform(0.1, 0.6)
``valence_register``       [0, 0.6]      uniform(0, 0.3)
``preference``             [-1, 1]       uniform(-0.6, 0.6)
``tau_arousal_sec``        [5, 120]      log-uniform(10, 40)
``tau_valence_sec``        [5, 180]      log-uniform(15, 60)
``habituation_strength``   [0, 0.9]      uniform(0, 0.4)
``habituation_tau_sec``    [10, 600]     log-uniform(30, 200)
``drift_std``              [0, 0.5]      uniform(0, 0.1)
``drift_tau_sec``          [30, 3600]    log-uniform(200, 900)
``noise_std``              [0, 0.5]      uniform(0.02, 0.08)
=========================  ============  =====================================
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.types import MusicFeatures

__all__ = [
    "FEATURE_NAMES",
    "PARAM_RANGES",
    "EstimatorNoise",
    "FastListeners",
    "ListenerParams",
    "ListenerState",
    "feature_matrix",
    "feature_vector",
    "initial_state",
    "random_features",
    "sample_listeners",
    "simulate",
    "step",
]

logger = logging.getLogger(__name__)

#: Entries of :func:`feature_vector`, in order.
FEATURE_NAMES = ("tempo", "density", "loudness", "mode", "register", "slow_minor")
_N_FEAT = len(FEATURE_NAMES)
_HAB_WIDTH = 0.5  # feature distance at which material stops feeling familiar
_CLIP = 1.5  # |normalised feature| is clipped here

#: Allowed range of every parameter, ``name -> (low, high)``.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "baseline_valence": (-0.6, 0.6),
    "baseline_arousal": (-0.6, 0.6),
    "arousal_tempo": (0.0, 1.2),
    "arousal_density": (0.0, 0.8),
    "arousal_loudness": (0.0, 0.8),
    "valence_mode": (0.0, 1.0),
    "valence_register": (0.0, 0.6),
    "preference": (-1.0, 1.0),
    "tau_arousal_sec": (5.0, 120.0),
    "tau_valence_sec": (5.0, 180.0),
    "habituation_strength": (0.0, 0.9),
    "habituation_tau_sec": (10.0, 600.0),
    "drift_std": (0.0, 0.5),
    "drift_tau_sec": (30.0, 3600.0),
    "noise_std": (0.0, 0.5),
}


@dataclass(frozen=True)
class ListenerParams:
    """One listener's parameters; ranges in :data:`PARAM_RANGES` (module table).

    Parameters
    ----------
    baseline_valence, baseline_arousal : float
        Drive in silence (before ``tanh``); the resting state is their ``tanh``.
    arousal_tempo, arousal_density, arousal_loudness : float
        Arousal drive per unit of normalised tempo, note density and loudness.
    valence_mode, valence_register : float
        Valence drive per unit of mode (+1 major, -1 minor) and register.
    preference : float
        Valence drive of slow minor music: > 0 soothing, < 0 sad.
    tau_arousal_sec, tau_valence_sec : float
        Time constants of the first-order dynamics, seconds.
    habituation_strength : float
        Largest fraction of the musical drive lost to fully familiar material.
    habituation_tau_sec : float
        Time constant of the running mean of the features, seconds.
    drift_std, drift_tau_sec : float
        Slow drift of the baselines: stationary std and time constant (s).
    noise_std : float
        Stationary std of the fast state noise.

    Raises
    ------
    ValueError
        Naming the parameter, its allowed range and the value received.
    """

    baseline_valence: float = 0.1
    baseline_arousal: float = -0.1
    arousal_tempo: float = 0.5
    arousal_density: float = 0.2
    arousal_loudness: float = 0.2
    valence_mode: float = 0.4
    valence_register: float = 0.15
    preference: float = 0.0
    tau_arousal_sec: float = 20.0
    tau_valence_sec: float = 30.0
    habituation_strength: float = 0.2
    habituation_tau_sec: float = 90.0
    drift_std: float = 0.05
    drift_tau_sec: float = 400.0
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        for name, (lo, hi) in PARAM_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
            value = float(value)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] (see "
                                 f"st_agent.listener.model.PARAM_RANGES), got {value!r}")
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, float]:
        """Plain dict, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ListenerParams:
        """Inverse of :meth:`as_dict`; unknown names raise ``ValueError``."""
        unknown = sorted(set(d) - set(PARAM_RANGES))
        if unknown:
            raise ValueError(f"unknown listener parameters {unknown}; known: "
                             f"{sorted(PARAM_RANGES)}")
        return cls(**d)

    def as_array(self) -> np.ndarray:
        """Values in :data:`PARAM_RANGES` order, shape (n_params,)."""
        return np.array([getattr(self, n) for n in PARAM_RANGES])

    @property
    def rest_state(self) -> tuple[float, float]:
        """``(valence, arousal)`` in silence without drift or noise."""
        return math.tanh(self.baseline_valence), math.tanh(self.baseline_arousal)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name):.3g}" for f in fields(self))
        return f"ListenerParams({inner})"


def sample_listeners(n: int, rng: np.random.Generator | int | None = None,
                     ) -> list[ListenerParams]:
    """Draw ``n`` listeners from the population (module table).

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
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(rng)

    def logu(lo: float, hi: float) -> np.ndarray:
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n))

    cols = {
        "baseline_valence": np.clip(rng.normal(0.1, 0.2, n), -0.6, 0.6),
        "baseline_arousal": np.clip(rng.normal(-0.1, 0.2, n), -0.6, 0.6),
        "arousal_tempo": rng.uniform(0.0, 0.8, n),
        "arousal_density": rng.uniform(0.0, 0.4, n),
        "arousal_loudness": rng.uniform(0.0, 0.4, n),
        "valence_mode": rng.uniform(0.1, 0.6, n),
        "valence_register": rng.uniform(0.0, 0.3, n),
        "preference": rng.uniform(-0.6, 0.6, n),
        "tau_arousal_sec": logu(10.0, 40.0),
        "tau_valence_sec": logu(15.0, 60.0),
        "habituation_strength": rng.uniform(0.0, 0.4, n),
        "habituation_tau_sec": logu(30.0, 200.0),
        "drift_std": rng.uniform(0.0, 0.1, n),
        "drift_tau_sec": logu(200.0, 900.0),
        "noise_std": rng.uniform(0.02, 0.08, n),
    }
    return [ListenerParams(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


# --------------------------------------------------------------------------- features


def feature_vector(features: MusicFeatures | None) -> np.ndarray:
    """Normalised features that drive the listener (module docstring).

    Parameters
    ----------
    features : MusicFeatures or None
        What is playing; ``None`` is silence (all zeros).

    Returns
    -------
    x : ndarray, shape (6,)
        ``tempo, density, loudness, mode, register, slow_minor``
        (:data:`FEATURE_NAMES`), each clipped to [-1.5, 1.5].
    """
    if features is None or features.n_notes == 0:
        return np.zeros(_N_FEAT)
    if not isinstance(features, MusicFeatures):
        raise TypeError(f"features must be MusicFeatures or None, got "
                        f"{type(features).__name__}")
    tempo = (features.bpm - 105.0) / 55.0
    density = math.log2(max(features.notes_per_sec, 0.25) / 5.0) / 1.5
    loud = (features.mean_velocity - 73.0) / 38.0
    mode = 1.0 if features.mode == "major" else -1.0
    register = (features.mean_pitch - 72.0) / 8.0
    x = np.clip([tempo, density, loud, mode, register, 0.0], -_CLIP, _CLIP)
    x[5] = (mode < 0) * max(0.0, -x[0])
    return x


def feature_matrix(features: Sequence[MusicFeatures | None]) -> np.ndarray:
    """Stack :func:`feature_vector` of several phrases, shape (n, 6)."""
    return np.stack([feature_vector(f) for f in features]) if len(features) else \
        np.zeros((0, _N_FEAT))


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


# --------------------------------------------------------------------------- dynamics


@dataclass
class ListenerState:
    """Latent state of one listener (mutable; :func:`step` replaces it).

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
    """

    valence: float
    arousal: float
    familiar: np.ndarray
    drift: np.ndarray
    t_sec: float = 0.0

    def copy(self) -> ListenerState:
        """Independent copy."""
        return ListenerState(self.valence, self.arousal, self.familiar.copy(),
                             self.drift.copy(), self.t_sec)


def initial_state(params: ListenerParams) -> ListenerState:
    """The resting state: ``tanh`` of the baselines, no drift, no familiarity."""
    v, a = params.rest_state
    return ListenerState(v, a, np.zeros(_N_FEAT), np.zeros(2), 0.0)


def _targets(p: dict[str, Any], x: np.ndarray, familiar: np.ndarray,
             drift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Driven targets (valence, arousal), shapes (...,); works on scalars or arrays.

    ``p`` maps parameter names to floats or arrays of shape (N,); ``x`` and
    ``familiar`` have shape (..., 6); ``drift`` shape (..., 2).
    """
    playing = np.any(x != 0, axis=-1)
    dist2 = np.sum((x - familiar) ** 2, axis=-1)
    h = p["habituation_strength"] * np.exp(-dist2 / (2 * _HAB_WIDTH ** 2)) * playing
    music_a = (p["arousal_tempo"] * x[..., 0] + p["arousal_density"] * x[..., 1]
               + p["arousal_loudness"] * x[..., 2])
    music_v = (p["valence_mode"] * x[..., 3] + p["valence_register"] * x[..., 4]
               + p["preference"] * x[..., 5])
    tv = np.tanh(p["baseline_valence"] + drift[..., 0] + (1 - h) * music_v)
    ta = np.tanh(p["baseline_arousal"] + drift[..., 1] + (1 - h) * music_a)
    return tv, ta


def _check_dt(dt_sec: float) -> float:
    if not (isinstance(dt_sec, int | float) and math.isfinite(dt_sec) and dt_sec > 0):
        raise ValueError(f"dt_sec must be a positive number of seconds, got {dt_sec!r}")
    return float(dt_sec)


def step(params: ListenerParams, state: ListenerState, features: MusicFeatures | None,
         dt_sec: float, rng: np.random.Generator | None = None) -> ListenerState:
    """Advance one listener by ``dt_sec`` while ``features`` play.

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
    dt = _check_dt(dt_sec)
    x = feature_vector(features)
    p = params.as_dict()
    tv, ta = _targets(p, x, state.familiar, state.drift)
    al_v = math.exp(-dt / params.tau_valence_sec)
    al_a = math.exp(-dt / params.tau_arousal_sec)
    v = al_v * state.valence + (1 - al_v) * float(tv)
    a = al_a * state.arousal + (1 - al_a) * float(ta)
    be = math.exp(-dt / params.habituation_tau_sec)
    familiar = be * state.familiar + (1 - be) * x
    drift = state.drift.copy()
    if rng is not None:
        z = rng.standard_normal(4)
        v += params.noise_std * math.sqrt(1 - al_v ** 2) * z[0]
        a += params.noise_std * math.sqrt(1 - al_a ** 2) * z[1]
        ga = math.exp(-dt / params.drift_tau_sec)
        drift = ga * drift + params.drift_std * math.sqrt(1 - ga ** 2) * z[2:]
    return ListenerState(float(np.clip(v, -0.999, 0.999)), float(np.clip(a, -0.999, 0.999)),
                         familiar, drift, state.t_sec + dt)


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
    tv, ta = _targets(p, x, m, np.broadcast_to(state.drift, (len(x), 2)))
    out = np.empty((len(x) + 1, 2))
    out[0] = state.valence, state.arousal
    for k, (tgt, tau) in enumerate(((tv, params.tau_valence_sec),
                                    (ta, params.tau_arousal_sec))):
        al = math.exp(-dt / tau)
        y, _ = lfilter([1 - al], [1, -al], tgt, zi=[al * out[0, k]])
        out[1:, k] = y
    return out


# --------------------------------------------------------------------------- fast mode


@dataclass(frozen=True)
class EstimatorNoise:
    """How the real estimator's output relates to the latent state (measured).

    ``observed = clip(gain * (latent - rest) + e, -1, 1)`` per axis, where
    ``rest`` is the listener's resting state (the estimator is calibrated on
    rest) and ``e`` is AR(1) noise with stationary std ``std`` and coefficient
    ``ar1`` per ``hop_sec`` (chosen so that the noise's integrated
    autocorrelation time, hence its slow part, matches the estimator's, whose
    output is a moving average). Measured by
    ``python benchmarks/bench_listener.py --write-noise`` over simulated
    listeners in raw mode through :class:`~st_agent.biometrics.estimator.StateEstimator`.

    Parameters
    ----------
    gain_valence, gain_arousal : float
        Median slope of the estimate on the latent state.
    std_valence, std_arousal : float
        Residual std around the fitted line.
    ar1_valence, ar1_arousal : float
        AR(1) coefficient of the residual per hop, in [0, 1):
        ``(T - 1) / (T + 1)`` for its integrated autocorrelation time ``T`` (hops).
    hop_sec : float
        The estimator hop the noise was measured at.
    """

    gain_valence: float = 1.0
    gain_arousal: float = 1.0
    std_valence: float = 0.2
    std_arousal: float = 0.2
    ar1_valence: float = 0.5
    ar1_arousal: float = 0.5
    hop_sec: float = 0.5
    source: str = "default"
    relative: bool = True
    """Subtract the resting state (the estimator is calibrated on rest); False
    observes the latent state itself (gain 1: an estimator in latent units)."""

    def __post_init__(self) -> None:
        for name in ("gain_valence", "gain_arousal", "std_valence", "std_arousal"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= 10):
                raise ValueError(f"{name} must be in [0, 10], got {v!r}")
        for name in ("ar1_valence", "ar1_arousal"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if not (math.isfinite(self.hop_sec) and self.hop_sec > 0):
            raise ValueError(f"hop_sec must be > 0, got {self.hop_sec!r}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> EstimatorNoise:
        """Read the measured noise (default: the copy shipped in ``st_agent/listener/assets``)."""
        if path is None:
            text = resources.files("st_agent.listener").joinpath(
                "assets/estimator_noise.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
        return cls(**{k: doc[k] for k in (f.name for f in fields(cls)) if k in doc})


class FastListeners:
    """Many listeners at once, without raw signals (NumPy arrays over N listeners).

    Parameters
    ----------
    params : sequence of ListenerParams
        One per listener (N).
    rng : numpy.random.Generator or int or None
        Noise source (or seed); every draw comes from it.
    noise : EstimatorNoise or None
        Observation model; default :meth:`EstimatorNoise.load` (the measured one).

    Examples
    --------
    >>> group = FastListeners(sample_listeners(4, rng=0), rng=0)
    >>> obs = group.step(np.zeros((4, 6)), dt_sec=0.5)
    >>> obs.shape
    (4, 2)
    """

    def __init__(self, params: Sequence[ListenerParams], rng: np.random.Generator | int | None
                 = None, noise: EstimatorNoise | None = None) -> None:
        if not params or not all(isinstance(p, ListenerParams) for p in params):
            raise TypeError("params must be a non-empty sequence of ListenerParams")
        self.params = list(params)
        self.rng = np.random.default_rng(rng)
        self.noise = noise if noise is not None else EstimatorNoise.load()
        self._p = {name: np.array([getattr(p, name) for p in self.params])
                   for name in PARAM_RANGES}
        self.n = len(self.params)
        self.reset()

    def reset(self) -> None:
        """Every listener back to rest; time 0."""
        self.rest = np.stack([np.tanh(self._p["baseline_valence"]),
                              np.tanh(self._p["baseline_arousal"])], axis=-1)  # (N, 2)
        self.state = self.rest.copy()  # (N, 2) valence, arousal
        self.familiar = np.zeros((self.n, _N_FEAT))
        self.drift = np.zeros((self.n, 2))
        self.obs_noise = np.zeros((self.n, 2))
        self.t_sec = 0.0

    def step(self, x: np.ndarray, dt_sec: float) -> np.ndarray:
        """Advance every listener by ``dt_sec``; return what the estimator would report.

        Parameters
        ----------
        x : ndarray, shape (N, 6) or (6,)
            Feature vectors playing (:func:`feature_vector` / :func:`feature_matrix`).
        dt_sec : float
            Step length in seconds.

        Returns
        -------
        observed : ndarray, shape (N, 2)
            Estimated ``(valence, arousal)`` in [-1, 1] (latent plus measured
            estimator noise); the latent state is :attr:`state`.
        """
        if isinstance(dt_sec, np.ndarray):  # one step length per listener, shape (N,)
            dt = np.asarray(dt_sec, dtype=float).reshape(self.n, 1)
            if not np.all(np.isfinite(dt) & (dt > 0)):
                raise ValueError("dt_sec must hold positive numbers of seconds")
        else:
            dt = _check_dt(dt_sec)
        x = np.broadcast_to(np.asarray(x, dtype=float), (self.n, _N_FEAT))
        p = self._p
        tv, ta = _targets(p, x, self.familiar, self.drift)
        target = np.stack([tv, ta], axis=-1)  # (N, 2)
        tau = np.stack([p["tau_valence_sec"], p["tau_arousal_sec"]], axis=-1)
        al = np.exp(-dt / tau)
        z = self.rng.standard_normal((self.n, 6))
        self.state = (al * self.state + (1 - al) * target
                      + p["noise_std"][:, None] * np.sqrt(1 - al ** 2) * z[:, :2])
        np.clip(self.state, -0.999, 0.999, out=self.state)
        dt1 = dt[:, 0] if isinstance(dt, np.ndarray) else dt
        be = np.exp(-dt1 / p["habituation_tau_sec"])[:, None]
        self.familiar = be * self.familiar + (1 - be) * x
        ga = np.exp(-dt1 / p["drift_tau_sec"])[:, None]
        self.drift = ga * self.drift + p["drift_std"][:, None] * np.sqrt(1 - ga ** 2) * z[:, 2:4]
        nz = self.noise
        rho = np.array([nz.ar1_valence, nz.ar1_arousal]) ** (dt / nz.hop_sec)
        std = np.array([nz.std_valence, nz.std_arousal])
        self.obs_noise = rho * self.obs_noise + std * np.sqrt(1 - rho ** 2) * z[:, 4:6]
        gain = np.array([nz.gain_valence, nz.gain_arousal])
        self.t_sec = self.t_sec + dt1  # an array (N,) after per-listener steps
        ref = self.rest if nz.relative else 0.0
        return np.clip(gain * (self.state - ref) + self.obs_noise, -1.0, 1.0)

    def replace(self, rows: np.ndarray, other: FastListeners) -> None:
        """Overwrite listeners ``rows`` (parameters and state) with those of ``other``.

        ``other`` holds ``len(rows)`` listeners (e.g. fresh ones after a rest);
        :attr:`t_sec` becomes an array of per-listener times.
        """
        rows = np.asarray(rows, dtype=int).reshape(-1)
        if rows.size != other.n:
            raise ValueError(f"{rows.size} rows but {other.n} listeners to put there")
        for i, r in enumerate(rows):
            self.params[r] = other.params[i]
        for name, arr in self._p.items():
            arr[rows] = other._p[name]
        for name in ("rest", "state", "familiar", "drift", "obs_noise"):
            getattr(self, name)[rows] = getattr(other, name)
        t = np.broadcast_to(np.asarray(self.t_sec, dtype=float), (self.n,)).copy()
        t[rows] = other.t_sec
        self.t_sec = t
