"""Residual PPO on the adaptive controller, with its belief state in the observation.

The learning controller of the project. At every phrase the adaptive controller
(:class:`~st_agent.policies.adaptive.AdaptiveController`) updates its estimate of
this listener's response and proposes an action ``a_mpc``; the PPO policy sees

``[contract observation, a_mpc, belief]`` (belief: posterior mean and log
standard deviation of the response model's coefficients, 4 * N_REG values)

and outputs a residual ``r`` in [-1, 1]^3; the action is
``clip(a_mpc + scale * r, -1, 1)``. PPO is trained across the listener-model
family (domain randomisation over families and parameters,
:class:`~st_agent.envs.vector.VecClosedLoopEnv` with ``families``), starting from
a residual of about 0 (SB3 initialises the action head near 0), so it begins as
the adaptive controller and learns corrections where the model is wrong.

A run folder holds ``policy.safetensors`` (the SB3 ``ActorCriticPolicy``
state_dict), ``policy.json`` (format :data:`RESIDUAL_FORMAT`, sizes,
observation-normalisation statistics, the adaptive prior and settings, the
training config) and TensorBoard events; loading rebuilds the network in code
and never unpickles anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnvWrapper

from st_agent.contract import OBS_SIZE, SafetyBounds
from st_agent.policies.adaptive import N_REG, AdaptiveConfig, AdaptiveController, ResponsePrior

__all__ = ["RESIDUAL_FORMAT", "ResidualConfig", "ResidualController", "ResidualVecEnv",
           "load_residual", "train_residual"]

logger = logging.getLogger(__name__)

RESIDUAL_FORMAT = "st-agent-residual-ppo"
#: Extra observation entries: the adaptive action (3) and the belief (4 * N_REG).
EXTRA_SIZE = 3 + 4 * N_REG


def augment(obs: np.ndarray, mpc_action: np.ndarray, belief: np.ndarray) -> np.ndarray:
    """The residual policy's observation, shape (N, OBS_SIZE + EXTRA_SIZE), float32."""
    return np.concatenate([np.atleast_2d(obs), np.atleast_2d(mpc_action),
                           np.atleast_2d(belief)], axis=1).astype(np.float32)


