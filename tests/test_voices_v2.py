"""Issue 19, remainder: target changes inside a session (planned knob paths), a simulated
listener that hears the audio, and the flux noise floor of describe_change."""

from __future__ import annotations

import json
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.recording import read_session
from st_agent.cli import main
from st_agent.contract import SafetyBounds, resolve_target
from st_agent.listener.features import audio_feature_vector, feature_vector, heard_features
from st_agent.listener.first_order import ListenerParams
from st_agent.listener.virtual import VirtualListenerSource
from st_agent.live.runtime import LiveSession
from st_agent.live.session import SessionConfig
from st_agent.live.target_change import (
    TargetChange,
    TargetSchedule,
    end_knobs,
    parse_target_schedule,
    session_target,
)
from st_agent.music.audio_features import (
    AudioFeatures,
    describe_change,
    feature_coordinates,
    measure_audio,
    quantisation_shift,
)
from st_agent.music.transition import Calibration, plan_steps
from st_agent.policies.controllers import make_controller
from st_agent.types import Knobs, MusicFeatures

SR = 44100


# --------------------------------------------------------------------------- schedule
def test_schedule_parses_seconds_and_minutes() -> None:
    assert parse_target_schedule("focus@10m, energize@900s,calm@1000") == (
        (600.0, "focus"), (900.0, "energize"), (1000.0, "calm"))
    assert parse_target_schedule("") == ()
    t = session_target("calm", "focus@60")
    assert isinstance(t, TargetSchedule)
    assert t.at(59.0) == resolve_target("calm").at(0) and t.at(60.0) == (0.1, 0.2)
    # each entry keeps its own region (calm is one-sided, focus a band)
    assert t.region_at(0.0) == resolve_target("calm").region_at(0.0)
    assert t.region_at(61.0) == resolve_target("focus").region_at(0.0)
    assert session_target("calm") == resolve_target("calm")


