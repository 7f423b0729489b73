"""Train the closed-loop PPO controller with Ray RLlib (``st-agent train --backend rllib``).

RLlib's current API stack: an :class:`~ray.rllib.core.rl_module.RLModule` (the
default PPO module: separate actor and critic MLPs, tanh, a state-independent
``log_std`` as SB3 has it), a :class:`~ray.rllib.core.learner.Learner` (in the
driver) and :class:`~ray.rllib.env.env_runner.EnvRunner` s that sample
(``--num-env-runners 0``: in the driver; ``N``: N worker processes, on this
machine or on a cluster, ``--address auto``). Observations are normalised by
RLlib's ``MeanStdFilter`` connector (running mean and std, clipped at +-10), the
counterpart of SB3's ``VecNormalize``.

The env is the one SB3 trains on: the fast vectorised
:class:`~st_agent.envs.vector.VecClosedLoopEnv` (``--vectorised``, the default),
seen by RLlib as a Gymnasium vector env (:class:`~st_agent.envs.gym_vector.
GymVecClosedLoopEnv`), or ``SonicTelegram/ClosedLoop-v0`` instances
(``--no-vectorised``). ``n_envs`` sessions in all, split over the env runners.

The run folder is the SB3 run's: ``config.json``, ``eval.jsonl`` (the same held-out
evaluation), ``checkpoints/step_<n>.*``, ``rllib_checkpoint/`` (RLlib's own, to
resume with ``Algorithm.from_checkpoint``) and the final ``policy.safetensors`` +
``policy.json`` in the project's format (:mod:`st_agent.policies.loading`): the
RLModule's torch weights renamed to the SB3 ``ActorCriticPolicy`` layout and the
filter's statistics rewritten as VecNormalize's, so ``st-agent session --policy``,
``evaluate`` and the main ``.venv`` (without Ray) run it unchanged.

Ray pins ``gymnasium==1.2.2``; it lives in its own venv (``scripts/setup_rllib.sh``
creates ``.venv-rllib``). Ray is imported only here and only when a command asks
for this backend.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from st_agent.errors import DeviceError, UsageError
from st_agent.policies.rllib_export import (
    CLIP_OBS,
    checkpoint_parts,
    export_rllib_checkpoint,
    filter_to_vecnorm,
    module_to_policy_state,
    policy_from_module,
    save_rllib_policy,
)

__all__ = ["BACKENDS", "ENV_NAME", "INSTALL_HINT", "RAY_PIN", "RLlibMissing",
           "RayClusterUnreachable", "check_backend_settings", "checkpoint_parts", "connect_ray",
           "export_rllib_checkpoint", "filter_to_vecnorm",
           "module_to_policy_state", "policy_from_module", "ppo_training_kwargs",
           "require_ray", "run_train_backend", "save_rllib_policy", "start_run", "train_rllib"]

logger = logging.getLogger(__name__)

#: Training libraries of ``--backend``.
BACKENDS = ("sb3", "rllib")
#: The version of the ``rllib`` extra (it pins gymnasium==1.2.2, hence its own venv).
RAY_PIN = "ray[rllib]==2.60.0"
#: How to get it.
INSTALL_HINT = ("install it in its own environment with `bash scripts/setup_rllib.sh` (it "
                f"creates .venv-rllib with {RAY_PIN}, which pins gymnasium==1.2.2) and run "
                "`.venv-rllib/bin/st-agent ...`; or `pip install '.[rllib]'` into a venv "
                "of its own")
#: RLlib's name of the registered closed-loop env.
ENV_NAME = "st_agent_closed_loop"


class RLlibMissing(DeviceError):
    """``--backend rllib`` without Ray RLlib installed (the message says how to install it)."""


class RayClusterUnreachable(DeviceError):
    """``--address`` names a Ray cluster that cannot be reached."""


# --------------------------------------------------------------------------- setup


def check_backend_settings(backend: str, num_env_runners: int, address: str,
                           n_envs: int | None = None) -> None:
    """Validate ``--backend``, ``--num-env-runners`` and ``--address``.

    Raises
    ------
    UsageError
        Naming the option, the bad value and what is allowed.
    """
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    if isinstance(num_env_runners, bool) or not isinstance(num_env_runners, int) \
            or not 0 <= num_env_runners <= 1024:
        raise UsageError(f"--num-env-runners must be an int in [0, 1024], got "
                         f"{num_env_runners!r}")
    if not isinstance(address, str):
        raise UsageError(f"--address must be a string ('', 'auto' or HOST:PORT), got "
                         f"{address!r}")
    if n_envs is not None and num_env_runners > n_envs:
        raise UsageError(f"--num-env-runners {num_env_runners} is more than --n-envs "
                         f"{n_envs}: every env runner needs at least one env")


def require_ray() -> Any:
    """Import and return ``ray`` (with RLlib), or raise :class:`RLlibMissing`.

    Raises
    ------
    RLlibMissing
        When ``ray[rllib]`` is not installed in this Python.
    """
    try:
        import ray
        import ray.rllib  # the extra, not just ray core
    except ImportError as e:
        raise RLlibMissing(f"--backend rllib needs Ray RLlib, which is not installed in this "
                           f"environment ({e}); {INSTALL_HINT}") from e
    return ray


def start_run(cfg: Any, env_name: str, make_env: Callable[[Mapping[str, Any]], Any]
              ) -> tuple[Any, Path]:
    """What every RLlib training run does first: join (or start) Ray, set torch's threads,
    create the run folder with its ``config.json``, and register the env maker.

    Returns
    -------
    ray : module
    run : Path
        ``cfg.run_dir()``, created.
    """
    ray = connect_ray(cfg.address, num_cpus=max(2, cfg.num_env_runners + 1))
    import torch
    from ray.tune.registry import register_env

    torch.set_num_threads(cfg.torch_threads)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    register_env(env_name, make_env)
    return ray, run


def connect_ray(address: str = "", num_cpus: int | None = None) -> Any:
    """Start a private Ray on this machine, or join the cluster at ``address``.

    Parameters
    ----------
    address : str
        ``""``: a private Ray with ``num_cpus`` CPUs; ``"auto"`` or ``HOST:PORT``: an
        existing cluster (``ray start --head`` on the head node,
        ``ray start --address=HEAD:6379`` on the others).
    num_cpus : int, optional
        CPUs of the private Ray (at least the env runners plus the driver).

    Returns
    -------
    ray : module

    Raises
    ------
    RLlibMissing
        Without Ray.
    RayClusterUnreachable
        When no cluster answers at ``address``.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "logging_level": logging.WARNING}
    if not address:
        ray.init(num_cpus=num_cpus, **kw)
        return ray
    try:
        _probe(address)  # Ray itself retries an unanswered HOST:PORT for minutes
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as e:
        raise RayClusterUnreachable(
            f"--address {address}: no Ray cluster could be reached ({str(e).splitlines()[0]}); "
            "start one in the .venv-rllib environment with `ray start --head` on the head "
            "machine (and `ray start --address=<head-ip>:6379` on each other machine), then "
            "pass `--address auto` on the head (or --address <head-ip>:6379); or leave "
            "--address empty to train on this machine alone") from e
    return ray


