"""Train and evaluate one shared PPO policy for every performer of a jam.

Training (``st-agent train-jam``) converts the PettingZoo :class:`st_agent.envs.jam.JamEnv`
into a vector env with SuperSuit (``pettingzoo_env_to_vec_env_v1``: one
sub-env per performer, so one network acts for all of them, told apart by the
performer one-hot in the observation) and stacks ``n_envs`` copies with
``concat_vec_envs_v1(..., base_class="stable_baselines3")``. PPO and
VecNormalize come from stable-baselines3. A run writes ``runs/<name>/`` like
single-listener training: ``config.json``, TensorBoard events (``tb/``),
``checkpoints/step_<n>.safetensors`` + ``.json``, and the final
``policy.safetensors`` + ``policy.json`` (a plain state_dict and a JSON with the
config and normalisation statistics; nothing is pickled).

Evaluation (``st-agent evaluate-jam``) runs every controller on the same
held-out groups (listeners from a stream training never draws, targets drawn
per performer from the presets, fixed seeds). Controllers: the shared jam
policy; independent single-listener PPO policies applied per performer (on the
contract part of the observation); PID per performer; random. Metrics, mean
over groups: ``group_distance`` (mean over performers and over the last half
of the phrases of the distance to each one's target), ``per_performer`` (the
same per performer index), ``clashes_per_bar`` (all phrases) and ``jerk`` (mean
Euclidean knob change per phrase and performer).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from st_agent.contract import HISTORY_LEN, TARGET_PRESETS, observation_size
from st_agent.envs.jam import (
    JamBank,
    JamEnv,
    build_jam_bank,
    jam_history_len,
    jam_observation_size,
)
from st_agent.listener.model import sample_listeners
from st_agent.paths import runs_dir
from st_agent.policies.baselines import PIDPolicy, RandomPolicy
from st_agent.policies.config import CombineJamConfig, EvaluateJamConfig, TrainJamConfig
from st_agent.policies.controllers import adaptive_for, jam_pid_for, pid_for
from st_agent.policies.loading import (
    BUNDLED_DIR,
    PolicyEnsemble,
    PolicyFileError,
    TrainedPolicy,
    actor_critic_shapes,
    build_actor_critic,
    bundled_format,
    check_param_count,
    load_weights,
    policy_files,
    self_check,
)
from st_agent.policies.schema import (
    HISTORY_LEN_MAX,
    JamMemberDoc,
    JamPolicyDocV1,
    JamPolicyDocV2,
    check_format,
    read_json_file,
    validate_doc,
)

__all__ = ["JAM_BASELINES", "JAM_POLICY_FORMAT", "CombineJamConfig", "EvaluateJamConfig",
           "PerPerformerController", "SharedController", "TrainJamConfig",
           "bundled_jam_policies", "combine_jam", "combine_jam_policies", "evaluate_jam",
           "format_jam_table", "heldout_groups", "load_jam_policy", "make_supersuit_venv",
           "per_performer_controller", "save_jam_policy", "shared_controller", "train_jam"]

logger = logging.getLogger(__name__)

JAM_POLICY_FORMAT = "st-agent-jam-policy"
#: Parameters all members of an ensemble jam policy may have together.
ENSEMBLE_PARAMS_MAX = 2 ** 23
#: Seed offset of held-out jam groups (training draws from other streams).
HELDOUT_JAM_OFFSET = 2_000_003
#: Per-performer baselines of ``evaluate-jam``: PID with the gains tuned in jams for
#: each performer's target (``assets/pid_jam``, on jam tuning groups,
#: :mod:`st_agent.policies.jam_tuning`), PID with the single-listener gains of the
#: target (``assets/pid``), PID with the class's untuned default gains, the shipped
#: adaptive controller of each performer's target, random knob changes.
JAM_BASELINES = ("pid", "pid-single", "pid-default", "adaptive", "random")


# --------------------------------------------------------------------------- save / load


def save_jam_policy(model: PPO, vecnorm: VecNormalize, path: str | Path, cfg: TrainJamConfig,
                    step: int) -> Path:
    """Write ``<path>.safetensors`` (policy state_dict) and ``<path>.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    save_file(state, str(path.with_suffix(".safetensors")))
    rms = vecnorm.obs_rms
    doc = {"format": JAM_POLICY_FORMAT, "version": 1, "step": int(step), "config": asdict(cfg),
           "obs_size": int(model.observation_space.shape[0]), "net_arch": list(cfg.net_arch),
           "obs_mean": rms.mean.tolist(), "obs_var": rms.var.tolist(),
           "clip_obs": vecnorm.clip_obs, "epsilon": vecnorm.epsilon}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def bundled_jam_policies() -> list[str]:
    """Names of the jam policies shipped in :data:`BUNDLED_DIR` (``jam3``)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir()
                  if bundled_format(p.name) == JAM_POLICY_FORMAT)


def _jam_policy_files(path: str | Path) -> tuple[Path, Path]:
    """``(policy.json, policy.safetensors)`` of a bundled name, run folder or file stem."""
    path = Path(path)
    if not path.exists() and not path.with_suffix(".json").exists() \
            and str(path) in bundled_jam_policies():
        path = BUNDLED_DIR / str(path)
    return policy_files(path, "give a run folder of st-agent train-jam or a bundled jam "
                              f"policy ({bundled_jam_policies()})")


#: What each member of a jam policy file keeps (version 1 files are one member).
_MEMBER_KEYS = ("step", "config", "obs_size", "net_arch", "obs_mean", "obs_var", "clip_obs",
                "epsilon")


def _check_jam_obs(js: Path, members: Sequence[JamMemberDoc]) -> int:
    """The ``history_len`` of the members' observation size (bounded), or raise."""
    n = members[0].obs_size
    try:
        h = jam_history_len(n)
    except ValueError as e:
        raise PolicyFileError(f"{js}: field obs_size = {n}: {e}") from None
    if h > HISTORY_LEN_MAX:
        top = jam_observation_size(HISTORY_LEN_MAX)
        raise PolicyFileError(f"{js}: field obs_size = {n} means history_len {h}; at most "
                              f"{HISTORY_LEN_MAX} (obs_size <= {top})")
    return h


