"""OSC out, the LSL outlet and real boards in jams (issue 17)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from st_agent.errors import DataError, UsageError
from st_agent.live.board_specs import BoardSpec, load_boards_file, parse_board_item, parse_boards
from st_agent.live.common import Playing
from st_agent.live.lsl_out import LslOutput, check_lsl_names, check_lsl_prefix
from st_agent.live.osc_out import OscOutput, check_osc_address, parse_osc_target, phrase_beats
from st_agent.types import EmotionState, Knobs, MusicFeatures, Phrase


# ------------------------------------------------------------------ helpers
class Receiver:
    """python-osc's threading UDP server on 127.0.0.1, port chosen by the system."""

    def __init__(self) -> None:
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import ThreadingOSCUDPServer

        self.messages: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()
        disp = Dispatcher()
        disp.set_default_handler(self._on)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _on(self, address: str, *args: object) -> None:
        with self._lock:
            self.messages.append((address, args))

    def get(self, address: str) -> list[tuple]:
        with self._lock:
            return [a for addr, a in self.messages if addr == address]

    def wait_for(self, address: str, n: int, timeout: float = 10.0) -> list[tuple]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.get(address)) < n:
            time.sleep(0.01)
        return self.get(address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _playing(start: float, bpm: float = 120.0, beats: int = 16, meter: str = "4/4",
             key: str = "Ador") -> Playing:
    beat_q = {"4/4": 1.0, "3/4": 1.0, "6/8": 1.5, "2/2": 2.0}[meter]
    dur = beats * beat_q * 60.0 / bpm
    feats = MusicFeatures(duration_sec=dur, bpm=bpm, notes_per_sec=2.0, notes_per_beat=1.0,
                          mode="minor", mode_confidence=0.5, key="A minor", mean_pitch=67.0,
                          pitch_range=12.0, mean_velocity=80.0, n_notes=32)
    k = Knobs(0.5, 0.5, 0.5)
    phrase = Phrase(abc=f"X:1\nM:{meter}\nL:1/8\nK:{key}\nA8|\n", body="A8|", knobs=k,
                    meter=meter, unit="1/8", key=key, bars=4)
    return Playing(phrase, feats, None, start)


def _drain_until_quiet(rec: Receiver, quiet: float = 0.3) -> None:
    """UDP on loopback arrives in well under a second; wait until nothing new comes."""
    n, last = -1, time.monotonic()
    while time.monotonic() - last < quiet:
        with rec._lock:
            m = len(rec.messages)
        if m != n:
            n, last = m, time.monotonic()
        time.sleep(0.02)


# ------------------------------------------------------------------ OSC: validation
@pytest.mark.parametrize("value, host, port, loopback", [
    ("9000", "127.0.0.1", 9000, True),
    ("127.0.0.1:57120", "127.0.0.1", 57120, True),
    (" localhost:9000 ", "localhost", 9000, True),
    ("[::1]:9001", "::1", 9001, True),
    ("10.1.2.3:8000", "10.1.2.3", 8000, False),
])
def test_osc_destinations_parse(value, host, port, loopback):
    t = parse_osc_target(value)
    assert (t.host, t.port, t.loopback) == (host, port, loopback)


@pytest.mark.parametrize("value, why", [
    ("", "needs a destination"),
    (":9000", "the host is empty"),
    ("studio:", "the port '' is not a whole number"),
    ("studio:nine", "the port 'nine' is not a whole number"),
    ("studio:70000", "the port 70000 is out of range [1, 65535]"),
    ("127.0.0.1:0", "the port 0 is out of range"),
    ("-9", "the port '-9' is not a whole number"),
    ("stu dio:9000", "neither an IP address nor a host name"),
    ("::1:9000", "an IPv6 host needs brackets"),
    ("[::1]9000", "must be followed by :PORT"),
])
def test_malformed_osc_destinations_are_refused_naming_value_and_form(value, why):
    with pytest.raises(UsageError) as e:
        parse_osc_target(value)
    msg = str(e.value)
    assert why in msg and "expected PORT or HOST:PORT" in msg
    if value:
        assert repr(value) in msg


def test_non_loopback_osc_host_is_a_logged_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="st_agent.live.osc_out"):
        OscOutput("10.1.2.3:8000")
    assert "off this machine" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="st_agent.live.osc_out"):
        OscOutput("9000")
    assert "off this machine" not in caplog.text


