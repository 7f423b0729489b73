"""Malicious and corrupt policy / model files fail at load with typed errors (issue 22).

Valid files are copies of the shipped ones (``policies/assets/calm`` holds the legacy
single-listener PPO policy, ``policies/assets/jam3`` the jam ensemble), corrupted one
field or tensor at a time.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from st_agent.contract import TARGET_PRESETS, SafetyBounds
from st_agent.errors import EXIT_DATA, DataError, UsageError
from st_agent.listener.fitting import ListenerFileError, load_fit
from st_agent.listener.model import ListenerParams
from st_agent.policies import controllers, loading
from st_agent.policies.controllers import (
    adaptive_for,
    constant_for,
    make_controller,
    make_jam_controller,
    pid_for,
    session_policies,
    shipped_controllers,
)
from st_agent.policies.jam import (
    JAM_POLICY_FORMAT,
    bundled_jam_policies,
    combine_jam_policies,
    load_jam_policy,
)
from st_agent.policies.loading import (
    BUNDLED_DIR,
    PolicyEnsemble,
    TrainedPolicy,
    bundled_policies,
    load_bundled_policy,
    load_policy,
)
from st_agent.policies.response import N_REG
from st_agent.policies.schema import PolicyFileError, PolicyFileMissing

CALM = BUNDLED_DIR / "calm"
JAM3 = BUNDLED_DIR / "jam3"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A copy of the shipped single-listener PPO policy (policy.json + .safetensors)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("policy.json", "policy.safetensors"):
        shutil.copy(CALM / name, out / name)
    return out


def edit_json(folder: Path, change: Any, name: str = "policy.json") -> None:
    """Apply ``change(doc)`` to ``folder/name`` (NaN written as the JSON literal NaN)."""
    path = folder / name
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def edit_weights(folder: Path, change: Any) -> None:
    """Apply ``change(state)`` to the tensors of ``folder/policy.safetensors``."""
    path = folder / "policy.safetensors"
    state = dict(load_file(str(path)))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def jam_v1(tmp_path: Path) -> Path:
    """Member 0 of the shipped jam3 ensemble as a version 1 (one network) jam policy."""
    doc = json.loads((JAM3 / "policy.json").read_text(encoding="utf-8"))
    member = dict(doc["members"][0])
    member.pop("source")
    out = tmp_path / "jam1"
    out.mkdir()
    (out / "policy.json").write_text(json.dumps(
        {"format": JAM_POLICY_FORMAT, "version": 1, **member}), encoding="utf-8")
    state = {k.removeprefix("member0/"): v for k, v in load_file(str(JAM3 / "policy.safetensors"))
             .items() if k.startswith("member0/")}
    save_file(state, str(out / "policy.safetensors"))
    return out


# --------------------------------------------------------------------------- shipped files


def test_every_shipped_policy_and_setting_loads():
    assert bundled_policies() == ["calm"]
    assert bundled_jam_policies() == ["jam3"]
    calm = load_bundled_policy("calm")
    assert isinstance(calm, TrainedPolicy) and calm.obs_size == 26
    jam = load_jam_policy("jam3")
    assert isinstance(jam, PolicyEnsemble) and len(jam.members) == 6
    assert np.all(np.isfinite(jam.predict(np.zeros((3, jam.obs_size), np.float32))[0]))
    bounds = SafetyBounds()
    for target in TARGET_PRESETS:
        assert pid_for(target).kp >= 0
        constant_for(target, bounds)
        adaptive_for(target, bounds)
    assert shipped_controllers() == sorted(TARGET_PRESETS)
    for name in session_policies():
        ctrl, desc = make_controller(name, bounds)
        assert ctrl is not None and desc


def test_loaded_policy_predicts_like_before(run):
    obs = np.asarray(load_bundled_policy("calm").obs_mean, dtype=np.float32)
    a = load_policy(run).predict(obs)[0]
    assert a.shape == (3,) and np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(a, load_bundled_policy("calm").predict(obs)[0])


def test_half_precision_weights_are_part_of_the_format(run):
    edit_weights(run, lambda s: s.update({k: v.to(torch.bfloat16) for k, v in s.items()}))
    assert load_policy(run).obs_size == 26
    edit_weights(run, lambda s: s.update({k: v.to(torch.float16) for k, v in s.items()}))
    assert load_policy(run).obs_size == 26


def test_schema_constant_matches_the_response_model():
    from st_agent.policies.response import BASIS_NAMES

    assert N_REG == 2 + len(BASIS_NAMES)
    assert controllers.JAM_POLICY_FORMAT == JAM_POLICY_FORMAT


# --------------------------------------------------------------------------- policy.json


def test_huge_history_len_is_refused_before_any_allocation(run, monkeypatch):
    edit_json(run, lambda d: d.update(history_len=1_000_000_000))

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a network was built from an invalid policy.json")

    monkeypatch.setattr(loading, "ActorCriticPolicy", no_network)
    tracemalloc.start()
    try:
        with pytest.raises(PolicyFileError) as info:
            load_policy(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "policy.json" in msg and "history_len" in msg and "1000000000" in msg
    assert "less than or equal to 64" in msg
    assert peak < 50 * 2 ** 20
    assert info.value.exit_code == EXIT_DATA and isinstance(info.value, ValueError)


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d["obs_mean"].__setitem__(3, float("nan")), ["obs_mean[3]", "finite"]),
    (lambda d: d["obs_var"].__setitem__(5, -0.5),
     ["obs_var[5]", "-0.5", "greater than or equal to 0"]),
    (lambda d: d["obs_var"].__setitem__(0, float("inf")), ["obs_var[0]", "finite"]),
    (lambda d: d.update(clip_obs=float("nan")), ["clip_obs", "finite"]),
    (lambda d: d.update(clip_obs=0.0), ["clip_obs", "greater than 0"]),
    (lambda d: d.update(epsilon=-1.0), ["epsilon", "greater than 0"]),
    (lambda d: d.update(obs_mean=d["obs_mean"][:-1]), ["obs_mean has 25 entries; expected 26"]),
    (lambda d: d.update(obs_var=d["obs_var"] + [1.0]), ["obs_var has 27 entries; expected 26"]),
    (lambda d: d.update(history_len=True), ["history_len", "valid integer"]),
    (lambda d: d.update(history_len=3.0), ["history_len", "valid integer"]),
    (lambda d: d.update(history_len=-1), ["history_len", "greater than or equal to 0"]),
    (lambda d: d.update(net_arch=[64, 0]), ["net_arch[1]", "greater than or equal to 1"]),
    (lambda d: d.update(net_arch=[64] * 9), ["net_arch", "at most 8"]),
    (lambda d: d.update(net_arch="64"), ["net_arch", "valid list"]),
    (lambda d: d.pop("obs_var"), ["field obs_var is missing"]),
    (lambda d: d.update(obs_mean=[str(x) for x in d["obs_mean"]]), ["obs_mean[0]", "number"]),
])
def test_bad_policy_json_fields_name_file_field_value_and_range(run, change, words):
    edit_json(run, change)
    with pytest.raises(PolicyFileError) as info:
        load_policy(run)
    msg = str(info.value)
    assert str(run / "policy.json") in msg
    for w in words:
        assert w in msg


def test_network_too_large_for_the_budget_is_refused_before_building(run, monkeypatch):
    monkeypatch.setattr(loading, "ActorCriticPolicy", None)  # building it would fail
    edit_json(run, lambda d: d.update(net_arch=[1024] * 8))
    with pytest.raises(PolicyFileError, match=r"parameters; at most 4194304"):
        load_policy(run)


@pytest.mark.parametrize(("text", "words"), [
    ("{", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON"),
    ('{"format": "st-agent-ppo-policy", "version": 1, "history_len": 1' + "0" * 5000 + "}",
     "JSON"),
    ("[1, 2, 3]", "is not an st-agent-ppo-policy version 1 file (it has a JSON list)"),
    ('{"format": "st-agent-ppo-policy", "version": 2}', "(it has version 2)"),
])
def test_malformed_json_is_a_typed_error(run, text, words):
    (run / "policy.json").write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError, match=r"policy.json") as info:
        load_policy(run)
    assert words in str(info.value)


def test_non_utf8_and_oversized_json_are_refused(run):
    (run / "policy.json").write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(PolicyFileError, match=r"not UTF-8"):
        load_policy(run)
    with (run / "policy.json").open("wb") as fh:  # sparse: 5 GB that are never read
        fh.truncate(5 * 2 ** 30)
    with pytest.raises(PolicyFileError, match=r"5368709120 bytes, more than"):
        load_policy(run)


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize(("value", "words"), [
    (float("nan"), "non-finite values (nan"),
    (float("inf"), "non-finite values (inf"),
    (3e38, "outside the allowed [-10000, 10000]"),
])
def test_non_finite_or_absurd_weights_fail_at_load(run, value, words):
    def poison(state: dict[str, torch.Tensor]) -> None:
        state["mlp_extractor.policy_net.2.weight"][7, 3] = value

    edit_weights(run, poison)
    with pytest.raises(PolicyFileError, match=r"mlp_extractor.policy_net.2.weight") as info:
        load_policy(run)
    assert words in str(info.value) and "policy.safetensors" in str(info.value)


def test_log_std_out_of_range_fails_at_load(run):
    edit_weights(run, lambda s: s.update(log_std=torch.full((3,), -200.0)))
    with pytest.raises(PolicyFileError, match=r"'log_std' holds -200, outside the allowed"):
        load_policy(run)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.float64,
                                   torch.bool])
def test_weights_of_other_dtypes_are_refused(run, dtype):
    edit_weights(run, lambda s: s.update({k: v.to(dtype) for k, v in s.items()}))
    with pytest.raises(PolicyFileError, match=r"has dtype .*; policy weights must be one of "
                                              r"\['BF16', 'F16', 'F32'\]"):
        load_policy(run)


def test_missing_extra_and_misshaped_tensors_are_named(run):
    edit_weights(run, lambda s: s.pop("log_std"))
    with pytest.raises(PolicyFileError, match=r"missing tensors \['log_std'\]"):
        load_policy(run)
    shutil.copy(CALM / "policy.safetensors", run / "policy.safetensors")
    edit_weights(run, lambda s: s.update(extra=torch.zeros(2)))
    with pytest.raises(PolicyFileError, match=r"unexpected tensors \['extra'\]"):
        load_policy(run)
    shutil.copy(CALM / "policy.safetensors", run / "policy.safetensors")
    edit_weights(run, lambda s: s.update({"action_net.weight": torch.zeros(3, 65)}))
    with pytest.raises(PolicyFileError, match=r"'action_net.weight' has shape \(3, 65\); "
                                              r"policy.json's sizes need \(3, 64\)"):
        load_policy(run)


def test_weights_that_do_not_match_a_changed_config_are_refused(run):
    edit_json(run, lambda d: d.update(history_len=4, obs_mean=d["obs_mean"] + [0.0] * 5,
                                      obs_var=d["obs_var"] + [1.0] * 5))
    with pytest.raises(PolicyFileError, match=r"has shape \(64, 26\); .* need \(64, 31\)"):
        load_policy(run)


def test_weights_symlinked_to_dev_zero_say_what_the_path_is(run):
    st = run / "policy.safetensors"
    st.unlink()
    st.symlink_to("/dev/zero")
    with pytest.raises(PolicyFileError) as info:
        load_policy(run)
    msg = str(info.value)
    assert "is a character device (a symlink to /dev/zero); expected a regular " \
           ".safetensors file" in msg
    assert "does not exist" not in msg and not isinstance(info.value, FileNotFoundError)


def test_directory_fifo_and_broken_link_given_as_weights(run):
    st = run / "policy.safetensors"
    st.unlink()
    st.mkdir()
    with pytest.raises(PolicyFileError, match=r"policy.safetensors is a directory; expected a "
                                              "regular .safetensors file"):
        load_policy(run)
    st.rmdir()
    os.mkfifo(st)  # opening it would block: it must never be opened
    with pytest.raises(PolicyFileError, match=r"is a FIFO \(named pipe\); expected"):
        load_policy(run)
    st.unlink()
    st.symlink_to(run / "nowhere")
    with pytest.raises(PolicyFileMissing, match=r"is a broken symlink to .*nowhere"):
        load_policy(run)
    st.unlink()
    with pytest.raises(FileNotFoundError, match=r"does not exist; .*st-agent train"):
        load_policy(run)


class _Exploit:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_pickle_named_safetensors_is_refused_without_running_it(run, tmp_path):
    marker = tmp_path / "pwned"
    (run / "policy.safetensors").write_bytes(pickle.dumps(_Exploit(marker), protocol=4))
    with pytest.raises(PolicyFileError, match=r"pickle or torch.save archive.*never unpickles"):
        load_policy(run)
    torch.save({"x": _Exploit(marker)}, run / "policy.safetensors")
    with pytest.raises(PolicyFileError, match=r"pickle or torch.save archive"):
        load_policy(run)
    (run / "policy.safetensors").write_bytes(pickle.dumps(_Exploit(marker), protocol=0))
    with pytest.raises(PolicyFileError, match=r"not a safetensors file"):
        load_policy(run)
    assert not marker.exists()


@pytest.mark.parametrize("head", [
    (2 ** 63).to_bytes(8, "little"),
    (100).to_bytes(8, "little") + b"{" * 100,
    (16).to_bytes(8, "little") + b'["not", "a map"]',
    b"\x01\x00",
])
def test_crafted_safetensors_headers_are_refused(run, head):
    (run / "policy.safetensors").write_bytes(head)
    with pytest.raises(PolicyFileError, match=r"policy.safetensors"):
        load_policy(run)


def test_lying_data_offsets_are_refused(run):
    raw = (run / "policy.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["log_std"]["data_offsets"] = [0, 10 ** 12]
    text = json.dumps(header).encode()
    (run / "policy.safetensors").write_bytes(len(text).to_bytes(8, "little") + text
                                             + raw[8 + n:])
    with pytest.raises(PolicyFileError, match=r"'log_std' has data offsets \[0, 1000000000000\]"):
        load_policy(run)


# --------------------------------------------------------------------------- jam policies


def test_jam_policy_v1_and_v2_corruptions(tmp_path):
    one = jam_v1(tmp_path)
    assert load_jam_policy(one).obs_size == 42
    edit_json(one, lambda d: d["obs_var"].__setitem__(2, -1.0))
    with pytest.raises(PolicyFileError, match=r"obs_var\[2\] = -1.0"):
        load_jam_policy(one)
    two = tmp_path / "jam2"
    shutil.copytree(JAM3, two)
    edit_json(two, lambda d: d["members"][4].update(clip_obs=float("nan")))
    with pytest.raises(PolicyFileError, match=r"members\[4\]\.clip_obs = nan"):
        load_jam_policy(two)
    shutil.copy(JAM3 / "policy.json", two / "policy.json")
    edit_json(two, lambda d: d.update(members=d["members"] * 3))
    with pytest.raises(PolicyFileError, match=r"members.*at most 16"):
        load_jam_policy(two)
    shutil.copy(JAM3 / "policy.json", two / "policy.json")
    edit_json(two, lambda d: d.update(members=d["members"][:7] + d["members"][:1]))
    with pytest.raises(PolicyFileError, match=r"missing tensors \['member6/"):
        load_jam_policy(two)
    shutil.copy(JAM3 / "policy.json", two / "policy.json")
    edit_weights(two, lambda s: s["member5/value_net.bias"].fill_(float("nan")))
    with pytest.raises(PolicyFileError, match=r"'member5/value_net.bias' holds non-finite"):
        load_jam_policy(two)


def test_jam_obs_size_must_be_a_jam_observation(tmp_path):
    one = jam_v1(tmp_path)
    edit_json(one, lambda d: d.update(obs_size=43, obs_mean=d["obs_mean"] + [0.0],
                                      obs_var=d["obs_var"] + [1.0]))
    with pytest.raises(PolicyFileError, match=r"field obs_size = 43: 43 observations is not a jam"):
        load_jam_policy(one)
    edit_json(one, lambda d: d.update(obs_size=4000))
    with pytest.raises(PolicyFileError, match=r"obs_mean has 43 entries; expected 4000"):
        load_jam_policy(one)


def test_combine_jam_still_round_trips(tmp_path):
    out = combine_jam_policies([jam_v1(tmp_path), "jam3"], tmp_path / "both")
    both = load_jam_policy(out)
    assert isinstance(both, PolicyEnsemble) and len(both.members) == 7


def test_single_listener_policy_given_to_jam_and_jam_to_policy_loader(run, tmp_path):
    with pytest.raises(PolicyFileError, match=r"is not an st-agent-jam-policy version 1 or 2"):
        load_jam_policy(run)
    with pytest.raises(PolicyFileError, match=r"not an st-agent-ppo-policy .* `st-agent jam`"):
        load_policy(JAM3)


# --------------------------------------------------------------------------- sessions


def test_jam3_is_not_offered_to_a_session_and_points_to_st_agent_jam(tmp_path):
    assert "jam3" not in session_policies() and "jam3" not in bundled_policies()
    bounds = SafetyBounds()
    with pytest.raises(UsageError, match=r"'jam3' is a jam policy .*`st-agent jam --policy "
                                         "jam3`"):
        make_controller("jam3", bounds)
    with pytest.raises(UsageError, match=r"is a jam policy"):
        make_controller(str(jam_v1(tmp_path)), bounds)
    with pytest.raises(UsageError, match=r"unknown policy 'nope'") as info:
        make_controller("nope", bounds)
    assert "jam3" not in str(info.value)
    with pytest.raises(PolicyFileError, match=r"no bundled policy 'jam3'.*jam-policy"):
        load_bundled_policy("jam3")
    assert make_jam_controller("jam3", 3).history_len == 3  # where it does work
    with pytest.raises(UsageError, match=r"unknown jam policy 'nope'"):
        make_jam_controller("nope", 3)


def test_session_loads_a_checked_ppo_run_folder(run):
    edit_json(run, lambda d: d.update(obs_mean=d["obs_mean"][:3]))
    with pytest.raises(PolicyFileError, match=r"obs_mean has 3 entries"):
        make_controller(str(run), SafetyBounds())


# --------------------------------------------------------------------------- shipped settings


@pytest.fixture
def assets(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped assets that the controllers read instead."""
    out = tmp_path / "assets"
    shutil.copytree(BUNDLED_DIR, out, ignore=shutil.ignore_patterns("*.safetensors"))
    monkeypatch.setattr(controllers, "BUNDLED_DIR", out)
    return out