def _probe(address: str, timeout_sec: float = 5.0) -> None:
    """Raise ``OSError`` unless something accepts a TCP connection at ``HOST:PORT``."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address must be '', 'auto' or HOST:PORT, got {address!r}")
    with socket.create_connection((host, int(port)), timeout=timeout_sec):
        pass


def ppo_training_kwargs(cfg: Any, n_sub: int) -> dict[str, Any]:
    """``PPOConfig.training`` arguments matching the SB3 recipe of ``cfg``.

    SB3's PPO has no KL penalty, no value clipping, a value-loss weight of 0.5 and a
    global gradient-norm clip of 0.5; RLlib's defaults differ and are set to those.

    Parameters
    ----------
    cfg : TrainConfig or TrainJamConfig
    n_sub : int
        Sub-environments sampled per iteration (``n_envs``; in a jam, agents).
    """
    batch = int(cfg.n_steps) * int(n_sub)
    return {"lr": cfg.learning_rate, "gamma": cfg.gamma, "lambda_": cfg.gae_lambda,
            "train_batch_size_per_learner": batch,
            "minibatch_size": min(int(cfg.batch_size), batch), "num_epochs": cfg.n_epochs,
            "entropy_coeff": cfg.ent_coef, "clip_param": 0.2, "use_kl_loss": False,
            "vf_loss_coeff": 0.5, "vf_clip_param": float("inf"), "grad_clip": 0.5,
            "grad_clip_by": "global_norm"}


def model_config(net_arch: Sequence[int]) -> Any:
    """The default PPO RLModule shaped like SB3's ``MlpPolicy`` (see module docstring)."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return DefaultModelConfig(fcnet_hiddens=[int(w) for w in net_arch], fcnet_activation="tanh",
                              vf_share_layers=False, free_log_std=True)


