"""Train a PPO controller on the fast closed-loop env (stable-baselines3).

Everything a run writes lives in ``runs/<name>/``: ``config.json``, TensorBoard
events (``tb/``), checkpoints (``checkpoints/step_<n>.safetensors`` + ``.json``),
``eval.jsonl`` (periodic evaluation on held-out listeners), and the final
``policy.safetensors`` + ``policy.json``. The policy is stored as a plain
``state_dict`` in safetensors beside a JSON with the config and the
observation-normalisation statistics; :func:`st_agent.policies.loading.load_policy`
rebuilds the network in code and loads the tensors, never unpickling anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
from st_agent.paths import runs_dir
from st_agent.policies.loading import POLICY_FORMAT, TrainedPolicy

__all__ = ["TrainConfig", "save_policy", "train"]

logger = logging.getLogger(__name__)

#: Policies shipped with the package: ``assets/<name>/policy.safetensors`` + ``.json``.


@dataclass
class TrainConfig:
    """Train a PPO controller (``st-agent train``); every field is a flag."""

    name: str = "ppo_calm"
    """Run name: outputs go to ``<runs_dir>/<name>/``."""
    runs_dir: str = ""
    """Parent folder of runs; empty: the project's ``runs/``."""
    target: str = "calm"
    """Target preset (calm, focus, uplift, energize) or ``random`` (one per episode)."""
    total_timesteps: int = 200_000
    """Environment steps (phrases) to train for."""
    n_envs: int = 8
    """Fast environments (sessions stepped together)."""
    vectorised: bool = True
    """Step the sessions in one NumPy env (st_agent.envs.vector.VecClosedLoopEnv) instead of a
    DummyVecEnv of ClosedLoopEnvs (same dynamics, much faster)."""
    seed: int = 0
    """Seed of the environments and of PPO."""
    max_steps: int = 32
    """Phrases per episode."""
    phrase_bank: str = ""
    """Phrase bank JSON; empty: the default bank (built on first use)."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    n_steps: int = 256
    """Steps per environment per PPO rollout."""
    batch_size: int = 512
    """Minibatch size (512 is about 3x faster than SB3's 64 on 2 cores)."""
    n_epochs: int = 10
    """PPO epochs per rollout."""
    gamma: float = 0.95
    """Discount per phrase."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the policy and value networks."""
    eval_freq: int = 20_000
    """Evaluate on held-out listeners every this many steps (0: never)."""
    n_eval_listeners: int = 16
    """Held-out listeners per periodic evaluation."""
    checkpoint_freq: int = 50_000
    """Save a checkpoint every this many steps (0: never)."""
    progress_bar: bool = False
    """Show SB3's progress bar (needs tqdm and rich)."""
    torch_threads: int = 1
    """Torch CPU threads (1 is fastest for small MLPs)."""
    device: str = "cpu"
    """Torch device."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further ClosedLoopEnv keyword arguments (e.g. jerk_weight)."""

    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``."""
        return Path(self.runs_dir or runs_dir()) / self.name

    def env_kwargs(self, bank: PhraseBank) -> dict[str, Any]:
        """Keyword arguments of the training environments."""
        return {"target": self.target, "phrase_bank": bank, "max_steps": self.max_steps,
                **self.extra}


def save_policy(model: PPO, vecnorm: VecNormalize, path: str | Path, cfg: TrainConfig,
                step: int) -> Path:
    """Write ``<path>.safetensors`` (policy state_dict) and ``<path>.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    save_file(state, str(path.with_suffix(".safetensors")))
    rms = vecnorm.obs_rms
    doc = {"format": POLICY_FORMAT, "version": 1, "step": int(step), "config": asdict(cfg),
           "history_len": int(model.observation_space.shape[0] - 11) // 5,
           "net_arch": list(cfg.net_arch),
           "obs_mean": rms.mean.tolist(), "obs_var": rms.var.tolist(),
           "clip_obs": vecnorm.clip_obs, "epsilon": vecnorm.epsilon,
           "ret_var": float(vecnorm.ret_rms.var)}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


class _EvalCheckpoint(BaseCallback):
    """Periodic held-out evaluation (TensorBoard ``eval/*``) and safetensors checkpoints."""

    def __init__(self, cfg: TrainConfig, bank: PhraseBank, vecnorm: VecNormalize) -> None:
        super().__init__()
        self.cfg, self.bank, self.vecnorm = cfg, bank, vecnorm
        self._next_eval = cfg.eval_freq or None
        self._next_ckpt = cfg.checkpoint_freq or None

    def _on_step(self) -> bool:
        from st_agent.policies.evaluate import heldout_listeners, rollout

        n = self.num_timesteps
        cfg, run = self.cfg, self.cfg.run_dir()
        if self._next_ckpt is not None and n >= self._next_ckpt:
            save_policy(self.model, self.vecnorm, run / "checkpoints" / f"step_{n}", cfg, n)
            self._next_ckpt += cfg.checkpoint_freq
        if self._next_eval is not None and n >= self._next_eval:
            rms = self.vecnorm.obs_rms
            pol = TrainedPolicy(self.model.policy, rms.mean.copy(), rms.var.copy(),
                                self.vecnorm.clip_obs, self.vecnorm.epsilon)
            target = "calm" if cfg.target == "random" else cfg.target
            kw = cfg.env_kwargs(self.bank) | {"target": target}
            m = rollout(lambda env: pol, heldout_listeners(cfg.n_eval_listeners, cfg.seed), kw,
                        seed=cfg.seed)
            self.model.policy.train()
            for k, v in m.items():
                self.logger.record(f"eval/{k}", v)
            with (run / "eval.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": n, **m}) + "\n")
            logger.info("step %d: held-out distance %.3f", n, m["distance"])
            self._next_eval += cfg.eval_freq
        return True


