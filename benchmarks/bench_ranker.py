"""Tune the composer's ranker offline on recorded candidate batches, and the oracle.

    nice .venv/bin/python benchmarks/bench_ranker.py record --seed 1 --out runs/ranker_tune.json
    nice .venv/bin/python benchmarks/bench_ranker.py tune runs/ranker_tune.json

``record`` composes a knob grid (``knob_grid(n, seed)``), continuation chains and
calm-corner phrases with ``enough=8`` (every candidate of a batch finishes) and
writes every candidate of every batch: its body, its length in tokens (the step at
which it finished; the composer's default ``enough=4`` keeps the first four to
finish, which ``tune`` replays), and what the ranker needs (key, target density,
the previous phrase's last pitch). ``tune`` re-ranks the same candidates with
several :class:`~st_agent.music.ranker.RankerWeights` settings through the
composer's own scoring (``Composer._score_body``), and reports the figures of
``bench_music_quality`` that need no rendering: music21 mode family and exact key
of the melody, note-length-entropy OA against held-out phrases, 6+ runs, calm
corner 4+ runs and distinct pitches, joins > a fifth (each chain step against the
context that was recorded), and energy Spearman of melody onsets per quarter
(16 quarters per phrase). The *oracle* columns are the best any choice among the
same candidates could reach on one figure.

Nothing is repaired: a figure is the chosen candidate's, as sampled. The chains'
contexts are the phrases the recording composer chose (its default ranker at the
time of recording), so a join figure here is one step: each re-ranked choice against
the recorded previous phrase. ``enough=4`` is replayed from the token counts (the
candidates that finished at or before the fourth one's step), which is what
``BarHook`` keeps, up to the random draws that differ once rows stop.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_music_quality import (
    CALM_TEMPO,
    WAVE3_WEIGHTS,
    corpus_reference,
    knob_grid,
    music21_key,
    overlap_area,
    tune,
)

from st_agent.music.composer import Composer, ComposerConfig
from st_agent.music.ranker import RankerWeights, melody_facts, melody_notes
from st_agent.theory import parse_key
from st_agent.tokenizer.corpus import Controls
from st_agent.types import Knobs


class RecordingComposer(Composer):
    """A composer that keeps every screened candidate of its last ``compose`` call."""

    def __init__(self, config: ComposerConfig) -> None:
        super().__init__(config)
        self.log: list[dict] = []

    def _screen(self, ids, controls, target, key, meter, unit, prev_pitch=None):
        c = super()._screen(ids, controls, target, key, meter, unit, prev_pitch)
        self.log.append({"body": c.body, "ntok": len(ids), "valid": not c.reason,
                         "target": target, "key": key, "prev": prev_pitch})
        return c

    def take(self) -> list[dict]:
        out, self.log = self.log, []
        return out


def _record_one(comp: RecordingComposer, kind: str, knobs: Knobs, seed: int,
                context=None) -> tuple[dict, object]:
    p = comp.compose(knobs, context=context, seed=seed)
    return {"kind": kind, "knobs": [knobs.valence, knobs.tempo, knobs.energy], "seed": seed,
            "chosen": p.body, "cands": comp.take()}, p


def record(args: argparse.Namespace) -> None:
    comp = RecordingComposer(ComposerConfig(enough=8))
    recs = []
    for i, k in enumerate(knob_grid(args.phrases, args.seed)):
        recs.append(_record_one(comp, "grid", k, seed=10_000 * args.seed + i)[0])
    rng = np.random.default_rng(100 + args.seed)
    for c in range(args.chains):
        k = Knobs(float(rng.random()), float(rng.random()), float(rng.random()))
        rec, prev = _record_one(comp, "chain0", k, seed=10_000 * args.seed + 1000 + c)
        recs.append(rec)
        for j in range(1, args.chain_len):
            k = Knobs(*(float(np.clip(x + rng.normal(0, 0.25), 0, 1)) for x in
                        (k.valence, k.tempo, k.energy)))
            rec, prev = _record_one(comp, "chain", k, 10_000 * args.seed + 2000 + 100 * c + j,
                                    context=prev)
            recs.append(rec)
    for i in range(args.calm):
        k = Knobs(0.2 if i % 2 else 0.8, CALM_TEMPO, 0.1)
        recs.append(_record_one(comp, "calm", k, seed=10_000 * args.seed + 500 + i)[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(recs))
    print(f"recorded {len(recs)} phrases, "
          f"{sum(len(r['cands']) for r in recs)} candidates -> {args.out}")


# ---------------------------------------------------------------------------
_KEY_CACHE: dict[tuple[str, str], tuple[int, str] | None] = {}


def m21_key(body: str, key: str) -> tuple[int, str] | None:
    if (body, key) not in _KEY_CACHE:
        _KEY_CACHE[(body, key)] = music21_key(tune(body, key))
    return _KEY_CACHE[(body, key)]


def pool(rec: dict, enough: int) -> list[dict]:
    """The valid candidates the composer would rank with ``enough`` (the first to finish)."""
    done = sorted(c["ntok"] for c in rec["cands"] if c["body"] or c["valid"])
    if not done:
        return []
    cut = done[min(enough, len(done)) - 1]
    return [c for c in rec["cands"] if c["valid"] and c["ntok"] <= cut]


def choose(comp: Composer, rec: dict, cands: list[dict]) -> dict:
    knobs = Knobs(*rec["knobs"])
    controls = Controls.from_knobs(knobs)
    scores = [comp._score_body(c["body"], controls, c["target"], c["key"], "4/4", "1/8",
                               c["prev"])[0] for c in cands]
    return cands[int(np.argmin(scores))]


def facts_of(c: dict) -> dict:
    if "_f" not in c:
        notes = melody_notes(c["body"], 0.5, c["key"])
        f = melody_facts(c["body"], 0.5, c["key"], c["prev"])
        k = parse_key(c["key"])
        got = m21_key(c["body"], c["key"])
        c["_f"] = {"npq": len(notes) / 16.0, "entropy": f.length_entropy,
                   "run": f.longest_repeat, "distinct": f.distinct,
                   "join": f.join_leap if c["prev"] is not None else None,
                   "fam": None if got is None else got[1],
                   "exact": got == (k.tonic_pc, k.family)}
    return c["_f"]


def figures(recs: list[dict], picks: list[dict], ref_entropy: np.ndarray) -> dict:
    grid = [(r, facts_of(c)) for r, c in zip(recs, picks, strict=True) if r["kind"] == "grid"]
    fam = [f["fam"] == ("major" if r["knobs"][0] >= 0.5 else "minor") for r, f in grid]
    joins = [f["join"] for r, c in zip(recs, picks, strict=True) if r["kind"] == "chain"
             for f in [facts_of(c)] if f["join"] is not None]
    calm = [facts_of(c) for r, c in zip(recs, picks, strict=True) if r["kind"] == "calm"]
    return {"family": np.mean(fam), "key": np.mean([f["exact"] for _, f in grid]),
            "oa": overlap_area(np.array([f["entropy"] for _, f in grid]), ref_entropy),
            "runs6": np.mean([f["run"] >= 6 for _, f in grid]),
            "spearman": spearmanr([r["knobs"][2] for r, _ in grid],
                                  [f["npq"] for _, f in grid]).statistic,
            "joins": np.mean(np.array(joins) > 7), "n_joins": len(joins),
            "calm4": np.mean([f["run"] >= 4 for f in calm]) if calm else float("nan"),
            "calm_distinct": np.mean([f["distinct"] for f in calm]) if calm else float("nan")}


def oracle(recs: list[dict], pools: list[list[dict]]) -> str:
    """The best any choice in the same pools reaches, one figure at a time."""
    fam = key = join_ok = n_join = 0
    n_grid = 0
    lo, hi, energies = [], [], []
    for r, cands in zip(recs, pools, strict=True):
        fs = [facts_of(c) for c in cands]
        want = "major" if r["knobs"][0] >= 0.5 else "minor"
        if r["kind"] == "grid":
            n_grid += 1
            fam += any(f["fam"] == want for f in fs)
            key += any(f["exact"] for f in fs)
            lo.append(min(f["npq"] for f in fs))
            hi.append(max(f["npq"] for f in fs))
            energies.append(r["knobs"][2])
        if r["kind"] == "chain":
            n_join += 1
            join_ok += any(f["join"] is not None and f["join"] <= 7 for f in fs)
    rho = _oracle_spearman(energies, [[facts_of(c)["npq"] for c in p]
                                      for p in pools_grid(recs, pools)])
    return (f"oracle: mode family {fam / n_grid:.1%}, exact key {key / n_grid:.1%}, joins > fifth "
            f"{1 - join_ok / max(n_join, 1):.1%} (n={n_join}), energy Spearman >= {rho:.3f}")


def _oracle_spearman(energies: list[float], options: list[list[float]]) -> float:
    """A lower bound of the best Spearman any choice reaches: start from the candidate
    nearest to a line through the densities' range, then coordinate ascent (3 sweeps)."""
    e = np.array(energies)
    lo, hi = min(min(o) for o in options), max(max(o) for o in options)
    line = lo + (hi - lo) * (np.argsort(np.argsort(e)) + 0.5) / len(e)
    pick = [min(o, key=lambda x, t=t: abs(x - t)) for o, t in zip(options, line, strict=True)]
    best = spearmanr(e, pick).statistic
    for _ in range(3):
        for i, o in enumerate(options):
            for x in o:
                trial = [*pick[:i], x, *pick[i + 1:]]
                rho = spearmanr(e, trial).statistic
                if rho > best:
                    best, pick = rho, trial
    return float(best)


