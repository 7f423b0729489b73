"""What the state estimator makes of the three real EEG recordings.

Reads ``../shared/data/eeg/*.edf`` (PhysioNet eegmmidb and EEG During Mental
Arithmetic; see that folder's README), runs :class:`StateEstimator` on each and
prints band powers, frontal alpha asymmetry, beta/alpha, heart rate and the
valence/arousal it reports, then compares rest with mental arithmetic.

Two calibrations: (a) per file, on its own first 30 s (each recording judged
against itself), and (b) the baseline of the eegmat rest recording (subject 0)
applied to the arithmetic recording (subject 4). (b) compares *different
subjects*, so any difference mixes task with person; read it as a smoke test of
the pipeline on real data, not as evidence about mental load.

Run: ``python benchmarks/report_real_eeg.py``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from st_agent.biometrics.artifacts import GATES
from st_agent.biometrics.estimator import Baseline, EstimatorConfig, StateEstimator
from st_agent.biometrics.sources import FileSource

EEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
KEYS = ("eeg/delta_power", "eeg/theta_power", "eeg/alpha_power", "eeg/beta_power",
        "eeg/gamma_power", "eeg/alpha_rel", "eeg/alpha_post_rel", "eeg/faa", "eeg/beta_alpha",
        "eeg/engagement", "hr/bpm", "hr/rmssd_ms", "hr/hf_ms2", "resp/rate_bpm",
        "reference/mindfulness")


def run(path: Path, calibration_sec: float, baseline: Baseline | None = None,
        ) -> tuple[list, StateEstimator]:
    cfg = EstimatorConfig(calibration_sec=calibration_sec)
    est = StateEstimator(cfg, baseline=baseline)
    with FileSource(path, chunk_sec=1.0) as src, est:
        out = [e for c in src.iter_chunks() for e in est.push(c)]
    return out, est


def summary(name: str, out: list) -> dict[str, float]:
    good = [e for e in out if not e.bad]
    post = [e for e in good if not e.quality["calibrating"]]
    flags = {k: sum(bool(e.quality.get(k)) for e in out) for k in GATES}
    print(f"\n{name}: {len(out)} windows, {len(out) - len(good)} bad "
          f"({', '.join(f'{k} {v}' for k, v in flags.items() if v) or 'none flagged'})")
    means = {}
    for k in KEYS:
        vals = [e.features[k] for e in good if k in e.features]
        if vals:
            means[k] = float(np.median(vals))
            print(f"  {k:<24s} median {means[k]:10.3f}   (IQR {np.percentile(vals, 25):.3f}"
                  f"..{np.percentile(vals, 75):.3f})")
    if post:
        v = np.array([e.state.valence for e in post])
        a = np.array([e.state.arousal for e in post])
        c = np.array([e.state.confidence for e in post])
        print(f"  after calibration ({len(post)} good windows): valence {v.mean():+.2f} "
              f"± {v.std():.2f}, arousal {a.mean():+.2f} ± {a.std():.2f}, "
              f"confidence {c.mean():.2f}")
        means["valence"], means["arousal"] = float(v.mean()), float(a.mean())
    else:
        print("  never calibrated (too few good windows)")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-sec", type=float, default=30.0)
    args = parser.parse_args()
    files = sorted(EEG_DIR.glob("*.edf"))
    if not files:
        raise SystemExit(f"no EDF files in {EEG_DIR}")
    print(f"(a) each file calibrated on its own first {args.calibration_sec:g} s of good "
          "windows (2 s windows, hop 0.5 s)")
    res = {}
    for path in files:
        out, est = run(path, args.calibration_sec)
        res[path.name] = summary(path.name, out)
        print(f"  {est.calibration_status().message}")
        print(f"  gates: {est.gate_report().summary()}")

    rest = EEG_DIR / "eegmat_Subject00_1_rest.edf"
    arith = EEG_DIR / "eegmat_Subject04_2_arithmetic.edf"
    if rest.exists() and arith.exists():
        print("\n(b) baseline from the rest recording (subject 0, first 60 s), applied to "
              "the rest of it and to mental arithmetic (subject 4)")
        out_rest, est = run(rest, 60.0)
        base = est.baseline
        r = summary("rest, subject 0 (after its 60 s baseline)", out_rest)
        out_ar, _ = run(arith, 60.0, baseline=base)
        a = summary("arithmetic, subject 4, judged against subject 0's rest", out_ar)
        print("\nRest vs mental arithmetic (different subjects, so task and person are "
              "confounded):")
        for k in ("eeg/alpha_power", "eeg/beta_alpha", "eeg/engagement", "hr/bpm",
                  "arousal", "valence"):
            if k in r and k in a:
                print(f"  {k:<18s} rest {r[k]:9.3f}   arithmetic {a[k]:9.3f}")
        verdict = ("higher" if a.get("arousal", 0) > r.get("arousal", 0) else "not higher")
        print(f"  -> the estimator reports arousal {verdict} during arithmetic than at rest; "
              "expected direction under the beta/alpha model: higher.")


if __name__ == "__main__":
    main()
