"""What every listener-model family shares: parameter checking, the appraisal drive, helpers.

Each family (:mod:`st_agent.listener.family`) is a frozen parameter dataclass
(a :class:`FamilyParams`) plus a :class:`Kernel`: pure NumPy functions that
advance ``n`` listeners of that family at once. The families differ in their
*dynamics*; the way the music is appraised (which features push valence and
arousal, and how strongly, per listener) is common to all of them:

**Appraisal drive** (:func:`appraisal`), with ``x`` the feature vector
(:mod:`st_agent.listener.features`)::

    u_a = arousal_tempo * tempo + arousal_density * density + arousal_loudness * loudness
          + slow_minor_arousal * slow_minor                      (music)
    u_v = valence_mode * mode + valence_register * register + valence_tempo * tempo
          + preference * slow_minor                               (music)
    u_a = silence_arousal * e,  u_v = 0                           (silence)

``e`` in [0, 1] is the *exposure*: 0 before any music, it rises toward 1
while music plays (time constant ``exposure_tau_sec``) and holds in
silence, so a pause *after* music lowers arousal below rest while the rest
before the music (the estimator's calibration) stays at baseline (Bernardi,
Porta & Sleight 2006: the pause reduced heart rate, blood pressure and
minute ventilation even below baseline). Signed ``valence_mode`` lets some
listeners prefer minor; ``slow_minor_arousal > 0`` makes slow minor music
*agitating* for them (a setting that backfires); ``valence_tempo`` is the
tempo -> valence effect (Gagnon & Peretz 2003). Every assumption and its
source is in ``docs/listener_assumptions.md``.

**Drift**: an Ornstein-Uhlenbeck process ``d`` (std ``drift_std``, time
constant ``drift_tau_sec``) added to both baselines.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

__all__ = ["AGITATED_SHARE", "COMMON_PARAMS", "COMMON_STATE", "MINOR_PREFERRING_SHARE",
           "SHARED_RANGES", "FamilyParams", "Kernel", "SharedParams", "appraisal",
           "appraisal_weights", "cascade", "clip1", "common_step", "drives", "logu", "ou_step",
           "sample_shared", "uniform_block", "update_exposure"]

#: Ranges of the parameters every family has, ``name -> (low, high)``.
SHARED_RANGES: dict[str, tuple[float, float]] = {
    "baseline_valence": (-0.6, 0.6),
    "baseline_arousal": (-0.6, 0.6),
    "arousal_tempo": (0.0, 1.2),
    "arousal_density": (0.0, 0.8),
    "arousal_loudness": (0.0, 0.8),
    "valence_mode": (-1.0, 1.0),
    "valence_register": (0.0, 0.6),
    "preference": (-1.0, 1.0),
    "valence_tempo": (-0.5, 1.0),
    "slow_minor_arousal": (0.0, 1.0),
    "silence_arousal": (-1.0, 0.0),
    "exposure_tau_sec": (10.0, 600.0),
    "drift_std": (0.0, 0.5),
    "drift_tau_sec": (30.0, 3600.0),
    "noise_std": (0.0, 0.5),
}

#: Share of the population that prefers minor (``valence_mode < 0``): assumption.
MINOR_PREFERRING_SHARE = 0.2
#: Share for whom slow minor music is agitating (``slow_minor_arousal > 0``): assumption.
AGITATED_SHARE = 0.25


class FamilyParams:
    """Mixin for a family's frozen parameter dataclass: checking, dicts, arrays.

    Subclasses are ``@dataclass(frozen=True)`` with float fields, a
    ``RANGES`` class attribute (``name -> (low, high)``, every field) and a
    ``family`` class attribute (the family's name).
    """

    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}
    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for name, (lo, hi) in self.RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
            value = float(value)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] (see "
                                 f"{type(self).__name__}.RANGES), got {value!r}")
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, float]:
        """Plain dict of the parameters (no family name), for JSON."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilyParams:
        """Inverse of :meth:`as_dict`; unknown names raise ``ValueError``.

        A ``"family"`` key, when present, must name this class's family.
        """
        d = dict(d)
        fam = d.pop("family", cls.family)
        if fam != cls.family:
            raise ValueError(f"parameters of family {fam!r} given to {cls.__name__} "
                             f"(family {cls.family!r})")
        unknown = sorted(set(d) - set(cls.RANGES))
        if unknown:
            raise ValueError(f"unknown listener parameters {unknown} for family "
                             f"{cls.family!r}; known: {sorted(cls.RANGES)}")
        return cls(**d)

    def as_array(self) -> np.ndarray:
        """Values in ``RANGES`` order, shape (n_params,)."""
        return np.array([getattr(self, n) for n in self.RANGES])

    @property
    def rest_state(self) -> tuple[float, float]:
        """``(valence, arousal)`` in silence before any music, without drift or noise."""
        return math.tanh(self.baseline_valence), math.tanh(self.baseline_arousal)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name):.3g}"
                          for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({inner})"


