"""``st-agent brain-voices --board``: the regions of a live board as the voices of one piece.

The board is opened as ``st-agent session --board`` opens it
(:func:`st_agent.live.inputs.open_source`: synthetic, virtual, ``lsl:<name>``,
``file:<path>``, BrainFlow boards) and always released (a ``with`` block). Then:

1. **Regions**: the board's EEG channels are grouped by their 10-20 names
   (:func:`st_agent.biometrics.regions.group_channels`); a board without them is
   refused before the composer loads.
2. **Baseline**: the first ``baseline_sec`` seconds of the stream (60 s when 0)
   are cut into phrase-long windows with 50 % overlap; per region the median and
   robust spread of their log band power are the baseline
   (:func:`st_agent.live.brain_voices.baseline_stats`). The voices that play are
   the ``max_voices`` regions whose baseline varies most (IQR).
3. **Phrase by phrase**: at each phrase boundary (stream time) the latest
   phrase-long window gives each region's activity against its baseline
   (:func:`~st_agent.live.brain_voices.relative_activity`); the voices are
   composed and chosen by clashes as offline
   (:func:`st_agent.live.brain_voices._compose_step`); the next boundary is the
   end of that phrase's music. A virtual listener hears each phrase.
4. **Sound** (:class:`_LiveSound`): each phrase goes, as it is made, to the
   live player (``--play``: FluidSynth's audio driver, queued so that phrases
   join without a gap; no audio device: a warning and the WAV only;
   ``--no-audio``: never) and is appended to ``piece.wav`` (streamed as
   sessions stream ``session.wav``: a valid WAV after each phrase; rewritten
   at -1 dBFS at the end). On a real-time board with ``--play`` each phrase is
   composed a lead before the previous one ends (1.5 x the last composing
   time + 0.5 s, at most half a phrase), from the window that ends there.

Outputs and figures are those of the offline command (``piece.wav``,
``piece.mid``, ``score.abc``, ``regions.png``, ``phrases.json``,
``summary.json``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.biometrics.regions import Region, group_channels
from st_agent.errors import DataError, DeviceError, UsageError
from st_agent.live.brain_voices import (
    BrainVoicesResult,
    _compose_step,
    _finish,
    baseline_stats,
    relative_activity,
    voice_proposals,
    window_log_power,
)
from st_agent.music.piece_config import BrainVoicesConfig, band_hz, out_dir

__all__ = ["brain_voices_live", "live_regions"]

logger = logging.getLogger(__name__)

#: Longest wait for samples from a real-time board before giving up, seconds.
_STALL_SEC = 10.0


@dataclass
class _SourceSpec:
    """The fields of a SessionConfig that :func:`open_source` reads."""

    board: str
    serial_port: str
    mac_address: str
    other_info: str
    accelerated: bool
    seed: int
    listener: None = None
    inject_dropout: None = None


def live_regions(board: str, ch_names: tuple[str, ...], ch_types: tuple[str, ...],
                 hemispheres: bool) -> list[Region]:
    """The board's regions, or a typed error naming its channels and the fix.

    Raises
    ------
    DataError
        For a ``file:`` board whose recording has no 10-20 EEG names.
    UsageError
        For any other board without them.
    """
    try:
        return group_channels(ch_names, ch_types, hemispheres, where=f"--board {board}")
    except ValueError as e:
        if board.lower().startswith("file:"):
            raise DataError(str(e)) from e
        shown = ", ".join(f"{n} ({t})" for n, t in list(zip(ch_names, ch_types,
                                                              strict=True))[:20])
        what = ("streams no EEG channel" if "eeg" not in ch_types else
                "names none of its EEG channels by a 10-20/10-10 position")
        raise UsageError(
            f"--board {board} {what} (channels: {shown or 'none'}), so no scalp region can "
            "be formed; brain voices need EEG at 10-20 positions: use a board that names "
            "them (--board synthetic or --board virtual need no hardware), or record the "
            "session, rename its channels (MNE raw.rename_channels) and play it with "
            "--board file:<path> or as a recording") from e


class _Stream:
    """Reads the region channels of a started source; keeps the baseline and the latest
    seconds (stream time = samples received / sfreq)."""

    def __init__(self, src: Any, chans: list[int], keep_sec: float, realtime: bool) -> None:
        self.src, self.chans, self.realtime = src, chans, realtime
        self.sfreq = float(src.sfreq)
        self.keep = round(keep_sec * self.sfreq)
        self.buf = np.zeros((len(chans), 0))
        self.n = 0  # samples received
        self.ended = False

    @property
    def t_sec(self) -> float:
        """Stream time, seconds."""
        return self.n / self.sfreq

    def read_until(self, t_sec: float) -> bool:
        """Read until the stream reaches ``t_sec``; False when it ended before."""
        last = time.monotonic()
        while self.t_sec < t_sec:
            chunk = self.src.read(timeout_sec=0.5)
            if chunk is None:
                if not self.realtime:  # a file played back fast: its end
                    self.ended = True
                    return False
                if time.monotonic() - last > _STALL_SEC:
                    raise DeviceError(f"the board delivered no samples for {_STALL_SEC:.0f} s; "
                                      "check that it is on and streaming")
                continue
            last = time.monotonic()
            self.buf = np.concatenate([self.buf, chunk.data[self.chans]], axis=1)[:, -self.keep:]
            self.n += chunk.n_times
        for ev in self.src.pop_events():
            logger.warning("board: %s", ev)
        return True

    def latest(self, sec: float) -> np.ndarray:
        """The last ``sec`` seconds, shape (n_region_channels, n_times)."""
        return self.buf[:, -round(sec * self.sfreq):]


def _baseline(stream: _Stream, regions: list[Region], base_sec: float, win_sec: float,
              band: tuple[float, float], board: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, spread and window log powers (W_b, R) of the first ``base_sec``."""
    if not stream.read_until(base_sec):
        raise DataError(f"--board {board} ended after {stream.t_sec:.1f} s, before the "
                        f"{base_sec:g} s baseline; lower --baseline-sec")
    data = stream.latest(base_sec)
    starts = np.arange(0.0, base_sec - win_sec + 1e-9, win_sec / 2)
    logp = np.stack([window_log_power(data, stream.sfreq, regions, np.array([a, a + win_sec]),
                                      band)[0] for a in starts])
    med, spread = baseline_stats(logp)
    return med, spread, logp


