"""Listener-simulator figures: estimator recovery, measured estimator noise, speed.

1. **Recovery**: for each of ``--listeners`` (50) simulated listeners (drawn
   from ``--families``, default every family of the listener-model family), 60 s of
   silence (the estimator's rest calibration) then ``--minutes`` of music whose
   features change every 20-60 s (random phrases, :func:`random_features`);
   raw EEG/ECG/EMG from :class:`VirtualListenerSource` go through the real
   :class:`StateEstimator` (default config, its ``smoothing_sec`` moving
   average included; BrainFlow reference model off: it does not enter the
   state). Pearson r between estimated and latent valence
   and arousal over the good windows after calibration, per listener; the
   mean is printed for all listeners and per family.
2. **Estimator noise** for the fast mode: per axis, the median slope of the
   estimate on (latent - rest), the residual std and the AR(1) coefficient
   with the residual's integrated autocorrelation time (:func:`noise_stats`);
   ``--write-noise`` stores them in
   ``st_agent/listener/assets/estimator_noise.json`` (what :class:`FastListeners` uses).
3. **Speed**: simulated listener-seconds per wall second in raw mode
   (signals only, and signals + estimator) and in fast mode (10,000 listeners
   vectorised, 0.5 s steps), for each family alone and for the mixed population.

``--compare`` also runs the *previous* estimator settings (:data:`PREVIOUS`: the
arousal weights and smoothing before issue 14's re-weighting) on the same signals and
prints the paired difference of the per-listener r with a bootstrap 95 % CI.
``--no-speed`` skips part 3.

Run: ``python benchmarks/bench_listener.py [--listeners 50] [--minutes 8]
[--families first_order,adaptation] [--write-noise] [--compare] [--no-speed]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
from st_agent.listener.family import FAMILY_NAMES, check_families, sample_population
from st_agent.listener.model import (
    FastListeners,
    feature_vector,
    random_features,
    sample_listeners,
)
from st_agent.listener.virtual import SignalModel, VirtualListenerSource

NOISE_PATH = (Path(__file__).resolve().parents[1] / "st_agent" / "listener" / "assets"
              / "estimator_noise.json")


#: The estimator's arousal settings before they were re-weighted (issue 14): the
#: literature priors, heart rate 0.5, one 4 s moving average for both axes.
PREVIOUS = {"arousal_weights": {"eeg/log_beta_alpha": 1.0, "eeg/alpha_post_lrel": -1.0,
                                "hr/ln_rmssd": -0.25, "hr/ln_hf": -0.25, "resp/rate_bpm": 0.25,
                                "eda/tonic_us": 0.5, "emg/ln_rms": 0.25},
            "hr_weight": 0.5, "arousal_smoothing_sec": 4.0}


def run_listener(params, seed: int, minutes: float, rest_sec: float = 60.0,
                 model: SignalModel | None = None) -> dict:
    """One simulated session through the real estimator; latent and estimates per window."""
    return run_listener_configs(params, seed, minutes, [{}], rest_sec, model)[0]


def run_listener_configs(params, seed: int, minutes: float, overrides: list[dict],
                         rest_sec: float = 60.0, model: SignalModel | None = None,
                         ) -> list[dict]:
    """One simulated session, the same chunks through one estimator per settings override
    (``EstimatorConfig`` fields); one result dict per override."""
    rng = np.random.default_rng(10_000 + seed)
    src = VirtualListenerSource(params, model=model, rng=seed)
    src.hear(None, rest_sec)
    t = 0.0
    while t < minutes * 60:
        seg = float(rng.uniform(20, 60))
        feats = random_features(rng)
        src.hear(feats, seg)
        t += seg
    ests = [StateEstimator(EstimatorConfig(reference_model=False, calibration_sec=rest_sec,
                                           **o)) for o in overrides]
    acc = [{"lat": [], "out": [], "rest": [], "bad": 0, "all": 0} for _ in overrides]
    end_sec = rest_sec + minutes * 60
    with src:
        while src._next_sample / src.sfreq < end_sec:
            chunk = src.read()
            for est, a in zip(ests, acc, strict=True):
                for e in est.push(chunk):
                    a["all"] += 1
                    if not est.is_calibrated or e.state.confidence == 0:
                        a["rest"].append(src.latent)
                        continue
                    if e.bad:
                        a["bad"] += 1
                        continue
                    a["lat"].append(src.latent)
                    a["out"].append((e.state.valence, e.state.arousal))
    return [{"latent": np.array(a["lat"]), "est": np.array(a["out"]),
             "rest": np.mean(a["rest"], axis=0), "bad_fraction": a["bad"] / max(a["all"], 1)}
            for a in acc]


def paired_ci(d: np.ndarray, seed: int = 0, n_boot: int = 10_000) -> tuple[float, float]:
    """Bootstrap 95 % CI of the mean of paired differences ``d`` (over listeners)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(d, (n_boot, d.size)).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _r(runs: list[dict], k: int) -> np.ndarray:
    return np.array([np.corrcoef(r["latent"][:, k], r["est"][:, k])[0, 1] for r in runs])