@pytest.mark.parametrize("address", ["/st", "/room1/st", "/a-b_c.d/x1"])
def test_good_osc_prefixes(address):
    assert check_osc_address(address) == address


@pytest.mark.parametrize("address, part", [
    ("st", "must start with '/'"), ("/", "must start with '/'"), ("/st/", "part ''"),
    ("/a//b", "part ''"), ("/s t", "contains ' '"), ("/st*", "contains '*'"),
    ("/st/{a,b}", "contains ','"), ("/é", "not printable ASCII"),
])
def test_malformed_osc_addresses_are_refused(address, part):
    with pytest.raises(UsageError, match="is not an OSC address") as e:
        check_osc_address(address)
    assert part in str(e.value)
    with pytest.raises(UsageError):
        OscOutput("9000", prefix=address)


def test_session_config_refuses_bad_osc_flags(tmp_path):
    from st_agent.live.session import SessionConfig

    with pytest.raises(UsageError, match="--osc 'x:99999'"):
        SessionConfig(osc="x:99999", record=tmp_path)
    with pytest.raises(UsageError, match="--osc-prefix"):
        SessionConfig(osc="9000", osc_prefix="/st/", record=tmp_path)
    with pytest.raises(UsageError, match="--lsl-out-name"):
        SessionConfig(lsl_out=True, lsl_out_name="bad name", record=tmp_path)


# ------------------------------------------------------------------ OSC: messages
@pytest.mark.parametrize("meter, bpm, beats, beat_sec", [
    ("4/4", 120.0, 16, 0.5), ("3/4", 90.0, 12, 60 / 90), ("6/8", 120.0, 8, 0.75),
    ("2/2", 100.0, 8, 1.2)])
def test_phrase_beats_follow_the_meter_and_tempo(meter, bpm, beats, beat_sec):
    t = phrase_beats(_playing(10.0, bpm, beats, meter))
    assert len(t) == beats and t[0] == 10.0
    assert np.allclose(np.diff(t), beat_sec)


def test_accelerated_osc_sends_every_address_with_its_values(receiver, tmp_path):
    out = OscOutput(f"127.0.0.1:{receiver.port}", accelerated=True)
    out.open(tmp_path / "sess")
    out.marker(0.0, "calibration_done")
    starts = [0.0]
    for i in range(3):
        p = _playing(starts[-1], bpm=100.0 + 10 * i, beats=8)
        out.state(p.start_sec - 2.0 if i else 0.0,
                  EmotionState(0.1 * i, -0.2, 0.8, t_sec=p.start_sec), Knobs(0.2, 0.4, 0.6))
        out.phrase(i, p, Knobs(0.2, 0.4, 0.6))
        starts.append(p.end_sec)
    out.state(starts[-1], None, Knobs(0.3, 0.4, 0.6))  # unusable: knobs only
    out.close("time up")
    assert receiver.wait_for("/st/end", 1) == [("time up",)]
    assert receiver.get("/st/start") == [("sess",)]
    phrases = receiver.get("/st/phrase")
    assert [p[0] for p in phrases] == [0, 1, 2]
    assert [p[1] for p in phrases] == pytest.approx([100.0, 110.0, 120.0])
    assert {p[2] for p in phrases} == {"Ador"} and {p[3] for p in phrases} == {"4/4"}
    assert [p[5] for p in phrases] == pytest.approx(starts[:3])
    beats = receiver.get("/st/beat")
    assert [b[0] for b in beats] == list(range(24))
    assert [b[1] for b in beats] == [0] * 8 + [1] * 8 + [2] * 8
    assert [b[2] for b in beats] == list(range(8)) * 3
    stamps = np.array([b[3] for b in beats])
    assert np.all(np.diff(stamps) > 0) and stamps[8] == pytest.approx(starts[1], abs=1e-4)
    assert len(receiver.get("/st/state")) == 3 and len(receiver.get("/st/knobs")) == 4
    assert receiver.get("/st/state")[2][:3] == pytest.approx((0.2, -0.2, 0.8))
    assert receiver.get("/st/marker") == [("calibration_done", 0.0)]
    assert sum(out.sent.values()) == len(receiver.messages) and out.errors == 0


