"""Loading trained controllers: the project's safetensors + JSON policy format.

A policy is a plain ``state_dict`` in ``policy.safetensors`` beside
``policy.json`` (format name, version, network sizes, observation-normalisation
statistics, the training config). :func:`load_policy` rebuilds the network in
code and loads the tensors; nothing is ever unpickled. Shipped policies live in
``policies/assets/<name>/`` (:func:`load_bundled_policy`).

This module is what sessions and evaluation import; training
(:mod:`st_agent.policies.train`) writes the format, evaluation
(:mod:`st_agent.policies.evaluate`) reads it, and neither imports the other's
internals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from st_agent.contract import HISTORY_LEN, observation_bounds

__all__ = ["BUNDLED_DIR", "POLICY_FORMAT", "PolicyEnsemble", "TrainedPolicy",
           "bundled_policies", "load_bundled_policy", "load_policy", "policy_spaces"]

POLICY_FORMAT = "st-agent-ppo-policy"
#: Folder of the shipped policies (``<name>/policy.safetensors`` + ``policy.json``).
BUNDLED_DIR = Path(__file__).resolve().parent / "assets"


class TrainedPolicy:
    """A loaded policy with observation normalisation: ``predict`` like SB3.

    Parameters
    ----------
    policy : ActorCriticPolicy
    obs_mean, obs_var : ndarray, shape (n_obs,)
        VecNormalize statistics.
    clip_obs, epsilon : float
        VecNormalize settings.
    history_len : int
        Past phrases its observations carry (they must be built with this).
    """

    def __init__(self, policy: ActorCriticPolicy, obs_mean: np.ndarray, obs_var: np.ndarray,
                 clip_obs: float = 10.0, epsilon: float = 1e-8,
                 history_len: int = HISTORY_LEN) -> None:
        self.policy = policy.eval()
        self.history_len = int(history_len)
        self.obs_mean = np.asarray(obs_mean, dtype=np.float64)
        self.obs_var = np.asarray(obs_var, dtype=np.float64)
        self.clip_obs, self.epsilon = float(clip_obs), float(epsilon)

    @property
    def obs_size(self) -> int:
        """Length of the observations it expects."""
        return int(self.obs_mean.size)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Observation as the network saw it in training."""
        z = (np.asarray(obs, dtype=np.float64) - self.obs_mean) / np.sqrt(self.obs_var
                                                                            + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Action(s) in [-1, 1]^3 for raw observation(s)."""
        action, _ = self.policy.predict(self.normalize(obs), deterministic=deterministic)
        return np.clip(action, -1.0, 1.0), None


class PolicyEnsemble:
    """Several trained policies acting as one: the mean of their actions.

    Policies trained from different seeds reach similar returns with different
    mistakes; averaging their actions cancels part of those mistakes (bagging).
    ``predict`` has :class:`TrainedPolicy`'s signature.

    Parameters
    ----------
    members : sequence of TrainedPolicy
        At least one; all with the same observation size and ``history_len``.

    Raises
    ------
    ValueError
        When empty, or when the members expect different observations.
    """

    def __init__(self, members: Sequence[TrainedPolicy]) -> None:
        members = list(members)
        if not members:
            raise ValueError("a policy ensemble needs at least one member")
        sizes = sorted({(m.obs_size, m.history_len) for m in members})
        if len(sizes) > 1:
            raise ValueError("ensemble members must expect the same observations; got "
                             f"(obs size, history_len) = {sizes}")
        self.members = members
        self.history_len = members[0].history_len
        self.obs_size = members[0].obs_size

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Mean of the members' actions, in [-1, 1]^3, for raw observation(s)."""
        acts = [m.predict(obs, deterministic=deterministic)[0] for m in self.members]
        return np.clip(np.mean(acts, axis=0), -1.0, 1.0), None


def policy_spaces(history_len: int) -> tuple[spaces.Box, spaces.Box]:
    """Observation and action spaces of a policy whose observations carry ``history_len``."""
    low, high = observation_bounds(history_len)
    return (spaces.Box(low, high, dtype=np.float32),
            spaces.Box(-1.0, 1.0, (3,), dtype=np.float32))


def load_policy(path: str | Path) -> TrainedPolicy:
    """Load a policy saved by :func:`save_policy` (a run folder or the file stem).

    Raises
    ------
    FileNotFoundError
        When the files are missing.
    ValueError
        When the JSON is not a policy description.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "policy"
    path = path.with_suffix("")
    js, st = path.with_suffix(".json"), path.with_suffix(".safetensors")
    for p in (js, st):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist; train a policy with `st-agent train`")
    doc = json.loads(js.read_text(encoding="utf-8"))
    if doc.get("format") != POLICY_FORMAT or doc.get("version") != 1:
        raise ValueError(f"{js} is not a {POLICY_FORMAT} version 1 file")
    obs_space, act_space = policy_spaces(int(doc["history_len"]))
    arch = list(doc["net_arch"])
    policy = ActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: 0.0,
                               net_arch={"pi": arch, "vf": arch})
    policy.load_state_dict(load_file(str(st)))
    return TrainedPolicy(policy, np.asarray(doc["obs_mean"]), np.asarray(doc["obs_var"]),
                         doc["clip_obs"], doc["epsilon"], int(doc["history_len"]))


def bundled_policies() -> list[str]:
    """Names of the policies shipped in :data:`BUNDLED_DIR`."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir()
                  if (p / "policy.safetensors").is_file() and (p / "policy.json").is_file())


def load_bundled_policy(name: str = "calm") -> TrainedPolicy:
    """Load a shipped policy (e.g. ``"calm"``) without unpickling anything.

    Raises
    ------
    ValueError
        When no policy of that name is shipped.
    """
    names = bundled_policies()
    if name not in names:
        raise ValueError(f"no bundled policy {name!r}; available: {names}")
    return load_policy(BUNDLED_DIR / name / "policy")