@pytest.mark.parametrize(("sub", "change", "words"), [
    ("pid", lambda d: d.update(kp=float("nan")), "field kp = nan"),
    ("pid", lambda d: d.update(kd=-1.0), "field kd = -1.0: Input should be greater than or "
                                         "equal to 0"),
    ("pid", lambda d: d.pop("ki"), "field ki is missing"),
    ("constant", lambda d: d.update(knobs=[2.0, 0.5, 0.5]), "field knobs[0] = 2.0"),
    ("constant", lambda d: d.update(knobs=[0.5]), "field knobs"),
    ("adaptive", lambda d: d["config"].update(grid=1_000_000), "field config.grid = 1000000: "
                                                               "Input should be less than or "
                                                               "equal to 11"),
    ("adaptive", lambda d: d["config"].update(horizon=10 ** 9), "config.horizon"),
    ("adaptive", lambda d: d["config"].update(guard_margin=float("nan")), "config.guard_margin"),
    ("adaptive", lambda d: d["config"].update(surprise=1), "config.surprise"),
    ("adaptive", lambda d: d["prior"]["mean"][1].__setitem__(4, float("nan")),
     "field prior.mean[1][4] = nan"),
    ("adaptive", lambda d: d["prior"]["cov"][0].pop(), "field prior.cov[0]"),
    ("adaptive", lambda d: d["prior"].update(noise_var=[0.1, 0.0]),
     "field prior.noise_var[1] = 0.0"),
    ("adaptive", lambda d: d["prior"].update(basis=["a"] * 7), "field prior: not a"),
])
def test_corrupt_shipped_settings_are_typed_errors(assets, sub, change, words):
    edit_json(assets / sub, change, "calm.json")
    load = {"pid": lambda: pid_for("calm"),
            "constant": lambda: constant_for("calm", SafetyBounds()),
            "adaptive": lambda: adaptive_for("calm", SafetyBounds())}[sub]
    with pytest.raises(PolicyFileError) as info:
        load()
    assert str(assets / sub / "calm.json") in str(info.value) and words in str(info.value)


