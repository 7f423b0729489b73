"""The session sound in live sessions: instruments by the knobs, stereo, matched loudness.

Real parts throughout: the bundled composer, abc2midi, FluidSynth and pyloudnorm, on a
short accelerated session with the virtual listener.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.biometrics.recording import read_session
from st_agent.live.session import DemoConfig, SessionConfig, run_session
from st_agent.live.session_sound import (
    PhraseSoundRenderer,
    check_sound,
    downmix,
    sound_of,
    voice_for_knobs,
)
from st_agent.live.wav_stream import WavStream
from st_agent.music.arrangement import ArrangementConfig
from st_agent.music.loudness import SESSION_LUFS_RANGE, loudness_lufs, session_lufs
from st_agent.music.render import render_phrase
from st_agent.policies.controllers import make_controller
from st_agent.types import Knobs

#: LU a phrase-to-phrase step may exceed the planned 8 LU x |energy step| of
#: ``session_lufs`` in session.wav (each phrase's segment also holds the previous
#: phrase's reverb tail; measured: <= 0.1 LU, see docs/music_v2.md)
STEP_TOLERANCE_LU = 1.0

ABC = "X:1\nM:4/4\nL:1/8\nQ:1/4=120\nK:Am\nA2 c2 e2 c2|B2 d2 c2 A2|\n"


def _session(tmp_path: Path, sound: str):
    cfg = SessionConfig(board="virtual", minutes=0.4, calibration_sec=4.0, accelerated=True,
                        record=tmp_path, name=sound, policy="random", seed=3, report=False,
                        fade_sec=0.0, sound=sound)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    res = run_session(cfg, controller, name)
    starts = sorted((e["payload"] for e in read_session(res.folder).events
                     if e["kind"] == "phrase_start"), key=lambda p: p["index"])
    abc = [e["payload"]["abc"] for e in read_session(res.folder).events if e["kind"] == "phrase"]
    rate, x = wavfile.read(res.wav_path)
    return res, starts, abc, rate, x.astype(np.float64) / 32767.0


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sound")
    return {s: _session(root, s) for s in ("session", "plain")}


@pytest.mark.slow
def test_session_wav_is_stereo_and_each_phrase_is_at_the_loudness_of_its_energy(both) -> None:
    res, starts, _, rate, x = both["session"]
    assert x.ndim == 2 and x.shape[1] == 2 and rate == 44100
    assert x.shape[0] / rate == pytest.approx(res.summary["music_sec"], abs=2 / rate)
    assert not np.allclose(x[:, 0], x[:, 1], atol=1e-3)  # the parts are panned
    assert np.abs(x).max() <= 0.9  # each phrase peaks at most at -1 dBFS, no raise after
    t0 = starts[0]["t_session"]
    cuts = [*(round((p["t_session"] - t0) * rate) for p in starts), x.shape[0]]
    lufs = np.array([loudness_lufs(x[a:b], rate) for a, b in itertools.pairwise(cuts)])
    energy = np.array([p["knobs"][2] for p in starts])
    assert len(starts) >= 3
    lo, hi = SESSION_LUFS_RANGE
    assert np.all((lufs > lo - 2.0) & (lufs < hi + 1.0))
    # consecutive phrases join without jumps: within the planned 8 LU x energy step
    planned = (hi - lo) * np.abs(np.diff(energy))
    assert np.all(np.abs(np.diff(lufs)) <= planned + STEP_TOLERANCE_LU), (lufs, energy)
    assert np.abs(lufs - [session_lufs(e) for e in energy]).max() < 1.0


@pytest.mark.slow
def test_each_phrase_plays_and_records_the_instruments_of_its_knobs(both) -> None:
    _, starts, _, _, _ = both["session"]
    for p in starts:
        cfg = ArrangementConfig.for_knobs(Knobs(*p["knobs"]))
        assert p["sound"] == "session"
        assert p["programs"] == {"melody": cfg.melody_program, "bass": cfg.bass_program,
                                 "chords": cfg.chords_program}


@pytest.mark.slow
def test_plain_sound_is_the_previous_sound_with_the_same_music(both) -> None:
    res, starts, abc, rate, x = both["plain"]
    assert x.ndim == 1  # mono, as before
    assert x.shape[0] / rate == pytest.approx(res.summary["music_sec"], abs=2 / rate)
    assert np.abs(x).max() == pytest.approx(0.89, abs=0.01)  # raised to -1 dBFS at the end
    assert all(p["programs"] == {"melody": 0, "bass": 32, "chords": 4} and p["sound"] == "plain"
               for p in starts)
    # the opt-out changes the sound only: the same phrases at the same knobs
    assert abc == both["session"][2]
    assert [p["knobs"] for p in starts] == [p["knobs"] for p in both["session"][1]]


def test_bad_sound_values_and_knobs_are_refused_clearly(capsys: pytest.CaptureFixture) -> None:
    from st_agent.cli import main

    with pytest.raises(ValueError, match=r"--sound must be one of session, plain .* got 'loud'"):
        SessionConfig(board="virtual", sound="loud")
    with pytest.raises(ValueError, match=r"--sound must be one of session, plain"):
        DemoConfig(sound="Session")
    with pytest.raises(ValueError, match="got None"):
        check_sound(None)
    assert main(["demo", "--sound", "stereo"]) == 2
    assert "--sound must be one of session, plain" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(ValueError, match=r"energy must be in \[0, 1\], got 1.5"):
        session_lufs(1.5)
    with pytest.raises(ValueError, match="energy"):
        Knobs(0.5, 0.5, 1.5)
    pm = render_phrase(ABC, "Am", Knobs(0.2, 0.5, 0.1))
    with pytest.raises(TypeError, match="knobs must be a Knobs, got tuple"):
        voice_for_knobs(pm, (0.2, 0.5, 0.1))
    r = PhraseSoundRenderer()
    try:
        with pytest.raises(TypeError, match="knobs must be a Knobs"):
            r.render(pm, (0.2, 0.5, 0.1))
    finally:
        r.close()


def test_a_phrase_voiced_for_calm_minor_knobs_is_matched_to_its_energy() -> None:
    knobs = Knobs(0.2, 0.5, 0.1)
    plain = render_phrase(ABC, "Am", knobs)
    voiced = voice_for_knobs(plain, knobs)
    assert [i.program for i in plain.instruments] == [0, 32, 4]  # not modified
    assert [i.program for i in voiced.instruments] == [49, 32, 89]  # strings, bass, pad
    assert [(c.number, c.value) for i in voiced.instruments for c in i.control_changes
            if c.number == 10] == [(10, 64), (10, 48), (10, 80)]
    r = PhraseSoundRenderer()
    try:
        audio, sound = r.render(voiced, knobs)
    finally:
        r.close()
    assert audio.shape[1] == 2 and sound_of(voiced) is sound
    assert sound.target_lufs == pytest.approx(session_lufs(0.1))
    assert loudness_lufs(audio, r.sample_rate) == pytest.approx(sound.target_lufs, abs=0.05)
    assert downmix(audio).shape == (audio.shape[0],)
    assert sound.programs == {"melody": 49, "bass": 32, "chords": 89}


def test_stereo_wav_stream_is_valid_after_each_append_and_fades_both_channels(
        tmp_path: Path) -> None:
    w = WavStream(tmp_path / "s.wav", 8000, channels=2)
    a = np.stack([np.full(800, 0.5), np.full(800, -0.25)], axis=1)
    w.append(a)
    rate, x = wavfile.read(tmp_path / "s.wav")
    assert rate == 8000 and x.shape == (800, 2)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        w.append(np.zeros(10))
    w.append(a)
    w.finish(n_keep=1200, fade_samples=400)
    _, x = wavfile.read(tmp_path / "s.wav")
    assert x.shape == (1200, 2)
    assert x[0].tolist() == [16384, -8192] and np.abs(x[-1]).max() <= 41
    assert np.all(np.abs(np.diff(x[800:, 0].astype(int))) <= 42)  # a linear ramp


def test_live_player_plays_a_session_phrase_at_its_matched_gain(tmp_path: Path) -> None:
    """FluidSynth's file driver records what the live player plays, in real time."""
    import pretty_midi

    from st_agent.live.session_sound import BASE_GAIN, play_phrase
    from st_agent.music.render import LivePlayer

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0, name="melody")
    inst.notes.append(pretty_midi.Note(100, 60, 0.0, 0.4))
    pm.instruments.append(inst)
    r = PhraseSoundRenderer()
    try:
        _, sound = r.render(pm, Knobs(0.5, 0.5, 0.5))
    finally:
        r.close()
    raw = tmp_path / "live.raw"
    player = LivePlayer(driver="file", settings={
        "audio.file.name": str(raw), "audio.file.type": "raw", "audio.file.format": "s16",
        "synth.reverb.active": 0, "synth.chorus.active": 0})
    try:
        player.play(pm, gain=BASE_GAIN)  # as rendered offline
        play_phrase(player, pm)  # at the gain that matches session_lufs(0.5)
        player.wait(10.0)
    finally:
        player.close()
    x = np.abs(np.fromfile(raw, dtype="<i2").reshape(-1, 2)[:, 0]).astype(float)
    on = np.flatnonzero(x > 0.05 * x.max())
    split = on[np.argmax(np.diff(on))] + 1  # the silence between the two notes
    ratio = x[split:].max() / x[:split].max()
    assert 20 * np.log10(ratio) == pytest.approx(sound.gain_db, abs=0.2)
    with pytest.raises(ValueError, match=r"gain must be in \(0, 10\]"):
        LivePlayer.play(player, pm, gain=20.0)