@dataclass(frozen=True, repr=False)
class SharedParams(FamilyParams):
    """The appraisal, silence, drift and noise parameters every family has.

    Parameters
    ----------
    baseline_valence, baseline_arousal : float
        Drive in silence before any music (before ``tanh``); the resting state
        is their ``tanh``.
    arousal_tempo, arousal_density, arousal_loudness : float
        Arousal drive per unit of normalised tempo, note density and loudness.
    valence_mode : float
        Valence drive per unit of mode (+1 major, -1 minor); < 0: prefers minor.
    valence_register : float
        Valence drive per unit of register (higher: brighter).
    preference : float
        Valence drive of slow minor music: > 0 soothing, < 0 sad.
    valence_tempo : float
        Valence drive per unit of normalised tempo (faster: happier).
    slow_minor_arousal : float
        Arousal drive of slow minor music (> 0: it agitates this listener).
    silence_arousal : float
        Arousal drive of silence after music (<= 0), scaled by the exposure.
    exposure_tau_sec : float
        Time constant (s) of the exposure's rise while music plays.
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
    valence_tempo: float = 0.0
    slow_minor_arousal: float = 0.0
    silence_arousal: float = 0.0
    exposure_tau_sec: float = 60.0
    drift_std: float = 0.05
    drift_tau_sec: float = 400.0
    noise_std: float = 0.05

    RANGES: ClassVar[dict[str, tuple[float, float]]] = SHARED_RANGES


def clip1(x: np.ndarray, bound: float = 0.999) -> np.ndarray:
    """``x`` clipped to ``[-bound, bound]`` (cheaper than ``np.clip`` on small arrays)."""
    return np.minimum(np.maximum(x, -bound), bound)


def logu(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Log-uniform draws in [lo, hi], shape (n,)."""
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


#: The shared draws after the two normals, in draw order: ``(name, low, high, log)``;
#: ``_minor``/``_major`` are the two halves of ``valence_mode``, ``_agitated`` the
#: non-zero ``slow_minor_arousal`` (``docs/listener_assumptions.md``).
_SHARED_UNIFORMS: tuple[tuple[str, float, float, bool], ...] = (
    ("arousal_tempo", 0.0, 0.8, False), ("arousal_density", 0.0, 0.4, False),
    ("arousal_loudness", 0.0, 0.4, False), ("_minor", -0.5, -0.1, False),
    ("_major", 0.1, 0.6, False), ("valence_register", 0.0, 0.3, False),
    ("preference", -0.6, 0.6, False), ("valence_tempo", 0.1, 0.7, False),
    ("_agitated", 0.2, 0.8, False), ("silence_arousal", -0.6, -0.1, False),
    ("exposure_tau_sec", 30.0, 120.0, True), ("drift_std", 0.0, 0.1, False),
    ("drift_tau_sec", 200.0, 900.0, True), ("noise_std", 0.02, 0.08, False))


_SHARES = np.array([[MINOR_PREFERRING_SHARE], [AGITATED_SHARE]])
_BASE_MEANS = np.array([[0.1], [-0.1]])  # baseline valence, arousal ~ N(mean, 0.2)