def noise_stats(runs: list[dict], max_lag: int = 120) -> dict:
    """Slope, residual std and AR(1) coefficient of the estimate vs the latent state.

    The fast mode models the residual as AR(1) noise. The estimate is a moving
    average (``smoothing_sec``), so its residual is smooth at short lags and its
    lag-one correlation says little about its slow part, which is what looks
    like signal to a fit and survives block averages. So ``ar1`` is the
    per-hop coefficient of the AR(1) with the same integrated autocorrelation
    time ``T = 1 + 2 sum_k acf(k)`` (mean acf over listeners, summed up to its
    first non-positive lag, at most ``max_lag`` hops): ``ar1 = (T - 1) / (T + 1)``,
    so the long-run variance ``std^2 T`` matches.
    """
    out = {}
    for k, axis in enumerate(("valence", "arousal")):
        slopes, resid, acfs = [], [], []
        for r in runs:
            x = r["latent"][:, k] - r["rest"][k]
            y = r["est"][:, k]
            b, a = np.polyfit(x, y, 1)
            slopes.append(b)
            e = y - (a + b * x)
            resid.append(e)
            c = e - e.mean()
            acfs.append([np.mean(c[:-lag] * c[lag:]) / c.var() for lag in range(1, max_lag + 1)])
        acf = np.mean(acfs, axis=0)
        n_pos = int(np.argmax(acf <= 0)) if (acf <= 0).any() else len(acf)
        t_int = 1 + 2 * float(acf[:n_pos].sum())
        out[f"gain_{axis}"] = float(np.median(slopes))
        out[f"std_{axis}"] = float(np.std(np.concatenate(resid)))
        out[f"ar1_{axis}"] = float(np.clip((t_int - 1) / (t_int + 1), 0.0, 0.99))
    return out


def speed_raw(seconds: float = 120.0) -> tuple[float, float]:
    params = sample_listeners(1, rng=0)[0]
    src = VirtualListenerSource(params, rng=0)
    src.hear(random_features(np.random.default_rng(0)), seconds)
    with src:
        t0 = time.perf_counter()
        chunks = [src.read() for _ in range(round(seconds / src.model.chunk_sec))]
        synth = seconds / (time.perf_counter() - t0)
    est = StateEstimator(EstimatorConfig(reference_model=False, calibration_sec=10))
    t0 = time.perf_counter()
    for c in chunks:
        est.push(c)
    both = seconds / (seconds / synth + time.perf_counter() - t0)
    return synth, both


