"""Fit a listener to recorded sessions: music features played -> estimated states.

System identification of :class:`~st_agent.listener.model.ListenerParams`. Each
session contributes its ``phrase`` events (with the measured features in the
payload, ``features``: :meth:`MusicFeatures.as_dict`) and its ``state``
events (the estimator's output, confidence > 0). The noise- and drift-free
dynamics (:func:`~st_agent.listener.model.simulate`) are run on a regular grid from
the first observed state, and the baselines, sensitivities, preference, time
constants and habituation are fitted by bounded nonlinear least squares
(``scipy.optimize.least_squares``, time constants on a log scale) to the
observed valence and arousal. Reading sessions onto the grid (and simulating one of a
known listener): :mod:`~st_agent.listener.session_data`.

Uncertainty: the Gauss-Newton covariance ``s^2 (J^T J)^-1`` inflated by
``(1 + rho) / (1 - rho)``, where ``rho`` is the lag-one autocorrelation of the
residuals (consecutive estimator windows overlap, so residuals are not
independent). Drift and noise parameters are not identified from a few
minutes; they keep their defaults and are listed under ``fixed``.

Coordinates: the states are whatever the estimator reports (z-scored against
the listener's rest), so the fitted parameters describe the listener in the
estimator's coordinates: a baseline near 0 means "like at rest".

Held-out check: the last ``holdout_fraction`` of every session is left out of
a first fit and predicted from the start of the session; its R² (pooled over
valence and arousal, on states averaged over ``score_block_sec`` = 10 s
blocks, and on single windows) goes into ``listener.json``. The parameters written are
then refitted on all the data.

``listener.json`` schema (version 1)::

    {"format": "st-agent-listener", "version": 1,
     "params": {name: value},          # ListenerParams, all fields
     "stds": {name: std},              # fitted parameters only
     "fixed": [names not fitted],
     "minutes_used": float, "sessions": [folders],
     "heldout_r2": float, "heldout_r2_valence": float, "heldout_r2_arousal": float,
     "heldout_r2_window": float, "score_block_sec": float,
     "residual_std": [valence, arousal], "dt_sec": float,
     "subject": str | null,            # with --subject
     "quality": {"warnings": [str], "at_bounds": [names], "forced": bool,
                 "thresholds": {"min_r2": float, "warn_r2": float, "max_at_bounds": int}}}

Quality gate: :mod:`st_agent.listener.fit_quality` (refusal and warning thresholds).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro
from pydantic import BaseModel, ConfigDict, Field

from st_agent.errors import DataError
from st_agent.listener.family import AnyListenerParams, params_from_dict
from st_agent.listener.fit_quality import (
    MAX_AT_BOUNDS,
    MIN_R2,
    WARN_R2,
    FitQuality,
    FitQualityError,
    assess_fit,
)
from st_agent.listener.model import (
    PARAM_RANGES,
    ListenerParams,
    simulate,
)
from st_agent.listener.session_data import (
    MIN_MINUTES,
    FitError,
    SessionData,
    load_session_data,
    simulated_session,
)

__all__ = [
    "FIT_PARAMS",
    "MIN_MINUTES",
    "FitError",
    "FitListenerConfig",
    "FitQuality",
    "FitQualityError",
    "FitResult",
    "ListenerFileError",
    "SessionData",
    "assess_fit",
    "fit_listener",
    "load_fit",
    "load_session_data",
    "run_fit_listener",
    "simulated_session",
]

logger = logging.getLogger(__name__)

#: Parameters the fit estimates (the others keep their values in ``start``).
FIT_PARAMS = ("baseline_valence", "baseline_arousal", "arousal_tempo", "arousal_density",
              "arousal_loudness", "valence_mode", "valence_register", "preference",
              "tau_arousal_sec", "tau_valence_sec", "habituation_strength",
              "habituation_tau_sec")
_LOG = frozenset({"tau_arousal_sec", "tau_valence_sec", "habituation_tau_sec"})

FORMAT = "st-agent-listener"


# --------------------------------------------------------------------------- fit


def _to_theta(p: ListenerParams) -> np.ndarray:
    return np.array([math.log(getattr(p, n)) if n in _LOG else getattr(p, n)
                     for n in FIT_PARAMS])


def _from_theta(theta: np.ndarray, base: ListenerParams) -> ListenerParams:
    vals = {}
    for n, t in zip(FIT_PARAMS, theta, strict=True):
        lo, hi = PARAM_RANGES[n]
        vals[n] = float(np.clip(math.exp(t) if n in _LOG else t, lo, hi))
    return replace(base, **vals)


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = [math.log(PARAM_RANGES[n][0]) if n in _LOG else PARAM_RANGES[n][0] for n in FIT_PARAMS]
    hi = [math.log(PARAM_RANGES[n][1]) if n in _LOG else PARAM_RANGES[n][1] for n in FIT_PARAMS]
    return np.array(lo), np.array(hi)


def _predict(p: ListenerParams, s: SessionData) -> np.ndarray:
    return simulate(p, s.x, s.dt_sec, s.start_state())


def _residuals(theta: np.ndarray, base: ListenerParams, sessions: list[SessionData],
               masks: list[np.ndarray]) -> np.ndarray:
    p = _from_theta(theta, base)
    out = []
    for s, m in zip(sessions, masks, strict=True):
        out.append((_predict(p, s) - s.obs)[m].ravel())
    return np.concatenate(out)


def _blocks(pred: np.ndarray, obs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Means over consecutive blocks of ``k`` rows (rows with NaN obs left out)."""
    ok = np.isfinite(obs).all(axis=1)
    pb, ob = [], []
    for i in range(0, len(obs) - k + 1, k):
        m = ok[i:i + k]
        if m.sum() >= k / 2:
            pb.append(pred[i:i + k][m].mean(axis=0))
            ob.append(obs[i:i + k][m].mean(axis=0))
    return np.array(pb).reshape(-1, 2), np.array(ob).reshape(-1, 2)


