"""Evaluation protocol: every controller on the same held-out listeners, paired CIs.

**Test sets.** *Leave one family out*: for each listener-model family F, the
controllers that learn or are tuned (tuned PID, best constant, the adaptive
controller's population prior and settings, PPO) are fitted on the other
families only, on the tuning stream (:data:`st_agent.policies.tuning.TUNE_OFFSET`),
and evaluated on ``n_listeners`` listeners of F. *Held-out draws*: everything is
fitted on all families and evaluated on new parameter draws of them (a separate
generator stream, :data:`HELDOUT_OFFSET`).

**Pairing.** Every controller runs one episode per test listener, reset with the
same seed (``seed + i``), so it meets the same listener, start knobs and noise
draws as far as its actions allow. The random baseline is seeded per episode.

**Metrics** per episode: ``distance``, the mean distance of the noise-free state to
the target region over the last half of the episode (estimator units);
``time_to_target_sec``, the time until the distance first falls below
``radius`` (the episode length when it never does); ``jerk``, the mean Euclidean
knob change per phrase. Tables give the mean distance with a bootstrap 95 % CI
and the paired difference to tuned PID (``pid - controller``, positive: better
than PID) with its bootstrap 95 % CI, in distance units and in per cent of PID's
mean.
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

__all__ = ["CONTROLLERS", "EvaluateConfig", "bootstrap_ci", "evaluate", "format_table",
           "heldout_listeners", "paired_summary", "rollout", "rollout_episodes"]

logger = logging.getLogger(__name__)

#: Seed offset of the held-out listeners (tuning and training use other streams).
HELDOUT_OFFSET = 1_000_003
#: Controllers the protocol knows (``--controllers``).
CONTROLLERS = ("random", "fixed", "pid", "constant", "adaptive", "ppo", "oracle")


def heldout_listeners(n: int, seed: int = 0, families: tuple[str, ...] | None = None,
                      stream: int = 0) -> list[Any]:
    """``n`` listeners from a generator stream that tuning and training never use.

    Parameters
    ----------
    n : int
        Number of listeners.
    seed : int
        Protocol seed.
    families : tuple of str, optional
        Families to draw from (uniformly); None: the legacy first-order population.
    stream : int
        Sub-stream (one per test set), so the test sets do not share draws.
    """
    if families is None:
        from st_agent.listener.model import sample_listeners

        return sample_listeners(n, rng=HELDOUT_OFFSET + seed)
    from st_agent.listener.family import sample_population

    rng = np.random.default_rng([HELDOUT_OFFSET + seed, stream])
    return sample_population(n, rng, families=list(families))


@dataclass
class Episodes:
    """Per-episode metrics of one controller on a test set (arrays of length n)."""

    distance: np.ndarray
    time_to_target_sec: np.ndarray
    jerk: np.ndarray
    ret: np.ndarray
    curve: np.ndarray
    """Distance after every phrase, shape (n, T)."""
    t_sec: np.ndarray
    """Session time after every phrase, shape (n, T)."""

    def means(self) -> dict[str, float]:
        """Mean metrics, the keys :func:`rollout` returns."""
        return {"distance": float(self.distance.mean()),
                "distance_std": float(self.distance.std()),
                "time_to_target_sec": float(self.time_to_target_sec.mean()),
                "jerk": float(self.jerk.mean()), "return": float(self.ret.mean())}


def rollout_episodes(make_policy: Callable[[Any], Any], listeners: list[Any],
                     env_kwargs: dict[str, Any], seed: int = 0, radius: float = 0.2
                     ) -> Episodes:
    """Run one episode per listener; return per-episode metrics (module docstring).

    Parameters
    ----------
    make_policy : callable
        ``env -> policy`` with ``predict(obs, deterministic=True)``; called once per
        episode after ``env.reset(seed=seed + i)`` (``env.np_random_seed`` is the
        episode's seed); an optional ``reset()`` is called too.
    listeners : list
        Listener parameters (any family).
    env_kwargs : dict
        :class:`~st_agent.envs.closed_loop.ClosedLoopEnv` arguments (``listener``
        and ``families`` are replaced).
    seed : int
        Episode ``i`` is reset with ``seed + i``.
    radius : float
        Distance that counts as having reached the target (estimator units).
    """
    from st_agent.envs.closed_loop import ClosedLoopEnv

    rows, curves, times = [], [], []
    kw = {k: v for k, v in env_kwargs.items() if k != "families"}
    for i, params in enumerate(listeners):
        env = ClosedLoopEnv(**{**kw, "listener": params})
        obs, _ = env.reset(seed=seed + i)
        policy = make_policy(env)
        if hasattr(policy, "reset"):
            policy.reset()
        dist, ts, ret, enter, jerk = [], [], 0.0, None, []
        prev = np.asarray(env.knobs.as_tuple())
        done = False
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, r, term, trunc, info = env.step(action)
            done = term or trunc
            ret += r
            dist.append(info["distance"])
            ts.append(info["t_sec"])
            k = np.asarray(info["knobs"].as_tuple())
            jerk.append(float(np.linalg.norm(k - prev)))
            prev = k
            if enter is None and info["distance"] < radius:
                enter = info["t_sec"]
        rows.append((float(np.mean(dist[len(dist) // 2:])),
                     enter if enter is not None else env.t_sec, float(np.mean(jerk)), ret))
        curves.append(dist)
        times.append(ts)
        env.close()
    a = np.asarray(rows)
    return Episodes(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.asarray(curves), np.asarray(times))


def rollout(make_policy: Callable[[Any], Any], listeners: list[Any],
            env_kwargs: dict[str, Any], seed: int = 0, radius: float = 0.2) -> dict[str, float]:
    """:func:`rollout_episodes` averaged over listeners.

    Returns
    -------
    metrics : dict
        ``distance``, ``distance_std``, ``time_to_target_sec``, ``jerk``, ``return``.
    """
    return rollout_episodes(make_policy, listeners, env_kwargs, seed, radius).means()


def bootstrap_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0,
                 stat: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of the mean of ``x`` (rows resampled).

    Parameters
    ----------
    x : ndarray, shape (n,) or (n, k)
        Per-listener values (rows are resampled together).
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling generator.
    stat : callable, optional
        ``resampled (n_boot, n, ...) -> (n_boot,)``; default the mean over rows.

    Returns
    -------
    (low, high) : (float, float)
    """
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(x), size=(n_boot, len(x)))
    s = stat(x[idx]) if stat is not None else x[idx].mean(axis=1)
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