def _read_jam_policy(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Member documents and their checked float32 state dicts, from a version 1 or 2 file.

    ``policy.json`` is validated (:class:`~st_agent.policies.schema.JamPolicyDocV1` or
    ``V2``) before anything is allocated, then the weights by
    :func:`~st_agent.policies.loading.load_weights`.

    Raises
    ------
    PolicyFileMissing, PolicyFileError
    """
    js, st = _jam_policy_files(path)
    raw = read_json_file(js, "jam policy.json", "train one with `st-agent train-jam`")
    check_format(raw, js, JAM_POLICY_FORMAT, (1, 2),
                 "single-listener policies are evaluated with `st-agent evaluate`")
    if raw["version"] == 1:
        members = [validate_doc(JamPolicyDocV1, raw, js, f"{JAM_POLICY_FORMAT} version 1 file")]
        prefixes = [""]
    else:
        doc = validate_doc(JamPolicyDocV2, raw, js, f"{JAM_POLICY_FORMAT} version 2 file")
        members = list(doc.members)
        prefixes = [f"member{k}/" for k in range(len(members))]
    _check_jam_obs(js, members)
    shapes: dict[str, tuple[int, ...]] = {}
    for m, prefix in zip(members, prefixes, strict=True):
        one = actor_critic_shapes(m.obs_size, m.net_arch, prefix)
        check_param_count(js, one)
        shapes.update(one)
    check_param_count(js, shapes, ENSEMBLE_PARAMS_MAX)
    tensors = load_weights(st, shapes)
    states = [{k.removeprefix(p): v for k, v in tensors.items() if k.startswith(p)}
              for p in prefixes] if len(prefixes) > 1 else [tensors]
    docs = [m.model_dump(include={*_MEMBER_KEYS, "source"}) for m in members]
    return docs, states


def _member(doc: dict[str, Any], state: dict[str, Any], path: Path | None = None
            ) -> TrainedPolicy:
    """A checked member document and state dict (:func:`_read_jam_policy`) as a policy."""
    where = path or Path("<jam policy>")
    n_obs = int(doc["obs_size"])
    policy = build_actor_critic(where, n_obs, doc["net_arch"], state)
    return self_check(TrainedPolicy(policy, np.asarray(doc["obs_mean"]),
                                    np.asarray(doc["obs_var"]), doc["clip_obs"],
                                    doc["epsilon"], jam_history_len(n_obs)), where)


def load_jam_policy(path: str | Path) -> TrainedPolicy | PolicyEnsemble:
    """Load a jam policy: a bundled name (``jam3``), a run folder or the file stem.

    A version 1 file is one network (what ``train-jam`` writes); a version 2
    file holds several (``combine-jam``), loaded as a :class:`PolicyEnsemble`.

    Raises
    ------
    PolicyFileMissing
        When the files are missing (also a ``FileNotFoundError``).
    PolicyFileError
        When a file is not a valid jam policy (types, ranges, shapes, finiteness).
    """
    docs, states = _read_jam_policy(path)
    st = _jam_policy_files(path)[1]
    members = [_member(d, s, st) for d, s in zip(docs, states, strict=True)]
    return members[0] if len(members) == 1 else PolicyEnsemble(members)


def combine_jam_policies(policies: Sequence[str | Path], out: str | Path) -> Path:
    """Write several trained jam policies as one ensemble policy folder.

    Parameters
    ----------
    policies : sequence of str or Path
        Two or more jam policies (bundled names, run folders or file stems),
        e.g. ``train-jam`` runs with different ``--seed``; ensembles are
        flattened into their members.
    out : str or Path
        Folder for ``policy.json`` (version 2, one document per member) and
        ``policy.safetensors`` (``member<k>/<parameter>``).

    Returns
    -------
    out : Path

    Raises
    ------
    ValueError
        For fewer than two members or members with different observations.
    """
    from safetensors.torch import save_file

    docs: list[dict[str, Any]] = []
    tensors: dict[str, Any] = {}
    for spec in policies:
        for doc, state in zip(*_read_jam_policy(spec), strict=True):
            k = len(docs)
            docs.append({"source": str(spec), **{key: doc[key] for key in _MEMBER_KEYS}})
            tensors.update({f"member{k}/{name}": v.contiguous() for name, v in state.items()})
    if len(docs) < 2:
        raise ValueError(f"an ensemble needs two or more members, got {len(docs)} from "
                         f"{list(map(str, policies))}")
    sizes = sorted({int(d["obs_size"]) for d in docs})
    if len(sizes) > 1:
        raise ValueError(f"ensemble members must expect the same observations; got sizes "
                         f"{sizes} from {list(map(str, policies))} (train them with the same "
                         "--history-len)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "policy.safetensors"))
    (out / "policy.json").write_text(json.dumps(
        {"format": JAM_POLICY_FORMAT, "version": 2, "members": docs}, indent=1),
        encoding="utf-8")
    return out


# --------------------------------------------------------------------------- training


class _SeededTruncation(VecEnvWrapper):
    """SB3 glue over SuperSuit's vector env.

    * ``seed()`` is kept and handed to the first ``reset`` (SuperSuit's SB3
      wrapper forwards ``seed`` to a Gymnasium vector env that has none);
    * jams never terminate, they are truncated: ``TimeLimit.truncated`` is set
      on finished sub-envs so PPO bootstraps from the terminal observation.
    """

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self._seed: int | None = None

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._seed = seed
        return [seed] * self.num_envs

    def reset(self) -> np.ndarray:
        if self._seed is None:
            return self.venv.reset()
        obs, infos = self.venv.venv.reset(seed=self._seed)  # SuperSuit's ConcatVecEnv
        self.venv.reset_infos = infos
        self._seed = None
        return obs

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones):
            infos[i]["TimeLimit.truncated"] = "terminal_observation" in infos[i]
        return obs, rewards, dones, infos


def make_supersuit_venv(env_kwargs: dict[str, Any], n_envs: int, seed: int | None = None
                        ) -> VecEnvWrapper:
    """``n_envs`` jams as one SB3 vector env through SuperSuit's conversion.

    Sub-env ``k * performers + i`` is performer ``i`` of jam copy ``k``.
    """
    import supersuit as ss

    par = JamEnv(**env_kwargs)
    venv = ss.pettingzoo_env_to_vec_env_v1(par)
    venv = ss.concat_vec_envs_v1(venv, n_envs, num_cpus=0, base_class="stable_baselines3")
    out = _SeededTruncation(venv)
    out.seed(seed)
    return out


class _Checkpoints(BaseCallback):
    def __init__(self, cfg: TrainJamConfig, vecnorm: VecNormalize) -> None:
        super().__init__()
        self.cfg, self.vecnorm = cfg, vecnorm
        self._next = cfg.checkpoint_freq or None

    def _on_step(self) -> bool:
        n = self.num_timesteps
        if self._next is not None and n >= self._next:
            save_jam_policy(self.model, self.vecnorm,
                            self.cfg.run_dir() / "checkpoints" / f"step_{n}", self.cfg, n)
            self._next += self.cfg.checkpoint_freq
        return True


def train_jam(cfg: TrainJamConfig) -> Path:
    """Train the shared jam policy; return the run folder.

    Parameters
    ----------
    cfg : TrainJamConfig

    Returns
    -------
    run_dir : Path
        Holds ``policy.safetensors`` / ``policy.json``, ``config.json``, ``tb/``.

    Raises
    ------
    ValueError
        For a performer count outside [2, 8] or non-positive sizes.
    """
    from st_agent.music.ensemble import check_performers

    check_performers(cfg.performers)
    for name in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    torch.set_num_threads(cfg.torch_threads)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    bank = JamBank.load(cfg.jam_bank) if cfg.jam_bank else build_jam_bank()
    venv = make_supersuit_venv(cfg.env_kwargs(bank), cfg.n_envs, cfg.seed)
    vecnorm = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma)
    n_sub = venv.num_envs
    arch = list(cfg.net_arch)
    lr = (lambda remaining: remaining * cfg.learning_rate) if cfg.anneal_lr \
        else cfg.learning_rate
    model = PPO("MlpPolicy", vecnorm, learning_rate=lr, n_steps=cfg.n_steps,
                batch_size=min(cfg.batch_size, cfg.n_steps * n_sub), n_epochs=cfg.n_epochs,
                gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, ent_coef=cfg.ent_coef,
                seed=cfg.seed, device=cfg.device,
                policy_kwargs={"net_arch": {"pi": arch, "vf": arch}},
                tensorboard_log=str(run / "tb"), verbose=0)
    t0 = time.perf_counter()
    model.learn(cfg.timesteps, callback=_Checkpoints(cfg, vecnorm), tb_log_name="ppo")
    save_jam_policy(model, vecnorm, run / "policy", cfg, model.num_timesteps)
    wall = time.perf_counter() - t0
    (run / "train_summary.json").write_text(json.dumps(
        {"agent_steps": int(model.num_timesteps), "wall_sec": wall,
         "vec_env": "supersuit.pettingzoo_env_to_vec_env_v1 + concat_vec_envs_v1"}, indent=2),
        encoding="utf-8")
    logger.info("trained %d agent steps in %.0f s -> %s", model.num_timesteps, wall, run)
    vecnorm.close()
    return run


# --------------------------------------------------------------------------- evaluation


def heldout_groups(n_groups: int, performers: int, seed: int = 0
                   ) -> list[tuple[list[Any], list[str]]]:
    """``n_groups`` groups of (listeners, target preset names) training never draws."""
    rng = np.random.default_rng(HELDOUT_JAM_OFFSET + seed)
    presets = sorted(TARGET_PRESETS)
    groups = []
    for _ in range(n_groups):
        listeners = sample_listeners(performers, rng=rng)
        targets = [presets[int(i)] for i in rng.integers(len(presets), size=performers)]
        groups.append((listeners, targets))
    return groups


#: A controller for one jam: ``obs (N, n_obs) -> actions (N, 3)``.
JamController = Callable[[np.ndarray], np.ndarray]


class PerPerformerController:
    """Independent single-listener controllers, one per performer, on the contract part.

    ``make(i)`` builds performer ``i``'s controller (stateful ones are not
    shared); each sees the first ``observation_size(history_len)`` entries of
    its performer's jam observation. Calling it maps ``obs (N, n_obs)`` to
    ``actions (N, 3)``; a ``copy.deepcopy`` copies every controller's state (the
    feedback probe relies on it).
    """

    def __init__(self, make: Callable[[int], Any], n: int,
                 history_len: int = HISTORY_LEN) -> None:
        self.controllers = [make(i) for i in range(n)]
        for c in self.controllers:
            if hasattr(c, "reset"):
                c.reset()
        self.n_contract = observation_size(history_len)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(c.predict(obs[i, :self.n_contract], deterministic=True)[0])
                         .reshape(3) for i, c in enumerate(self.controllers)])


def per_performer_controller(make: Callable[[int], Any], n: int,
                             history_len: int = HISTORY_LEN) -> JamController:
    """A :class:`PerPerformerController` (independent controllers, one per performer)."""
    return PerPerformerController(make, n, history_len)


class SharedController:
    """One policy (or ensemble) acting for every performer at once: ``obs (N, n_obs) -> (N, 3)``."""

    def __init__(self, policy: TrainedPolicy | PolicyEnsemble) -> None:
        self.policy = policy

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedController:
        # the policy keeps no state between calls (a feed-forward network acting
        # deterministically on normalisation statistics frozen at training), so a copy
        # shares it instead of copying every member's weights
        return SharedController(self.policy)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.policy.predict(obs, deterministic=True)[0]).reshape(-1, 3)


def shared_controller(policy: TrainedPolicy | PolicyEnsemble) -> JamController:
    """A :class:`SharedController` of ``policy``."""
    return SharedController(policy)


def rollout_jam(make_controller: Callable[[JamEnv], JamController],
                groups: list[tuple[list[Any], list[str]]], env_kwargs: dict[str, Any],
                seed: int = 0) -> dict[str, Any]:
    """One episode per group; mean metrics (module docstring).

    Parameters
    ----------
    make_controller : callable
        ``env -> (obs (N, n_obs) -> actions (N, 3))``, called once per episode, after
        ``env.reset`` (so ``env.targets`` are the episode's).
    groups : list of (listeners, targets)
    env_kwargs : dict
        :class:`JamEnv` arguments (``performers``, ``listeners``, ``targets`` replaced).
    seed : int
        Group ``g`` is reset with ``seed + g``.

    Returns
    -------
    metrics : dict
        ``group_distance``, ``group_distance_std``, ``per_group`` (each group's
        distance, in ``groups`` order, for paired comparisons),
        ``per_group_performer`` (each group's list of its performers' distances),
        ``per_performer`` (mean over groups, by index; for groups of one size),
        ``clashes_per_bar``, ``jerk``.
    """
    rows, per, clashes = [], [], []
    for g, (listeners, targets) in enumerate(groups):
        env = JamEnv(**{**env_kwargs, "performers": len(listeners), "listeners": listeners,
                        "targets": targets})
        obs, _ = env.reset(seed=seed + g)
        ctrl = make_controller(env)  # after reset: env.targets are this episode's
        dist, jerk, cl = [], [], []
        prev = env.knobs.copy()
        while env.agents:
            o = np.stack([obs[a] for a in env.possible_agents])
            act = ctrl(o)
            obs, _, _, _, infos = env.step({a: act[i] for i, a in enumerate(env.possible_agents)})
            dist.append([infos[a]["distance"] for a in env.possible_agents])
            jerk.append(np.linalg.norm(env.knobs - prev, axis=1).mean())
            prev = env.knobs.copy()
            cl.append(infos[env.possible_agents[0]]["clashes_per_bar"])
        d = np.asarray(dist)[len(dist) // 2:]  # (T/2, N)
        rows.append((float(d.mean()), float(np.mean(jerk))))
        per.append(d.mean(axis=0))
        clashes.append(float(np.mean(cl)))
        env.close()
    a = np.asarray(rows)
    return {"group_distance": float(a[:, 0].mean()), "group_distance_std": float(a[:, 0].std()),
            "per_group": a[:, 0].round(5).tolist(),
            "per_group_performer": [x.round(5).tolist() for x in per],
            "per_performer": np.mean(per, axis=0).round(4).tolist(),
            "clashes_per_bar": float(np.mean(clashes)), "jerk": float(a[:, 1].mean())}


def format_jam_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table of :func:`rollout_jam` results, one row per controller."""
    w = max([13, *(len(k) + 1 for k in results)])
    head = (f"{'controller':<{w}} {'group dist':>10} {'± std':>6} {'clash/bar':>9} {'jerk':>6}  "
            "per-performer distance")
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        per = " ".join(f"{x:.3f}" for x in m["per_performer"])
        lines.append(f"{name:<{w}} {m['group_distance']:10.3f} {m['group_distance_std']:6.3f} "
                     f"{m['clashes_per_bar']:9.2f} {m['jerk']:6.3f}  {per}")
    base = results.get("pid")
    if base is not None:
        for name, m in results.items():
            if name != "pid":
                gain = 100.0 * (1.0 - m["group_distance"] / base["group_distance"])
                lines.append(f"{name}: {gain:+.1f} % lower group distance than independent PID "
                             "(gains tuned in jams)")
    return "\n".join(lines)


def _load_single(spec: str) -> TrainedPolicy:
    from st_agent.policies.loading import bundled_policies, load_bundled_policy, load_policy

    if spec in bundled_policies() and not Path(spec).exists():
        return load_bundled_policy(spec)
    return load_policy(spec)


def evaluate_jam(cfg: EvaluateJamConfig) -> dict[str, dict[str, Any]]:
    """Run the protocol; save ``results.json`` and ``results.txt``.

    Returns
    -------
    results : dict
        ``controller -> metrics`` (:func:`rollout_jam`).
    """
    from st_agent.music.ensemble import check_performers

    n = check_performers(cfg.performers)
    unknown = sorted(set(cfg.baselines) - set(JAM_BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {list(JAM_BASELINES)}")
    if isinstance(cfg.n_groups, bool) or not isinstance(cfg.n_groups, int) or cfg.n_groups < 1:
        raise ValueError(f"n_groups must be an int >= 1, got {cfg.n_groups!r}")
    bank = JamBank.load(cfg.jam_bank) if cfg.jam_bank else (
        build_jam_bank() if cfg.fidelity == "fast" else None)
    kw = {"jam_bank": bank, "max_steps": cfg.max_steps, "fidelity": cfg.fidelity}
    groups = heldout_groups(cfg.n_groups, n, cfg.seed)
    results: dict[str, dict[str, Any]] = {}
    if cfg.policy:
        shared = load_jam_policy(cfg.policy)
        results["shared"] = rollout_jam(lambda env: shared_controller(shared), groups,
                                        {**kw, "history_len": shared.history_len}, cfg.seed)
    for spec in cfg.independent:
        single = _load_single(spec)
        results[f"indep:{Path(spec).name}"] = rollout_jam(
            lambda env, p=single: per_performer_controller(lambda i: p, env.n, p.history_len),
            groups, {**kw, "history_len": single.history_len}, cfg.seed)
    # every random performer of every group gets its own stream, reproducible from cfg.seed
    seeds = np.random.default_rng(cfg.seed)
    makers = {"pid": lambda env, i: jam_pid_for(env.targets[i].name),
              "pid-single": lambda env, i: pid_for(env.targets[i].name),
              "pid-default": lambda env, i: PIDPolicy(),
              "adaptive": lambda env, i: adaptive_for(env.targets[i].name, env.bounds[i]),
              "random": lambda env, i: RandomPolicy(int(seeds.integers(2**31)))}
    for name in cfg.baselines:
        results[name] = rollout_jam(
            lambda env, m=makers[name]: per_performer_controller(lambda i: m(env, i), env.n),
            groups, kw, cfg.seed)
    table = format_jam_table(results)
    logger.info("jam evaluation, %d held-out groups of %d:\n%s", cfg.n_groups, n, table)
    bundled = cfg.policy and not Path(cfg.policy).exists()
    out = Path(cfg.out) if cfg.out else (
        Path(cfg.policy) if cfg.policy and not bundled
        else runs_dir() / f"evaluate_jam_{cfg.policy or 'baselines'}_{n}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "results": results},
                                                 indent=2), encoding="utf-8")
    (out / "results.txt").write_text(table + "\n", encoding="utf-8")
    return results


def combine_jam(cfg: CombineJamConfig) -> Path:
    """Run ``combine-jam``; return the written folder.

    Raises
    ------
    ValueError
        Without ``out``, with fewer than two members or mismatched members.
    """
    if not cfg.out:
        raise ValueError("give --out, the folder to write the ensemble policy into")
    out = combine_jam_policies(cfg.policies, cfg.out)
    logger.info("combined %d policies into %s", len(cfg.policies), out)
    return out
