"""Logged transitions: what a policy saw, did and got, per decision, in the recording.

Every decision of a live session (and of a logged simulated rollout,
:func:`collect_sim`) is written as one ``"transition"`` event of the session's
``events.jsonl`` (encrypted like every event when the session has a key). Its
payload:

=================  ========================================================
field              meaning
=================  ========================================================
``obs_version``    :data:`st_agent.contract.OBS_VERSION` of ``obs``
``obs``            the observation the controller saw (contract layout)
``step``           decision index in the session (0, 1, ...)
``action``         the action applied (in [-1, 1]^3, before the knob bounds)
``action_mean``    the controller's own action, clipped to [-1, 1]
``logp``           log-density of ``action`` under the behaviour policy
``distribution``   ``"truncated_normal"`` or ``"deterministic"``
``std``            the exploration standard deviation (0: deterministic)
``behaviour``      ``{"name", "sha256"}``: the controller that decided and a
                   hash of its files (:func:`policy_fingerprint`)
``held``           True when the knobs held (signal lost or unusable): the
                   policy did not decide, the action is 0 and ``logp`` 0
``reward_prev``    reward terms of the *previous* transition
                   (:func:`st_agent.contract.reward_from_observations`:
                   ``progress``, ``distance``, ``jerk``, ``reward``), or null
                   at the first decision
``reward_source``  ``"estimate"`` (live: the distance of the estimate) or
                   ``"clean"`` (simulation: the noise-free state, the env's
                   own reward)
=================  ========================================================

A closing ``"transition_end"`` event (written by simulated rollouts,
:mod:`st_agent.policies.sim_logging`; a live
session has none, so its last decision has no reward and is dropped by the
reader) carries the final observation and the last transition's reward.

**Behaviour distribution.** With exploration (``explore_std = s > 0``) the
action is drawn from a normal distribution of mean ``m = clip(controller's
action, -1, 1)`` and standard deviation ``s``, *truncated* to [-1, 1] (each
of the 3 entries independently). Its density is exact after the bounds:
``phi((a - m) / s) / (s * (Phi((1 - m) / s) - Phi((-1 - m) / s)))`` per entry;
``logp`` is the sum over the three. (A Gaussian clipped to the bounds would
put point masses at -1 and 1 that no density describes.) The therapist's knob
bounds are then applied by :func:`~st_agent.contract.action_to_knobs` as for
any action, so exploration never leaves them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri

from st_agent.contract import ACTION_SIZE, OBS_VERSION, reward_from_observations
from st_agent.errors import DataError, UsageError

__all__ = ["DISTRIBUTIONS", "TRANSITION_EVENT", "Exploration", "TransitionLog",
           "Transitions", "TransitionsError", "check_policy_fits", "load_transitions",
           "policy_fingerprint", "session_folders", "truncnorm_logpdf", "truncnorm_moments",
           "truncnorm_sample"]

logger = logging.getLogger(__name__)

TRANSITION_EVENT = "transition"
TRANSITION_END_EVENT = "transition_end"
DISTRIBUTIONS = ("deterministic", "truncated_normal")
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


class TransitionsError(DataError, ValueError):
    """Logged transitions that cannot be used: the message names the session and the fix."""


# --------------------------------------------------------------------------- distribution


def _check_std(std: float, name: str = "explore_std") -> float:
    if isinstance(std, bool) or not isinstance(std, int | float) or not 0.0 <= std <= 2.0:
        raise ValueError(f"{name} must be a number in [0, 2] (action units: a fraction of "
                         f"max_delta per phrase), got {std!r}")
    return float(std)


def _log_mass(mean: np.ndarray, std: np.ndarray | float) -> np.ndarray:
    """log(Phi((1 - m) / s) - Phi((-1 - m) / s)), stable for any m."""
    hi, lo = (1.0 - mean) / std, (-1.0 - mean) / std
    lhi, llo = log_ndtr(hi), log_ndtr(lo)
    return lhi + np.log1p(-np.exp(np.minimum(llo - lhi, -1e-300)))


def truncnorm_logpdf(action: np.ndarray, mean: np.ndarray, std: np.ndarray | float
                     ) -> np.ndarray:
    """Log-density of ``action`` under N(``mean``, ``std``^2) truncated to [-1, 1], summed.

    Parameters
    ----------
    action, mean : ndarray, shape (..., k)
        Actions and means (means are clipped to [-1, 1] first).
    std : float or ndarray, shape (...) or (..., 1)
        Standard deviation, > 0.

    Returns
    -------
    logp : ndarray, shape (...)
        Sum over the last axis; ``-inf`` outside [-1, 1].
    """
    a = np.asarray(action, dtype=np.float64)
    m = np.clip(np.asarray(mean, dtype=np.float64), -1.0, 1.0)
    s = np.asarray(std, dtype=np.float64)
    if s.ndim == a.ndim - 1:
        s = s[..., None]
    z = (a - m) / s
    lp = -0.5 * z ** 2 - _LOG_SQRT_2PI - np.log(s) - _log_mass(m, s)
    lp = np.where((a < -1.0 - 1e-9) | (a > 1.0 + 1e-9), -np.inf, lp)
    return lp.sum(axis=-1)


def truncnorm_sample(mean: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Draws of N(``mean``, ``std``^2) truncated to [-1, 1] (inverse CDF), shape of ``mean``."""
    m = np.clip(np.asarray(mean, dtype=np.float64), -1.0, 1.0)
    lo, hi = ndtr((-1.0 - m) / std), ndtr((1.0 - m) / std)
    u = lo + rng.random(m.shape) * (hi - lo)
    return np.clip(m + std * ndtri(np.clip(u, 1e-300, 1.0 - 1e-16)), -1.0, 1.0)


