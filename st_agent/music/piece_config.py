"""Settings of the commands that make a piece from data, importable without torch or MNE.

``st-agent sonify`` (:mod:`st_agent.music.sonify`), ``st-agent transition``
(:mod:`st_agent.music.transition`) and ``st-agent brain-voices``
(:mod:`st_agent.live.brain_voices`) read these dataclasses to build their
options; each validates what it can without reading a file (``__post_init__``),
so a bad option stops before any model or recording is loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

__all__ = [
    "BANDS_HZ",
    "KNOBS",
    "BrainVoicesConfig",
    "SonifyConfig",
    "TransitionConfig",
    "band_hz",
    "out_dir",
    "parse_columns",
    "parse_knob_spec",
    "parse_map",
]

KNOBS = ("valence", "tempo", "energy")
_MAX_PHRASES = 512


def parse_columns(spec: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; empty -> ``()``.

    Raises
    ------
    ValueError
        For an empty name between commas or a name given twice.
    """
    if not spec.strip():
        return ()
    names = tuple(s.strip() for s in spec.split(","))
    if any(not n for n in names):
        raise ValueError(f"--columns {spec!r} has an empty name; give names separated by "
                         "commas, e.g. --columns a,b,c")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--columns names {dup} more than once; give each column once")
    return names


def parse_map(spec: str) -> dict[str, tuple[str, bool]]:
    """``"valence=a,tempo=-b"`` -> ``{"valence": ("a", False), "tempo": ("b", True)}``.

    A leading ``-`` on a column inverts it (the knob falls as the column rises).

    Raises
    ------
    ValueError
        For a pair without ``=``, an unknown knob, a knob given twice or an
        empty column name; the message names the pair and the allowed knobs.
    """
    out: dict[str, tuple[str, bool]] = {}
    if not spec.strip():
        return out
    for pair in spec.split(","):
        knob, sep, col = (s.strip() for s in pair.partition("="))
        if not sep:
            raise ValueError(f"--map pair {pair.strip()!r} has no '='; write knob=column, "
                             f"e.g. --map valence=a,tempo=b,energy=c")
        if knob not in KNOBS:
            raise ValueError(f"--map names unknown knob {knob!r}; choose from {list(KNOBS)}")
        if knob in out:
            raise ValueError(f"--map gives knob {knob!r} twice; map each knob at most once")
        invert = col.startswith("-")
        col = col[1:].strip() if invert else col
        if not col:
            raise ValueError(f"--map pair {pair.strip()!r} has no column name after '='")
        out[knob] = (col, invert)
    return out


def parse_knob_spec(name: str, spec: str, presets: tuple[str, ...]) -> str | tuple[float, ...]:
    """A preset name, or three knob values ``"v,t,e"`` in [0, 1].

    Raises
    ------
    ValueError
        For an unknown preset or values outside [0, 1]; the message lists the presets.
    """
    spec = spec.strip()
    if spec in presets:
        return spec
    parts = spec.split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        raise ValueError(f"--{name} {spec!r} is neither a preset ({', '.join(presets)}) nor "
                         "three knob values valence,tempo,energy in [0, 1] such as 0.6,0.1,0.1")
    return vals


def _check_range(name: str, lo_hi: tuple[float, float], lo: float, hi: float) -> None:
    a, b = lo_hi
    if not (math.isfinite(a) and math.isfinite(b) and lo <= a < b <= hi):
        raise ValueError(f"{name} must be two numbers with {lo:g} <= low < high <= {hi:g}, "
                         f"got {lo_hi!r}")


def out_dir(out: Path | None, default: str) -> Path:
    """``out``, or ``<runs dir>/<default>`` when it is None (:func:`st_agent.paths.runs_dir`)."""
    from st_agent.paths import runs_dir

    return Path(out) if out is not None else runs_dir() / default


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