def test_real_time_beats_leave_from_the_clock_thread_and_stop_on_close(receiver, tmp_path):
    out = OscOutput(f"127.0.0.1:{receiver.port}", prefix="/room1/st")
    out.open(tmp_path)
    p = _playing(0.0, bpm=480.0, beats=8)  # beats every 0.125 s
    out.phrase(0, p, Knobs(0.5, 0.5, 0.5))
    # sent from the clock thread on the beat, not with the phrase: none is there yet
    assert out.sent["/room1/st/beat"] < 8
    beats = receiver.wait_for("/room1/st/beat", 8)
    assert [b[0] for b in beats] == list(range(8))
    # the next phrase, cut short by close(): beats not yet due are not sent
    out.phrase(1, _playing(p.end_sec + 30.0, bpm=60.0, beats=8), Knobs(0.5, 0.5, 0.5))
    out.close("stop")
    receiver.wait_for("/room1/st/end", 1)
    _drain_until_quiet(receiver)
    assert len(receiver.get("/room1/st/beat")) == 8 and receiver.get("/room1/st/end")


# ------------------------------------------------------------------ OSC in a session
@pytest.mark.slow
def test_osc_during_an_accelerated_virtual_session(receiver, tmp_path):
    """A real session in-process: knobs in [0, 1], phrase indices increasing, the phrase
    bpm the session recorded, beats numbered without a gap."""
    from st_agent.biometrics.recording import read_session
    from st_agent.live.session import SessionConfig, run_session
    from st_agent.policies.controllers import make_controller

    cfg = SessionConfig(board="virtual", accelerated=True, minutes=1.0, calibration_sec=5.0,
                        record=tmp_path, name="s", policy="pid", report=False,
                        osc=f"127.0.0.1:{receiver.port}")
    ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target)
    res = run_session(cfg, ctrl, name)
    receiver.wait_for("/st/end", 1)
    _drain_until_quiet(receiver)
    events = read_session(res.folder).events
    starts = [e for e in events if e["kind"] == "phrase_start"]
    phrases = receiver.get("/st/phrase")
    assert len(phrases) == len(starts) == res.summary["phrases"] >= 3
    assert [p[0] for p in phrases] == list(range(len(phrases)))
    recorded_bpm = [e["payload"]["features"]["bpm"] for e in events if e["kind"] == "phrase"]
    assert [p[1] for p in phrases] == pytest.approx(recorded_bpm, rel=1e-5)
    knobs = np.array(receiver.get("/st/knobs"))[:, :3]
    assert len(knobs) >= len(phrases) - 1 and np.all((knobs >= 0) & (knobs <= 1))
    beats = receiver.get("/st/beat")
    assert [b[0] for b in beats] == list(range(len(beats))) and len(beats) >= 4 * len(phrases)
    assert receiver.get("/st/end")


# ------------------------------------------------------------------ LSL
def _prefix() -> str:
    return f"st-test-{uuid.uuid4().hex[:8]}"


def test_lsl_inlet_receives_state_with_monotonic_timestamps(tmp_path):
    pylsl = pytest.importorskip("pylsl")
    prefix = _prefix()
    out = LslOutput(prefix)
    out.open(tmp_path / "sess")
    try:
        infos = pylsl.resolve_byprop("name", f"{prefix}-state", minimum=1, timeout=5.0)
        assert infos, "the state stream is not visible"
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(timeout=5.0)
        info = inlet.info(timeout=5.0)
        assert info.type() == "EmotionState" and info.channel_count() == 3
        assert info.nominal_srate() == pylsl.IRREGULAR_RATE
        ch = info.desc().child("channels").child("channel")
        labels = []
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling()
        assert labels == ["valence", "arousal", "confidence"]
        t0 = time.monotonic()
        for k in range(20):
            out.state(k * 0.5, EmotionState(0.01 * k, -0.01 * k, 0.9, t_sec=k * 0.5),
                      Knobs(0.5, 0.5, 0.5))
        got, stamps = [], []
        while len(got) < 20 and time.monotonic() - t0 < 10.0:
            samples, ts = inlet.pull_chunk(timeout=0.5)
            got += samples
            stamps += ts
    finally:
        out.close("time up")
    assert len(got) == 20
    assert np.array(got)[:, 0] == pytest.approx(0.01 * np.arange(20), abs=1e-6)
    assert np.all(np.diff(stamps) >= 0) and stamps[-1] > stamps[0]
    assert out.pushed["state"] == 20 and out.pushed["knobs"] == 20


