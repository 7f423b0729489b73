"""Issue 19, remainder: live playback of ``st-agent brain-voices --board`` (the audio
player and the streamed piece.wav, --no-audio honoured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from scipy.io import wavfile

from st_agent.cli import main
from st_agent.errors import UsageError
from st_agent.music.piece_config import BrainVoicesConfig


class _Player:
    """Stands in for the FluidSynth live player (no audio device here): records what it
    is asked to play and checks that piece.wav is already streamed when it plays."""

    instances: ClassVar[list[_Player]] = []

    def __init__(self, wav: Path) -> None:
        self.wav, self.played, self.closed, self.waited = wav, [], False, False
        self.wav_sec_at_play: list[float] = []
        _Player.instances.append(self)

    def play(self, pm: object) -> float:
        self.played.append(pm)
        if self.wav.exists():
            rate, x = wavfile.read(self.wav)
            self.wav_sec_at_play.append(x.size / rate)
        return 0.0

    def remaining_sec(self) -> float:
        return 0.0

    def wait(self, timeout_sec: float | None = None) -> bool:
        self.waited = True
        return True

    def close(self) -> None:
        self.closed = True


def _run(out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["brain-voices", "--board", "virtual", "--accelerated", "--minutes", "0.25",
                 "--baseline-sec", "15", "--tempo", "0.9", "--candidates", "1",
                 "--max-voices", "2", "--no-plot", "--out", str(out), *extra])
    summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
    return code, summary


@pytest.mark.slow
def test_live_brain_voices_play_each_phrase_as_it_is_made(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    out = tmp_path / "v"
    _Player.instances.clear()
    monkeypatch.setattr("st_agent.live.common.open_player",
                        lambda soundfont=None: _Player(out / "piece.wav"))
    code, s = _run(out, "--play")
    assert code == 0
    (player,) = _Player.instances
    assert len(player.played) == s["phrases"] >= 2  # every phrase went to the player
    assert player.waited and player.closed  # the queue played out before the end
    # piece.wav grew phrase by phrase while the music was made (streamed)
    assert player.wav_sec_at_play == sorted(player.wav_sec_at_play)
    assert player.wav_sec_at_play[-1] > player.wav_sec_at_play[0]
    rate, x = wavfile.read(out / "piece.wav")
    assert x.size / rate == pytest.approx(s["music_sec"], rel=0.1)
    assert np.abs(x).max() > 0


@pytest.mark.slow
def test_no_audio_opens_no_player_and_still_writes_the_wav(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    def refuse(soundfont: object = None) -> None:
        raise AssertionError("--no-audio must not open the audio player")

    monkeypatch.setattr("st_agent.live.common.open_player", refuse)
    code, s = _run(tmp_path / "n", "--no-audio")
    assert code == 0 and s["phrases"] >= 2
    assert (tmp_path / "n" / "piece.wav").stat().st_size > 1000


@pytest.mark.parametrize(("kw", "match"), [
    ({"board": "virtual", "play": True, "no_audio": True}, "cannot be combined with --play"),
    ({"recording": Path("x.edf"), "play": True}, "--play plays a live board"),
])
def test_playback_flags_are_checked(kw: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        BrainVoicesConfig(**kw)
