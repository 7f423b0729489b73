"""Offline training from logged transitions: implicit Q-learning (IQL), in torch.

``st-agent train-offline --sessions runs/sessions`` trains a controller from the
logged transitions of recorded sessions (:mod:`st_agent.policies.transitions`)
without running the loop, and writes it in the project's safetensors + JSON
policy format (:mod:`st_agent.policies.loading`), so ``st-agent session --policy
<out>`` and ``st-agent ope --policy <out>`` run it unchanged.

Why not d3rlpy: ``pip install --dry-run d3rlpy==2.8.1`` would downgrade gymnasium
1.4 to 1.0.0 (and pull gym 0.26), so this is a small implementation of IQL
(Kostrikov, Nair & Levine 2022, "Offline RL with implicit Q-learning", Alg. 1):

* ``V(s)`` by expectile regression (``tau``) on ``min(Q1, Q2)`` of the target
  critics; ``Q1, Q2`` by TD on ``r + gamma V(s')``; Polyak-averaged targets;
* the actor by advantage-weighted regression: maximise
  ``exp(beta (Q - V)) log pi(a | s)`` (weights clipped at 100), ``pi`` a diagonal
  Gaussian with a state-independent log-std.

The actor and ``V`` *are* the two heads of an SB3 ``ActorCriticPolicy`` with tanh
hidden layers ``net_arch`` (the exported network is exactly what
:func:`~st_agent.policies.loading.load_policy` builds); the critics are dropped
after training. Observations are normalised with the data's mean and variance
(clipped at 10, as VecNormalize); rewards are scaled to unit standard deviation
for training only. Truncation at a session's end is not a terminal state (the
listener goes on): the TD target bootstraps through it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OFFLINE_TRAINER", "TrainOfflineConfig", "run_train_offline", "save_offline_policy",
           "train_iql"]

logger = logging.getLogger(__name__)

OFFLINE_TRAINER = "iql"
_CLIP_OBS, _EPS = 10.0, 1e-8


@dataclass
class TrainOfflineConfig:
    """Train a controller from logged sessions with IQL (``st-agent train-offline``)."""

    sessions: tuple[str, ...] = ()
    """Session folders, or folders of them (their logged transitions are the data)."""
    subject: str = ""
    """A registered subject: all of their sessions (instead of --sessions)."""
    out: str = ""
    """Run folder of the policy (policy.json + policy.safetensors); empty:
    runs/offline_<UTC time>."""
    steps: int = 20_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the actor, the value and the critics."""
    expectile: float = 0.7
    """IQL's expectile tau of V, in (0.5, 1): higher approaches the max over the data."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights (0: behaviour cloning)."""
    gamma: float = 0.95
    """Discount of the critics."""
    lr: float = 3e-4
    """Adam learning rate."""
    polyak: float = 0.005
    """Target critic update rate."""
    seed: int = 0
    """Seed of the initialisation and the minibatches."""
    key_file: Path | None = None
    """Key file of encrypted sessions."""

    def __post_init__(self) -> None:
        if bool(self.sessions) == bool(self.subject):
            raise ValueError("give either --sessions (folders) or --subject, not both "
                             f"(got sessions={self.sessions!r}, subject={self.subject!r})")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {v!r}")
        if not self.net_arch or any(isinstance(w, bool) or not isinstance(w, int)
                                    or not 1 <= w <= 1024 for w in self.net_arch):
            raise ValueError(f"--net-arch must be 1 or more layer widths in [1, 1024], got "
                             f"{self.net_arch!r}")
        if not 0.5 < self.expectile < 1.0:
            raise ValueError(f"--expectile must be in (0.5, 1), got {self.expectile!r}")
        for name, lo, hi in (("beta", 0.0, 100.0), ("gamma", 0.0, 1.0), ("lr", 1e-7, 1.0),
                             ("polyak", 1e-6, 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and lo <= v <= hi):
                raise ValueError(f"--{name} must be in [{lo}, {hi}], got {v!r}")


def _mlp(n_in: int, arch: tuple[int, ...]) -> Any:
    import torch.nn as nn

    layers: list[Any] = []
    for w in arch:
        layers += [nn.Linear(n_in, w), nn.ReLU()]
        n_in = w
    return nn.Sequential(*layers, nn.Linear(n_in, 1))


@dataclass
class _Nets:
    """The networks and optimisers of IQL (the policy's heads are the actor and V)."""

    policy: Any
    qs: list[Any]
    q_targ: list[Any]
    opt_v: Any
    opt_q: Any
    opt_pi: Any

    @classmethod
    def build(cls, policy: Any, n_obs: int, cfg: TrainOfflineConfig) -> _Nets:
        import copy

        import torch

        qs = [_mlp(n_obs + 3, cfg.net_arch) for _ in range(2)]
        q_targ = [copy.deepcopy(q).requires_grad_(False) for q in qs]
        v_params = list(policy.mlp_extractor.value_net.parameters()) \
            + list(policy.value_net.parameters())
        pi_params = list(policy.mlp_extractor.policy_net.parameters()) \
            + list(policy.action_net.parameters()) + [policy.log_std]
        return cls(policy, qs, q_targ, torch.optim.Adam(v_params, lr=cfg.lr),
                   torch.optim.Adam([p for q in qs for p in q.parameters()], lr=cfg.lr),
                   torch.optim.Adam(pi_params, lr=cfg.lr))


def _iql_update(n: _Nets, s: Any, a: Any, r: Any, s2: Any, cfg: TrainOfflineConfig
                ) -> tuple[float, float, float]:
    """One IQL step on a minibatch (V, then Q, then the actor, then the targets)."""
    import torch

    pol = n.policy
    sa = torch.cat([s, a], dim=1)
    with torch.no_grad():
        q_t = torch.minimum(n.q_targ[0](sa), n.q_targ[1](sa)).squeeze(-1)
    v = pol.value_net(pol.mlp_extractor.forward_critic(s)).squeeze(-1)
    diff = q_t - v
    v_loss = (torch.abs(cfg.expectile - (diff < 0).float()) * diff ** 2).mean()
    n.opt_v.zero_grad()
    v_loss.backward()
    n.opt_v.step()
    with torch.no_grad():
        y = r + cfg.gamma * pol.value_net(pol.mlp_extractor.forward_critic(s2)).squeeze(-1)
    q_loss = sum(((q(sa).squeeze(-1) - y) ** 2).mean() for q in n.qs)
    n.opt_q.zero_grad()
    q_loss.backward()
    n.opt_q.step()
    w = torch.exp(cfg.beta * diff.detach()).clamp(max=100.0)
    mu = pol.action_net(pol.mlp_extractor.forward_actor(s))
    std = pol.log_std.clamp(-5.0, 1.0).exp()
    pi_loss = -(w * torch.distributions.Normal(mu, std).log_prob(a).sum(-1)).mean()
    n.opt_pi.zero_grad()
    pi_loss.backward()
    n.opt_pi.step()
    with torch.no_grad():
        pol.log_std.clamp_(-5.0, 1.0)
        for q, qt in zip(n.qs, n.q_targ, strict=True):
            for p, pt in zip(q.parameters(), qt.parameters(), strict=True):
                pt.mul_(1 - cfg.polyak).add_(cfg.polyak * p)
    return v_loss.item(), q_loss.item(), pi_loss.item()


def train_iql(tr: Any, cfg: TrainOfflineConfig) -> tuple[Any, dict[str, Any]]:
    """Train IQL on transitions ``tr``; the SB3 policy and its ``policy.json`` document.

    Parameters
    ----------
    tr : Transitions
        Logged transitions (N rows).
    cfg : TrainOfflineConfig

    Returns
    -------
    policy : ActorCriticPolicy
        The actor (mean and log-std) and V, ready for ``state_dict()``.
    doc : dict
        The ``policy.json`` content (:data:`~st_agent.policies.loading.POLICY_FORMAT`).
    """
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy

    from st_agent.policies.loading import POLICY_FORMAT

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    obs64 = tr.obs.astype(np.float64)
    mean, var = obs64.mean(axis=0), obs64.var(axis=0)

    def norm(x: np.ndarray) -> Any:
        z = np.clip((x - mean) / np.sqrt(var + _EPS), -_CLIP_OBS, _CLIP_OBS)
        return torch.as_tensor(z, dtype=torch.float32)

    z, z_next = norm(obs64), norm(tr.next_obs.astype(np.float64))
    act = torch.as_tensor(np.clip(tr.actions, -1.0, 1.0), dtype=torch.float32)
    r_scale = float(np.std(tr.rewards)) + 1e-8
    rew = torch.as_tensor(tr.rewards / r_scale, dtype=torch.float32)
    n_obs = tr.obs.shape[1]
    arch = list(cfg.net_arch)
    policy = ActorCriticPolicy(spaces.Box(-np.inf, np.inf, (n_obs,), dtype=np.float32),
                               spaces.Box(-1.0, 1.0, (3,), dtype=np.float32),
                               lr_schedule=lambda _: cfg.lr, net_arch={"pi": arch, "vf": arch})
    nets = _Nets.build(policy, n_obs, cfg)
    losses = []
    for step in range(cfg.steps):
        idx = torch.as_tensor(rng.integers(tr.n, size=min(cfg.batch_size, tr.n)))
        v_loss, q_loss, pi_loss = _iql_update(nets, z[idx], act[idx], rew[idx], z_next[idx],
                                              cfg)
        if step % max(cfg.steps // 10, 1) == 0 or step == cfg.steps - 1:
            losses.append({"step": step, "v": v_loss, "q": q_loss, "pi": pi_loss})
            logger.info("IQL step %d: V loss %.4f, Q loss %.4f, actor loss %.4f", step,
                        v_loss, q_loss, pi_loss)
    cfg_doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    doc = {"format": POLICY_FORMAT, "version": 1, "step": int(cfg.steps),
           "config": cfg_doc | {"trainer": OFFLINE_TRAINER, "n_transitions": tr.n,
                                "n_sessions": tr.n_episodes, "reward_scale": r_scale,
                                "losses": losses},
           "history_len": (n_obs - 11) // 5, "net_arch": arch,
           "obs_mean": mean.tolist(), "obs_var": var.tolist(),
           "clip_obs": _CLIP_OBS, "epsilon": _EPS}
    return policy.eval(), doc


def save_offline_policy(policy: Any, doc: dict[str, Any], folder: str | Path) -> Path:
    """Write ``policy.safetensors`` and ``policy.json`` into ``folder``; the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(state, str(folder / "policy.safetensors"))
    (folder / "policy.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return folder


def run_train_offline(cfg: TrainOfflineConfig) -> Path:
    """``st-agent train-offline``: read the sessions, train IQL, export, check it loads."""
    import sys
    import time

    import torch

    from st_agent.paths import runs_dir
    from st_agent.policies.loading import load_policy
    from st_agent.policies.ope import subject_sessions
    from st_agent.policies.transitions import load_transitions

    torch.set_num_threads(1)
    folders = list(cfg.sessions) if cfg.sessions else subject_sessions(cfg.subject)
    tr = load_transitions(folders, key=cfg.key_file)
    out = Path(cfg.out) if cfg.out else runs_dir() / time.strftime("offline_%Y%m%d-%H%M%S",
                                                                    time.gmtime())
    policy, doc = train_iql(tr, cfg)
    save_offline_policy(policy, doc, out)
    load_policy(out)  # the exported files validate and load as any trained policy
    sys.stdout.write(f"trained on {tr.n} transitions of {tr.n_episodes} sessions; policy in "
                     f"{out} (st-agent session --policy {out}; st-agent ope --policy {out})\n")
    return out
