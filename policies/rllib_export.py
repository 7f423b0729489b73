"""RLlib -> the project's policy files: the RLModule's weights and the filter's statistics.

An RLlib PPO module (default model, ``free_log_std``, separate actor and critic MLPs)
and SB3's ``ActorCriticPolicy`` are the same network under other names;
:func:`module_to_policy_state` renames the tensors and :func:`filter_to_vecnorm`
rewrites RLlib's ``MeanStdFilter`` statistics as VecNormalize's, so the written
``policy.safetensors`` + ``policy.json`` load with
:func:`st_agent.policies.loading.load_policy` (or
:func:`~st_agent.policies.jam.load_jam_policy`) and act exactly as the module's
deterministic forward pass (tests/test_rllib.py checks it).

``st-agent export-rllib CHECKPOINT --out STEM`` converts a checkpoint folder
(``rllib_checkpoint/`` of ``st-agent train --backend rllib``). Ray is imported inside
the functions only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

__all__ = ["CLIP_OBS", "EXPORT_EPSILON", "RLLIB_STD_EPS", "ExportRLlibConfig",
           "checkpoint_parts", "export_rllib_checkpoint", "filter_to_vecnorm",
           "module_to_policy_state", "policy_from_module", "run_export_rllib",
           "run_export_rllib_command",
           "save_rllib_policy"]

#: Added to the filter's std by RLlib's MeanStdFilter (``ray.rllib.utils.numpy.SMALL_NUMBER``).
RLLIB_STD_EPS = 1e-6
#: ``epsilon`` of an exported policy: with ``obs_var = std**2 + 2e-6 * std``,
#: ``sqrt(obs_var + 1e-12) == std + 1e-6``, RLlib's denominator.
EXPORT_EPSILON = RLLIB_STD_EPS ** 2
#: Clip of the normalised observations (RLlib's and SB3's default).
CLIP_OBS = 10.0

def module_to_policy_state(module_state: Mapping[str, Any], net_arch: Sequence[int]
                           ) -> dict[str, Any]:
    """The default PPO RLModule's tensors, renamed to SB3's ``ActorCriticPolicy`` layout.

    ``encoder.actor_encoder.net.mlp.<2i>`` -> ``mlp_extractor.policy_net.<2i>``, the critic's
    -> ``mlp_extractor.value_net.<2i>``, ``pi.net.mlp.0`` -> ``action_net``,
    ``pi.log_std`` -> ``log_std``, ``vf.net.mlp.0`` -> ``value_net``.

    Parameters
    ----------
    module_state : mapping of str to tensor or array
        ``RLModule.state_dict()`` (or ``get_state()``), float tensors.
    net_arch : sequence of int
        Hidden layer widths.

    Returns
    -------
    state : dict of str to torch.Tensor
        float32, contiguous, CPU.

    Raises
    ------
    ValueError
        When a tensor the mapping needs is missing (not a default PPO module of that shape).
    """
    import torch

    names = {"pi.net.mlp.0.weight": "action_net.weight", "pi.net.mlp.0.bias": "action_net.bias",
             "pi.log_std": "log_std", "vf.net.mlp.0.weight": "value_net.weight",
             "vf.net.mlp.0.bias": "value_net.bias"}
    for i in range(len(net_arch)):
        for side, net in (("actor", "policy_net"), ("critic", "value_net")):
            for p in ("weight", "bias"):
                names[f"encoder.{side}_encoder.net.mlp.{2 * i}.{p}"] = \
                    f"mlp_extractor.{net}.{2 * i}.{p}"
    missing = sorted(set(names) - set(module_state))
    if missing:
        raise ValueError(f"the RLModule has no tensors {missing[:4]}: not a default PPO module "
                         f"with free_log_std and net_arch {list(net_arch)}")
    return {new: torch.as_tensor(np.asarray(module_state[old]) if not torch.is_tensor(
        module_state[old]) else module_state[old]).detach().to(torch.float32).cpu().contiguous()
            for old, new in names.items()}


def filter_to_vecnorm(filter_state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(obs_mean, obs_var)`` that make SB3's normalisation equal RLlib's filter.

    RLlib: ``clip((x - mean) / (std + 1e-6), +-10)``; the project's policies:
    ``clip((x - obs_mean) / sqrt(obs_var + epsilon), +-clip_obs)``. With
    ``obs_var = std**2 + 2e-6 * std`` and ``epsilon = 1e-12`` (:data:`EXPORT_EPSILON`)
    both denominators are ``std + 1e-6``.

    Parameters
    ----------
    filter_state : mapping
        One agent's entry of ``MeanStdFilter.get_state()`` (``running_stats``: one
        RunningStat state, a Box observation).

    Returns
    -------
    obs_mean, obs_var : ndarray, shape (n_obs,)
    """
    from ray.rllib.utils.filter import RunningStat

    stats = filter_state["running_stats"]
    if len(stats) != 1:
        raise ValueError(f"expected one Box observation in the filter, got {len(stats)}")
    rs = RunningStat.from_state(stats[0])
    std = np.asarray(rs.std, dtype=np.float64)
    return np.asarray(rs.mean, dtype=np.float64).copy(), std ** 2 + 2 * RLLIB_STD_EPS * std


