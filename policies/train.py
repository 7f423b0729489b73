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
from dataclasses import asdict
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
from st_agent.policies.config import TrainConfig
from st_agent.policies.loading import POLICY_FORMAT, TrainedPolicy

__all__ = ["TrainConfig", "save_policy", "train"]

logger = logging.getLogger(__name__)

#: Policies shipped with the package: ``assets/<name>/policy.safetensors`` + ``.json``.


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
            from st_agent.listener.family import FAMILY_NAMES

            # held-out draws of the families it trains on (all of them by default); a
            # personal run: the fitted listener itself, on episodes of its own seeds
            fams = tuple(cfg.extra.get("families") or FAMILY_NAMES)
            personal = kw.pop("listener", None)
            tests = [personal[0]] * cfg.n_eval_listeners if personal else \
                heldout_listeners(cfg.n_eval_listeners, cfg.seed, fams)
            m = rollout(lambda env: pol, tests, kw, seed=cfg.seed)
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
    if cfg.subject:  # the subject's personal controller (session --subject uses it)
        from st_agent.policies.personal import install_personal_controller

        install_personal_controller(run, cfg.subject, cfg.personal_listener(),
                                    {"listener_jitter": cfg.listener_jitter,
                                     "listener_draws": cfg.listener_draws,
                                     "total_timesteps": cfg.total_timesteps,
                                     "target": cfg.target, "seed": cfg.seed})
    return run
