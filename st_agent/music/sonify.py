"""``st-agent sonify``: any time series becomes music, phrase by phrase.

The series is read, resampled to phrase rate, scaled by its quantiles and
smoothed (:mod:`st_agent.music.series`); each mapped column drives one knob
(valence, tempo or energy) between the ends of ``knob_range``; the composer
writes one 4-bar phrase per value, continuing the previous phrase
(:class:`~st_agent.music.piece.PhrasePlayer`).

Whether a listener can hear the series is measured, not assumed: per column,
the Spearman rank correlation between the column at phrase rate (inverted when
the map inverts it) and what was measured of the music -- tempo (BPM from the
MIDI), density (melody notes per beat), register (mean melody pitch), mode
(major or minor, by key-finding on the MIDI), loudness
(LUFS), spectral centroid and onset rate (from the audio). The feature a knob
mainly moves is its *heard* feature: tempo -> BPM, energy -> density,
valence -> register.

Writes into ``out``: ``piece.wav``, ``piece.mid``, ``piece.abc`` (the score, a
comment per phrase with its knobs and the column values behind them),
``series.png`` (each knob's column against the knob and the measured feature),
``legend.txt`` (which column drove which knob, with the scaling),
``phrases.json`` (per phrase: the series values, knobs, MIDI and audio
features) and ``summary.json`` (config, legend, Spearman table).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.music.piece_config import KNOBS, SonifyConfig, out_dir, parse_map
from st_agent.music.series import (
    Series,
    read_series,
    resample_to_phrases,
    robust_scale,
    smooth,
)
from st_agent.types import Knobs

__all__ = ["HEARD_FEATURE", "MEASURED", "SonifyConfig", "SonifyResult", "knob_plan",
           "measured_table", "sonify", "spearman_table"]

logger = logging.getLogger(__name__)

#: What is measured of each phrase: name -> (source, attribute, label).
MEASURED: dict[str, tuple[str, str, str]] = {
    "tempo_bpm": ("midi", "bpm", "tempo (BPM)"),
    "density": ("midi", "notes_per_beat", "density (melody notes/beat)"),
    "register": ("midi", "mean_pitch", "register (mean melody pitch)"),
    "major": ("midi", "mode", "mode (1 = major, by key-finding)"),
    "loudness_lufs": ("audio", "loudness_lufs", "loudness (LUFS)"),
    "centroid_hz": ("audio", "spectral_centroid_hz", "spectral centroid (Hz)"),
    "onset_rate": ("audio", "onset_rate_hz", "onset rate (1/s)"),
}
#: The measured feature each knob mainly moves.
HEARD_FEATURE = {"valence": "register", "tempo": "tempo_bpm", "energy": "density"}


@dataclass
class SonifyResult:
    """What ``sonify`` wrote and measured.

    Parameters
    ----------
    folder : Path
    wav_path, midi_path, score_path, plot_path : Path or None
    n_phrases : int
    legend : list of dict
        Per knob: the column that drove it (or the value it held), scaling.
    spearman : dict
        ``column -> {measured feature -> rho}`` (None where undefined).
    music_sec : float
        Length of the piece, seconds.
    """

    folder: Path
    wav_path: Path | None
    midi_path: Path
    score_path: Path
    plot_path: Path | None
    n_phrases: int
    legend: list[dict[str, Any]]
    spearman: dict[str, dict[str, float | None]]
    music_sec: float


def _mapping(cfg: SonifyConfig, series: Series) -> dict[str, tuple[str, bool]]:
    mapping = parse_map(cfg.map)
    if not mapping:
        mapping = {k: (c, False) for k, c in zip(KNOBS, series.names, strict=False)}
    for knob, (col, _) in mapping.items():
        if col not in series.names:
            raise ValueError(f"--map {knob}={col}: column {col!r} is not among the columns "
                             f"read ({', '.join(series.names)}); add it to --columns")
    return mapping


def _n_phrases(cfg: SonifyConfig, n_rows: int) -> int:
    if cfg.bars_per_row > 0:
        return int(min(max(math.ceil(n_rows * cfg.bars_per_row / 4), 2), 512))
    return cfg.phrases


def knob_plan(scaled: np.ndarray, names: tuple[str, ...], mapping: dict[str, tuple[str, bool]],
              knob_range: tuple[float, float], hold: tuple[float, float, float]
              ) -> np.ndarray:
    """Knob values per phrase from the scaled (and smoothed) columns.

    Parameters
    ----------
    scaled : ndarray, shape (n_phrases, C)
        Columns in [0, 1].
    names : tuple of str
        Column names (C).
    mapping : dict
        ``knob -> (column, inverted)``.
    knob_range : (float, float)
        Knob values of scaled 0 and 1.
    hold : (float, float, float)
        Valence, tempo, energy of unmapped knobs.

    Returns
    -------
    knobs : ndarray, shape (n_phrases, 3)
        Valence, tempo, energy in [0, 1].
    """
    lo, hi = knob_range
    out = np.tile(np.asarray(hold, dtype=np.float64), (scaled.shape[0], 1))
    for i, knob in enumerate(KNOBS):
        if knob in mapping:
            col, inv = mapping[knob]
            v = scaled[:, names.index(col)]
            out[:, i] = lo + (hi - lo) * (1.0 - v if inv else v)
    return np.clip(out, 0.0, 1.0)


def measured_table(items: list[Any]) -> dict[str, np.ndarray]:
    """``MEASURED`` name -> values per phrase, shape (n_phrases,)."""
    def value(it: Any, src: str, attr: str) -> float:
        v = getattr(getattr(it, src), attr)
        return float(v == "major") if attr == "mode" else float(v)

    return {name: np.array([value(it, src, attr) for it in items], dtype=np.float64)
            for name, (src, attr, _) in MEASURED.items()}


def spearman_table(drivers: dict[str, np.ndarray], measured: dict[str, np.ndarray]
                   ) -> dict[str, dict[str, float | None]]:
    """Spearman rho of each driver series with each measured feature (None if undefined)."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, float | None]] = {}
    for col, x in drivers.items():
        row: dict[str, float | None] = {}
        for name, y in measured.items():
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                row[name] = None
            else:
                rho = float(spearmanr(x, y).statistic)
                row[name] = rho if math.isfinite(rho) else None
        out[col] = row
    return out


