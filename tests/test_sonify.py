"""``st-agent sonify``: reading and shaping series, bad input, and the whole command on a
synthetic series with a known trend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from st_agent.cli import main
from st_agent.music.piece_config import SonifyConfig, parse_map
from st_agent.music.series import read_series, resample_to_phrases, robust_scale, smooth
from st_agent.music.sonify import knob_plan

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
EDF = EEG_DIR / "eegmmidb_S001R01_eyes_open.edf"


def _csv(path: Path, n: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {
        "time": 0.5 * t,
        "rise": t / n + 0.05 * rng.normal(size=n),
        "wave": np.sin(2 * np.pi * t / n) + 0.05 * rng.normal(size=n),
        "fall": 1 - t / n + 0.05 * rng.normal(size=n),
        "flat": np.full(n, 3.0),
    }
    lines = [",".join([*cols, "label"])]
    lines += [",".join([*(f"{cols[c][i]:.6f}" for c in cols), "x" if i == 5 else "1"])
              for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- reading and shaping


def test_read_series_columns_window_and_time(tmp_path: Path) -> None:
    s = read_series(_csv(tmp_path / "d.csv"), ["rise", "fall"], time_column="time",
                    window=(4.0, 10.0))
    assert s.names == ("rise", "fall") and s.time_unit == "time" and s.kind == "table"
    assert s.time[0] == 4.0 and s.time[-1] == 9.5 and s.values.shape == (12, 2)


def test_read_series_defaults_to_the_first_numeric_columns(tmp_path: Path) -> None:
    s = read_series(_csv(tmp_path / "d.csv"), [])
    assert s.names == ("time", "rise", "wave")


@pytest.mark.parametrize(("cols", "kwargs", "match"), [
    (["rise", "label"], {}, "column 'label' of d.csv is not numeric: row 6 holds 'x'"),
    (["rise", "Fall"], {}, "column 'Fall' is not in d.csv \\(did you mean 'fall'\\?\\)"),
    (["rise", "flat"], {}, "column 'flat' is constant"),
    (["rise"], {"time_column": "wave"}, "must hold finite numbers that increase"),
    (["rise"], {"window": (1000.0, 2000.0)}, "at least 2: widen --window"),
])
def test_bad_tables_name_the_column_and_the_fix(tmp_path: Path, cols: list[str], kwargs: dict,
                                                match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_series(_csv(tmp_path / "d.csv"), cols, **kwargs)


def test_mostly_empty_column_is_refused_and_a_few_gaps_are_filled(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("a,b\n" + "\n".join(f"{i},{'' if i % 4 else i}" for i in range(20)) + "\n")
    with pytest.raises(ValueError, match="column 'b' has 15 empty"):
        read_series(path, ["a", "b"])
    path.write_text("a,b\n" + "\n".join(f"{i},{'' if i == 3 else 2 * i}" for i in range(20)))
    assert read_series(path, ["b"]).values[3, 0] == pytest.approx(6.0)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.xyz").write_text("a\n1\n")
    with pytest.raises(ValueError, match="unsupported extension"):
        read_series(tmp_path / "d.xyz", ["a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_series(tmp_path / "none.csv", ["a"])


def test_resample_means_rms_and_interpolation(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("x\n" + "\n".join(str(v) for v in [0, 2, 4, 6, 8, 10, 12, 14]) + "\n")
    s = read_series(path, ["x"])
    means, centres = resample_to_phrases(s, 4, "mean")
    np.testing.assert_allclose(means[:, 0], [1, 5, 9, 13])
    assert centres.shape == (4,) and np.all(np.diff(centres) > 0)
    rms, _ = resample_to_phrases(s, 4, "rms")
    np.testing.assert_allclose(rms[:, 0], [1, 1, 1, 1])
    # more phrases than rows: empty bins take the interpolated value
    more, _ = resample_to_phrases(s, 12, "mean")
    assert np.all(np.diff(more[:, 0]) >= 0) and np.isfinite(more).all()
    with pytest.raises(ValueError, match="at least 2 rows per phrase"):
        resample_to_phrases(s, 8, "rms")


def test_robust_scale_ignores_outliers() -> None:
    x = np.concatenate([np.linspace(0, 1, 99), [1000.0]])[:, None]
    scaled, limits = robust_scale(x, (0.05, 0.95))
    assert limits[0, 1] < 2  # the outlier does not set the top
    assert scaled.min() == 0.0 and scaled.max() == 1.0 and np.median(scaled) == pytest.approx(
        0.5, abs=0.05)
    with pytest.raises(ValueError, match="column 'c' has the same value"):
        robust_scale(np.array([[1.0], [1.0], [1.0], [5.0]] * 5), (0.05, 0.7), ["c"])


def test_smooth_keeps_the_mean_of_a_ramp_and_zero_is_identity() -> None:
    x = np.linspace(0, 1, 21)[:, None]
    np.testing.assert_allclose(smooth(x, 0.0), x)
    y = smooth(x, 1.0)
    np.testing.assert_allclose(y[5:-5], x[5:-5], atol=1e-9)  # a ramp is unchanged inside


def test_knob_plan_maps_and_inverts() -> None:
    scaled = np.array([[0.0, 1.0], [1.0, 0.0]])
    k = knob_plan(scaled, ("a", "b"), {"valence": ("a", False), "tempo": ("b", True)},
                  (0.1, 0.9), (0.6, 0.5, 0.3))
    np.testing.assert_allclose(k, [[0.1, 0.1, 0.3], [0.9, 0.9, 0.3]])


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"map": "vibe=a"}, "unknown knob 'vibe'"),
    ({"map": "valence"}, "has no '='"),
    ({"map": "tempo=a,tempo=b"}, "twice"),
    ({"columns": "a,b", "map": "valence=a,tempo=z"}, "column 'z' that --columns does not list"),
    ({"columns": "a,b,c,d"}, "without --map only three"),
    ({"hold": (0.5, 2.0, 0.5)}, "tempo must be in"),
    ({"phrases": 1}, "phrases must be an int"),
])
def test_bad_options_stop_before_reading(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SonifyConfig(data=Path("unused.csv"), **kwargs)


def test_parse_map_inversion() -> None:
    assert parse_map("valence=a, tempo=-b") == {"valence": ("a", False), "tempo": ("b", True)}


def test_cli_reports_a_bad_column_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture
                                              ) -> None:
    code = main(["sonify", str(_csv(tmp_path / "d.csv")), "--out", str(tmp_path / "o"),
                 "--columns", "rise,flat", "--map", "valence=rise,energy=flat"])
    err = capsys.readouterr().err
    assert code == 2 and "column 'flat' is constant" in err and "Traceback" not in err


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_sonify_end_to_end_follows_the_series(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code = main(["sonify", str(_csv(tmp_path / "d.csv")), "--out", str(out),
                 "--columns", "wave,fall", "--map", "tempo=wave,energy=-fall",
                 "--time-column", "time", "--phrases", "6"])
    assert code == 0, capsys.readouterr().err
    for name in ("piece.wav", "piece.mid", "piece.abc", "series.png", "legend.txt",
                 "phrases.json", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    rho = summary["spearman"]
    assert summary["phrases"] == 6
    assert rho["wave"]["tempo_bpm"] > 0.9  # the tempo knob is heard as BPM
    # energy, driven by the inverted fall, is heard louder as the series falls
    assert rho["-fall"]["loudness_lufs"] > 0.9
    legend = (out / "legend.txt").read_text()
    assert "tempo    <- wave" in legend and "energy   <- -fall" in legend
    assert "valence  held at 0.60" in legend
    phrases = json.loads((out / "phrases.json").read_text())
    assert [p["knobs"]["tempo"] for p in phrases] != sorted(p["knobs"]["tempo"] for p in phrases)
    assert all(p["audio"]["loudness_lufs"] > -70 for p in phrases)
    assert "legend" in capsys.readouterr().out


@pytest.mark.skipif(not EDF.is_file(), reason=f"real EEG file {EDF} is absent")
def test_recording_channels_are_columns_in_seconds() -> None:
    s = read_series(EDF, ["O1..", "Fp1."], window=(10.0, 20.0))
    assert s.kind == "recording" and s.time_unit == "s"
    assert s.values.shape == (1600, 2)  # 10 s at 160 Hz
    rms, _ = resample_to_phrases(s, 5, "rms")
    assert np.all((rms > 1e-7) & (rms < 1e-3))  # EEG amplitude in volts
    with pytest.raises(ValueError, match="column 'O1' is not in"):
        read_series(EDF, ["O1"])


def test_parquet_reads_with_pyarrow_or_says_how_to_get_it(tmp_path: Path) -> None:
    import importlib.util

    import pandas as pd

    path = tmp_path / "d.parquet"
    if importlib.util.find_spec("pyarrow") is not None:
        pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [3.0, 1.0, 2.0]}).to_parquet(path)
        assert read_series(path, ["b"]).values[:, 0].tolist() == [3.0, 1.0, 2.0]
    else:
        path.write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="needs pyarrow: pip install pyarrow"):
            read_series(path, ["b"])
