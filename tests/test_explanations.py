"""The reason recorded for each knob change states what the controller used and never
contradicts the direction of the change (issue 16; st_agent/live/explain.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from st_agent.contract import SafetyBounds, action_to_knobs, build_observation
from st_agent.live.common import explain_change
from st_agent.live.explain import controller_info, direction_problem, explain_decision
from st_agent.policies.baselines import FixedPolicy, PIDPolicy, RandomPolicy
from st_agent.types import Knobs


def _calm():
    from st_agent.contract import resolve_target

    return resolve_target("calm").at(0.0)


def test_the_checker_flags_what_the_old_template_said() -> None:
    # the old template cited the state error whatever the controller did
    assert direction_problem("tempo up (0.30→0.40): arousal +0.62 above target -0.50")
    assert direction_problem("valence down (0.60→0.50): valence -0.20 below target +0.20")
    assert direction_problem("energy up (0.50→0.40): the controller's choice")  # wrong word
    assert direction_problem("tempo down (0.55→0.43): arousal +0.62 above target -0.50") is None
    # a move against the error, said as such, is not a contradiction
    assert direction_problem("tempo up (0.30→0.40): the controller's choice (it exposes no "
                             "reason); although arousal +0.62 is above the target -0.50") is None
    assert direction_problem("knobs hold: signal lost") is None


def test_pid_says_when_the_summed_error_outweighs_the_current_one() -> None:
    pid = PIDPolicy(kp=1.0, ki=0.5)
    target = _calm()
    knobs = Knobs(0.5, 0.5, 0.5)
    for _ in range(4):  # valence below the calm band: the integral builds up upward
        pid.predict(build_observation((-0.5, -0.8), target, knobs))
    obs = build_observation((0.5, -0.8), target, knobs)  # now above the band (0-0.4)
    action, _ = pid.predict(obs)
    new = action_to_knobs(action, knobs)
    reasons = explain_decision(knobs, new, (0.5, -0.8), target, action=action,
                               info=controller_info(pid))
    (valence_,) = [r for r in reasons if r.knob == "valence"]
    assert valence_.direction == 1 and valence_.implied == 1  # up, although valence is above
    assert "summed past error outweighs the current one" in valence_.text
    assert "region − estimate -0.10" in valence_.text
    assert direction_problem(valence_.text) is None


def test_rate_limit_and_bounds_are_named() -> None:
    bounds = SafetyBounds(tempo=(0.3, 1.0), max_delta=0.25)
    held = FixedPolicy((0.5, 0.0, 0.5), bounds)
    held.role = "manual override"
    words = []
    knobs = Knobs(0.5, 0.9, 0.5)
    for _ in range(4):
        action, _ = held.predict(build_observation((0.0, 0.0), _calm(), knobs))
        new = action_to_knobs(action, knobs, bounds)
        words.append(explain_change(knobs, new, (0.0, 0.0), _calm(), action=action,
                                    bounds=bounds, info=controller_info(held)))
        knobs = new
    assert words[0] == ["tempo down (0.90→0.65): manual override: moving to 0.00; rate limit "
                        "max_delta 0.25 per phrase (asked -0.90)"]
    assert "stopped at the tempo bound 0.30" in words[2][0]
    assert words[3] == ["tempo held at its bound 0.30: the controller asked -0.30"]


def _residual(bounds: SafetyBounds):
    """A residual controller with an untrained (random) network on the shipped prior."""
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy

    from st_agent.contract import OBS_SIZE
    from st_agent.policies.controllers import adaptive_for
    from st_agent.policies.residual import EXTRA_SIZE, ResidualController

    n = OBS_SIZE + EXTRA_SIZE
    net = ActorCriticPolicy(spaces.Box(-np.inf, np.inf, (n,), np.float32),
                            spaces.Box(-1.0, 1.0, (3,), np.float32), lambda _: 0.0,
                            log_std_init=0.0)
    return ResidualController(net, adaptive_for("calm", bounds), np.zeros(n), np.ones(n))


@pytest.mark.slow
def test_every_reason_of_simulated_sessions_agrees_with_its_change() -> None:
    from st_agent.envs.closed_loop import ClosedLoopEnv
    from st_agent.envs.phrase_bank import build_phrase_bank
    from st_agent.policies.controllers import adaptive_for, pid_for
    from st_agent.policies.loading import load_bundled_policy

    bank = build_phrase_bank()
    bounds = SafetyBounds(valence=(0.2, 1.0), tempo=(0.05, 0.9), max_delta=0.25)
    makers = {"pid": lambda: pid_for("calm"), "adaptive": lambda: adaptive_for("calm", bounds),
              "residual": lambda: _residual(bounds),
              "fixed": lambda: FixedPolicy("energize", bounds),
              "random": lambda: RandomPolicy(seed=3), "ppo": lambda: load_bundled_policy("calm")}
    causes: dict[str, set[str]] = {}
    moved = 0
    for name, make in makers.items():
        for seed in (0, 1):
            env = ClosedLoopEnv(target="calm", phrase_bank=bank, max_steps=24, bounds=bounds)
            obs, _ = env.reset(seed=seed)
            ctrl = make()
            done = False
            while not done:
                action, _ = ctrl.predict(obs, deterministic=True)
                old = env.knobs
                new = action_to_knobs(action, old, bounds)
                target = env.target.at(env.t_sec)
                for r in explain_decision(old, new, tuple(obs[0:2]), target, action=action,
                                          bounds=bounds, info=controller_info(ctrl)):
                    causes.setdefault(name, set()).add(r.cause)
                    assert direction_problem(r.text) is None, (name, r.text)
                    assert r.implied in (None, r.direction), (name, r.text)
                    moved += r.direction != 0
                obs, _, term, trunc, _ = env.step(action)
                assert env.knobs == new  # the reason described the knobs that played
                done = term or trunc
    assert causes["pid"] <= {"pid", "bound"} and "pid" in causes["pid"]
    for name in ("adaptive", "residual"):  # always the controller's own account
        assert name in causes[name] and causes[name] <= {name, "bound"}, causes[name]
    assert causes["ppo"] <= {"policy", "bound"} and "fixed" in causes["fixed"]
    assert moved > 100


@pytest.mark.slow
def test_a_whole_session_records_true_reasons_and_its_controller_hashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from st_agent.biometrics.recording import read_session
    from st_agent.cli import main
    from st_agent.policies.loading import BUNDLED_DIR

    monkeypatch.setenv("ST_AGENT_DATA_DIR", str(tmp_path / "data"))
    rc = main(["session", "--board", "virtual", "--accelerated", "--minutes", "1.5",
               "--calibration-sec", "10", "--policy", "pid", "--record", str(tmp_path),
               "--name", "s", "--no-report", "--status-sec", "60", "--subject", "x001"])
    assert rc == 0
    events = read_session(tmp_path / "s").events
    files = next(e["payload"] for e in events if e["kind"] == "controller_files")
    pid_file = BUNDLED_DIR / "pid" / "calm.json"
    assert files["files"]["controller:pid/calm.json"]["sha256"] == \
        hashlib.sha256(pid_file.read_bytes()).hexdigest()
    start = next(e["payload"] for e in events if e["kind"] == "marker"
                 and e["payload"]["label"] == "session_start")
    knobs = Knobs(*start["config"]["start_knobs"])
    n_changes = 0
    for d in (e["payload"] for e in events if e["kind"] == "decision"):
        new = Knobs(*d["knobs"])
        for text in d["reasons"]:
            assert direction_problem(text) is None, text
            for name in ("valence", "tempo", "energy"):
                if text.startswith(f"{name} up") or text.startswith(f"{name} down"):
                    n_changes += 1
                    a, b = getattr(knobs, name), getattr(new, name)
                    assert f"({a:.2f}→{b:.2f})" in text or f"({a:.3f}→{b:.3f})" in text
                    assert "PID on the" in text  # what the controller used
        knobs = new
    assert n_changes >= 3


def test_a_broken_or_contradicting_account_is_not_cited() -> None:
    class Liar:
        def explain(self) -> dict:
            return {"kind": "fixed", "knobs": [0.9, 0.9, 0.9], "role": "x"}  # says up

    class Broken:
        def explain(self) -> dict:
            raise RuntimeError("boom")

    old, new = Knobs(0.5, 0.5, 0.5), Knobs(0.5, 0.4, 0.5)  # tempo went down
    for ctrl in (Liar(), Broken()):
        (r,) = explain_decision(old, new, (0.0, 0.0), _calm(), info=controller_info(ctrl))
        assert r.cause == "policy" and "exposes no reason" in r.text
    (r,) = explain_decision(old, new, (0.0, 0.0), _calm(), info={"kind": "pid"})  # malformed
    assert r.cause == "policy"
