"""Feedback probe: does a controller act on what it observes, in the right direction?

For each probe listener the controller first runs ``warmup`` phrases of a real
(fast) session, so that whatever it learns online is in place. Then, on copies
of the controller (each probe sees the same internal state), three observations
are put to it:

- **above**: the estimated arousal ``delta`` above the top of the target's
  arousal band (valence at the target), the knobs drawn uniformly in
  [0.25, 0.75]^3 so that both directions are open. It passes when the next knobs
  move in the *calming* direction: the tempo and energy changes sum to less
  than ``-min_move``. Only for targets whose arousal band has a top below 1
  (above a one-sided band, ``energize``, there is nothing to correct).
- **below**: the same ``delta`` under the bottom of the band; passes when the
  knobs move in the *energising* direction (sum above ``+min_move``). Only for
  targets whose arousal band has a bottom above -1: below a one-sided band
  (``calm``: calmer is fine) there is nothing to correct.
- **hold**: the estimate (and the history's estimates) at the target's nominal
  point, the knobs those the controller itself had reached. The mean absolute
  knob change, averaged over knobs and listeners, must stay below
  :data:`HOLD_THRESHOLD`.

Thresholds. ``min_move`` = 0.01 knob units (about 1 BPM on the tempo knob), so
a controller that does not move does not pass. :data:`HOLD_THRESHOLD` = 0.05
knob units per knob and phrase: a fifth of the default rate limit (0.25), a
tempo step of 5.5 BPM (5 % at the centre tempo, 105 BPM), about the smallest
tempo change listeners reliably notice (tempo discrimination thresholds of a few
per cent, Drake & Botte 1993, Perception & Psychophysics 54:277), and 40 % of
the random baseline's mean change (0.125). A controller that holds a listener on
target should not make changes they can hear for no reason.
A controller passes the probe with pass rates of at least :data:`PASS_RATE`
(95 %) above and below and a hold change under the threshold.

**Jams** (:func:`probe_jam_controller`). The same three probes, one performer at a
time: each group first plays ``warmup`` phrases of a fast jam under the
controller; then performer ``i``'s part of the observation (the single-listener
contract part: estimate, errors, knobs, history) is replaced as above while the
other performers' observations stay as they were, and performer ``i``'s *own*
tempo proposal and energy changes pass or fail. For *hold*, every performer's
estimate is put at their own nominal target at once. A shared policy sees the
others' knobs and the negotiated tempo in its observation; what it does with
them may differ, but an estimate above a performer's band must still calm that
performer's voice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["HOLD_THRESHOLD", "PASS_RATE", "ProbeResult", "probe_controller",
           "probe_jam_controller"]

#: Largest mean absolute knob change (per knob, per phrase) that counts as holding.
HOLD_THRESHOLD = 0.05
#: Share of probe states that must move in the right direction.
PASS_RATE = 0.95
_MIN_MOVE = 0.01


@dataclass
class ProbeResult:
    """Outcome of :func:`probe_controller`."""

    above_rate: float | None
    """Share of 'above' probes whose knobs moved in the calming direction (None: n/a)."""
    below_rate: float | None
    """Share of 'below' probes that moved in the energising direction (None: n/a)."""
    hold_change: float
    """Mean absolute knob change per knob on target."""
    n: int
    """Probe listeners (in a jam: performers, over all groups)."""
    above_move: float | None
    """Mean tempo + energy change of the 'above' probes (knob units)."""
    below_move: float | None
    """Mean tempo + energy change of the 'below' probes."""

    @property
    def passed(self) -> bool:
        """Whether every part of the probe passes."""
        return ((self.above_rate is None or self.above_rate >= PASS_RATE)
                and (self.below_rate is None or self.below_rate >= PASS_RATE)
                and self.hold_change < HOLD_THRESHOLD)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with ``passed``."""
        return asdict(self) | {"passed": self.passed}


def _region(env: Any) -> tuple[float, float, float, float]:
    """Target region (v_lo, v_hi, a_lo, a_hi) in estimator units (a point if none)."""
    if hasattr(env, "region_at_t"):
        return tuple(float(x) for x in env.region_at_t())
    v, a = env.target.at(env.t_sec)
    return float(v), float(v), float(a), float(a)