def _mean_std_filter(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    return MeanStdFilter(clip_by_value=CLIP_OBS)


def _make_env(env_config: Mapping[str, Any]) -> Any:
    """RLlib's env creator: a GymVecClosedLoopEnv (vector entry point) or a ClosedLoopEnv."""
    # RLlib reseeds at the first reset with config seed + env-runner index
    kw = {k: v for k, v in env_config.items() if k not in ("num_envs", "seed")}
    seed = int(env_config.get("seed", 0))
    if "num_envs" in env_config:
        from st_agent.envs.gym_vector import GymVecClosedLoopEnv

        return GymVecClosedLoopEnv(int(env_config["num_envs"]), seed=seed, **kw)
    from st_agent.envs.closed_loop import ClosedLoopEnv

    return ClosedLoopEnv(**kw)


# --------------------------------------------------------------------------- algorithm state

def env_runner_filter_state(algo: Any) -> dict[Any, Any]:
    """The MeanStdFilter state of the env runners (synchronised after each iteration)."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    def one(er: Any) -> dict[Any, Any]:
        pieces = [c for c in er._env_to_module.connectors if isinstance(c, MeanStdFilter)]
        return pieces[0].get_state()

    if algo.env_runner is not None:
        return one(algo.env_runner)
    return algo.env_runner_group.foreach_env_runner(one, remote_worker_ids=[1],
                                                    local_env_runner=False)[0]



def learner_module_state(algo: Any, module_id: str) -> dict[str, Any]:
    """The trained weights of ``module_id`` (the learner's, not an env runner's copy)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    state = algo.learner_group.get_state(
        components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{module_id}")
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][module_id]



# --------------------------------------------------------------------------- training


def _steps(result: Mapping[str, Any], key: str) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

    return int(result.get(ENV_RUNNER_RESULTS, {}).get(key, 0))


def _ppo_config(cfg: Any, env_config: dict[str, Any]) -> Any:
    from ray.rllib.algorithms.ppo import PPOConfig

    runners = int(cfg.num_env_runners)
    per_runner = max(1, int(cfg.n_envs) // max(1, runners))
    n_sub = per_runner * max(1, runners)
    return (PPOConfig()
            .environment(ENV_NAME, env_config=env_config, disable_env_checking=True)
            .env_runners(num_env_runners=runners, num_envs_per_env_runner=per_runner,
                         gym_env_vectorize_mode="vector_entry_point" if cfg.vectorised
                         else "sync", rollout_fragment_length=int(cfg.n_steps),
                         env_to_module_connector=_mean_std_filter, num_cpus_per_env_runner=1)
            .learners(num_learners=0)
            .training(**ppo_training_kwargs(cfg, n_sub))
            .rl_module(model_config=model_config(cfg.net_arch))
            .debugging(seed=int(cfg.seed), log_level="WARN")
            .reporting(metrics_num_episodes_for_smoothing=100))


def train_rllib(cfg: Any, on_iteration: Callable[[dict[str, Any]], None] | None = None
                ) -> Path:
    """Train PPO on the closed loop with RLlib; return the run folder.

    Parameters
    ----------
    cfg : TrainConfig
        The SB3 recipe's fields, plus ``num_env_runners`` and ``address``.
    on_iteration : callable, optional
        Called with ``{"step", "wall_sec", "result"}`` after every training iteration
        (benchmarks time the run with it).

    Returns
    -------
    run_dir : Path
        Holds ``policy.safetensors`` / ``policy.json`` (the project's format),
        ``config.json``, ``eval.jsonl``, ``train_summary.json``, ``rllib_checkpoint/``.

    Raises
    ------
    UsageError, RLlibMissing, RayClusterUnreachable
    """
    check_backend_settings("rllib", cfg.num_env_runners, cfg.address, cfg.n_envs)
    if cfg.n_envs < 1 or cfg.total_timesteps < 1:
        raise UsageError(f"n_envs ({cfg.n_envs}) and total_timesteps ({cfg.total_timesteps}) "
                         "must be >= 1")
    from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
    from st_agent.policies.loading import POLICY_FORMAT

    ray, run = start_run(cfg, ENV_NAME, _make_env)
    bank = PhraseBank.load(cfg.phrase_bank) if cfg.phrase_bank else build_phrase_bank()
    env_config = {**cfg.env_kwargs(bank), "seed": int(cfg.seed)}
    algo = _ppo_config(cfg, env_config).build_algo()
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    history_len = int(cfg.extra.get("history_len", _default_history()))
    doc = {"format": POLICY_FORMAT, "version": 1, "config": asdict(cfg),
           "history_len": history_len, "net_arch": list(cfg.net_arch), "ret_var": None}
    nexts = {"eval": cfg.eval_freq or None, "ckpt": cfg.checkpoint_freq or None}
    t0, step = time.perf_counter(), 0
    try:
        while step < cfg.total_timesteps:
            result = algo.train()
            step = _steps(result, NUM_ENV_STEPS_SAMPLED_LIFETIME)
            if on_iteration is not None:
                on_iteration({"step": step, "wall_sec": time.perf_counter() - t0,
                              "result": result})
            if any(n is not None and step >= n for n in nexts.values()) \
                    or step >= cfg.total_timesteps:
                policy = _current_policy(algo, DEFAULT_MODULE_ID, cfg.net_arch, history_len)
                _periodic(cfg, bank, policy, doc, step, nexts)
        policy = _current_policy(algo, DEFAULT_MODULE_ID, cfg.net_arch, history_len)
        save_rllib_policy(run / "policy", {**doc, "step": step}, policy)
        algo.save_to_path(str((run / "rllib_checkpoint").resolve()))
    finally:
        algo.stop()
    wall = time.perf_counter() - t0
    (run / "train_summary.json").write_text(json.dumps(
        {"env_steps": step, "wall_sec": wall, "backend": "rllib",
         "ray": ray.__version__, "num_env_runners": cfg.num_env_runners,
         "address": cfg.address, "vectorised": cfg.vectorised}, indent=2), encoding="utf-8")
    logger.info("trained %d steps with RLlib in %.0f s -> %s", step, wall, run)
    return run


def _default_history() -> int:
    from st_agent.contract import HISTORY_LEN

    return HISTORY_LEN


def _current_policy(algo: Any, module_id: str, net_arch: Sequence[int],
                    history_len: int) -> Any:
    filt = env_runner_filter_state(algo)
    mean, var = filter_to_vecnorm(next(iter(filt.values())))
    return policy_from_module(learner_module_state(algo, module_id), mean, var, net_arch,
                              history_len)


def _periodic(cfg: Any, bank: Any, policy: Any, doc: dict[str, Any], step: int,
              nexts: dict[str, int | None]) -> None:
    """Checkpoint and held-out evaluation, on SB3's schedule (``eval_freq``, ...)."""
    run = cfg.run_dir()
    if nexts["ckpt"] is not None and step >= nexts["ckpt"]:
        save_rllib_policy(run / "checkpoints" / f"step_{step}", {**doc, "step": step}, policy)
        while nexts["ckpt"] <= step:
            nexts["ckpt"] += cfg.checkpoint_freq
    if nexts["eval"] is not None and step >= nexts["eval"]:
        from st_agent.listener.family import FAMILY_NAMES
        from st_agent.policies.evaluate import heldout_listeners, rollout

        target = "calm" if cfg.target == "random" else cfg.target
        fams = tuple(cfg.extra.get("families") or FAMILY_NAMES)
        m = rollout(lambda env: policy, heldout_listeners(cfg.n_eval_listeners, cfg.seed, fams),
                    cfg.env_kwargs(bank) | {"target": target}, seed=cfg.seed)
        with (run / "eval.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **m}) + "\n")
        logger.info("step %d: held-out distance %.3f", step, m["distance"])
        while nexts["eval"] <= step:
            nexts["eval"] += cfg.eval_freq


def run_train_backend(cfg: Any) -> Path:
    """``st-agent train --backend ...`` for a backend other than SB3 (validated here)."""
    check_backend_settings(cfg.backend, cfg.num_env_runners, cfg.address, cfg.n_envs)
    if cfg.backend == "sb3":
        from st_agent.policies.train import train

        return train(cfg)
    if not math.isfinite(cfg.learning_rate) or cfg.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be > 0, got {cfg.learning_rate!r}")
    return train_rllib(cfg)
