"""Closed-loop env speed: the vectorised fast env beside a no-op env, how it grows, full mode.

1. The reference: a no-op env of identical spaces in an SB3 ``DummyVecEnv`` of
   ``--n-envs`` copies (the vectorisation ceiling), and the fast
   ``ClosedLoopEnv`` in the same wrapper.
2. ``st_agent.envs.vector.VecClosedLoopEnv`` at ``--n-envs`` with both backends
   (numba, NumPy), with and without the per-session info dicts; steps/s and
   the ratio to the no-op env (the machine may be shared: the ratio is the
   figure that carries over, the load average is printed).
3. How cost grows: steps/s against the number of sessions (``--grow``, 8 ... 4,096).
4. A single env stepped directly, then full fidelity (composer + renderer + raw
   signals + estimator); with ``--full-procs N`` also N full-fidelity envs in SB3's
   ``SubprocVecEnv`` (one process each, one composer thread each: how a training
   run uses every core), steps/s counted over all of them.

One step = one phrase of one session; every listener family is in the
population (the default). The runs of the envs compared are interleaved
and each rate is the best of ``--repeats`` (the least disturbed by other
work on the machine), by the wall clock and per second of this process's
CPU time; random actions.

Targets: fast env >= 100,000 steps/s at x8, full fidelity >= 20 steps/s (issue 20).
Full fidelity is measured with the live composer (``compose``) and, apart, with
the phrase bank's cached phrases (``bank``); the CPU time of a step is split
into composer, virtual listener (signal synthesis) and estimator.

Run: ``python benchmarks/bench_env.py [--n-envs 8] [--steps 40000] [--full-steps 5]
[--plot env_growth.png] [--full-phrases compose,bank] [--full-procs 2]``
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from st_agent.envs.closed_loop import ClosedLoopEnv
from st_agent.envs.phrase_bank import build_phrase_bank
from st_agent.types import Knobs


class NoOpEnv(gym.Env):
    """Same spaces as ClosedLoopEnv, no work."""

    def __init__(self, like: ClosedLoopEnv) -> None:
        self.observation_space = like.observation_space
        self.action_space = like.action_space
        self._obs = np.zeros(like.observation_space.shape, np.float32)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs, {}

    def step(self, action):
        self._t += 1
        return self._obs, 0.0, False, self._t >= 32, {}


def _prepared(venv, n_envs: int) -> tuple:
    """``venv`` reset and warmed up (compiled code loaded), with its actions."""
    venv.seed(0)
    venv.reset()
    acts = np.random.default_rng(0).uniform(-1, 1, (64, n_envs, 3)).astype(np.float32)
    for i in range(20):
        venv.step(acts[i % 64])
    return venv, n_envs, acts


def _burst(prepared: tuple, steps: int) -> tuple[float, float]:
    """Session steps per second of one run of ``steps``: (wall clock, process CPU time)."""
    venv, n_envs, acts = prepared
    n_iter = max(2, steps // n_envs)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_iter):
        venv.step(acts[i % 64])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n_iter * n_envs / wall, n_iter * n_envs / max(cpu, 1e-9)


def _rates(envs: dict[str, tuple], steps: dict[str, int], repeats: int
           ) -> dict[str, tuple[float, float]]:
    """Best wall-clock and CPU-time rates of each env, the runs interleaved (same load)."""
    best = {k: (0.0, 0.0) for k in envs}
    for _ in range(repeats):
        for k, prepared in envs.items():
            w, c = _burst(prepared, steps[k])
            best[k] = (max(best[k][0], w), max(best[k][1], c))
    return best


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def _vec(bank, n: int, backend: str, infos: bool = True):
    from st_agent.envs.vector import VecClosedLoopEnv

    return VecClosedLoopEnv(n, seed=0, phrase_bank=bank, backend=backend, infos=infos)


def _fast(args, bank, backends: list[str]) -> None:
    proto = ClosedLoopEnv(phrase_bank=bank)
    n, steps = args.n_envs, args.steps
    print(_load())
    noop = f"no-op env, DummyVecEnv x{n} (reference)"
    envs = {noop: _prepared(DummyVecEnv([lambda: NoOpEnv(proto)] * n), n),
            f"fast ClosedLoopEnv, DummyVecEnv x{n}": _prepared(
                DummyVecEnv([lambda: ClosedLoopEnv(phrase_bank=bank)] * n), n)}
    budget = {k: steps if k == noop else steps // 20 for k in envs}
    for backend in backends:
        for infos in (True, False):
            label = f"VecClosedLoopEnv x{n}, {backend}, infos={infos}"
            envs[label] = _prepared(_vec(bank, n, backend, infos), n)
            budget[label] = steps if backend == "numba" else steps // 8
    rates = _rates(envs, budget, args.repeats)
    ref_w, ref_c = rates[noop]
    print(f"best of {args.repeats} interleaved runs; steps/s by the wall clock and per second "
          "of this process's CPU time")
    print(f"{'env':44s} {'wall steps/s':>12s} {'/ no-op':>8s} {'CPU steps/s':>12s} "
          f"{'/ no-op':>8s}")
    for label, (w, c) in rates.items():
        print(f"{label:44s} {w:12.0f} {w / ref_w:8.2f} {c:12.0f} {c / ref_c:8.2f}")
    print("target: VecClosedLoopEnv x8 >= 100,000 steps/s")
    print(_load())


def _grow(args, bank, backends: list[str]) -> None:
    sizes = [int(s) for s in args.grow.split(",") if s]
    cols = [(b, True) for b in backends] + [(b, False) for b in backends if b == "numba"]
    names = [b if infos else f"{b}, no infos" for b, infos in cols]
    print(f"\nhow cost grows (best of {args.repeats}; wall clock; 'no infos': infos=False, "
          f"the info dicts cost ~0.5 us per session); {_load()}")
    print(f"{'n_envs':>7s} " + " ".join(f"{m + ' steps/s':>24s} {'us/step':>9s}"
                                         for m in names))
    table = []
    for n in sizes:
        envs = {m: _prepared(_vec(bank, n, b, infos), n)
                for m, (b, infos) in zip(names, cols, strict=True)}
        steps = {m: max(args.steps if b == "numba" else args.steps // 8, 4 * n)
                 for m, (b, _) in zip(names, cols, strict=True)}
        rates = _rates(envs, steps, args.repeats)
        table.append([rates[m][0] for m in names])
        print(f"{n:7d} " + " ".join(f"{rates[m][0]:24.0f} {n / rates[m][0] * 1e6:9.1f}"
                                     for m in names))
    print(_load())
    if args.plot:
        _plot(args.plot, sizes, np.array(table), names)


def _plot(path: str, sizes: list[int], table: np.ndarray, backends: list[str]) -> None:
    """Steps/s against sessions, log-log, one line per backend (a PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, b in enumerate(backends):
        ax.loglog(sizes, table[:, k], "o-", label=f"VecClosedLoopEnv, {b}")
    ax.axhline(100_000, color="grey", ls="--", lw=1, label="target at x8")
    ax.set_xlabel("sessions stepped together (n_envs)")
    ax.set_ylabel("session steps / s (wall clock)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def _single_and_full(args, bank) -> None:
    env = ClosedLoopEnv(phrase_bank=bank)
    env.reset(seed=0)
    a = np.array([0.3, -0.2, 0.5], np.float32)
    t0 = time.perf_counter()
    for _ in range(args.steps // 8):
        if env.step(a)[3]:
            env.reset()
    print(f"\nfast, single env:        {args.steps // 8 / (time.perf_counter() - t0):10.0f} "
          "steps/s")
    if args.full_steps <= 0:
        return
    for phrases in args.full_phrases.split(","):
        rng = np.random.default_rng(0)  # the same actions for every phrase source
        for label, acts, start in (
                ("random knob changes", rng.uniform(-1, 1, (args.full_steps, 3)), None),
                ("toward slow, dense music", np.tile(a, (args.full_steps, 1)), None),
                ("the slowest, densest music throughout (tempo 0, energy 1)",
                 np.tile(a, (args.full_steps, 1)), Knobs(0.5, 0.0, 1.0))):
            _full_rate(args, bank, phrases, label, acts, start)
            if args.full_procs > 0:
                _full_vec_rate(args, phrases, label, acts, start)


def _full_rate(args, bank, phrases: str, label: str, acts: np.ndarray,
               start: Knobs | None) -> None:
    """Full-fidelity steps/s (wall clock and per CPU second) and where a step's time goes."""
    full = ClosedLoopEnv(fidelity="full", phrase_bank=bank, max_steps=args.full_steps + 2,
                         full_phrases=phrases, start_knobs=start)
    t0 = time.perf_counter()
    full.reset(seed=0)
    t_reset = time.perf_counter() - t0
    full.step(acts[0].astype(np.float32))  # warm-up: the first decoding allocates
    parts = {"composer": 0.0, "listener": 0.0, "estimator": 0.0}
    if full._composer is not None:
        full._composer.compose = _timed(full._composer.compose, parts, "composer")
    full._src.read_block = _timed(full._src.read_block, parts, "listener")
    full._estimator.push = _timed(full._estimator.push, parts, "estimator")
    t0, c0 = time.perf_counter(), time.process_time()
    sim = 0.0
    for act in acts.astype(np.float32):
        sim += full.step(act)[4]["phrase_sec"]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    full.close()
    n = len(acts)
    split = ", ".join(f"{k} {v / n * 1e3:.0f}" for k, v in parts.items() if v)
    print(f"full ({phrases}), {label}: reset {t_reset:.1f} s; {n / dt:.2f} steps/s wall, "
          f"{n / dc:.2f} per CPU second ({sim / n:.1f} s phrases, {sim / dt:.0f}x real time); "
          f"CPU ms per step: {split}; target >= 20; {_load()}")


def _make_full(phrases: str, max_steps: int, start: Knobs | None):
    """A picklable maker of one full-fidelity env whose composer uses one thread."""
    from st_agent.music.composer import ComposerConfig

    def make() -> ClosedLoopEnv:
        return ClosedLoopEnv(fidelity="full", max_steps=max_steps, full_phrases=phrases,
                             start_knobs=start, composer=ComposerConfig(threads=1))
    return make


def _full_vec_rate(args, phrases: str, label: str, acts: np.ndarray,
                   start: Knobs | None) -> None:
    """Full-fidelity steps/s of ``--full-procs`` envs, one process each (wall clock)."""
    n = args.full_procs
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process, as on a cluster
    venv = SubprocVecEnv([_make_full(phrases, args.full_steps + 2, start)] * n)
    try:
        venv.seed(0)
        t0 = time.perf_counter()
        venv.reset()
        t_reset = time.perf_counter() - t0
        venv.step(np.tile(acts[0].astype(np.float32), (n, 1)))  # warm-up
        t0 = time.perf_counter()
        sim = 0.0
        for act in acts.astype(np.float32):
            infos = venv.step(np.tile(act, (n, 1)))[3]
            sim += sum(i["phrase_sec"] for i in infos)
        dt = time.perf_counter() - t0
    finally:
        venv.close()
    steps = n * len(acts)
    print(f"full ({phrases}), {label}, SubprocVecEnv x{n} (one composer thread each): "
          f"reset {t_reset:.1f} s; {steps / dt:.2f} steps/s wall over all envs "
          f"({sim / steps:.1f} s phrases, {sim / dt:.0f}x real time); target >= 20; {_load()}")


def _timed(fn, acc: dict[str, float], key: str):
    """``fn`` that adds its CPU time to ``acc[key]``."""
    def wrapper(*a, **kw):
        c = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            acc[key] += time.process_time() - c
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-envs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40_000, help="session steps per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--grow", default="8,16,32,64,128,256,512,1024,2048,4096",
                    help="comma-separated numbers of sessions ('' skips the table)")
    ap.add_argument("--backends", default="numba,numpy")
    ap.add_argument("--plot", default="", help="write the growth table as a PNG here")
    ap.add_argument("--full-steps", type=int, default=5)
    ap.add_argument("--full-phrases", default="compose,bank",
                    help="full fidelity's phrase sources: compose (live composer) and/or bank "
                         "(the phrase bank's measured phrases, the cached path)")
    ap.add_argument("--full-procs", type=int, default=0,
                    help="also step this many full-fidelity envs in SubprocVecEnv (0: skip)")
    args = ap.parse_args()
    from st_agent.envs.vector import numba_available

    backends = [b for b in args.backends.split(",") if b]
    if "numba" in backends and not numba_available():
        print("numba is not installed: the numba backend is skipped")
        backends.remove("numba")
    bank = build_phrase_bank()
    _fast(args, bank, backends)
    if args.grow:
        _grow(args, bank, backends)
    _single_and_full(args, bank)


if __name__ == "__main__":
    main()
