"""Figures of the live dashboard (issue 16): update latency, CPU cost, lead time.

Two real-time (not accelerated) virtual-listener sessions with the same seed and
settings, one without and one with ``--dashboard`` and a headless Chromium showing the
page for the whole session:

* **update latency**: for every estimate published after the page connected, the
  browser records ``Date.now() - wall_ms`` (``wall_ms``: when the loop published it)
  when the frame that draws it is done (``window.stDash.paint``; ``recv``: when its
  WebSocket message was parsed). Same machine, same clock. p50/p95/max, ms.
* **CPU cost**: (a) CPU time of the dashboard's server thread itself (``utime +
  stime`` of ``/proc/self/task/<tid>/stat``), per minute; (b) CPU time of the session's
  process (all threads, ``time.process_time``) with the dashboard serving minus
  without, same seed, runs alternated (without, with, without, with) after a warm-up
  session that loads the models. The browser's own CPU is not counted (another
  process). The machine is shared: (b) carries that noise, (a) does not.
* **lead time**: the music's lead time (next phrase ready before the current one ends,
  ``summary.json``) with the dashboard open: its minimum must stay > 0.

Run: ``nice .venv/bin/python benchmarks/bench_dashboard.py [--minutes 1.5]``
(about 2 x (minutes + calibration) of wall time, plus model loading).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def _thread_cpu(name: str) -> float | None:
    """CPU seconds (user + system) of this process's thread called ``name``."""
    import os
    import threading as th

    for t in th.enumerate():
        if t.name == name and t.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")")
            except OSError:
                return None
            parts = fields[-1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return None


def _session(record: Path, name: str, minutes: float, calibration: float,
             dashboard: bool, accelerated: bool = False) -> tuple[dict, float, dict | None]:
    """Run one session; return (summary, CPU seconds of this process, page figures)."""
    from st_agent.live.session import SessionConfig, run_session
    from st_agent.policies.controllers import make_controller

    cfg = SessionConfig(board="virtual", minutes=minutes, calibration_sec=calibration,
                        record=record, name=name, policy="calm", report=False,
                        dashboard=dashboard, seed=3, accelerated=accelerated)
    controller, cname = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    urls: list[str] = []
    out: dict = {}
    cpu0 = time.process_time()
    thread = threading.Thread(target=lambda: out.setdefault(
        "r", run_session(cfg, controller, cname, on_dashboard=urls.append)))
    thread.start()
    page = None
    driver = None
    if dashboard:
        while not urls and thread.is_alive():
            time.sleep(0.05)
        driver = _chromium()
        driver.get(urls[0])
    server_cpu = None
    while thread.is_alive():
        thread.join(timeout=0.5)
        server_cpu = _thread_cpu("st-dashboard") or server_cpu
    cpu = time.process_time() - cpu0
    if driver is not None:
        page = driver.execute_script("return {paint: window.stDash.paint, "
                                     "recv: window.stDash.recv, "
                                     "frames: +document.body.dataset.frames}")
        page["server_cpu"] = server_cpu
        driver.quit()
    return out["r"].summary, cpu, page


def _s(x: float | None, unit: str = " s") -> str:
    return "n/a" if x is None else f"{x:.2f}{unit}"


def _pct(x: list[float]) -> str:
    a = np.asarray(x, dtype=float)
    return (f"n={a.size} p50 {np.percentile(a, 50):.1f} ms, p95 {np.percentile(a, 95):.1f} ms,"
            f" max {a.max():.1f} ms")


def main() -> None:
    """Print the figures."""
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--calibration", type=float, default=20.0)
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args()
    runs: dict[bool, list] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        _session(Path(tmp), "warmup", 0.2, 5.0, False, accelerated=True)  # load the models
        for i in range(args.pairs):
            for dash in (False, True):
                runs[dash].append(_session(Path(tmp), f"dash{int(dash)}-{i}", args.minutes,
                                           args.calibration, dash))
    dump = Path(tempfile.gettempdir()) / "bench_dashboard_runs.json"
    dump.write_text(json.dumps({str(d): runs[d] for d in runs}, default=str))
    print(f"(raw results: {dump})")
    print(f"real-time virtual session, {args.minutes} min of music after "
          f"{args.calibration:.0f} s calibration, policy calm, seed 3; {args.pairs} pairs")
    paint = [x for _, _, page in runs[True] for x in page["paint"]]
    recv = [x for _, _, page in runs[True] for x in page["recv"]]
    print(f"update latency, estimate published -> drawn on the page: {_pct(paint)}")
    print(f"  (-> WebSocket message parsed: {_pct(recv)})")
    for d in (False, True):
        for s, cpu, page in runs[d]:
            lead, wall = s["lead_time_sec"], s["wall_sec"]
            extra = (f"; server thread CPU {page['server_cpu']:.2f} s"
                     if page and page.get("server_cpu") is not None else "")
            print(f"{'with' if d else 'without'} dashboard: process CPU {cpu:.1f} s over "
                  f"{wall:.0f} s wall ({100 * cpu / wall:.1f} % of one core){extra}; lead "
                  f"time min {_s(lead['min'])}, p5 {_s(lead['p5'])} over {lead['n']} "
                  f"phrases, {s['phrases']} played; decision latency p95 "
                  f"{_s(s['decision_latency_ms']['p95'], ' ms')}")
    per_min = {d: np.mean([cpu / (s["wall_sec"] / 60.0) for s, cpu, _ in runs[d]])
               for d in runs}
    server = [page["server_cpu"] / (s["wall_sec"] / 60.0) for s, _, page in runs[True]
              if page.get("server_cpu") is not None]
    print(f"dashboard CPU cost: server thread {np.mean(server):.2f} CPU-s per minute "
          f"({100 * np.mean(server) / 60:.2f} % of one core); process with minus without "
          f"{per_min[True] - per_min[False]:+.2f} CPU-s per minute "
          f"({100 * (per_min[True] - per_min[False]) / 60:+.2f} % of one core)")
    def worst(d: bool) -> float | None:
        mins = [s["lead_time_sec"]["min"] for s, _, _ in runs[d]
                if s["lead_time_sec"]["min"] is not None]
        return min(mins) if mins else None

    w = worst(True)
    print(f"lead time min with the dashboard open {_s(w)} (without: {_s(worst(False))}): "
          + ("not measured" if w is None else "stays > 0" if w > 0 else "NOT > 0"))


if __name__ == "__main__":
    main()
