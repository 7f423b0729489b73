"""Baselines' predict, a tiny PPO run, safetensors round trip, evaluation of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from st_agent.contract import OBS_SIZE
from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import build_phrase_bank
from st_agent.policies.baselines import FixedPolicy, OraclePolicy, PIDPolicy, RandomPolicy
from st_agent.policies.evaluate import EvaluateConfig, evaluate
from st_agent.policies.loading import load_policy
from st_agent.policies.train import TrainConfig, train


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bank") / "bank.json"
    build_phrase_bank(path, grid=2, per_point=1, seed=0)
    return str(path)


def test_baseline_predict_shapes(bank_path):
    env = ClosedLoopEnv(phrase_bank=bank_path)
    obs, _ = env.reset(seed=0)
    for pol in (RandomPolicy(0), FixedPolicy("calm"), PIDPolicy(), OraclePolicy(env)):
        a, state = pol.predict(obs, deterministic=True)
        assert a.shape == (3,) and a.dtype == np.float32 and state is None
        assert env.action_space.contains(a)
    for pol in (RandomPolicy(0), FixedPolicy("focus"), PIDPolicy()):
        a, _ = pol.predict(np.zeros((4, OBS_SIZE), np.float32))
        assert a.shape == (4, 3)
    with pytest.raises(ValueError, match="unknown preset 'nap'"):
        FixedPolicy("nap")


def test_tiny_ppo_run_and_safetensors_round_trip(bank_path, tmp_path):
    cfg = TrainConfig(name="tiny", runs_dir=str(tmp_path), phrase_bank=bank_path,
                      total_timesteps=256, n_envs=2, n_steps=64, batch_size=64,
                      n_epochs=2, eval_freq=128, n_eval_listeners=2, checkpoint_freq=128)
    run = train(cfg)
    for name in ("config.json", "policy.safetensors", "policy.json", "eval.jsonl"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("*.safetensors"))
    assert list((run / "tb").rglob("events.out.tfevents*"))
    doc = json.loads((run / "policy.json").read_text())
    assert doc["config"]["total_timesteps"] == 256 and len(doc["obs_mean"]) == OBS_SIZE
    pol = load_policy(run)
    a, _ = pol.predict(np.zeros(OBS_SIZE, np.float32))
    assert a.shape == (3,) and np.all(np.abs(a) <= 1)
    out = tmp_path / "eval"
    res = evaluate(EvaluateConfig(policy=str(run), n_listeners=2, max_steps=4,
                                  phrase_bank=bank_path, holdout="draws",
                                  families=("first_order",), tune_listeners=4,
                                  adaptive_trials=1, n_boot=50, out=str(out),
                                  controllers=("random", "fixed", "pid", "oracle")))
    assert list(res["sets"]["draws"]["controllers"]) == ["random", "fixed", "pid", "oracle",
                                                         str(run)]
    assert (out / "evaluation.png").is_file() and (out / "results.json").is_file()


def test_load_policy_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{}")
    (tmp_path / "policy.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is not an st-agent-ppo-policy"):
        load_policy(tmp_path)


def test_evaluate_rejects_unknown_controller(bank_path):
    with pytest.raises(ValueError, match="unknown controllers"):
        evaluate(EvaluateConfig(controllers=("magic",), phrase_bank=bank_path))
    with pytest.raises(ValueError, match=r"unknown listener family 'nope'"):
        evaluate(EvaluateConfig(families=("nope",), phrase_bank=bank_path))


def test_bundled_calm_policy_loads_without_pickle_and_beats_random(bank_path, monkeypatch):
    import pickle

    from st_agent.policies.evaluate import heldout_listeners, rollout
    from st_agent.policies.loading import bundled_policies, load_bundled_policy

    assert "calm" in bundled_policies()

    def no_pickle(*a, **k):
        raise AssertionError("unpickling while loading a bundled policy")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    pol = load_bundled_policy("calm")
    monkeypatch.undo()

    kw = {"target": "calm", "phrase_bank": bank_path, "max_steps": 16}
    listeners = heldout_listeners(4, seed=0)
    ppo = rollout(lambda env: pol, listeners, kw, seed=0)
    rnd = rollout(lambda env: RandomPolicy(0), listeners, kw, seed=0)
    assert ppo["distance"] < rnd["distance"]
    with pytest.raises(ValueError, match="no bundled policy"):
        load_bundled_policy("nope")


def test_train_and_evaluate_commands_in_a_subprocess(bank_path, tmp_path):
    import subprocess
    import sys

    def st_agent(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "st_agent", *args], capture_output=True,
                              text=True, timeout=600)

    r = st_agent("train", "--name", "cli", "--runs-dir", str(tmp_path), "--phrase-bank",
                 bank_path, "--total-timesteps", "256", "--n-envs", "2", "--n-steps", "64",
                 "--batch-size", "64", "--n-epochs", "1", "--eval-freq", "0",
                 "--checkpoint-freq", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "cli"
    assert (run / "policy.safetensors").is_file() and (run / "config.json").is_file()
    r = st_agent("evaluate", str(run), "--listeners", "2", "--max-steps", "4",
                 "--phrase-bank", bank_path, "--controllers", "random", "pid",
                 "--holdout", "draws", "--families", "first_order", "--tune-listeners", "4",
                 "--adaptive-trials", "1", "--out", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert str(run) in r.stdout and "pid" in r.stdout
    assert (tmp_path / "eval" / "evaluation.png").is_file()
    r = st_agent("evaluate", "--target", "nap", "--phrase-bank", bank_path)
    assert r.returncode == 2 and "unknown target preset 'nap'" in r.stderr
