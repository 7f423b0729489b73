"""Fast mode: many listeners of any families at once, plus the measured estimator noise.

:class:`FastListeners` advances N listeners with NumPy arrays. Listeners are
grouped by family (one kernel call per family present, never a loop over
listeners) and, in place of raw signals, the estimate is the latent state
plus estimator noise measured from the raw mode (:class:`EstimatorNoise`,
shipped in ``st_agent/listener/assets/estimator_noise.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.listener.base import COMMON_PARAMS, COMMON_STATE, Kernel, common_step, drives
from st_agent.listener.family import FAMILY_NAMES, KERNELS, AnyListenerParams, family_of
from st_agent.listener.features import N_FEATURES
from st_agent.listener.first_order import ListenerState

__all__ = ["EstimatorNoise", "FastListeners"]

_N_Z = 4  # standard normals per listener per step for the dynamics (2 state, 2 drift)


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

    @property
    def gain(self) -> np.ndarray:
        """``(gain_valence, gain_arousal)``, shape (2,)."""
        return np.array([self.gain_valence, self.gain_arousal])


class _Group:
    """The listeners of one family: their rows, parameter arrays and state arrays."""

    __slots__ = ("kernel", "p", "rows", "s", "span")

    def __init__(self, kernel: Kernel, rows: np.ndarray | slice, p: dict[str, np.ndarray],
                 s: dict[str, np.ndarray] | None = None) -> None:
        # rows: the listeners' indices (slice(None) when one family holds all); span: their
        # block in the family-sorted order (FastListeners._perm), set by _layout
        self.span = slice(None)
        if "_Wt" not in p:  # derived arrays, computed once per group
            p = p | kernel.prepare(p)
        self.kernel, self.rows, self.p = kernel, rows, p
        self.s = kernel.init_all(p) if s is None else s


def _param_arrays(params: Sequence[Any]) -> dict[str, np.ndarray]:
    names = type(params[0]).RANGES
    return {name: np.array([getattr(q, name) for q in params], dtype=float) for name in names}


class FastListeners:
    """Many listeners of any families at once, without raw signals (NumPy over N).

    Parameters
    ----------
    params : sequence of listener parameters
        One per listener (N), of any family (:mod:`st_agent.listener.family`).
    rng : numpy.random.Generator or int or None
        Noise source (or seed); every draw comes from it.
    noise : EstimatorNoise or None
        Observation model; default :meth:`EstimatorNoise.load` (the measured one).

    Attributes
    ----------
    state : ndarray, shape (N, 2)
        Latent ``(valence, arousal)``.
    rest : ndarray, shape (N, 2)
        Resting state of each listener (silence before any music).
    families : ndarray of str, shape (N,)
        Each listener's family.

    Examples
    --------
    >>> from st_agent.listener.family import sample_population
    >>> group = FastListeners(sample_population(4, rng=0), rng=0)
    >>> obs = group.step(np.zeros((4, 6)), dt_sec=0.5)
    >>> obs.shape
    (4, 2)
    """

    def __init__(self, params: Sequence[AnyListenerParams],
                 rng: np.random.Generator | int | None = None,
                 noise: EstimatorNoise | None = None) -> None:
        if isinstance(params, str | bytes) or not params:
            raise TypeError("params must be a non-empty sequence of listener parameters")
        fams = [family_of(p) for p in params]  # TypeError for anything else
        self.params = list(params)
        self.families = np.array(fams)
        self.rng = np.random.default_rng(rng)
        self.noise = noise if noise is not None else EstimatorNoise.load()
        nz = self.noise
        with np.errstate(divide="ignore"):  # ar1 = 0: no correlation (rho = 0)
            self._log_ar1_per_sec = np.log([nz.ar1_valence, nz.ar1_arousal]) / nz.hop_sec
        self._obs_std = np.array([nz.std_valence, nz.std_arousal])
        self._gain = nz.gain
        self.n = len(self.params)
        self._build()
        self.reset()

    def _build(self) -> None:
        groups = []
        present = [f for f in FAMILY_NAMES if f in set(self.families.tolist())]
        for fam in present:
            rows = np.flatnonzero(self.families == fam)
            sel: np.ndarray | slice = slice(None) if len(present) == 1 else rows
            groups.append(_Group(KERNELS[fam], sel,
                                 _param_arrays([self.params[i] for i in rows])))
        self._layout(groups)

    def _layout(self, groups: list[_Group]) -> None:
        """Adopt ``groups``: each gets a contiguous block of the family-sorted order.

        ``_perm[k]`` is the listener at sorted position k (None when the
        listeners already are in that order), so a step gathers the inputs
        once, runs each family on a view and scatters the states once.
        """
        perm, start = [], 0
        for g in groups:
            rows = np.arange(self.n)[g.rows]
            g.span = slice(start, start + rows.size)
            start += rows.size
            perm.append(rows)
        order = np.concatenate(perm)
        self._perm = None if np.array_equal(order, np.arange(self.n)) else order
        self._groups = groups
        # the shared parameters and state of all listeners, in the sorted order, as one
        # array each; every group holds views of its block
        self._cp = {k: np.concatenate([g.p[k] for g in groups]) for k in COMMON_PARAMS}
        self._cs = {k: np.concatenate([g.s[k] for g in groups]) for k in COMMON_STATE}
        self._relink()

    def _relink(self) -> None:
        """Point every group's shared entries at views of :attr:`_cp` / :attr:`_cs`."""
        for g in self._groups:
            g.p = g.p | {k: self._cp[k][g.span] for k in COMMON_PARAMS}
            g.s = g.s | {k: self._cs[k][g.span] for k in COMMON_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # pickling and deepcopy copy views as separate arrays: link them again
        self.__dict__.update(state)
        self._relink()

    def reset(self) -> None:
        """Every listener back to rest; time 0."""
        for g in self._groups:
            g.s = g.kernel.init_all(g.p)
        self._layout(self._groups)
        self.rest = np.array([p.rest_state for p in self.params], dtype=float)  # (N, 2)
        self.state = self.rest.copy()
        self.obs_noise = np.zeros((self.n, 2))
        self.t_sec: float | np.ndarray = 0.0

    # ------------------------------------------------------------------ stepping
    def _dt(self, dt_sec: float | np.ndarray) -> np.ndarray:
        if isinstance(dt_sec, np.ndarray):  # one step length per listener, shape (N,)
            dt = np.asarray(dt_sec, dtype=float).reshape(self.n)
            if not dt.min() > 0 or not np.isfinite(dt.max()):
                raise ValueError("dt_sec must hold positive numbers of seconds")
            return dt
        if not (isinstance(dt_sec, int | float) and math.isfinite(dt_sec) and dt_sec > 0):
            raise ValueError(f"dt_sec must be a positive number of seconds, got {dt_sec!r}")
        return np.full(self.n, float(dt_sec))

    def _features(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.shape != (self.n, N_FEATURES):
            x = np.broadcast_to(x, (self.n, N_FEATURES))
        return x

    def _advance(self, x: np.ndarray, dt: np.ndarray, z: np.ndarray | None) -> None:
        perm = self._perm
        if perm is not None:  # one gather in, one scatter out (not one per family)
            x, dt = x[perm], dt[perm]
            z = None if z is None else z[perm]
            out = np.empty((self.n, 2))
        else:
            out = self.state
        cp, cs = self._cp, self._cs
        # shared by every family, computed once: appraisal drive, then exposure, noise, drift
        u, playing = drives(cp, x, cs["exposure"])
        zs = None if z is None else z[:, 0:2]
        for g in self._groups:
            sl = g.span
            g.s.update(g.kernel.step(g.p, g.s, x[sl], dt[sl], u[sl], playing[sl],
                                     None if zs is None else zs[sl]))
        new = common_step(cp, cs, playing, dt, z)
        for k in COMMON_STATE:  # in place: the groups hold views
            cs[k][...] = new[k]
        for g in self._groups:
            out[g.span] = g.kernel.latent(g.p, g.s)
        if perm is not None:
            self.state[perm] = out

    def advance(self, x: np.ndarray, dt_sec: float | np.ndarray, noisy: bool = True,
                z: np.ndarray | None = None) -> np.ndarray:
        """Advance the latent dynamics only (no estimator noise); the new :attr:`state`.

        Parameters
        ----------
        x : ndarray, shape (N, 6) or (6,)
            Feature vectors playing.
        dt_sec : float or ndarray, shape (N,)
            Step length(s), seconds.
        noisy : bool
            Draw state noise and drift (False: the deterministic dynamics).
        z : ndarray, shape (N, 4), optional
            Standard normals to use instead of drawing them (state noise
            valence, arousal; drift valence, arousal), e.g. common random
            numbers across runs; implies ``noisy``.

        Returns
        -------
        state : ndarray, shape (N, 2)
        """
        dt = self._dt(dt_sec)
        x = self._features(x)
        if z is not None:
            z = np.asarray(z, dtype=float)
            if z.shape != (self.n, _N_Z):
                raise ValueError(f"z must have shape ({self.n}, {_N_Z}), got {z.shape}")
        elif noisy:
            z = self.rng.standard_normal((self.n, _N_Z))
        self._advance(x, dt, z)
        self._tick(dt, dt_sec)
        return self.state

    def _tick(self, dt: np.ndarray, dt_sec: float | np.ndarray) -> None:
        # an array (N,) of per-listener times after per-listener steps
        self.t_sec = self.t_sec + (dt if isinstance(dt_sec, np.ndarray) else float(dt_sec))

    def step(self, x: np.ndarray, dt_sec: float | np.ndarray) -> np.ndarray:
        """Advance every listener by ``dt_sec``; return what the estimator would report.

        Parameters
        ----------
        x : ndarray, shape (N, 6) or (6,)
            Feature vectors playing (:func:`~st_agent.listener.features.feature_vector`).
        dt_sec : float or ndarray, shape (N,)
            Step length(s) in seconds.

        Returns
        -------
        observed : ndarray, shape (N, 2)
            Estimated ``(valence, arousal)`` in [-1, 1] (latent plus measured
            estimator noise); the latent state is :attr:`state`.
        """
        dt = self._dt(dt_sec)
        x = self._features(x)
        z = self.rng.standard_normal((self.n, _N_Z + 2))
        self._advance(x, dt, z[:, :_N_Z])
        # AR(1) estimator noise: rho = ar1 ** (dt / hop) = exp(dt * log(ar1) / hop)
        rho = np.exp(dt[:, None] * self._log_ar1_per_sec)
        self.obs_noise = rho * self.obs_noise + self._obs_std * np.sqrt(1 - rho ** 2) * z[:, _N_Z:]
        self._tick(dt, dt_sec)
        ref = self.rest if self.noise.relative else 0.0
        return np.minimum(np.maximum(self._gain * (self.state - ref) + self.obs_noise, -1.0),
                          1.0)

    # ------------------------------------------------------------------ views
    @property
    def breathing_per_min(self) -> np.ndarray:
        """Breathing rate of each listener, breaths per minute, shape (N,)."""
        out = np.empty(self.n)
        for g in self._groups:
            out[g.rows] = g.kernel.breathing(g.p, g.s)
        return out

    def listener_state(self, i: int = 0) -> ListenerState:
        """Listener ``i``'s state as a :class:`ListenerState` snapshot.

        Valence, arousal, drift, exposure and time for any family; ``familiar``
        (the first-order habituation memory) is zeros for the other families.
        """
        if not 0 <= i < self.n:
            raise IndexError(f"listener index {i} out of range for {self.n} listeners")
        for g in self._groups:
            rows = np.arange(self.n)[g.rows]
            hit = np.flatnonzero(rows == i)
            if hit.size:
                j = int(hit[0])
                fam = g.s.get("familiar")
                t = float(np.broadcast_to(np.asarray(self.t_sec, dtype=float), (self.n,))[i])
                drift = g.s["nd"][j, 2:4]
                return ListenerState(float(self.state[i, 0]), float(self.state[i, 1]),
                                     np.zeros(N_FEATURES) if fam is None else fam[j].copy(),
                                     drift.copy(), t, float(g.s["exposure"][j]))
        raise AssertionError("every listener belongs to a group")  # pragma: no cover

    def predict(self, x_seq: np.ndarray, dt_seq: np.ndarray | float) -> np.ndarray:
        """Noise-free latent trajectories from the current state (the state is kept).

        Parameters
        ----------
        x_seq : ndarray, shape (H, 6) or (N, H, 6)
            Feature vectors of the next H steps (the same for all, or per listener).
        dt_seq : float or ndarray, shape (H,) or (N, H)
            Step lengths, seconds.

        Returns
        -------
        traj : ndarray, shape (N, H, 2)
            Latent ``(valence, arousal)`` after each step (drift held, no noise).
        """
        x_seq = np.asarray(x_seq, dtype=float)
        if x_seq.ndim == 2:
            x_seq = np.broadcast_to(x_seq, (self.n, *x_seq.shape))
        if x_seq.ndim != 3 or x_seq.shape[0] != self.n or x_seq.shape[2] != N_FEATURES:
            raise ValueError(f"x_seq must have shape (H, 6) or ({self.n}, H, 6), got "
                             f"{np.shape(x_seq)}")
        h = x_seq.shape[1]
        dt_seq = np.broadcast_to(np.asarray(dt_seq, dtype=float), (self.n, h))
        if not np.all(np.isfinite(dt_seq) & (dt_seq > 0)):
            raise ValueError("dt_seq must hold positive numbers of seconds")
        out = np.empty((self.n, h, 2))
        for g in self._groups:
            s = dict(g.s)
            for k in range(h):
                s = g.kernel.step_all(g.p, s, x_seq[g.rows, k], dt_seq[g.rows, k], None)
                out[g.rows, k] = g.kernel.latent(g.p, s)
        return out

    def predict_candidates(self, x_seq: np.ndarray, dt_seq: np.ndarray | float,
                           i: int = 0) -> np.ndarray:
        """Noise-free trajectories of listener ``i`` under C candidate sequences at once.

        For model-predictive planners: the listener's current state is copied
        C times and every candidate is stepped in one kernel call per step
        (the state is kept).

        Parameters
        ----------
        x_seq : ndarray, shape (C, H, 6)
            Feature vectors of each candidate's next H phrases.
        dt_seq : float or ndarray, shape (H,) or (C, H)
            Phrase lengths, seconds.
        i : int
            Which listener.

        Returns
        -------
        traj : ndarray, shape (C, H, 2)
            Latent ``(valence, arousal)`` after each step.
        """
        x_seq = np.asarray(x_seq, dtype=float)
        if x_seq.ndim != 3 or x_seq.shape[2] != N_FEATURES:
            raise ValueError(f"x_seq must have shape (C, H, 6), got {np.shape(x_seq)}")
        if not 0 <= i < self.n:
            raise IndexError(f"listener index {i} out of range for {self.n} listeners")
        c, h = x_seq.shape[:2]
        dt_seq = np.broadcast_to(np.asarray(dt_seq, dtype=float), (c, h))
        if not np.all(np.isfinite(dt_seq) & (dt_seq > 0)):
            raise ValueError("dt_seq must hold positive numbers of seconds")
        by_fam, local = self._locate()
        g, j = by_fam[str(self.families[i])], int(local[i])
        p = {k: np.repeat(v[j:j + 1], c, axis=0) for k, v in g.p.items()}
        s = {k: np.repeat(v[j:j + 1], c, axis=0) for k, v in g.s.items()}
        out = np.empty((c, h, 2))
        for k in range(h):
            s = g.kernel.step_all(p, s, x_seq[:, k], dt_seq[:, k], None)
            out[:, k] = g.kernel.latent(p, s)
        return out

    # ------------------------------------------------------------------ editing
    def _locate(self) -> tuple[dict[str, _Group], np.ndarray]:
        """Group of each family and each listener's index inside its group."""
        by_fam, local = {}, np.empty(self.n, dtype=int)
        for g in self._groups:
            by_fam[g.kernel.family] = g
            rows = np.arange(self.n)[g.rows]
            local[rows] = np.arange(rows.size)
        return by_fam, local

    def replace(self, rows: np.ndarray, other: FastListeners) -> None:
        """Overwrite listeners ``rows`` (parameters and state) with those of ``other``.

        ``other`` holds ``len(rows)`` listeners (e.g. fresh ones after a rest),
        of any families; :attr:`t_sec` becomes an array of per-listener times.
        """
        rows = np.asarray(rows, dtype=int).reshape(-1)
        if rows.size != other.n:
            raise ValueError(f"{rows.size} rows but {other.n} listeners to put there")
        t = np.broadcast_to(np.asarray(self.t_sec, dtype=float), (self.n,)).copy()
        t[rows] = other.t_sec
        if rows.size == self.n and np.array_equal(rows, np.arange(self.n)):
            self.params, self.families, self._groups = list(other.params), \
                other.families.copy(), other._groups
            self._perm, self._cp, self._cs = other._perm, other._cp, other._cs
            for name in ("rest", "state", "obs_noise"):
                setattr(self, name, getattr(other, name).copy())
            self.t_sec = t
            return
        mine, my_local = self._locate()
        theirs, their_local = other._locate()
        from_other = np.full(self.n, -1)
        from_other[rows] = np.arange(rows.size)
        for i, r in enumerate(rows):
            self.params[r] = other.params[i]
        self.families = self.families.copy()
        self.families[rows] = other.families
        present = [f for f in FAMILY_NAMES if f in set(self.families.tolist())]
        groups = []
        for fam in present:
            js = np.flatnonzero(self.families == fam)
            src = from_other[js]
            new = src >= 0

            def take(key: str, which: str, js=js, src=src, new=new, fam=fam) -> np.ndarray:
                parts = {}
                if (~new).any():
                    parts["mine"] = getattr(mine[fam], which)[key][my_local[js[~new]]]
                if new.any():
                    parts["theirs"] = getattr(theirs[fam], which)[key][their_local[src[new]]]
                ref = next(iter(parts.values()))
                out = np.empty((js.size, *ref.shape[1:]), dtype=ref.dtype)
                if "mine" in parts:
                    out[~new] = parts["mine"]
                if "theirs" in parts:
                    out[new] = parts["theirs"]
                return out

            proto = mine.get(fam) or theirs[fam]
            p = {k: take(k, "p") for k in proto.p}
            s = {k: take(k, "s") for k in proto.s}
            groups.append(_Group(KERNELS[fam], slice(None) if len(present) == 1 else js, p, s))
        self._layout(groups)
        for name in ("rest", "state", "obs_noise"):
            getattr(self, name)[rows] = getattr(other, name)
        self.t_sec = t
