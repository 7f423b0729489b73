"""Train jam policies with Ray RLlib (``st-agent train-jam --backend rllib``), multi-agent.

The PettingZoo :class:`~st_agent.envs.jam.JamEnv` is wrapped in RLlib's
``ParallelPettingZooEnv`` (one agent per performer) and trained with RLlib's PPO on
its current API stack, with a policy mapping:

* ``--policy-mapping shared`` (default): every performer maps to one RLModule
  ``shared`` (parameter sharing, told apart by the performer one-hot in the
  observation), the recipe SB3 trains through SuperSuit;
* ``--policy-mapping per-performer``: performer ``i`` maps to its own module
  ``performer_<i>``.

Observations are normalised per module (:class:`~st_agent.policies.rllib_connectors.
ModuleMeanStdFilter`). The run folder holds ``config.json``, ``train_summary.json``,
``rllib_checkpoint/`` and the policies in the project's jam format
(``st-agent-jam-policy`` version 1, safetensors + JSON): ``policy.*`` for the shared
module, which ``st-agent jam --policy`` and ``evaluate-jam`` run unchanged, or
``performer_<i>/policy.*`` per performer (each loads with
:func:`~st_agent.policies.jam.load_jam_policy`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from st_agent.errors import UsageError
from st_agent.policies.rllib_backend import (
    CLIP_OBS,
    check_backend_settings,
    filter_to_vecnorm,
    learner_module_state,
    model_config,
    policy_from_module,
    ppo_training_kwargs,
    save_rllib_policy,
    start_run,
)

__all__ = ["JAM_ENV_NAME", "POLICY_MAPPINGS", "agent_to_module", "export_jam_modules",
           "run_train_jam_backend", "train_jam_rllib"]

logger = logging.getLogger(__name__)

#: RLlib's name of the registered multi-agent jam env.
JAM_ENV_NAME = "st_agent_jam"
#: Values of ``--policy-mapping``.
POLICY_MAPPINGS = ("shared", "per-performer")
#: The shared module's id.
SHARED_ID = "shared"


def agent_to_module(performers: int, mapping: str) -> dict[str, str]:
    """Module id of each performer's agent id (``performer_<i>``).

    Raises
    ------
    UsageError
        For a mapping other than :data:`POLICY_MAPPINGS`.
    """
    if mapping not in POLICY_MAPPINGS:
        raise UsageError(f"--policy-mapping must be one of {list(POLICY_MAPPINGS)}, got "
                         f"{mapping!r}")
    agents = [f"performer_{i}" for i in range(performers)]
    return {a: (SHARED_ID if mapping == "shared" else a) for a in agents}


def _make_jam_env(env_config: Mapping[str, Any]) -> Any:
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from st_agent.envs.jam import JamEnv

    kw = {k: v for k, v in env_config.items() if k not in ("num_envs", "seed")}
    return ParallelPettingZooEnv(JamEnv(**kw))


class _MapAgents:
    """A picklable policy mapping: agent id -> module id from a table."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)

    def __call__(self, agent_id: str, episode: Any = None, **kwargs: Any) -> str:
        return self.table[agent_id]


