"""Listener fitting: held-out R² against minutes of recording.

For ``--listeners`` (10) listeners drawn from the population, simulated
sessions in fast mode (60 s rest, then blocks of 30-90 s of one random phrase
each; observed states = latent + estimator noise measured from the raw mode,
in latent units) of 2.5 to 30 minutes are fitted
(:func:`st_agent.listener.fitting.fit_listener`); the last 25% of each session is held
out and predicted. R² on held-out states averaged over 10 s blocks (what the
fit reports), on single windows (the estimator's own per-hop output, with its
``smoothing_sec`` moving average), and against the true latent state; then
the shortest session with median R² >= 0.7 per window and per block. A second
table uses the full measured observation model (rest-relative, with the
estimator's gain), i.e. a fit in the estimator's coordinates.

Run: ``python benchmarks/bench_fit.py [--listeners 10] [--minutes 2.5 5 10 ...]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from st_agent.listener.fitting import FitError, _predict, fit_listener, simulated_session
from st_agent.listener.model import EstimatorNoise, sample_listeners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listeners", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.5, 5, 10, 15, 20, 30],
                    help="session lengths to fit, minutes of music")
    args = ap.parse_args()
    listeners = sample_listeners(args.listeners, rng=args.seed)
    measured = EstimatorNoise.load()
    for label, noise in (("latent units (gain 1)", None),
                         ("estimator coordinates (measured gain, rest-relative)", measured)):
        print(f"observation model: {label}")
        print("  minutes  R2(10 s blocks)  R2(windows)  R2(latent)  fit s   [median over "
              f"{args.listeners} listeners]")
        need_b = need_w = None
        for minutes in args.minutes:
            r2b, r2w, r2l, secs = [], [], [], []
            for i, p in enumerate(listeners):
                rng = np.random.default_rng(1000 * args.seed + i)
                data, latent = simulated_session(p, minutes, rng, noise=noise)
                t0 = time.perf_counter()
                try:
                    res = fit_listener([data], min_minutes=2.0)
                except FitError:
                    continue
                secs.append(time.perf_counter() - t0)
                r2b.append(res.heldout_r2)
                r2w.append(res.heldout_r2_window)
                cut = round(len(data.obs) * 0.75)
                ref = latent if noise is None else (
                    np.array([measured.gain_valence, measured.gain_arousal])
                    * (latent - np.tanh([p.baseline_valence, p.baseline_arousal])))
                pred = _predict(res.params, data)
                e = pred[cut:] - ref[cut:]
                sst = ((ref[cut:] - ref[cut:].mean(0)) ** 2).sum()
                r2l.append(1 - (e ** 2).sum() / sst)
            print(f"  {minutes:7.1f}  {np.median(r2b):15.3f}  {np.median(r2w):11.3f}  "
                  f"{np.median(r2l):10.3f}  {np.median(secs):5.2f}", flush=True)
            if need_b is None and np.median(r2b) >= 0.7:
                need_b = minutes
            if need_w is None and np.median(r2w) >= 0.7:
                need_w = minutes

        def fmt(m: float | None) -> str:
            return f"{m:g} min" if m is not None else f"not reached by {max(args.minutes):g} min"

        print(f"  minutes of music needed for median held-out R2 >= 0.7: per window "
              f"{fmt(need_w)}; 10 s blocks {fmt(need_b)}")


if __name__ == "__main__":
    main()