def paired_summary(ctrl: np.ndarray, ref: np.ndarray, n_boot: int = 2000, seed: int = 0
                   ) -> dict[str, float]:
    """Paired comparison of per-listener distances ``ctrl`` with ``ref`` (tuned PID).

    Returns
    -------
    summary : dict
        ``mean``, ``ci`` (of the mean), ``diff`` (mean of ``ref - ctrl``), ``diff_ci``,
        ``pct`` (``100 * diff / mean(ref)``) and ``pct_ci`` (bootstrap of the ratio).
    """
    ctrl, ref = np.asarray(ctrl, float), np.asarray(ref, float)
    pair = np.stack([ctrl, ref], axis=1)  # (n, 2)

    def pct(b: np.ndarray) -> np.ndarray:
        m = b.mean(axis=1)
        return 100.0 * (m[:, 1] - m[:, 0]) / np.maximum(m[:, 1], 1e-12)

    diff = ref - ctrl
    return {"mean": float(ctrl.mean()), "ci": bootstrap_ci(ctrl, n_boot, seed),
            "diff": float(diff.mean()), "diff_ci": bootstrap_ci(diff, n_boot, seed),
            "pct": float(100.0 * diff.mean() / max(ref.mean(), 1e-12)),
            "pct_ci": bootstrap_ci(pair, n_boot, seed, pct)}


