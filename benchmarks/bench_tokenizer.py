"""Choose the BPE vocabulary size by measurement.

For each size: training time, characters per token and tokens per tune/phrase on
the validation split, and the share of the vocabulary that occurs fewer than 10
times in the training split (rare tokens the model can barely learn).

    .venv/bin/python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from st_agent.tokenizer.bpe import train_tokenizer
from st_agent.tokenizer.corpus import load_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[600, 800, 1000, 1500])
    args = ap.parse_args()
    t = time.perf_counter()
    corpus = load_corpus()
    print(f"corpus: {corpus.n_read} tunes read, {len(corpus.all_tunes())} kept "
          f"({len(corpus.train)} train / {len(corpus.validation)} validation / "
          f"{len(corpus.test)} test), {corpus.n_duplicates} duplicates, "
          f"{sum(corpus.rejected.values())} rejected; loaded in {time.perf_counter() - t:.1f} s")
    train = [x.training_text() for x in corpus.train]
    val = [x.training_text() for x in corpus.validation]
    phrases = [p for x in corpus.validation for p in x.tune.phrases]
    print(f"{'vocab':>6} {'train s':>8} {'chars/tok':>9} {'tok/tune':>8} "
          f"{'tok/phrase p50':>14} {'p95':>5} {'rare<10':>8} {'round trip':>10}")
    for size in args.sizes:
        t = time.perf_counter()
        tok = train_tokenizer(train, size)
        dt = time.perf_counter() - t
        enc = tok.encode_batch(val)
        n_tok = sum(len(e.ids) for e in enc)
        n_chr = sum(len(x) for x in val)
        per_phrase = [len(e.ids) for e in tok.encode_batch(phrases)]
        counts = Counter(i for e in tok.encode_batch(train) for i in e.ids)
        rare = sum(1 for i in range(tok.get_vocab_size()) if counts[i] < 10) / tok.get_vocab_size()
        ok = all(tok.decode(e.ids, skip_special_tokens=False) == x
                 for e, x in zip(enc, val, strict=True))
        print(f"{size:>6} {dt:>8.1f} {n_chr / n_tok:>9.2f} "
              f"{np.median([len(e.ids) for e in enc]):>8.0f} {np.median(per_phrase):>14.0f} "
              f"{np.percentile(per_phrase, 95):>5.0f} {rare:>8.1%} {ok!s:>10}")


if __name__ == "__main__":
    main()
