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
from st_agent.envs.vector import VecClosedLoopEnv, numba_available
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


BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not numba_available(), reason="numba not installed (the NumPy backend is tested)"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("mixed", "target"), [
    (False, "calm"), (True, "calm"),
    (True, Target.region(valence=(0.0, 0.5), arousal=(-1.0, -0.3), relative=False))],
    ids=["first_order", "families", "families-absolute-target"])
def test_matches_single_envs_step_by_step(bank, mixed, target, backend):
    ps, noise = _quiet(bank, mixed=mixed)
    start = Knobs(0.5, 0.5, 0.25)
    kw = {"phrase_bank": bank, "noise": noise, "start_knobs": start, "max_steps": 5,
          "target": target}
    singles = [ClosedLoopEnv(listener=p, **kw) for p in ps]
    obs1 = np.stack([e.reset(seed=0)[0] for e in singles])
    venv = VecClosedLoopEnv(len(ps), seed=0, listener=ps, backend=backend, **kw)
    venv.reset()
    # the vec env draws its listeners from the list: put them in the same order (at rest:
    # quiet listeners do not move in the rest before the music)
    venv._put_listeners(np.arange(len(ps)), ps)
    venv.dist = venv._distance()
    obsv = venv._obs()
    np.testing.assert_allclose(obsv, obs1, atol=1e-6)
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


# --------------------------------------------------------------------------- backends agree


def _uneven_bank(bank: PhraseBank) -> PhraseBank:
    """The bank's phrases repeated 1 to 4 times per grid point: the pick draws from 1..4."""
    reps = np.arange(len(bank.features)) % 4 + 1
    knobs = np.repeat(bank.knobs, reps, axis=0)
    feats = [f for f, r in zip(bank.features, reps, strict=True) for _ in range(r)]
    return PhraseBank(bank.grid, knobs, feats)


def _pair(n: int, **kw):
    """The same sessions in both backends, reset on the same seed."""
    a = VecClosedLoopEnv(n, seed=11, backend="numba", **kw)
    b = VecClosedLoopEnv(n, seed=11, backend="numpy", **kw)
    return a, b, a.reset(), b.reset()


