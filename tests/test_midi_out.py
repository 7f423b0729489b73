"""MIDI out, the session MIDI file, stems and the stereo jam (issue 17).

The MIDI stream is checked through a mido-compatible port that records what it is sent
(:class:`st_agent.live.midi_out.RecordingPort`); the round trip through a real virtual
port runs where the ALSA sequencer is (it is skipped, with the reason, where
``/dev/snd/seq`` is missing, as on this project's CI).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from scipy.io import wavfile

from st_agent.errors import DeviceError, UsageError
from st_agent.live.audio import MAX_PENDING_RENDERS
from st_agent.live.common import Playing
from st_agent.live.midi_out import (
    NO_ALSA_SEQ,
    MidiOut,
    RecordingPort,
    alsa_sequencer_missing,
    open_midi_port,
)
from st_agent.live.outputs import OutputSet
from st_agent.live.session import SessionConfig
from st_agent.live.session_midi import (
    SPOOL_NAME,
    MidiPhrase,
    SessionMidiFile,
    session_midi,
)
from st_agent.live.stems import PartStreams, pan_gains
from st_agent.types import Knobs, MusicFeatures, Phrase

PROGRAMS = {"melody": 0, "bass": 32, "chords": 4}


def _playing(start: float, bpm: float, beats: int = 8, meter: tuple[int, int] = (4, 4),
             parts: dict[str, int] | None = None, seed: int = 0) -> Playing:
    """A real arranged-looking phrase: one note per beat per part, at ``bpm``."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    pm.time_signature_changes = [pretty_midi.TimeSignature(meter[0], meter[1], 0.0)]
    for name, prog in (parts or PROGRAMS).items():
        inst = pretty_midi.Instrument(prog, name=name)
        base = {"bass": 40, "chords": 60}.get(name, 72)
        for b in range(beats):
            pitch = int(base + rng.integers(0, 12))
            inst.notes.append(pretty_midi.Note(90, pitch, b * beat, (b + 0.9) * beat))
        pm.instruments.append(inst)
    k = Knobs(0.5, 0.5, 0.5)
    phrase = Phrase(abc="X:1\nK:C\nC|", body="C|", knobs=k, meter=f"{meter[0]}/{meter[1]}",
                    unit="1/8", key="C", bars=2)
    feats = MusicFeatures(duration_sec=beats * beat, bpm=bpm, notes_per_sec=1 / beat,
                          notes_per_beat=1.0, mode="major", mode_confidence=0.9, key="C",
                          mean_pitch=60.0, pitch_range=12.0, mean_velocity=90.0,
                          n_notes=beats * len(pm.instruments))
    return Playing(phrase, feats, pm, start)


def _msgs(port: RecordingPort) -> list[mido.Message]:
    return [m for _, m in port.messages]


def _assert_balanced(msgs: list[mido.Message]) -> None:
    """Every note-on is ended by one note-off on its channel and pitch; none hang."""
    held: Counter = Counter()
    for m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            held[(m.channel, m.note)] += 1
        elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
            assert held[(m.channel, m.note)] > 0, f"note-off without a note-on: {m}"
            held[(m.channel, m.note)] -= 1
    assert not +held, f"notes left hanging: {+held}"


def _assert_all_notes_off_at_end(msgs: list[mido.Message], channels: set[int]) -> None:
    tail = msgs[-2 * len(channels):]
    assert {(m.channel, m.control) for m in tail if m.type == "control_change"} == {
        (c, cc) for c in channels for cc in (123, 120)}


# --------------------------------------------------------------------------- MIDI out


def test_stream_has_programs_a_channel_per_part_balanced_notes_and_all_off() -> None:
    port = RecordingPort()
    out = MidiOut(port, realtime=False)
    a, b = _playing(12.0, 100.0), _playing(12.0 + 4.8, 140.0, seed=1)
    out.open(Path("."))
    out.phrase(0, a, Knobs(0.5, 0.5, 0.5))
    out.state(14.0, None, Knobs(0.5, 0.5, 0.5))
    out.phrase(1, b, Knobs(0.5, 0.5, 0.5))
    out.close("time up")
    msgs = _msgs(port)
    assert port.closed
    assert out.channels == {"melody": 0, "bass": 1, "chords": 2}
    progs = [(m.channel, m.program) for m in msgs if m.type == "program_change"]
    assert progs == [(0, 0), (1, 32), (2, 4)]  # once each, before any note
    first_note = next(i for i, m in enumerate(msgs) if m.type == "note_on")
    assert all(m.type == "program_change" for m in msgs[:first_note])
    ons = [m for m in msgs if m.type == "note_on"]
    assert len(ons) == sum(len(i.notes) for p in (a, b) for i in p.pm.instruments)
    for inst in a.pm.instruments:  # each part's notes on its own channel, in order
        ch = out.channels[inst.name]
        assert [m.note for m in ons if m.channel == ch][:len(inst.notes)] == [
            n.pitch for n in inst.notes]
    _assert_balanced(msgs)
    _assert_all_notes_off_at_end(msgs, {0, 1, 2})


