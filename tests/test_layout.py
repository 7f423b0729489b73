"""The package layout: a light command line and import names that collide with nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from st_agent.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mne", "brainflow", "stable_baselines3")


def _run_python(code: str, cwd: Path, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_help_and_argument_errors_import_nothing_heavy(tmp_path: Path):
    # Each command's --help, a bad option and a bad value, all in one fresh interpreter.
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        import st_agent.cli as cli
        after_import = [m for m in {HEAVY!r} if m in sys.modules]
        codes = {{}}
        for c in cli.COMMANDS:
            with contextlib.redirect_stdout(io.StringIO()), \\
                    contextlib.redirect_stderr(io.StringIO()):
                codes[c.name] = [cli.main([c.name, "--help"]),
                                 cli.main([c.name, "--no-such-option"])]
        with contextlib.redirect_stderr(io.StringIO()):
            codes["bad-knob"] = [cli.main(["generate", "--energy", "1.5"])]
            codes["unknown"] = [cli.main(["no-such-command"])]
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"after_import": after_import, "heavy": heavy, "codes": codes}}))
    """)
    r = _run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["after_import"] == [] and out["heavy"] == []
    assert {name: c for name, c in out["codes"].items()} == {
        **{c.name: [0, 2] for c in COMMANDS}, "bad-knob": [2], "unknown": [2]}


def test_top_level_help_version_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c.name in text for c in COMMANDS) and "--version" in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("st-agent ")
    assert main(["genrate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'genrate'" in err and "did you mean 'generate'" in err
    assert main([]) == 2


def test_every_command_points_at_real_config_and_handler():
    for c in COMMANDS:
        assert isinstance(c.load_config(), type), c.name
        assert callable(c.load_handler()), c.name


def test_gymnasium_make_by_module_id_and_sb3_make_vec_env(tmp_path: Path):
    # No import of st_agent beforehand: Gymnasium imports the module named before ':'.
    code = textwrap.dedent("""
        import gymnasium as gym
        env = gym.make("st_agent.envs:SonicTelegram/ClosedLoop-v0")
        obs, info = env.reset(seed=0)
        print(type(env.unwrapped).__name__, obs.shape)
    """)
    r = _run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == "ClosedLoopEnv"


@pytest.mark.slow
def test_installed_wheel_coexists_with_packages_named_tokenizer_and_envs(tmp_path: Path):
    """A real install (wheel) beside other distributions called ``tokenizer`` and ``envs``."""
    wheels, site, other = tmp_path / "wheels", tmp_path / "site", tmp_path / "other"
    # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".*_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("sonic_telegram_agent-*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("tokenizer", "envs", "policies"):
        (other / name).mkdir(parents=True)
        (other / name / "__init__.py").write_text(f"WHO = 'the other {name}'\n")
    code = textwrap.dedent("""
        import envs, policies, tokenizer
        import st_agent, st_agent.envs, st_agent.policies.loading, st_agent.tokenizer.bpe
        print(tokenizer.WHO, envs.WHO, policies.WHO, sep="|")
        print(st_agent.__file__)
        print(st_agent.policies.loading.bundled_policies())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(other)])}
    r = _run_python(code, tmp_path, env)
    assert r.returncode == 0, r.stderr[-3000:]
    who, where, bundled = r.stdout.strip().splitlines()[-3:]
    assert who == "the other tokenizer|the other envs|the other policies"
    assert Path(where).is_relative_to(site)
    assert "calm" in bundled
    assert (site / "st_agent" / "music" / "assets" / "composer" / "model.safetensors").is_file()