class _FilterFactory:
    """A picklable ``env_to_module_connector``: a per-module MeanStdFilter."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)

    def __call__(self, env: Any = None, spaces: Any = None, device: Any = None) -> Any:
        from st_agent.policies.rllib_connectors import ModuleMeanStdFilter

        return ModuleMeanStdFilter(agent_to_module=self.table, clip_by_value=CLIP_OBS)


def _jam_ppo_config(cfg: Any, env_config: dict[str, Any], table: dict[str, str]) -> Any:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    runners = int(cfg.num_env_runners)
    per_runner = max(1, int(cfg.n_envs) // max(1, runners))
    n_jams = per_runner * max(1, runners)
    modules = sorted(set(table.values()))
    spec = MultiRLModuleSpec(rl_module_specs={
        m: RLModuleSpec(model_config=model_config(cfg.net_arch)) for m in modules})
    return (PPOConfig()
            .environment(JAM_ENV_NAME, env_config=env_config, disable_env_checking=True)
            .multi_agent(policies=set(modules), policy_mapping_fn=_MapAgents(table))
            .env_runners(num_env_runners=runners, num_envs_per_env_runner=per_runner,
                         rollout_fragment_length=int(cfg.n_steps),
                         env_to_module_connector=_FilterFactory(table),
                         num_cpus_per_env_runner=1)
            .learners(num_learners=0)
            .training(**ppo_training_kwargs(cfg, n_jams))
            .rl_module(rl_module_spec=spec)
            .debugging(seed=int(cfg.seed), log_level="WARN"))


def export_jam_modules(algo: Any, cfg: Any, table: dict[str, str], out_dir: Path,
                       step: int) -> list[Path]:
    """Write every module of ``algo`` as a jam policy (see module docstring for where).

    Returns
    -------
    paths : list of Path
        The file stems written.
    """
    from st_agent.envs.jam import jam_history_len
    from st_agent.policies.jam import JAM_POLICY_FORMAT
    from st_agent.policies.rllib_backend import env_runner_filter_state

    filt = env_runner_filter_state(algo)
    out = []
    for module_id in sorted(set(table.values())):
        mean, var = filter_to_vecnorm(filt[module_id])
        policy = policy_from_module(learner_module_state(algo, module_id), mean, var,
                                    cfg.net_arch, jam_history_len(int(mean.size)))
        stem = out_dir / "policy" if module_id == SHARED_ID else out_dir / module_id / "policy"
        doc = {"format": JAM_POLICY_FORMAT, "version": 1, "step": int(step),
               "config": asdict(cfg), "obs_size": int(mean.size),
               "net_arch": list(cfg.net_arch), "module_id": module_id,
               "agents": sorted(a for a, m in table.items() if m == module_id)}
        out.append(save_rllib_policy(stem, doc, policy))
    return out


def train_jam_rllib(cfg: Any, on_iteration: Callable[[dict[str, Any]], None] | None = None
                    ) -> Path:
    """Train jam policies with RLlib (shared or per performer); return the run folder.

    Parameters
    ----------
    cfg : TrainJamConfig
        The SB3 recipe's fields plus ``num_env_runners``, ``address`` and
        ``policy_mapping``; ``timesteps`` counts agent steps (performer-phrases), as SB3's.
    on_iteration : callable, optional
        Called with ``{"step", "wall_sec", "result"}`` (agent steps) after each iteration.

    Returns
    -------
    run_dir : Path

    Raises
    ------
    UsageError, RLlibMissing, RayClusterUnreachable
    """
    from st_agent.music.ensemble import check_performers

    check_performers(cfg.performers)
    check_backend_settings("rllib", cfg.num_env_runners, cfg.address, cfg.n_envs)
    table = agent_to_module(cfg.performers, cfg.policy_mapping)
    for name in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be an int >= 1, got {v!r}")
    from st_agent.envs.jam import JamBank, build_jam_bank

    ray, run = start_run(cfg, JAM_ENV_NAME, _make_jam_env)
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    bank = JamBank.load(cfg.jam_bank) if cfg.jam_bank else build_jam_bank()
    algo = _jam_ppo_config(cfg, {**cfg.env_kwargs(bank), "seed": int(cfg.seed)},
                           table).build_algo()
    t0, agent_steps, next_ckpt = time.perf_counter(), 0, cfg.checkpoint_freq or None
    try:
        while agent_steps < cfg.timesteps:
            result = algo.train()
            env_steps = int(result.get(ENV_RUNNER_RESULTS, {}).get(
                NUM_ENV_STEPS_SAMPLED_LIFETIME, 0))
            agent_steps = env_steps * cfg.performers
            if on_iteration is not None:
                on_iteration({"step": agent_steps, "wall_sec": time.perf_counter() - t0,
                              "result": result})
            if next_ckpt is not None and agent_steps >= next_ckpt:
                export_jam_modules(algo, cfg, table, run / "checkpoints" / f"step_{agent_steps}",
                                   agent_steps)
                while next_ckpt <= agent_steps:
                    next_ckpt += cfg.checkpoint_freq
        export_jam_modules(algo, cfg, table, run, agent_steps)
        algo.save_to_path(str((run / "rllib_checkpoint").resolve()))
    finally:
        algo.stop()
    wall = time.perf_counter() - t0
    (run / "train_summary.json").write_text(json.dumps(
        {"agent_steps": agent_steps, "wall_sec": wall, "backend": "rllib",
         "ray": ray.__version__, "policy_mapping": cfg.policy_mapping,
         "modules": sorted(set(table.values())), "num_env_runners": cfg.num_env_runners,
         "address": cfg.address, "env": "ray.rllib ParallelPettingZooEnv(JamEnv)"}, indent=2),
        encoding="utf-8")
    logger.info("trained %d agent steps with RLlib in %.0f s -> %s", agent_steps, wall, run)
    return run


def run_train_jam_backend(cfg: Any) -> Path:
    """``st-agent train-jam --backend ...`` for a backend other than SB3 (validated here)."""
    check_backend_settings(cfg.backend, cfg.num_env_runners, cfg.address, cfg.n_envs)
    if cfg.backend == "sb3":
        from st_agent.policies.jam import train_jam

        return train_jam(cfg)
    agent_to_module(cfg.performers, cfg.policy_mapping)
    return train_jam_rllib(cfg)