def test_real_time_clock_sends_nothing_early_and_everything_in_order() -> None:
    port = RecordingPort()
    out = MidiOut(port, realtime=True, keep_timing=True)
    p = _playing(3.0, 480.0, beats=6)  # 0.125 s a beat: 0.75 s of music
    out.open(Path("."))
    out.phrase(0, p, Knobs(0.5, 0.5, 0.5))
    n_expected = 3 + 2 * 18
    deadline = time.monotonic() + 20.0
    while len(port.messages) < n_expected and time.monotonic() < deadline:
        time.sleep(0.02)
    out.close("time up")
    assert len(port.messages) >= n_expected
    assert out.timing is not None
    for (sent, _), (due, _) in zip(port.messages, out.timing, strict=False):
        assert sent >= due - 1e-4  # a message never leaves before it is due
    _assert_balanced(_msgs(port))


def test_exception_mid_session_leaves_no_hanging_note() -> None:
    """A crash while notes sound: the OutputSet's close (a session's finally) sends a
    note-off for each held note, then all notes off."""
    port = RecordingPort()
    outs = OutputSet([MidiOut(port, realtime=False)])
    with pytest.raises(RuntimeError, match="boom"):
        try:
            outs.open(Path("."))
            outs.phrase(0, _playing(0.0, 60.0), Knobs(0.5, 0.5, 0.5))
            outs.state(2.5, None, Knobs(0.5, 0.5, 0.5))  # notes of beat 2 are sounding
            raise RuntimeError("boom")
        finally:
            outs.close("crash: RuntimeError: boom")
    msgs = _msgs(port)
    # one note per part was sounding: its note-off comes with the all-notes-off
    assert [(m.type, m.channel) for m in msgs[-9:-6]] == [("note_off", c) for c in (0, 1, 2)]
    assert sum(m.type == "note_on" for m in msgs) == 3 * 3  # beats 0-2 played, no more
    _assert_balanced(msgs)
    _assert_all_notes_off_at_end(msgs, {0, 1, 2})


@pytest.mark.parametrize("marker, more_notes", [("stop: Ctrl-C", False),
                                                 ("pause", False), ("override knobs", True)])
def test_stop_pause_and_override_silence_held_notes(marker: str, more_notes: bool) -> None:
    port = RecordingPort()
    out = MidiOut(port, realtime=False)
    out.phrase(0, _playing(0.0, 60.0), Knobs(0.5, 0.5, 0.5))
    out.state(1.5, None, Knobs(0.5, 0.5, 0.5))
    out.marker(1.5, marker)
    at_marker = len(port.messages)
    before = _msgs(port)
    _assert_balanced(before)
    _assert_all_notes_off_at_end(before, {0, 1, 2})
    out.close("time up")
    later_ons = [m for m in _msgs(port)[at_marker:] if m.type == "note_on"]
    assert bool(later_ons) == more_notes  # stop/pause drop the rest; override goes on
    _assert_balanced(_msgs(port))


def test_a_port_that_disappears_is_reported_and_reconnected() -> None:
    first, second = RecordingPort(fail_after=10), RecordingPort()
    notices: list[tuple[float, str]] = []
    out = MidiOut(first, "synth", realtime=False, reopen=lambda: second, retry_sec=0.05,
                  on_notice=lambda t, text: notices.append((t, text)))
    out.phrase(0, _playing(0.0, 60.0), Knobs(0.5, 0.5, 0.5))
    out.state(8.0, None, Knobs(0.5, 0.5, 0.5))  # the port dies during this phrase
    assert len(first.messages) == 10 and out.dropped > 0
    assert "MIDI port 'synth' lost" in notices[0][1] and "the music goes on" in notices[0][1]
    time.sleep(0.06)  # the next attempt is allowed
    out.phrase(1, _playing(8.0, 60.0, seed=3), Knobs(0.5, 0.5, 0.5))
    out.close("time up")
    assert notices[1][1] == "MIDI port 'synth' reconnected"
    msgs = _msgs(second)
    assert [(m.channel, m.program) for m in msgs[:3]] == [(0, 0), (1, 32), (2, 4)]
    assert sum(m.type == "note_on" for m in msgs) == 24  # the whole next phrase
    _assert_balanced(msgs)
    _assert_all_notes_off_at_end(msgs, {0, 1, 2})


