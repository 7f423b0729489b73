"""Controllers that use the feedback: identification, the feedback probe, the protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from st_agent.contract import SafetyBounds, build_observation
from st_agent.envs.phrase_bank import build_phrase_bank
from st_agent.listener.family import FAMILY_NAMES
from st_agent.policies.adaptive import (
    BASIS_NAMES,
    N_REG,
    AdaptiveConfig,
    AdaptiveController,
    ResponsePrior,
    basis,
    exposure_path,
    fit_prior,
    next_exposure,
    regressors,
)
from st_agent.policies.baselines import FixedPolicy, RandomPolicy
from st_agent.policies.controllers import make_controller, shipped_controllers
from st_agent.policies.evaluate import heldout_listeners, paired_summary, rollout_episodes
from st_agent.policies.probe import HOLD_THRESHOLD, probe_controller
from st_agent.types import Knobs

ST_AGENT = Path(sys.executable).with_name("st-agent")


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bank") / "bank.json"
    build_phrase_bank(path, grid=2, per_point=1, seed=0)
    return str(path)


@pytest.fixture(scope="module")
def probe_listeners() -> list:
    return heldout_listeners(20, seed=0, families=FAMILY_NAMES, stream=99)


def _weak_prior(noise_var: float = 0.01) -> ResponsePrior:
    return ResponsePrior(np.zeros((2, N_REG)), np.tile(np.eye(N_REG), (2, 1, 1)),
                         np.full(2, noise_var))


def test_identification_recovers_known_response_parameters():
    """A simulated session of a known linear response: the posterior mean comes within
    0.05 of every coefficient after 500 phrases (noise sd 0.1), and the truth lies
    within 3 posterior standard deviations."""
    rng = np.random.default_rng(0)
    true = np.zeros((2, N_REG))
    true[0, :] = [0.05, 0.5, 0.4, 0.1, 0.3, 0.0, 0.1, -0.05, 0.0]   # valence
    true[1, :] = [-0.1, 0.6, 0.0, 0.0, 0.5, 0.3, -0.2, -0.1, -0.4]  # arousal
    ctrl = AdaptiveController(_weak_prior(), config=AdaptiveConfig(
        process_noise=0.0, bias_process_noise=0.0, guard_margin=float("inf")))
    y_prev, knobs = np.zeros(2), Knobs(0.5, 0.5, 0.5)
    history, expo = [], 0.0
    obs = build_observation(tuple(y_prev), (0.0, 0.0), knobs)
    ctrl.predict(obs)  # first decision: nothing has played yet
    for _ in range(500):
        new = rng.uniform(0, 1, 3)
        new[2] = 0.0 if rng.random() < 0.2 else new[2]  # some rests
        knobs = Knobs(*new)
        z = regressors(y_prev, new, expo)
        y = np.einsum("ak,ak->a", z, true) + rng.normal(0, 0.1, 2)
        history.insert(0, (float(y_prev[0]), float(y_prev[1]), knobs))
        obs = build_observation((float(y[0]), float(y[1])), (0.0, 0.0), knobs, 1.0, history)
        ctrl.predict(obs)
        expo = float(next_exposure(np.asarray(expo), new, ctrl.config.exposure_tau_sec))
        y_prev = y
    est, sd = ctrl.theta[0], np.sqrt(np.diagonal(ctrl.theta_cov[0], axis1=-2, axis2=-1))
    assert np.max(np.abs(est - true)) < 0.05, (est - true).round(3)
    assert np.all(np.abs(est - true) < 3 * sd)


def test_fit_prior_recovers_population_mean():
    rng = np.random.default_rng(1)
    mean = np.zeros((2, N_REG))
    mean[:, 1] = 0.5
    mean[1, 4] = 0.6
    sessions = []
    for _ in range(60):
        th = mean + rng.normal(0, 0.05, mean.shape)
        k = rng.uniform(0, 1, (80, 3))
        e = exposure_path(k, 60.0)
        y = np.zeros((81, 2))
        for t in range(80):
            y[t + 1] = np.einsum("ak,ak->a", regressors(y[t], k[t], e[t]), th) \
                + rng.normal(0, 0.05, 2)
        sessions.append((y[:-1], k, e, y[1:]))
    prior = fit_prior(sessions)
    assert np.max(np.abs(prior.mean - mean)) < 0.05
    assert np.allclose(prior.noise_var, 0.05 ** 2, rtol=0.3)
    again = ResponsePrior.from_json(json.loads(json.dumps(prior.to_json())))
    assert np.allclose(again.cov, prior.cov)
    with pytest.raises(ValueError, match="prior shapes"):
        ResponsePrior(np.zeros((2, 3)), np.zeros((2, 3, 3)), np.ones(2))


def test_basis_names_and_rest_phrase():
    phi = basis(np.array([[0.2, 0.1, 0.0], [0.8, 0.9, 0.7]]), np.array([0.5, 0.5]))
    assert phi.shape == (2, len(BASIS_NAMES))
    assert np.allclose(phi[0], [0, 0, 0, 0, 0, 1, 0.5])  # a rest: only the silence terms
    assert phi[1, 1] == 1.0 and phi[1, 5] == 0.0


def test_adaptive_stays_in_bounds_and_survives_lost_estimates(bank_path):
    from st_agent.envs.closed_loop import ClosedLoopEnv

    bounds = SafetyBounds(tempo=(0.1, 0.4), energy=(0.2, 0.6), max_delta=0.1)
    ctrl, _ = make_controller("adaptive", bounds, "calm")
    env = ClosedLoopEnv(target="calm", phrase_bank=bank_path, bounds=bounds, nan_prob=0.3,
                        max_steps=20)
    obs, _ = env.reset(seed=3)
    for _ in range(20):
        a, _ = ctrl.predict(obs)
        assert a.shape == (3,) and np.all(np.abs(a) <= 1) and np.all(np.isfinite(a))
        obs, *_ = env.step(a)
        k = np.asarray(env.knobs.as_tuple())
        assert np.all(k >= bounds.lo - 1e-9) and np.all(k <= bounds.hi + 1e-9)


def test_adaptive_improves_by_learning(bank_path):
    """Same prior and planner: learning this listener online lowers the distance."""
    from st_agent.policies.tuning import batch_rollout, fit_population_prior

    kw = {"target": "calm", "phrase_bank": bank_path, "max_steps": 32}
    prior = fit_population_prior(kw, n_envs=128, max_steps=32)
    learn = batch_rollout(AdaptiveController(prior), kw, 128, seed=5).last_half.mean()
    frozen = batch_rollout(AdaptiveController(prior, config=AdaptiveConfig(learn=False)), kw,
                           128, seed=5).last_half.mean()
    assert learn < frozen


def test_every_preset_ships_a_controller():
    assert shipped_controllers() == ["calm", "energize", "focus", "uplift"]


@pytest.mark.parametrize("preset", ["calm", "energize", "focus", "uplift"])
def test_feedback_probe_on_every_shipped_controller(preset, bank_path, probe_listeners):
    """Above (below) the target band the shipped controller calms (energises) for >= 95 %
    of listeners and holds on target; a preset whose band is one-sided (no bottom or no top)
    is probed on the two-sided ``focus`` band as well (it reads the target from the
    observation)."""
    kw = {"target": preset, "phrase_bank": bank_path, "max_steps": 16}
    make = lambda env: make_controller(preset, env.bounds, preset)[0]  # noqa: E731
    res = probe_controller(make, probe_listeners, kw, seed=0)
    assert res.passed, res.as_dict()
    if res.below_rate is None or res.above_rate is None:
        res = probe_controller(make, probe_listeners, kw | {"target": "focus"}, seed=0)
        assert res.passed, res.as_dict()


def test_probe_fails_controllers_that_ignore_feedback(bank_path, probe_listeners):
    kw = {"target": "focus", "phrase_bank": bank_path, "max_steps": 16}
    fixed = probe_controller(lambda env: FixedPolicy("focus", env.bounds), probe_listeners, kw)
    rnd = probe_controller(lambda env: RandomPolicy(seed=int(env.np_random_seed)),
                           probe_listeners, kw)
    assert not fixed.passed and not rnd.passed
    assert rnd.hold_change > HOLD_THRESHOLD


def test_episodes_are_seeded_per_episode(bank_path):
    kw = {"target": "calm", "phrase_bank": bank_path, "max_steps": 6}
    listeners = heldout_listeners(3, seed=0, families=FAMILY_NAMES)
    actions: list[list[np.ndarray]] = []

    class Recording(RandomPolicy):
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            a, s = super().predict(obs)
            actions[-1].append(a)
            return a, s

    def make(env):
        actions.append([])
        return Recording(seed=(0, int(env.np_random_seed)))

    a = rollout_episodes(make, listeners, kw, seed=10)
    first = [np.stack(x) for x in actions]
    actions.clear()
    b = rollout_episodes(make, listeners, kw, seed=10)
    assert np.array_equal(a.curve, b.curve) and np.array_equal(a.distance, b.distance)
    assert all(np.array_equal(x, np.stack(y)) for x, y in zip(first, actions, strict=True))
    assert not np.array_equal(first[0], first[1])  # each episode its own random actions
    adaptive = lambda env: make_controller("adaptive", env.bounds, "calm")[0]  # noqa: E731
    c1 = rollout_episodes(adaptive, listeners, kw, seed=10)
    c2 = rollout_episodes(adaptive, listeners, kw, seed=10)
    assert np.array_equal(c1.curve, c2.curve)


def test_paired_summary_ci_contains_the_difference():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.4, 200)
    ctrl = ref - 0.05 + rng.normal(0, 0.01, 200)
    s = paired_summary(ctrl, ref, n_boot=500)
    assert s["diff_ci"][0] < 0.05 < s["diff_ci"][1] and s["diff_ci"][0] > 0
    assert s["pct_ci"][0] < s["pct"] < s["pct_ci"][1]


def _st_agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ST_AGENT), *args], capture_output=True, text=True, timeout=600)


def test_leave_one_family_out_tiny_budget_in_a_subprocess(bank_path, tmp_path):
    out = tmp_path / "eval"
    r = _st_agent("evaluate", "--target", "calm", "--families", "first_order", "adaptation",
                  "--listeners", "3", "--max-steps", "4", "--tune-listeners", "4",
                  "--adaptive-trials", "1", "--n-boot", "100", "--phrase-bank", bank_path,
                  "--controllers", "random", "pid", "constant", "adaptive", "oracle",
                  "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("first_order", "adaptation", "draws"):
        assert f"test set {name}" in r.stdout
    doc = json.loads((out / "results.json").read_text())
    sets = doc["sets"]
    assert set(sets) == {"first_order", "adaptation", "draws"}
    assert sets["first_order"]["train_families"] == ["adaptation"]
    assert sets["draws"]["train_families"] == ["first_order", "adaptation"]
    for block in sets.values():
        assert list(block["controllers"]) == ["random", "pid", "constant", "adaptive", "oracle"]
        for row in block["controllers"].values():
            p = row["paired"]
            assert len(row["distance"]) == 3 and p["ci"][0] <= p["mean"] <= p["ci"][1]
    assert (out / "folds" / "adaptation" / "references.json").is_file()
    assert (out / "evaluation.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (("--families", "first_order", "nope"), "nope"),
    (("--listener", "no/such/listener.json"), "does not exist"),
    (("--target", "nap"), "unknown target preset 'nap'"),
    (("--controllers", "magic"), "unknown controllers"),
])
def test_evaluate_rejects_bad_input(args, message, bank_path):
    r = _st_agent("evaluate", "--phrase-bank", bank_path, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    if args[0] == "--families":
        assert "first_order" in r.stderr and "entrainment" in r.stderr  # the allowed names


def test_residual_ppo_trains_saves_and_loads(bank_path, tmp_path):
    from st_agent.policies.residual import (
        ResidualConfig,
        load_residual,
        train_residual,
    )
    from st_agent.policies.tuning import fit_population_prior

    kw = {"target": "calm", "phrase_bank": bank_path, "max_steps": 8}
    prior = fit_population_prior(kw, n_envs=16, max_steps=16)
    run = train_residual(ResidualConfig(total_timesteps=128, n_envs=4, n_steps=32,
                                        batch_size=64, n_epochs=1, max_steps=8),
                         build_phrase_bank(bank_path, grid=2, per_point=1), tmp_path / "res",
                         prior, AdaptiveConfig())
    ctrl = load_residual(run, SafetyBounds())
    obs = build_observation((0.3, 0.2), (0.2, -0.5), Knobs(0.5, 0.5, 0.5))
    a, _ = ctrl.predict(obs)
    assert a.shape == (3,) and np.all(np.abs(a) <= 1)
    _, desc = make_controller(str(run), SafetyBounds())
    assert "residual" in desc
    (run / "policy.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not an st-agent-residual-ppo"):
        load_residual(run)
