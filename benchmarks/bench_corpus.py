"""How much training data the composer's condition gives, and music21's check of it.

Prints, for the music21 ABC corpus: tunes and phrases per split in the default
corpus and conditioned (:mod:`st_agent.tokenizer.corpus_condition`), the share of
phrases in 4/4 with ``L:1/8``, every refusal by reason, every bar and token
dropped by reason, the meter/unit conversions and transposition intervals; then
the independent check (:mod:`st_agent.tokenizer.condition_check`): music21 parses
the source bars and their renotation of ``--check`` random tunes and compares
pitches (shifted by the interval) and durations.

Usage::

    nice .venv/bin/python benchmarks/bench_corpus.py --check 600
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from st_agent.tokenizer.condition_check import check_conditioning
from st_agent.tokenizer.corpus import music21_abc_files
from st_agent.tokenizer.corpus_condition import (
    ConditionError,
    ConditionReport,
    _read_tunes,
    condition_tune,
    load_condition_corpus,
)


def _pct(a: int, b: int) -> str:
    return f"{a:,} of {b:,} ({100 * a / b:.1f} %)" if b else f"{a} of 0"


def print_report(r: ConditionReport) -> None:
    """The amounts, shares and every reason for a drop."""
    kept = sum(c["original"] for c in r.tunes.values())
    print(f"tunes read {r.n_read:,}; refused by the default corpus "
          f"{sum(r.refused_default.values()):,}; duplicates {r.n_duplicates:,}; "
          f"default corpus {kept:,}")
    for reason, n in r.refused_default.most_common():
        print(f"  default corpus refuses: {reason}: {n:,}")
    cond = sum(c["conditioned"] for c in r.tunes.values())
    print(f"conditioned tunes: {_pct(cond, kept)}; refused by conditioning:")
    for reason, n in r.refused.most_common():
        print(f"  {reason}: {n:,} ({100 * n / kept:.1f} % of the default corpus's tunes)")
    for split in ("train", "validation", "test"):
        t, p = r.tunes[split], r.phrases[split]
        print(f"{split}: tunes {t['original']:,} -> {t['conditioned']:,}; phrases "
              f"{p['original']:,} -> {p['conditioned']:,} (4 whole bars each); "
              f"4/4 L:1/8 phrases: default {_pct(p['original_44'], p['original'])}, "
              f"conditioned {_pct(p['conditioned_44'], p['conditioned'])}")
    c = r.counts
    print(f"bars as written in the default corpus's tunes: {c['bars_written']:,}; source bars "
          f"kept in conditioned tunes: {c['bars_in']:,} -> output bars {c['bars_out']:,} "
          f"(2/4 and 3/8 pairs count once)")
    print(f"  bar lines restored in bars holding several (Essen line ends): "
          f"{c['bar_lines_restored']:,}; split bars joined: {c['merged']:,}")
    print(f"  bars dropped: last bar short {c['final_partial']:,}, short bar before a "
          f"section/repeat {c['section_partial']:,}, odd 2/4 or 3/8 bar {c['odd_pair']:,}, "
          f"1-3 bars after the last whole phrase of a run {c['short_tail']:,}")
    print(f"  tokens dropped: grace groups {c['grace']:,}, decorations {c['decoration']:,}, "
          f"stray characters {c['other']:,}")
    print(f"  tunes with a pickup line: {_pct(r.pickups, cond)}")
    print("meter and unit conversions (tunes): " + ", ".join(
        f"{k} {v:,}" for k, v in r.meters.most_common(14)))
    print("transposition intervals (semitones: tunes): " + ", ".join(
        f"{k:+d}: {v:,}" for k, v in sorted(r.semitones.items())))


def run_check(n: int, seed: int) -> None:
    """music21 on the source and the renotation of ``n`` random tunes."""
    tunes = [(t, fam) for t, fam, _, _ in _read_tunes(music21_abc_files(), ConditionReport())]
    rng = np.random.default_rng(seed)
    checked, ok, events, by_kind, failures = 0, 0, 0, Counter(), []
    for i in rng.permutation(len(tunes)):
        if checked >= n:
            break
        tune, fam = tunes[i]
        try:
            c = condition_tune(tune, fam)
        except ConditionError:
            continue
        res = check_conditioning(c, tune.meter, tune.unit, tune.key)
        checked += 1
        ok += res.ok
        events += res.n_events
        kind = f"{tune.meter} L:{tune.unit} -> {c.tune.meter}"
        by_kind[kind, res.ok] += 1
        if not res.ok:
            failures.append(f"{tune.meter} L:{tune.unit} K:{tune.key}: {res.detail}\n"
                            f"    source {c.source_text[:400]!r}\n"
                            f"    renotated {c.tune.text()[:400]!r}")
    print(f"music21 check: {ok} of {checked} tunes identical ({events:,} notes and rests "
          f"compared; pitches shifted by the interval, durations in quarter notes)")
    kinds = sorted({k for k, _ in by_kind}, key=lambda k: -by_kind[k, True] - by_kind[k, False])
    print("  by conversion (identical/checked): " + ", ".join(
        f"{k} {by_kind[k, True]}/{by_kind[k, True] + by_kind[k, False]}" for k in kinds[:12]))
    for f in failures[:10]:
        print("  differs: " + f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", type=int, default=300, help="tunes for the music21 check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    if not args.no_report:
        print_report(load_condition_corpus()[1])
    if args.check:
        run_check(args.check, args.seed)


if __name__ == "__main__":
    main()