@pytest.mark.parametrize(("spec", "match"), [
    ("focus", "is not preset@time"),
    ("bogus@10", "unknown target preset 'bogus'"),
    ("focus@10m,calm@5m", "must be > 0 and increase"),
    ("focus@0", "must be > 0 and increase"),
])
def test_bad_schedules_name_the_entry(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_target_schedule(spec)


def test_bad_schedule_on_the_command_line_is_a_usage_error(capsys: pytest.CaptureFixture
                                                             ) -> None:
    code = main(["session", "--board", "virtual", "--target-schedule", "bogus@10"])
    assert code == 2
    err = re.sub(r"[\s│╭╮╰╯─]+", " ", capsys.readouterr().err)  # tyro boxes long messages
    assert "unknown target preset 'bogus'" in err
    with pytest.raises(ValueError, match="--transition-max-step must be a number > 0"):
        SessionConfig(board="virtual", transition_max_step=0.0)
    with pytest.raises(ValueError, match=r"--listener-hears audio .* needs --board virtual"):
        SessionConfig(board="synthetic", listener_hears="audio")


def test_end_knobs_of_presets_and_points() -> None:
    b = SafetyBounds(energy=(0.0, 0.3))
    assert end_knobs(resolve_target("focus"), b) == Knobs(0.5, 0.45, 0.3)  # clipped
    assert end_knobs(resolve_target((0.3, 0.65)), SafetyBounds()) == Knobs(0.8, 0.95, 0.95)


# --------------------------------------------------------------------------- planner
def test_bounded_plan_keeps_every_step_under_both_limits() -> None:
    u = np.array([0.0, 0.5, 1.0])
    coords = np.array([[0.0, 0, 0, 0], [6.0, 0, 0, 0], [7.0, 0, 0, 0]])  # a jump, then flat
    cal = Calibration(u, coords, coords)
    start, end = Knobs(0.5, 0.5, 0.1), Knobs(0.5, 0.5, 0.9)
    pos, pred = plan_steps(cal, start, end, max_step=1.0, max_knob_step=0.25)
    steps = np.linalg.norm(np.diff(pred, axis=0), axis=1)
    assert pos[0] == 0.0 and pos[-1] == 1.0
    assert steps.max() <= 1.0 + 1e-9 and len(pos) - 1 >= 7
    assert np.abs(np.diff(pos)).max() * 0.8 <= 0.25 + 1e-9  # energy 0.1 -> 0.9
    # a flat path with a long knob move: the rate limit alone sets the steps
    flat = Calibration(u, np.zeros((3, 4)), np.zeros((3, 4)))
    pos, _ = plan_steps(flat, start, end, max_step=1.0, max_knob_step=0.2)
    assert len(pos) - 1 == 4
    with pytest.raises(ValueError, match="max_step must be > 0"):
        plan_steps(cal, start, end, max_step=0.0)


@dataclass
class _Heard:
    knobs: Knobs
    audio: AudioFeatures
    phrase: str = "phrase"
    midi: str = "midi"
    pm: str = "pm"
    info: dict = field(default_factory=dict)


class _KnownAudio:
    """Loudness a known, smooth and convex function of the energy knob (16 LU over it).
    (A sudden jump cannot be bridged by any path: test_transition.py covers it.)"""

    def play(self, knobs: Knobs, seed: int, context: object = None) -> _Heard:
        lufs = -40 + 16 * knobs.energy ** 2
        return _Heard(knobs, AudioFeatures(lufs, lufs, 800.0, 0.1, 2.0, 8.0))


class _SyncMaker:
    """Runs the composer-thread work at once (what TargetChange asks of PhraseMaker)."""

    def __init__(self) -> None:
        self.composer, self.last, self.errors = None, None, []

    def run(self, fn, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut


def test_target_change_follows_its_plan_and_hands_back(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    tc = TargetChange(SafetyBounds(max_delta=0.25), max_step=2.0, candidates=2, points=5)
    monkeypatch.setattr(tc, "_player", lambda maker: _KnownAudio())
    maker = _SyncMaker()
    calm = resolve_target("calm")
    start = Knobs(0.6, 0.1, 0.1)
    assert tc.decide(0.0, 0.0, calm, start, maker) is None and not tc.active
    tc.request("energize")  # the dashboard's "change target"
    target = tc.current_target(calm)
    assert target.name == "energize"
    knobs, steps, t = start, [], 10.0
    while True:
        d = tc.decide(t, t, target, knobs, maker)
        if d is None:
            break
        assert np.abs(np.subtract(d.knobs.as_tuple(), knobs.as_tuple())).max() <= 0.25 + 1e-9
        assert d.submit(maker, None).result()[0] == "phrase"
        knobs, t = d.knobs, t + 9.0
        steps.append(d)
    events = tc.pop_events()
    kinds = [k for k, _ in events]
    assert kinds[0] == "target_change" and kinds[-1] == "target_change_done"
    plan = events[0][1]
    assert plan["old"] == "calm" and plan["new"] == "energize" and plan["steps"] == len(steps)
    assert plan["predicted_largest"] <= 0.5 * 2.0 + 1e-9  # half the bound per phrase
    measured = [p["step_from_previous"] for k, p in events if k == "target_change_step"]
    assert all(s <= 2.0 for s in measured[1:])
    assert knobs == Knobs(0.8, 0.95, 0.95) and not tc.active  # arrived; controller resumes
    assert "controller resumes" in steps[-1].words[-1]


# --------------------------------------------------------------------------- noise floor
def _tones(level: float) -> np.ndarray:
    t = np.arange(2 * SR) / SR
    env = (np.sin(2 * np.pi * 2 * t) > 0).astype(float)  # 4 notes, 250 ms each
    return level * env * np.sin(2 * np.pi * 440 * t)


def test_quantisation_alone_is_not_reported_but_a_real_change_is() -> None:
    rng = np.random.default_rng(0)
    x = _tones(0.003)  # a quiet phrase: 16-bit noise is scaled up with it in the flux
    q = np.round(x * 32767 + rng.random(x.size) - rng.random(x.size)) / 32767
    a, b = measure_audio(x, SR), measure_audio(q, SR)
    assert describe_change(a, b) != "no audible change"  # without a floor: "busier"
    floor = quantisation_shift(x, SR, np.random.default_rng(1), measured=a) \
        + quantisation_shift(q, SR, np.random.default_rng(2), measured=b)
    assert describe_change(a, b, noise_floor=floor) == "no audible change"
    louder = measure_audio(4 * q, SR)  # +12 dB is far above the floor
    assert describe_change(b, louder, noise_floor=floor).startswith("louder (+12.0 LU)")
    # the quieter the phrase, the more quantisation moves its (peak-normalised) flux
    shifts = [quantisation_shift(_tones(lv), SR, np.random.default_rng(3))[2]
              for lv in (0.5, 0.01, 0.001)]
    assert shifts[0] < shifts[1] < shifts[2]
    with pytest.raises(ValueError, match="noise_floor must be 4 finite values"):
        describe_change(a, b, noise_floor=np.array([-1.0, 0, 0, 0]))


# --------------------------------------------------------------------------- hearing audio
def _midi(velocity: float = 73.0, nps: float = 5.0) -> MusicFeatures:
    return MusicFeatures(duration_sec=8.0, bpm=105.0, notes_per_sec=nps, notes_per_beat=1.0,
                         mode="major", mode_confidence=0.5, key="C major", mean_pitch=72.0,
                         pitch_range=12.0, mean_velocity=velocity, n_notes=40)


def test_heard_features_take_loudness_and_density_from_the_audio() -> None:
    m = _midi()
    loud = AudioFeatures(-30.5, -30.0, 900.0, 0.1, 5.2, 8.0)
    quiet = AudioFeatures(-49.1, -49.0, 900.0, 0.1, 1.3, 8.0)
    xl, xq, xm = audio_feature_vector(m, loud), audio_feature_vector(m, quiet), feature_vector(m)
    np.testing.assert_allclose(xl[2], (-30.5 + 39.8) / 9.3)
    np.testing.assert_allclose(xl[1], np.log2(5.2 / 2.6) / 1.41)
    assert xl[2] > xm[2] > xq[2] and xl[1] > xq[1]
    np.testing.assert_array_equal(xl[[0, 3, 4, 5]], xm[[0, 3, 4, 5]])  # tempo, mode, register
    assert heard_features(None, loud) is None and heard_features(m, None) is m


def test_a_virtual_listener_that_hears_audio_responds_to_its_loudness() -> None:
    loud = AudioFeatures(-25.0, -25.0, 900.0, 0.1, 6.0, 8.0)
    quiet = AudioFeatures(-52.0, -52.0, 900.0, 0.1, 1.0, 8.0)
    arousal = {}
    for hearing, audio in (("audio", loud), ("audio", quiet), ("midi", loud), ("midi", quiet)):
        with VirtualListenerSource(ListenerParams(), rng=0, hearing=hearing) as src:
            for _ in range(6):
                src.hear(_midi(), audio=audio)
            for _ in range(40):
                src.read()
            arousal[hearing, audio.loudness_lufs] = src.latent[1]
    assert arousal["audio", -25.0] > arousal["audio", -52.0] + 0.05
    assert arousal["midi", -25.0] == arousal["midi", -52.0]  # the MIDI view ignores it
    with pytest.raises(ValueError, match="hearing must be one of"):
        VirtualListenerSource(ListenerParams(), hearing="eyes")


# --------------------------------------------------------------------------- in a session
@pytest.mark.slow
def test_scheduled_target_change_in_an_accelerated_session(tmp_path: Path) -> None:
    bound = 4.0
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=1.1, calibration_sec=5,
                        record=tmp_path, name="sched", target="calm",
                        target_schedule="focus@12", transition_max_step=bound,
                        start_knobs=(0.6, 0.1, 0.1), listener_hears="audio")
    ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target)
    session = LiveSession(cfg, ctrl, name)
    result = session.run()
    assert session._hearing.ms  # the virtual listener was given each phrase's audio
    events = read_session(result.folder).events
    kinds = [e["kind"] for e in events]
    assert kinds.count("target_change") == 1 and "target_change_done" in kinds
    plan = next(e["payload"] for e in events if e["kind"] == "target_change")
    assert (plan["old"], plan["new"]) == ("calm", "focus")
    assert kinds.count("target_change_step") == plan["steps"] >= 2
    knobs = np.array([e["payload"]["knobs"] for e in events if e["kind"] == "phrase_start"])
    assert np.abs(np.diff(knobs, axis=0)).max() <= cfg.max_delta + 1e-6  # the rate limit
    # what session.wav says: every step of the change within the bound, and it arrived
    heard = json.loads((result.folder / "phrase_audio.json").read_text())
    (change,) = heard["target_changes"]
    assert change["complete"] and change["arrived"]
    assert len(change["measured_steps"]) == plan["steps"]
    assert change["largest_step"] is not None and change["largest_step"] <= bound
    np.testing.assert_allclose(knobs[change["phrases"][-1]], (0.5, 0.45, 0.4), atol=1e-6)
    reasons = [e["payload"]["reason"] for e in events if e["kind"] == "phrase_start"]
    assert sum("planned step" in r for r in reasons) == plan["steps"]
    assert all(p["noise_floor"] is not None for p in heard["phrases"] if p["features"])
    assert "Target changes" in (result.folder / "report.html").read_text()
    # the recorded coordinates are those of measure_audio
    step = next(e["payload"] for e in events if e["kind"] == "target_change_step")
    np.testing.assert_allclose(step["measured"], feature_coordinates(
        AudioFeatures(**step["audio"])))
