"""ABC -> MIDI converters on the music21 ABC corpus: speed and coverage.

Compares music21 (``converter.parse(text, format="abc")`` + writing a MIDI
file) with ``abc2midi`` through :mod:`st_agent.music.abc`. The corpus is the ``.abc``
files under music21's ``corpus/`` folder, split into tunes at lines starting
with ``X:`` (text before the first ``X:`` of a file, the file header, is left out).

Figures:

- speed, per tune (mean and median) on ``--n-speed`` random tunes (fixed seed);
- coverage: share of tunes that give a MIDI, and share with warnings: the whole
  corpus for abc2midi, ``--n-m21`` random tunes for music21 (the whole corpus
  with ``--m21-all``, about 10 minutes);
- batch attribution: ``check_many`` over batches of 8 against ``check_abc`` on
  each tune alone, over the whole corpus (the reports must be equal).

Usage::

    python benchmarks/bench_converters.py [--quick] [--seed 0] [--n-speed 200]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import music21

from st_agent.music.abc import AbcReport, abc_to_midi, check_abc, check_many, find_abc2midi


def load_corpus() -> tuple[list[str], int]:
    """All tunes of music21's ABC corpus, and the number of files."""
    root = Path(music21.__file__).resolve().parent / "corpus"
    files = sorted(root.rglob("*.abc"))
    tunes: list[str] = []
    for f in files:
        text = f.read_bytes().decode("utf-8", errors="replace")
        current: list[str] | None = None
        for line in text.splitlines():
            if line.startswith("X:"):
                if current:
                    tunes.append("\n".join(current).strip() + "\n")
                current = [line]
            elif current is not None:
                current.append(line)
        if current:
            tunes.append("\n".join(current).strip() + "\n")
    return tunes, len(files)


def _stats(times: list[float]) -> str:
    return (f"mean {statistics.mean(times) * 1e3:7.2f} ms   "
            f"median {statistics.median(times) * 1e3:7.2f} ms")


