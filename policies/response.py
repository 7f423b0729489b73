"""The adaptive controller's response model: knob basis, exposure, population prior.

Per axis ``j`` (valence, arousal) the estimate after a phrase is modelled as

.. code-block:: text

    y_t[j] = theta_j . z_t + e_t,    z_t = [1, y_{t-1}[j], phi(k_t, x_t)]

with the knob basis ``phi`` of :func:`basis` (documented in
:mod:`st_agent.policies.adaptive`) and the controller's own estimate ``x`` of the
listener's exposure to music (:func:`next_exposure`). :class:`ResponsePrior` is
the population prior of ``theta`` (:func:`fit_prior`: empirical Bayes over
simulated listeners).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.contract import REST_ENERGY
from st_agent.types import BPM_MAX, BPM_MIN

__all__ = ["BASIS_NAMES", "N_REG", "PRIOR_FORMAT", "ResponsePrior", "basis", "exposure_path",
           "fit_prior", "next_exposure", "phrase_sec", "prior_to_dict", "regressors"]

#: Entries of :func:`basis`, in order.
BASIS_NAMES = ("valence", "major", "tempo", "energy", "slow_minor", "rest", "rest_exposure")
_NB = len(BASIS_NAMES)
#: Regressors per axis: bias, previous estimate, the basis.
N_REG = 2 + _NB
PRIOR_FORMAT = "st-agent-response-prior"
_BEATS = 16.0  # a phrase is 4 bars of 4 beats


def phrase_sec(knobs: np.ndarray) -> np.ndarray:
    """Length of a phrase at the knobs' tempo, seconds, shape (...,)."""
    kt = np.asarray(knobs, dtype=np.float64)[..., 1]
    return _BEATS * 60.0 / np.round(BPM_MIN + kt * (BPM_MAX - BPM_MIN))


def next_exposure(exposure: np.ndarray, knobs: np.ndarray, tau_sec: float) -> np.ndarray:
    """Exposure after a phrase at ``knobs``: toward 1 while music plays, held in a rest."""
    k = np.asarray(knobs, dtype=np.float64)
    playing = k[..., 2] > REST_ENERGY + 1e-9
    rise = 1.0 - np.exp(-phrase_sec(k) / tau_sec)
    return np.where(playing, exposure + (1.0 - exposure) * rise, exposure)


def exposure_path(knobs: np.ndarray, tau_sec: float, start: float = 0.0) -> np.ndarray:
    """Exposure at the start of each phrase of a session, shape (T,).

    Parameters
    ----------
    knobs : ndarray, shape (T, 3)
        Knobs of the phrases played, in order.
    tau_sec : float
        Exposure time constant.
    start : float
        Exposure before the first phrase (0 after the rest calibration).
    """
    out = np.empty(len(knobs))
    e = start
    for t, k in enumerate(np.asarray(knobs, dtype=np.float64)):
        out[t] = e
        e = float(next_exposure(np.asarray(e), k, tau_sec))
    return out


def basis(knobs: np.ndarray, exposure: np.ndarray | float = 0.0) -> np.ndarray:
    """Knob basis ``phi(k, x)`` (module docstring).

    Parameters
    ----------
    knobs : ndarray, shape (..., 3)
        Knobs (valence, tempo, energy) in [0, 1].
    exposure : ndarray, shape (...,), or float
        Exposure at the start of the phrase, in [0, 1].

    Returns
    -------
    phi : ndarray, shape (..., 7)
    """
    k = np.asarray(knobs, dtype=np.float64)
    kv, kt, ke = k[..., 0], k[..., 1], k[..., 2]
    rest = (ke <= REST_ENERGY + 1e-9).astype(np.float64)
    music = 1.0 - rest
    minor = kv < 0.5
    return np.stack([music * (kv - 0.5), music * np.where(minor, -1.0, 1.0),
                     music * (kt - 0.5), music * (ke - 0.5),
                     music * minor * 2.0 * np.maximum(0.0, 0.5 - kt), rest,
                     rest * np.broadcast_to(exposure, rest.shape)], axis=-1)


def regressors(y_prev: np.ndarray, knobs: np.ndarray, exposure: np.ndarray | float = 0.0
               ) -> np.ndarray:
    """Regressors ``z`` of both axes, shape (..., 2, N_REG).

    Parameters
    ----------
    y_prev : ndarray, shape (..., 2)
        Previous estimate (valence, arousal).
    knobs : ndarray, shape (..., 3)
        Knobs that played since.
    exposure : ndarray, shape (...,), or float
        Exposure when that phrase started.
    """
    y_prev = np.asarray(y_prev, dtype=np.float64)
    phi = basis(knobs, exposure)
    shape = y_prev.shape[:-1]
    z = np.empty((*shape, 2, N_REG))
    z[..., 0] = 1.0
    z[..., 1] = y_prev
    z[..., 2:] = phi[..., None, :]
    return z


