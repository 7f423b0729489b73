"""The references of a test set: every fitted controller, fitted on its training families.

For a test set (a held-out family, or held-out draws) :func:`fit_references`
fits, on the tuning stream of the *training* families only
(:mod:`st_agent.policies.tuning`): the PID gains, the best constant knobs, the
adaptive controller's population prior and its settings. They are cached as
``references.json`` in the test set's folder, so a rerun with the same settings
reuses them. :func:`fold_controllers` turns them into the protocol's controller
factories (``env -> controller``). The shipped references
(``policies/assets/{pid,constant,adaptive}/<target>.json``) are the same fit
over all families (:func:`write_shipped`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.policies.adaptive import AdaptiveConfig, AdaptiveController, ResponsePrior
from st_agent.policies.baselines import FixedPolicy, OraclePolicy, PIDPolicy, RandomPolicy

if TYPE_CHECKING:
    from st_agent.envs.phrase_bank import PhraseBank
    from st_agent.policies.evaluate import EvaluateConfig

__all__ = ["FoldReferences", "fit_references", "fold_controllers", "write_shipped"]

logger = logging.getLogger(__name__)


@dataclass
class FoldReferences:
    """Everything fitted for one test set (JSON round trip)."""

    target: str
    train_families: tuple[str, ...]
    pid: dict[str, float]
    """``kp``, ``ki``, ``kd`` and the tuning ``score``."""
    constant: tuple[float, float, float]
    constant_score: float
    prior: ResponsePrior
    adaptive: AdaptiveConfig
    adaptive_score: float
    key: dict[str, Any]
    """The settings it was fitted with (a cache key)."""

    def to_json(self) -> dict[str, Any]:
        """Plain dict for :meth:`from_json`."""
        return {"target": self.target, "train_families": list(self.train_families),
                "pid": self.pid, "constant": list(self.constant),
                "constant_score": self.constant_score, "prior": self.prior.to_json(),
                "adaptive": asdict(self.adaptive), "adaptive_score": self.adaptive_score,
                "key": self.key}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FoldReferences:
        """Inverse of :meth:`to_json`."""
        return cls(d["target"], tuple(d["train_families"]), dict(d["pid"]),
                   tuple(d["constant"]), float(d["constant_score"]),
                   ResponsePrior.from_json(d["prior"]), AdaptiveConfig(**d["adaptive"]),
                   float(d["adaptive_score"]), dict(d["key"]))


def fit_references(target: str, train_families: tuple[str, ...], bank: PhraseBank,
                   tune_listeners: int = 256, adaptive_trials: int = 8, seed: int = 0,
                   max_steps: int = 32) -> FoldReferences:
    """Fit every reference controller on the tuning stream of ``train_families``.

    Parameters
    ----------
    target : str
        Target preset.
    train_families : tuple of str
        Families the tuning listeners are drawn from.
    bank : PhraseBank
    tune_listeners : int
        Sessions per setting tried.
    adaptive_trials : int
        Random-search trials of the adaptive settings (1: defaults).
    seed : int
        Tuning-stream seed.
    max_steps : int
        Phrases per tuning episode (the test episodes' length).
    """
    from st_agent.policies.tuning import (
        best_constant,
        fit_population_prior,
        tune_adaptive,
        tune_pid,
    )

    kw = {"target": target, "phrase_bank": bank, "max_steps": max_steps,
          "families": list(train_families)}
    key = _reference_key(target, train_families, seed, tune_listeners, adaptive_trials,
                         max_steps, bank)
    pid, _ = tune_pid(kw, tune_listeners, seed)
    const, const_s = best_constant(kw, tune_listeners, seed + 1)
    prior = fit_population_prior(kw, max(tune_listeners, 256), seed + 2,
                                 source=f"families {list(train_families)}, tuning seed "
                                 f"{seed + 2}")
    cfg, ad_s, _ = tune_adaptive(prior, kw, adaptive_trials, tune_listeners, seed + 3)
    return FoldReferences(target, tuple(train_families), pid, const, const_s, prior, cfg,
                          ad_s, key)


def _reference_key(target: str, train_families: tuple[str, ...], seed: int,
                   tune_listeners: int, adaptive_trials: int, max_steps: int,
                   bank: PhraseBank) -> dict[str, Any]:
    """What fitted references depend on: a cached fit with another key is refitted (a
    rebuilt phrase bank has another fingerprint), and shipped ones record it."""
    return {"target": target, "train_families": list(train_families), "seed": seed,
            "tune_listeners": tune_listeners, "adaptive_trials": adaptive_trials,
            "max_steps": max_steps, "bank_size": len(bank.features),
            "bank_fingerprint": bank.fingerprint}


def _cached_references(folder: Path, target: str, train_families: tuple[str, ...],
                       bank: PhraseBank, cfg: EvaluateConfig) -> FoldReferences:
    path = folder / "references.json"
    key = _reference_key(target, train_families, cfg.seed, cfg.tune_listeners,
                         cfg.adaptive_trials, cfg.max_steps, bank)
    if path.is_file():
        try:
            refs = FoldReferences.from_json(json.loads(path.read_text(encoding="utf-8")))
            if refs.key == key:
                return refs
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring %s: %s", path, e)
    refs = fit_references(target, train_families, bank, cfg.tune_listeners,
                          cfg.adaptive_trials, cfg.seed, cfg.max_steps)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(refs.to_json(), indent=1), encoding="utf-8")
    return refs


def fold_controllers(name: str, train_families: tuple[str, ...], cfg: EvaluateConfig,
                     bank: PhraseBank, folder: Path
                     ) -> tuple[dict[str, Callable[[Any], Any]], dict[str, Any]]:
    """The protocol's controller factories for one test set.

    Returns
    -------
    makers : dict
        ``name -> (env -> controller)``, in :data:`~st_agent.policies.evaluate.CONTROLLERS`
        order, for the controllers of ``cfg.controllers`` that exist for this set.
    references : dict
        What was fitted (gains, knobs, settings; JSON).
    """
    refs = _cached_references(folder, cfg.target, train_families, bank, cfg)
    pid = {k: refs.pid[k] for k in ("kp", "ki", "kd")}
    makers: dict[str, Callable[[Any], Any]] = {
        "random": lambda env: RandomPolicy(seed=(cfg.seed, int(env.np_random_seed))),
        "fixed": lambda env: FixedPolicy(cfg.target, env.bounds),
        "pid": lambda env: PIDPolicy(**pid),
        "constant": lambda env: FixedPolicy(refs.constant, env.bounds),
        "adaptive": lambda env: AdaptiveController(refs.prior, env.bounds, refs.adaptive),
        "oracle": lambda env: OraclePolicy(env),
    }
    ppo = _fold_ppo(name, train_families, cfg, bank, folder, refs) \
        if "ppo" in cfg.controllers else None
    if ppo is not None:
        makers["ppo"] = ppo
    order = [n for n in cfg.controllers if n in makers]
    info = refs.to_json()
    info.pop("prior")
    return {n: makers[n] for n in order}, info


def _fold_ppo(name: str, train_families: tuple[str, ...], cfg: EvaluateConfig,
              bank: PhraseBank, folder: Path, refs: FoldReferences
              ) -> Callable[[Any], Any] | None:
    """Factory of the test set's residual PPO (given or trained), or None."""
    run = Path(cfg.ppo_runs) / name if cfg.ppo_runs else folder / "ppo"
    if not (run / "policy.json").is_file():
        if cfg.ppo_timesteps <= 0:
            if cfg.ppo_runs:
                raise ValueError(f"no residual PPO run for test set {name!r} at {run}; "
                                 "train one (policies.residual) or pass --ppo-timesteps")
            return None
        from st_agent.policies.residual import ResidualConfig, train_residual

        train_residual(ResidualConfig(target=cfg.target, families=train_families,
                                      total_timesteps=cfg.ppo_timesteps, seed=cfg.seed,
                                      max_steps=cfg.max_steps), bank, run, refs.prior,
                       refs.adaptive)
    from st_agent.policies.residual import load_residual

    load_residual(run)  # fail early

    def make(env: Any) -> Any:
        return load_residual(run, env.bounds)

    return make


def write_shipped(target: str, bank: PhraseBank, assets: Path, tune_listeners: int = 256,
                  adaptive_trials: int = 16, seed: int = 0, max_steps: int = 32
                  ) -> FoldReferences:
    """Fit the references on all families and write them as shipped assets.

    Writes ``assets/pid/<target>.json``, ``assets/constant/<target>.json`` and
    ``assets/adaptive/<target>.json``.
    """
    from st_agent.listener.family import FAMILY_NAMES

    refs = fit_references(target, tuple(FAMILY_NAMES), bank, tune_listeners,
                          adaptive_trials, seed, max_steps)
    tuned = {"target": target, "tuned_on": refs.key}
    for sub, doc in (("pid", refs.pid | tuned),
                     ("constant", {"knobs": list(refs.constant),
                                   "score": refs.constant_score} | tuned),
                     ("adaptive", {"prior": refs.prior.to_json(),
                                   "config": asdict(refs.adaptive),
                                   "score": refs.adaptive_score} | tuned)):
        path = assets / sub / f"{target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return refs