def _with_state(obs: np.ndarray, est: tuple[float, float], region: tuple[float, ...],
                knobs: np.ndarray | None = None, history: bool = False) -> np.ndarray:
    """``obs`` with the estimate (and optionally the history's) replaced, errors updated."""
    o = obs.copy()
    o[0:2] = est
    lo = np.array([region[0], region[2]])
    hi = np.array([region[1], region[3]])
    o[4:6] = np.clip(est, lo, hi) - np.asarray(est)  # nearest point of the region - estimate
    o[9], o[10] = 1.0, 0.0
    if knobs is not None:
        o[6:9] = knobs
    if history:
        for i in range(11, len(o) - 1, 5):
            o[i:i + 2] = est
    return np.clip(o, -2.0, 2.0).astype(np.float32)


def _move(policy: Any, obs: np.ndarray, max_delta: float) -> np.ndarray:
    """Knob change (knob units, (3,)) a copy of ``policy`` makes for ``obs``."""
    a, _ = copy.deepcopy(policy).predict(obs, deterministic=True)
    return np.clip(np.asarray(a, dtype=np.float64).reshape(-1), -1, 1) * max_delta


def probe_controller(make_policy: Callable[[Any], Any], listeners: list[Any],
                     env_kwargs: dict[str, Any], seed: int = 0, warmup: int = 12,
                     delta: float = 0.3) -> ProbeResult:
    """Run the feedback probe (module docstring) on ``listeners``.

    Parameters
    ----------
    make_policy : callable
        ``env -> controller`` (after ``env.reset``), as in
        :func:`st_agent.policies.evaluate.rollout_episodes`.
    listeners : list
        Probe listeners (any family).
    env_kwargs : dict
        :class:`~st_agent.envs.closed_loop.ClosedLoopEnv` arguments.
    seed : int
        Episode ``i`` is reset with ``seed + i``; the probe knobs come from ``seed``.
    warmup : int
        Phrases of real session before the probe.
    delta : float
        How far outside the band the probe estimate is placed (estimator units).

    Returns
    -------
    result : ProbeResult
    """
    from st_agent.envs.closed_loop import ClosedLoopEnv

    _check_probe_args(warmup, delta)
    rng = np.random.default_rng([seed, 424242])
    kw = {k: v for k, v in env_kwargs.items() if k != "families"}
    up, down, hold = [], [], []
    for i, params in enumerate(listeners):
        env = ClosedLoopEnv(**{**kw, "listener": params})
        obs, _ = env.reset(seed=seed + i)
        policy = make_policy(env)
        if hasattr(policy, "reset"):
            policy.reset()
        for _ in range(warmup):
            action, _ = policy.predict(obs, deterministic=True)
            obs, *_ = env.step(action)
        region = _region(env)
        md = env.bounds.max_delta
        tv = float(np.clip(obs[2], region[0], region[1]))
        mid = rng.uniform(0.25, 0.75, 3)

        if region[3] < 1.0 - 1e-6:
            d = _move(policy, _with_state(obs, (tv, min(region[3] + delta, 1.0)), region, mid),
                      md)
            up.append(d[1] + d[2])
        if region[2] > -1.0 + 1e-6:
            d = _move(policy, _with_state(obs, (tv, max(region[2] - delta, -1.0)), region,
                                          mid), md)
            down.append(d[1] + d[2])
        nominal = (float(obs[2]), float(obs[3]))
        d = _move(policy, _with_state(obs, nominal, region, history=True), md)
        hold.append(float(np.mean(np.abs(d))))
        env.close()
    return _result(up, down, hold, len(listeners))


def _check_probe_args(warmup: Any, delta: Any) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not (isinstance(delta, int | float) and 0 < delta <= 1):
        raise ValueError(f"delta must be in (0, 1], got {delta!r}")


def _result(up: list[float], down: list[float], hold: list[float], n: int) -> ProbeResult:
    up_a = np.asarray(up) if up else None
    down_a = np.asarray(down) if down else None
    return ProbeResult(
        above_rate=None if up_a is None else float(np.mean(up_a < -_MIN_MOVE)),
        below_rate=None if down_a is None else float(np.mean(down_a > _MIN_MOVE)),
        hold_change=float(np.mean(hold)), n=n,
        above_move=None if up_a is None else float(up_a.mean()),
        below_move=None if down_a is None else float(down_a.mean()))