def _legend(mapping: dict[str, tuple[str, bool]], limits: np.ndarray, names: tuple[str, ...],
            cfg: SonifyConfig, spearman: dict[str, dict[str, float | None]]
            ) -> list[dict[str, Any]]:
    rows = []
    for i, knob in enumerate(KNOBS):
        heard = HEARD_FEATURE[knob]
        if knob not in mapping:
            rows.append({"knob": knob, "column": None, "held": cfg.hold[i], "heard": heard})
            continue
        col, inv = mapping[knob]
        j = names.index(col)
        rows.append({"knob": knob, "column": col, "inverted": inv,
                     "quantiles": list(cfg.quantiles),
                     "column_at_quantiles": [float(limits[j, 0]), float(limits[j, 1])],
                     "knob_range": list(cfg.knob_range), "heard": heard,
                     "spearman_heard": spearman.get(("-" if inv else "") + col, {}).get(heard)})
    return rows


def _legend_text(legend: list[dict[str, Any]], cfg: SonifyConfig, unit: str, aggregate: str,
                 n: int) -> str:
    what = "mean" if aggregate == "mean" else "rms about its mean (the amplitude)"
    lines = [f"sonification of {cfg.data}: time in {unit}; {n} phrases, each the {what} "
             "of its rows", ""]
    for row in legend:
        if row["column"] is None:
            lines.append(f"{row['knob']:<8} held at {row['held']:.2f} (no column)")
            continue
        a, b = row["column_at_quantiles"]
        lo, hi = row["knob_range"]
        arrow = f"{hi:.2f} -> {lo:.2f}" if row["inverted"] else f"{lo:.2f} -> {hi:.2f}"
        rho = row["spearman_heard"]
        lines.append(
            f"{row['knob']:<8} <- {'-' if row['inverted'] else ''}{row['column']}: "
            f"{a:.4g} .. {b:.4g} (its {row['quantiles'][0]:.0%}..{row['quantiles'][1]:.0%} "
            f"quantiles) -> knob {arrow}; heard as {MEASURED[row['heard']][2]}, Spearman "
            + ("n/a" if rho is None else f"{rho:+.2f}"))
    return "\n".join(lines) + "\n"


