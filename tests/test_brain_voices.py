"""``st-agent brain-voices``: regions from 10-20 names, activity against the recording's
baseline, the clash-constrained choice of voices, and the command on real EDF files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from st_agent.biometrics.regions import channel_position, group_channels, position_name
from st_agent.cli import main
from st_agent.live.brain_voices import choose_voices, region_activity, voice_proposals
from st_agent.music.piece_config import BrainVoicesConfig, band_hz

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
EEGMAT = EEG_DIR / "eegmat_Subject00_1_rest.edf"
ARITH = EEG_DIR / "eegmat_Subject04_2_arithmetic.edf"
needs_real = pytest.mark.skipif(not (EEGMAT.is_file() and ARITH.is_file()),
                                reason=f"real EEG files in {EEG_DIR} are absent")


@pytest.mark.parametrize(("name", "label", "pos"), [
    ("EEG Fp1", "FP1", ("frontal", "left")),
    ("Fc5.", "FC5", ("central", "left")),
    ("Cz..", "CZ", ("central", "midline")),
    ("EEG T4", "T4", ("temporal", "right")),
    ("T10.", "T10", ("temporal", "right")),
    ("Po8.", "PO8", ("occipital", "right")),
    ("P3-REF", "P3", ("parietal", "left")),
    ("EEG A2-A1", "A2", None),
    ("ECG ECG", None, None),
    ("EEG1", None, None),
])
def test_10_20_names(name: str, label: str | None, pos: tuple[str, str] | None) -> None:
    assert position_name(name) == label
    assert channel_position(name) == pos


def test_grouping_lobes_and_hemispheres() -> None:
    names = ["EEG Fp1", "EEG Fp2", "EEG Fz", "EEG C3", "EEG O1", "EEG O2", "ECG ECG", "EEG A1"]
    types = ["eeg"] * 6 + ["ecg", "eeg"]
    lobes = group_channels(names, types)
    assert [(r.name, r.channels) for r in lobes] == [
        ("frontal", (0, 1, 2)), ("central", (3,)), ("occipital", (4, 5))]
    halves = group_channels(names, types, hemispheres=True)
    assert [r.name for r in halves] == ["left frontal", "right frontal", "left central",
                                        "left occipital", "right occipital"]


def test_no_10_20_names_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"no EEG channel of rec\.fif has a 10-20/10-10 name "
                                         r"\(channels: EEG1, EEG2\).*rename_channels"):
        group_channels(["EEG1", "EEG2"], where="rec.fif")


def test_band_option() -> None:
    assert band_hz("alpha") == (8.0, 13.0) and band_hz("4-7.5") == (4.0, 7.5)
    with pytest.raises(ValueError, match="band 'mu' is neither"):
        BrainVoicesConfig(recording=Path("x.edf"), band="mu")


def test_activity_follows_alpha_against_the_baseline() -> None:
    rng = np.random.default_rng(0)
    sfreq, sec = 200.0, 40.0
    t = np.arange(round(sfreq * sec)) / sfreq
    amp = np.where(t < 20, 5e-6, 20e-6)  # occipital alpha grows fourfold after 20 s
    alpha = amp * np.sin(2 * np.pi * 10 * t)
    data = 5e-6 * rng.normal(size=(4, t.size))
    data[2:] += alpha
    regions = group_channels(["F3", "F4", "O1", "O2"])
    edges = np.linspace(0, sec, 11)
    z, logp = region_activity(data, sfreq, regions, edges, (8.0, 13.0), baseline_sec=20.0)
    assert z.shape == logp.shape == (10, 2)
    assert np.all(z[6:, 1] >= 2.9)  # occipital: far above its baseline (clipped at 3)
    assert np.all(np.abs(z[:, 0]) < 3.0) and abs(np.median(z[:, 0])) < 1.0  # frontal: noise
    # a fourfold amplitude is 16x power: log10(16) = 1.2 above the first half
    assert logp[6:, 1].mean() - logp[:4, 1].mean() == pytest.approx(np.log10(16), abs=0.25)
    knobs = voice_proposals(z, regions, tempo=0.35)
    assert knobs.shape == (10, 2, 3) and np.all(knobs[6:, 1, 2] == 0.95)
    assert np.all(knobs[..., 1] == 0.35)
    with pytest.raises(ValueError, match="baseline"):
        region_activity(data, sfreq, regions, edges, (8.0, 13.0), baseline_sec=3.0)
    with pytest.raises(ValueError, match="Nyquist"):
        region_activity(data, sfreq, regions, edges, (8.0, 120.0))


def _mask(pcs: list[int], steps: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A voice holding the pitch classes ``pcs`` from step 0 for the whole phrase."""
    bits = sum(1 << pc for pc in pcs)
    sounding = np.full(steps, bits, dtype=np.int64)
    onset = np.zeros(steps, dtype=np.int64)
    onset[0] = bits
    return sounding, onset


