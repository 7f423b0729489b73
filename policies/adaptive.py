"""Adaptive model-based controller: identify this listener online, plan by MPC.

The controller sees only the contract observation (:mod:`st_agent.contract`):
the latest estimate ``y_t`` (valence, arousal), the knobs ``k_t`` that played
while it was measured, and the target. It keeps its own short memory (the
previous estimate) and, per axis ``j``, a linear response model

.. code-block:: text

    y_t[j] = theta_j . z_t + e_t,    z_t = [1, y_{t-1}[j], phi(k_t, x_t)]
    phi(k, x) = [(1 - r) * (kv - 0.5), (1 - r) * major(kv), (1 - r) * (kt - 0.5),
                 (1 - r) * (ke - 0.5), (1 - r) * slow_minor(k), r, r * x]

``r`` is 1 for a rest phrase (energy knob at or below
:data:`~st_agent.contract.REST_ENERGY`: silence, where the music terms do not
apply), ``major(kv)`` is +1 from 0.5 (the composer's major family) and -1
below, ``slow_minor`` is ``[kv < 0.5] * 2 * max(0, 0.5 - kt)`` (slow minor
music: an effect that differs between listeners, soothing to some, agitating to
others), and ``x`` in [0, 1] is the controller's own estimate of the listener's
*exposure* to music: it rises toward 1 while music plays (time constant
``exposure_tau_sec``, about the population's) and holds in silence, so that the
model can learn that a pause after music calms more than a pause before it
(Bernardi, Porta & Sleight 2006). The controller knows the phrase lengths from
the tempo knob (4 bars of 4 beats). The model is
identified by Bayesian linear regression with a random-walk (Kalman) update of
``theta``: the prior ``N(mean, cov)`` is fitted to a population of simulated
listeners (:func:`fit_prior`), each phrase adds one observation, and a small
process noise lets the estimate follow a listener whose response drifts or
adapts. The next knobs come from model-predictive control: every destination on
a grid inside the safety bounds (and the current knobs) is reached at the rate
limit and held; the model predicts the estimate over ``horizon`` phrases; the
destination with the lowest mean target loss (the env's target region, see
:func:`target_loss`) plus a move penalty wins, and its first step is the
action. A decision costs about 1 ms of CPU (``benchmarks/bench_control.py``).

Everything works on a batch of sessions at once (rows of ``obs``), so the same
object drives one live session or many simulated ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.contract import SafetyBounds
from st_agent.policies.response import (
    BASIS_NAMES,
    N_REG,
    ResponsePrior,
    basis,
    exposure_path,
    fit_prior,
    next_exposure,
    phrase_sec,
    prior_to_dict,
    regressors,
)

__all__ = [
    "BASIS_NAMES",
    "AdaptiveConfig",
    "AdaptiveController",
    "ResponsePrior",
    "basis",
    "default_regions",
    "exposure_path",
    "fit_prior",
    "next_exposure",
    "phrase_sec",
    "prior_to_dict",
    "regions_for",
    "regressors",
    "target_loss",
]

def target_loss(y: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Distance of estimate(s) ``y`` to a target region (0 inside it).

    Parameters
    ----------
    y : ndarray, shape (..., 2)
        Estimates (valence, arousal).
    box : ndarray, shape (..., 4)
        Region ``(v_lo, v_hi, a_lo, a_hi)``; a point target has ``lo == hi``.

    Returns
    -------
    loss : ndarray, shape (...,)
        Euclidean distance to the region.
    """
    y = np.asarray(y, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    lo, hi = box[..., 0::2], box[..., 1::2]
    d = np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0)
    return np.sqrt(np.sum(d * d, axis=-1))


def default_regions() -> dict[tuple[float, float], tuple[float, float, float, float]]:
    """Target regions of the presets, keyed by their nominal point (estimator units)."""
    from st_agent import contract

    regions = getattr(contract, "TARGET_REGIONS", {})
    out = {}
    for name, point in contract.TARGET_PRESETS.items():
        if name in regions:
            (vl, vh), (al, ah) = regions[name]
            out[tuple(point)] = (float(vl), float(vh), float(al), float(ah))
    return out


