"""Ray RLlib backend: tiny local runs whose exported policies act as the RLModules do.

Needs the ``rllib`` extra (``ray[rllib]==2.60.0``, which pins gymnasium 1.2.2), installed in
its own venv: ``bash scripts/setup_rllib.sh && .venv-rllib/bin/python -m pytest
tests/test_rllib*.py``. Without Ray this file is skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray.rllib", reason="needs the rllib extra (ray[rllib]==2.60.0, pins gymnasium==1.2.2): "
    "bash scripts/setup_rllib.sh && .venv-rllib/bin/python -m pytest tests/test_rllib*.py")

import torch  # noqa: E402
from ray import cloudpickle  # noqa: E402
from ray.rllib.core.rl_module.rl_module import RLModule  # noqa: E402
from ray.rllib.utils.filter import MeanStdFilter as RunningFilter  # noqa: E402
from ray.rllib.utils.filter import RunningStat  # noqa: E402

from st_agent.cli import main  # noqa: E402
from st_agent.errors import EXIT_DEVICE  # noqa: E402
from st_agent.policies.config import TrainConfig, TrainJamConfig  # noqa: E402
from st_agent.policies.jam import load_jam_policy  # noqa: E402
from st_agent.policies.loading import load_policy, load_weights  # noqa: E402
from st_agent.policies.rllib_backend import (  # noqa: E402
    RayClusterUnreachable,
    connect_ray,
    export_rllib_checkpoint,
    train_rllib,
)
from st_agent.policies.rllib_jam import train_jam_rllib  # noqa: E402


def test_unreachable_cluster_names_the_fix() -> None:
    # first in the file: connect_ray joins an already started Ray without asking
    import ray as ray_core

    assert not ray_core.is_initialized()
    with pytest.raises(RayClusterUnreachable, match=r"ray start --head") as err:
        connect_ray("127.0.0.1:1")
    assert err.value.exit_code == EXIT_DEVICE and "--address 127.0.0.1:1" in str(err.value)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import ray as ray_core

    root = tmp_path_factory.mktemp("rllib")
    connect_ray("", num_cpus=2)
    yield root
    ray_core.shutdown()


@pytest.fixture(scope="module")
def closed_loop(runs: Path) -> Path:
    cfg = TrainConfig(name="tiny", runs_dir=str(runs), total_timesteps=2048, n_envs=4,
                      n_steps=256, batch_size=256, n_epochs=2, eval_freq=2048,
                      n_eval_listeners=2, checkpoint_freq=1024, backend="rllib")
    return train_rllib(cfg)


def _rllib_actions(ckpt: Path, module_id: str, filter_key: object, obs: np.ndarray
                   ) -> np.ndarray:
    """RLlib's own deterministic action: its filter, its module, its distribution."""
    module = RLModule.from_checkpoint(
        str(ckpt / "learner_group" / "learner" / "rl_module" / module_id))
    piece = next((ckpt / "env_runner" / "env_to_module_connector").glob("*MeanStdFilter*"))
    with (piece / "state.pkl").open("rb") as fh:
        st = cloudpickle.load(fh)[filter_key]
    filt = RunningFilter(st["shape"], demean=st["de_mean_to_zero"], destd=st["de_std_to_one"],
                         clip=st["clip_by_value"])
    filt.running_stats = RunningStat.from_state(st["running_stats"][0])
    z = np.stack([filt(o, update=False) for o in obs.astype(np.float32)])
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(z)})
        dist = module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
        act = dist.to_deterministic().sample().numpy()
    return np.clip(act, -1.0, 1.0)


def _closed_loop_obs(n: int = 64) -> np.ndarray:
    from st_agent.envs.vector import VecClosedLoopEnv

    env = VecClosedLoopEnv(4, seed=11, target="calm", max_steps=8)
    rng = np.random.default_rng(1)
    rows = [env.reset()]
    while sum(len(r) for r in rows) < n:
        env.step_async(rng.uniform(-1, 1, (4, 3)))
        rows.append(env.step_wait()[0])
    obs = np.concatenate(rows)[:n]
    obs[:4] *= 50.0  # far outside the training data: the +-10 clip must agree too
    return obs