def test_a_port_that_leaves_the_system_list_is_noticed_while_idle() -> None:
    """Real time: no message needs to fail; the presence check (bounded rate) sees the
    port go and come back."""
    here = {"on": True}
    ports = [RecordingPort(), RecordingPort()]
    notices: list[str] = []
    out = MidiOut(ports[0], "synth", realtime=True, reopen=lambda: ports[1],
                  present=lambda: here["on"], retry_sec=0.02,
                  on_notice=lambda t, text: notices.append(text))
    out.open(Path("."))

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 20.0
        while len(notices) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    here["on"] = False
    wait_for(1)
    here["on"] = True
    wait_for(2)
    out.close("time up")
    assert notices[:2] == ["MIDI port 'synth' lost (it left the system's port list); the "
                           "music goes on, reconnecting every 0.02 s",
                           "MIDI port 'synth' reconnected"]
    assert ports[0].closed and ports[1].closed


def test_missing_port_is_a_device_error_that_lists_the_ports() -> None:
    """Where the ALSA sequencer is missing the system has no port list to read, so the
    listing (only it) is replaced by two named ports; elsewhere the real list is used."""
    listing = (lambda: ["Synth A:Synth A MIDI 1 128:0", "IAC Bus 1"]) \
        if alsa_sequencer_missing() else None
    with pytest.raises(DeviceError) as e:
        open_midi_port("st-agent-no-such-port", virtual=False, list_ports=listing)
    msg = str(e.value)
    assert "MIDI port 'st-agent-no-such-port' does not exist" in msg
    assert "the output ports are:" in msg
    if listing is not None:
        assert "'Synth A:Synth A MIDI 1 128:0', 'IAC Bus 1'" in msg
    assert e.value.exit_code == 4


def test_command_line_refuses_a_missing_port_before_the_session_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from st_agent.cli import main

    record = tmp_path / "sessions"
    assert main(["session", "--board", "virtual", "--accelerated", "--record", str(record),
                 "--midi-out", "st-agent-no-such-port", "--no-midi-virtual"]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "MIDI port 'st-agent-no-such-port' does not exist" in err
    assert "the output ports are:" in err
    assert not record.exists() or not any(record.iterdir())


@pytest.mark.skipif(alsa_sequencer_missing() is None, reason="the ALSA sequencer is here: "
                    "the round trip below runs instead")
def test_virtual_port_without_a_sequencer_says_why() -> None:
    with pytest.raises(DeviceError, match=NO_ALSA_SEQ):
        MidiOut.to_port("st-agent-test")


@pytest.mark.skipif(alsa_sequencer_missing() is not None,
                    reason=alsa_sequencer_missing() or "")
def test_round_trip_through_a_virtual_port() -> None:
    out = MidiOut.to_port("st-agent-roundtrip", realtime=False)
    name = next(n for n in mido.get_input_names() if n.startswith("st-agent-roundtrip"))
    got: list[mido.Message] = []
    with mido.open_input(name) as inp:
        out.phrase(0, _playing(0.0, 120.0, beats=4), Knobs(0.5, 0.5, 0.5))
        out.close("time up")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(got) < 3 + 24 + 6:
            got.extend(inp.iter_pending())
            time.sleep(0.01)
    assert [m.program for m in got if m.type == "program_change"] == [0, 32, 4]
    _assert_balanced(got)


def test_midi_flags_are_checked_up_front() -> None:
    with pytest.raises(UsageError, match=r"--no-audio .* cannot be combined with --play"):
        SessionConfig(board="virtual", no_audio=True, play=True)
    with pytest.raises(UsageError, match="--midi-out must name a MIDI port"):
        SessionConfig(board="virtual", midi_out="   ")


# --------------------------------------------------------------------------- session.mid


def _phrases() -> list[Playing]:
    out, t = [], 20.0
    for i, (bpm, meter) in enumerate([(100.0, (4, 4)), (100.0, (4, 4)), (140.0, (3, 4)),
                                      (90.0, (4, 4))]):
        p = _playing(t, bpm, beats=12 if meter == (3, 4) else 8, meter=meter, seed=i)
        out.append(p)
        t = p.end_sec
    return out


def test_session_mid_has_the_tempo_map_and_every_note_where_it_played(tmp_path: Path) -> None:
    played = _phrases()
    out = SessionMidiFile()
    out.open(tmp_path)
    out.marker(5.0, "calibration done")
    for i, p in enumerate(played):
        out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
    out.close("time up")
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "session.mid"))
    t0 = played[0].start_sec
    times, tempi = pm.get_tempo_changes()
    assert np.allclose(tempi, [100.0, 140.0, 90.0], atol=0.01)
    assert np.allclose(times, [0.0, played[2].start_sec - t0, played[3].start_sec - t0],
                       atol=1e-3)
    assert [(s.numerator, s.denominator) for s in pm.time_signature_changes] == [
        (4, 4), (3, 4), (4, 4)]
    music_sec = played[-1].end_sec - t0
    assert pm.get_end_time() == pytest.approx(music_sec - 0.1 * 60 / 90, abs=2e-3)
    assert [i.name for i in pm.instruments] == ["melody", "bass", "chords"]
    assert [i.program for i in pm.instruments] == [0, 32, 4]
    for inst in pm.instruments:
        want = sorted((n.start + p.start_sec - t0, n.pitch) for p in played
                      for i in p.pm.instruments if i.name == inst.name for n in i.notes)
        got = sorted((n.start, n.pitch) for n in inst.notes)
        assert [g[1] for g in got] == [w[1] for w in want]
        assert np.allclose([g[0] for g in got], [w[0] for w in want], atol=1e-3)
    mid = mido.MidiFile(str(tmp_path / "session.mid"))
    assert mid.type == 1 and len(mid.tracks) == 4
    assert [m.text for m in mid.tracks[0] if m.type == "marker"] == ["calibration done"]
    assert {m.channel for t in mid.tracks[1:] for m in t if hasattr(m, "channel")} == {0, 1, 2}


