"""``--backend rllib`` without Ray, its option checks, and the env RLlib trains on.

These run everywhere (the main .venv has no Ray); the training tests that need Ray are
in tests/test_rllib.py (run with ``.venv-rllib``, see README).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from st_agent.cli import main
from st_agent.envs.gym_vector import GymVecClosedLoopEnv
from st_agent.envs.vector import VecClosedLoopEnv
from st_agent.errors import EXIT_DEVICE, EXIT_USAGE
from st_agent.policies.config import TrainConfig, TrainJamConfig
from st_agent.policies.rllib_backend import (
    INSTALL_HINT,
    RLlibMissing,
    check_backend_settings,
    require_ray,
)


def _hide_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture,
                                                        tmp_path) -> None:
    _hide_ray(monkeypatch)
    with pytest.raises(RLlibMissing, match=r"setup_rllib\.sh"):
        require_ray()
    for cmd in ("train", "train-jam"):
        code = main([cmd, "--backend", "rllib", "--runs-dir", str(tmp_path), "--name", "x"])
        err = capsys.readouterr().err
        assert code == EXIT_DEVICE, err
        assert "needs Ray RLlib" in err and "scripts/setup_rllib.sh" in err
        assert "gymnasium==1.2.2" in err
    assert not (tmp_path / "x").exists()
    assert "ray[rllib]==2.60.0" in INSTALL_HINT


@pytest.mark.parametrize(("args", "match"), [
    (("--backend", "tf"), "--backend must be one of ['sb3', 'rllib'], got 'tf'"),
    (("--backend", "rllib", "--num-env-runners", "-1"), "--num-env-runners must be an int"),
    (("--backend", "rllib", "--num-env-runners", "9", "--n-envs", "8"),
     "--num-env-runners 9 is more than --n-envs 8"),
])
def test_bad_backend_options_are_named(args: tuple[str, ...], match: str,
                                       capsys: pytest.CaptureFixture, tmp_path) -> None:
    code = main(["train", "--runs-dir", str(tmp_path), "--name", "x", *args])
    assert code == EXIT_USAGE
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_policy_mapping_is_checked(capsys: pytest.CaptureFixture, tmp_path) -> None:
    code = main(["train-jam", "--backend", "rllib", "--policy-mapping", "each",
                 "--runs-dir", str(tmp_path), "--name", "x"])
    assert code == EXIT_USAGE
    assert "--policy-mapping must be one of ['shared', 'per-performer'], got 'each'" in \
        capsys.readouterr().err


def test_configs_default_to_sb3() -> None:
    assert TrainConfig().backend == TrainJamConfig().backend == "sb3"
    assert TrainJamConfig().policy_mapping == "shared"
    check_backend_settings("sb3", 0, "")
    with pytest.raises(ValueError, match="--address must be a string"):
        check_backend_settings("rllib", 0, 3)  # type: ignore[arg-type]


def test_gym_vector_view_is_the_sb3_env_with_next_step_autoreset() -> None:
    kw = {"target": "calm", "max_steps": 4}
    sb3 = VecClosedLoopEnv(3, seed=5, infos=False, **kw)
    gym_env = GymVecClosedLoopEnv(3, seed=5, **kw)
    o_ref = sb3.reset()
    o, info = gym_env.reset()
    assert info == {} and gym_env.observation_space.shape == (3, o_ref.shape[1])
    np.testing.assert_array_equal(o, o_ref)
    rng = np.random.default_rng(0)
    for _episode in range(2):
        for t in range(4):
            a = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
            sb3.step_async(a)
            o_ref, r_ref, d_ref, infos = sb3.step_wait()
            o, r, term, trunc, _ = gym_env.step(a)
            assert not term.any()
            np.testing.assert_allclose(r, r_ref)
            if t < 3:
                np.testing.assert_array_equal(o, o_ref)
                assert not trunc.any() and not d_ref.any()
            else:  # the last phrase: terminal obs now, the new episode's first obs next step
                assert trunc.all() and d_ref.all()
                last = np.stack([i["terminal_observation"] for i in infos])
                np.testing.assert_array_equal(o, last)
                o2, r2, term2, trunc2, _ = gym_env.step(a)  # action ignored
                np.testing.assert_array_equal(o2, o_ref)
                assert not (r2.any() or term2.any() or trunc2.any())
    gym_env.close()