def test_tiny_run_exports_the_rlmodule_it_trained(closed_loop: Path, tmp_path: Path) -> None:
    run = closed_loop
    policy = load_policy(run)  # the project's loader: schema, shapes, no pickle
    assert policy.obs_size == 26 and policy.history_len == 3
    assert (run / "eval.jsonl").read_text().count("\n") >= 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[0].startswith("step_")
    obs = _closed_loop_obs()
    ours = policy.predict(obs)[0]
    theirs = _rllib_actions(run / "rllib_checkpoint", "default_policy", None, obs)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.ptp(ours, axis=0).max() > 1e-3  # not a constant action
    # converting the checkpoint again (st-agent export-rllib) gives the same files
    assert main(["export-rllib", str(run / "rllib_checkpoint"), "--out",
                 str(tmp_path / "again")]) == 0
    again = tmp_path / "again"
    shapes = {k: tuple(v.shape) for k, v in policy.policy.state_dict().items()}
    a = load_weights(run / "policy.safetensors", shapes)
    b = load_weights(again.with_suffix(".safetensors"), shapes)
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_allclose(load_policy(again).predict(obs)[0], ours, atol=1e-6)


def test_exported_policy_runs_in_a_session(closed_loop: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    from st_agent.biometrics.recording import read_session

    code = main(["session", "--board", "virtual", "--accelerated", "--minutes", "0.4",
                 "--calibration-sec", "5", "--policy", str(closed_loop), "--record",
                 str(tmp_path), "--name", "rl", "--no-report", "--tempo-range", "0.9", "1.0",
                 "--start-knobs", "0.5", "1.0", "0.5"])
    assert code == 0, capsys.readouterr().err
    events = read_session(tmp_path / "rl").events
    phrases = [e for e in events if e["kind"] == "phrase_start"]
    assert len(phrases) >= 3


@pytest.mark.parametrize("mapping", ["shared", "per-performer"])
def test_jam_multi_agent_run_exports_jam_policies(runs: Path, mapping: str,
                                                    tmp_path: Path) -> None:
    from st_agent.envs.jam import JamEnv

    cfg = TrainJamConfig(name=f"jam_{mapping}", runs_dir=str(runs), performers=2,
                         timesteps=256, n_envs=2, n_steps=64, batch_size=128, n_epochs=1,
                         checkpoint_freq=0, backend="rllib", policy_mapping=mapping)
    run = train_jam_rllib(cfg)
    env = JamEnv(performers=2, max_steps=8)
    obs_d, _ = env.reset(seed=3)
    obs = np.stack([obs_d[a] for a in env.possible_agents])
    for i, agent in enumerate(env.possible_agents):
        module_id = "shared" if mapping == "shared" else agent
        folder = run if mapping == "shared" else run / agent
        policy = load_jam_policy(folder)
        ours = policy.predict(obs[i:i + 1])[0]
        theirs = _rllib_actions(run / "rllib_checkpoint", module_id, module_id, obs[i:i + 1])
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    module_id = "shared" if mapping == "shared" else "performer_1"
    again = export_rllib_checkpoint(run / "rllib_checkpoint", tmp_path / "j", module_id,
                                    module_id, {"format": "st-agent-jam-policy", "version": 1})
    np.testing.assert_allclose(load_jam_policy(again).predict(obs[1:])[0],
                               _rllib_actions(run / "rllib_checkpoint", module_id, module_id,
                                              obs[1:]), atol=1e-5)
    if mapping == "per-performer":
        assert not (run / "policy.json").exists()
        a, b = (load_jam_policy(run / f"performer_{i}") for i in range(2))
        assert not np.allclose(a.predict(obs)[0], b.predict(obs)[0])  # two networks