def brain_voices_live(cfg: BrainVoicesConfig) -> BrainVoicesResult:
    """Brain voices from a live board for ``cfg.minutes`` of music after the baseline.

    Raises
    ------
    UsageError
        For an unknown board, or a board without 10-20 EEG channels (the message
        names the channels).
    DataError
        For a ``file:`` recording without them, or one that ends before the baseline.
    DeviceError
        When the board stops delivering samples.
    """
    from st_agent.live.inputs import check_board, open_source
    from st_agent.music.config import ComposerConfig
    from st_agent.music.render import find_soundfont, parse_meter
    from st_agent.types import Knobs

    check_board(cfg.board)
    find_soundfont(cfg.soundfont)
    band = band_hz(cfg.band)
    ccfg = ComposerConfig(checkpoint=cfg.checkpoint)
    bar_quarters = parse_meter(ccfg.meter)[0]
    win_sec = 4 * bar_quarters * 60.0 / Knobs(0.5, cfg.tempo, 0.5).bpm  # one phrase
    base_sec = cfg.live_baseline_sec()
    realtime = not cfg.accelerated
    if base_sec < 1.5 * win_sec:  # two half-overlapping phrase windows at least
        raise UsageError(f"--baseline-sec {base_sec:g} is shorter than 1.5 phrases "
                         f"({1.5 * win_sec:.1f} s at --tempo {cfg.tempo:g}): raise it or "
                         "the --tempo")
    src = open_source(_SourceSpec(cfg.board, cfg.serial_port, cfg.mac_address, cfg.other_info,
                                  cfg.accelerated, cfg.seed))
    hemis = cfg.regions == "hemispheres"
    if src.ch_names:  # known before the start: refuse before the composer loads
        live_regions(cfg.board, tuple(src.ch_names), tuple(src.ch_types), hemis)
    from st_agent.music.composer import Composer
    from st_agent.music.ensemble import Ensemble

    ens = Ensemble(Composer(ccfg))  # loaded before the board streams: no backlog
    with src:  # started here; stopped and released whatever happens below
        if not src.ch_names:  # an LSL stream names its channels once it streams
            src.read(timeout_sec=2.0)
        regions = live_regions(cfg.board, tuple(src.ch_names), tuple(src.ch_types), hemis)
        if len(regions) < 2:
            raise UsageError(f"--board {cfg.board} has 10-20 channels in one region only "
                             f"({regions[0].name}: {', '.join(regions[0].names)}); brain "
                             "voices need at least two regions")
        chans = sorted({c for r in regions for c in r.channels})
        local = [replace(r, channels=tuple(chans.index(c) for c in r.channels))
                 for r in regions]  # indices into the kept channels
        stream = _Stream(src, chans, max(base_sec, win_sec) + 1.0, realtime)
        med, spread, base_logp = _baseline(stream, local, base_sec, win_sec, band, cfg.board)
        iqr = np.subtract(*np.percentile(relative_activity(base_logp, med, spread), [75, 25],
                                         axis=0))
        keep = sorted(np.argsort(-iqr, kind="stable")[:cfg.max_voices].tolist())
        logger.info("baseline %.0f s done; voices: %s", base_sec,
                    ", ".join(regions[i].name for i in keep))
        sound = _LiveSound(cfg, out_dir(cfg.out, "brain-voices"))
        try:
            loop = _play(cfg, ens, stream, [local[i] for i in keep], med[keep], spread[keep],
                         band, win_sec, bar_quarters, sound)
        finally:
            sound.close()
        sfreq = stream.sfreq
    played, clashes, independent, rows, z, logp = loop
    if not played:
        raise DataError(f"--board {cfg.board} ended at the baseline's end; no phrase was "
                        "played: lower --baseline-sec")
    return _finish(cfg, cfg.board, [regions[i] for i in keep], z, logp, played, clashes,
                   independent, rows, band, sfreq)