def test_session_mid_after_a_crash_holds_what_played(tmp_path: Path) -> None:
    played = _phrases()
    out = SessionMidiFile(checkpoint_sec=0.0)  # rewritten at every phrase
    out.open(tmp_path)
    out.phrase(0, played[0], Knobs(0.5, 0.5, 0.5))
    out.wait()  # the first checkpoint is written; the second is due now
    out.phrase(1, played[1], Knobs(0.5, 0.5, 0.5))
    out.wait()
    checkpoint = pretty_midi.PrettyMIDI(str(tmp_path / "session.mid"))  # before any close
    assert sum(len(i.notes) for i in checkpoint.instruments) == 2 * 24
    crash_at = played[1].start_sec + 1.0
    out.state(crash_at, None, Knobs(0.5, 0.5, 0.5))
    out.close("crash: RuntimeError: boom")
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "session.mid"))
    cut = crash_at - played[0].start_sec
    assert max(n.end for i in pm.instruments for n in i.notes) <= cut + 1e-3
    assert sum(len(i.notes) for i in pm.instruments) == 24 + 3 * 2  # beats 0, 1 of phrase 1


def test_a_checkpoint_being_written_never_holds_up_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint is written in a worker: while it is held up, phrases keep being
    spooled, a further checkpoint is skipped (not queued), and close writes them all."""
    import threading

    import st_agent.live.session_midi as session_midi_module

    release, started, calls = threading.Event(), threading.Event(), []
    real_checkpoint = SessionMidiFile._write_checkpoint
    real_final = session_midi_module.write_session_midi

    def held_up(self: SessionMidiFile, n_phrases: int, markers: list) -> None:
        calls.append((threading.current_thread().name, n_phrases))
        if len(calls) == 1:
            started.set()
            assert release.wait(timeout=20)  # a slow disk, until the test lets it go
        real_checkpoint(self, n_phrases, markers)

    def final(path: Path, played: list, cut_sec: float | None = None,
              markers: tuple = ()) -> Path:
        calls.append((threading.current_thread().name, len(played)))
        return real_final(path, played, cut_sec, markers)

    monkeypatch.setattr(SessionMidiFile, "_write_checkpoint", held_up)
    monkeypatch.setattr(session_midi_module, "write_session_midi", final)
    played = _phrases()
    out = SessionMidiFile(checkpoint_sec=0.0)
    out.open(tmp_path)
    for i, p in enumerate(played):  # returns although the first checkpoint is held up
        out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
    assert out.n_phrases == len(played)
    assert started.wait(timeout=20)
    assert calls == [("session-mid-checkpoint_0", 1)]  # the others were skipped
    release.set()
    out.close("time up")
    assert calls[-1] == (threading.current_thread().name, len(played))  # the final file
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "session.mid"))
    assert sum(len(i.notes) for i in pm.instruments) == sum(
        len(i.notes) for p in played for i in p.pm.instruments)


def test_session_mid_spools_each_phrase_to_disk_not_memory(tmp_path: Path) -> None:
    played = _phrases()
    out = SessionMidiFile(checkpoint_sec=float("inf"))  # no checkpoint: only the spool
    with pytest.raises(RuntimeError, match=r"phrase\(\) before open\(\)"):
        out.phrase(0, played[0], Knobs(0.5, 0.5, 0.5))
    out.open(tmp_path)
    for i, p in enumerate(played):
        out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
    spool = tmp_path / SPOOL_NAME
    assert len(spool.read_text().splitlines()) == len(played) == out.n_phrases
    assert not hasattr(out, "played")  # nothing of a phrase is held in memory
    for p, back in zip(played, out.spooled(), strict=True):  # read back exactly
        want = MidiPhrase.of(p)
        assert (back.start_sec, back.end_sec, back.tempo_us, back.meter) == (
            want.start_sec, want.end_sec, want.tempo_us, want.meter)
        for (la, pa, da, na), (lb, pb, db, nb) in zip(back.parts, want.parts, strict=True):
            assert (la, pa, da) == (lb, pb, db) and np.array_equal(na, nb)
    with open(spool, "a", encoding="utf-8") as f:
        f.write('{"start_sec": 99.0, "end_')  # a line cut short (a full disk)
    assert len(out.spooled()) == len(played)  # left out, the others kept
    out.close("time up")
    assert not spool.exists()
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "session.mid"))
    assert sum(len(i.notes) for i in pm.instruments) == sum(
        len(i.notes) for p in played for i in p.pm.instruments)


def test_track_encoding_reads_back_through_mido_with_every_delta_length() -> None:
    """The array encoder of the note events against an independent reader (mido):
    deltas of 1 to 4 bytes, ties at one tick (note-offs first, then as given)."""
    import io

    from st_agent.live.smf import TrackNotes, meta_event, smf_bytes, track_chunk

    rng = np.random.default_rng(3)
    on = np.sort(rng.choice([0, 5, 100, 200, 20_000, 3_000_000, 3_000_001], 40))
    on = np.cumsum(np.where(rng.random(40) < 0.2, 0, on % 300_000))  # ties and jumps
    on[-1] += 2 ** 22  # a 4-byte delta
    off = on + rng.choice([0, 1, 127, 128, 16_384], 40)
    pitch, vel = rng.integers(0, 128, 40), rng.integers(1, 128, 40)
    events = [(0, 0, meta_event(0x03, b"melody")), (0, 1, bytes([0xC3, 40]))]
    end = int(off.max()) + 10
    smf = smf_bytes(960, [track_chunk(events, end, TrackNotes(3, on, off, pitch, vel))])
    got, now = [], 0
    for msg in mido.MidiFile(file=io.BytesIO(smf)).tracks[0]:
        now += msg.time
        got.append((now, msg.type) + ((msg.note, msg.velocity, msg.channel)
                                      if msg.type.startswith("note") else ()))
    want = [(0, 0, 0, ("track_name",)), (0, 1, 1, ("program_change",))]
    for i in range(40):  # (tick, order, as given, message)
        want.append((int(on[i]), 3, 2 + 2 * i, ("note_on", int(pitch[i]), int(vel[i]), 3)))
        want.append((int(off[i]), 2, 3 + 2 * i, ("note_off", int(pitch[i]), 0, 3)))
    want = [(t, *m) for t, _, _, m in sorted(want)] + [(end, "end_of_track")]
    assert got == want


def test_empty_session_writes_a_valid_empty_file() -> None:
    assert len(session_midi([]).tracks) == 1


# --------------------------------------------------------------------------- stereo jam


def _jam_phrases() -> list[Playing]:
    parts = {"voice 0": 0, "voice 1": 40, "voice 2": 73, "bass": 32, "chords": 4}
    return [_playing(3.0, 120.0, parts=parts), _playing(7.0, 120.0, parts=parts, seed=1)]


def test_pan_law_is_equal_power_and_spreads_left_to_right() -> None:
    g = pan_gains(3)
    assert np.allclose((g ** 2).sum(axis=1), 1.0)
    assert g[0, 0] > g[0, 1] and np.allclose(g[1], np.sqrt(0.5)) and g[2, 1] > g[2, 0]
    with pytest.raises(ValueError, match="width must be in"):
        pan_gains(2, width=0.0)


def _stream_parts(folder: Path, played: list[Playing], out: PartStreams,
                  stop_sec: float | None = None) -> PartStreams:
    out.open(folder)
    for i, p in enumerate(played):
        out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
        assert out.pending <= MAX_PENDING_RENDERS
    if stop_sec is not None:
        out.marker(stop_sec, "stop: user")
    out.close("time up" if stop_sec is None else "stopped")
    return out


def _reference_parts(played: list[Playing], gain: float) -> dict[str, np.ndarray]:
    """Every part of the whole piece in memory, in float: each phrase's part rendered
    alone by a fresh renderer in the order the stream renders them, added at its
    start (tails included), cut at the last phrase's end."""
    from st_agent.live.audio import TAIL_SEC
    from st_agent.live.midi_out import part_label
    from st_agent.music.render import AudioRenderer

    t0, sr = played[0].start_sec, 44100
    n = round((played[-1].end_sec - t0) * sr)
    out: dict[str, np.ndarray] = {}
    with AudioRenderer(release_sec=TAIL_SEC) as synth:
        for p in played:
            at = round((p.start_sec - t0) * sr)
            for inst in p.pm.instruments:
                one = pretty_midi.PrettyMIDI(initial_tempo=120.0)
                one.__dict__.update({k: v for k, v in p.pm.__dict__.items()
                                     if k != "instruments"})
                one.instruments = [inst]
                a = synth.synthesize(one).astype(np.float64) * gain
                buf = out.setdefault(part_label(inst.name), np.zeros(n + 10 * sr))
                buf[at:at + len(a)] += a
    return {k: v[:n] for k, v in out.items()}