def pools_grid(recs: list[dict], pools: list[list[dict]]) -> list[list[dict]]:
    return [p for r, p in zip(recs, pools, strict=True) if r["kind"] == "grid"]


SETTINGS = {"music (wave 3)": WAVE3_WEIGHTS, "v2 (default)": RankerWeights()}


def tune_main(args: argparse.Namespace) -> None:
    recs = json.loads(Path(args.file).read_text())
    cache = Path(args.file).with_suffix(".music21.json")
    if cache.exists():
        _KEY_CACHE.update({(b, k): (tuple(v) if v else None) for b, k, v in
                           json.loads(cache.read_text())})
    held, _, _ = corpus_reference(args.reference, seed=0)
    ref_entropy = np.array([melody_facts(b, 0.5, k).length_entropy for b, k, _ in held])
    comp = Composer(ComposerConfig())
    base_w = comp.ranker_weights
    settings = dict(SETTINGS)
    for spec in args.weights:
        name, _, kv = spec.partition(":")
        settings[name] = replace(base_w, **{a: float(b) for a, b in
                                           (x.split("=") for x in kv.split(","))})
    for enough in args.enough:
        pools = [pool(r, enough) for r in recs]
        keep = [i for i, p in enumerate(pools) if p]
        rr, pp = [recs[i] for i in keep], [pools[i] for i in keep]
        first = [min(p, key=lambda c: c["ntok"]) for p in pp]
        f = figures(rr, first, ref_entropy)
        print(f"enough={enough} first-finished (~model): {_fmt(f)}")
        for name, w in settings.items():
            comp.ranker_weights = w
            picks = [choose(comp, r, p) for r, p in zip(rr, pp, strict=True)]
            print(f"enough={enough} {name}: {_fmt(figures(rr, picks, ref_entropy))}", flush=True)
        print(f"enough={enough} {oracle(rr, pp)}", flush=True)
        cache.write_text(json.dumps([[b, k, v] for (b, k), v in _KEY_CACHE.items()]))


def _fmt(f: dict) -> str:
    return (f"family {f['family']:.1%} key {f['key']:.1%} OA {f['oa']:.3f} runs6 "
            f"{f['runs6']:.1%} Spearman {f['spearman']:.3f} joins>5th {f['joins']:.1%} "
            f"(n={f['n_joins']}) calm4 {f['calm4']:.1%} calm distinct {f['calm_distinct']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--phrases", type=int, default=60)
    r.add_argument("--chains", type=int, default=12)
    r.add_argument("--chain-len", type=int, default=6)
    r.add_argument("--calm", type=int, default=20)
    r.add_argument("--out", required=True)
    t = sub.add_parser("tune")
    t.add_argument("file")
    t.add_argument("--reference", type=int, default=300)
    t.add_argument("--enough", type=int, nargs="+", default=[4, 8])
    t.add_argument("--weights", nargs="*", default=[],
                   help="NAME:field=value,field=value (RankerWeights fields)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    record(args) if args.cmd == "record" else tune_main(args)


if __name__ == "__main__":
    main()