def speed_fast(n: int = 10_000, steps: int = 400, dt: float = 0.5,
               families: tuple[str, ...] | None = None) -> float:
    group = FastListeners(sample_population(n, rng=0, families=families), rng=0)
    rng = np.random.default_rng(0)
    x = np.stack([feature_vector(random_features(rng)) for _ in range(n)])
    group.step(x, dt)
    t0 = time.perf_counter()
    for _ in range(steps):
        group.step(x, dt)
    return n * steps * dt / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listeners", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(FAMILY_NAMES),
                    help="comma-separated listener families to draw from")
    ap.add_argument("--blink-rate", type=float, default=SignalModel().blink_rate_per_min,
                    help="blinks per minute of the virtual listeners")
    ap.add_argument("--write-noise", action="store_true",
                    help=f"store the measured estimator noise in {NOISE_PATH}")
    ap.add_argument("--compare", action="store_true",
                    help="also run the PREVIOUS settings on the same signals (paired CI)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed figures")
    args = ap.parse_args()

    families = check_families(args.families.split(","))
    t0 = time.perf_counter()
    listeners = sample_population(args.listeners, rng=args.seed, families=families)
    model = SignalModel(blink_rate_per_min=args.blink_rate)
    overrides = [{}, PREVIOUS] if args.compare else [{}]
    both = [run_listener_configs(p, args.seed * 1000 + i, args.minutes, overrides, model=model)
            for i, p in enumerate(listeners)]
    runs = [b[0] for b in both]
    rv, ra = _r(runs, 0), _r(runs, 1)
    bad = np.array([r["bad_fraction"] for r in runs])
    lat_sd = np.array([r["latent"].std(axis=0) for r in runs])
    pooled = [np.corrcoef(np.concatenate([r["latent"][:, k] - r["rest"][k] for r in runs]),
                          np.concatenate([r["est"][:, k] for r in runs]))[0, 1] for k in (0, 1)]
    cfg = EstimatorConfig()
    print(f"recovery over {args.listeners} listeners ({','.join(families)}), 60 s rest + "
          f"{args.minutes:g} min music each, {args.blink_rate:g} blinks/min, estimator "
          f"smoothing_sec={cfg.smoothing_sec:g}, arousal_smoothing_sec="
          f"{cfg.arousal_smoothing_sec} "
          f"({time.perf_counter() - t0:.0f} s):")
    print(f"  MEAN r over all {len(runs)} listeners: arousal {ra.mean():.3f} (target >= 0.8), "
          f"valence {rv.mean():.3f} (target >= 0.6)")
    print(f"  arousal r: mean {ra.mean():.3f}, median {np.median(ra):.3f}, "
          f"10th pct {np.percentile(ra, 10):.3f}, pooled (latent - rest) {pooled[1]:.3f}")
    print(f"  valence r: mean {rv.mean():.3f}, median {np.median(rv):.3f}, "
          f"10th pct {np.percentile(rv, 10):.3f}, pooled (latent - rest) {pooled[0]:.3f}")
    fams = np.array([type(p).family for p in listeners])
    for fam in families:
        m = fams == fam
        if m.any():
            print(f"  {fam:<14} n={m.sum():3d}: mean r arousal {ra[m].mean():.3f}, "
                  f"valence {rv[m].mean():.3f}")
    print(f"  latent std within a session: valence {lat_sd[:, 0].mean():.3f}, "
          f"arousal {lat_sd[:, 1].mean():.3f}; windows rejected (blinks...) "
          f"{100 * bad.mean():.1f}%")
    if args.compare:
        prev = [b[1] for b in both]
        for k, axis in ((1, "arousal"), (0, "valence")):
            new, old = _r(runs, k), _r(prev, k)
            lo, hi = paired_ci(new - old, args.seed)
            print(f"  {axis} r, current minus PREVIOUS settings, same listeners and signals: "
                  f"{(new - old).mean():+.3f} (95 % CI {lo:+.3f} .. {hi:+.3f}); PREVIOUS mean "
                  f"{old.mean():.3f}")
    stats = noise_stats(runs)
    print("  estimator noise (fast mode):", json.dumps({k: round(v, 4) for k, v in stats.items()}))
    if args.write_noise:
        doc = {"version": 1, **stats, "hop_sec": cfg.hop_sec,
               "smoothing_sec": cfg.smoothing_sec,
               "source": (f"benchmarks/bench_listener.py --listeners {args.listeners} "
                          f"--minutes {args.minutes:g} --seed {args.seed} "
                          f"--families {','.join(families)} --write-noise"),
               "recovery_r_arousal_mean": float(ra.mean()),
               "recovery_r_valence_mean": float(rv.mean())}
        NOISE_PATH.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"  wrote {NOISE_PATH}")
    if args.no_speed:
        return
    synth, both = speed_raw()
    print(f"raw mode: {synth:,.0f} listener-s/s (signals only), {both:,.0f} listener-s/s "
          f"(signals + estimator), one listener")
    for fams_ in [(f,) for f in FAMILY_NAMES] + [FAMILY_NAMES]:
        label = fams_[0] if len(fams_) == 1 else "mixed (all)"
        print(f"fast mode, {label:<14}: {speed_fast(families=fams_):12,.0f} listener-s/s "
              f"(10,000 listeners, 0.5 s steps; target >= 1,000,000)")


if __name__ == "__main__":
    main()
