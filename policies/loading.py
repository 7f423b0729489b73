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
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy

from st_agent.contract import HISTORY_LEN, observation_bounds
from st_agent.policies.schema import (
    PolicyFileError,
    PolicyFileMissing,
    PPOPolicyDoc,
    check_format,
    check_regular_file,
    read_bytes_bounded,
    read_json_file,
    validate_doc,
)

__all__ = ["BUNDLED_DIR", "LOG_STD_RANGE", "MAX_HEADER_BYTES", "PARAMS_MAX", "POLICY_FORMAT",
           "WEIGHT_ABS_MAX", "WEIGHT_DTYPES", "PolicyEnsemble", "PolicyFileError",
           "PolicyFileMissing", "TrainedPolicy", "actor_critic_shapes", "build_actor_critic",
           "bundled_policies", "check_param_count", "load_bundled_policy", "load_policy",
           "load_weights", "policy_files", "policy_spaces", "self_check"]

logger = logging.getLogger(__name__)

POLICY_FORMAT = "st-agent-ppo-policy"
N_ACTIONS = 3
#: Weight dtypes of the format (safetensors names -> bytes per value).
WEIGHT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
#: Largest magnitude of a weight (trained policies stay under 10); ``log_std`` range.
WEIGHT_ABS_MAX = 1e4
LOG_STD_RANGE = (-30.0, 10.0)
#: Parameters one network may have (about 16 MB as float32).
PARAMS_MAX = 2 ** 22
#: Largest safetensors header read (the shipped ones are under 10 kB).
MAX_HEADER_BYTES = 1024 * 1024
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


def actor_critic_shapes(n_obs: int, net_arch: Sequence[int], prefix: str = ""
                        ) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of an SB3 ``ActorCriticPolicy`` state dict (3 actions).

    The policy and value networks both have hidden layers ``net_arch`` (tanh), as
    the project's training writes them.

    Parameters
    ----------
    n_obs : int
        Observation size.
    net_arch : sequence of int
        Hidden layer widths.
    prefix : str
        Prepended to every name (``"member0/"`` in an ensemble file).

    Returns
    -------
    shapes : dict of str to tuple of int
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for net in ("policy_net", "value_net"):
        prev = n_obs
        for i, width in enumerate(net_arch):
            shapes[f"{prefix}mlp_extractor.{net}.{2 * i}.weight"] = (width, prev)
            shapes[f"{prefix}mlp_extractor.{net}.{2 * i}.bias"] = (width,)
            prev = width
    last = net_arch[-1] if net_arch else n_obs
    shapes.update({f"{prefix}action_net.weight": (N_ACTIONS, last),
                   f"{prefix}action_net.bias": (N_ACTIONS,), f"{prefix}log_std": (N_ACTIONS,),
                   f"{prefix}value_net.weight": (1, last), f"{prefix}value_net.bias": (1,)})
    return shapes