def truncnorm_moments(mean: np.ndarray, std: float) -> tuple[np.ndarray, np.ndarray]:
    """``E[a]`` and ``E[a^2]`` of N(``mean``, ``std``^2) truncated to [-1, 1] (elementwise).

    Closed form (Johnson, Kotz & Balakrishnan 1994, ch. 13): with ``alpha``,
    ``beta`` the standardised bounds and ``Z = Phi(beta) - Phi(alpha)``,
    ``E = m + s (phi(alpha) - phi(beta)) / Z`` and
    ``Var = s^2 (1 + (alpha phi(alpha) - beta phi(beta)) / Z - ((phi(alpha) - phi(beta)) / Z)^2)``.
    """
    m = np.clip(np.asarray(mean, dtype=np.float64), -1.0, 1.0)
    if std <= 0:
        return m, m ** 2
    al, be = (-1.0 - m) / std, (1.0 - m) / std
    z = np.maximum(ndtr(be) - ndtr(al), 1e-300)
    pa, pb = np.exp(-0.5 * al ** 2 - _LOG_SQRT_2PI), np.exp(-0.5 * be ** 2 - _LOG_SQRT_2PI)
    r = (pa - pb) / z
    mu = m + std * r
    var = std ** 2 * np.maximum(1.0 + (al * pa - be * pb) / z - r ** 2, 0.0)
    return mu, var + mu ** 2


