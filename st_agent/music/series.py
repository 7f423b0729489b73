"""Time series for sonification: reading, resampling to phrase rate, robust scaling.

The chain of ``st-agent sonify`` before any music is made:

1. :func:`read_series` reads a table (CSV/TSV with a header row; Parquet when
   pyarrow is installed) or a recording MNE reads (through
   :class:`st_agent.biometrics.sources.FileSource`, channels as columns, time in
   seconds), keeps the requested columns and the time window, and checks every
   column: present, numeric, not constant. Empty cells are filled by linear
   interpolation in time (their count is logged).
2. :func:`resample_to_phrases` cuts the time span into ``n`` equal bins, one per
   phrase, and reduces each bin to one value (its mean, or the RMS of its
   deviation from the mean: the amplitude of a signal such as EEG). A bin
   without rows takes the value interpolated at its centre.
3. :func:`robust_scale` maps the ``q_lo`` and ``q_hi`` quantiles of each column
   (over the phrases) to 0 and 1 and clips outside: a few outliers do not
   squash the rest.
4. :func:`smooth` applies a Gaussian of ``sigma`` phrases (edges: nearest).

Shapes: ``values`` is ``(n_rows, n_columns)``; phrase-rate arrays are
``(n_phrases, n_columns)``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "RECORDING_EXTS",
    "Series",
    "read_series",
    "resample_to_phrases",
    "robust_scale",
    "smooth",
]

logger = logging.getLogger(__name__)

#: Extensions read as recordings (MNE readers).
RECORDING_EXTS = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".gdf", ".set")
_TABLE_EXTS = (".csv", ".tsv", ".txt", ".parquet", ".pq")
_MAX_MISSING = 0.5  # a column with more empty cells than this fraction is refused


@dataclass(frozen=True)
class Series:
    """Columns of numbers against time.

    Parameters
    ----------
    names : tuple of str
        Column (or channel) names, C.
    values : ndarray, shape (n_rows, C)
        Finite values.
    time : ndarray, shape (n_rows,)
        Increasing time of each row, in ``time_unit``.
    time_unit : str
        ``"row"``, ``"s"`` (a recording) or the name of the time column.
    kind : {"table", "recording"}
    """

    names: tuple[str, ...]
    values: np.ndarray
    time: np.ndarray
    time_unit: str
    kind: str

    def __post_init__(self) -> None:
        assert self.values.shape == (self.time.size, len(self.names)), (
            self.values.shape, self.time.size, len(self.names))

    @property
    def n_rows(self) -> int:
        """Rows (samples)."""
        return int(self.time.size)


def _missing_column(name: str, available: Sequence[str], where: str) -> ValueError:
    close = difflib.get_close_matches(name, list(available), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(list(available)[:30]) + (" ..." if len(available) > 30 else "")
    return ValueError(f"column {name!r} is not in {where}{hint}; its columns are: {shown}. "
                      "Fix --columns/--map (names are case-sensitive)")


def _read_table(path: Path) -> object:
    import pandas as pd

    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError as e:
            raise ImportError(f"reading {path.name} (Parquet) needs pyarrow: pip install "
                              "pyarrow, or save the table as CSV") from e
    try:
        return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read it as a table with a header row "
                         f"({type(e).__name__}: {e})") from e


def _numeric_column(frame: object, name: str, path: Path) -> np.ndarray:
    import pandas as pd

    raw = frame[name]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bool(bad.any()):
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"column {name!r} of {path.name} is not numeric: row {row + 1} holds "
                         f"{raw.iloc[row]!r}; convert it to numbers or leave it out of "
                         "--columns/--map")
    return num.to_numpy(dtype=np.float64)


def _read_recording(path: Path) -> tuple[list[str], np.ndarray, float]:
    from st_agent.biometrics.sources import FileSource

    src = FileSource(path, chunk_sec=60.0)
    chunks = []
    with src:
        for chunk in src.iter_chunks():
            chunks.append(chunk.data)
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((len(src.ch_names), 0))
    return list(src.ch_names), data.T, float(src.sfreq)  # (n_times, C)


def _fill_missing(name: str, x: np.ndarray, time: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    if ok.all():
        return x
    if ok.mean() < 1.0 - _MAX_MISSING or ok.sum() < 2:
        raise ValueError(f"column {name!r} has {int((~ok).sum())} empty or non-finite cells "
                         f"of {x.size}; fill them in or leave the column out")
    logger.warning("column %r: %d empty cells filled by linear interpolation", name,
                   int((~ok).sum()))
    return np.interp(time, time[ok], x[ok])


def _table_columns(path: Path, columns: Sequence[str], time_column: str
                   ) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """Columns (names, values (n_rows, C)), time and time unit of a table."""
    import pandas as pd

    frame = _read_table(path)
    available = [str(c) for c in frame.columns]
    if time_column and time_column not in available:
        raise _missing_column(time_column, available, path.name)
    cols = list(columns) or [c for c in available if c != time_column
                             and pd.api.types.is_numeric_dtype(frame[c])][:3]
    if not cols:
        raise ValueError(f"{path.name} has no numeric column; name the columns with --columns")
    for c in cols:
        if c not in available:
            raise _missing_column(c, available, path.name)
    values = np.column_stack([_numeric_column(frame, c, path) for c in cols])
    if not time_column:
        return cols, values, np.arange(values.shape[0], dtype=np.float64), "row"
    time = _numeric_column(frame, time_column, path)
    if not np.all(np.isfinite(time)) or np.any(np.diff(time) <= 0):
        raise ValueError(f"time column {time_column!r} must hold finite numbers that "
                         "increase from row to row; sort the table or drop --time-column")
    return cols, values, time, time_column


def read_series(path: str | Path, columns: Sequence[str], time_column: str = "",
                window: tuple[float, float] | None = None) -> Series:
    """Read the chosen columns of a table or channels of a recording.

    Parameters
    ----------
    path : str or Path
        CSV/TSV (header row), Parquet, or a recording (:data:`RECORDING_EXTS`).
    columns : sequence of str
        Columns to keep; empty = the first three numeric columns (or channels).
    time_column : str
        Numeric, increasing column holding the time of each row; ``""`` = the row
        number (seconds for a recording).
    window : (float, float), optional
        Keep rows with ``start <= time < stop``.

    Returns
    -------
    series : Series

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        For an unknown extension, a column that is missing, not numeric, mostly
        empty or constant, a time column that does not increase, or fewer than
        two rows in the window; each message names the column and the fix.
    ImportError
        For Parquet without pyarrow.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    lower = path.name.lower()
    if lower.endswith(RECORDING_EXTS):
        if time_column:
            raise ValueError(f"{path.name} is a recording: its time is in seconds; drop "
                             "--time-column")
        names, values, sfreq = _read_recording(path)
        cols = list(columns) or names[:3]
        for c in cols:
            if c not in names:
                raise _missing_column(c, names, path.name)
        values = values[:, [names.index(c) for c in cols]]
        time, unit, kind = np.arange(values.shape[0]) / sfreq, "s", "recording"
    elif lower.endswith(_TABLE_EXTS):
        cols, values, time, unit = _table_columns(path, columns, time_column)
        kind = "table"
    else:
        raise ValueError(f"{path.name}: unsupported extension; use a table "
                         f"({', '.join(_TABLE_EXTS)}) or a recording ({', '.join(RECORDING_EXTS)})")
    if window is not None:
        keep = (time >= window[0]) & (time < window[1])
        values, time = values[keep], time[keep]
    if time.size < 2:
        raise ValueError(f"{path.name} has {time.size} row(s) in the window {window} "
                         f"({unit}); it needs at least 2: widen --window")
    values = np.column_stack([_fill_missing(c, values[:, i], time) for i, c in enumerate(cols)])
    for i, c in enumerate(cols):
        if np.ptp(values[:, i]) == 0:
            raise ValueError(f"column {c!r} is constant (every value {values[0, i]:g}) in the "
                             "rows used: it cannot drive a knob. Leave it out of --columns/--map "
                             "or widen --window")
    return Series(tuple(cols), values, time.astype(np.float64), unit, kind)