def test_controller_manifest_is_validated(assets):
    edit_json(assets / "calm", lambda d: d.update(kind="residual", run="../../../etc"),
              "controller.json")
    with pytest.raises(PolicyFileError, match=r"field run = '../../../etc'"):
        make_controller("calm", SafetyBounds())
    edit_json(assets / "calm", lambda d: d.update(kind="mystery"), "controller.json")
    with pytest.raises(PolicyFileError, match=r"field kind = 'mystery'"):
        make_controller("calm", SafetyBounds())
    (assets / "calm" / "controller.json").write_text("[]", encoding="utf-8")
    with pytest.raises(PolicyFileError, match=r"is not an st-agent-controller version 1 file"):
        make_controller("calm", SafetyBounds())


# --------------------------------------------------------------------------- listener.json


@pytest.fixture
def listener_file(tmp_path) -> Path:
    path = tmp_path / "listener.json"
    path.write_text(json.dumps({"format": "st-agent-listener", "version": 1,
                                "params": ListenerParams().as_dict(),
                                "heldout_r2": float("nan")}), encoding="utf-8")
    return path


def test_listener_file_round_trip_and_typed_errors(listener_file):
    assert load_fit(listener_file) == ListenerParams()
    cases = [
        (lambda d: d["params"].update(tau_arousal_sec=float("nan")),
         "tau_arousal_sec must be in [5, 120]"),
        (lambda d: d["params"].update(tau_arousal_sec=1e9), "got 1000000000.0"),
        (lambda d: d["params"].update(tau_arousal_sec="20"), "tau_arousal_sec must be a number"),
        (lambda d: d["params"].update(mystery=1.0), "unknown listener parameters ['mystery']"),
        (lambda d: d["params"].update(family="quantum"), "quantum"),
        (lambda d: d.update(params=[1, 2]), "field params = [1, 2]"),
        (lambda d: d.update(version=2), "is not an st-agent-listener version 1 file"),
    ]
    good = listener_file.read_text(encoding="utf-8")
    for change, words in cases:
        listener_file.write_text(good, encoding="utf-8")
        edit_json(listener_file.parent, change, listener_file.name)
        with pytest.raises(ListenerFileError) as info:
            load_fit(listener_file)
        assert str(listener_file) in str(info.value) and words in str(info.value)
        assert isinstance(info.value, DataError)