class ResidualVecEnv(VecEnvWrapper):
    """Wraps a fast vectorised env: actions are residuals on the adaptive controller.

    Parameters
    ----------
    venv : VecEnv
        :class:`~st_agent.envs.vector.VecClosedLoopEnv` (contract observations).
    controller : AdaptiveController
        Batch controller, one session per env row.
    scale : float
        Residual scale (action = clip(a_mpc + scale * residual)).
    """

    def __init__(self, venv: Any, controller: AdaptiveController, scale: float = 0.5) -> None:
        n = venv.observation_space.shape[0] + EXTRA_SIZE
        obs_space = spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32)
        super().__init__(venv, observation_space=obs_space)
        self.controller, self.scale = controller, float(scale)
        self._mpc: np.ndarray | None = None

    def _augment(self, obs: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
        self._mpc, _ = self.controller.predict(obs, episode_start=starts)
        return augment(obs, self._mpc, self.controller.belief())

    def reset(self) -> np.ndarray:
        """Reset every session and the controller's sessions."""
        obs = self.venv.reset()
        self.controller.reset()
        return self._augment(obs, None)

    def step_async(self, actions: np.ndarray) -> None:
        res = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        self.venv.step_async(np.clip(self._mpc + self.scale * res, -1.0, 1.0))

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rew, done, infos = self.venv.step_wait()
        for i in np.flatnonzero(done):  # the terminal observation, augmented as the policy saw
            t = infos[i].get("terminal_observation")
            if t is not None:
                infos[i]["terminal_observation"] = np.concatenate(
                    [t, np.zeros(EXTRA_SIZE, np.float32)])
        return self._augment(obs, done), rew, done, infos


class ResidualController:
    """Deployable residual PPO: ``predict(obs)`` on contract observations.

    Parameters
    ----------
    policy : ActorCriticPolicy
        The trained SB3 policy (in eval mode).
    adaptive : AdaptiveController
        The base controller (its own online state).
    obs_mean, obs_var : ndarray
        Observation normalisation of training.
    clip_obs, epsilon, scale : float
    """

    def __init__(self, policy: Any, adaptive: AdaptiveController, obs_mean: np.ndarray,
                 obs_var: np.ndarray, clip_obs: float = 10.0, epsilon: float = 1e-8,
                 scale: float = 0.5) -> None:
        self.policy = policy.eval()
        self.adaptive = adaptive
        self.obs_mean, self.obs_var = np.asarray(obs_mean), np.asarray(obs_var)
        self.clip_obs, self.epsilon, self.scale = float(clip_obs), float(epsilon), float(scale)
        self.history_len = 3

    def reset(self) -> None:
        """New episode: the adaptive controller forgets this listener."""
        self.adaptive.reset()

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Action(s) in [-1, 1]^3 for contract observation(s), shape (3,) or (N, 3)."""
        o = np.asarray(obs, dtype=np.float64)
        single = o.ndim == 1
        mpc, _ = self.adaptive.predict(o, episode_start=episode_start)
        aug = augment(o, mpc, self.adaptive.belief())
        z = np.clip((aug - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon),
                    -self.clip_obs, self.clip_obs).astype(np.float32)
        res, _ = self.policy.predict(z, deterministic=deterministic)
        act = np.clip(np.atleast_2d(mpc) + self.scale * np.clip(res, -1, 1), -1, 1)
        act = act.astype(np.float32)
        self._last = (np.atleast_2d(mpc), self.scale * np.clip(np.atleast_2d(res), -1, 1), act)
        return (act[0] if single else act), None

    def explain(self, row: int = 0) -> dict[str, Any] | None:
        """What the last decision of session ``row`` used, for its reason in words.

        Returns
        -------
        info : dict or None
            ``kind`` ``"residual"``; ``mpc`` (3,): the adaptive controller's action,
            ``residual`` (3,): the learned correction added to it (scaled), ``action``
            (3,): their clipped sum, all as fractions of ``max_delta``; ``adaptive``:
            the adaptive controller's own :meth:`AdaptiveController.explain`. None
            before the first decision.
        """
        last = getattr(self, "_last", None)
        if last is None:
            return None
        mpc, res, act = (np.asarray(x[row], dtype=float).tolist() for x in last)
        return {"kind": "residual", "mpc": mpc, "residual": res, "action": act,
                "adaptive": self.adaptive.explain(row)}


@dataclass
class ResidualConfig:
    """Training settings of a residual PPO run."""

    target: str = "calm"
    """Target preset (or ``random``)."""
    families: tuple[str, ...] = ()
    """Training families (empty: all)."""
    total_timesteps: int = 1_000_000
    """Environment steps (phrases)."""
    n_envs: int = 64
    """Sessions stepped together."""
    n_steps: int = 128
    """Steps per env per rollout."""
    batch_size: int = 1024
    """Minibatch size."""
    n_epochs: int = 5
    """PPO epochs per rollout."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.95
    """Discount per phrase."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    log_std_init: float = -1.0
    """Initial log standard deviation of the residual (exploration)."""
    scale: float = 0.5
    """Residual scale."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the policy and value networks."""
    seed: int = 0
    """Seed of the envs and PPO."""
    max_steps: int = 32
    """Phrases per episode."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further env keyword arguments."""


def _policy_kwargs(cfg: ResidualConfig) -> dict[str, Any]:
    arch = list(cfg.net_arch)
    return {"net_arch": {"pi": arch, "vf": arch}, "log_std_init": cfg.log_std_init}


def train_residual(cfg: ResidualConfig, bank: Any, run: str | Path, prior: ResponsePrior,
                   adaptive: AdaptiveConfig) -> Path:
    """Train residual PPO across the families; write the run folder.

    Parameters
    ----------
    cfg : ResidualConfig
    bank : PhraseBank
    run : path
        Output folder.
    prior : ResponsePrior
        The adaptive controller's prior (fitted on the same training families).
    adaptive : AdaptiveConfig

    Returns
    -------
    run : Path
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from st_agent.envs.vector import VecClosedLoopEnv

    torch.set_num_threads(1)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    kw = {"target": cfg.target, "phrase_bank": bank, "max_steps": cfg.max_steps, **cfg.extra}
    if cfg.families:
        kw["families"] = list(cfg.families)
    base = VecClosedLoopEnv(cfg.n_envs, seed=cfg.seed, **kw)
    venv = ResidualVecEnv(base, AdaptiveController(prior, base.bounds, adaptive), cfg.scale)
    vecnorm = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma)
    model = PPO("MlpPolicy", vecnorm, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                batch_size=min(cfg.batch_size, cfg.n_steps * cfg.n_envs),
                n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                seed=cfg.seed, device="cpu", policy_kwargs=_policy_kwargs(cfg),
                tensorboard_log=str(run / "tb"), verbose=0)
    model.learn(cfg.total_timesteps, tb_log_name="residual")
    _save(model, vecnorm, run, cfg, prior, adaptive)
    vecnorm.close()
    logger.info("residual PPO: %d steps -> %s", model.num_timesteps, run)
    return run


def _save(model: Any, vecnorm: Any, run: Path, cfg: ResidualConfig, prior: ResponsePrior,
          adaptive: AdaptiveConfig) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    save_file(state, str(run / "policy.safetensors"))
    rms = vecnorm.obs_rms
    doc = {"format": RESIDUAL_FORMAT, "version": 1, "step": int(model.num_timesteps),
           "config": asdict(cfg) | {"extra": {}}, "obs_size": OBS_SIZE + EXTRA_SIZE,
           "obs_mean": rms.mean.tolist(), "obs_var": rms.var.tolist(),
           "clip_obs": vecnorm.clip_obs, "epsilon": vecnorm.epsilon,
           "prior": prior.to_json(), "adaptive": asdict(adaptive)}
    (run / "policy.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


def load_residual(path: str | Path, bounds: SafetyBounds | None = None) -> ResidualController:
    """Load a residual PPO run folder without unpickling anything.

    ``policy.json`` is validated (:class:`~st_agent.policies.schema.ResidualPolicyDoc`)
    and the weights checked (:func:`~st_agent.policies.loading.load_weights`) before
    use.

    Raises
    ------
    PolicyFileMissing
        When the files are missing (also a ``FileNotFoundError``).
    PolicyFileError
        When ``policy.json`` or the weights are not a valid residual PPO policy (a
        ``ValueError``, naming the file and the field).
    """
    from stable_baselines3.common.policies import ActorCriticPolicy

    from st_agent.policies.loading import (
        actor_critic_shapes,
        check_param_count,
        load_weights,
        policy_files,
    )
    from st_agent.policies.schema import (
        PolicyFileError,
        ResidualPolicyDoc,
        check_format,
        read_json_file,
        validate_doc,
    )

    hint = "train a residual PPO run first"
    js, st = policy_files(path, hint)  # typed errors naming what the paths are
    raw = read_json_file(js, "policy.json", hint)
    check_format(raw, js, RESIDUAL_FORMAT, (1,))
    checked = validate_doc(ResidualPolicyDoc, raw, js, f"{RESIDUAL_FORMAT} file")
    n = checked.obs_size
    if n != OBS_SIZE + EXTRA_SIZE:
        raise PolicyFileError(f"{js}: field obs_size = {n}; a residual policy takes "
                              f"{OBS_SIZE + EXTRA_SIZE} (contract + adaptive action + belief)")
    try:
        cfg = ResidualConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                                for k, v in raw["config"].items()})
    except TypeError as e:
        raise PolicyFileError(f"{js}: field config: {e}") from e
    shapes = actor_critic_shapes(n, cfg.net_arch)
    check_param_count(js, shapes)
    state = load_weights(st, shapes)
    obs_space = spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32)
    act_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    policy = ActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: 0.0,
                               **_policy_kwargs(cfg))
    policy.load_state_dict(state)
    try:
        prior = ResponsePrior.from_json(checked.prior.model_dump())
    except ValueError as e:
        raise PolicyFileError(f"{js}: field prior: {e}") from e
    adaptive = AdaptiveController(prior, bounds, AdaptiveConfig(**checked.adaptive.model_dump()))
    return ResidualController(policy, adaptive, np.asarray(checked.obs_mean),
                              np.asarray(checked.obs_var), checked.clip_obs, checked.epsilon,
                              cfg.scale)
