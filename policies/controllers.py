"""The controller a session or an evaluation asks for, by name.

Names
-----
- ``calm``, ``focus``, ``uplift``, ``energize``: the *shipped* controller of that
  preset, described by ``policies/assets/<preset>/controller.json`` (which kind:
  the adaptive controller, or residual PPO on top of it; chosen by the held-out
  family evaluation, ``benchmarks/bench_control.py``). A preset without a
  manifest falls back to its bundled PPO network (``policy.safetensors``).
- ``adaptive``: the adaptive model-based controller with the shipped prior and
  settings of the session's target (``assets/adaptive/<target>.json``).
- ``pid``: PID with the gains tuned for the target (``assets/pid/<target>.json``).
- ``constant``: the best constant knobs of the target (``assets/constant/<target>.json``).
- ``fixed``: the target's hand-set preset knobs; ``random``: random knob changes.
- a folder: a trained PPO run (``st-agent train``) or a residual PPO run.

Only what works in a single-listener session is offered (:func:`session_policies`):
a shipped *jam* policy (``jam3``, or a ``train-jam`` folder) is refused with a
:class:`~st_agent.errors.UsageError` that points to ``st-agent jam``. Every file read
here is validated first (:mod:`st_agent.policies.schema`; failures are
:class:`~st_agent.policies.schema.PolicyFileError`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel

from st_agent.contract import HISTORY_LEN, TARGET_PRESETS, SafetyBounds
from st_agent.errors import UsageError
from st_agent.policies.adaptive import AdaptiveConfig, AdaptiveController, ResponsePrior
from st_agent.policies.baselines import FIXED_KNOBS, FixedPolicy, PIDPolicy, RandomPolicy
from st_agent.policies.loading import (
    BUNDLED_DIR,
    bundled_format,
    bundled_policies,
    load_bundled_policy,
)
from st_agent.policies.schema import (
    AdaptiveSettings,
    ConstantKnobsDoc,
    ControllerManifest,
    PIDGainsDoc,
    PolicyFileError,
    PolicyFileMissing,
    check_format,
    read_json_file,
    validate_doc,
)
from st_agent.types import Knobs

__all__ = ["BASELINE_POLICIES", "CONTROLLER_FORMAT", "JamControllerChoice", "adaptive_for",
           "constant_for", "jam_pid_for", "load_controller", "make_controller",
           "make_jam_controller", "pid_for", "session_policies", "shipped_controllers"]

logger = logging.getLogger(__name__)

#: Policies that are baselines or model-based controllers rather than trained networks.
BASELINE_POLICIES = ("pid", "random", "fixed", "constant", "adaptive")
CONTROLLER_FORMAT = "st-agent-controller"
#: ``format`` of jam policies (:data:`st_agent.policies.jam.JAM_POLICY_FORMAT`, whose
#: module imports the training stack; a test checks they agree).
JAM_POLICY_FORMAT = "st-agent-jam-policy"


#: The schema of each folder of shipped settings (``assets/<sub>/<target>.json``).
_ASSET_SCHEMAS: dict[str, type[BaseModel]] = {
    "pid": PIDGainsDoc, "pid_jam": PIDGainsDoc, "constant": ConstantKnobsDoc,
    "adaptive": AdaptiveSettings}


def _asset(sub: str, target: str) -> Any:
    """``assets/<sub>/<target>.json`` (``calm``'s for a custom target), validated.

    Raises
    ------
    PolicyFileError
        When the file is missing or fails its schema (:mod:`st_agent.policies.schema`).
    """
    name = target if target in TARGET_PRESETS else "calm"
    path = BUNDLED_DIR / sub / f"{name}.json"
    hint = ("write them with benchmarks/tune_jam_pid.py --write" if sub == "pid_jam"
            else "write them with benchmarks/ship_controllers.py")
    doc = read_json_file(path, f"shipped {sub} settings", hint)
    return validate_doc(_ASSET_SCHEMAS[sub], doc, path, f"{sub} settings file")


def pid_for(target: str) -> PIDPolicy:
    """PID with the gains tuned for ``target`` on the tuning stream (shipped)."""
    d = _asset("pid", target)
    return PIDPolicy(d.kp, d.ki, d.kd)


def jam_pid_for(target: str) -> PIDPolicy:
    """PID with the gains tuned for ``target`` in jams, on jam tuning groups (shipped;
    :mod:`st_agent.policies.jam_tuning`)."""
    d = _asset("pid_jam", target)
    return PIDPolicy(d.kp, d.ki, d.kd)


def constant_for(target: str, bounds: SafetyBounds) -> FixedPolicy:
    """The best constant knobs of ``target`` (shipped), clipped into ``bounds``."""
    knobs = bounds.clip(Knobs(*_asset("constant", target).knobs))
    return FixedPolicy(knobs.as_tuple(), bounds)


def adaptive_for(target: str, bounds: SafetyBounds) -> AdaptiveController:
    """The adaptive controller with the shipped prior and settings of ``target``."""
    d = _asset("adaptive", target)
    path = BUNDLED_DIR / "adaptive" / f"{target if target in TARGET_PRESETS else 'calm'}.json"
    try:
        prior = ResponsePrior.from_json(d.prior.model_dump())
    except ValueError as e:
        raise PolicyFileError(f"{path}: field prior: {e}") from e
    return AdaptiveController(prior, bounds, AdaptiveConfig(**d.config.model_dump()))


def shipped_controllers() -> list[str]:
    """Presets with a shipped controller manifest (``assets/<preset>/controller.json``)."""
    return sorted(n for n in TARGET_PRESETS if (BUNDLED_DIR / n / "controller.json").is_file())


def _load_shipped(name: str, bounds: SafetyBounds) -> tuple[Any, str]:
    path = BUNDLED_DIR / name / "controller.json"
    raw = read_json_file(path, "controller manifest")
    check_format(raw, path, CONTROLLER_FORMAT, (1,))
    doc = validate_doc(ControllerManifest, raw, path, f"{CONTROLLER_FORMAT} manifest")
    if doc.kind == "adaptive":
        return adaptive_for(name, bounds), f"shipped {name!r}: adaptive model-based controller"
    from st_agent.policies.residual import load_residual

    return (load_residual(BUNDLED_DIR / name / str(doc.run), bounds),
            f"shipped {name!r}: residual PPO on the adaptive controller")


def session_policies() -> list[str]:
    """Every name ``make_controller`` (a single-listener session) accepts, sorted.

    Shipped presets, single-listener bundled PPO policies and the baselines; shipped
    *jam* policies (``jam3``) are not among them: they run with ``st-agent jam``.
    """
    return sorted(set(shipped_controllers()) | set(bundled_policies()) | set(BASELINE_POLICIES))


def _jam_policy_error(policy: str) -> UsageError:
    return UsageError(f"{policy!r} is a jam policy (several performers): run it with "
                      f"`st-agent jam --policy {policy}`; a single-listener session takes "
                      f"{session_policies()} or a trained policy folder (st-agent train)")


def load_controller(name: str, bounds: SafetyBounds, target: str = "calm", seed: int = 0
                    ) -> Any:
    """The controller called ``name`` (module docstring); see :func:`make_controller`."""
    return make_controller(name, bounds, target, None, seed)[0]


def make_controller(policy: str, bounds: SafetyBounds, target: str = "calm",
                    override: Knobs | None = None, seed: int = 0) -> tuple[Any, str]:
    """Load the controller a session asks for; ``(controller, description)``.

    Parameters
    ----------
    policy : str
        A name of the module docstring or the folder of a trained run.
    bounds : SafetyBounds
        The therapist's bounds (controllers plan inside them; the override respects them).
    target : str
        Target preset name, for the tuned and preset baselines.
    override : Knobs, optional
        Manual override: hold these knobs (reached at the rate limit) instead.
    seed : int
        Seed of the random baseline.

    Raises
    ------
    UsageError
        For an unknown policy name, or a jam policy (``jam3``: ``st-agent jam`` runs it).
    PolicyFileError
        For a policy folder or shipped file that does not validate (both are
        ``ValueError``).
    """
    if override is not None:
        knobs = bounds.clip(override)
        held = FixedPolicy(knobs.as_tuple(), bounds)
        held.role = "manual override"  # how its reasons name it
        return held, f"manual override {knobs!r}"
    simple: dict[str, Callable[[], tuple[Any, str]]] = {
        "pid": lambda: (pid_for(target), "PID on the state error (tuned)"),
        "random": lambda: (RandomPolicy(seed=seed), "random knob changes"),
        "fixed": lambda: (FixedPolicy(target if target in FIXED_KNOBS else "calm", bounds),
                          "fixed preset knobs"),
        "constant": lambda: (_role(constant_for(target, bounds), "best constant knobs"),
                             "best constant knobs (tuned)"),
        "adaptive": lambda: (adaptive_for(target, bounds), "adaptive model-based controller"),
    }
    if policy in simple:
        return simple[policy]()
    if policy in shipped_controllers():
        return _load_shipped(policy, bounds)
    if policy in bundled_policies():
        return load_bundled_policy(policy), f"bundled PPO policy {policy!r}"
    path = Path(policy)
    if path.is_dir():
        return _load_run(path, bounds)
    if bundled_format(policy) is not None:
        raise _jam_policy_error(policy)
    raise UsageError(f"unknown policy {policy!r}; choose a shipped controller "
                     f"{sorted(set(shipped_controllers()) | set(bundled_policies()))}, "
                     f"a baseline {list(BASELINE_POLICIES)}, or the folder of a trained "
                     "policy (st-agent train)")


def _role(policy: FixedPolicy, role: str) -> FixedPolicy:
    """``policy`` with the name its reasons use for the setting it holds."""
    policy.role = role
    return policy


def _load_run(path: Path, bounds: SafetyBounds) -> tuple[Any, str]:
    """A run folder: residual PPO (its own format) or plain PPO."""
    from st_agent.policies.loading import load_policy

    js = path / "policy.json"
    if js.is_file():
        doc = read_json_file(js, "policy.json")
        fmt = doc.get("format") if isinstance(doc, dict) else None
        from st_agent.policies.residual import RESIDUAL_FORMAT, load_residual

        if fmt == RESIDUAL_FORMAT:
            return load_residual(path, bounds), f"residual PPO {path}"
        if fmt == JAM_POLICY_FORMAT:
            raise _jam_policy_error(str(path))
    return load_policy(path), f"PPO policy {path}"


class JamControllerChoice(NamedTuple):
    """What :func:`make_jam_controller` returns."""

    act: Callable[[np.ndarray], np.ndarray]
    """``obs (N, n_obs) -> actions (N, 3)``."""
    name: str
    """How reports name it."""
    history_len: int = HISTORY_LEN
    """Past phrases the observations must carry (``run_jam(..., history_len=)``)."""


def make_jam_controller(policy: str, performers: int, seed: int = 0,
                        targets: Sequence[str] | None = None) -> JamControllerChoice:
    """The controller a live jam asks for: ``obs (N, n_obs) -> actions (N, 3)``.

    Parameters
    ----------
    policy : str
        A bundled jam policy (``jam3``) or a jam policy folder (one network, or an
        ensemble from ``combine-jam``, shared by the performers); ``independent``
        (the bundled single-listener ``calm`` network, one per performer, on the
        single-listener part of the observation); ``pid`` (the gains tuned in jams for
        each performer's target), ``adaptive`` (the shipped adaptive controller of each
        performer's target) or ``random``, one per performer.
    performers : int
    seed : int
        Seed of the random controllers.
    targets : sequence of str, optional
        Each performer's target preset (a custom target takes ``calm``'s settings);
        None: ``calm`` for everyone. Only ``pid`` and ``adaptive`` use them.

    Returns
    -------
    choice : JamControllerChoice
        ``(act, name, history_len)``.

    Raises
    ------
    ValueError
        For an unknown name, targets of the wrong length or a policy that does not
        validate.
    """
    from st_agent.policies.jam import (
        bundled_jam_policies,
        load_jam_policy,
        per_performer_controller,
        shared_controller,
    )

    names = ["calm"] * performers if targets is None else [str(t) for t in targets]
    if len(names) != performers:
        raise ValueError(f"targets must name one target per performer ({performers}), got "
                         f"{len(names)}: {names}")
    if policy == "pid":
        return JamControllerChoice(
            per_performer_controller(lambda i: jam_pid_for(names[i]), performers),
            "PID per performer (gains tuned per target in jams)")
    if policy == "adaptive":
        return JamControllerChoice(
            per_performer_controller(lambda i: adaptive_for(names[i], SafetyBounds()),
                                     performers),
            "adaptive controller per performer")
    if policy == "random":
        return JamControllerChoice(
            per_performer_controller(lambda i: RandomPolicy(seed=seed + i), performers),
            "random per performer")
    if policy == "independent":
        single = load_bundled_policy("calm")
        return JamControllerChoice(
            per_performer_controller(lambda i: single, performers, single.history_len),
            "independent single-listener policies (calm)", single.history_len)
    try:
        shared = load_jam_policy(policy)
    except PolicyFileMissing as e:
        raise UsageError(f"unknown jam policy {policy!r} ({e}); choose a bundled jam policy "
                         f"{bundled_jam_policies()}, a jam policy folder (st-agent train-jam), "
                         "independent, pid, adaptive or random") from e
    return JamControllerChoice(shared_controller(shared), f"shared jam policy {policy!r}",
                               shared.history_len)