def regions_for(target: np.ndarray, regions: dict[tuple[float, float], tuple[float, ...]]
                ) -> np.ndarray:
    """Region box of each row's nominal target point, shape (N, 4).

    Rows whose point is a known preset's get its region; the others a point target.
    """
    target = np.asarray(target, dtype=np.float64)
    box = np.repeat(target, 2, axis=1)  # (v, v, a, a): a point
    for point, reg in regions.items():
        hit = np.all(np.abs(target - point) < 1e-4, axis=1)
        box[hit] = reg
    return box


@dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of :class:`AdaptiveController` (tuned by ``policies/tuning.py``)."""

    horizon: int = 6
    """Phrases the MPC predicts ahead."""
    grid: int = 5
    """Destination grid points per knob axis (inside the bounds)."""
    move_weight: float = 0.02
    """Cost of the first knob move, per squared rate limit (distance units)."""
    process_noise: float = 0.01
    """Random-walk variance added to theta per phrase, as a fraction of the prior's."""
    bias_process_noise: float = 0.002
    """Extra random-walk variance of the bias per phrase (drift, adaptation)."""
    observer_gain: float = 0.7
    """Weight of the measured estimate against the model's one-step prediction in the
    MPC's start state (1: trust the measurement alone)."""
    max_pole: float = 0.95
    """The previous-estimate coefficient is clipped to [0, max_pole] when predicting."""
    min_confidence: float = 0.2
    """Estimates with lower confidence (or flagged NaN) teach the model nothing."""
    learn: bool = True
    """Update the model online (False: plan with the population prior only)."""
    exposure_tau_sec: float = 60.0
    """Time constant of the controller's exposure estimate (the population draws 30-120 s)."""
    guard_margin: float = 0.25
    """Feedback guard: when the measured arousal is more than this above (below) the
    target band, only moves that lower (raise) tempo + energy are allowed (inf: off).
    0.25 is a little more than one standard deviation of the estimator's noise (0.2)."""

    def __post_init__(self) -> None:
        for name in ("horizon", "grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "horizon"
                                                                     else 2):
                raise ValueError(f"{name} must be an int >= {1 if name == 'horizon' else 2}, "
                                 f"got {v!r}")
        for name in ("move_weight", "process_noise", "bias_process_noise", "min_confidence",
                     "guard_margin"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v >= 0
                    and (math.isfinite(v) or name == "guard_margin")):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not (isinstance(self.exposure_tau_sec, int | float)
                and math.isfinite(self.exposure_tau_sec) and self.exposure_tau_sec > 0):
            raise ValueError(f"exposure_tau_sec must be > 0, got {self.exposure_tau_sec!r}")
        for name in ("observer_gain", "max_pole"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")


@dataclass
class _Sessions:
    """Per-row internal state of :class:`AdaptiveController` (N sessions)."""

    theta: np.ndarray  # (N, 2, R)
    cov: np.ndarray  # (N, 2, R, R)
    prev_y: np.ndarray  # (N, 2)
    prev_ok: np.ndarray  # (N,) bool: prev_y is a usable estimate
    started: np.ndarray  # (N,) bool: a decision was made this episode
    n_updates: np.ndarray  # (N,) int
    exposure: np.ndarray  # (N,): estimated exposure at the start of the next phrase


class AdaptiveController:
    """Online identification (Bayesian linear regression) + model-predictive control.

    ``predict(obs)`` like stable-baselines3; one observation of shape (n_obs,) or
    a batch (N, n_obs), one session per row (the batch size must stay the same
    within an episode; :meth:`reset` starts new episodes).

    Parameters
    ----------
    prior : ResponsePrior
        Population prior (:func:`fit_prior` or a shipped JSON).
    bounds : SafetyBounds, optional
        The session's ranges and rate limit (default: full range, 0.25).
    config : AdaptiveConfig, optional
    regions : dict, optional
        ``nominal (valence, arousal) -> (v_lo, v_hi, a_lo, a_hi)``: the region the
        loss measures against when the observation's target is that point
        (:func:`target_loss`); default :func:`default_regions` (the presets); other
        targets count as points.

    Examples
    --------
    >>> from st_agent.contract import build_observation
    >>> from st_agent.types import Knobs
    >>> ctrl = AdaptiveController(ResponsePrior(np.zeros((2, N_REG)),
    ...                           np.tile(np.eye(N_REG), (2, 1, 1)), np.ones(2)))
    >>> ctrl.predict(build_observation((0.0, 0.0), (0.2, -0.5), Knobs(0.5, 0.5, 0.5)))[0].shape
    (3,)
    """

    def __init__(self, prior: ResponsePrior, bounds: SafetyBounds | None = None,
                 config: AdaptiveConfig | None = None,
                 regions: dict[tuple[float, float], tuple[float, ...]] | None = None) -> None:
        if not isinstance(prior, ResponsePrior):
            raise TypeError(f"prior must be a ResponsePrior, got {type(prior).__name__}")
        self.prior = prior
        self.bounds = bounds if bounds is not None else SafetyBounds()
        if not isinstance(self.bounds, SafetyBounds):
            raise TypeError(f"bounds must be a SafetyBounds, got {type(bounds).__name__}")
        self.config = config if config is not None else AdaptiveConfig()
        self.regions = default_regions() if regions is None else dict(regions)
        for point, reg in self.regions.items():
            if len(point) != 2 or len(reg) != 4 or reg[0] > reg[1] or reg[2] > reg[3]:
                raise ValueError(f"regions must map (valence, arousal) to (v_lo, v_hi, a_lo, "
                                 f"a_hi) with lo <= hi, got {point!r}: {reg!r}")
        c = self.config
        g = np.linspace(0.0, 1.0, c.grid)
        lo, hi = self.bounds.lo, self.bounds.hi
        dest = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
        self._dest = np.unique(lo + dest * (hi - lo), axis=0)  # (C, 3)
        self._steps = np.arange(1, c.horizon + 1, dtype=np.float64)  # (H,)
        q = c.process_noise * np.diagonal(prior.cov, axis1=-2, axis2=-1).copy()
        q[:, 0] += c.bias_process_noise
        self._q = q  # (2, R) random-walk variance per phrase
        self._s: _Sessions | None = None
        self._last_plan: dict[str, np.ndarray] | None = None
        self._last_move: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every session (the next ``predict`` starts new episodes)."""
        self._s = None

    def _ensure(self, n: int) -> _Sessions:
        if self._s is None or self._s.theta.shape[0] != n:
            p = self.prior
            self._s = _Sessions(np.tile(p.mean, (n, 1, 1)), np.tile(p.cov, (n, 1, 1, 1)),
                                np.zeros((n, 2)), np.zeros(n, bool), np.zeros(n, bool),
                                np.zeros(n, int), np.zeros(n))
        return self._s

    def reset_rows(self, rows: np.ndarray) -> None:
        """Start new episodes in batch rows ``rows`` (vectorised training)."""
        if self._s is None:
            return
        s, p = self._s, self.prior
        s.theta[rows] = p.mean
        s.cov[rows] = p.cov
        s.prev_ok[rows] = False
        s.started[rows] = False
        s.n_updates[rows] = 0
        s.exposure[rows] = 0.0

    @property
    def theta(self) -> np.ndarray:
        """Posterior mean of every session, shape (N, 2, N_REG) (prior before any call)."""
        return (self._s.theta if self._s is not None else self.prior.mean[None]).copy()

    @property
    def theta_cov(self) -> np.ndarray:
        """Posterior covariance of every session, shape (N, 2, N_REG, N_REG)."""
        return (self._s.cov if self._s is not None else self.prior.cov[None]).copy()

    def belief(self) -> np.ndarray:
        """The online estimate as features, shape (N, 4 * N_REG): posterior mean and
        log standard deviation of theta, both axes (a belief state for a policy)."""
        th, cv = self.theta, self.theta_cov
        sd = np.sqrt(np.maximum(np.diagonal(cv, axis1=-2, axis2=-1), 1e-12))
        return np.concatenate([th.reshape(len(th), -1), np.log(sd).reshape(len(sd), -1)],
                              axis=1)

    # ------------------------------------------------------------------ learning
    def _update(self, s: _Sessions, rows: np.ndarray, y: np.ndarray, z_all: np.ndarray
                ) -> None:
        """Kalman / BLR update of ``theta`` in ``rows`` with the transition to ``y``."""
        z = z_all[rows]  # (n, 2, R)
        th, cv = s.theta[rows], s.cov[rows]
        pz = np.einsum("najk,naj->nak", cv, z)  # (n, 2, R), P z (P symmetric)
        var = np.einsum("nak,nak->na", z, pz) + self.prior.noise_var  # (n, 2)
        resid = y[rows] - np.einsum("nak,nak->na", z, th)
        gain = pz / var[..., None]
        s.theta[rows] = th + gain * resid[..., None]
        s.cov[rows] = cv - gain[..., :, None] * pz[..., None, :]
        s.n_updates[rows] += 1

    # ------------------------------------------------------------------ planning
    def _plan(self, theta: np.ndarray, y0: np.ndarray, k0: np.ndarray, target: np.ndarray,
              y_meas: np.ndarray, exposure: np.ndarray) -> np.ndarray:
        """Best first knob move per row, shape (N, 3), in knob units."""
        c, md = self.config, self.bounds.max_delta
        n = len(y0)
        dest = np.concatenate([np.broadcast_to(self._dest, (n, *self._dest.shape)),
                               k0[:, None, :]], axis=1)  # (N, C, 3); last: hold
        step = np.clip(dest - k0[:, None, :], -md, md)  # per-phrase move at the rate limit
        reach = np.abs(dest - k0[:, None, :])
        frac = np.minimum(self._steps[None, None, :, None] * md,
                          reach[:, :, None, :]) * np.sign(step)[:, :, None, :]
        path = k0[:, None, None, :] + frac  # (N, C, H, 3)
        nc = dest.shape[1]
        expo = np.empty(path.shape[:-1])  # (N, C, H): exposure when each phrase starts
        e = np.broadcast_to(exposure[:, None], (n, nc))
        for h in range(c.horizon):
            expo[:, :, h] = e
            e = next_exposure(e, path[:, :, h], c.exposure_tau_sec)
        phi = basis(path, expo).reshape(n, nc * c.horizon, len(BASIS_NAMES))  # (N, C*H, B)
        bias = (phi @ np.swapaxes(theta[..., 2:], 1, 2)).reshape(n, nc, c.horizon, 2)
        bias += theta[:, None, None, :, 0]
        pole = np.clip(theta[..., 1], 0.0, c.max_pole)  # (N, 2)
        y = np.broadcast_to(y0[:, None, :], (n, nc, 2))
        cost = np.zeros((n, nc))
        box_n = regions_for(target, self.regions)  # (N, 4)
        box = box_n[:, None, :]
        for h in range(c.horizon):
            y = pole[:, None, :] * y + bias[:, :, h]
            cost += target_loss(y, box)
        cost /= c.horizon
        loss = cost.copy()  # mean predicted distance, before the move penalty
        first = path[:, :, 0] - k0[:, None, :]
        cost += c.move_weight * np.sum((first / md) ** 2, axis=-1)
        if math.isfinite(c.guard_margin):
            # feedback guard: far above (below) the band, only calming (energising) moves
            te = first[..., 1] + first[..., 2]  # (N, C)
            high = (y_meas[:, 1] > box_n[:, 3] + c.guard_margin)[:, None]
            low = (y_meas[:, 1] < box_n[:, 2] - c.guard_margin)[:, None]
            bad = (high & (te >= -1e-9)) | (low & (te <= 1e-9))
            bad &= ~np.all(bad, axis=1, keepdims=True)  # at a bound: nothing is allowed
            cost = np.where(bad, np.inf, cost)
            guard = np.where(high[:, 0], 1, np.where(low[:, 0], -1, 0))
        else:
            guard = np.zeros(n, int)
        best = np.argmin(cost, axis=1)
        rows = np.arange(n)
        # what the decision used, for explain() (the reason in words)
        self._last_plan = {"destination": dest[rows, best], "loss": loss[rows, best],
                           "loss_hold": loss[:, -1], "y_end": y[rows, best],
                           "y_end_hold": y[:, -1], "region": box_n, "guard": guard,
                           "estimate": y_meas}
        return first[rows, best]

    # ------------------------------------------------------------------ API
    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Update each session's model with its latest phrase, then plan.

        Parameters
        ----------
        obs : ndarray, shape (n_obs,) or (N, n_obs)
            Contract observation(s) (:func:`st_agent.contract.build_observation`).
        episode_start : ndarray of bool, shape (N,), optional
            Rows starting a new episode (SB3 convention).

        Returns
        -------
        action : ndarray, shape (3,) or (N, 3), float32
            Knob change as a fraction of the rate limit, in [-1, 1].
        state : None
        """
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim not in (1, 2) or o.shape[-1] < 11:
            raise ValueError(f"obs must have shape (n_obs,) or (N, n_obs) with n_obs >= 11, "
                             f"got {o.shape}")
        single = o.ndim == 1
        o = np.atleast_2d(o)
        s = self._ensure(len(o))
        if episode_start is not None:
            self.reset_rows(np.flatnonzero(np.asarray(episode_start, dtype=bool)))
        y, target, knobs = o[:, 0:2], o[:, 2:4], o[:, 6:9]
        ok = (o[:, 10] < 0.5) & (o[:, 9] >= self.config.min_confidence)
        learn = ok & s.prev_ok & s.started
        if o.shape[1] >= 13:  # the history's previous estimate must be the one we saw
            learn &= np.all(np.abs(o[:, 11:13] - s.prev_y) < 1e-3, axis=1)
        rows = np.flatnonzero(learn)
        z = regressors(s.prev_y, knobs, s.exposure)  # (N, 2, R): the phrase that just played
        pred = np.einsum("nak,nak->na", z, s.theta)
        if self.config.learn and rows.size:
            self._update(s, rows, y, z)
        if self.config.learn:
            s.cov += self._q[None, :, :, None] * np.eye(N_REG)
        # the knobs of a started session played a phrase: the exposure moves on
        s.exposure = np.where(s.started, next_exposure(s.exposure, knobs,
                                                       self.config.exposure_tau_sec), s.exposure)
        g = self.config.observer_gain
        y0 = np.where((learn & (s.n_updates > 0))[:, None], g * y + (1 - g) * pred, y)
        move = self._plan(s.theta, y0, knobs, target, y, s.exposure)
        self._last_move = (knobs.copy(), move, s.exposure.copy())
        s.prev_y = np.where(ok[:, None], y, s.prev_y)
        s.prev_ok = ok | s.prev_ok
        s.started[:] = True
        action = np.clip(move / self.bounds.max_delta, -1.0, 1.0).astype(np.float32)
        return (action[0] if single else action), None

    def explain(self, row: int = 0) -> dict[str, Any] | None:
        """What the last decision of session ``row`` used, for its reason in words.

        Returns
        -------
        info : dict or None
            ``kind`` ``"adaptive"``; ``destination`` (3,): the knobs the plan heads
            for at the rate limit; ``move`` (3,): its first step, knob units;
            ``loss`` / ``loss_hold``: the identified model's mean predicted distance
            to the target region over ``horizon`` phrases for the plan / for
            holding the knobs; ``y_end`` / ``y_end_hold`` (2,): the predicted
            (valence, arousal) after ``horizon`` phrases; ``region`` (4,);
            ``guard``: +1 when the feedback guard allowed only calming moves, -1
            only energising ones, 0 neither; ``estimate`` (2,); ``effect`` (3,):
            the model's predicted change of the knob's own axis (valence for the
            valence knob, arousal for tempo and energy) after ``horizon`` phrases
            from this knob's step alone; ``n_updates``: phrases learnt from.
            None before the first decision.
        """
        if self._last_plan is None or self._last_move is None or self._s is None:
            return None
        c = self.config
        knobs, move, expo = (x[row] for x in self._last_move)
        theta = self._s.theta[row]  # (2, R)
        pole = np.clip(theta[:, 1], 0.0, c.max_pole)
        gain = (1.0 - pole ** c.horizon) / (1.0 - pole)  # (2,) sum of the impulse response
        phi0 = basis(knobs, expo)
        effect = []
        for j in range(3):
            k1 = knobs.copy()
            k1[j] += move[j]
            axis = 0 if j == 0 else 1
            effect.append(float((basis(k1, expo) - phi0) @ theta[axis, 2:] * gain[axis]))
        plan = {k: np.asarray(v)[row] for k, v in self._last_plan.items()}
        return {"kind": "adaptive", "move": move.tolist(), "effect": effect,
                "horizon": c.horizon, "n_updates": int(self._s.n_updates[row]),
                **{k: (v.tolist() if v.ndim else v.item()) for k, v in plan.items()}}
