"""``st-agent transition``: calibration, planning at equal audio-feature steps, candidate
choice, and the whole command against a straight jump."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from st_agent.cli import main
from st_agent.music.audio_features import AudioFeatures, feature_coordinates
from st_agent.music.piece_config import TransitionConfig
from st_agent.music.transition import Calibration, calibrate, largest_step, plan_path, play_path
from st_agent.types import Knobs


@dataclass
class _Heard:
    """What the transition functions read of a played phrase."""

    knobs: Knobs
    audio: AudioFeatures
    seed: int
    info: dict = field(default_factory=dict)


class _KnownAudio:
    """A player whose audio is a known function of the knobs: loudness rises with energy
    and jumps by 6 LU at energy 0.4, and the seed adds a known offset (1 LU per seed
    mod 3, when ``seed_offset``). It stands in for the composer so that the planner is
    tested on a known answer."""

    def __init__(self, seed_offset: bool = True) -> None:
        self.calls: list[tuple[Knobs, int]] = []
        self.seed_offset = seed_offset

    def play(self, knobs: Knobs, seed: int, context: object = None) -> _Heard:
        self.calls.append((knobs, seed))
        lufs = -40 + 10 * knobs.energy + (6.0 if knobs.energy >= 0.4 else 0.0) \
            + (seed % 3 if self.seed_offset else 0)
        return _Heard(knobs, AudioFeatures(lufs, lufs, 800.0, 0.1, 2.0, 8.0), seed)


def test_calibration_bisects_toward_the_sudden_change() -> None:
    player = _KnownAudio(seed_offset=False)
    cal = calibrate(player, Knobs(0.5, 0.5, 0.0), Knobs(0.5, 0.5, 1.0), points=7, seeds=1,
                    seed=0)
    assert cal.u[0] == 0.0 and cal.u[-1] == 1.0 and len(cal.u) == 7
    # the jump at energy 0.4 lies between two measured points at most 1/16 apart
    i = int(np.searchsorted(cal.u, 0.4))
    assert cal.u[i] - cal.u[i - 1] <= 1 / 16 + 1e-12
    assert len(player.calls) == 7


def test_plan_steps_are_equal_in_predicted_feature_space() -> None:
    u = np.array([0.0, 0.5, 1.0])
    coords = np.array([[0.0, 0, 0, 0], [3.0, 0, 0, 0], [4.0, 0, 0, 0]])  # fast, then slow
    cal = Calibration(u, coords, coords)
    start, end = Knobs(0.5, 0.5, 0.1), Knobs(0.5, 0.5, 0.9)  # 16 beats at 105 BPM = 9.14 s
    pos, pred = plan_path(cal, start, end, total_sec=9 * 9.142857)
    assert pos[0] == 0.0 and pos[-1] == 1.0 and len(pos) == 9
    steps = np.linalg.norm(np.diff(pred, axis=0), axis=1)
    np.testing.assert_allclose(steps, 4.0 / 8)  # path length 4 in 8 equal steps
    assert largest_step(pred) == pytest.approx(0.5)
    assert np.all(np.diff(pos[pos <= 0.5]) < np.diff(pos[pos >= 0.5]).min())  # denser early


def test_plan_of_a_flat_path_is_even_and_keeps_two_phrases() -> None:
    cal = Calibration(np.array([0.0, 1.0]), np.zeros((2, 4)), np.zeros((2, 4)))
    pos, _ = plan_path(cal, Knobs(0.5, 0.0, 0.5), Knobs(0.5, 0.0, 0.5), total_sec=1.0)
    np.testing.assert_allclose(pos, [0.0, 1.0])


def test_play_path_picks_the_candidate_nearest_the_plan() -> None:
    player = _KnownAudio()
    knobs = [Knobs(0.5, 0.5, 0.2)] * 3
    target_lufs = -40 + 2 + 2  # the seed offset 2 (seed % 3 == 2) matches the plan
    target = feature_coordinates(AudioFeatures(target_lufs, 0, 800.0, 0.1, 2.0, 8.0))
    played = play_path(player, knobs, np.tile(target, (3, 1)), candidates=3, seed=0)
    assert [p.seed % 3 for p in played] == [2, 2, 2]
    assert [p.info["step"] for p in played] == [0.0, 0.0, 0.0]
    assert played[0].info["explanation"] == "first phrase"
    assert played[1].info["explanation"] == "no audible change"


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(ValueError, match=r"'sleepy' is neither a preset .*calm"):
        TransitionConfig(from_="sleepy")
    with pytest.raises(ValueError, match="three knob values"):
        TransitionConfig(to="0.2,1.5,0.1")
    TransitionConfig(from_="0.6,0.1,0.1", to="energize")


def test_cli_unknown_preset_exits_with_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["transition", "--from", "sleepy"]) == 2
    assert "calm" in capsys.readouterr().err


@pytest.mark.slow
def test_transition_end_to_end_steps_less_than_a_jump(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tr"
    code = main(["transition", "--from", "calm", "--to", "focus", "--minutes", "0.6",
                 "--out", str(out), "--candidates", "1", "--calibration-points", "3",
                 "--calibration-seeds", "1"])
    assert code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["phrases"] >= 3
    assert s["max_step_planned"] < s["max_step_direct"]
    phrases = json.loads((out / "phrases.json").read_text())["planned"]
    assert [phrases[0]["knobs"][k] for k in ("valence", "tempo", "energy")] == \
        pytest.approx([0.6, 0.1, 0.1])  # calm's fixed-baseline knobs
    assert [phrases[-1]["knobs"][k] for k in ("valence", "tempo", "energy")] == \
        pytest.approx([0.5, 0.45, 0.4])  # arrives at focus
    assert all(p["explanation"] for p in phrases)
    for name in ("transition.wav", "transition.mid", "transition.abc", "direct.wav",
                 "transition.png"):
        assert (out / name).stat().st_size > 0, name
    assert "straight jump" in capsys.readouterr().out
