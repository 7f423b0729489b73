"""``session.mid`` grown phrase by phrase (``st_agent.live.smf.GrowingMidi``) against the
file built from every phrase at once (``session_midi_bytes``), and the checkpoints of
``SessionMidiFile`` that use it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

import st_agent.live.session_midi as session_midi_module
from st_agent.live.session_midi import (
    PARTS_DIR_NAME,
    SPOOL_NAME,
    MidiPhrase,
    SessionMidiFile,
    session_midi_bytes,
)
from st_agent.live.smf import GrowingMidi
from st_agent.types import Knobs


def _records(n: int, seed: int = 0) -> list[MidiPhrase]:
    """Phrases with what makes a track hard to grow: tempo and meter changes, notes that
    sound on into later phrases, ties at one tick, a part that joins late, a program
    change, drums, a note that ends before it starts, a phrase at the same start."""
    rng = np.random.default_rng(seed)
    out, t = [], 3.0
    for i in range(n):
        dur = float(rng.choice([4.0, 6.5, 9.0]))
        bpm = float(rng.choice([60.0, 97.0, 140.0]))
        parts = []
        for label, program, drum, k in (("melody", 0 if i < n // 2 else 40, False, 12),
                                        ("bass", 32, False, 5), ("drums", 0, True, 6),
                                        ("late", 73, False, 4 if i >= 2 else 0)):
            on = np.sort(rng.choice(np.linspace(0.0, dur, 9), k))  # ties
            off = on + rng.choice([0.1, 0.5, dur, 2 * dur], k)  # some past the phrase
            if k and i == 1:
                off[0] = on[0] - 0.2  # ends before it starts
            notes = np.column_stack([on, off, rng.integers(30, 90, k),
                                     rng.integers(0, 140, k)]).astype(np.float64)
            if k:
                parts.append((label, program, drum, notes))
        meter = (3, 4) if i % 3 == 2 else (4, 4)
        out.append(MidiPhrase(t, t + dur, round(60e6 / bpm), meter, tuple(parts)))
        t += 0.0 if i == 3 else dur  # phrase 4 starts with phrase 3
    return out


@pytest.mark.parametrize("every", [1, 3])
def test_a_growing_file_is_byte_for_byte_the_file_built_at_once(tmp_path: Path,
                                                                every: int) -> None:
    records = _records(14)
    grow = GrowingMidi(tmp_path / "parts", 960)
    markers = [(1.0, "start"), (20.0, "note: calmer")]
    for k, r in enumerate(records, 1):
        grow.add(r)
        if k % every == 0 or k == len(records):
            got = grow.write(tmp_path / "grown.mid", markers).read_bytes()
            assert got == session_midi_bytes(records[:k], None, markers), k
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "grown.mid"))  # and a reader reads it
    assert sum(len(i.notes) for i in pm.instruments) == sum(
        len(n) for r in records for _, _, _, n in r.parts)
    grow.remove()
    assert not (tmp_path / "parts").exists()


def test_a_growing_file_refuses_what_would_move_written_events(tmp_path: Path) -> None:
    a, b = _records(2)
    grow = GrowingMidi(tmp_path / "parts", 960)
    with pytest.raises(ValueError, match="no phrase added yet"):
        grow.write(tmp_path / "x.mid")
    grow.add(b)
    with pytest.raises(ValueError, match="before the last one added"):
        grow.add(a)
    early = MidiPhrase(b.end_sec, b.end_sec + 4, 500_000, (4, 4),
                       (("melody", 0, False, np.array([[-0.5, 1.0, 60.0, 90.0]])),))
    with pytest.raises(ValueError, match="a note starts before its phrase"):
        grow.add(early)
    many = MidiPhrase(b.end_sec, b.end_sec + 4, 500_000, (4, 4), tuple(
        (f"p{i}", i, False, np.array([[0.0, 1.0, 60.0, 90.0]])) for i in range(16)))
    with pytest.raises(ValueError, match="15 melodic parts"):
        grow.add(many)


def test_each_checkpoint_reads_only_the_phrases_spooled_since_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint at every phrase: the spool is read once in all (not once per
    checkpoint), each checkpoint's file is the file of the phrases so far, and close
    writes the whole file and removes the spool and the parts' files."""
    records = _records(12, seed=1)
    parsed = []
    real = MidiPhrase.from_json.__func__

    def counting(cls: type, line: str) -> MidiPhrase:
        parsed.append(line)
        return real(cls, line)

    monkeypatch.setattr(MidiPhrase, "from_json", classmethod(counting))
    out = SessionMidiFile(checkpoint_sec=0.0)
    out.open(tmp_path)
    for i, r in enumerate(records):
        out.phrase(i, r, Knobs(0.5, 0.5, 0.5))
        out.wait()  # so that none is skipped
        got = (tmp_path / "session.mid").read_bytes()
        assert got == session_midi_bytes(records[:i + 1])
    assert len(parsed) == len(records)  # was 1 + 2 + ... + 12
    assert (tmp_path / PARTS_DIR_NAME).is_dir()
    out.close("time up")
    assert (tmp_path / "session.mid").read_bytes() == session_midi_bytes(records)
    assert not (tmp_path / SPOOL_NAME).exists() and not (tmp_path / PARTS_DIR_NAME).exists()


def test_checkpoints_fall_back_to_the_whole_spool_when_phrases_come_out_of_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c, d = _records(4, seed=2)
    order = [a, c, b, d]  # b starts before c (its checkpoint is not due: d's reads it)
    out = SessionMidiFile(checkpoint_sec=0.0)
    out.open(tmp_path)
    with caplog.at_level(logging.WARNING, logger=session_midi_module.__name__):
        for i, r in enumerate(order):
            out.phrase(i, r, Knobs(0.5, 0.5, 0.5))
            out.wait()
    assert "whole file from now on" in caplog.text
    assert (tmp_path / "session.mid").read_bytes() == session_midi_bytes(order)
    assert not (tmp_path / PARTS_DIR_NAME).exists()
    out.close("time up")
    assert (tmp_path / "session.mid").read_bytes() == session_midi_bytes(order)