def test_lsl_phrase_markers_carry_index_bpm_and_key(tmp_path):
    pylsl = pytest.importorskip("pylsl")
    prefix = _prefix()
    out = LslOutput(prefix, accelerated=True)
    out.open(tmp_path)
    try:
        infos = pylsl.resolve_byprop("name", f"{prefix}-phrases", minimum=1, timeout=5.0)
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(timeout=5.0)
        start = 0.0
        for i in range(3):
            p = _playing(start, bpm=90.0 + i)
            out.phrase(i, p, Knobs(0.5, 0.5, 0.5))
            start = p.end_sec
        got, stamps = [], []
        end = time.monotonic() + 10.0
        while len(got) < 3 and time.monotonic() < end:
            s, ts = inlet.pull_chunk(timeout=0.5)
            got += s
            stamps += ts
    finally:
        out.close("time up")
    assert got == [["0", "90.00", "Ador"], ["1", "91.00", "Ador"], ["2", "92.00", "Ador"]]
    # accelerated: stamps are session time on a timeline that starts at open()
    assert np.diff(stamps) == pytest.approx([_playing(0, 90.0).end_sec,
                                             _playing(0, 91.0).end_sec], abs=1e-3)


def test_lsl_name_clash_is_refused_naming_the_stream(tmp_path):
    pylsl = pytest.importorskip("pylsl")
    prefix = _prefix()
    other = pylsl.StreamOutlet(pylsl.StreamInfo(f"{prefix}-state", "EmotionState", 3, 0.0,
                                                "float32", "someone-else"))
    try:
        assert pylsl.resolve_byprop("name", f"{prefix}-state", minimum=1, timeout=5.0)
        with pytest.raises(UsageError, match=rf"'{prefix}-state' is already on the network"
                                             r".*--lsl-out-name"):
            check_lsl_names(prefix, wait_sec=1.0)
        out = LslOutput(prefix)
        with pytest.raises(UsageError, match="already on the network"):
            out.open(tmp_path)
        check_lsl_names(f"{prefix}-2", wait_sec=0.5)  # another prefix is free
    finally:
        del other


@pytest.mark.parametrize("prefix", ["", "a b", "-x", "x" * 49, "st/agent"])
def test_bad_lsl_prefixes_are_refused(prefix):
    with pytest.raises(UsageError, match="--lsl-out-name"):
        check_lsl_prefix(prefix)


# ------------------------------------------------------------------ boards in jams
@pytest.mark.parametrize("item, spec", [
    ("synthetic", BoardSpec("synthetic")),
    ("cyton:/dev/ttyUSB0", BoardSpec("cyton", serial_port="/dev/ttyUSB0")),
    ("cyton:/dev/cu.usbserial-DM00", BoardSpec("cyton", serial_port="/dev/cu.usbserial-DM00")),
    ("ganglion:COM4", BoardSpec("ganglion", serial_port="COM4")),
    ("muse_2:00:55:da:b0:12:34", BoardSpec("muse_2", mac_address="00:55:DA:B0:12:34")),
    ("muse_s:00-55-DA-B0-12-34", BoardSpec("muse_s", mac_address="00:55:DA:B0:12:34")),
    ("lsl:OpenBCI:EEG", BoardSpec("lsl:OpenBCI:EEG")),
    ("file:rec/rest.edf", BoardSpec("file:rec/rest.edf")),
])
def test_board_items_parse_ports_and_macs(item, spec):
    assert parse_board_item(item) == spec


def test_readme_form_and_mixed_boards_parse():
    assert [s.board for s in parse_boards("cyton,muse_2")] == ["cyton", "muse_2"]
    specs = parse_boards("cyton:/dev/ttyUSB0, muse_2:00:55:DA:B0:12:34,synthetic")
    assert specs == [BoardSpec("cyton", "/dev/ttyUSB0"),
                     BoardSpec("muse_2", mac_address="00:55:DA:B0:12:34"),
                     BoardSpec("synthetic")]


