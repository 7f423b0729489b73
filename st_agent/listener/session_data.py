"""Recorded and simulated sessions on a regular grid: what :mod:`~st_agent.listener.fitting`
fits a listener to.

A session contributes its ``phrase`` events (the measured features in the payload,
``features``: :meth:`MusicFeatures.as_dict`) and its ``state`` events (the estimator's
output, confidence > 0), resampled to a grid of ``dt_sec``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.listener.model import (
    EstimatorNoise,
    FastListeners,
    ListenerParams,
    ListenerState,
    feature_vector,
    random_features,
)
from st_agent.types import MusicFeatures

__all__ = ["MIN_MINUTES", "FitError", "SessionData", "load_session_data", "simulated_session"]

#: Least music-accompanied recording, in minutes, a fit accepts.
MIN_MINUTES = 5.0


class FitError(ValueError):
    """Sessions that cannot be fitted (too short, no music, bad features)."""



@dataclass
class SessionData:
    """One session on a regular grid, ready to fit.

    Parameters
    ----------
    x : ndarray, shape (n_steps, 6)
        Feature vector playing during each step (zeros in silence).
    obs : ndarray, shape (n_steps + 1, 2)
        Observed ``(valence, arousal)`` at the grid points; NaN where none.
    dt_sec : float
        Grid step, seconds.
    name : str
        Where it came from (for messages).
    """

    x: np.ndarray
    obs: np.ndarray
    dt_sec: float
    name: str = "session"

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=float)
        self.obs = np.asarray(self.obs, dtype=float)
        if self.x.ndim != 2 or self.x.shape[1] != 6:
            raise ValueError(f"x must have shape (n_steps, 6), got {self.x.shape}")
        if self.obs.shape != (len(self.x) + 1, 2):
            raise ValueError(f"obs must have shape ({len(self.x) + 1}, 2), got {self.obs.shape}")
        if not np.isfinite(self.x).all():
            raise FitError(f"{self.name}: the feature vectors contain NaN or inf")

    @property
    def music_minutes(self) -> float:
        """Minutes with music playing and an observed state."""
        playing = np.any(self.x != 0, axis=1)
        observed = np.isfinite(self.obs[1:]).all(axis=1)
        return float(np.sum(playing & observed) * self.dt_sec / 60.0)

    def start_state(self) -> ListenerState:
        """Initial latent state: the mean of the first 10 s of observations."""
        n = max(1, round(10.0 / self.dt_sec))
        first = self.obs[:n][np.isfinite(self.obs[:n]).all(axis=1)]
        v, a = np.clip(first.mean(axis=0), -0.99, 0.99) if len(first) else (0.0, 0.0)
        return ListenerState(float(v), float(a), np.zeros(6), np.zeros(2), 0.0)


def _features_of(row: dict[str, Any], name: str) -> MusicFeatures:
    d = row["payload"].get("features")
    if not isinstance(d, dict):
        raise FitError(f"{name}: phrase event {row['seq']} has no 'features' payload")
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise FitError(f"{name}: phrase event {row['seq']} at t={row['t_sec']:.1f} s has "
                           f"{k}={v} in its features; re-measure the phrase "
                           "(render.measure_features) or drop the event")
    try:
        return MusicFeatures(**d)
    except (TypeError, ValueError) as e:
        raise FitError(f"{name}: phrase event {row['seq']} has invalid features: {e}") from e


def load_session_data(folder: str | Path, dt_sec: float = 0.5,
                      key: bytes | str | Path | None = None) -> SessionData:
    """Read a recorded session into a :class:`SessionData`.

    Parameters
    ----------
    folder : str or Path
        Session folder (see :mod:`st_agent.biometrics.recording`).
    dt_sec : float
        Grid step, seconds (the estimator hop, 0.5 s, by default).
    key : bytes or str or Path, optional
        Key or key file of an encrypted session.

    Raises
    ------
    FitError
        No ``phrase`` event with ``features``, no ``state`` event with
        confidence > 0, or NaN in recorded features.
    """
    from st_agent.biometrics.recording import read_session

    folder = Path(folder)
    session = read_session(folder, key=key)
    name = str(folder)
    phrases = [r for r in session.events if r["kind"] == "phrase"]
    if not phrases:
        raise FitError(f"{name}: no phrase events; the fit needs the music that was played "
                       f"(phrase events with a 'features' payload) and at least "
                       f"{MIN_MINUTES:g} minutes of estimated states while it played")
    with_feats = [r for r in phrases if "features" in r["payload"]]
    if not with_feats:
        raise FitError(f"{name}: {len(phrases)} phrase events but none has the measured "
                       "features; record with SessionRecorder.write_phrase(phrase, t_sec, "
                       "features=measure_features(pm))")
    states = [r for r in session.events if r["kind"] == "state"
              and r["payload"].get("confidence", 0) > 0]
    if len(states) < 2:
        raise FitError(f"{name}: {len(states)} state events with confidence > 0; the fit needs "
                       f"at least {MIN_MINUTES:g} minutes of estimated states")
    t0 = min(r["t_sec"] for r in states)
    t1 = max(r["t_sec"] for r in states)
    n = max(1, math.ceil((t1 - t0) / dt_sec))
    obs_sum = np.zeros((n + 1, 2))
    obs_n = np.zeros(n + 1)
    for r in states:
        i = round((r["t_sec"] - t0) / dt_sec)
        obs_sum[i] += (r["payload"]["valence"], r["payload"]["arousal"])
        obs_n[i] += 1
    with np.errstate(invalid="ignore"):
        obs = obs_sum / obs_n[:, None]
    obs[obs_n == 0] = np.nan
    x = np.zeros((n, 6))
    grid = t0 + dt_sec * np.arange(n)
    for r in sorted(with_feats, key=lambda r: r["t_sec"]):
        feats = _features_of(r, name)
        dur = r["payload"].get("duration_sec", feats.duration_sec)
        on = (grid >= r["t_sec"]) & (grid < r["t_sec"] + float(dur))
        x[on] = feature_vector(feats)
    return SessionData(x, obs, dt_sec, name)


def simulated_session(params: ListenerParams, minutes: float, rng: np.random.Generator,
                      noise: EstimatorNoise | None = None, dt_sec: float = 0.5,
                      block_sec: tuple[float, float] = (30.0, 90.0),
                      rest_sec: float = 60.0) -> tuple[SessionData, np.ndarray]:
    """A session of a known listener, for checking the fit (fast mode).

    ``rest_sec`` of silence, then blocks of ``block_sec`` seconds, each holding
    one random phrase (:func:`~st_agent.listener.model.random_features`): contrasting
    blocks are what make the parameters identifiable.

    Returns
    -------
    data : SessionData
        Observed states from :class:`~st_agent.listener.model.FastListeners` with
        ``noise`` (default: measured noise in latent units, gain 1, not rest-relative).
    latent : ndarray, shape (n_steps + 1, 2)
        The true latent ``(valence, arousal)``.
    """
    if noise is None:
        noise = replace(EstimatorNoise.load(), gain_valence=1.0, gain_arousal=1.0,
                        relative=False)
    n_rest = round(rest_sec / dt_sec)
    n = n_rest + round(minutes * 60 / dt_sec)
    x = np.zeros((n, 6))
    i = n_rest
    while i < n:
        k = round(float(rng.uniform(*block_sec)) / dt_sec)
        x[i:i + k] = feature_vector(random_features(rng))
        i += k
    group = FastListeners([params], rng=rng, noise=noise)
    obs = np.empty((n + 1, 2))
    lat = np.empty((n + 1, 2))
    obs[0] = group.step(np.zeros(6), 1e-9)[0]
    lat[0] = group.state[0]
    for j in range(n):
        obs[j + 1] = group.step(x[j], dt_sec)[0]
        lat[j + 1] = group.state[0]
    return SessionData(x, obs, dt_sec, "simulated"), lat
