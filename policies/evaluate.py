"""Evaluation protocol: a policy and every baseline on the same held-out listeners.

Every controller runs one episode per held-out listener with the same seeds,
so they meet the same listeners, starting knobs and noise draws as far as
their actions allow. Metrics per episode, averaged over listeners:

- ``distance``: mean distance of the noise-free state to the target over the
  last half of the episode (estimator units);
- ``time_to_target_sec``: simulated time until the state first comes within
  ``radius`` of the target (the episode length when it never does);
- ``jerk``: mean Euclidean knob change per phrase.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.listener.model import ListenerParams, sample_listeners
from st_agent.policies.baselines import FixedPolicy, OraclePolicy, PIDPolicy, RandomPolicy

__all__ = ["EvaluateConfig", "evaluate", "format_table", "heldout_listeners", "rollout"]

logger = logging.getLogger(__name__)

#: Seed offset of the held-out listeners (training draws from other streams).
HELDOUT_OFFSET = 1_000_003


def heldout_listeners(n: int, seed: int = 0) -> list[ListenerParams]:
    """``n`` population listeners from a stream training never uses."""
    return sample_listeners(n, rng=HELDOUT_OFFSET + seed)


def rollout(make_policy: Callable[[ClosedLoopEnv], Any], listeners: list[ListenerParams],
            env_kwargs: dict[str, Any], seed: int = 0, radius: float = 0.2) -> dict[str, float]:
    """Run one episode per listener; return the mean metrics (module docstring).

    Parameters
    ----------
    make_policy : callable
        ``env -> policy`` with ``predict(obs, deterministic=True)``; called once
        per episode (an optional ``reset()`` is called too).
    listeners : list of ListenerParams
        The held-out listeners.
    env_kwargs : dict
        Keyword arguments of :class:`ClosedLoopEnv` (``listener`` is replaced).
    seed : int
        Episode ``i`` is reset with ``seed + i``.
    radius : float
        Target region radius (estimator units).

    Returns
    -------
    metrics : dict
        ``distance``, ``distance_std``, ``time_to_target_sec``, ``jerk``, ``return``.
    """
    rows = []
    for i, params in enumerate(listeners):
        env = ClosedLoopEnv(**{**env_kwargs, "listener": params})
        policy = make_policy(env)
        if hasattr(policy, "reset"):
            policy.reset()
        obs, _ = env.reset(seed=seed + i)
        dist, ret, enter, jerk = [], 0.0, None, []
        prev = np.asarray(env.knobs.as_tuple())
        done = False
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, r, term, trunc, info = env.step(action)
            done = term or trunc
            ret += r
            dist.append(info["distance"])
            k = np.asarray(info["knobs"].as_tuple())
            jerk.append(float(np.linalg.norm(k - prev)))
            prev = k
            if enter is None and info["distance"] < radius:
                enter = info["t_sec"]
        rows.append((float(np.mean(dist[len(dist) // 2:])),
                     enter if enter is not None else env.t_sec, float(np.mean(jerk)), ret))
        env.close()
    a = np.asarray(rows)
    return {"distance": float(a[:, 0].mean()), "distance_std": float(a[:, 0].std()),
            "time_to_target_sec": float(a[:, 1].mean()), "jerk": float(a[:, 2].mean()),
            "return": float(a[:, 3].mean())}


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :func:`rollout` results, one row per controller."""
    head = f"{'controller':<12} {'distance':>9} {'± std':>7} {'t_target_s':>11} {'jerk':>7}"
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        lines.append(f"{name:<12} {m['distance']:9.3f} {m['distance_std']:7.3f} "
                     f"{m['time_to_target_sec']:11.1f} {m['jerk']:7.3f}")
    return "\n".join(lines)