class _LiveSound:
    """The live player (``--play``) and the streamed ``piece.wav`` (module docstring)."""

    def __init__(self, cfg: BrainVoicesConfig, out: Path) -> None:
        from st_agent.live.common import open_player
        from st_agent.live.wav_stream import WavStream
        from st_agent.music.render import AudioRenderer

        self.player = open_player(cfg.soundfont) if cfg.play and not cfg.no_audio else None
        self.synth = self.wav = None
        self.n_phrases = 0
        if cfg.wav:
            out.mkdir(parents=True, exist_ok=True)
            self.synth = AudioRenderer(cfg.soundfont)
            self.wav = WavStream(out / "piece.wav", self.synth.sample_rate)

    @property
    def live(self) -> bool:
        """Whether phrases are heard as they are made (a player is open)."""
        return self.player is not None

    def add(self, pm: Any) -> None:
        """Play ``pm`` after what is queued, and append it to piece.wav."""
        if self.player is not None:
            self.player.play(pm)
        if self.wav is not None:
            self.wav.append(self.synth.synthesize(pm))
        self.n_phrases += 1

    def close(self) -> None:
        """Let the queued music play out, then close the player and the WAV."""
        if self.player is not None:
            self.player.wait(timeout_sec=self.player.remaining_sec() + 2.0)
            self.player.close()
            self.player = None
        if self.wav is not None:
            self.wav.finish()
            self.wav = None
        if self.synth is not None:
            self.synth.close()
            self.synth = None


def _play(cfg: BrainVoicesConfig, ens: Any, stream: _Stream, regions: list[Region],
          med: np.ndarray, spread: np.ndarray, band: tuple[float, float], win_sec: float,
          bar_quarters: float, sound: _LiveSound | None = None
          ) -> tuple[list, list, list, list, np.ndarray, np.ndarray]:
    """Phrase by phrase until ``cfg.minutes`` of music (or the stream's end)."""
    from st_agent.music.ensemble import STEPS_PER_QUARTER
    from st_agent.music.render import musical_span_sec
    from st_agent.types import Knobs

    bar_steps = round(bar_quarters * STEPS_PER_QUARTER)
    hear = getattr(getattr(stream.src, "inner", stream.src), "hear", None)
    played: list[Any] = []
    clashes: list[float] = []
    independent: list[float] = []
    rows: list[dict] = []
    zs: list[np.ndarray] = []
    logps: list[np.ndarray] = []
    t0 = t = stream.t_sec
    music_sec = 0.0
    lead = 0.0  # compose this long before the previous phrase ends (live sound, real time)
    while music_sec < 60.0 * cfg.minutes:
        if not stream.read_until(t - lead):
            logger.warning("the board's stream ended at %.1f s", stream.t_sec)
            break
        k = len(played)
        t_win = t - lead  # the window ends here (the stream's time now)
        logp = window_log_power(stream.latest(win_sec), stream.sfreq, regions,
                                np.array([0.0, win_sec]), band)[0]
        z = relative_activity(logp, med, spread)
        props = voice_proposals(z[None], regions, cfg.tempo)[0]
        tic = time.monotonic()
        phrase, c, ind = _compose_step(ens, [Knobs(*p) for p in props],
                                       played[-1][0] if played else None,
                                       cfg.seed + 10_000 * k, cfg.candidates, bar_steps)
        pm = ens.render(phrase)
        if sound is not None:
            sound.add(pm)
            if sound.live and stream.realtime:
                lead = min(0.5 * win_sec, 1.5 * (time.monotonic() - tic) + 0.5)
        m = ens.measure(pm, phrase.n_voices, bars=phrase.bars, meter=phrase.meter)
        if hear is not None:  # a virtual listener hears the piece
            hear(m.mix)
        played.append((phrase, pm, m))
        clashes.append(m.clashes_per_bar)
        independent.append(ind / max(phrase.bars, 1))
        zs.append(z)
        logps.append(logp)
        rows.append({"index": k, "window_sec": [t_win - win_sec, t_win], "t_music_sec": music_sec,
                     "activity": dict(zip([r.name for r in regions], z.tolist(), strict=True)),
                     "energy": props[:, 2].tolist(), "choice": phrase.extra["choice"],
                     "clashes_search": c, "clashes_independent": ind,
                     "clashes_per_bar": m.clashes_per_bar,
                     "voices": [f.as_dict() for f in m.voices]})
        dur = float(musical_span_sec(pm)[1])
        music_sec += dur
        t += dur
        logger.info("phrase %d at %.1f s of stream: clashes/bar %.2f (independent %.2f)",
                    k + 1, t - t0, m.clashes_per_bar, ind / max(phrase.bars, 1))
    z_all = np.array(zs).reshape(len(zs), len(regions))
    logp_all = np.array(logps).reshape(len(logps), len(regions))
    return played, clashes, independent, rows, z_all, logp_all