def _jam_move(controller: Callable[[np.ndarray], np.ndarray], obs: np.ndarray,
              max_delta: np.ndarray) -> np.ndarray:
    """Knob changes (knob units, (N, 3)) a copy of the jam ``controller`` makes for ``obs``."""
    a = np.asarray(copy.deepcopy(controller)(obs), dtype=np.float64).reshape(len(obs), 3)
    return np.clip(a, -1, 1) * max_delta


def probe_jam_controller(make_controller: Callable[[Any], Callable[[np.ndarray], np.ndarray]],
                         groups: list[tuple[list[Any], list[Any]]], env_kwargs: dict[str, Any],
                         seed: int = 0, warmup: int = 12, delta: float = 0.3) -> ProbeResult:
    """Run the feedback probe on a jam controller, one performer at a time (module docstring).

    Parameters
    ----------
    make_controller : callable
        ``env -> controller`` (after ``env.reset``), the controller mapping
        ``obs (N, n_obs) -> actions (N, 3)``, as in
        :func:`st_agent.policies.jam.rollout_jam`. Stateful controllers must survive
        ``copy.deepcopy`` (:class:`~st_agent.policies.jam.PerPerformerController` and
        :class:`~st_agent.policies.jam.SharedController` do).
    groups : list of (listeners, targets)
        One jam per entry (:func:`st_agent.policies.jam.heldout_groups`).
    env_kwargs : dict
        :class:`~st_agent.envs.jam.JamEnv` arguments (``performers``, ``listeners`` and
        ``targets`` come from ``groups``).
    seed : int
        Group ``g`` is reset with ``seed + g``; the probe knobs come from ``seed``.
    warmup : int
        Phrases of real jam before the probe.
    delta : float
        How far outside a performer's band the probe estimate is placed (estimator units).

    Returns
    -------
    result : ProbeResult
        ``n`` counts performers over all groups.
    """
    from st_agent.contract import observation_size
    from st_agent.envs.jam import JamEnv

    _check_probe_args(warmup, delta)
    rng = np.random.default_rng([seed, 424243])
    up, down, hold = [], [], []
    n_probed = 0
    for g, (listeners, targets) in enumerate(groups):
        env = JamEnv(**{**env_kwargs, "performers": len(listeners), "listeners": listeners,
                        "targets": targets})
        obs, _ = env.reset(seed=seed + g)
        ctrl = make_controller(env)  # after reset, as in rollout_jam
        for _ in range(warmup):
            act = ctrl(np.stack([obs[a] for a in env.possible_agents]))
            obs, *_ = env.step({a: act[i] for i, a in enumerate(env.possible_agents)})
        o = np.stack([obs[a] for a in env.possible_agents])
        n_c = observation_size(env.history_len)
        md = np.array([b.max_delta for b in env.bounds], dtype=np.float64)[:, None]
        on_target = o.copy()
        for i in range(env.n):
            region = tuple(float(x) for x in env.targets[i].region_at(env.t_sec))
            own = o[i, :n_c]
            tv = float(np.clip(own[2], region[0], region[1]))
            mid = rng.uniform(0.25, 0.75, 3)
            for outside, moves in ((region[3] < 1.0 - 1e-6, up), (region[2] > -1.0 + 1e-6, down)):
                if not outside:
                    continue
                est = min(region[3] + delta, 1.0) if moves is up else max(region[2] - delta, -1.0)
                probe = o.copy()
                probe[i, :n_c] = _with_state(own, (tv, est), region, mid)
                d = _jam_move(ctrl, probe, md)[i]
                moves.append(d[1] + d[2])
            on_target[i, :n_c] = _with_state(own, (float(own[2]), float(own[3])), region,
                                             history=True)
        hold.append(float(np.mean(np.abs(_jam_move(ctrl, on_target, md)))))
        n_probed += env.n
        env.close()
    return _result(up, down, hold, n_probed)