def m21_convert(text: str, out: Path) -> tuple[bool, bool, float, float, str]:
    """(MIDI written, warned, parse seconds, total seconds, error class)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = music21.converter.parse(text, format="abc", forceSource=True)
            t1 = time.perf_counter()
            score.write("midi", fp=str(out))
        except Exception as e:  # the benchmark counts every failure
            t = time.perf_counter() - t0
            return False, bool(caught), t, t, type(e).__name__
    t2 = time.perf_counter()
    return out.exists() and out.stat().st_size > 0, bool(caught), t1 - t0, t2 - t0, ""


def _no_cols(report: AbcReport) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The messages without their column numbers (abc2midi's can be stale)."""
    def strip(msgs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(re.sub(r" col \d+:", ":", m) for m in msgs)
    return strip(report.errors), strip(report.warnings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-speed", type=int, default=200, help="tunes timed per converter")
    parser.add_argument("--n-m21", type=int, default=1000, help="tunes for music21 coverage")
    parser.add_argument("--m21-all", action="store_true", help="music21 on the whole corpus")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    tunes, n_files = load_corpus()
    print(f"corpus: {len(tunes)} tunes in {n_files} files "
          f"({sum(map(len, tunes)) / 1e6:.2f} MB); abc2midi at {find_abc2midi()}; "
          f"music21 {music21.__version__}")
    n_speed = 20 if args.quick else args.n_speed
    speed_set = rng.sample(tunes, n_speed)
    cover_set = rng.sample(tunes, 300) if args.quick else tunes
    if args.m21_all and not args.quick:
        m21_set = tunes
    else:
        m21_set = rng.sample(tunes, 50 if args.quick else min(args.n_m21, len(tunes)))

    # ---------------------------------------------------------------- speed
    print(f"\n== speed, {n_speed} random tunes (seed {args.seed}), per tune ==")
    for name, fn in (("abc2midi: check_abc (convert, read messages)", check_abc),
                     ("abc2midi: abc_to_midi (+ read MIDI with pretty_midi)", abc_to_midi)):
        times = []
        for t in speed_set:
            t0 = time.perf_counter()
            try:
                fn(t)
            except ValueError:
                pass
            times.append(time.perf_counter() - t0)
        print(f"{name:58s} {_stats(times)}")
    batch_times = []
    for i in range(0, n_speed, 8):
        batch = speed_set[i:i + 8]
        t0 = time.perf_counter()
        check_many(batch)
        batch_times.append((time.perf_counter() - t0) / len(batch))
    print(f"{'abc2midi: check_many, batches of 8 (per tune)':58s} {_stats(batch_times)}")
    m21_parse, m21_total = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, t in enumerate(speed_set):
            ok, _, tp, tt, _ = m21_convert(t, Path(tmp) / f"{i}.mid")
            if ok:
                m21_parse.append(tp)
                m21_total.append(tt)
    print(f"{'music21: parse alone (tunes that converted)':58s} {_stats(m21_parse)}")
    print(f"{'music21: parse + write MIDI (tunes that converted)':58s} {_stats(m21_total)}")

    # ------------------------------------------------------------- coverage
    print("\n== coverage ==")
    t0 = time.perf_counter()
    reports = []
    for i in range(0, len(cover_set), 8):
        reports.extend(check_many(cover_set[i:i + 8]))
    batch_sec = time.perf_counter() - t0
    n = len(cover_set)
    ok = sum(r.ok for r in reports)
    warned = sum(bool(r.warnings) for r in reports)
    print(f"abc2midi, {n} tunes{' (whole corpus)' if n == len(tunes) else ''}: "
          f"MIDI without Error lines {100 * ok / n:.2f} %, "
          f"with warnings {100 * warned / n:.1f} %, "
          f"errors in {n - ok} tunes")
    errors: dict[str, int] = {}
    for r in reports:
        for e in r.errors:
            msg = e.split(": ", 1)[1].split(" (in ")[0].split(" (at ")[0]
            key = msg if len(msg) < 60 else msg[:57] + "..."
            errors[key] = errors.get(key, 0) + 1
    for msg, count in sorted(errors.items(), key=lambda kv: -kv[1])[:6]:
        print(f"    {count:5d} x {msg}")

    # the files as published: abc2midi on each whole file, MIDI files counted
    if not args.quick:
        written = 0
        root = Path(music21.__file__).resolve().parent / "corpus"
        with tempfile.TemporaryDirectory() as tmp:
            for k, f in enumerate(sorted(root.rglob("*.abc"))):
                src = Path(tmp) / f"f{k}_.abc"
                src.write_bytes(f.read_bytes())
                subprocess.run([find_abc2midi(), src.name, "-NGUI"], cwd=tmp,
                               capture_output=True, timeout=120, check=False)
                written += sum(1 for _ in Path(tmp).glob(f"f{k}_*.mid"))
        print(f"abc2midi on the {n_files} files as published (file headers kept, "
              f"errors ignored): MIDI written for {100 * written / len(tunes):.2f} % of tunes")

    # music21 coverage
    failures: dict[str, int] = {}
    m21_ok = m21_warn = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, t in enumerate(m21_set):
            ok_i, warned_i, _, _, err = m21_convert(t, Path(tmp) / f"{i}.mid")
            m21_ok += ok_i
            m21_warn += warned_i
            if err:
                failures[err] = failures.get(err, 0) + 1
    m21_sec = time.perf_counter() - t0
    scope = "whole corpus" if len(m21_set) == len(tunes) else \
        f"random sample of {len(m21_set)}, seed {args.seed}; --m21-all for the whole corpus"
    print(f"music21, {len(m21_set)} tunes ({scope}): MIDI {100 * m21_ok / len(m21_set):.2f} %, "
          f"with Python warnings {100 * m21_warn / len(m21_set):.1f} %, "
          f"{m21_sec:.0f} s")
    for err, count in sorted(failures.items(), key=lambda kv: -kv[1])[:4]:
        print(f"    {count:5d} x {err}")

    # ------------------------------------------------------ batch attribution
    print("\n== check_many attribution (batches of 8 vs each tune alone) ==")
    t0 = time.perf_counter()
    single = [check_abc(t) for t in cover_set]
    single_sec = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(reports, single, strict=True))
    same_ok = sum(a.ok == b.ok for a, b in zip(reports, single, strict=True))
    same_text = sum(_no_cols(a) == _no_cols(b) for a, b in zip(reports, single, strict=True))
    print(f"{n} tunes: same ok/error verdict for {same_ok} ({100 * same_ok / n:.2f} %), "
          f"same messages ignoring columns {same_text} ({100 * same_text / n:.2f} %), "
          f"identical reports {same} ({100 * same / n:.2f} %); "
          f"wall {batch_sec:.1f} s batched vs {single_sec:.1f} s one by one "
          f"({1e3 * batch_sec / n:.2f} vs {1e3 * single_sec / n:.2f} ms per tune)")
    diffs = [(i, a, b) for i, (a, b) in enumerate(zip(reports, single, strict=True)) if a != b]
    for i, a, b in diffs[:3]:
        print(f"    tune {i}: batch {a}\n             alone {b}")
    print(f"\ncpu: {os.cpu_count()} cores, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