def policy_from_module(module_state: Mapping[str, Any], obs_mean: np.ndarray,
                       obs_var: np.ndarray, net_arch: Sequence[int], history_len: int) -> Any:
    """A :class:`~st_agent.policies.loading.TrainedPolicy` acting as the RLModule does.

    Returns
    -------
    policy : TrainedPolicy
        ``predict(obs)`` = the module's deterministic action (the Gaussian's mean),
        clipped to [-1, 1], on RLlib-normalised ``obs``.
    """
    from st_agent.policies.loading import TrainedPolicy, build_actor_critic

    state = module_to_policy_state(module_state, net_arch)
    net = build_actor_critic(Path("<RLModule>"), int(obs_mean.size), list(net_arch), state)
    return TrainedPolicy(net, obs_mean, obs_var, CLIP_OBS, EXPORT_EPSILON, history_len)


def save_rllib_policy(path: str | Path, doc: dict[str, Any], policy: Any) -> Path:
    """Write ``<path>.safetensors`` (the SB3-layout state dict) and ``<path>.json``.

    Parameters
    ----------
    path : str or Path
        File stem.
    doc : dict
        The JSON document (format, version, config, ...) without the normalisation
        fields, which come from ``policy``.
    policy : TrainedPolicy
        From :func:`policy_from_module`.
    """
    import ray
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.policy.state_dict().items()}
    save_file(state, str(path.with_suffix(".safetensors")))
    out = {**doc, "obs_mean": policy.obs_mean.tolist(), "obs_var": policy.obs_var.tolist(),
           "clip_obs": policy.clip_obs, "epsilon": policy.epsilon,
           "trainer": f"ray[rllib]=={ray.__version__} PPO (new API stack)"}
    path.with_suffix(".json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return path


def checkpoint_parts(checkpoint: str | Path, module_id: str = "default_policy"
                     ) -> tuple[dict[str, Any], dict[Any, Any], list[int]]:
    """The RLModule weights, filter state and hidden sizes stored in an RLlib checkpoint.

    Parameters
    ----------
    checkpoint : str or Path
        A folder written by ``Algorithm.save_to_path`` (``rllib_checkpoint/`` of a run).
    module_id : str
        The module (``default_policy``; in a jam ``shared`` or ``performer_<i>``).

    Returns
    -------
    module_state : dict of str to tensor
    filter_state : dict
        ``MeanStdFilter.get_state()``: per key (``None``, or a module id in a jam).
    net_arch : list of int

    Raises
    ------
    PolicyFileError
        When the folder is not an RLlib checkpoint with that module and a MeanStdFilter.

    Notes
    -----
    RLlib writes its checkpoints with (cloud)pickle and reads them back the same way:
    convert only checkpoints you (or someone you trust) wrote. What comes out is the
    project's pickle-free safetensors + JSON.
    """
    from ray import cloudpickle
    from ray.rllib.core.rl_module.rl_module import RLModule

    from st_agent.policies.schema import PolicyFileError

    ckpt = Path(checkpoint)
    mod_dir = ckpt / "learner_group" / "learner" / "rl_module" / module_id
    filt_dir = ckpt / "env_runner" / "env_to_module_connector"
    filt = sorted(filt_dir.glob("*MeanStdFilter*")) if filt_dir.is_dir() else []
    if not (mod_dir / "metadata.json").is_file() or not filt \
            or not (filt[0] / "state.pkl").is_file():
        have = sorted(p.name for p in mod_dir.parent.iterdir()) if mod_dir.parent.is_dir() \
            else []
        raise PolicyFileError(f"{ckpt} is not an RLlib checkpoint of `st-agent train "
                              f"--backend rllib` with module {module_id!r} and a MeanStdFilter "
                              f"(modules there: {have})")
    module = RLModule.from_checkpoint(str(mod_dir.resolve()))
    # the filter piece's state as RLlib wrote it (MeanStdFilter.from_checkpoint would need
    # the env's observation space to rebuild the piece itself)
    with (filt[0] / "state.pkl").open("rb") as fh:
        filter_state = cloudpickle.load(fh)
    arch = list(module.model_config["fcnet_hiddens"])
    return module.state_dict(), filter_state, arch


def export_rllib_checkpoint(checkpoint: str | Path, out: str | Path,
                            module_id: str = "default_policy", filter_key: Any = None,
                            doc: dict[str, Any] | None = None) -> Path:
    """Convert an RLlib checkpoint's module into the project's policy files.

    Parameters
    ----------
    checkpoint : str or Path
        ``rllib_checkpoint/`` of a run (:func:`checkpoint_parts`).
    out : str or Path
        File stem: ``<out>.safetensors`` and ``<out>.json`` are written.
    module_id : str
        Which module.
    filter_key : any
        Which entry of the filter state (``None`` single-agent; the module id in a jam).
    doc : dict, optional
        JSON fields (``format``, ``version``, ``config``, ...); default: a single-listener
        ``st-agent-ppo-policy`` with ``history_len`` from the observation size.

    Returns
    -------
    out : Path
    """
    from st_agent.contract import observation_size
    from st_agent.policies.loading import POLICY_FORMAT
    from st_agent.policies.schema import PolicyFileError

    state, filt, arch = checkpoint_parts(checkpoint, module_id)
    if filter_key not in filt:
        raise PolicyFileError(f"{checkpoint}: its MeanStdFilter has no statistics for "
                              f"{filter_key!r} (it has {sorted(map(str, filt))})")
    mean, var = filter_to_vecnorm(filt[filter_key])
    if doc is None:  # a single-listener policy
        per = observation_size(1) - observation_size(0)
        history_len = (int(mean.size) - observation_size(0)) // per
        doc = {"format": POLICY_FORMAT, "version": 1, "config": {}, "step": 0,
               "history_len": history_len, "net_arch": arch, "ret_var": None}
    else:  # a jam policy
        from st_agent.envs.jam import jam_history_len

        history_len = jam_history_len(int(mean.size))
        doc = {**doc, "obs_size": int(mean.size), "net_arch": arch}
    policy = policy_from_module(state, mean, var, arch, history_len)
    return save_rllib_policy(out, {**doc, "source": str(checkpoint)}, policy)


@dataclass
class ExportRLlibConfig:
    """Convert an RLlib checkpoint into the project's policy files (``st-agent export-rllib``)."""

    checkpoint: Annotated[str, tyro.conf.Positional] = ""
    """``rllib_checkpoint/`` of a ``st-agent train --backend rllib`` run (written by RLlib,
    with pickle: convert only checkpoints you trust)."""
    out: str = ""
    """File stem of the output: ``<out>.safetensors`` and ``<out>.json``."""
    module_id: str = "default_policy"
    """Module to convert (``default_policy``; a jam's ``shared`` or ``performer_<i>``)."""


def run_export_rllib(cfg: ExportRLlibConfig) -> Path:
    """``st-agent export-rllib``: write the policy files; return their stem.

    Raises
    ------
    UsageError
        Without ``checkpoint`` or ``--out``.
    """
    from st_agent.errors import UsageError
    from st_agent.policies.rllib_backend import require_ray

    if not cfg.checkpoint or not cfg.out:
        raise UsageError("export-rllib needs a CHECKPOINT folder and --out STEM")
    require_ray()
    key = None if cfg.module_id == "default_policy" else cfg.module_id
    doc = None
    if key is not None:
        from st_agent.policies.jam import JAM_POLICY_FORMAT

        doc = {"format": JAM_POLICY_FORMAT, "version": 1, "config": {}, "step": 0,
               "module_id": cfg.module_id}
    return export_rllib_checkpoint(cfg.checkpoint, cfg.out, cfg.module_id, key, doc)


def run_export_rllib_command(cfg: ExportRLlibConfig) -> None:
    """``st-agent export-rllib``: convert, then say where the files are."""
    import sys

    stem = run_export_rllib(cfg)
    sys.stdout.write(f"wrote {stem.with_suffix('.safetensors')} and {stem.with_suffix('.json')}\n")