class Exploration:
    """The behaviour policy's noise: a truncated normal around the controller's action.

    Parameters
    ----------
    std : float
        Standard deviation in action units (a fraction of ``max_delta``), in [0, 2];
        0: no exploration (deterministic; ``logp`` is 0 by convention).
    seed : int or np.random.Generator
        Source of the noise.
    """

    def __init__(self, std: float = 0.0, seed: int | np.random.Generator = 0) -> None:
        self.std = _check_std(std)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    @property
    def distribution(self) -> str:
        """``"truncated_normal"`` or ``"deterministic"``."""
        return "truncated_normal" if self.std > 0 else "deterministic"

    def act(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(action, logp, mean)``: the explored action(s), log-density and clipped mean.

        Parameters
        ----------
        action : ndarray, shape (3,) or (N, 3)
            The controller's action(s); non-finite entries count as 0.

        Returns
        -------
        action : ndarray, same shape, in [-1, 1]
        logp : ndarray, shape () or (N,)
        mean : ndarray, same shape as ``action``
        """
        mean = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64), nan=0.0,
                                     posinf=1.0, neginf=-1.0), -1.0, 1.0)
        if self.std == 0:
            return mean.copy(), np.zeros(mean.shape[:-1]), mean
        a = truncnorm_sample(mean, self.std, self.rng)
        return a, truncnorm_logpdf(a, mean, self.std), mean


# --------------------------------------------------------------------------- fingerprints


def policy_fingerprint(policy: str, target: str = "calm") -> str:
    """SHA-256 (hex) of the files that define controller ``policy``.

    A run folder: its ``policy.json``, ``policy.safetensors`` and
    ``controller.json`` (those present); a shipped name: the files of
    ``policies/assets/<name>/``; a baseline with tuned settings (``pid``,
    ``constant``, ``adaptive``): ``assets/<name>/<target>.json``; anything else
    (``random``, ``fixed``, a manual override): the hash of the name.
    """
    from st_agent.policies.loading import BUNDLED_DIR

    h = hashlib.sha256()
    path = Path(policy)
    files: list[Path] = []
    if policy and path.is_dir():
        files = [path / n for n in ("policy.json", "policy.safetensors", "controller.json")]
    elif policy and Path(policy).name == policy and (BUNDLED_DIR / policy).is_dir():
        folder = BUNDLED_DIR / policy
        files = sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors"))
        if policy in ("pid", "constant", "adaptive"):
            files = [folder / f"{target}.json"]
    files = [f for f in files if f.is_file()]
    if not files:
        h.update(f"builtin:{policy}".encode())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- logging


@dataclass
class TransitionLog:
    """Builds the ``"transition"`` event payloads of one session (module docstring).

    Parameters
    ----------
    max_delta : float
        The bounds' rate limit (the reward's jerk term).
    exploration : Exploration
        The behaviour noise.
    name, sha256 : str
        The behaviour controller and :func:`policy_fingerprint` of it.
    reward_source : {"estimate", "clean"}
        How rewards given to :meth:`payload` were measured (default: from the
        observations, the estimate).
    """

    max_delta: float
    exploration: Exploration = field(default_factory=Exploration)
    name: str = ""
    sha256: str = ""
    reward_source: str = "estimate"
    _prev: np.ndarray | None = None
    _step: int = 0

    def explore(self, action: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """The controller's ``action`` with the behaviour noise: ``(action, logp, mean)``."""
        a, lp, m = self.exploration.act(np.asarray(action, dtype=np.float64).reshape(-1))
        return a, float(lp), m

    def payload(self, obs: np.ndarray, action: np.ndarray, logp: float, mean: np.ndarray,
                held: bool = False, name: str | None = None,
                reward: dict[str, float] | None = None) -> dict[str, Any]:
        """The event payload of one decision (``reward``: the previous transition's terms;
        default computed from the previous and this observation)."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        if reward is None and self._prev is not None:
            reward = {k: float(v) for k, v in
                      reward_from_observations(self._prev, obs, self.max_delta).items()}
        doc = {"obs_version": OBS_VERSION, "step": self._step, "obs": obs.tolist(),
               "action": np.asarray(action, dtype=np.float64).reshape(-1).tolist(),
               "action_mean": np.asarray(mean, dtype=np.float64).reshape(-1).tolist(),
               "logp": float(logp), "distribution": self.exploration.distribution,
               "std": self.exploration.std, "held": bool(held),
               "behaviour": {"name": name or self.name, "sha256": self.sha256},
               "reward_prev": reward, "reward_source": self.reward_source,
               "max_delta": self.max_delta}
        self._prev, self._step = obs, self._step + 1
        return doc

    def end_payload(self, obs: np.ndarray, reward: dict[str, float] | None = None
                    ) -> dict[str, Any]:
        """The ``"transition_end"`` payload: the final observation and last reward."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        if reward is None and self._prev is not None:
            reward = {k: float(v) for k, v in
                      reward_from_observations(self._prev, obs, self.max_delta).items()}
        return {"obs_version": OBS_VERSION, "step": self._step, "obs": obs.tolist(),
                "reward_prev": reward, "reward_source": self.reward_source}


# --------------------------------------------------------------------------- reading