@pytest.mark.slow
def test_render_ahead_gives_the_player_its_gain_and_session_wav_reuses_the_render(
        tmp_path: Path) -> None:
    """With --play the composer thread renders ahead; session.wav takes that render."""
    from st_agent.live.audio import SessionWavOutput
    from st_agent.live.common import Playing
    from st_agent.live.composing import PhraseMaker
    from st_agent.live.session_sound import take_audio

    knobs = Knobs(0.2, 0.5, 0.1)
    maker = PhraseMaker(0, sound="session", render_ahead=True)
    try:
        phrase, feats, pm, _ = maker.submit(knobs, None).result()
    finally:
        maker.close()
    sound = sound_of(pm)
    assert sound.programs == {"melody": 49, "bass": 32, "chords": 89}
    assert sound.gain_db is not None and sound.lufs == pytest.approx(session_lufs(0.1), abs=0.05)
    out = SessionWavOutput(0.0, sound="session")
    out.open(tmp_path)
    out.phrase(0, Playing(phrase, feats, pm, 10.0), knobs)
    out.close("time up")
    assert take_audio(pm) is None  # handed over once, not kept with the phrase
    assert list(out.sounds) == [sound.as_dict()]  # the render made ahead, not a second one
    rate, x = wavfile.read(tmp_path / "session.wav")
    assert x.shape == (round(feats.duration_sec * rate), 2)
    assert loudness_lufs(x / 32767.0, rate) == pytest.approx(session_lufs(0.1), abs=1.0)