def test_listener_file_that_is_a_device_or_folder(tmp_path):
    from st_agent.envs.closed_loop import load_listener_file

    link = tmp_path / "listener.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(ListenerFileError, match=r"character device \(a symlink to /dev/zero\); "
                                                "expected a regular listener.json file"):
        load_listener_file(link)
    link.unlink()
    link.mkdir()
    with pytest.raises(ListenerFileError, match=r"is a directory"):
        load_fit(link)
    with pytest.raises(FileNotFoundError):
        load_listener_file(tmp_path / "none.json")


# --------------------------------------------------------------------------- residual PPO


@pytest.fixture
def residual_run(tmp_path) -> Path:
    """A residual PPO run folder written by hand (small random weights, shipped prior)."""
    from dataclasses import asdict

    from st_agent.contract import OBS_SIZE
    from st_agent.policies.loading import actor_critic_shapes
    from st_agent.policies.residual import EXTRA_SIZE, RESIDUAL_FORMAT, ResidualConfig

    n = OBS_SIZE + EXTRA_SIZE
    shipped = json.loads((BUNDLED_DIR / "adaptive" / "calm.json").read_text(encoding="utf-8"))
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ResidualConfig()).items()}
    out = tmp_path / "residual"
    out.mkdir()
    (out / "policy.json").write_text(json.dumps(
        {"format": RESIDUAL_FORMAT, "version": 1, "step": 0, "config": cfg, "obs_size": n,
         "obs_mean": [0.0] * n, "obs_var": [1.0] * n, "clip_obs": 10.0, "epsilon": 1e-8,
         "prior": shipped["prior"], "adaptive": shipped["config"]}), encoding="utf-8")
    gen = torch.Generator().manual_seed(0)
    save_file({k: 0.1 * torch.randn(s, generator=gen)
               for k, s in actor_critic_shapes(n, [64, 64]).items()},
              str(out / "policy.safetensors"))
    return out