@pytest.mark.parametrize("item, match", [
    ("synthetic:abc", "neither a serial port"), ("muse_2:00:55:DA:B0:12", "neither a serial"),
    (":/dev/ttyUSB0", "has no board name")])
def test_bad_board_items_are_refused(item, match):
    with pytest.raises(UsageError, match=match):
        parse_board_item(item)


def test_jam_boards_reach_the_brainflow_sources(tmp_path):
    from st_agent.biometrics.brainflow_source import BrainFlowSource
    from st_agent.live.inputs import open_source
    from st_agent.live.jam import JamConfig

    cfg = JamConfig(boards="cyton:/dev/ttyUSB0,muse_2:00:55:DA:B0:12:34", record=tmp_path)
    pc = [cfg.performer_config(i) for i in range(2)]
    assert (pc[0].board, pc[0].serial_port, pc[0].mac_address) == ("cyton", "/dev/ttyUSB0", "")
    assert (pc[1].board, pc[1].mac_address) == ("muse_2", "00:55:DA:B0:12:34")
    assert pc[1].other_info == "st-agent-performer-1"
    assert cfg.board_list() == ["cyton", "muse_2"]
    src = [open_source(c) for c in pc]  # not started: no hardware needed
    assert all(isinstance(s, BrainFlowSource) for s in src)
    assert src[0]._params.serial_port == "/dev/ttyUSB0"
    assert src[1]._params.mac_address == "00:55:DA:B0:12:34"


def test_boards_file_toml_and_json(tmp_path):
    from st_agent.live.jam import JamConfig

    toml = tmp_path / "boards.toml"
    toml.write_text('[[performer]]\nboard = "cyton"\nserial_port = "/dev/ttyUSB0"\n\n'
                    '[[performer]]\nboard = "ganglion"\nserial_port = "/dev/ttyACM0"\n'
                    'mac_address = "00:55:da:b0:12:34"\nother_info = "x"\n')
    specs = load_boards_file(toml)
    assert specs == [BoardSpec("cyton", "/dev/ttyUSB0"),
                     BoardSpec("ganglion", "/dev/ttyACM0", "00:55:DA:B0:12:34", "x")]
    cfg = JamConfig(boards_file=toml, record=tmp_path)
    assert cfg.performer_config(1).other_info == "x"
    assert cfg.performer_config(1).mac_address == "00:55:DA:B0:12:34"
    js = tmp_path / "boards.json"
    js.write_text(json.dumps([{"board": "synthetic"}, {"board": "virtual"}]))
    assert [s.board for s in load_boards_file(js)] == ["synthetic", "virtual"]
    js.write_text(json.dumps({"performer": [{"board": "synthetic"}, {"board": "synthetic"}]}))
    assert JamConfig(boards_file=js, record=tmp_path).board_list() == ["synthetic"] * 2


@pytest.mark.parametrize("text, match", [
    ('[[performer]]\nboard = "cyton"\nport = "/dev/ttyUSB0"\n', r"unknown field\(s\) port"),
    ('[[performer]]\nserial_port = "/dev/ttyUSB0"\n', "board is missing"),
    ('[[performer]]\nboard = 3\n', "board must be a string"),
    ('[[performer]]\nboard = "muse_2"\nmac_address = "zz"\n', "is not six hex pairs"),
    ('[[board]]\nboard = "muse_2"\n', r"unknown key\(s\) board"),
    ('performer = 1\n', "names no performer"),
    ('[[performer]\n', "is not valid TOML"),
])
def test_malformed_boards_files_are_refused(tmp_path, text, match):
    path = tmp_path / "boards.toml"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        load_boards_file(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"boards": "cyton,muse_2"}, "board 'cyton' needs a serial port, e.g. --boards "
                                 "cyton:/dev/ttyUSB0"),
    ({"boards": "cyton:/dev/ttyUSB0,cyton_daisy:/dev/ttyUSB0"},
     "performers 0 and 1 are both on serial port /dev/ttyUSB0"),
    ({"boards": "muse_2:00:55:DA:B0:12:34,muse_s:00-55-da-b0-12-34"},
     "both on MAC address 00:55:DA:B0:12:34"),
    ({"boards": "ganglion:COM3,ganglion:com3"}, "both on serial port COM3"),
    ({"boards": "muse3,synthetic"}, r"performer 0: unknown board 'muse3'.*all valid names: "
                                    r".*cyton.*muse_2"),
    ({"boards": "virtual:/dev/ttyUSB0,virtual"}, "'virtual' takes no serial port"),
    ({"boards": "synthetic,synthetic", "boards_file": Path("x.toml")},
     "give --boards or --boards-file, not both"),
])
def test_jam_boards_are_validated_up_front(tmp_path, kwargs, match):
    from st_agent.live.jam import JamConfig

    with pytest.raises(ValueError, match=match):
        JamConfig(record=tmp_path, **kwargs)