@dataclass
class Transitions:
    """Logged transitions of several sessions (episodes), in decision order.

    Arrays have N rows (one per transition whose reward is known).
    """

    obs: np.ndarray
    """Observations, shape (N, n_obs), float32."""
    actions: np.ndarray
    """Actions applied, shape (N, 3)."""
    action_mean: np.ndarray
    """The behaviour controller's clipped action, shape (N, 3)."""
    logp: np.ndarray
    """Behaviour log-density of ``actions``, shape (N,) (0 where deterministic or held)."""
    std: np.ndarray
    """Behaviour exploration std per transition, shape (N,) (0: deterministic)."""
    rewards: np.ndarray
    """Reward of each transition, shape (N,)."""
    next_obs: np.ndarray
    """Observation after the phrase, shape (N, n_obs)."""
    episode: np.ndarray
    """Episode (session) index of each row, shape (N,), 0..E-1, rows grouped by episode."""
    step: np.ndarray
    """Decision index within its episode, shape (N,)."""
    held: np.ndarray
    """Rows where the knobs held (no policy decision), shape (N,) bool."""
    terminal: np.ndarray
    """Last transition of its episode, shape (N,) bool."""
    behaviour: list[str] = field(default_factory=list)
    """Behaviour controller name per episode."""
    sources: list[str] = field(default_factory=list)
    """Session folder per episode (empty strings for in-memory rollouts)."""
    max_delta: float = 0.25
    reward_source: str = "clean"

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        for name in ("actions", "action_mean", "logp", "std", "rewards", "next_obs", "episode",
                     "step", "held", "terminal"):
            assert getattr(self, name).shape[0] == n, name

    @property
    def n(self) -> int:
        """Number of transitions."""
        return int(self.obs.shape[0])

    @property
    def n_episodes(self) -> int:
        """Number of episodes."""
        return int(self.episode.max()) + 1 if self.n else 0

    def returns(self, gamma: float = 1.0) -> np.ndarray:
        """Discounted return of each episode, shape (E,)."""
        return np.bincount(self.episode, weights=self.rewards * gamma ** self.step,
                           minlength=self.n_episodes)

    def subset(self, episodes: Sequence[int]) -> Transitions:
        """The transitions of ``episodes`` (renumbered 0..k-1 in that order)."""
        rows = np.concatenate([np.flatnonzero(self.episode == e) for e in episodes])
        remap = np.full(self.n_episodes, -1)
        remap[np.asarray(episodes)] = np.arange(len(episodes))
        take = {k: getattr(self, k)[rows] for k in (
            "obs", "actions", "action_mean", "logp", "std", "rewards", "next_obs", "step",
            "held", "terminal")}
        return Transitions(**take, episode=remap[self.episode[rows]],
                           behaviour=[self.behaviour[e] for e in episodes] if self.behaviour
                           else [], sources=[self.sources[e] for e in episodes]
                           if self.sources else [], max_delta=self.max_delta,
                           reward_source=self.reward_source)


