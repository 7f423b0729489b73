"""Renderer: arrangement, measured features and audio, with real abc2midi and FluidSynth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from scipy.io import wavfile

from st_agent.music.abc import abc_to_midi
from st_agent.music.render import (
    ArrangementConfig,
    AudioDeviceError,
    AudioRenderer,
    LivePlayer,
    arrange,
    find_soundfont,
    measure_features,
    parse_meter,
    render_phrase,
)
from st_agent.theory import find_key, parse_key
from st_agent.types import Knobs

A_MINOR = """X:1
T:A minor phrase
M:4/4
L:1/8
Q:1/4=83
K:Am
A2 cB A2 E2|c2 dc B2 G2|A2 cB AGFE|D2 E2 A4|]
"""
G_MAJOR_16 = """X:2
T:Sixteen bars in G
M:4/4
L:1/8
Q:1/4=120
K:G
GABc dedB|d2 g2 f2 e2|dBGB A2 FA|G2 B2 d4|
e2 c2 A2 FA|G2 B2 d2 g2|fedc BAGF|G8|
GABc dedB|d2 g2 f2 e2|dBGB A2 FA|G2 B2 d4|
e2 c2 A2 FA|G2 B2 d2 g2|fedc BAGF|G8|]
"""
A_NATURAL_MINOR_PCS = {9, 11, 0, 2, 4, 5, 7}


def _accompaniment_onsets_per_sec(pm: pretty_midi.PrettyMIDI) -> float:
    onsets = sum(len({round(n.start, 4) for n in i.notes})
                 for i in pm.instruments if i.name in ("bass", "chords"))
    return onsets / pm.get_end_time()


def _part(pm: pretty_midi.PrettyMIDI, name: str) -> pretty_midi.Instrument:
    return next(i for i in pm.instruments if i.name == name)


# ---------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        ("G", (7, "ionian", "major")),
        ("Em", (4, "aeolian", "minor")),
        ("Ador", (9, "dorian", "minor")),
        ("Amix", (9, "mixolydian", "major")),
        ("D major", (2, "ionian", "major")),
        ("Bb", (10, "ionian", "major")),
        ("F#m", (6, "aeolian", "minor")),
        ("Cphr", (0, "phrygian", "minor")),
        ("Glyd", (7, "lydian", "major")),
        ("Aeol", (9, "aeolian", "minor")),
        ("Aaeolian", (9, "aeolian", "minor")),
        ("E minor", (4, "aeolian", "minor")),
        ("Bloc", (11, "locrian", "minor")),
        ("D exp ^f ^c", (2, "ionian", "major")),
        ("G clef=bass", (7, "ionian", "major")),
        ("HP", (9, "mixolydian", "major")),
    ],
)
def test_parse_key(k: str, expected: tuple[int, str, str]) -> None:
    key = parse_key(k)
    assert (key.tonic_pc, key.mode, key.family) == expected


def test_parse_key_none() -> None:
    assert parse_key("none", allow_none=True) is None
    assert parse_key("", allow_none=True) is None
    with pytest.raises(ValueError, match="names no tonic"):
        parse_key("none")


@pytest.mark.parametrize("junk", ["H", "Gfoo", "C# wibble", "123", "Amaj7"])
def test_parse_key_rejects_junk_with_the_value(junk: str) -> None:
    with pytest.raises(ValueError, match=rf"key '{junk}' is not an ABC key.*'Ador'"):
        parse_key(junk)


def test_parse_meter() -> None:
    assert parse_meter("4/4") == (4.0, 1.0, 4)
    assert parse_meter("3/4") == (3.0, 1.0, 3)
    assert parse_meter("6/8") == (3.0, 1.5, 2)
    assert parse_meter("C|") == (4.0, 2.0, 2)
    with pytest.raises(ValueError, match=r"meter '7/5' is not an ABC meter"):
        parse_meter("7/5")


def test_key_finding_on_synthetic_profiles() -> None:
    c_major_scale = np.zeros(12)
    c_major_scale[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    c_major_scale[[0, 4, 7]] += 1.0  # tonic triad held longer
    tonic, family, conf = find_key(c_major_scale)
    assert (tonic, family) == (0, "major") and 0 < conf <= 1

    a_minor = np.zeros(12)
    a_minor[[9, 11, 0, 2, 4, 5, 7]] = 1.0
    a_minor[[9, 0, 4]] += 1.0  # A minor triad
    assert find_key(a_minor)[:2] == (9, "minor")

    # the C major triad alone is C major, the A minor triad alone A minor
    assert find_key(np.bincount([0, 4, 7], minlength=12).astype(float))[:2] == (0, "major")
    assert find_key(np.bincount([9, 0, 4], minlength=12).astype(float))[:2] == (9, "minor")
    # no information: confidence 0
    assert find_key(np.zeros(12))[2] == 0.0
    with pytest.raises(ValueError, match="shape"):
        find_key(np.ones(11))


# ----------------------------------------------------------------- arrangement


def test_arrange_a_minor_in_key() -> None:
    pm = render_phrase(A_MINOR, "Am", Knobs(0.2, 0.3, 0.5))
    names = [i.name for i in pm.instruments]
    assert names == ["melody", "bass", "chords"]
    bass, chords, melody = _part(pm, "bass"), _part(pm, "chords"), _part(pm, "melody")
    assert {n.pitch % 12 for n in bass.notes} <= A_NATURAL_MINOR_PCS
    assert {n.pitch % 12 for n in chords.notes} <= A_NATURAL_MINOR_PCS
    # tonic chord (A C E) at the start and the end, bass on A there
    first = {n.pitch % 12 for n in chords.notes if n.start < 0.01}
    last_start = max(n.start for n in bass.notes)
    assert first == {9, 0, 4}
    assert bass.notes[0].pitch % 12 == 9
    assert {n.pitch % 12 for n in chords.notes if n.end > last_start} <= {9, 0, 4}
    # registers: the bass stays under the melody
    assert max(n.pitch for n in bass.notes) < min(n.pitch for n in melody.notes)
    f = measure_features(pm)
    assert f.key == "A minor" and f.mode == "minor"


def test_arrange_keeps_melody_and_tempo_and_does_not_modify_input() -> None:
    melody = abc_to_midi(A_MINOR)
    before = [(n.pitch, n.start, n.velocity) for n in melody.instruments[0].notes]
    out = arrange(melody, "Am", Knobs(0.5, 0.9, 0.5))  # the tempo knob must not matter
    assert [(n.pitch, n.start, n.velocity) for n in melody.instruments[0].notes] == before
    assert [(n.pitch, n.start) for n in _part(out, "melody").notes] == [
        (p, s) for p, s, _ in before]
    assert out.get_tempo_changes()[1][0] == pytest.approx(83, abs=0.5)


def test_higher_energy_means_denser_and_louder() -> None:
    melody = abc_to_midi(A_MINOR)
    outs = [arrange(melody, "Am", Knobs(0.5, 0.5, e)) for e in (0.0, 0.5, 1.0)]
    density = [_accompaniment_onsets_per_sec(o) for o in outs]
    feats = [measure_features(o) for o in outs]
    assert density[0] < density[1] < density[2]
    assert feats[0].notes_per_sec < feats[1].notes_per_sec < feats[2].notes_per_sec
    assert feats[0].mean_velocity < feats[1].mean_velocity < feats[2].mean_velocity
    for name in ("melody", "bass", "chords"):
        vel = [np.mean([n.velocity for n in _part(o, name).notes]) for o in outs]
        assert vel[0] < vel[1] < vel[2], name


def test_arrange_config_programs_and_validation() -> None:
    cfg = ArrangementConfig(melody_program=73, bass_program=33, chords_program=4)
    pm = render_phrase(A_MINOR, "Am", Knobs(0.5, 0.5, 0.5), config=cfg)
    assert [i.program for i in pm.instruments] == [73, 33, 4]
    with pytest.raises(ValueError, match="bass_program must be a General MIDI program 0-127"):
        ArrangementConfig(bass_program=128)


def test_arrange_in_other_meters_and_modes() -> None:
    jig = ("X:3\nM:6/8\nL:1/8\nQ:1/4=150\nK:Ador\n"
           "A2B c2d|e2d cBA|G2A B2c|d2c BAG|A3 A3|]\n")
    pm = render_phrase(jig, "Ador", Knobs(0.5, 0.5, 1.0), meter="6/8")
    dorian = {9, 11, 0, 2, 4, 6, 7}
    assert {n.pitch % 12 for i in pm.instruments for n in i.notes} <= dorian
    f = measure_features(pm)
    assert f.bpm == pytest.approx(150, abs=0.5)
    # 5 bars of 6/8 at 150 quarter notes per minute: 5 * 3 quarters
    assert f.duration_sec == pytest.approx(5 * 3 * 60 / 150, rel=0.01)
    # K:none: the key comes from the notes
    pm_none = arrange(abc_to_midi(A_MINOR), "none", Knobs(0.5, 0.5, 0.5))
    assert {n.pitch % 12 for n in _part(pm_none, "bass").notes} <= A_NATURAL_MINOR_PCS


def test_arrange_rejects_bad_input() -> None:
    melody = abc_to_midi(A_MINOR)
    with pytest.raises(ValueError, match="'Q' is not an ABC key"):
        arrange(melody, "Q", Knobs(0.5, 0.5, 0.5))
    with pytest.raises(TypeError, match="knobs must be a Knobs"):
        arrange(melody, "Am", (0.5, 0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no notes"):
        arrange(pretty_midi.PrettyMIDI(), "Am", Knobs(0.5, 0.5, 0.5))


# -------------------------------------------------------------------- features


@pytest.mark.parametrize("bpm", [50, 83, 127, 160])
def test_measured_bpm_equals_q_field(bpm: int) -> None:
    abc = A_MINOR.replace("Q:1/4=83", f"Q:1/4={bpm}")
    f = measure_features(render_phrase(abc, "Am", Knobs(0.5, 0.0, 0.5)))
    assert f.bpm == pytest.approx(bpm, abs=0.5)
    assert f.duration_sec == pytest.approx(4 * 4 * 60 / bpm, rel=0.01)


def test_measure_features_values() -> None:
    pm = render_phrase(A_MINOR, "Am", Knobs(0.5, 0.5, 0.0))
    f = measure_features(pm)
    melody = _part(pm, "melody")
    pitches = [n.pitch for n in melody.notes]
    assert f.n_notes == sum(len(i.notes) for i in pm.instruments)
    assert f.notes_per_beat == pytest.approx(len(melody.notes) / 16)  # 20 onsets, 16 beats
    assert f.mean_pitch == pytest.approx(np.mean(pitches))
    assert f.pitch_range == max(pitches) - min(pitches)
    assert 0 < f.mode_confidence <= 1
    empty = measure_features(pretty_midi.PrettyMIDI())
    assert empty.n_notes == 0 and empty.key == "none"


def test_measure_features_on_raw_abc2midi_output() -> None:
    # no instrument is named "melody": the first one is used
    f = measure_features(abc_to_midi(A_MINOR))
    assert f.mode == "minor" and f.notes_per_beat == pytest.approx(20 / 16)


# ----------------------------------------------------------------------- audio


def test_find_soundfont() -> None:
    assert find_soundfont().name == "TimGM6mb.sf2"
    with pytest.raises(FileNotFoundError, match=r"/no/such/font\.sf2"):
        find_soundfont("/no/such/font.sf2")
    with pytest.raises(FileNotFoundError, match=r"/no/such/font\.sf2"):
        AudioRenderer(sf2_path="/no/such/font.sf2")


def test_wav_duration_and_loudness(tmp_path: Path) -> None:
    pm = render_phrase(G_MAJOR_16, "G", Knobs(0.7, 0.6, 0.6))
    path = tmp_path / "phrase.wav"
    with AudioRenderer() as renderer:
        renderer.write_wav(pm, path)
        audio = renderer.synthesize(pm)
    rate, data = wavfile.read(path)
    expected_sec = 16 * 4 * 60 / 120
    assert rate == 44100 and data.dtype == np.int16 and data.ndim == 1
    assert len(data) / rate == pytest.approx(expected_sec, rel=0.05)
    x = data.astype(np.float64) / 32768
    assert np.sqrt(np.mean(x**2)) > 0.05  # normalised, clearly audible
    assert np.max(np.abs(data)) < 32767  # no clipping
    # every bar sounds (no dropouts): RMS of each 2 s bar
    bars = x[: 16 * 2 * rate].reshape(16, -1)
    assert np.all(np.sqrt(np.mean(bars**2, axis=1)) > 0.01)
    assert audio.dtype == np.float32 and audio.shape == (len(data),)


def test_release_tail_and_reuse() -> None:
    pm = render_phrase(A_MINOR, "Am", Knobs(0.5, 0.5, 0.5))
    with AudioRenderer(sample_rate=22050, release_sec=0.5) as renderer:
        a = renderer.synthesize(pm)
        b = renderer.synthesize(pm)
    assert len(a) == round((4 * 4 * 60 / 83 + 0.5) * 22050)
    # one soundfont, many pieces: same length and same loudness each time
    assert len(a) == len(b)
    assert np.sqrt(np.mean(b**2)) == pytest.approx(np.sqrt(np.mean(a**2)), rel=0.1)


def test_renders_are_repeatable_without_effects() -> None:
    pm = render_phrase(A_MINOR, "Am", Knobs(0.5, 0.5, 0.5))
    with AudioRenderer(effects=False) as renderer:
        a, b = renderer.synthesize(pm), renderer.synthesize(pm)
    with AudioRenderer(effects=False) as renderer:
        c = renderer.synthesize(pm)
    np.testing.assert_array_equal(a, c)  # a fresh synthesizer is bit-exact
    # a reused one differs by dither and modulator phases only: < 1 % of the RMS
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.01 * np.sqrt(np.mean(a**2))


def test_closed_renderer_refuses() -> None:
    renderer = AudioRenderer()
    renderer.close()
    renderer.close()
    with pytest.raises(RuntimeError, match="closed"):
        renderer.synthesize(pretty_midi.PrettyMIDI())


def test_missing_fluidsynth_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one mock of the suite: pretend the binding cannot be imported.
    monkeypatch.setitem(sys.modules, "fluidsynth", None)
    with pytest.raises(ImportError, match=r"libfluidsynth3.*pyfluidsynth"):
        AudioRenderer()
    with pytest.raises(ImportError, match=r"apt-get install libfluidsynth3"):
        LivePlayer()


def test_live_player_without_audio_device_raises() -> None:
    # This machine has no sound card and no sound server: real drivers fail.
    with pytest.raises(AudioDeviceError, match=r"no audio output device.*WAV"):
        LivePlayer(driver=("alsa", "pulseaudio"))
    with pytest.raises(AudioDeviceError, match="write a WAV instead"):
        LivePlayer()


def test_live_player_plays_in_real_time_through_file_driver(tmp_path: Path) -> None:
    # FluidSynth's "file" driver runs in real time like a sound card, so the
    # scheduler is checked for real: two queued pieces end up back to back.
    raw = tmp_path / "live.raw"
    abc = "X:1\nM:4/4\nL:1/8\nQ:1/4=240\nK:C\nc2 e2 g2 c'2|]\n"  # 1 bar = 1 s
    pm = render_phrase(abc, "C", Knobs(0.5, 1.0, 0.5))
    settings = {"audio.file.name": str(raw), "audio.file.type": "raw"}
    with LivePlayer(driver="file", settings=settings, lead_sec=0.0) as player:
        assert player.driver == "file"
        first = player.play(pm)
        second = player.play(pm)  # returns at once, queued after the first
        assert first < 0.2 and second == pytest.approx(first + 1.0, abs=0.05)
        assert player.wait(timeout_sec=5.0)
    stereo = np.fromfile(raw, dtype=np.int16).reshape(-1, 2).astype(np.float64)
    assert len(stereo) / 44100 > 1.8
    seconds = [stereo[i * 44100:(i + 1) * 44100] for i in range(2)]
    assert all(np.sqrt(np.mean(s**2)) > 100 for s in seconds)  # both pieces sounded