def _n_params(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def check_param_count(path: Path, shapes: dict[str, tuple[int, ...]],
                      limit: int = PARAMS_MAX) -> None:
    """Raise before allocating when a config asks for more than ``limit`` parameters.

    Raises
    ------
    PolicyFileError
    """
    n = _n_params(shapes)
    if n > limit:
        raise PolicyFileError(f"{path} describes networks of {n} parameters; at most {limit} "
                              "are loaded (observation size and net_arch set the count)")


def _safetensors_header(path: Path, raw: bytes) -> dict[str, Any]:
    """Parse and bound-check the header of a safetensors file held in ``raw``."""
    if raw[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or raw[:4] == b"PK\x03\x04":
        raise PolicyFileError(f"{path} looks like a pickle or torch.save archive, not a "
                              "safetensors file; st-agent never unpickles: re-save the weights "
                              "with safetensors (st-agent train writes them)")
    if len(raw) < 8:
        raise PolicyFileError(f"{path} has {len(raw)} bytes, too short for a safetensors "
                              "file (8-byte header length + JSON header)")
    n = int.from_bytes(raw[:8], "little")
    if n < 2 or n > min(len(raw) - 8, MAX_HEADER_BYTES):
        raise PolicyFileError(f"{path} is not a safetensors file: its header length {n} does "
                              f"not fit a {len(raw)}-byte file (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PolicyFileError(f"{path} is not a safetensors file: its header is not JSON "
                              f"({e})") from e
    if not isinstance(header, dict):
        raise PolicyFileError(f"{path} is not a safetensors file: its header is a JSON "
                              f"{type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    data_len = len(raw) - 8 - n
    for name, info in header.items():
        _check_entry(path, name, info, data_len)
    return header


def _check_entry(path: Path, name: str, info: Any, data_len: int) -> None:
    ok = isinstance(info, dict) and isinstance(info.get("dtype"), str) \
        and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
    if ok:
        shape, offs = info["shape"], info["data_offsets"]
        ok = all(type(d) is int and 0 <= d <= PARAMS_MAX for d in shape) and len(shape) <= 8 \
            and len(offs) == 2 and all(type(o) is int for o in offs)
    if not ok:
        raise PolicyFileError(f"{path}: tensor {name!r} has a malformed header entry "
                              f"{str(info)[:80]}")
    if info["dtype"] not in WEIGHT_DTYPES:
        raise PolicyFileError(f"{path}: tensor {name!r} has dtype {info['dtype']}; policy "
                              f"weights must be one of {sorted(WEIGHT_DTYPES)} (quantised or "
                              "integer weights are not part of the format)")
    begin, end = info["data_offsets"]
    size = math.prod(info["shape"]) * WEIGHT_DTYPES[info["dtype"]]
    if not (0 <= begin <= end <= data_len and end - begin == size):
        raise PolicyFileError(f"{path}: tensor {name!r} has data offsets {[begin, end]} that "
                              f"do not hold its {info['dtype']} shape {info['shape']} inside "
                              f"the {data_len}-byte data section (truncated or crafted file)")


def load_weights(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Read policy weights from a safetensors file, checked against the expected shapes.

    Checked before any tensor is built: a regular file no larger than the
    expected tensors (plus a bounded header), the exact set of tensor names, their
    shapes and dtypes (float32, float16 or bfloat16; returned as float32). Then
    every value must be finite, ``log_std`` within :data:`LOG_STD_RANGE` and every
    other weight within ``±``:data:`WEIGHT_ABS_MAX` (trained policies stay under 10).

    Parameters
    ----------
    path : Path
        The ``.safetensors`` file.
    shapes : dict of str to tuple of int
        Expected names and shapes (:func:`actor_critic_shapes`).

    Returns
    -------
    state : dict of str to torch.Tensor
        float32 tensors, ready for ``load_state_dict``.

    Raises
    ------
    PolicyFileError
        Naming the file, the tensor and what is wrong.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    limit = 8 + MAX_HEADER_BYTES + 4 * _n_params(shapes)
    raw = read_bytes_bounded(path, limit, "a regular .safetensors file",
                             "train a policy with `st-agent train`")
    header = _safetensors_header(path, raw)
    missing, extra = sorted(set(shapes) - set(header)), sorted(set(header) - set(shapes))
    if missing or extra:
        raise PolicyFileError(f"{path} does not match its policy.json: missing tensors "
                              f"{missing[:4]}, unexpected tensors {extra[:4]}")
    for name, shape in shapes.items():
        if tuple(header[name]["shape"]) != shape:
            raise PolicyFileError(f"{path}: tensor {name!r} has shape "
                                  f"{tuple(header[name]['shape'])}; policy.json's sizes need "
                                  f"{shape}")
    try:
        state = load_bytes(raw)
    except (SafetensorError, ValueError, RuntimeError, TypeError, KeyError) as e:
        raise PolicyFileError(f"{path} is not a readable safetensors file ({e})") from e
    del raw
    out = {}
    for name, t in state.items():
        t = t.to(torch.float32)
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise PolicyFileError(f"{path}: tensor {name!r} holds non-finite values "
                                  f"({t[bad].flatten()[0].item()} at flat index "
                                  f"{int(bad.flatten().nonzero()[0])}); re-train or re-save it")
        lo, hi = LOG_STD_RANGE if name.endswith("log_std") else (-WEIGHT_ABS_MAX, WEIGHT_ABS_MAX)
        if t.numel() and (float(t.min()) < lo or float(t.max()) > hi):
            worst = float(t.min()) if float(t.min()) < lo else float(t.max())
            raise PolicyFileError(f"{path}: tensor {name!r} holds {worst:.3g}, outside the "
                                  f"allowed [{lo:g}, {hi:g}] of policy weights")
        out[name] = t
    return out


def build_actor_critic(path: Path, n_obs: int, net_arch: Sequence[int],
                       state: dict[str, Any]) -> ActorCriticPolicy:
    """An SB3 ``ActorCriticPolicy`` with checked weights ``state`` (from :func:`load_weights`).

    Raises
    ------
    PolicyFileError
        When the weights do not fit the network.
    """
    obs_space = spaces.Box(-np.inf, np.inf, (n_obs,), dtype=np.float32)
    act_space = spaces.Box(-1.0, 1.0, (N_ACTIONS,), dtype=np.float32)
    arch = list(net_arch)
    policy = ActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: 0.0,
                               net_arch={"pi": arch, "vf": arch})
    try:
        policy.load_state_dict(state)
    except RuntimeError as e:
        raise PolicyFileError(f"{path} does not fit the network policy.json describes ({e})") \
            from e
    return policy


def self_check(policy: TrainedPolicy, path: Path) -> TrainedPolicy:
    """Raise unless ``policy`` gives finite actions on its mean observation.

    Raises
    ------
    PolicyFileError
    """
    act, _ = policy.predict(policy.obs_mean.astype(np.float32))
    if not np.all(np.isfinite(act)):
        raise PolicyFileError(f"{path} gives non-finite actions {act} on its mean observation")
    return policy


def policy_files(path: str | Path, hint: str) -> tuple[Path, Path]:
    """``(policy.json, policy.safetensors)`` of a run folder or a file stem."""
    path = Path(path)
    if path.is_dir() and path.suffix not in (".json", ".safetensors"):
        path = path / "policy"
    path = path.with_suffix("")
    js, st = path.with_suffix(".json"), path.with_suffix(".safetensors")
    check_regular_file(js, "a regular policy.json file", hint)
    check_regular_file(st, "a regular .safetensors file", hint)
    return js, st


def load_policy(path: str | Path) -> TrainedPolicy:
    """Load a policy saved by :func:`save_policy` (a run folder or the file stem).

    ``policy.json`` is validated against :class:`~st_agent.policies.schema.PPOPolicyDoc`
    (types and ranges) before anything is allocated; the weights are checked by
    :func:`load_weights` (names, shapes, dtypes, finiteness); nothing is unpickled.

    Raises
    ------
    PolicyFileMissing
        When a file is missing (also a ``FileNotFoundError``).
    PolicyFileError
        When a file is not a valid policy (the message names file, field and value).
    """
    hint = "train a policy with `st-agent train`"
    js, st = policy_files(path, hint)
    raw = read_json_file(js, "policy.json", hint)
    check_format(raw, js, POLICY_FORMAT, (1,),
                 "jam policies run with `st-agent jam` / `st-agent evaluate-jam`"
                 if isinstance(raw, dict) and raw.get("format") == "st-agent-jam-policy"
                 else "")
    doc = validate_doc(PPOPolicyDoc, raw, js, f"{POLICY_FORMAT} file")
    shapes = actor_critic_shapes(doc.obs_size, doc.net_arch)
    check_param_count(js, shapes)
    policy = build_actor_critic(st, doc.obs_size, doc.net_arch, load_weights(st, shapes))
    return self_check(TrainedPolicy(policy, np.asarray(doc.obs_mean), np.asarray(doc.obs_var),
                                    doc.clip_obs, doc.epsilon, doc.history_len), st)


def bundled_format(name: str) -> str | None:
    """The ``format`` of shipped policy ``name`` (``None`` when none is shipped or readable)."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return None  # a bundled name, never a path
    folder = BUNDLED_DIR / name
    if not ((folder / "policy.safetensors").is_file() and (folder / "policy.json").is_file()):
        return None
    try:
        doc = read_json_file(folder / "policy.json", "policy.json")
    except PolicyFileError:
        logger.warning("shipped policy %s has an unreadable policy.json; skipped", folder)
        return None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if isinstance(fmt, str) else None


def bundled_policies() -> list[str]:
    """Names of the single-listener PPO policies shipped in :data:`BUNDLED_DIR`.

    Only policies of :data:`POLICY_FORMAT` (what a session and ``st-agent evaluate``
    run); shipped jam policies are listed by
    :func:`st_agent.policies.jam.bundled_jam_policies`.
    """
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if bundled_format(p.name) == POLICY_FORMAT)


def load_bundled_policy(name: str = "calm") -> TrainedPolicy:
    """Load a shipped policy (e.g. ``"calm"``) without unpickling anything.

    Raises
    ------
    PolicyFileError
        When no single-listener policy of that name is shipped (a ``ValueError``).
    """
    names = bundled_policies()
    if name not in names:
        other = bundled_format(name)
        why = f" ({name!r} is a {other} file)" if other else ""
        raise PolicyFileError(f"no bundled policy {name!r}{why}; available: {names}")
    return load_policy(BUNDLED_DIR / name / "policy")