def test_jam_stems_stream_pan_and_sum_to_the_mix_at_minus_1_dbfs(tmp_path: Path) -> None:
    played = _jam_phrases()
    out = _stream_parts(tmp_path, played, PartStreams(1.0, n_performers=3, mix=True,
                                                      gain=2.0))
    sr, mix = wavfile.read(tmp_path / "session.wav")
    music = played[-1].end_sec - played[0].start_sec
    assert mix.shape == (round(music * sr), 2) and mix.dtype == np.int16
    assert np.abs(mix).max() == pytest.approx(0.89 * 32767, rel=2e-3)  # raised to -1 dBFS
    assert out.boost > 1.0
    files = {f.stem: wavfile.read(f)[1].astype(np.int64)
             for f in (tmp_path / "stems").glob("*.wav")}
    assert set(files) == {"performer_0", "performer_1", "performer_2", "bass", "chords"}
    # one gain for all: the stems add up to the mix, to the 16-bit rounding of each of
    # the n + 1 files (1/2 LSB) when streamed (times the final raise), when raised and
    # when faded: (boost + 2) (n + 1) / 2
    bound = (out.boost + 2) * (len(files) + 1) / 2
    assert np.abs(sum(files.values()) - mix.astype(np.int64)).max() <= bound
    e = {k: (v.astype(np.float64) ** 2).sum(axis=0) for k, v in files.items()}
    assert e["performer_0"][0] > e["performer_0"][1]  # left
    assert e["performer_2"][1] > e["performer_2"][0]  # right
    assert np.allclose(e["bass"][0], e["bass"][1], rtol=1e-3)  # centred
    # the streamed stems are the whole piece rendered in memory (overlap-added tails),
    # at the mix's level, but faded over the last second
    ref = _reference_parts(played, 2.0 * out.boost)
    fade = sr
    g = pan_gains(3)
    for label, got in files.items():
        want = ref[label][:, None] * (g[int(label[-1])] if label.startswith("performer")
                                      else pan_gains(1)[0])[None, :] * 32767
        assert np.abs(got[:-fade] - want[:-fade]).max() <= out.boost / 2 + 1
        assert np.abs(got[-fade // 10:]).max() < np.abs(want[-fade // 10:]).max() + 1


def test_session_stems_are_mono_and_end_at_the_stop_plus_the_fade(tmp_path: Path) -> None:
    played = _phrases()
    t0, sr = played[0].start_sec, 44100
    stop = played[2].start_sec + 1.0
    out = _stream_parts(tmp_path, played, PartStreams(0.5), stop_sec=stop)
    assert out.boost == 1.0 and not (tmp_path / "session.wav").exists()
    files = {f.stem: wavfile.read(f) for f in (tmp_path / "stems").glob("*.wav")}
    assert set(files) == {"melody", "bass", "chords"}
    for rate, audio in files.values():
        assert rate == sr and audio.ndim == 1
        assert len(audio) == round((stop - t0 + 0.5) * sr)
        assert np.abs(audio[-50:]).max() <= 0.01 * np.abs(audio).max() + 1  # faded out
    ref = _reference_parts(played, 5.8)
    n = round((stop - t0) * sr)  # before the fade: the streamed level, not raised
    assert np.abs(files["bass"][1][:n] - ref["bass"][:n] * 32767).max() <= 1


def test_a_part_that_starts_late_or_ends_early_keeps_every_stem_aligned(
        tmp_path: Path) -> None:
    a = _playing(0.0, 120.0, parts={"melody": 0, "bass": 32})
    b = _playing(a.end_sec, 120.0, parts={"melody": 0, "bass": 32, "chords": 4}, seed=1)
    c = _playing(b.end_sec, 120.0, parts={"melody": 0}, seed=2)
    _stream_parts(tmp_path, [a, b, c], PartStreams(0.0))
    files = {f.stem: wavfile.read(f)[1] for f in (tmp_path / "stems").glob("*.wav")}
    n = round(c.end_sec * 44100)
    assert {k: len(v) for k, v in files.items()} == {"melody": n, "bass": n, "chords": n}
    start_b = round(b.start_sec * 44100)
    assert not files["chords"][:start_b].any() and files["chords"][start_b:].any()


def test_stems_and_mix_are_valid_wavs_while_the_jam_plays_and_after_a_failed_render(
        tmp_path: Path) -> None:
    """Each file is a complete WAV up to the last phrase on disk (a crash keeps it); a
    render that fails drops the output (the session goes on) and close still
    finishes every file with what was committed."""
    played = _jam_phrases()
    out = PartStreams(1.0, n_performers=3, mix=True)
    outputs = OutputSet([out])
    outputs.open(tmp_path)
    outputs.phrase(0, played[0], Knobs(0.5, 0.5, 0.5))
    out.wait()
    n0 = round((played[0].end_sec - played[0].start_sec) * 44100)
    for f in [tmp_path / "session.wav", *sorted((tmp_path / "stems").glob("*.wav"))]:
        rate, audio = wavfile.read(f)  # before any close
        assert rate == 44100 and audio.shape == (n0, 2) and np.abs(audio).max() > 0

    def broken(pm: object) -> np.ndarray:
        raise RuntimeError("fluidsynth: out of voices")

    out._synth.synthesize = broken  # a fault FluidSynth does not give on demand
    fails, t = [], played[1].start_sec
    for i in range(1, MAX_PENDING_RENDERS + 2):  # the error comes back by the queue's bound
        fails += outputs.phrase(i, _playing(t, 120.0, seed=i), Knobs(0.5, 0.5, 0.5))
        t += 4.0
    assert [f.name for f in fails] == ["jam-wav"] and "out of voices" in fails[0].error
    outputs.close("time up")
    rate, mix = wavfile.read(tmp_path / "session.wav")
    assert mix.shape == (n0, 2)
    assert np.abs(mix).max() == pytest.approx(0.89 * 32767, rel=2e-3)  # finished


def test_part_streams_refuse_what_they_cannot_write(tmp_path: Path) -> None:
    from st_agent.live.wav_stream import WavStream

    with pytest.raises(ValueError, match="give n_performers"):
        PartStreams(1.0, mix=True)
    with pytest.raises(ValueError, match="writes nothing"):
        PartStreams(1.0, stems=False)
    with pytest.raises(ValueError, match="gain must be a finite number >= 0, got nan"):
        PartStreams(1.0, gain=float("nan"))
    with pytest.raises(ValueError, match=r"n must be an int >= 1 performers, got 0"):
        PartStreams(1.0, n_performers=0)
    from st_agent.live.stems import JAM_WAV_GAIN, jam_wav_gain

    # the measured peaks grow as sqrt(n): 2 performers stream at twice the gain of 8
    assert jam_wav_gain(8) == JAM_WAV_GAIN and jam_wav_gain(2) == pytest.approx(2 * JAM_WAV_GAIN)
    with pytest.raises(ValueError, match="n_performers must be an int >= 1, got 0"):
        jam_wav_gain(0)
    out = PartStreams(1.0)
    with pytest.raises(RuntimeError, match=r"phrase\(\) before open\(\)"):
        out.phrase(0, _playing(0.0, 120.0), Knobs(0.5, 0.5, 0.5))
    _stream_parts(tmp_path, [], out)  # no music, no files
    assert not (tmp_path / "stems").exists() or not any((tmp_path / "stems").iterdir())
    wav = WavStream(tmp_path / "x.wav", 44100)
    with pytest.raises(ValueError, match=r"boost must be a finite factor >= 1, got 0\.5"):
        wav.finish(boost=0.5)


# --------------------------------------------------------------------------- end to end


@pytest.fixture()
def recording_ports(monkeypatch: pytest.MonkeyPatch) -> list[RecordingPort]:
    """``--midi-out rec`` opens a recording port: the system's port list names ``rec``
    and opening it gives a :class:`RecordingPort` (this machine has no MIDI system)."""
    import st_agent.live.midi_out as midi_out

    ports: list[RecordingPort] = []

    def opener(name: str, virtual: bool = False) -> RecordingPort:
        assert (name, virtual) == ("rec", False)
        ports.append(RecordingPort())
        return ports[-1]

    monkeypatch.setattr(midi_out, "list_output_ports", lambda: ["rec"])
    monkeypatch.setattr(mido, "open_output", opener)
    return ports


def _check_stream(msgs: list[mido.Message], channels: set[int], n_notes: int) -> None:
    assert {m.channel for m in msgs if m.type == "note_on"} == channels
    assert sum(m.type == "note_on" for m in msgs) == n_notes
    _assert_balanced(msgs)
    _assert_all_notes_off_at_end(msgs, channels)


@pytest.mark.slow
def test_accelerated_session_with_midi_out_stems_and_session_mid(
        tmp_path: Path, recording_ports: list[RecordingPort]) -> None:
    from st_agent.biometrics.recording import read_session
    from st_agent.live.session import run_session
    from st_agent.policies.controllers import make_controller

    cfg = SessionConfig(board="virtual", minutes=0.5, calibration_sec=5.0, accelerated=True,
                        record=tmp_path, name="s", policy="pid", midi_out="rec",
                        report=False, stems=True)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    res = run_session(cfg, controller, name)
    pm = pretty_midi.PrettyMIDI(str(res.folder / "session.mid"))
    assert pm.get_end_time() == pytest.approx(res.summary["music_sec"], abs=0.05)
    phrases = [e["payload"] for e in read_session(res.folder).events if e["kind"] == "phrase"]
    bpms = [p["bpm"] for p in phrases]
    changes = [b for i, b in enumerate(bpms) if i == 0 or b != bpms[i - 1]]
    assert np.allclose(pm.get_tempo_changes()[1], changes, atol=0.01)
    assert [i.name for i in pm.instruments] == ["melody", "bass", "chords"]
    (port,) = recording_ports
    assert port.closed
    _check_stream([m for _, m in port.messages], {0, 1, 2},
                  sum(len(i.notes) for i in pm.instruments))
    assert sorted(p.name for p in (res.folder / "stems").iterdir()) == [
        "bass.wav", "chords.wav", "melody.wav"]


@pytest.mark.slow
def test_accelerated_jam_is_stereo_with_stems_a_channel_per_performer_and_session_mid(
        tmp_path: Path, recording_ports: list[RecordingPort]) -> None:
    from st_agent.live.jam import JamConfig, run_jam
    from st_agent.policies.controllers import make_jam_controller

    cfg = JamConfig(boards="virtual,virtual", minutes=0.4, calibration_sec=4.0,
                    accelerated=True, record=tmp_path, name="jam", policy="pid",
                    report=False, stems=True, midi_out="rec")
    choice = make_jam_controller(cfg.policy, 2)
    res = run_jam(cfg, choice.act, choice.name, history_len=choice.history_len)
    sr, mix = wavfile.read(res.wav_path)
    assert mix.ndim == 2 and mix.shape[1] == 2
    assert abs(mix.shape[0] / sr - res.summary["music_sec"]) < 1e-3
    stems = {f.stem: wavfile.read(f)[1].astype(np.int64)
             for f in (res.folder / "stems").glob("*.wav")}
    assert set(stems) == {"performer_0", "performer_1", "bass", "chords"}
    # one gain for all (the final raise at most 8, WavStream.finish): they add up to the
    # mix to the rounding of each file when streamed (times the raise), raised and faded
    assert np.abs(sum(stems.values()) - mix).max() <= (8 + 2) * (len(stems) + 1) / 2
    pm = pretty_midi.PrettyMIDI(str(res.folder / "session.mid"))
    assert [i.name for i in pm.instruments] == ["performer_0", "performer_1", "bass", "chords"]
    assert pm.get_end_time() == pytest.approx(res.summary["music_sec"], abs=0.05)
    (port,) = recording_ports
    _check_stream([m for _, m in port.messages], {0, 1, 2, 3},
                  sum(len(i.notes) for i in pm.instruments))


@pytest.mark.slow
def test_a_port_lost_mid_session_is_recorded_and_the_music_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first port dies after 40 messages; the session records the loss (and the
    reconnection to the second) as ``output_notice`` events and writes all its music."""
    import st_agent.live.midi_out as midi_out
    from st_agent.biometrics.recording import read_session
    from st_agent.live.session import run_session
    from st_agent.policies.controllers import make_controller

    ports = [RecordingPort(fail_after=40), RecordingPort()]
    opened: list[RecordingPort] = []

    def opener(name: str, virtual: bool = False) -> RecordingPort:
        opened.append(ports[min(len(opened), 1)])
        return opened[-1]

    monkeypatch.setattr(midi_out, "list_output_ports", lambda: ["rec"])
    monkeypatch.setattr(mido, "open_output", opener)
    cfg = SessionConfig(board="virtual", minutes=0.5, calibration_sec=5.0, accelerated=True,
                        record=tmp_path, name="s", policy="pid", midi_out="rec", report=False)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    res = run_session(cfg, controller, name)
    notices = [e["payload"]["detail"] for e in read_session(res.folder).events
               if e["kind"] == "output_notice"]
    assert any("lost" in n for n in notices), notices
    assert res.summary["output_failures"] == []  # the output was not dropped
    assert res.wav_path is not None and res.wav_path.is_file()
    assert res.summary["music_sec"] >= 25.0