@dataclass
class SonifyConfig:
    """Turn a time series into music phrase by phrase (``st-agent sonify``)."""

    data: tyro.conf.Positional[Path]
    """The series: a CSV/TSV table (a header row, one row per sample), a Parquet table
    (needs pyarrow) or a recording MNE reads (.edf, .bdf, .fif, .vhdr, .set, .gdf)."""
    out: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output folder (created); None = ``<runs dir>/sonify`` (see st_agent.paths)."""
    columns: str = ""
    """Columns (or channels) to use, comma-separated; empty = those --map names, else
    the first three numeric columns."""
    map: str = ""
    """Which column drives which knob: knob=column pairs, comma-separated, e.g.
    valence=a,tempo=b,energy=c; a leading '-' inverts a column (tempo=-b). Empty: the
    columns drive valence, tempo and energy in that order. Unmapped knobs hold --hold."""
    time_column: str = ""
    """Numeric column holding each row's time (it must increase); empty = the row number
    (a recording's time is in seconds)."""
    window: tuple[float, float] | None = None
    """Only the rows with start <= time < stop (time column, row number or seconds)."""
    phrases: int = 16
    """Number of 4-bar phrases the series becomes."""
    bars_per_row: float = 0.0
    """If > 0: bars of music per input row (after the window), overriding --phrases
    (phrases = rows * bars_per_row / 4, rounded up)."""
    quantiles: tuple[float, float] = (0.05, 0.95)
    """Robust scaling: these quantiles of each column map to the ends of --knob-range."""
    smooth: float = 0.5
    """Gaussian smoothing at phrase rate, sigma in phrases (0 = none)."""
    knob_range: tuple[float, float] = (0.05, 0.95)
    """Knob values the low and high quantile map to."""
    hold: tuple[float, float, float] = (0.6, 0.5, 0.5)
    """Knobs (valence, tempo, energy) for the knobs no column drives."""
    aggregate: Literal["auto", "mean", "rms"] = "auto"
    """How the rows inside one phrase become one value: mean, or rms (of the deviation
    from the phrase's mean: the signal's amplitude); auto = mean for tables, rms for
    recordings."""
    seed: int = 0
    """Seed of the composer (phrase i uses seed + i)."""
    wav: bool = True
    """Also synthesise a WAV with FluidSynth."""
    plot: bool = True
    """Also draw series.png (the series against the knobs and the measured music)."""
    soundfont: Path | None = None
    """SoundFont (.sf2); None = TimGM6mb.sf2 shipped with pretty_midi."""
    checkpoint: Path | None = None
    """Composer checkpoint folder; None = the bundled one."""

    def __post_init__(self) -> None:
        cols = parse_columns(self.columns)
        mapping = parse_map(self.map)
        missing = [c for c, _ in mapping.values() if cols and c not in cols]
        if missing:
            raise ValueError(f"--map names column {missing[0]!r} that --columns does not list "
                             f"({', '.join(cols)}); add it to --columns or fix --map")
        if not mapping and len(cols) > 3:
            raise ValueError(f"--columns lists {len(cols)} columns but without --map only three "
                             "knobs can be driven; give --map knob=column pairs")
        if self.time_column and self.time_column in cols:
            raise ValueError(f"--time-column {self.time_column!r} is also in --columns; a column "
                             "is either the time or a series")
        if self.window is not None and not (math.isfinite(self.window[0])
                                            and math.isfinite(self.window[1])
                                            and self.window[0] < self.window[1]):
            raise ValueError(f"--window must be start stop with start < stop, got {self.window}")
        _check_int("phrases", self.phrases, 2, _MAX_PHRASES)
        if not (math.isfinite(self.bars_per_row) and 0.0 <= self.bars_per_row <= 64.0):
            raise ValueError(f"bars_per_row must be in [0, 64] (0 = use --phrases), "
                             f"got {self.bars_per_row!r}")
        _check_range("quantiles", self.quantiles, 0.0, 1.0)
        _check_range("knob_range", self.knob_range, 0.0, 1.0)
        if not (math.isfinite(self.smooth) and 0.0 <= self.smooth <= 16.0):
            raise ValueError(f"smooth must be a sigma in [0, 16] phrases, got {self.smooth!r}")
        from st_agent.types import Knobs

        Knobs(*self.hold)  # range checks, naming the knob

    def column_list(self) -> tuple[str, ...]:
        """The columns named by --columns, or those --map names."""
        cols = parse_columns(self.columns)
        return cols or tuple(dict.fromkeys(c for c, _ in parse_map(self.map).values()))


@dataclass
class TransitionConfig:
    """Move smoothly from one musical state to another (``st-agent transition``)."""

    from_: Annotated[str, tyro.conf.arg(name="from")] = "calm"
    """Start: a target preset (calm, focus, uplift, energize; its fixed baseline knobs)
    or three knobs valence,tempo,energy in [0, 1]."""
    to: str = "focus"
    """End state, as --from."""
    minutes: float = 3.0
    """Length of the transition (music time)."""
    out: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output folder (created); None = ``<runs dir>/transition`` (see st_agent.paths)."""
    candidates: int = 3
    """Phrases composed per step (seeds); the one whose audio features are closest to
    the plan is played."""
    calibration_points: int = 7
    """Knob settings along the path whose audio is measured before planning (the ends,
    the middle, then the middle of the segment where the audio changes most, ...)."""
    calibration_seeds: int = 2
    """Phrases measured per calibration point (their median is used)."""
    max_step: float = 0.0
    """If > 0: refuse a plan whose predicted largest step (audio-feature units) exceeds
    this (the message says how many minutes it needs)."""
    compare_direct: bool = True
    """Also play the straight jump (start state, then the end state from half-way) with
    the same candidates and seeds, and compare the largest steps."""
    seed: int = 0
    """Seed of the composer."""
    wav: bool = True
    """Also write transition.wav (and direct.wav)."""
    plot: bool = True
    """Also draw transition.png."""
    soundfont: Path | None = None
    """SoundFont (.sf2); None = TimGM6mb.sf2 shipped with pretty_midi."""
    checkpoint: Path | None = None
    """Composer checkpoint folder; None = the bundled one."""

    def __post_init__(self) -> None:
        from st_agent.contract import TARGET_PRESETS

        presets = tuple(sorted(TARGET_PRESETS))
        parse_knob_spec("from", self.from_, presets)
        parse_knob_spec("to", self.to, presets)
        if not (math.isfinite(self.minutes) and 0.1 <= self.minutes <= 60.0):
            raise ValueError(f"minutes must be in [0.1, 60], got {self.minutes!r}")
        _check_int("candidates", self.candidates, 1, 16)
        _check_int("calibration_points", self.calibration_points, 2, 17)
        _check_int("calibration_seeds", self.calibration_seeds, 1, 8)
        if not (math.isfinite(self.max_step) and self.max_step >= 0):
            raise ValueError(f"max_step must be >= 0 (0 = no limit), got {self.max_step!r}")


@dataclass
class BrainVoicesConfig:
    """Brain regions as the voices of one piece (``st-agent brain-voices``)."""

    recording: tyro.conf.Positional[Path | None] = None
    """An EEG recording MNE reads (.edf, .bdf, .fif, .vhdr, .set, .gdf) with 10-20/10-10
    channel names (Fp1, C3, O2, ...; prefixes such as 'EEG ' and trailing dots are fine).
    Leave it out and give --board to play a live board instead."""
    board: str = ""
    """Live instead of a file: a board as ``st-agent session --board`` takes it
    (synthetic, virtual, lsl:<name>, file:<path> played back, a BrainFlow name or id)."""
    serial_port: str = ""
    """With --board: serial port of the board or its dongle (Cyton: /dev/ttyUSB0)."""
    mac_address: str = ""
    """With --board: Bluetooth MAC address (Muse, Ganglion native)."""
    other_info: str = ""
    """With --board: BrainFlow's other_info for boards that need it."""
    minutes: float = 2.0
    """With --board: minutes of music after the baseline."""
    accelerated: bool = False
    """With --board virtual or file:<path>: run on the stream's clock as fast as the CPU
    allows instead of waiting for the wall clock."""
    play: bool = False
    """With --board: play the voices live through FluidSynth's audio driver as they are
    made (piece.wav is streamed either way; without an audio device: the WAV only)."""
    no_audio: bool = False
    """With --board: no live sound from this program (--play is refused); piece.wav is
    still written."""
    out: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output folder (created); None = ``<runs dir>/brain-voices`` (see st_agent.paths)."""
    regions: Literal["lobes", "hemispheres"] = "lobes"
    """lobes: frontal, central, temporal, parietal, occipital; hemispheres: each lobe
    split into left and right (midline channels left out)."""
    band: str = "alpha"
    """Band whose power is a region's activity: delta, theta, alpha, beta, gamma, or
    LOW-HIGH in Hz (e.g. 8-13)."""
    max_voices: int = 4
    """Most voices sounding at once (2..8): the regions whose activity varies most."""
    phrases: int = 0
    """Number of 4-bar phrases; 0 = real time (each phrase covers as many seconds of the
    recording as it lasts)."""
    window: tuple[float, float] | None = None
    """Only this part of the recording, start stop in seconds."""
    baseline_sec: float = 0.0
    """The baseline of each region: the median of its activity over the first this-many
    seconds; 0 = over the whole recording (with --board: the first 60 s)."""
    tempo: float = 0.35
    """Shared tempo knob in [0, 1]."""
    candidates: int = 4
    """Phrases composed per voice per step; the combination with the fewest clashes
    (the jam's clash measure) is played. 1 = independent voices."""
    seed: int = 0
    """Seed of the composer."""
    wav: bool = True
    """Also synthesise a WAV with FluidSynth."""
    plot: bool = True
    """Also draw regions.png (each region's activity and its voice)."""
    soundfont: Path | None = None
    """SoundFont (.sf2); None = TimGM6mb.sf2 shipped with pretty_midi."""
    checkpoint: Path | None = None
    """Composer checkpoint folder; None = the bundled one."""

    def __post_init__(self) -> None:
        band_hz(self.band)
        self._check_source()
        _check_int("max_voices", self.max_voices, 2, 8)
        if self.phrases != 0:
            _check_int("phrases", self.phrases, 2, _MAX_PHRASES)
        if self.window is not None and not (0.0 <= self.window[0] < self.window[1]):
            raise ValueError(f"--window must be start stop in seconds with 0 <= start < stop, "
                             f"got {self.window}")
        if not (math.isfinite(self.baseline_sec) and self.baseline_sec >= 0):
            raise ValueError(f"baseline_sec must be >= 0 seconds, got {self.baseline_sec!r}")
        if not (math.isfinite(self.tempo) and 0.0 <= self.tempo <= 1.0):
            raise ValueError(f"tempo must be in [0, 1], got {self.tempo!r}")
        _check_int("candidates", self.candidates, 1, 16)
        self._check_playback()

    def _check_playback(self) -> None:
        """--play and --no-audio: live sound needs --board."""
        from st_agent.errors import UsageError

        for flag in ("play", "no_audio"):
            if not isinstance(getattr(self, flag), bool):
                raise UsageError(f"--{flag.replace('_', '-')} must be True or False, got "
                                 f"{getattr(self, flag)!r}")
        if self.play and self.no_audio:
            raise UsageError("--no-audio turns live sound off; it cannot be combined with "
                             "--play")
        if self.play and not self.board:
            raise UsageError("--play plays a live board (--board); a recording is written "
                             "to piece.wav: play that file")

    def _check_source(self) -> None:
        """A recording or a --board (with only the flags that apply to it)."""
        from st_agent.errors import UsageError

        board = self.board.strip() if isinstance(self.board, str) else self.board
        if not isinstance(board, str):
            raise UsageError(f"--board must be a board name, got {self.board!r}")
        if (self.recording is None) == (not board):
            raise UsageError("brain-voices needs either a recording (st-agent brain-voices "
                             "rec.edf) or --board (e.g. --board virtual), not "
                             + ("both" if board else "neither"))
        if not board:
            for flag in ("serial_port", "mac_address", "other_info"):
                if getattr(self, flag):
                    raise UsageError(f"--{flag.replace('_', '-')} needs --board")
            if self.accelerated:
                raise UsageError("--accelerated needs --board virtual or --board file:<path>")
            return
        if self.phrases or self.window is not None:
            raise UsageError("--phrases and --window apply to a recording; with --board the "
                             "length is --minutes")
        if not (math.isfinite(self.minutes) and 0.05 <= self.minutes <= 240.0):
            raise UsageError(f"--minutes must be in [0.05, 240], got {self.minutes!r}")
        if self.accelerated and not (board == "virtual" or board.lower().startswith("file:")):
            raise UsageError(f"--accelerated needs --board virtual or file:<path>; --board "
                             f"{board!r} streams in real time")

    def live_baseline_sec(self) -> float:
        """Seconds of the stream that form the baseline with --board (0 -> 60 s)."""
        return self.baseline_sec if self.baseline_sec > 0 else 60.0


#: EEG bands (Hz) by name, as the estimator's conventional limits.
BANDS_HZ: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}


def band_hz(spec: str) -> tuple[float, float]:
    """A band name or ``"LOW-HIGH"`` in Hz -> ``(low, high)``.

    Raises
    ------
    ValueError
        For an unknown name or limits outside 0 < low < high <= 200 Hz.
    """
    s = spec.strip().lower()
    if s in BANDS_HZ:
        return BANDS_HZ[s]
    m = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*(hz)?", s)
    if m:
        try:
            lo, hi = float(m.group(1)), float(m.group(2))
        except ValueError:
            lo, hi = 0.0, 0.0
        if 0.0 < lo < hi <= 200.0:
            return lo, hi
    raise ValueError(f"band {spec!r} is neither one of {sorted(BANDS_HZ)} nor LOW-HIGH in Hz "
                     "with 0 < LOW < HIGH <= 200 (e.g. 8-13)")