@dataclass
class EvaluateConfig:
    """Evaluate controllers on listener families they were not fitted to
    (``st-agent evaluate``)."""

    policy: Annotated[str, tyro.conf.Positional] = ""
    """A controller evaluated as it is on every test set, besides the protocol's: a
    shipped preset (``calm``), ``adaptive``, or a trained run folder (``runs/<name>``);
    empty: the protocol's controllers only."""
    target: str = "calm"
    """Target preset (calm, focus, uplift, energize)."""
    n_listeners: Annotated[int, tyro.conf.arg(aliases=("--listeners",))] = 32
    """Test listeners per test set (one episode each)."""
    families: tuple[str, ...] = ()
    """Listener-model families of the protocol; empty: all of them."""
    holdout: str = "both"
    """Test sets: ``families`` (leave one family out), ``draws`` (held-out draws of all
    families), ``both``."""
    controllers: tuple[str, ...] = ("random", "fixed", "pid", "constant", "adaptive", "ppo",
                                    "oracle")
    """Protocol controllers to run (random, fixed, pid, constant, adaptive, ppo, oracle);
    ppo runs where a per-test-set policy exists (``--ppo-runs``) or is trained
    (``--ppo-timesteps``)."""
    listener: str = ""
    """A fitted listener.json to evaluate on instead of drawn listeners (its episodes
    differ in their noise only); empty: draws."""
    subject: str = ""
    """Evaluate on this subject's fitted listener (``fit-listener --subject``), with their
    personal controller (``train --subject``) as the extra controller unless a policy is
    given."""
    seed: int = 0
    """Seed of the test listeners, the episodes, tuning and bootstrap."""
    max_steps: int = 32
    """Phrases per episode."""
    phrase_bank: str = ""
    """Phrase bank JSON; empty: the default bank (built on first use)."""
    fidelity: str = "fast"
    """Environment fidelity of the test episodes: fast (phrase bank) or full (composer,
    renderer, virtual listener's signals and the real estimator; about 0.1 s per phrase)."""
    tune_listeners: int = 256
    """Tuning-stream sessions per setting when fitting the references of a test set."""
    adaptive_trials: int = 8
    """Random-search trials of the adaptive controller's settings per test set (1: the
    defaults)."""
    ppo_runs: str = ""
    """Folder with one residual-PPO run per test set (``<folder>/<test set>/``)."""
    ppo_timesteps: int = 0
    """Train the missing per-test-set PPO runs with this many steps (0: do not train)."""
    radius: float = 0.2
    """Distance that counts as having reached the target (estimator units)."""
    n_boot: int = 2000
    """Bootstrap resamples of the CIs."""
    out: str = ""
    """Folder for results.json, results.txt and the plot; empty: runs/evaluate_<target>."""
    log_transitions: str = ""
    """OPE (issue 18): record every evaluation episode's transitions under this folder
    (``<folder>/<test set>/<controller>/ep-NNNN``, read by ``st-agent ope`` and
    ``st-agent train-offline``); empty: off."""
    explore_std: float = 0.0
    """OPE: behaviour noise of the logged episodes (truncated normal, action units,
    :mod:`st_agent.policies.transitions`); the metrics are then the noisy controllers'.
    0: the controllers as they are."""


