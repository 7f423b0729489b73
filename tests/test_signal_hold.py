"""A blink's few unusable windows do not hold the knobs; a longer bad run does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from st_agent.live.session import SessionConfig
from st_agent.live.session_types import UsableEstimate
from st_agent.types import EmotionState


def _state(t_sec: float, confidence: float = 0.9, arousal: float = 0.0) -> EmotionState:
    return EmotionState(0.1, arousal, confidence, t_sec)


def test_short_runs_of_unusable_windows_are_bridged_by_the_last_usable_estimate() -> None:
    held = UsableEstimate(hold_sec=2.0, min_confidence=0.2)
    assert not held.ok and held.state is None  # nothing usable yet
    held.update(_state(10.0, arousal=-0.3), bad=False)
    assert held.ok and held.state.arousal == -0.3
    held.update(_state(10.5, arousal=-0.9), bad=True)  # a rejected window (blink)
    held.update(_state(11.0, confidence=0.1), bad=False)  # below min_confidence
    assert held.ok and held.state.t_sec == 10.0  # bridged: 1 s old
    held.update(_state(12.0, confidence=0.1), bad=False)
    assert held.ok  # exactly hold_sec old
    held.update(_state(12.5, confidence=0.1), bad=False)
    assert not held.ok  # 2.5 s of unusable windows: the signal is unusable
    held.update(_state(13.0, confidence=0.5, arousal=0.4), bad=False)
    assert held.ok and held.state.arousal == 0.4


def test_no_hold_makes_the_first_unusable_window_count() -> None:
    held = UsableEstimate(hold_sec=0.0, min_confidence=0.2)
    held.update(_state(1.0), bad=False)
    assert held.ok
    held.update(_state(1.5), bad=True)
    assert not held.ok


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "2"])
def test_bad_hold_is_named(bad) -> None:
    with pytest.raises(ValueError, match="signal_hold_sec must be a number of seconds"):
        SessionConfig(board="virtual", signal_hold_sec=bad)


def _held_for_unusable(folder: Path) -> int:
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return sum(e["kind"] == "decision" and e["payload"]["signal"] == "unusable"
               for e in events)


def test_the_virtual_listeners_blinks_no_longer_hold_decisions(tmp_path: Path) -> None:
    """The same seeded session, with and without the hold: without it, decisions that
    fall on a blink's rejected windows hold the knobs; with it, none does."""
    from st_agent.live.session import run_session
    from st_agent.policies.controllers import make_controller

    held = {}
    for hold in (0.0, 2.0):
        cfg = SessionConfig(board="virtual", accelerated=True, minutes=5.0, calibration_sec=10,
                            record=tmp_path, name=f"hold{hold:g}", report=False,
                            signal_hold_sec=hold, seed=3)
        controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
        res = run_session(cfg, controller, name)
        held[hold] = _held_for_unusable(res.folder)
    assert held[0.0] >= 1, held  # the fault is real on this seed
    assert held[2.0] == 0, held