@dataclass(frozen=True)
class ResponsePrior:
    """Population prior of the response model (per axis mean and covariance).

    Parameters
    ----------
    mean : ndarray, shape (2, N_REG)
    cov : ndarray, shape (2, N_REG, N_REG)
        Positive definite.
    noise_var : ndarray, shape (2,)
        Residual variance of one phrase's estimate.
    source : str
        What it was fitted on (families, listeners, seed).
    """

    mean: np.ndarray
    cov: np.ndarray
    noise_var: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        nv = np.asarray(self.noise_var, dtype=np.float64)
        if mean.shape != (2, N_REG) or cov.shape != (2, N_REG, N_REG) or nv.shape != (2,):
            raise ValueError(f"prior shapes must be mean (2, {N_REG}), cov (2, {N_REG}, "
                             f"{N_REG}), noise_var (2,); got {mean.shape}, {cov.shape}, "
                             f"{nv.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov)) and np.all(nv > 0)):
            raise ValueError("prior values must be finite and noise_var > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", 0.5 * (cov + np.swapaxes(cov, -1, -2)))
        object.__setattr__(self, "noise_var", nv)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for :meth:`from_json`."""
        return {"format": PRIOR_FORMAT, "version": 1, "basis": list(BASIS_NAMES),
                "mean": self.mean.tolist(), "cov": self.cov.tolist(),
                "noise_var": self.noise_var.tolist(), "source": self.source}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ResponsePrior:
        """Inverse of :meth:`to_json`.

        Raises
        ------
        ValueError
            When ``doc`` is not a prior of this basis.
        """
        if doc.get("format") != PRIOR_FORMAT or doc.get("version") != 1 \
                or tuple(doc.get("basis", ())) != BASIS_NAMES:
            raise ValueError(f"not a {PRIOR_FORMAT} version 1 document with basis "
                             f"{BASIS_NAMES}: format {doc.get('format')!r}")
        return cls(np.asarray(doc["mean"]), np.asarray(doc["cov"]),
                   np.asarray(doc["noise_var"]), str(doc.get("source", "")))

    def save(self, path: str | Path) -> Path:
        """Write the prior as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResponsePrior:
        """Read a prior written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no response prior at {path}")
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def fit_prior(transitions: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              ridge: float = 1e-2, source: str = "") -> ResponsePrior:
    """Empirical-Bayes prior from many simulated sessions (one per listener).

    Each listener's ``theta`` is fitted by ridge regression; the prior mean is
    their mean and the prior covariance their covariance minus the mean
    estimation covariance (method of moments, so estimation noise does not
    inflate the spread), floored at a tenth of the raw spread.

    Parameters
    ----------
    transitions : list of (y_prev, knobs, exposure, y)
        Per listener: arrays of shape (T, 2), (T, 3), (T,), (T, 2) with T > N_REG
        (``exposure``: :func:`exposure_path` of the knobs).
    ridge : float
        Ridge penalty of the per-listener fits.
    source : str
        Description stored with the prior.

    Returns
    -------
    prior : ResponsePrior
    """
    if len(transitions) < 2:
        raise ValueError(f"fit_prior needs at least 2 listeners, got {len(transitions)}")
    thetas, ecov, resid = [], [], []
    for y_prev, knobs, expo, y in transitions:
        z = regressors(y_prev, knobs, expo)  # (T, 2, R)
        if len(z) <= N_REG:
            raise ValueError(f"each listener needs more than {N_REG} transitions, got {len(z)}")
        th, vc, rs = [], [], []
        for a in range(2):
            za = z[:, a]
            gram = za.T @ za + ridge * np.eye(N_REG)
            inv = np.linalg.inv(gram)
            t = inv @ za.T @ y[:, a]
            r = y[:, a] - za @ t
            s2 = float(r @ r) / max(len(r) - N_REG, 1)
            th.append(t)
            vc.append(s2 * inv)
            rs.append(s2)
        thetas.append(th)
        ecov.append(vc)
        resid.append(rs)
    th = np.asarray(thetas)  # (L, 2, R)
    mean = th.mean(axis=0)
    raw = np.einsum("lak,laj->akj", th - mean, th - mean) / (len(th) - 1)
    cov = raw - np.mean(ecov, axis=0)
    for a in range(2):  # project onto a PSD matrix with a floor
        w, v = np.linalg.eigh(cov[a])
        floor = 0.1 * np.diag(raw[a]).mean() / N_REG
        cov[a] = (v * np.maximum(w, floor)) @ v.T
    return ResponsePrior(mean, cov, np.mean(resid, axis=0), source)


def prior_to_dict(prior: ResponsePrior) -> dict[str, Any]:
    """Readable summary: mean and standard deviation of every coefficient, per axis."""
    names = ("bias", "previous", *BASIS_NAMES)
    sd = np.sqrt(np.diagonal(prior.cov, axis1=-2, axis2=-1))
    return {axis: {n: (round(float(prior.mean[a, i]), 3), round(float(sd[a, i]), 3))
                   for i, n in enumerate(names)} for a, axis in enumerate(("valence", "arousal"))}