def _check(cfg: EvaluateConfig) -> tuple[str, ...]:
    """Validate the config; the families of the protocol."""
    from st_agent.contract import TARGET_PRESETS
    from st_agent.envs.closed_loop import FIDELITIES

    if cfg.target not in TARGET_PRESETS:
        raise ValueError(f"unknown target preset {cfg.target!r}; choose one of "
                         f"{sorted(TARGET_PRESETS)}")
    unknown = sorted(set(cfg.controllers) - set(CONTROLLERS))
    if unknown:
        raise ValueError(f"unknown controllers {unknown}; choose from {list(CONTROLLERS)}")
    if cfg.holdout not in ("families", "draws", "both"):
        raise ValueError(f"holdout must be families, draws or both, got {cfg.holdout!r}")
    if cfg.fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {cfg.fidelity!r}")
    for name in ("n_listeners", "max_steps", "tune_listeners", "adaptive_trials", "n_boot"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if cfg.explore_std:  # off-policy evaluation: refused before any tuning
        from st_agent.policies.transitions import Exploration

        Exploration(cfg.explore_std)
    if cfg.listener and not Path(cfg.listener).is_file():
        raise ValueError(f"listener file {cfg.listener!r} does not exist; write one with "
                         "`st-agent fit-listener`")
    from st_agent.listener.family import FAMILY_NAMES, check_families

    fams = check_families(cfg.families) if cfg.families else tuple(FAMILY_NAMES)
    if cfg.holdout in ("families", "both") and len(fams) < 2 and not cfg.listener:
        raise ValueError(f"leaving one family out needs at least 2 families, got {fams}; "
                         "use --holdout draws")
    return fams


def test_sets(cfg: EvaluateConfig, fams: tuple[str, ...]) -> list[tuple[str, tuple[str, ...],
                                                                          list[Any]]]:
    """``(name, training families, test listeners)`` of every test set."""
    if cfg.listener:
        from st_agent.envs.closed_loop import load_listener_file

        one = load_listener_file(cfg.listener)
        return [(f"listener:{Path(cfg.listener).name}", fams, [one] * cfg.n_listeners)]
    sets = []
    if cfg.holdout in ("families", "both"):
        for k, f in enumerate(fams):
            sets.append((f, tuple(x for x in fams if x != f),
                         heldout_listeners(cfg.n_listeners, cfg.seed, (f,), stream=k + 1)))
    if cfg.holdout in ("draws", "both"):
        sets.append(("draws", fams, heldout_listeners(cfg.n_listeners, cfg.seed, fams,
                                                      stream=0)))
    return sets


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run the protocol; log and save ``results.json``, ``results.txt``, ``evaluation.png``.

    Returns
    -------
    results : dict
        ``{"config", "sets": {test set: {"train_families", "references",
        "controllers": {name: {"means", "paired"}}}}}``.

    Raises
    ------
    ValueError
        For an unknown target, controller, family, fidelity, a missing listener file.
    """
    from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
    from st_agent.policies.lofo import fold_controllers

    cfg = _for_subject(cfg)
    fams = _check(cfg)
    bank = PhraseBank.load(cfg.phrase_bank) if cfg.phrase_bank else build_phrase_bank()
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"target": cfg.target, "phrase_bank": bank, "max_steps": cfg.max_steps,
                  "fidelity": cfg.fidelity}
    results: dict[str, Any] = {"config": asdict(cfg), "sets": {}}
    extra = _extra_controller(cfg) if cfg.policy else None
    for name, train_fams, listeners in test_sets(cfg, fams):
        makers, refs = fold_controllers(name, train_fams, cfg, bank, out / "folds" / name)
        if extra is not None:
            makers[cfg.policy] = extra
        if cfg.log_transitions:  # off-policy evaluation: every episode recorded
            from st_agent.policies.sim_logging import logged_factory

            makers = {n: logged_factory(m, Path(cfg.log_transitions) / name / n,
                                        cfg.explore_std, cfg.seed, n)
                      for n, m in makers.items()}
        eps = {n: rollout_episodes(m, listeners, env_kwargs, cfg.seed, cfg.radius)
               for n, m in makers.items()}
        for m in makers.values():  # off-policy evaluation: the last logged episode's end
            getattr(m, "close", lambda: None)()
        ref = eps.get("pid")
        block = {"train_families": list(train_fams), "references": refs, "controllers": {}}
        for n, e in eps.items():
            row: dict[str, Any] = {"means": e.means()}
            if ref is not None:
                row["paired"] = paired_summary(e.distance, ref.distance, cfg.n_boot, cfg.seed)
            row["distance"] = e.distance.tolist()
            block["controllers"][n] = row
        results["sets"][name] = block
        logger.info("test set %s (trained on %s):\n%s", name, train_fams,
                    format_table({"sets": {name: block}}))
    table = format_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "results.txt").write_text(table + "\n", encoding="utf-8")
    _plot(results, out / "evaluation.png")
    return results


def _for_subject(cfg: EvaluateConfig) -> EvaluateConfig:
    """``--subject``: their fitted listener, and their personal controller as ``policy``."""
    if not cfg.subject:
        return cfg
    from dataclasses import replace

    from st_agent.policies.personal import personal_listener_file, subject_controller

    listener = cfg.listener or str(personal_listener_file("", cfg.subject))
    ctrl = subject_controller(cfg.subject)
    return replace(cfg, listener=listener,
                   policy=cfg.policy or (str(ctrl) if ctrl is not None else ""))


def _default_out(cfg: EvaluateConfig) -> Path:
    from st_agent.paths import runs_dir

    tag = Path(cfg.policy).name if cfg.policy else "protocol"
    return runs_dir() / f"evaluate_{tag}_{cfg.target}"


def _extra_controller(cfg: EvaluateConfig) -> Callable[[Any], Any]:
    """Factory of the ``policy`` controller (shipped preset, adaptive or run folder)."""
    from st_agent.contract import SafetyBounds
    from st_agent.policies.controllers import load_controller

    load_controller(cfg.policy, SafetyBounds(), cfg.target)  # fail early on a bad name

    def make(env: Any) -> Any:
        return load_controller(cfg.policy, env.bounds, cfg.target)

    return make


def format_table(results: dict[str, Any]) -> str:
    """Plain-text tables of :func:`evaluate` results, one block per test set."""
    lines = []
    for name, block in results["sets"].items():
        fams = ", ".join(block.get("train_families", []))
        lines.append(f"test set {name} (references fitted on: {fams})")
        head = (f"{'controller':<12} {'distance':>8} {'95% CI':>15} {'vs PID %':>9} "
                f"{'95% CI':>17} {'t_target_s':>10} {'jerk':>6}")
        lines += [head, "-" * len(head)]
        for n, row in block["controllers"].items():
            m, p = row["means"], row.get("paired")
            ci = f"{p['ci'][0]:.3f}–{p['ci'][1]:.3f}" if p else ""
            pct = f"{p['pct']:+.1f}" if p else ""
            pci = f"{p['pct_ci'][0]:+.1f}…{p['pct_ci'][1]:+.1f}" if p else ""
            lines.append(f"{n:<12} {m['distance']:8.3f} {ci:>15} {pct:>9} {pci:>17} "
                         f"{m['time_to_target_sec']:10.1f} {m['jerk']:6.3f}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets) + 1, 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        ctrl = results["sets"][name]["controllers"]
        names = list(ctrl)
        vals = [ctrl[n]["means"]["distance"] for n in names]
        err = None
        if all("paired" in ctrl[n] for n in names):
            err = np.array([[v - ctrl[n]["paired"]["ci"][0], ctrl[n]["paired"]["ci"][1] - v]
                            for n, v in zip(names, vals, strict=True)]).T
        ax.bar(names, vals, yerr=err, color="tab:blue")
        ax.set_title(f"held out: {name}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=45)
    axes[0][0].set_ylabel("distance to target (last half)")
    fig.suptitle(f"target {results['config']['target']}", fontsize=10)
    fig.subplots_adjust(bottom=0.3, top=0.82, wspace=0.35)
    fig.savefig(path, dpi=100)
    plt.close(fig)