def resample_to_phrases(series: Series, n_phrases: int, aggregate: str = "mean"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One value per phrase and column: equal time bins, each reduced to one value.

    Parameters
    ----------
    series : Series
    n_phrases : int
        Number of bins (>= 2).
    aggregate : {"mean", "rms"}
        ``mean`` of the rows in a bin, or ``rms`` of their deviation from the
        bin's mean (needs at least two rows per bin).

    Returns
    -------
    per_phrase : ndarray, shape (n_phrases, C)
    centres : ndarray, shape (n_phrases,)
        Bin centres, in the series' time unit.

    Raises
    ------
    ValueError
        For a bad ``aggregate`` or ``n_phrases``, or ``rms`` with a bin of fewer than two rows.
    """
    if aggregate not in ("mean", "rms"):
        raise ValueError(f"aggregate must be 'mean' or 'rms', got {aggregate!r}")
    if isinstance(n_phrases, bool) or not isinstance(n_phrases, int) or n_phrases < 2:
        raise ValueError(f"n_phrases must be an int >= 2, got {n_phrases!r}")
    t = series.time
    span = t[-1] - t[0]
    # the last row belongs to the last bin: widen the span by half a row
    step = span / max(series.n_rows - 1, 1)
    edges = np.linspace(t[0], t[-1] + 0.5 * step, n_phrases + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_phrases - 1)
    counts = np.bincount(which, minlength=n_phrases)
    out = np.empty((n_phrases, len(series.names)))
    for j in range(len(series.names)):
        x = series.values[:, j]
        sums = np.bincount(which, weights=x, minlength=n_phrases)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts
        if aggregate == "mean":
            col = mean
            filled = counts > 0
        else:
            dev = x - mean[which]
            with np.errstate(invalid="ignore", divide="ignore"):
                col = np.sqrt(np.bincount(which, weights=dev * dev, minlength=n_phrases) / counts)
            filled = counts >= 2
            if not filled.all():
                raise ValueError(f"aggregate='rms' needs at least 2 rows per phrase, but "
                                 f"{int((~filled).sum())} of {n_phrases} phrases have fewer; "
                                 "use fewer phrases or aggregate='mean'")
        if not filled.all():
            col = np.where(filled, col, np.interp(centres, t, x))
        out[:, j] = col
    return out, centres


def robust_scale(x: np.ndarray, quantiles: tuple[float, float] = (0.05, 0.95),
                 names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map each column's ``q_lo``/``q_hi`` quantiles to 0/1, clipped to [0, 1].

    Parameters
    ----------
    x : ndarray, shape (n, C)
    quantiles : (float, float)
        ``0 <= q_lo < q_hi <= 1``.
    names : sequence of str, optional
        Column names, for the error message.

    Returns
    -------
    scaled : ndarray, shape (n, C)
    limits : ndarray, shape (C, 2)
        The values at ``q_lo`` and ``q_hi`` of each column.

    Raises
    ------
    ValueError
        When a column has the same value at both quantiles (it would carry no
        information after scaling); the message names it.
    """
    x = np.asarray(x, dtype=np.float64)
    q_lo, q_hi = quantiles
    if not 0.0 <= q_lo < q_hi <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles!r}")
    lo = np.quantile(x, q_lo, axis=0)
    hi = np.quantile(x, q_hi, axis=0)
    flat = np.flatnonzero(hi - lo <= 1e-12 * np.maximum(np.abs(hi), 1.0))
    if flat.size:
        j = int(flat[0])
        name = names[j] if names is not None else f"#{j}"
        raise ValueError(f"column {name!r} has the same value ({lo[j]:g}) at the {q_lo:.0%} "
                         f"and {q_hi:.0%} quantiles of its phrases: it is (nearly) constant at "
                         "phrase rate. Leave it out, widen --quantiles or use more --phrases")
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0), np.column_stack([lo, hi])


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (``sigma`` in rows; 0 returns a copy).

    Parameters
    ----------
    x : ndarray, shape (n, C)
    sigma : float
        Standard deviation of the kernel, in rows (phrases); >= 0.

    Returns
    -------
    smoothed : ndarray, shape (n, C)
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    x = np.asarray(x, dtype=np.float64)
    if sigma == 0:
        return x.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma, axis=0, mode="nearest")