def test_residual_run_is_validated_like_the_others(residual_run):
    from st_agent.contract import build_observation
    from st_agent.policies.residual import load_residual
    from st_agent.types import Knobs

    ctrl = load_residual(residual_run, SafetyBounds())
    a, _ = ctrl.predict(build_observation((0.3, 0.2), (0.2, -0.5), Knobs(0.5, 0.5, 0.5)))
    assert a.shape == (3,) and np.all(np.abs(a) <= 1)
    assert "residual" in make_controller(str(residual_run), SafetyBounds())[1]
    good = (residual_run / "policy.json").read_text(encoding="utf-8")
    cases = [
        (lambda d: d.update(obs_size=10 ** 9), "field obs_size = 1000000000"),
        (lambda d: d["config"].update(net_arch=[10 ** 9]), "field config.net_arch[0]"),
        (lambda d: d["config"].update(scale=float("nan")), "field config.scale = nan"),
        (lambda d: d["adaptive"].update(grid=10 ** 6), "field adaptive.grid"),
        (lambda d: d["prior"]["noise_var"].__setitem__(0, -1.0), "field prior.noise_var[0]"),
        (lambda d: d["obs_var"].__setitem__(9, -1.0), "field obs_var[9] = -1.0"),
        (lambda d: d["config"].update(surprise=1), "field config: "),
    ]
    for change, words in cases:
        (residual_run / "policy.json").write_text(good, encoding="utf-8")
        edit_json(residual_run, change)
        with pytest.raises(PolicyFileError) as info:
            load_residual(residual_run)
        assert words in str(info.value), str(info.value)
    (residual_run / "policy.json").write_text(good, encoding="utf-8")
    edit_weights(residual_run, lambda s: s["value_net.bias"].fill_(float("inf")))
    with pytest.raises(PolicyFileError, match=r"'value_net.bias' holds non-finite"):
        load_residual(residual_run)