def _agree(a, b) -> None:
    """float64 internals to rtol 1e-9 (the float32 outputs are checked by the caller)."""
    for name in ("est", "dist", "jerk", "t_sec", "phrase_sec", "knobs"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(a._state(), b._state(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.phrase, b.phrase)
    np.testing.assert_array_equal(a.n_steps, b.n_steps)
    np.testing.assert_array_equal(a.families, b.families)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("case", ["population", "nan-random-target-resets", "absolute-target",
                                  "schedule", "listener-list", "uneven-bank", "history"])
def test_numba_backend_equals_numpy_backend(bank, case):
    """Same seed: the same draws, observations, rewards, resets (compiled vs NumPy)."""
    kw: dict = {"phrase_bank": bank}
    if case == "nan-random-target-resets":
        kw |= {"nan_prob": 0.3, "target": "random", "max_steps": 4}
    elif case == "absolute-target":
        kw |= {"target": Target.region(valence=(0.0, 0.5), arousal=(-1.0, -0.3),
                                       relative=False), "max_steps": 7}
    elif case == "schedule":
        kw |= {"target": Target([(0.0, 0.2, -0.5), (40.0, 0.4, 0.2)]), "max_steps": 9}
    elif case == "listener-list":
        kw |= {"listener": sample_population(5, rng=4), "max_steps": 6,
               "start_knobs": Knobs(0.5, 0.5, 0.1)}
    elif case == "uneven-bank":
        kw |= {"phrase_bank": _uneven_bank(bank), "max_steps": 5}
    elif case == "history":
        kw |= {"history_len": 5, "nan_prob": 0.2, "max_steps": 8}
    n = 13
    a, b, oa, ob = _pair(n, **kw)
    np.testing.assert_array_equal(oa, ob)
    _agree(a, b)
    acts = np.random.default_rng(2).uniform(-1.6, 1.6, (30, n, 3)).astype(np.float32)
    acts[:, 0, 2] = -1.0  # session 0 goes to rest phrases
    acts[3, 1] = np.nan  # "no change"
    for t in range(30):
        ra, rb = a.step(acts[t]), b.step(acts[t])
        # float32 outputs: the same float64 values rounded (one float32 step at most)
        np.testing.assert_allclose(ra[0], rb[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ra[1], rb[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(ra[2], rb[2])
        _agree(a, b)
        for ia, ib in zip(ra[3], rb[3], strict=True):
            assert ia.keys() == ib.keys()
            assert ia["phrase"] == ib["phrase"] and ia["nan_state"] == ib["nan_state"]
            np.testing.assert_allclose(ia["distance"], ib["distance"], rtol=1e-9, atol=1e-12)
            if "terminal_observation" in ia:
                np.testing.assert_allclose(ia["terminal_observation"],
                                           ib["terminal_observation"], rtol=1e-6, atol=1e-7)
    assert (a.phrase == -1).any()  # rest phrases were played
    # the generators are in the same state: nothing drawn differently
    assert a.rng.random() == b.rng.random()


def _reference(n: int, seed: int, acts: np.ndarray, **kw) -> tuple[list, list, list]:
    """Per-listener reference: each listener alone, the live observation builder.

    Draws as the vectorised env does (one generator: listeners, knobs, rest
    noise; then per step the phrase picks and the normals), steps listener i
    alone through its own one-listener :class:`FastListeners`, adds the
    estimator's AR(1) noise by its formula (:class:`EstimatorNoise`), builds
    the observation with :func:`build_observation` (what the live session
    uses) and the reward by the env's formula.
    """
    from st_agent.contract import REST_ENERGY, region_distance
    from st_agent.listener.fast import FastListeners
    from st_agent.types import BPM_MAX, BPM_MIN

    proto = ClosedLoopEnv(**kw)
    bank, nz, bounds, hl = proto.bank, proto.noise, proto.bounds, proto.history_len
    rng = np.random.default_rng(seed)
    ps = sample_population(n, rng=rng)
    knobs = rng.uniform(bounds.lo, bounds.hi, (n, 3))
    z0 = rng.standard_normal((n, 6))
    one = [FastListeners([p], noise=nz) for p in ps]
    gain = nz.gain
    rest = np.array([p.rest_state for p in ps])
    ar1 = np.array([nz.ar1_valence, nz.ar1_arousal])
    std = np.array([nz.std_valence, nz.std_arousal])
    noise = np.zeros((n, 2))
    target = proto._target_spec

    def observe(i, dt, z):
        nonlocal noise
        rho = ar1 ** (dt / nz.hop_sec)
        noise[i] = rho * noise[i] + std * np.sqrt(1 - rho ** 2) * z[4:]
        return np.clip(gain * (one[i].state[0] - rest[i]) + noise[i], -1, 1)

    est = np.zeros((n, 2))
    for i in range(n):
        one[i].advance(np.zeros(6), proto.rest_sec, z=z0[i:i + 1, :4])
        est[i] = observe(i, proto.rest_sec, z0[i])
    tp = target.at(0.0)

    def dist(i):
        clean = np.clip(gain * (one[i].state[0] - rest[i]), -1, 1)
        return float(region_distance(clean[None], np.asarray(tp.region)[None])[0])

    d = np.array([dist(i) for i in range(n)])
    hist: list[list] = [[] for _ in range(n)]
    obs_all, rew_all, est_all = [], [], []
    for a in acts:
        prev = knobs.copy()
        for i in range(n):
            hist[i].insert(0, (est[i, 0], est[i, 1], Knobs(*prev[i])))
        a = np.clip(np.nan_to_num(a.astype(float), nan=0.0), -1, 1)
        knobs = np.clip(prev + a * bounds.max_delta, bounds.lo, bounds.hi)
        idx = bank.pick_many(knobs, rng)
        z = rng.standard_normal((n, 6))
        obs, rew = [], []
        for i in range(n):
            if knobs[i, 2] <= REST_ENERGY:
                x, dt = np.zeros(6), 16 * 60.0 / np.round(BPM_MIN + knobs[i, 1] * (
                    BPM_MAX - BPM_MIN))
            else:
                x, dt = bank.x[idx[i]], float(bank.duration_sec[idx[i]])
            one[i].advance(x, dt, z=z[i:i + 1, :4])
            est[i] = observe(i, dt, z[i])
            d_prev, d[i] = d[i], dist(i)
            jerk = np.mean(((knobs[i] - prev[i]) / bounds.max_delta) ** 2)
            rew.append((d_prev - d[i]) - proto.distance_weight * d[i] - proto.jerk_weight * jerk)
            obs.append(build_observation(tuple(est[i]), tp, Knobs(*knobs[i]), 1.0,
                                         hist[i][:hl], hl))
        obs_all.append(np.stack(obs))
        rew_all.append(np.array(rew))
        est_all.append(est.copy())
    return obs_all, rew_all, est_all


@pytest.mark.parametrize("backend", BACKENDS)
def test_vectorised_env_equals_a_per_listener_reference(bank, backend):
    """Issue 20: every family, same seed -> the same observations and rewards."""
    n, steps = 12, 20
    kw = {"phrase_bank": _uneven_bank(bank), "max_steps": 40}
    acts = np.random.default_rng(5).uniform(-1.5, 1.5, (steps, n, 3)).astype(np.float32)
    acts[:, 0, 2] = -1.0
    ref_obs, ref_rew, ref_est = _reference(n, 21, acts, **kw)
    venv = VecClosedLoopEnv(n, seed=21, backend=backend, **kw)
    venv.reset()
    assert set(venv.families) == set(FAMILY_NAMES)
    for t in range(steps):
        obs, rew, done, _ = venv.step(acts[t])
        assert not done.any()
        np.testing.assert_allclose(venv.est, ref_est[t], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(obs, ref_obs[t], rtol=1e-6, atol=1e-7)  # float32
        np.testing.assert_allclose(rew, ref_rew[t], rtol=1e-6, atol=1e-7)  # float32


def test_infos_off_leaves_the_values_in_arrays(bank):
    kw = {"phrase_bank": bank, "max_steps": 3}
    full = VecClosedLoopEnv(6, seed=1, **kw)
    lean = VecClosedLoopEnv(6, seed=1, infos=False, **kw)
    full.reset(), lean.reset()
    acts = np.random.default_rng(0).uniform(-1, 1, (3, 6, 3))
    for t in range(3):
        _, _, done, infos = full.step(acts[t])
        _, _, _, lean_infos = lean.step(acts[t])
        assert done.any() == (t == 2)
        assert [i["distance"] for i in infos] == [
            j["distance"] if d else x for j, d, x in zip(lean_infos, done, lean.dist.tolist(),
                                                         strict=True)]
        assert [i["phrase_sec"] for i in infos] == lean.phrase_sec.tolist()
        assert [i["jerk"] for i in infos] == lean.jerk.tolist()
        assert [i["phrase"] for i in infos] == lean.phrase.tolist()
        want = [{"terminal_observation", "TimeLimit.truncated", "distance"} if d else set()
                for d in done]
        assert [set(i) for i in lean_infos] == want
    with pytest.raises(ValueError, match="backend"):
        VecClosedLoopEnv(2, phrase_bank=bank, backend="cuda")
    with pytest.raises(TypeError, match="infos"):
        VecClosedLoopEnv(2, phrase_bank=bank, infos="yes")


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_compiled_phrase_draws_are_numpys_integers():
    """The compiled pick draws what Generator.integers(sizes) draws, rejections included."""
    from st_agent.envs import vector_kernels as k

    for seed in range(40):
        sizes = np.random.default_rng(seed).integers(1, 6, 50)
        if seed % 4 == 0:  # large ranges: Lemire rejections happen
            sizes = np.random.default_rng(seed).integers(1, 2 ** 31, 50)
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        a.integers(7, size=seed % 3), b.integers(7, size=seed % 3)  # the uint32 half-buffer
        out = np.zeros(50, dtype=np.int64)
        k.draw_integers(*k.bit_source(b), sizes, out)
        np.testing.assert_array_equal(out, a.integers(sizes))
        np.testing.assert_array_equal(a.integers(1 << 20, size=3), b.integers(1 << 20, size=3))


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_compiled_observations_equal_the_contract_builder():
    from st_agent.envs import vector_kernels as k

    rng = np.random.default_rng(0)
    n, m = 60, 4
    for hl in (0, 2, 4):
        est = rng.uniform(-1.2, 1.2, (n, 2))
        est[rng.random((n, 2)) < 0.2] = np.nan
        hist_est = rng.uniform(-1, 1, (n, m, 2))
        hist_est[rng.random((n, m, 2)) < 0.3] = np.nan
        hist_knobs = rng.uniform(0, 1, (n, m, 3))
        knobs, nominal = rng.uniform(0, 1, (n, 3)), rng.uniform(-1, 1, (n, 2))
        lo = rng.uniform(-1, 0.5, (n, 2))
        region = np.stack([lo[:, 0], lo[:, 0] + 0.3, lo[:, 1], lo[:, 1] + 0.5], axis=-1)
        conf = rng.uniform(0, 1, n)
        conf[::7] = np.nan
        count = rng.integers(0, m + 1, n)
        want = build_observations(est, nominal, knobs, conf, hist_est, hist_knobs, count, hl,
                                  region)
        got = np.zeros_like(want)
        P, S = np.zeros((n, k.N_P)), np.zeros((n, k.N_S))
        k.reset_outputs(np.arange(n), P, S, np.ones(2), True, np.zeros(n), est, nominal,
                        knobs, conf, hist_est, hist_knobs, count, hl, region, got)
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_numba_is_not_imported_by_the_cli_or_the_env_module():
    import subprocess
    import sys

    code = ("import sys, st_agent.cli, st_agent.envs.vector; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickled_env_steps_like_the_original(bank, backend):
    import pickle

    venv = VecClosedLoopEnv(5, seed=2, backend=backend, phrase_bank=bank, max_steps=4)
    venv.reset()
    twin = pickle.loads(pickle.dumps(venv))
    assert twin.backend == venv.backend
    acts = np.random.default_rng(1).uniform(-1, 1, (6, 5, 3))
    for t in range(6):
        oa, ra, da, _ = venv.step(acts[t])
        ob, rb, db, _ = twin.step(acts[t])
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)