def test_jam_cli_names_a_board_without_its_port(tmp_path, capsys):
    from st_agent.cli import main

    record = tmp_path / "jams"
    assert main(["jam", "--record", str(record), "--boards", "cyton,muse_2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "needs a serial port" in err and not record.exists()


@pytest.mark.slow
def test_lsl_state_stream_during_an_accelerated_virtual_session(tmp_path):
    """``--lsl-out-name`` in a real session (in a thread): an inlet opened while it runs
    receives state samples in range, with timestamps that never go back."""
    pylsl = pytest.importorskip("pylsl")
    from pylsl.util import LostError

    from st_agent.live.session import SessionConfig, run_session
    from st_agent.policies.controllers import make_controller

    prefix = _prefix()
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=2.0, calibration_sec=20.0,
                        record=tmp_path, name="s", policy="pid", report=False,
                        lsl_out_name=prefix)
    ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=run_session(cfg, ctrl, name)))
    thread.start()
    got, stamps = [], []
    try:
        infos = pylsl.resolve_byprop("name", f"{prefix}-state", minimum=1, timeout=60.0)
        assert infos, "the session's state stream never appeared"
        inlet = pylsl.StreamInlet(infos[0], recover=False)
        inlet.open_stream(timeout=10.0)
        while thread.is_alive() or inlet.samples_available():
            try:
                s, ts = inlet.pull_chunk(timeout=0.2)
            except LostError:  # the session closed its outlets
                break
            got += s
            stamps += ts
    finally:
        thread.join(timeout=300)
    assert "r" in result and result["r"].summary["phrases"] >= 3
    assert len(got) >= 3
    arr = np.array(got)
    assert np.all(np.abs(arr[:, :2]) <= 1.0) and np.all((arr[:, 2] >= 0) & (arr[:, 2] <= 1))
    assert np.all(np.diff(stamps) >= 0) and stamps[-1] > stamps[0]


@pytest.mark.slow
def test_osc_during_an_accelerated_virtual_jam(receiver, tmp_path):
    """A jam sends its phrases (indices 0..n-1, the mix's bpm), beats and markers; no
    per-performer state (not in the address space yet)."""
    from st_agent.live.jam import JamConfig, run_jam
    from st_agent.policies.controllers import make_jam_controller

    cfg = JamConfig(boards="virtual,virtual", minutes=0.5, calibration_sec=4.0,
                    accelerated=True, record=tmp_path / "jams", name="j", report=False,
                    osc=f"127.0.0.1:{receiver.port}")
    choice = make_jam_controller("pid", 2)
    res = run_jam(cfg, choice.act, choice.name)
    receiver.wait_for("/st/end", 1)
    _drain_until_quiet(receiver)
    phrases = receiver.get("/st/phrase")
    assert len(phrases) == res.summary["phrases"] >= 2
    assert [p[0] for p in phrases] == list(range(len(phrases)))
    assert all(40.0 <= p[1] <= 200.0 for p in phrases)
    beats = receiver.get("/st/beat")
    assert [b[0] for b in beats] == list(range(len(beats))) and len(beats) >= 4 * len(phrases)
    assert receiver.get("/st/state") == []
    assert receiver.get("/st/end")


def test_jam_refuses_a_malformed_osc_target() -> None:
    from st_agent.errors import UsageError
    from st_agent.live.jam import JamConfig

    with pytest.raises(UsageError, match="99999"):
        JamConfig(boards="virtual,virtual", osc="127.0.0.1:99999")
