"""The state estimator on real recordings: eyes-closed AUC, gates, heart, breathing.

Reads ``../shared/data/eeg/`` (see its README; nothing is copied into the project).

1. **Eye state** (UCI "EEG Eye State", Roesler 2013: one Emotiv recording, 14
   channels, 128 Hz, eyes open/closed labelled per sample). The estimator
   (default config, BrainFlow reference off) calibrates on the first 30 s of
   good windows and is evaluated on every later 2 s window (hop 0.5 s) whose
   samples all carry one label. Scores: the estimator's posterior relative alpha
   (``eeg/alpha_post_lrel``, z-scored: its relaxation/alpha output), its relaxation
   ``-arousal`` (state, smoothed) and, as the reference, plain SciPy relative
   alpha at O1/O2 (Welch, 1 s Hann segments, 8-13 Hz over 1-45 Hz; the file's
   outlier samples replaced by the channel median). AUC of "eyes closed" with a
   95 % CI from a circular block bootstrap over windows (blocks of
   ``--block-sec`` s, so overlapping windows and label blocks stay together),
   and the paired estimator - reference difference with the same resamples.
   ``eye activity`` (the share of each window the estimator removed as eye
   artifacts; closed eyes move less) is printed as a diagnostic, not as an
   alpha output.
2. **Data lost per gate** on each EDF file and on the eye-state file (30 s
   calibration): windows rejected per gate, samples removed as eye artifacts,
   when calibration completed and how (done / fallback).
3. **Heart and breathing rate** from the ECG of ``eegmat_Subject00_1_rest.edf``:
   the estimator's ``hr/bpm`` and ``resp/rate_bpm`` against NeuroKit2 with its
   defaults (``ecg_process``; breathing: ``ecg_rsp`` of its rate then
   ``rsp_process``), over the whole recording and per 32 s segment, and a plain
   beat count (SciPy ``find_peaks``) as a second reference for heart rate.
4. **Supervised per-listener map** on the eye-state file (eyes closed vs open
   standing in for calm vs energetic excerpts): shrinkage LDA on the log band
   powers of every channel (``Estimate.log_bands``), windows wholly inside one
   labelled block, time-blocked CV (two consecutive blocks held out per fold,
   4 s gap) beside a random 5-fold split of the same windows (leaky).

Decision latency is printed by ``benchmarks/bench_estimator.py``.

Run: ``python benchmarks/bench_real_eeg.py [--n-boot 2000] [--block-sec 10]``
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import signal

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.biometrics.sources import FileSource
from st_agent.types import SignalChunk

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
EYE_FILE = EEG_DIR / "eeg_eye_state.arff"
EYE_SFREQ = 128.0


def load_eye_state(path: Path = EYE_FILE) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(data in µV (14, n), closed labels (n,), channel names) of the ARFF file."""
    names, rows = [], []
    with open(path, encoding="ascii") as fh:
        for line in fh:
            line = line.strip()
            if line.upper().startswith("@ATTRIBUTE"):
                names.append(line.split()[1])
            elif line and not line.startswith(("@", "%")):
                rows.append([float(v) for v in line.split(",")])
    arr = np.asarray(rows)
    return arr[:, :-1].T, arr[:, -1].astype(int), tuple(names[:-1])