def uniform_block(rng: np.random.Generator, spec: Sequence[tuple[str, float, float, bool]],
                  n: int) -> np.ndarray:
    """``rng.uniform(low, high, n)`` (or :func:`logu` where ``log``) for each row of ``spec``.

    One ``rng.random`` call for all rows, bit for bit the values (and the
    generator state) of the calls one after another: ``uniform`` is
    ``low + (high - low) * random()``.

    Returns
    -------
    block : ndarray, shape (len(spec), n)
    """
    lo, width, logs = _block_spec(tuple(spec))
    block = lo + width * rng.random((len(spec), n))
    if logs.size:
        block[logs] = np.exp(block[logs])
    return block


@functools.lru_cache(maxsize=64)
def _block_spec(spec: tuple[tuple[str, float, float, bool], ...]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low ends (k, 1), widths ``high - low`` (k, 1) and log rows of a :func:`uniform_block`."""
    lo = np.array([math.log(s[1]) if s[3] else s[1] for s in spec])
    hi = np.array([math.log(s[2]) if s[3] else s[2] for s in spec])
    return lo[:, None], (hi - lo)[:, None], np.flatnonzero([s[3] for s in spec])


def sample_shared(n: int, rng: np.random.Generator,
                  extra: Sequence[tuple[str, float, float, bool]] = ()
                  ) -> dict[str, np.ndarray]:
    """Population draws of the shared parameters (``docs/listener_assumptions.md``).

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    extra : sequence of (name, low, high, log)
        A family's own uniform (``log``: log-uniform) draws, made right after
        the shared ones (a name already drawn replaces that column).

    Returns
    -------
    cols : dict of ndarray, each shape (n,)
    """
    # each pair of draws in one call: the values of two calls one after the other
    minor, agitated = rng.random((2, n)) < _SHARES
    bv, ba = np.minimum(np.maximum(rng.normal(_BASE_MEANS, 0.2, (2, n)), -0.6), 0.6)
    spec = (*_SHARED_UNIFORMS, *extra)
    u = dict(zip([s[0] for s in spec], uniform_block(rng, spec, n), strict=True))
    cols = {"baseline_valence": bv, "baseline_arousal": ba}
    for name in SHARED_RANGES:
        if name == "valence_mode":
            cols[name] = np.where(minor, u["_minor"], u["_major"])
        elif name == "slow_minor_arousal":
            cols[name] = np.where(agitated, u["_agitated"], 0.0)
        elif name not in cols:
            cols[name] = u[name]
    return cols | {s[0]: u[s[0]] for s in extra}


def appraisal(p: dict[str, Any], x: np.ndarray, exposure: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valence and arousal drives of what plays (module docstring).

    Parameters
    ----------
    p : dict
        Parameter name -> float or array of shape (n,).
    x : ndarray, shape (..., 6)
        Feature vectors (zeros: silence).
    exposure : ndarray, shape (...,)
        Exposure ``e`` in [0, 1] at the start of the step.

    Returns
    -------
    u_v, u_a : ndarray, shape (...,)
        Drives (before any ``tanh``).
    playing : ndarray of bool, shape (...,)
    """
    playing = x[..., 3] != 0
    u_a = (p["arousal_tempo"] * x[..., 0] + p["arousal_density"] * x[..., 1]
           + p["arousal_loudness"] * x[..., 2] + p["slow_minor_arousal"] * x[..., 5])
    u_v = (p["valence_mode"] * x[..., 3] + p["valence_register"] * x[..., 4]
           + p["valence_tempo"] * x[..., 0] + p["preference"] * x[..., 5])
    u_a = np.where(playing, u_a, p["silence_arousal"] * exposure)
    return u_v, u_a, playing


def appraisal_weights(p: dict[str, np.ndarray]) -> np.ndarray:
    """The appraisal as a matrix per listener, shape (n, 6, 2): ``u = x @ W`` in music.

    Column 0 is the valence drive, column 1 the arousal drive (module docstring).
    """
    n = p["baseline_valence"].shape[0]
    w = np.zeros((n, 6, 2))
    w[:, 0, 0], w[:, 3, 0] = p["valence_tempo"], p["valence_mode"]
    w[:, 4, 0], w[:, 5, 0] = p["valence_register"], p["preference"]
    w[:, 0, 1], w[:, 1, 1] = p["arousal_tempo"], p["arousal_density"]
    w[:, 2, 1], w[:, 5, 1] = p["arousal_loudness"], p["slow_minor_arousal"]
    return w


def drives(p: dict[str, np.ndarray], x: np.ndarray, exposure: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`appraisal` for a kernel's prepared arrays: ``(u (n, 2), playing (n,))``.

    ``u[:, 0]`` is the valence drive, ``u[:, 1]`` the arousal drive; ``p``
    holds ``_Wt`` (the weights transposed, (n, 2, 6)) from :meth:`Kernel.prepare`.
    """
    silent = x[:, 3] == 0
    u = np.einsum("nf,nkf->nk", x, p["_Wt"])  # (n, 2); 0 in silence (x = 0)
    u[:, 1] += p["silence_arousal"] * exposure * silent
    return u, ~silent


def update_exposure(exposure: np.ndarray, playing: np.ndarray, dt: np.ndarray | float,
                    tau: np.ndarray | float) -> np.ndarray:
    """Exposure after ``dt`` s: toward 1 while music plays, held in silence."""
    return 1.0 - (1.0 - exposure) * np.exp(-(dt * playing) / tau)


def ou_step(value: np.ndarray, std: np.ndarray | float, tau: np.ndarray | float,
            dt: np.ndarray | float, z: np.ndarray | None) -> np.ndarray:
    """Exact Ornstein-Uhlenbeck update (stationary ``std``, time constant ``tau``).

    ``z`` are standard normals of ``value``'s shape; ``None`` holds the value.
    """
    if z is None:
        return value
    g = np.exp(-dt / tau)
    return g * value + std * np.sqrt(1.0 - g ** 2) * z


def cascade(y0: np.ndarray, z0: np.ndarray, u: np.ndarray, tau_y: np.ndarray,
            tau_z: np.ndarray, dt: np.ndarray, gain: np.ndarray | float = 1.0,
            offset: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact update of two first-order stages in series under a constant input.

    ``dy/dt = (u - y) / tau_y`` and ``dz/dt = (offset + gain * y - z) / tau_z``,
    with ``u``, ``gain`` and ``offset`` constant over the step. Taus must be
    > 0; equal taus are nudged apart by 0.1 % (an error far below the
    model's noise).

    Returns
    -------
    y, z : ndarray
        The two stages after ``dt`` seconds.
    """
    tau_z = np.where(np.abs(tau_y - tau_z) < 1e-3 * tau_y, tau_y * 1.001, tau_z)
    ey, ez = np.exp(-dt / tau_y), np.exp(-dt / tau_z)
    c = y0 - u  # y(t) = u + c e^{-t/tau_y}
    z_inf = offset + gain * u
    # z(t) = z_inf + b e^{-t/tau_y} + (z0 - z_inf - b) e^{-t/tau_z}
    b = gain * c * tau_y / (tau_y - tau_z)
    return u + c * ey, z_inf + b * ey + (z0 - z_inf - b) * ez


#: Per-listener parameter arrays every kernel has (FastListeners keeps them in one array
#: over all families, so the shared computations run once per step).
COMMON_PARAMS = ("_Wt", "_base", "_ou_std", "_ou_tau", "silence_arousal", "exposure_tau_sec")
#: Per-listener state every kernel has: ``exposure`` (n,) and ``nd`` (n, 4): OU state
#: noise (valence, arousal), then drift (valence, arousal).
COMMON_STATE = ("exposure", "nd")


def common_step(p: dict[str, np.ndarray], s: dict[str, np.ndarray], playing: np.ndarray,
                dt: np.ndarray, z: np.ndarray | None) -> dict[str, np.ndarray]:
    """The shared state after ``dt``: exposure, and the OU state noise and drift.

    ``z`` (n, 4) are the standard normals (noise valence, arousal, drift
    valence, arousal); ``None`` holds noise and drift (the deterministic dynamics).
    """
    return {"exposure": update_exposure(s["exposure"], playing, dt, p["exposure_tau_sec"]),
            "nd": ou_step(s["nd"], p["_ou_std"], p["_ou_tau"], dt[:, None], z)}


class Kernel:
    """Vectorised dynamics of one family over ``n`` listeners.

    ``p`` maps parameter names to arrays of shape (n,) (plus the derived
    arrays of :meth:`prepare`); ``s`` maps state names to arrays of shape
    (n,) or (n, k). What all families share (the appraisal drive, the
    exposure, the OU state noise and the drift, :data:`COMMON_STATE`) is
    computed by :class:`~st_agent.listener.fast.FastListeners` once for all
    listeners (:func:`drives`, :func:`common_step`); a kernel adds its own
    dynamics. Kernels never draw random numbers.
    """

    family: ClassVar[str] = ""
    params_cls: ClassVar[type] = FamilyParams

    def noise_taus(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """Time constants of the OU state noise (valence, arousal), shape (n, 2)."""
        raise NotImplementedError

    def prepare(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arrays derived once from the parameters (names start with ``_``).

        The base class gives :data:`COMMON_PARAMS`: ``_Wt`` (appraisal weights,
        (n, 2, 6)), ``_base`` (baselines, (n, 2)), ``_ou_std``/``_ou_tau``
        ((n, 4): state noise, then drift).
        """
        nz, dr, dtau = p["noise_std"], p["drift_std"], p["drift_tau_sec"]
        taus = self.noise_taus(p)
        return {"_Wt": np.ascontiguousarray(appraisal_weights(p).transpose(0, 2, 1)),
                "_base": np.stack([p["baseline_valence"], p["baseline_arousal"]], axis=-1),
                "_ou_std": np.stack([nz, nz, dr, dr], axis=-1),
                "_ou_tau": np.stack([taus[:, 0], taus[:, 1], dtau, dtau], axis=-1)}

    def init(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Family state at rest (silence, before any music), every array shape (n, ...)."""
        raise NotImplementedError

    def init_all(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`init` plus the shared state (:data:`COMMON_STATE`) at rest."""
        n = p["baseline_valence"].shape[0]
        return self.init(p) | {"exposure": np.zeros(n), "nd": np.zeros((n, 4))}

    def step(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
             dt: np.ndarray, u: np.ndarray, playing: np.ndarray, z: np.ndarray | None
             ) -> dict[str, np.ndarray]:
        """The family's own state after ``dt`` (n,) seconds of ``x`` (n, 6).

        ``u`` (n, 2) and ``playing`` (n,) are :func:`drives` of ``x``; ``s``
        still holds the shared state at the start of the step; ``z`` (n, 2)
        are the state-noise normals (used by families without an OU noise state).
        """
        raise NotImplementedError

    def latent(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        """Latent ``(valence, arousal)`` in (-1, 1), shape (n, 2)."""
        raise NotImplementedError

    def breathing(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> np.ndarray:
        """Breathing rate, breaths per minute, shape (n,) (default: from arousal).

        Breathing rises with arousal (Bernardi et al. 2006: breathing rate
        and ventilation rise with faster tempi); 15/min at arousal 0 and
        +20 % per unit of arousal are assumptions.
        """
        return 15.0 * (1.0 + 0.2 * self.latent(p, s)[:, 1])

    def step_all(self, p: dict[str, np.ndarray], s: dict[str, np.ndarray], x: np.ndarray,
                 dt: np.ndarray, z: np.ndarray | None) -> dict[str, np.ndarray]:
        """One step of these listeners alone (family and shared state); ``z`` (n, 4) or None.

        The reference path for one family (:func:`~st_agent.listener.first_order.step`,
        predictions); :class:`FastListeners` runs the shared part once for all families.
        """
        u, playing = drives(p, x, s["exposure"])
        new = self.step(p, s, x, dt, u, playing, None if z is None else z[:, 0:2])
        return s | new | common_step(p, s, playing, dt, z)