def test_choose_voices_finds_the_combination_without_clashes() -> None:
    masks = [[_mask([0])],  # voice 0: C
             [_mask([1]), _mask([4])],  # voice 1: C# (a minor second, clashes) or E
             [_mask([6]), _mask([11]), _mask([7])]]  # voice 2: F#, B (clash) or G
    choice, clashes, independent = choose_voices(masks)
    assert choice == [0, 1, 2] and clashes == 0
    assert independent == 1  # one dissonant simultaneity: the onset step


def test_bad_recording_without_10_20_names(tmp_path: Path, capsys: pytest.CaptureFixture
                                           ) -> None:
    mne = pytest.importorskip("mne")
    info = mne.create_info(["EEG1", "EEG2", "EEG3"], 160.0, "eeg")
    raw = mne.io.RawArray(np.random.default_rng(0).normal(size=(3, 1600)) * 1e-5, info,
                          verbose="error")
    path = tmp_path / "plain_raw.fif"
    raw.save(path, verbose="error")
    assert main(["brain-voices", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no EEG channel of plain_raw.fif has a 10-20/10-10 name" in err and "EEG1" in err


@needs_real
def test_real_recordings_group_into_five_lobes() -> None:
    from st_agent.biometrics.sources import FileSource

    src = FileSource(EEGMAT)
    regions = group_channels(src.ch_names, src.ch_types)
    assert [(r.name, len(r.channels)) for r in regions] == [
        ("frontal", 7), ("central", 3), ("temporal", 4), ("parietal", 3), ("occipital", 2)]


@needs_real
@pytest.mark.slow
def test_brain_voices_end_to_end_on_a_real_edf(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bv"
    code = main(["brain-voices", str(ARITH), "--out", str(out), "--phrases", "4",
                 "--candidates", "2", "--max-voices", "2"])
    assert code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["phrases"] == 4 and len(s["voices"]) == 2
    # the search starts from the independent voices and only keeps improvements
    assert s["clashes_per_bar"] <= s["clashes_per_bar_independent"]
    assert set(s["tracking"]) == set(s["voices"])
    rows = json.loads((out / "phrases.json").read_text())
    for r in rows:  # the played piece's clashes, measured on its MIDI, are those searched
        assert r["clashes_per_bar"] * 4 == r["clashes_search"]
    for name in ("piece.wav", "piece.mid", "score.abc", "regions.png"):
        assert (out / name).stat().st_size > 0, name
    assert "clashes per bar" in capsys.readouterr().out


# --------------------------------------------------------------------------- live (--board)


@pytest.mark.parametrize(("kw", "match"), [
    ({}, r"either a recording .* or --board .*neither"),
    ({"recording": Path("x.edf"), "board": "virtual"}, "not both"),
    ({"board": "virtual", "phrases": 4}, "--phrases and --window apply to a recording"),
    ({"board": "synthetic", "accelerated": True}, "--accelerated needs --board virtual or file"),
    ({"recording": Path("x.edf"), "accelerated": True}, "--accelerated needs --board"),
    ({"recording": Path("x.edf"), "serial_port": "/dev/ttyUSB0"}, "--serial-port needs --board"),
    ({"board": "virtual", "minutes": 0.0}, "--minutes must be in"),
])
def test_live_options_are_checked(kw: dict, match: str) -> None:
    from st_agent.errors import UsageError

    with pytest.raises(UsageError, match=match):
        BrainVoicesConfig(**kw)


def test_live_options_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["brain-voices"]) == 2
    assert "neither" in capsys.readouterr().err
    assert BrainVoicesConfig(board="virtual").live_baseline_sec() == 60.0


def test_a_board_without_10_20_eeg_is_refused_naming_its_channels() -> None:
    from st_agent.errors import UsageError
    from st_agent.live.brain_voices_live import live_regions

    with pytest.raises(UsageError, match=r"--board muse_2 streams no EEG channel \(channels: "
                                         r"PPG1 \(ppg\), EDA \(eda\)\).*--board virtual"):
        live_regions("muse_2", ("PPG1", "EDA"), ("ppg", "eda"), False)
    with pytest.raises(UsageError, match=r"names none of its EEG channels.*EEG1 \(eeg\)"):
        live_regions("cyton", ("EEG1", "EEG2"), ("eeg", "eeg"), False)
    assert [r.name for r in live_regions("virtual", ("F3", "O1", "ECG"),
                                         ("eeg", "eeg", "ecg"), False)] == ["frontal",
                                                                            "occipital"]


def test_a_file_board_without_10_20_names_is_a_data_error(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    mne = pytest.importorskip("mne")
    info = mne.create_info(["EEG1", "EEG2", "EEG3"], 160.0, "eeg")
    raw = mne.io.RawArray(np.random.default_rng(0).normal(size=(3, 1600)) * 1e-5, info,
                          verbose="error")
    path = tmp_path / "plain_raw.fif"
    raw.save(path, verbose="error")
    code = main(["brain-voices", "--board", f"file:{path}", "--accelerated",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "no EEG channel of --board file:" in err and "EEG1, EEG2, EEG3" in err
    assert "rename_channels" in err and not (tmp_path / "o").exists()


def _live(out: Path, *extra: str) -> tuple[dict, list[dict]]:
    code = main(["brain-voices", "--out", str(out), "--candidates", "2", "--max-voices", "3",
                 "--no-wav", *extra])
    assert code == 0
    return (json.loads((out / "summary.json").read_text()),
            json.loads((out / "phrases.json").read_text()))


@pytest.mark.slow
def test_brain_voices_live_on_a_virtual_board(tmp_path: Path) -> None:
    s, rows = _live(tmp_path / "v", "--board", "virtual", "--accelerated", "--minutes", "0.4",
                    "--baseline-sec", "20", "--tempo", "0.8")
    assert s["recording"] == "virtual" and s["config"]["board"] == "virtual"
    assert s["phrases"] == len(rows) >= 3 and s["music_sec"] >= 24.0
    assert len(s["voices"]) == 3 and set(s["tracking"]) == set(s["voices"])
    assert s["clashes_per_bar"] <= s["clashes_per_bar_independent"]
    assert {"density", "loudness", "channels"} <= set(s["tracking"][s["voices"][0]])
    t_prev = None
    for r in rows:  # each phrase reads the window that ends at its start
        z = np.array([r["activity"][v] for v in s["voices"]])
        np.testing.assert_allclose(r["energy"], np.clip(0.5 + 0.2 * z, 0.05, 0.95))
        assert r["clashes_per_bar"] * 4 == r["clashes_search"] <= r["clashes_independent"]
        assert r["window_sec"][0] >= 0 and r["window_sec"][1] >= 20.0
        if t_prev is not None:
            assert r["window_sec"][1] > t_prev
        t_prev = r["window_sec"][1]
    assert len({tuple(r["energy"]) for r in rows}) > 1  # the activity moves the voices
    for name in ("piece.mid", "score.abc", "regions.png"):
        assert (tmp_path / "v" / name).stat().st_size > 0, name


@needs_real
@pytest.mark.slow
def test_brain_voices_live_on_a_real_edf_played_back(tmp_path: Path) -> None:
    s, rows = _live(tmp_path / "f", "--board", f"file:{ARITH}", "--accelerated",
                    "--minutes", "0.3", "--baseline-sec", "20", "--tempo", "0.8",
                    "--max-voices", "2")
    assert s["sfreq"] == 500.0 and len(s["voices"]) == 2 and s["phrases"] == len(rows) >= 2
    assert all(ch.startswith("EEG ") for v in s["voices"] for ch in s["tracking"][v]["channels"])
    # the window of every phrase is within the recording (60 s), after the baseline
    assert all(20.0 <= r["window_sec"][1] <= 60.0 for r in rows)


def test_live_baseline_too_short_for_the_phrases(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    code = main(["brain-voices", "--board", "virtual", "--accelerated", "--baseline-sec", "5",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--baseline-sec 5 is shorter than 1.5 phrases" in capsys.readouterr().err