def _r2(pred: np.ndarray, obs: np.ndarray) -> tuple[float, float, float]:
    """R² per axis (valence, arousal) and pooled, over rows where obs is finite."""
    ok = np.isfinite(obs).all(axis=1)
    e, o = pred[ok] - obs[ok], obs[ok]
    sse = (e ** 2).sum(axis=0)
    sst = ((o - o.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = 1 - sse / sst
    return float(per[0]), float(per[1]), float(1 - sse.sum() / sst.sum())


@dataclass
class FitResult:
    """Fitted listener and how well it predicts.

    Parameters
    ----------
    params : ListenerParams
        Fitted parameters (unfitted ones from ``start``).
    stds : dict of str to float
        Standard errors of the fitted parameters (same units).
    minutes_used : float
        Minutes of music with observed states across the sessions.
    heldout_r2, heldout_r2_valence, heldout_r2_arousal : float
        R² of the held-out tails predicted by a fit without them, on states
        averaged over blocks of ``score_block_sec`` (NaN when
        ``holdout_fraction`` is 0).
    heldout_r2_window : float
        The same on single estimator windows: bounded by the estimator's
        window-to-window noise, which no listener model can predict.
    residual_std : tuple of float
        Residual std (valence, arousal) of the final fit.
    """

    params: ListenerParams
    stds: dict[str, float]
    minutes_used: float
    heldout_r2: float = math.nan
    heldout_r2_valence: float = math.nan
    heldout_r2_arousal: float = math.nan
    heldout_r2_window: float = math.nan
    residual_std: tuple[float, float] = (math.nan, math.nan)
    sessions: list[str] = field(default_factory=list)
    dt_sec: float = 0.5
    score_block_sec: float = 10.0
    subject: str | None = None
    """The subject whose sessions were fitted (``--subject``)."""
    quality: dict[str, Any] = field(default_factory=dict)
    """The quality gate's verdict (:meth:`FitQuality.as_json`), once assessed."""

    def to_json(self) -> dict[str, Any]:
        """The ``listener.json`` document (module docstring)."""
        extra: dict[str, Any] = {"subject": self.subject} if self.subject else {}
        if self.quality:
            extra["quality"] = self.quality
        return extra | {"format": FORMAT, "version": 1, "params": self.params.as_dict(),
                "stds": self.stds, "fixed": [n for n in PARAM_RANGES if n not in FIT_PARAMS],
                "minutes_used": self.minutes_used, "sessions": self.sessions,
                "heldout_r2": self.heldout_r2, "heldout_r2_valence": self.heldout_r2_valence,
                "heldout_r2_arousal": self.heldout_r2_arousal,
                "heldout_r2_window": self.heldout_r2_window,
                "score_block_sec": self.score_block_sec,
                "residual_std": list(self.residual_std), "dt_sec": self.dt_sec}


def _fit(sessions: list[SessionData], masks: list[np.ndarray], start: ListenerParams,
         max_nfev: int) -> tuple[ListenerParams, dict[str, float], np.ndarray]:
    from scipy.optimize import least_squares

    lo, hi = _bounds()
    theta0 = np.clip(_to_theta(start), lo + 1e-9, hi - 1e-9)
    res = least_squares(_residuals, theta0, bounds=(lo, hi), args=(start, sessions, masks),
                        max_nfev=max_nfev, x_scale="jac")
    p = _from_theta(res.x, start)
    r = res.fun
    n, k = r.size, len(FIT_PARAMS)
    rho = float(np.clip(np.corrcoef(r[:-2:2], r[2::2])[0, 1], 0, 0.99)) if n > 8 else 0.0
    s2 = float(r @ r) / max(n - k, 1) * (1 + rho) / (1 - rho)
    cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    stds = {}
    for i, name in enumerate(FIT_PARAMS):
        stds[name] = float(getattr(p, name) * sd[i]) if name in _LOG else float(sd[i])
    return p, stds, r


def fit_listener(sessions: list[SessionData], start: ListenerParams | None = None,
                 holdout_fraction: float = 0.25, min_minutes: float = MIN_MINUTES,
                 max_nfev: int = 200, score_block_sec: float = 10.0) -> FitResult:
    """Fit listener parameters to sessions.

    Parameters
    ----------
    sessions : list of SessionData
        From :func:`load_session_data` or built from a simulation.
    start : ListenerParams, optional
        Initial guess and values of the parameters not fitted (defaults).
    holdout_fraction : float
        Share at the end of each session held out for the R² check, in [0, 0.5].
    min_minutes : float
        Least minutes of music with observed states required.
    max_nfev : int
        Most residual evaluations per least-squares run.
    score_block_sec : float
        Held-out states and predictions are averaged over blocks this long
        before R² (the model predicts the slow state, not window noise).

    Returns
    -------
    result : FitResult

    Raises
    ------
    FitError
        With fewer than ``min_minutes`` minutes of music and states.
    """
    if not sessions:
        raise FitError("no sessions to fit")
    if not 0 <= holdout_fraction <= 0.5:
        raise ValueError(f"holdout_fraction must be in [0, 0.5], got {holdout_fraction!r}")
    start = start or ListenerParams()
    minutes = sum(s.music_minutes for s in sessions)
    if minutes < min_minutes:
        raise FitError(f"{minutes:.1f} minutes of music with estimated states in "
                       f"{len(sessions)} session(s); the fit needs at least {min_minutes:g} "
                       f"minutes (15 or more for held-out R² >= 0.7, see benchmarks/bench_fit.py)")
    full = [np.isfinite(s.obs).all(axis=1) for s in sessions]
    r2 = (math.nan, math.nan, math.nan)
    r2_window = math.nan
    if holdout_fraction > 0:
        train, test = [], []
        for m in full:
            cut = round(len(m) * (1 - holdout_fraction))
            tr, te = m.copy(), m.copy()
            tr[cut:] = False
            te[:cut] = False
            train.append(tr)
            test.append(te)
        p_tr, _, _ = _fit(sessions, train, start, max_nfev)
        k = max(1, round(score_block_sec / sessions[0].dt_sec))
        pb, ob, pw, ow = [], [], [], []
        for s, m in zip(sessions, test, strict=True):
            cut = int(np.argmax(m)) if m.any() else len(m)
            pred = _predict(p_tr, s)[cut:]
            b = _blocks(pred, s.obs[cut:], k)
            pb.append(b[0])
            ob.append(b[1])
            pw.append(pred[m[cut:]])
            ow.append(s.obs[cut:][m[cut:]])
        r2 = _r2(np.concatenate(pb), np.concatenate(ob))
        r2_window = _r2(np.concatenate(pw), np.concatenate(ow))[2]
        logger.info("held-out R² %.3f (valence %.3f, arousal %.3f; per window %.3f)",
                    r2[2], r2[0], r2[1], r2_window)
        start = p_tr
    params, stds, resid = _fit(sessions, full, start, max_nfev)
    resid = resid.reshape(-1, 2)
    return FitResult(params, stds, minutes, r2[2], r2[0], r2[1], r2_window,
                     (float(resid[:, 0].std()), float(resid[:, 1].std())),
                     [s.name for s in sessions], sessions[0].dt_sec, score_block_sec)


class ListenerFileError(DataError):
    """A ``listener.json`` that is missing, malformed or out of range (names file and field)."""


class _ListenerDoc(BaseModel):
    """The fields of ``listener.json`` that loading uses; the rest are ignored.

    ``params`` values are typed and ranged by the family's parameter class
    (``RANGES``, e.g. :data:`~st_agent.listener.model.PARAM_RANGES`).
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    format: Literal["st-agent-listener"]
    version: Literal[1]
    params: Annotated[dict[str, Any], Field(max_length=64)]


def load_fit(path: str | Path) -> AnyListenerParams:
    """Read the parameters of a ``listener.json`` written by :func:`run_fit_listener`.

    The fit writes first-order parameters; a file whose ``params`` carry a
    ``"family"`` key (:func:`~st_agent.listener.family.params_to_dict`) holds a
    listener of that family. The file is read only if it is a regular file of at
    most 4 MiB; every parameter is checked against its family's range.

    Raises
    ------
    ListenerFileError
        When the file is missing, not a listener file, or a parameter is unknown,
        not a number or out of range (a ``ValueError``; the message names the field).
    """
    from st_agent.policies.schema import check_format, read_json_file, validate_doc

    path = Path(path)
    hint = "write one with `st-agent fit-listener`"
    raw = read_json_file(path, "listener.json", hint, error=ListenerFileError)
    check_format(raw, path, FORMAT, (1,), hint, error=ListenerFileError)
    doc = validate_doc(_ListenerDoc, raw, path, f"{FORMAT} file", error=ListenerFileError)
    try:
        return params_from_dict(doc.params)
    except (TypeError, ValueError) as e:
        raise ListenerFileError(f"{path}: field params: {e}") from e


# --------------------------------------------------------------------------- entry point


@dataclass
class FitListenerConfig:
    """Fit a simulated listener to recorded sessions (``st-agent fit-listener``)."""

    sessions: Annotated[list[Path], tyro.conf.Positional] = field(default_factory=list)
    """Session folders recorded with phrase features and estimated states (or
    ``--subject``)."""
    subject: str = ""
    """Fit every session of this subject (pseudonym, ``st-agent subjects``), oldest
    first; the fit goes to the subject's folder unless ``--out`` says otherwise."""
    sessions_root: Path | None = None
    """With --subject: search this folder of recordings; default runs/ plus the
    sessions the subject registry knows."""
    out: Annotated[Path | None, tyro.conf.arg(aliases=["-o"])] = None
    """Where to write the fitted listener (JSON); default ``listener.json``, with
    --subject ``<subject folder>/listener.json``."""
    min_r2: float = MIN_R2
    """Refuse a fit whose held-out R² (10 s blocks) is below this."""
    warn_r2: float = WARN_R2
    """Warn (and record the warning in the file) below this held-out R²."""
    max_at_bounds: int = MAX_AT_BOUNDS
    """Refuse a fit with more fitted parameters than this at a bound of their range."""
    force: bool = False
    """Write a refused fit anyway; the reasons are recorded in its ``quality`` block."""
    dt_sec: float = 0.5
    """Simulation grid step, seconds (the estimator hop)."""
    holdout_fraction: float = 0.25
    """Share at the end of each session held out to measure R²."""
    min_minutes: float = MIN_MINUTES
    """Least minutes of music with estimated states accepted."""
    score_block_sec: float = 10.0
    """Held-out R² is computed on states averaged over blocks this long."""
    key_file: Path | None = None
    """Key file for encrypted sessions."""


def run_fit_listener(cfg: FitListenerConfig) -> FitResult:
    """Load the sessions, fit, check the quality gate, write the file; return the result.

    The result's ``quality`` says what the gate found; the path written is
    ``result.quality["path"]``.

    Raises
    ------
    FitQualityError
        When the gate refuses the fit and ``cfg.force`` is False (nothing is written).
    FitError
        When the sessions cannot be fitted.
    """
    from st_agent.listener.fit_quality import fit_inputs

    sessions, out = fit_inputs(cfg)
    data = [load_session_data(f, cfg.dt_sec, key=cfg.key_file) for f in sessions]
    result = fit_listener(data, holdout_fraction=cfg.holdout_fraction,
                          min_minutes=cfg.min_minutes, score_block_sec=cfg.score_block_sec)
    result.subject = cfg.subject or None
    quality = assess_fit(result, cfg.min_r2, cfg.warn_r2, cfg.max_at_bounds)
    if quality.refusals and not cfg.force:
        raise FitQualityError(f"fit of {len(sessions)} session(s) refused, {out} not written: "
                              + "; ".join(quality.refusals)
                              + ". --force writes it anyway (the reasons are recorded in it)")
    for w in quality.warnings:
        logger.warning("fit-listener: %s", w)
    result.quality = quality.as_json(cfg.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    result.quality["path"] = str(out)
    logger.info("wrote %s (%.1f min, held-out R² %.3f)", out, result.minutes_used,
                result.heldout_r2)
    return result
