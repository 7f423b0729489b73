"""The jam feedback probe, per-performer controllers and the jam baselines."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from st_agent.envs.jam import JamBank, JamEnv, build_jam_bank
from st_agent.policies.baselines import PIDPolicy, RandomPolicy
from st_agent.policies.controllers import adaptive_for, jam_pid_for, make_jam_controller, pid_for
from st_agent.policies.jam import (
    EvaluateJamConfig,
    PerPerformerController,
    evaluate_jam,
    heldout_groups,
    load_jam_policy,
    per_performer_controller,
    shared_controller,
)
from st_agent.policies.jam_tuning import tune_jam_pid, tuning_groups
from st_agent.policies.probe import probe_jam_controller


@pytest.fixture(scope="module")
def bank() -> JamBank:
    return build_jam_bank()  # the shipped default bank (loaded, not rebuilt)


class _Inverted:
    """A PID that turns every knob the wrong way: the probe must fail it."""

    def __init__(self) -> None:
        self.pid = PIDPolicy()

    def reset(self) -> None:
        self.pid.reset()

    def predict(self, obs: np.ndarray, deterministic: bool = True):
        a, s = self.pid.predict(obs, deterministic)
        return -np.asarray(a), s


def _per(make):
    return lambda env: per_performer_controller(lambda i: make(env, i), env.n)


def test_probe_tells_feedback_controllers_from_inverted_and_random(bank: JamBank):
    groups = heldout_groups(6, 3, seed=9)
    kw = {"jam_bank": bank}
    good = probe_jam_controller(
        _per(lambda env, i: adaptive_for(env.targets[i].name, env.bounds[i])), groups, kw)
    inverted = probe_jam_controller(_per(lambda env, i: _Inverted()), groups, kw)
    seeds = iter(range(10**6))  # a stream of its own for every performer of every group
    rnd = probe_jam_controller(_per(lambda env, i: RandomPolicy(seed=next(seeds))), groups, kw)
    assert good.n == inverted.n == 18
    assert good.above_rate >= 0.9 and good.below_rate >= 0.9
    assert good.hold_change < rnd.hold_change
    # (its integral, wound up in the warm-up, still wins some 'above' probes)
    assert inverted.above_rate <= 0.5 and inverted.below_rate <= 0.1 and not inverted.passed
    assert inverted.above_move > 0 > inverted.below_move  # on average the wrong way
    assert not rnd.passed and 0.1 < rnd.above_rate < 0.9


def test_shipped_jam_policy_calms_a_performer_above_a_calm_band(bank: JamBank):
    jam3 = load_jam_policy("jam3")
    groups = [(listeners, ["calm"] * 3) for listeners, _ in heldout_groups(4, 3, seed=9)]
    r = probe_jam_controller(lambda env: shared_controller(jam3), groups,
                             {"jam_bank": bank, "history_len": jam3.history_len})
    assert r.below_rate is None  # calmer than a one-sided calm band is fine
    assert r.above_rate >= 0.95 and r.above_move < -0.1


def test_per_performer_controller_copies_carry_each_controllers_state(bank: JamBank):
    env = JamEnv(performers=3, jam_bank=bank, targets="focus")
    obs, _ = env.reset(seed=0)
    o = np.stack([obs[a] for a in env.possible_agents])
    ctrl = per_performer_controller(lambda i: PIDPolicy(), env.n)
    assert isinstance(ctrl, PerPerformerController)
    first = ctrl(o)
    obs, *_ = env.step({a: first[i] for i, a in enumerate(env.possible_agents)})
    o2 = np.stack([obs[a] for a in env.possible_agents])
    a = copy.deepcopy(ctrl)(o2)
    b = copy.deepcopy(ctrl)(o2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ctrl(o2), a)  # the copies left the original as it was
    fresh = per_performer_controller(lambda i: PIDPolicy(), env.n)
    assert not np.array_equal(fresh(o2), a)  # the state the copies carried matters


def test_live_jam_pid_and_adaptive_use_each_performers_target():
    choice = make_jam_controller("pid", 2, targets=["calm", "energize"])
    gains = [(c.kp, c.ki, c.kd) for c in choice.act.controllers]
    assert gains == [(p.kp, p.ki, p.kd) for p in (jam_pid_for("calm"),
                                                   jam_pid_for("energize"))]
    assert "tuned" in choice.name
    adaptive = make_jam_controller("adaptive", 3, targets=["calm", "focus", "calm"])
    assert len(adaptive.act.controllers) == 3
    with pytest.raises(ValueError, match=r"one target per performer \(3\), got 2"):
        make_jam_controller("pid", 3, targets=["calm", "focus"])


def test_evaluate_jam_runs_every_baseline_and_names_the_allowed_ones(tmp_path: Path):
    names = ("pid", "pid-single", "pid-default", "adaptive", "random")
    res = evaluate_jam(EvaluateJamConfig(n_groups=2, max_steps=4, independent=(),
                                         baselines=names, out=str(tmp_path)))
    assert set(res) == set(names)
    for m in res.values():
        assert len(m["per_group"]) == 2 and np.shape(m["per_group_performer"]) == (2, 3)
        assert m["group_distance"] == pytest.approx(np.mean(m["per_group"]), abs=1e-4)
    with pytest.raises(ValueError, match=r"unknown baselines \['ppo'\]; choose from \['pid', "
                                         r"'pid-single', 'pid-default', 'adaptive', 'random'\]"):
        evaluate_jam(EvaluateJamConfig(n_groups=1, baselines=("ppo",), independent=()))


def test_jam_pid_tuning_keeps_a_setting_at_least_as_good_as_where_it_started(bank: JamBank):
    calm = pid_for("calm")  # the sweep starts from the single-listener gains
    grid = {"kp": (calm.kp, 4.0), "ki": (calm.ki,), "kd": (calm.kd,)}
    res = tune_jam_pid(bank, n_groups=4, grid=grid, max_steps=6)
    assert sorted(res) == ["calm", "energize", "focus", "uplift"]
    assert res["calm"]["score"] <= res["calm"]["start_score"]  # the start is in the grid
    assert all(r["kp"] in grid["kp"] and np.isfinite(r["score"]) for r in res.values())
    tuning = tuning_groups(4)
    held = heldout_groups(4, 3)
    assert tuning[0][0][0] != held[0][0][0]  # a stream of its own
    with pytest.raises(ValueError, match="n_groups must be an int >= 1, got 0"):
        tune_jam_pid(bank, n_groups=0)


def test_shipped_jam_pid_gains_validate_for_every_preset():
    for target in ("calm", "energize", "focus", "uplift"):
        p = jam_pid_for(target)
        assert min(p.kp, p.ki, p.kd) >= 0
