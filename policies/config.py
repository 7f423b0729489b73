"""Settings of the policy entry points, importable without torch or stable-baselines3.

``st-agent train|train-jam|evaluate-jam|combine-jam --help`` read these
dataclasses; :mod:`st_agent.policies.train` and :mod:`st_agent.policies.jam`
import the heavy libraries only when a command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import tyro

from st_agent.contract import HISTORY_LEN
from st_agent.paths import runs_dir

if TYPE_CHECKING:
    from st_agent.envs.jam import JamBank
    from st_agent.envs.phrase_bank import PhraseBank

__all__ = ["BackendOptions", "CombineJamConfig", "EvaluateJamConfig", "TrainConfig",
           "TrainJamConfig"]


@dataclass
class BackendOptions:
    """Which library trains (shared by ``st-agent train`` and ``train-jam``)."""

    backend: str = "sb3"
    """Training library: ``sb3`` (stable-baselines3, one process) or ``rllib`` (Ray RLlib's
    PPO on its current API stack; needs the ``rllib`` extra, installed in its own venv by
    ``scripts/setup_rllib.sh``: run ``.venv-rllib/bin/st-agent ...``)."""
    num_env_runners: int = 0
    """RLlib: env-runner worker processes that sample in parallel (0: sample in the driver)."""
    address: str = ""
    """RLlib: the Ray cluster to join (``auto``: the one ``ray start`` started here or
    that this machine belongs to; ``HOST:PORT``; empty: a private Ray on this machine)."""


@dataclass
class TrainConfig(BackendOptions):
    """Train a PPO controller (``st-agent train``); every field is a flag."""

    name: str = "ppo_calm"
    """Run name: outputs go to ``<runs_dir>/<name>/``."""
    runs_dir: str = ""
    """Parent folder of runs; empty: the project's ``runs/``."""
    target: str = "calm"
    """Target preset (calm, focus, uplift, energize) or ``random`` (one per episode)."""
    total_timesteps: int = 200_000
    """Environment steps (phrases) to train for."""
    n_envs: int = 64
    """Fast environments (sessions stepped together). 64 with ``n_steps`` 32, ``batch_size``
    1024 and ``learning_rate`` 1e-3 beat the tuned PID on held-out listeners after 50-60k
    steps and ~1 min of CPU, against 70-100k steps and 2.5-6 min for the earlier 8 / 256 /
    512 / 3e-4 (2 seeds; ``benchmarks/bench_ppo_wallclock.py``, issue 20)."""
    vectorised: bool = True
    """Step the sessions in one NumPy env (st_agent.envs.vector.VecClosedLoopEnv) instead of a
    DummyVecEnv of ClosedLoopEnvs (same dynamics, much faster)."""
    seed: int = 0
    """Seed of the environments and of PPO."""
    max_steps: int = 32
    """Phrases per episode."""
    phrase_bank: str = ""
    """Phrase bank JSON; empty: the default bank (built on first use)."""
    learning_rate: float = 1e-3
    """Adam learning rate (see ``n_envs``)."""
    n_steps: int = 32
    """Steps per environment per PPO rollout (64 x 32 = 2,048 per rollout, as 8 x 256)."""
    batch_size: int = 1024
    """Minibatch size (512 is about 3x faster than SB3's 64 on 2 cores; 1024 halves the
    gradient steps per rollout again, see ``n_envs``)."""
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

    # --- personalisation (issue 16; st_agent.policies.personal) ---
    listener: str = ""
    """Train on this fitted listener.json (``st-agent fit-listener``), with
    ``--listener-draws`` listeners jittered around it, instead of population draws."""
    subject: str = ""
    """Train on this subject's fitted listener (``fit-listener --subject``) and install
    the result as their personal controller, which ``session --subject`` then uses."""
    listener_jitter: float = 0.1
    """Spread of the draws around the fitted listener, a fraction of each parameter's
    range (added to the fit's own standard error; 0: the fit alone)."""
    listener_draws: int = 64
    """Listeners drawn around the fit (the first is the fit itself)."""

    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``."""
        return Path(self.runs_dir or runs_dir()) / self.name

    def env_kwargs(self, bank: PhraseBank) -> dict[str, Any]:
        """Keyword arguments of the training environments (with ``--listener`` or
        ``--subject``: ``listener``, the draws around the fitted listener)."""
        kw = {"target": self.target, "phrase_bank": bank, "max_steps": self.max_steps,
              **self.extra}
        path = self.personal_listener()
        if path is not None:
            from st_agent.policies.personal import personal_listeners

            kw["listener"] = personal_listeners(path, self.listener_draws,
                                                self.listener_jitter, self.seed)
        return kw

    def personal_listener(self) -> Path | None:
        """The fitted listener file trained on (``--listener``, else the subject's)."""
        if not (self.listener or self.subject):
            return None
        from st_agent.policies.personal import personal_listener_file

        return personal_listener_file(self.listener, self.subject)


@dataclass
class TrainJamConfig(BackendOptions):
    """Train one shared PPO policy for all performers (``st-agent train-jam``).

    The defaults are the recipe of the members of the bundled ``jam3`` (an
    ensemble of such runs with different seeds, ``combine-jam``; README,
    *Collaborative jams*). They differ from :class:`st_agent.envs.jam.JamEnv`'s reward defaults on
    purpose: on held-out groups, training on each performer's own progress (no
    group term, no clash penalty) with a light knob-change penalty gave the
    lowest group distance; the env keeps the full reward for other uses.
    """

    name: str = "ppo_jam3"
    """Run name: outputs go to ``<runs_dir>/<name>/``."""
    runs_dir: str = ""
    """Parent folder of runs; empty: the project's ``runs/``."""
    performers: int = 3
    """Performers per jam, 2-8 (one agent each)."""
    targets: str = "random"
    """Target of every performer: a preset (calm, focus, uplift, energize) or ``random``
    (a preset per performer per episode)."""
    timesteps: int = 1_500_000
    """Agent steps (performer-phrases) to train for; env steps are this / performers."""
    n_envs: int = 16
    """Copies of the jam stacked by SuperSuit (sub-envs = n_envs * performers)."""
    seed: int = 0
    """Seed of the environments and of PPO."""
    max_steps: int = 32
    """Phrases per episode."""
    jam_bank: str = ""
    """Jam bank JSON; empty: the default bank (built on first use)."""
    own_weight: float = 0.6
    """Weight of a performer's own voice in what they hear (the rest: the mix)."""
    group_weight: float = 0.0
    """Weight of the shared group term in each agent's reward (the env's default: 0.5)."""
    clash_weight: float = 0.0
    """Penalty per clash per bar (the env's default: 0.02)."""
    distance_weight: float = 0.1
    """Penalty per unit of distance to the target, every phrase (rewards holding it)."""
    jerk_weight: float = 0.01
    """Penalty on the mean squared knob change per phrase, in units of ``max_delta``
    (the env's default: 0.05)."""
    dropout_prob: float = 0.02
    """Chance per phrase that a performer's stream drops out (robustness)."""
    history_len: int = HISTORY_LEN
    """Past phrases (estimate and knobs) in each observation; longer lets the policy tell
    listeners apart."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over training (as cleanrl's ``anneal_lr``)."""
    n_steps: int = 128
    """Steps per sub-env per PPO rollout."""
    batch_size: int = 1024
    """Minibatch size."""
    n_epochs: int = 10
    """PPO epochs per rollout."""
    gamma: float = 0.95
    """Discount per phrase."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    net_arch: tuple[int, ...] = (128, 128)
    """Hidden layers of the policy and value networks."""
    checkpoint_freq: int = 250_000
    """Save a checkpoint every this many agent steps (0: never)."""
    torch_threads: int = 1
    """Torch CPU threads (1 is fastest for small MLPs)."""
    device: str = "cpu"
    """Torch device."""
    policy_mapping: str = "shared"
    """RLlib: ``shared`` (one network for every performer, parameter sharing, as SB3 trains)
    or ``per-performer`` (one network per performer, mapped by agent id)."""

    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``."""
        return Path(self.runs_dir or runs_dir()) / self.name

    def env_kwargs(self, bank: JamBank) -> dict[str, Any]:
        """Keyword arguments of the training jams."""
        return {"performers": self.performers, "targets": self.targets, "jam_bank": bank,
                "max_steps": self.max_steps, "own_weight": self.own_weight,
                "group_weight": self.group_weight, "clash_weight": self.clash_weight,
                "distance_weight": self.distance_weight, "jerk_weight": self.jerk_weight,
                "dropout_prob": self.dropout_prob, "history_len": self.history_len}


@dataclass
class EvaluateJamConfig:
    """Evaluate a shared jam policy against per-performer controllers (``evaluate-jam``)."""

    policy: Annotated[str, tyro.conf.Positional] = ""
    """A bundled jam policy's name (``jam3``) or a run folder of ``st-agent train-jam``;
    empty: per-performer controllers only."""
    performers: int = 3
    """Performers per group, 2-8."""
    n_groups: Annotated[int, tyro.conf.arg(aliases=("--groups",))] = 32
    """Held-out groups (one jam episode each)."""
    seed: int = 0
    """Seed of the held-out groups and of the episodes."""
    max_steps: int = 32
    """Phrases per episode."""
    jam_bank: str = ""
    """Jam bank JSON; empty: the default bank (built on first use)."""
    independent: tuple[str, ...] = ("calm",)
    """Single-listener PPO policies applied independently per performer: bundled names
    (``calm``) or run folders of ``st-agent train``; each is one row."""
    baselines: tuple[str, ...] = ("pid", "adaptive", "random")
    """Per-performer baselines: ``pid`` (gains tuned in jams for each performer's
    target, on jam tuning groups), ``pid-single`` (the target's single-listener gains),
    ``pid-default`` (the untuned default gains), ``adaptive`` (the shipped adaptive
    controller of each target), ``random``."""
    fidelity: str = "fast"
    """Environment fidelity: fast (jam bank) or full (composer and renderer per phrase)."""
    out: str = ""
    """Folder for results.json/results.txt; empty: the policy's run folder or
    runs/evaluate_jam_<performers>."""


@dataclass
class CombineJamConfig:
    """Combine trained jam policies into one ensemble policy (``st-agent combine-jam``).

    The ensemble acts with the mean of its members' actions; members are
    usually ``train-jam`` runs of one recipe with different ``--seed``.
    """

    policies: Annotated[tuple[str, ...], tyro.conf.Positional] = ()
    """Two or more jam policies: run folders of ``st-agent train-jam`` or bundled names."""
    out: str = ""
    """Folder to write ``policy.json`` and ``policy.safetensors`` into (required)."""