@dataclass
class EvaluateConfig:
    """Evaluate a trained policy against the baselines (``st-agent evaluate``)."""

    policy: Annotated[str, tyro.conf.Positional] = ""
    """A bundled policy's name (``calm``) or the run folder of a trained one
    (``runs/<name>``); empty: baselines only."""
    target: str = "calm"
    """Target preset (calm, focus, uplift, energize)."""
    n_listeners: Annotated[int, tyro.conf.arg(aliases=("--listeners",))] = 32
    """Number of held-out listeners (one episode each)."""
    seed: int = 0
    """Seed of the held-out listeners and of the episodes."""
    max_steps: int = 32
    """Phrases per episode."""
    phrase_bank: str = ""
    """Phrase bank JSON; empty: the default bank (built on first use)."""
    baselines: tuple[str, ...] = ("random", "fixed", "pid", "oracle")
    """Baselines to run (random, fixed, pid, oracle)."""
    radius: float = 0.2
    """Target region radius, estimator units."""
    fidelity: str = "fast"
    """Environment fidelity: fast (phrase bank) or full (composer, renderer, virtual
    listener's signals and the real estimator; about 0.1 s per phrase)."""
    out: str = ""
    """Folder for results.json and the plot; empty: the policy's run folder, or
    runs/evaluate_<target>."""


_BASELINES: dict[str, Callable[..., Any]] = {
    "random": lambda env, cfg: RandomPolicy(cfg.seed),
    "fixed": lambda env, cfg: FixedPolicy(cfg.target, env.bounds),
    "pid": lambda env, cfg: PIDPolicy(),
    "oracle": lambda env, cfg: OraclePolicy(env),
}


def evaluate(cfg: EvaluateConfig) -> dict[str, dict[str, float]]:
    """Run the protocol; log and save a table, ``results.json`` and ``evaluation.png``.

    Returns
    -------
    results : dict
        ``controller -> metrics`` (see :func:`rollout`).
    """
    unknown = sorted(set(cfg.baselines) - set(_BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(_BASELINES)}")
    if cfg.n_listeners < 1:
        raise ValueError(f"n_listeners must be >= 1, got {cfg.n_listeners!r}")
    from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank

    bank = PhraseBank.load(cfg.phrase_bank) if cfg.phrase_bank else build_phrase_bank()
    env_kwargs = {"target": cfg.target, "phrase_bank": bank, "max_steps": cfg.max_steps,
                  "fidelity": cfg.fidelity}
    listeners = heldout_listeners(cfg.n_listeners, cfg.seed)
    results: dict[str, dict[str, float]] = {}
    bundled = False
    if cfg.policy:
        from st_agent.policies.loading import bundled_policies, load_bundled_policy, load_policy

        bundled = cfg.policy in bundled_policies() and not Path(cfg.policy).exists()
        trained = load_bundled_policy(cfg.policy) if bundled else load_policy(cfg.policy)
        results["ppo"] = rollout(lambda env: trained, listeners, env_kwargs, cfg.seed,
                                 cfg.radius)
    for name in cfg.baselines:
        results[name] = rollout(lambda env, n=name: _BASELINES[n](env, cfg), listeners,
                                env_kwargs, cfg.seed, cfg.radius)
    table = format_table(results)
    logger.info("evaluation on %d held-out listeners, target %s:\n%s", cfg.n_listeners,
                cfg.target, table)
    default_out = (Path("runs") / f"evaluate_{cfg.policy}_{cfg.target}" if bundled
                   else Path(cfg.policy) if cfg.policy
                   else Path("runs") / f"evaluate_{cfg.target}")
    out = Path(cfg.out) if cfg.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "results": results},
                                                 indent=2), encoding="utf-8")
    (out / "results.txt").write_text(table + "\n", encoding="utf-8")
    _plot(results, out / "evaluation.png", cfg)
    return results


def _plot(results: dict[str, dict[str, float]], path: Path, cfg: EvaluateConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, label in zip(axes, ("distance", "time_to_target_sec", "jerk"),
                              ("distance to target (last half)", "time to target (s)",
                               "knob change per phrase"), strict=True):
        vals = [results[n][key] for n in names]
        err = [results[n]["distance_std"] for n in names] if key == "distance" else None
        ax.bar(names, vals, yerr=err, color="tab:blue")
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"target {cfg.target}, {cfg.n_listeners} held-out listeners", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