def train(cfg: TrainConfig) -> Path:
    """Train PPO; return the run folder (holding ``policy.safetensors``/``.json``).

    Parameters
    ----------
    cfg : TrainConfig

    Returns
    -------
    run_dir : Path
    """
    if cfg.n_envs < 1 or cfg.total_timesteps < 1:
        raise ValueError(f"n_envs ({cfg.n_envs}) and total_timesteps ({cfg.total_timesteps}) "
                         "must be >= 1")
    if (cfg.n_steps * cfg.n_envs) % cfg.batch_size and cfg.n_steps * cfg.n_envs > cfg.batch_size:
        logger.warning("n_steps * n_envs = %d is not a multiple of batch_size %d",
                       cfg.n_steps * cfg.n_envs, cfg.batch_size)
    torch.set_num_threads(cfg.torch_threads)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    bank = PhraseBank.load(cfg.phrase_bank) if cfg.phrase_bank else build_phrase_bank()
    kw = cfg.env_kwargs(bank)
    if cfg.vectorised:
        from st_agent.envs.vector import VecClosedLoopEnv

        venv = VecClosedLoopEnv(cfg.n_envs, seed=cfg.seed, **kw)
    else:
        venv = DummyVecEnv([lambda: ClosedLoopEnv(**kw) for _ in range(cfg.n_envs)])
        venv.seed(cfg.seed)
    vecnorm = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma)
    arch = list(cfg.net_arch)
    model = PPO("MlpPolicy", vecnorm, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                batch_size=min(cfg.batch_size, cfg.n_steps * cfg.n_envs),
                n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                ent_coef=cfg.ent_coef, seed=cfg.seed, device=cfg.device,
                policy_kwargs={"net_arch": {"pi": arch, "vf": arch}},
                tensorboard_log=str(run / "tb"), verbose=0)
    model.learn(cfg.total_timesteps, callback=_EvalCheckpoint(cfg, bank, vecnorm),
                progress_bar=cfg.progress_bar, tb_log_name="ppo")
    save_policy(model, vecnorm, run / "policy", cfg, model.num_timesteps)
    logger.info("trained %d steps -> %s", model.num_timesteps, run)
    vecnorm.close()
    return run