_MAPPED_BLOCKS = """
import ctypes, ctypes.util, sys
import numpy as np
from st_agent.live.composing import MMAP_THRESHOLD_BYTES, fix_mmap_threshold
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
freed = np.ones(24 << 20, dtype=np.uint8)
del freed  # a freed 24 MiB mapping raises glibc's own threshold above the buffer below
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold() is True
before = libc.mallinfo2().hblks
big = np.ones(MMAP_THRESHOLD_BYTES + (512 << 10), dtype=np.uint8)
during = libc.mallinfo2().hblks
del big
print(during - before, libc.mallinfo2().hblks - before)
"""


def test_a_fixed_mmap_threshold_maps_each_large_buffer_and_bad_sizes_are_refused():
    """With the threshold fixed, a buffer above it gets its own mapping (glibc's count of
    mapped blocks goes up while it lives, down when it is freed) although a larger block
    was freed before it; with glibc's moving threshold it comes from the heap. Counted
    in a fresh process (no other thread maps or frees meanwhile). A size outside
    glibc's range is refused."""
    import ctypes
    import ctypes.util
    import subprocess
    import sys

    from st_agent.live.composing import fix_mmap_threshold

    for bad in (0, 1024, 64 << 20, 1.5, True):
        with pytest.raises(ValueError, match=r"n_bytes must be an int in \[4096, 33554432\]"):
            fix_mmap_threshold(bad)
    if not sys.platform.startswith("linux"):
        assert fix_mmap_threshold() is False
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33: no mallinfo2 to count mapped blocks")

    def mapped(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _MAPPED_BLOCKS, mode], check=True,
                              capture_output=True, text=True).stdout.split()

    assert mapped("fixed") == ["1", "0"]  # its own mapping, returned when freed
    assert mapped("glibc") == ["0", "0"]  # from the heap


def test_malloc_arenas_are_shared_on_linux_and_bad_counts_refused():
    """The composer thread shares glibc's arena (its memory would fragment in one of its
    own); a count below 1 is refused."""
    import sys

    from st_agent.live.composing import share_malloc_arenas

    assert share_malloc_arenas(1) is sys.platform.startswith("linux")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n must be an int >= 1"):
            share_malloc_arenas(bad)
