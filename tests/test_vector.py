"""The batched fast env agrees with N ClosedLoopEnvs and works under SB3 PPO."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from st_agent.contract import Target, build_observation, build_observations
from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
from st_agent.envs.vector import VecClosedLoopEnv
from st_agent.listener.family import FAMILY_NAMES, family_of, sample_population
from st_agent.listener.model import EstimatorNoise, sample_listeners
from st_agent.types import Knobs


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> PhraseBank:
    """One real phrase per grid point (2 per axis): the phrase pick is deterministic."""
    path = tmp_path_factory.mktemp("bank") / "bank.json"
    build_phrase_bank(path, grid=2, per_point=1, seed=0)
    return PhraseBank.load(path)


def test_build_observations_matches_single():
    rng = np.random.default_rng(0)
    n, m, hl = 50, 3, 3
    est = rng.uniform(-1, 1, (n, 2))
    est[rng.random((n, 2)) < 0.2] = np.nan
    hist_est = rng.uniform(-1, 1, (n, m, 2))
    hist_est[rng.random((n, m, 2)) < 0.2] = np.nan
    hist_knobs = rng.uniform(0, 1, (n, m, 3))
    knobs = rng.uniform(0, 1, (n, 3))
    target = rng.uniform(-1, 1, (n, 2))
    conf = rng.uniform(0, 1, n)
    count = rng.integers(0, m + 1, n)
    got = build_observations(est, target, knobs, conf, hist_est, hist_knobs, count, hl)
    # and the fast path: finite estimates, full histories
    fin_est, full = np.nan_to_num(est), np.full(n, m)
    fast = build_observations(fin_est, target, knobs, conf, hist_est, hist_knobs, full, hl)
    for i in range(n):
        hist = [(hist_est[i, k, 0], hist_est[i, k, 1], Knobs(*hist_knobs[i, k])) for k in range(m)]
        want = build_observation(tuple(fin_est[i]), tuple(target[i]), Knobs(*knobs[i]), conf[i],
                                 hist, hl)
        np.testing.assert_allclose(fast[i], want, atol=1e-6)
    for i in range(n):
        hist = [(hist_est[i, k, 0], hist_est[i, k, 1], Knobs(*hist_knobs[i, k]))
                for k in range(count[i])]
        want = build_observation(tuple(est[i]), tuple(target[i]), Knobs(*knobs[i]), conf[i],
                                 hist, hl)
        np.testing.assert_allclose(got[i], want, atol=1e-6)


def _quiet(bank: PhraseBank, n: int = 3, mixed: bool = False):
    """Noise-free listeners and estimator: both envs must then agree exactly."""
    drawn = sample_population(40, rng=3) if mixed else sample_listeners(n, rng=3)
    if mixed:  # one of each family
        drawn = [next(p for p in drawn if family_of(p) == f) for f in FAMILY_NAMES]
    ps = [dataclasses.replace(p, noise_std=0.0, drift_std=0.0) for p in drawn]
    noise = EstimatorNoise(std_valence=0.0, std_arousal=0.0)
    return ps, noise


@pytest.mark.parametrize(("mixed", "target"), [
    (False, "calm"), (True, "calm"),
    (True, Target.region(valence=(0.0, 0.5), arousal=(-1.0, -0.3), relative=False))],
    ids=["first_order", "families", "families-absolute-target"])
def test_matches_single_envs_step_by_step(bank, mixed, target):
    ps, noise = _quiet(bank, mixed=mixed)
    start = Knobs(0.5, 0.5, 0.25)
    kw = {"phrase_bank": bank, "noise": noise, "start_knobs": start, "max_steps": 5,
          "target": target}
    singles = [ClosedLoopEnv(listener=p, **kw) for p in ps]
    obs1 = np.stack([e.reset(seed=0)[0] for e in singles])
    venv = VecClosedLoopEnv(len(ps), seed=0, listener=ps, **kw)
    venv.reset()
    # the vec env draws its listeners from the list: put them in the same order
    venv._fl.replace(np.arange(len(ps)), type(venv._fl)(ps, noise=noise))
    venv.dist = venv._distance()
    obsv = venv._obs()
    np.testing.assert_allclose(obsv, obs1, atol=1e-6)
    venv._fl.t_sec = np.zeros(len(ps))
    rng = np.random.default_rng(1)
    for t in range(5):
        a = rng.uniform(-1.5, 1.5, (len(ps), 3)).astype(np.float32)
        a[0, 2] = -1.0  # session 0 turns energy to 0: rest phrases
        outs = [e.step(a[i]) for i, e in enumerate(singles)]
        ov, rv, dv, infos = venv.step(a)
        r1 = np.array([o[1] for o in outs])
        np.testing.assert_allclose(rv, r1, rtol=1e-5, atol=1e-6)
        dist1 = np.array([o[4]["distance"] for o in outs])
        np.testing.assert_allclose([i["distance"] for i in infos], dist1, atol=1e-9)
        assert [i["phrase"] for i in infos] == [o[4]["phrase"] for o in outs]
        if t < 4:
            np.testing.assert_allclose(ov, np.stack([o[0] for o in outs]), atol=1e-6)
            assert not dv.any()
        else:  # truncation: the terminal observation is the single env's last one
            assert dv.all() and all(o[3] for o in outs)
            term = np.stack([i["terminal_observation"] for i in infos])
            np.testing.assert_allclose(term, np.stack([o[0] for o in outs]), atol=1e-6)
            assert all(i["TimeLimit.truncated"] for i in infos)


def test_auto_reset_and_seeding(bank):
    kw = {"phrase_bank": bank, "max_steps": 3, "target": "random", "nan_prob": 0.3}
    a = VecClosedLoopEnv(8, seed=5, **kw)
    b = VecClosedLoopEnv(8, seed=5, **kw)
    oa, ob = a.reset(), b.reset()
    np.testing.assert_array_equal(oa, ob)
    acts = np.random.default_rng(0).uniform(-1, 1, (7, 8, 3))
    for t in range(7):
        oa, ra, da, _ = a.step(acts[t])
        ob, rb, _, _ = b.step(acts[t])
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        assert oa.shape == (8, a.observation_space.shape[0]) and np.isfinite(oa).all()
        assert a.observation_space.contains(oa[0])
        assert da.all() == ((t + 1) % 3 == 0)
        if da.all():
            # fresh episodes: history repeats the current estimate and knobs
            np.testing.assert_allclose(oa[:, 11:13], oa[:, 0:2])
            np.testing.assert_allclose(oa[:, 13:16], oa[:, 6:9])
            assert (a.n_steps == 0).all() and (a.t_sec == 0).all()
    c = VecClosedLoopEnv(8, seed=6, **kw)
    assert not np.array_equal(c.reset(), a.reset())


def test_population_distribution_agrees(bank):
    """Mean reset distance over many population listeners agrees with single envs."""
    venv = VecClosedLoopEnv(400, seed=0, phrase_bank=bank)
    venv.reset()
    dv = venv.dist
    env = ClosedLoopEnv(phrase_bank=bank)
    ds = np.array([env.reset(seed=s)[1]["distance"] for s in range(400)])
    se = math.sqrt(dv.var() / dv.size + ds.var() / ds.size)
    assert abs(dv.mean() - ds.mean()) < 4 * se


def test_short_ppo_learn(bank):
    venv = VecNormalize(VecClosedLoopEnv(4, seed=0, phrase_bank=bank, max_steps=8))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [8]}, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128
    venv.close()


def test_bad_arguments(bank):
    with pytest.raises(ValueError, match="n_envs"):
        VecClosedLoopEnv(0, phrase_bank=bank)
    with pytest.raises(ValueError, match="fast"):
        VecClosedLoopEnv(2, phrase_bank=bank, fidelity="full")
    with pytest.raises(ValueError, match="max_steps"):
        VecClosedLoopEnv(2, phrase_bank=bank, max_steps=0)


def test_families_argument_restricts_the_population(bank):
    venv = VecClosedLoopEnv(64, seed=0, phrase_bank=bank, families=["adaptation",
                                                                    "entrainment"])
    venv.reset()
    assert set(venv.families) == {"adaptation", "entrainment"}
    everyone = VecClosedLoopEnv(64, seed=0, phrase_bank=bank)
    everyone.reset()
    assert set(everyone.families) == set(FAMILY_NAMES)  # the default: every family
    for _ in range(3):  # auto-reset re-draws listeners, families included
        everyone.step(np.zeros((64, 3)))
    with pytest.raises(ValueError, match="unknown listener family"):
        VecClosedLoopEnv(2, phrase_bank=bank, families=["nope"])