def sonify(cfg: SonifyConfig) -> SonifyResult:
    """Read, scale and map a series, compose and render the piece, measure it.

    Raises
    ------
    FileNotFoundError
        When the data file or the soundfont is missing.
    ValueError
        For a missing, non-numeric or constant column, a --map column that was
        not read, or too few rows (the message names the column and the fix).
    """
    series = read_series(cfg.data, cfg.column_list(), cfg.time_column, cfg.window)
    mapping = _mapping(cfg, series)
    used = tuple(dict.fromkeys(c for c, _ in mapping.values()))
    n = _n_phrases(cfg, series.n_rows)
    aggregate = cfg.aggregate if cfg.aggregate != "auto" else (
        "rms" if series.kind == "recording" else "mean")
    per_phrase, centres = resample_to_phrases(series, n, aggregate)
    j_used = [series.names.index(c) for c in used]
    scaled, limits = robust_scale(per_phrase[:, j_used], cfg.quantiles, used)
    knobs = knob_plan(smooth(scaled, cfg.smooth), used, mapping, cfg.knob_range, cfg.hold)
    # the data is fine: now load the heavy parts (torch, FluidSynth)
    from st_agent.music.composer import Composer, ComposerConfig
    from st_agent.music.piece import (
        PhrasePlayer,
        join_midi,
        phrase_rows,
        score_abc,
        write_json,
        write_piece_wav,
    )
    from st_agent.music.render import AudioRenderer, find_soundfont

    find_soundfont(cfg.soundfont)  # fail before composing when it is missing
    out = out_dir(cfg.out, "sonify")
    out.mkdir(parents=True, exist_ok=True)
    composer = Composer(ComposerConfig(checkpoint=cfg.checkpoint))
    with AudioRenderer(cfg.soundfont) as synth:
        player = PhrasePlayer(composer, synth)
        items = player.play_all([Knobs(*row) for row in knobs], seed=cfg.seed)
        rate = player.sample_rate
    measured = measured_table(items)
    drivers = {}  # each column as it drives its knob (inverted where the map inverts it)
    for col, inv in mapping.values():
        x = per_phrase[:, series.names.index(col)]
        drivers[("-" if inv else "") + col] = -x if inv else x
    rho = spearman_table(drivers, measured)
    legend = _legend(mapping, limits, used, cfg, rho)
    for i, it in enumerate(items):
        it.info["series_time"] = float(centres[i])
        it.info["series"] = {c: float(per_phrase[i, series.names.index(c)]) for c in used}
    comments = [f"phrase {i}: {series.time_unit} {centres[i]:.4g}: "
                + ", ".join(f"{k}={v:.2f}" for k, v in zip(KNOBS, knobs[i], strict=True))
                for i in range(n)]
    score = out / "piece.abc"
    title = f"sonification of {Path(cfg.data).name}"
    score.write_text(score_abc([it.phrase for it in items], title, comments), encoding="utf-8")
    midi = out / "piece.mid"
    join_midi(items).write(str(midi))
    wav = write_piece_wav(out / "piece.wav", [it.samples for it in items], rate) \
        if cfg.wav else None
    (out / "legend.txt").write_text(_legend_text(legend, cfg, series.time_unit, aggregate, n),
                                    encoding="utf-8")
    music_sec = float(sum(it.duration_sec for it in items))
    write_json(out / "phrases.json", phrase_rows(items))
    write_json(out / "summary.json", {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "rows": series.n_rows, "phrases": n, "aggregate": aggregate, "music_sec": music_sec,
        "legend": legend, "spearman": rho,
        "audio_extract_sec_mean": float(np.mean([it.extract_sec for it in items]))})
    plot = _plot(out / "series.png", items, scaled, used, mapping, knobs, measured, rho) \
        if cfg.plot else None
    logger.info("wrote %s: %d phrases, %.0f s of music", out, n, music_sec)
    return SonifyResult(out, wav, midi, score, plot, n, legend, rho, music_sec)


def _plot(path: Path, items: list[Any], scaled: np.ndarray, used: tuple[str, ...],
          mapping: dict[str, tuple[str, bool]], knobs: np.ndarray,
          measured: dict[str, np.ndarray], rho: dict[str, dict[str, float | None]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = np.cumsum([0.0] + [it.duration_sec for it in items])[:-1]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    for ax, (i, knob) in zip(axes, enumerate(KNOBS), strict=True):
        heard = HEARD_FEATURE[knob]
        ax.step(starts, knobs[:, i], where="post", color="tab:blue", label=f"{knob} knob")
        title = f"{knob}: held"
        if knob in mapping:
            col, inv = mapping[knob]
            v = scaled[:, used.index(col)]
            ax.plot(starts, 1.0 - v if inv else v, "o", color="tab:gray", ms=4,
                    label=f"{'-' if inv else ''}{col} (scaled)")
            r = rho[("-" if inv else "") + col][heard]
            title = (f"{knob} <- {'-' if inv else ''}{col}; heard as {MEASURED[heard][2]}, "
                     f"Spearman {'n/a' if r is None else f'{r:+.2f}'}")
        y = measured[heard]
        span = np.ptp(y)
        ax.plot(starts, (y - y.min()) / span if span > 0 else np.full_like(y, 0.5), "--",
                color="tab:red", label=f"measured {heard} (min-max)")
        ax.set(ylim=(-0.05, 1.05), title=title)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("music time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