def session_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Session folders of ``paths``: each a session folder, or a folder of them (sorted).

    Raises
    ------
    UsageError
        When a path does not exist or holds no session.
    """
    from st_agent.biometrics.session_reader import is_session

    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise UsageError(f"--sessions {p} is not a folder; give session folders (or a "
                             "folder of them, e.g. runs/sessions)")
        if is_session(p):
            out.append(p)
            continue
        inner = sorted(q for q in p.iterdir() if q.is_dir() and is_session(q))
        if not inner:
            raise UsageError(f"--sessions {p} holds no recorded session (no session.json)")
        out += inner
    if not out:
        raise UsageError("no session folders given (--sessions or --subject)")
    return out


def _payload_rows(folder: Path, key: Any) -> tuple[list[dict], dict | None]:
    from st_agent.biometrics.session_reader import read_session

    events = read_session(folder, key=key).events
    rows = sorted((e for e in events if e["kind"] == TRANSITION_EVENT), key=lambda e: e["seq"])
    end = [e for e in events if e["kind"] == TRANSITION_END_EVENT]
    if not rows:
        raise TransitionsError(
            f"session {folder} has no logged transitions (it was recorded before sessions "
            "logged them, or by a jam): record new sessions with this version of "
            "st-agent (every `st-agent session` logs them), or leave this one out")
    return [r["payload"] for r in rows], end[-1]["payload"] if end else None


def _episode_arrays(folder: Path, rows: list[dict], end: dict | None) -> dict[str, Any]:
    for r in rows + ([end] if end else []):
        if r.get("obs_version") != OBS_VERSION:
            raise TransitionsError(
                f"session {folder} logged observations of contract version "
                f"{r.get('obs_version')!r}; this st-agent builds version {OBS_VERSION} "
                "(st_agent.contract.OBS_VERSION): evaluate it with the st-agent version "
                "that recorded it, or record new sessions")
    obs = np.array([r["obs"] for r in rows], dtype=np.float64)
    nxt = [r["obs"] for r in rows[1:]] + ([end["obs"]] if end else [])
    rew = [r["reward_prev"] for r in rows[1:]] + ([end["reward_prev"]] if end else [])
    k = len(nxt)
    if k == 0:
        raise TransitionsError(f"session {folder} has one decision and no reward after it; "
                               "it has no complete transition")
    acts = np.array([r["action"] for r in rows[:k]], dtype=np.float64)
    if acts.shape[1] != ACTION_SIZE:
        raise TransitionsError(f"session {folder} logged actions of size {acts.shape[1]}; "
                               f"single-listener policies act on {ACTION_SIZE} knobs")
    return {"obs": obs[:k], "next_obs": np.array(nxt, dtype=np.float64), "actions": acts,
            "action_mean": np.array([r["action_mean"] for r in rows[:k]], dtype=np.float64),
            "logp": np.array([r["logp"] for r in rows[:k]], dtype=np.float64),
            "std": np.array([r["std"] for r in rows[:k]], dtype=np.float64),
            "rewards": np.array([x["reward"] for x in rew], dtype=np.float64),
            "held": np.array([bool(r["held"]) for r in rows[:k]]),
            "behaviour": rows[0]["behaviour"]["name"],
            "max_delta": float(rows[0]["max_delta"]), "source": rows[0]["reward_source"]}


def load_transitions(folders: str | Path | Sequence[str | Path],
                     key: bytes | str | Path | None = None) -> Transitions:
    """Read the logged transitions of session folders (module docstring).

    Parameters
    ----------
    folders : path or sequence of paths
        Session folders, or folders of them.
    key : bytes or str or Path or None
        Key or key file of encrypted sessions (the same for all).

    Returns
    -------
    transitions : Transitions
        One episode per session, in the order given.

    Raises
    ------
    TransitionsError
        A session without logged transitions (an older recording), with another
        observation version, other observation sizes than the rest, or another rate
        limit (``max_delta``) than the rest.
    """
    if isinstance(folders, str | Path):
        folders = [folders]
    parts = []
    for f in session_folders(folders):
        parts.append((f, _episode_arrays(f, *_payload_rows(f, key))))
    sizes = {p["obs"].shape[1] for _, p in parts}
    if len(sizes) > 1:
        raise TransitionsError(f"the sessions logged observations of different sizes "
                               f"{sorted(sizes)} (different history lengths): evaluate "
                               "sessions of one observation layout together")
    mds = {p["max_delta"] for _, p in parts}
    if len(mds) > 1:
        raise TransitionsError(f"the sessions used different rate limits max_delta "
                               f"{sorted(mds)}; actions mean different knob changes: evaluate "
                               "sessions of one max_delta together")
    cat = {k: np.concatenate([p[k] for _, p in parts]) for k in (
        "obs", "next_obs", "actions", "action_mean", "logp", "std", "rewards", "held")}
    lens = [p["obs"].shape[0] for _, p in parts]
    ep = np.repeat(np.arange(len(parts)), lens)
    step = np.concatenate([np.arange(n) for n in lens])
    term = np.concatenate([np.arange(n) == n - 1 for n in lens])
    return Transitions(**{k: v.astype(np.float32) if "obs" in k else v for k, v in cat.items()},
                       episode=ep, step=step, terminal=term,
                       behaviour=[p["behaviour"] for _, p in parts],
                       sources=[str(f) for f, _ in parts], max_delta=mds.pop(),
                       reward_source=parts[0][1]["source"])


def check_policy_fits(tr: Transitions, policy: Any, name: str) -> None:
    """Raise unless ``policy`` takes the logged observations and acts on 3 knobs.

    Raises
    ------
    TransitionsError
        Naming the policy, the logged sizes and what it expects.
    """
    want = getattr(policy, "obs_size", None)
    if want is not None and int(want) != tr.obs.shape[1]:
        raise TransitionsError(
            f"policy {name} takes observations of size {want}; the sessions logged size "
            f"{tr.obs.shape[1]} (history_len {(tr.obs.shape[1] - 11) // 5}): evaluate a "
            "policy trained with the sessions' history length")
    act, _ = policy.predict(tr.obs[:1], deterministic=True)
    if np.asarray(act).reshape(-1).size != tr.actions.shape[1]:
        raise TransitionsError(
            f"policy {name} returns actions of size {np.asarray(act).size}; the sessions "
            f"logged {tr.actions.shape[1]}-knob actions (a jam policy? `st-agent ope` "
            "evaluates single-listener policies)")