def chunks_of(data_v: np.ndarray, sfreq: float, names: tuple[str, ...],
              types: tuple[str, ...], chunk_sec: float = 1.0):
    """The recording as 1 s SignalChunks (what a file source would deliver)."""
    n = round(chunk_sec * sfreq)
    for i in range(0, data_v.shape[1], n):
        yield SignalChunk(data_v[:, i:i + n], sfreq, names, types, first_sample=i,
                          t0_sec=i / sfreq)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``label == 1`` (Mann-Whitney, ties 1/2)."""
    pos, neg = score[label == 1], score[label == 0]
    if not pos.size or not neg.size:
        return math.nan
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(1, order.size + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        tie = allv == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def block_bootstrap(scores: dict[str, np.ndarray], label: np.ndarray, block: int, n_boot: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """AUC of each score on circular block-bootstrap resamples of the windows."""
    n = label.size
    out = {k: np.empty(n_boot) for k in scores}
    n_blocks = math.ceil(n / block)
    for b in range(n_boot):
        starts = rng.integers(0, n, n_blocks)
        idx = ((starts[:, None] + np.arange(block)[None, :]) % n).ravel()[:n]
        for k, s in scores.items():
            out[k][b] = auc(s[idx], label[idx])
    return out


def scipy_occipital_alpha(uv: np.ndarray, names: tuple[str, ...], sfreq: float,
                          ends: np.ndarray, n_win: int) -> np.ndarray:
    """Reference: relative alpha (8-13 / 1-45 Hz) at O1/O2, plain SciPy Welch."""
    occ = [names.index(c) for c in ("O1", "O2")]
    x = uv[occ]
    med = np.median(x, axis=1, keepdims=True)
    x = np.where(np.abs(x - med) > 500, med, x)  # the file's four outlier samples
    segs = np.stack([x[:, e - n_win:e] for e in ends])  # (W, 2, n_win)
    f, p = signal.welch(segs, fs=sfreq, nperseg=round(sfreq), axis=-1)
    alpha = p[..., (f >= 8) & (f < 13)].sum(-1)
    total = p[..., (f >= 1) & (f < 45)].sum(-1)
    return (alpha / total).mean(-1)


def _eye_run(uv: np.ndarray, names: tuple[str, ...], **kw) -> tuple[list, StateEstimator]:
    cfg = EstimatorConfig(calibration_sec=30.0, reference_model=False, **kw)
    with StateEstimator(cfg) as est:
        out = [e for c in chunks_of(uv * 1e-6, EYE_SFREQ, names, ("eeg",) * len(names))
               for e in est.push(c)]
    return out, est


def alpha_per_block(uv: np.ndarray, closed: np.ndarray, names: tuple[str, ...]) -> None:
    """Why the AUC is low: O1/O2 relative alpha of each labelled block of >= 4 s."""
    edges = np.r_[0, np.flatnonzero(np.diff(closed)) + 1, closed.size]
    rows = {0: [], 1: []}
    for a, b in itertools.pairwise(edges):
        if b - a >= 4 * EYE_SFREQ:
            ends = np.arange(a + 256, b + 1, 64)
            rows[int(closed[a])].append(float(np.median(
                scipy_occipital_alpha(uv, names, EYE_SFREQ, ends, 256))))
    print("   O1/O2 relative alpha per labelled block of >= 4 s (SciPy, median over its "
          "windows): closed " + ", ".join(f"{v:.3f}" for v in rows[1]) + "; open "
          + ", ".join(f"{v:.3f}" for v in rows[0]))


def eye_state(n_boot: int, block_sec: float, seed: int) -> None:
    uv, closed, names = load_eye_state()
    out, est = _eye_run(uv, names)
    fixed, est_fixed = _eye_run(uv, names, individual_alpha=False)
    cfg = est.config
    status = est.calibration_status()
    weights = est.arousal_weights()
    n_win = round(cfg.window_sec * EYE_SFREQ)
    ends = np.array([round(e.state.t_sec * EYE_SFREQ) for e in out])
    post = np.array([not e.quality["calibrating"] for e in out])
    lab = np.array([closed[x - n_win:x].mean() for x in ends])
    keep = post & ((lab == 0) | (lab == 1))
    y = lab[keep].astype(int)
    base = est.baseline
    scores = {
        "estimator posterior alpha z(eeg/alpha_post_lrel)": np.array(
            [base.z("eeg/alpha_post_lrel", e.features["eeg/alpha_post_lrel"]) for e in out]),
        "estimator relaxation -arousal (state)": np.array([-e.state.arousal for e in out]),
        "estimator posterior alpha, fixed 8-13 Hz band": np.array(
            [est_fixed.baseline.z("eeg/alpha_post_lrel", e.features["eeg/alpha_post_lrel"])
             for e in fixed]),
        "all-channel relative alpha, eye samples removed": np.array(
            [e.features["eeg/alpha_rel"] for e in out]),
        "reference: SciPy O1/O2 relative alpha": scipy_occipital_alpha(
            uv, names, EYE_SFREQ, ends, n_win),
        "diagnostic: eye-artifact share of window": np.array(
            [-e.quality["eye_excluded"] for e in out]),
    }
    scores = {k: np.nan_to_num(v[keep], nan=np.nanmedian(v[keep])) for k, v in scores.items()}
    block = max(1, round(block_sec / cfg.hop_sec))
    boot = block_bootstrap(scores, y, block, n_boot, np.random.default_rng(seed))
    print(f"1. Eye state ({EYE_FILE.name}): {status.message}")
    print(f"   alpha sites {', '.join(n for n in names if n in ('O1', 'O2', 'P7', 'P8'))}; "
          f"alpha band {status.alpha_band[0]:.1f}-{status.alpha_band[1]:.1f} Hz; arousal weights "
          + ", ".join(f"{k} {w:+.2f}" for k, w in weights.items()))
    print(f"   {keep.sum()} windows after calibration with one label ({y.sum()} closed, "
          f"{(y == 0).sum()} open); 95 % CI: circular block bootstrap, {block_sec:g} s blocks, "
          f"{n_boot} resamples")
    ref = "reference: SciPy O1/O2 relative alpha"
    for k, s in scores.items():
        lo, hi = np.nanpercentile(boot[k], [2.5, 97.5])
        line = f"   {k:<52s} AUC {auc(s, y):.3f} (95 % CI {lo:.3f}-{hi:.3f})"
        if k != ref and not k.startswith("diagnostic"):
            d = boot[k] - boot[ref]
            dlo, dhi = np.nanpercentile(d, [2.5, 97.5])
            diff = auc(s, y) - auc(scores[ref], y)
            line += f"; minus reference {diff:+.3f} ({dlo:+.3f}..{dhi:+.3f})"
        print(line)
    alpha_per_block(uv, closed, names)


def supervised_eye_state(seed: int) -> None:
    from st_agent.biometrics.supervised import blocked_cv, random_split_cv

    uv, closed, names = load_eye_state()
    out, _ = _eye_run(uv, names)
    n_win = round(2.0 * EYE_SFREQ)
    ends = np.array([round(e.state.t_sec * EYE_SFREQ) for e in out])
    block = np.cumsum(np.r_[0, np.diff(closed) != 0])  # index of each labelled block
    lab = np.array([closed[x - n_win:x].mean() for x in ends])
    grp = np.array([block[x - 1] if block[x - n_win] == block[x - 1] else -1 for x in ends])
    keep = (grp >= 0) & ((lab == 0) | (lab == 1))
    X = np.stack([e.log_bands for e, k in zip(out, keep, strict=True) if k])
    y, g = lab[keep].astype(int), grp[keep]
    t = np.array([e.state.t_sec for e in out])[keep]
    cv = blocked_cv(X, y, g, t, model="lda", block=2, gap_sec=4.0)
    leaky = random_split_cv(X, y, np.random.default_rng(seed))
    print(f"\n4. Supervised per-listener map, eye state ({X.shape[0]} windows in "
          f"{np.unique(g).size} labelled blocks, {X[0].size} log band powers)")
    print(f"   shrinkage LDA, time-blocked CV: mean held-out AUC {cv.mean_auc:.3f} over "
          f"{len(cv.fold_auc)} folds ({', '.join(f'{a:.2f}' for a in cv.fold_auc)})")
    print(f"   the same with a random 5-fold split (overlapping windows leak): {leaky:.3f}")


def gates_on(name: str, chunks, cal_sec: float = 30.0) -> None:
    cfg = EstimatorConfig(calibration_sec=cal_sec, reference_model=False)
    with StateEstimator(cfg) as est:
        out = [e for c in chunks for e in est.push(c)]
        rep, st = est.gate_report(), est.calibration_status()
        missing = est.marker_status()
    t_cal = next((e.state.t_sec for e in out if not e.quality["calibrating"]), math.nan)
    gates = ", ".join(f"{g} {100 * rep.share(g):.1f} %" for g in rep.rejected)
    print(f"   {name:<36s} {rep.n_windows:4d} windows, lost {100 * rep.rejected_share:5.1f} % "
          f"({gates}); eye samples removed {100 * rep.eye_excluded_share:.1f} %; calibration "
          f"{st.phase} at {t_cal:.1f} s (confidence x {st.confidence:.2f})")
    for k, why in missing.items():
        if k.startswith("eeg/"):
            print(f"      {k}: {why}")
    if rep.flagged_channels:
        worst = sorted(rep.flagged_channels.items(), key=lambda kv: -kv[1])
        print(f"      flat/saturated: {len(worst)} channels, in at most {worst[0][1]} windows "
              f"each ({', '.join(f'{c} {n}' for c, n in worst[:4])}...)")


def file_chunks(path: Path):
    with FileSource(path, chunk_sec=1.0) as src:
        yield from src.iter_chunks()


def gate_table() -> None:
    print("\n2. Windows lost per gate (30 s calibration; target <= 15 % on eegmmidb)")
    for path in sorted(EEG_DIR.glob("*.edf")):
        gates_on(path.name, file_chunks(path))
    uv, _, names = load_eye_state()
    gates_on(EYE_FILE.name, chunks_of(uv * 1e-6, EYE_SFREQ, names, ("eeg",) * len(names)))


def _nk_reference(ecg: np.ndarray, sfreq: float) -> tuple[float, float, int]:
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig, info = nk.ecg_process(ecg, sampling_rate=round(sfreq))
        rate = np.asarray(sig["ECG_Rate"], dtype=float)
        rsp = nk.ecg_rsp(rate, sampling_rate=round(sfreq))
        rsig, _ = nk.rsp_process(rsp, sampling_rate=round(sfreq))
    return (float(np.nanmean(rate)), float(np.nanmean(rsig["RSP_Rate"])),
            len(info["ECG_R_Peaks"]))


def _beat_count(ecg: np.ndarray, sfreq: float) -> float:
    """Plain SciPy: band-pass 5-25 Hz, R peaks as prominent maxima >= 0.33 s apart."""
    y = signal.sosfiltfilt(signal.butter(2, [5, 25], "bandpass", fs=sfreq, output="sos"), ecg)
    y = -y if abs(y.min()) > abs(y.max()) else y
    peaks, _ = signal.find_peaks(y, distance=round(0.33 * sfreq),
                                 prominence=0.4 * (np.percentile(y, 99) - np.median(y)))
    return 60.0 * (peaks.size - 1) / ((peaks[-1] - peaks[0]) / sfreq)


def cardiac_check() -> None:
    path = EEG_DIR / "eegmat_Subject00_1_rest.edf"
    print(f"\n3. Heart and breathing rate from the ECG of {path.name}")
    with FileSource(path, chunk_sec=1.0) as src:
        sfreq, ecg_row = src.sfreq, src.ch_types.index("ecg")
        chunks = list(src.iter_chunks())
    ecg = np.concatenate([c.data[ecg_row] for c in chunks])
    cfg = EstimatorConfig(calibration_sec=30.0, reference_model=False)
    t0 = time.perf_counter()
    with StateEstimator(cfg) as est:
        out = [e for c in chunks for e in est.push(c)]
    dt = time.perf_counter() - t0
    hr = np.array([e.features.get("hr/bpm", np.nan) for e in out])
    br = np.array([e.features.get("resp/rate_bpm", np.nan) for e in out])
    t = np.array([e.state.t_sec for e in out])
    nk_hr, nk_br, n_peaks = _nk_reference(ecg, sfreq)
    print(f"   whole recording ({ecg.size / sfreq:.0f} s, estimator {dt:.1f} s): heart rate "
          f"estimator median {np.nanmedian(hr):.1f} bpm, NeuroKit2 ecg_process {nk_hr:.1f} bpm "
          f"({n_peaks} R peaks), SciPy beat count {_beat_count(ecg, sfreq):.1f} bpm")
    print(f"   breathing: estimator median {np.nanmedian(br):.1f} /min, NeuroKit2 ecg_rsp + "
          f"rsp_process {nk_br:.1f} /min")
    print("   per 32 s segment (estimator: mean hr/bpm of the windows inside it, breathing at "
          "its end; NeuroKit2 on the segment):")
    seg = round(32 * sfreq)
    d_hr, d_br = [], []
    for end in range(seg, ecg.size + 1, seg):
        k = int(np.argmin(np.abs(t - end / sfreq)))
        r_hr, r_br, _ = _nk_reference(ecg[end - seg:end], sfreq)
        inside = (t > (end - seg) / sfreq + cfg.hr_window_sec) & (t <= end / sfreq)
        e_hr = float(np.nanmean(hr[inside]))  # windows whose 8 s lie in the segment
        d_hr.append(e_hr - r_hr)
        d_br.append(br[k] - r_br)
        print(f"     {end / sfreq:5.0f} s  HR {e_hr:6.1f} vs {r_hr:6.1f} bpm   breathing "
              f"{br[k]:5.1f} vs {r_br:5.1f} /min")
    print(f"   mean |difference|: HR {np.nanmean(np.abs(d_hr)):.1f} bpm, breathing "
          f"{np.nanmean(np.abs(d_br)):.1f} /min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--block-sec", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the estimator's warnings are printed below
    if not EEG_DIR.is_dir():
        raise SystemExit(f"real recordings folder {EEG_DIR} is absent")
    eye_state(args.n_boot, args.block_sec, args.seed)
    gate_table()
    cardiac_check()
    supervised_eye_state(args.seed)


if __name__ == "__main__":
    main()
