"""Precomputed bar-grammar tables, shipped beside a checkpoint.

A :class:`~st_agent.music.bar_grammar.BarGrammar` computes the table of a key
(the end of the open bar) the first time it meets it, which costs one scan per
vocabulary token. This module computes the tables of every key that the
corpus' own bars produce, at token boundaries of the checkpoint's tokenizer,
and saves them in the checkpoint folder
(``bar_grammar_M4-4_L1-8.npz`` for ``M:4/4``, ``L:1/8``), so a composer starts
with them and the first phrases decode as fast as the later ones. Keys the file
lacks are still computed when met (about 25 ms each on one core, one scan of each of
~500 usable tokens; and the table stays in memory: about 22 KB, so keys met late in a
long session are memory it grows by); a file made for another vocabulary, meter, unit or
grammar version is ignored (its fingerprint differs). The bundled file holds 727 keys:
the corpus walk, 1,500 phrases composed over random knobs (seed 1), then, merged in
(``--merge``), 1,500 more (seed 2) and 1,500 composed as a session composes them, in
chains of 6 that continue the phrase before (``--chained``); the phrases composed are the
same with and without the file (it is a cache).

Build the bundled file with::

    # the bundled checkpoint (~6 min), adding to the file it has
    .venv/bin/python -m st_agent.music.bar_tables --merge --seed 2 --chained 1500
    .venv/bin/python -m st_agent.music.bar_tables runs/<name>/checkpoint
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from st_agent.music.bar_grammar import BarGrammar, KeyTable

__all__ = ["build_tables", "corpus_keys", "load_tables", "save_tables", "tables_path"]

logger = logging.getLogger(__name__)

_FIELDS = ("ok", "n_bars", "first_q", "after_music", "needs_q", "ends_tied", "tie_open")


def tables_path(checkpoint: Path, meter: str, unit: str) -> Path:
    """Where the tables of ``meter`` and ``unit`` live in a checkpoint folder."""
    tag = f"M{meter}_L{unit}".replace("/", "-")
    return Path(checkpoint) / f"bar_grammar_{tag}.npz"


def save_tables(grammar: BarGrammar, path: Path) -> Path:
    """Write every table the grammar holds (compressed ``.npz``).

    Parameters
    ----------
    grammar : BarGrammar
    path : Path
        Output file; its folder must exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    keys = sorted(grammar.tables)
    tabs = [grammar.tables[k] for k in keys]
    arrays = {name: np.stack([getattr(t, name) for t in tabs]) for name in _FIELDS}
    np.savez_compressed(path, fingerprint=np.array(grammar.fingerprint()),
                        keys=np.array(keys, dtype=object).astype(str),
                        base_q=np.array([t.base_q for t in tabs]), **arrays)
    return path


def load_tables(grammar: BarGrammar, path: Path) -> int:
    """Add the tables of ``path`` to ``grammar``'s cache.

    Returns
    -------
    n : int
        Tables added; 0 when the file is missing or was made for another
        vocabulary, meter, unit or grammar version.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with np.load(path, allow_pickle=False) as data:
        if str(data["fingerprint"]) != grammar.fingerprint():
            logger.info("bar tables in %s were made for another grammar; ignored", path)
            return 0
        keys = [str(k) for k in data["keys"]]
        arrays = {name: data[name] for name in _FIELDS}
        arrays["n_bars"] = arrays["n_bars"].astype(np.int8)  # saved as int64 by older builds
        base_q = data["base_q"]
    for i, key in enumerate(keys):
        grammar.add_table(key, KeyTable(float(base_q[i]), **{n: arrays[n][i] for n in _FIELDS}))
    return len(keys)


def corpus_keys(grammar: BarGrammar, tokenizer: object, bodies: Iterable[str]) -> int:
    """Compute the tables of every key the bars of ``bodies`` meet.

    Each phrase is tokenized as the model sees it; within each of its bars,
    the text up to every token boundary is an open bar whose key gets its
    table. A bar is followed only as far as the grammar allows it.

    Parameters
    ----------
    grammar : BarGrammar
    tokenizer : PreTrainedTokenizerFast
        The checkpoint's tokenizer.
    bodies : iterable of str
        Phrase bodies in the grammar's meter and unit.

    Returns
    -------
    n_tables : int
        Tables the grammar holds afterwards.
    """
    for body in bodies:
        ids = tokenizer(body, add_special_tokens=False)["input_ids"]
        tail, alive = "", True
        for t in ids:
            text = grammar.token_text[t]
            if alive:
                alive = bool(grammar.allowed(tail, 0, 1_000)[t])
            cut = text.rfind("|")
            if cut >= 0:
                tail, alive = text[cut + 1:], True
            else:
                tail += text
    return grammar.n_tables


def build_tables(checkpoint: Path | None = None, meter: str = "4/4", unit: str = "1/8",
                 compose: int = 1500, seed: int = 1, chained: int = 0, chain_len: int = 6,
                 merge: bool = False) -> Path:
    """Build and save the tables of a checkpoint from the training corpus and
    from phrases the model writes.

    Parameters
    ----------
    checkpoint : Path, optional
        Checkpoint folder; the bundled one by default.
    meter, unit : str
        ``M:`` and ``L:`` of the grammar; the corpus phrases in them are walked.
    compose : int
        Phrases then composed over random knobs (seeded), whose keys are kept too.
    seed : int
        Seed of those knobs and phrases.
    chained : int
        Phrases then composed as a session composes them: in chains of ``chain_len``,
        each phrase continuing the one before (its context), the knobs drawn once per
        chain (seeded by ``seed``).
    chain_len : int
        Phrases per chain.
    merge : bool
        Start from the tables already in the checkpoint's file (when it fits this
        grammar), so a build adds keys to it.

    Returns
    -------
    path : Path
        The file written (:func:`tables_path`).
    """
    from st_agent.music.composer import Composer, ComposerConfig
    from st_agent.tokenizer.abc_text import parse_meter
    from st_agent.tokenizer.corpus import load_corpus
    from st_agent.types import Knobs

    composer = Composer(ComposerConfig(checkpoint=checkpoint, meter=meter, unit=unit,
                                       bar_tables=False))
    grammar = composer.grammar(meter, unit)
    grammar.max_learned_tables = None  # a build keeps every key it meets
    if merge:
        logger.info("%d tables from the existing file",
                    load_tables(grammar, tables_path(composer.checkpoint, meter, unit)))
    bar = parse_meter(meter)
    corpus = load_corpus()
    bodies = [p for t in corpus.train for p in t.tune.phrases
              if parse_meter(t.tune.meter) == bar and Fraction(t.tune.unit) == Fraction(unit)]
    n = corpus_keys(grammar, composer.tokenizer, bodies)
    logger.info("%d tables from %d corpus phrases", n, len(bodies))
    rng = np.random.default_rng(seed)
    for i in range(compose):
        composer.compose(Knobs(*(float(x) for x in rng.random(3))), seed=seed + i)
    context = None
    for i in range(chained):
        if i % chain_len == 0:
            knobs, context = Knobs(*(float(x) for x in rng.random(3))), None
        context = composer.compose(knobs, context=context, seed=seed + compose + i)
    logger.info("%d tables after %d phrases and %d chained ones", grammar.n_tables, compose,
                chained)
    n = grammar.n_tables
    path = save_tables(grammar, tables_path(composer.checkpoint, meter, unit))
    logger.info("%d bar tables written to %s", n, path)
    return path


def main() -> None:
    """``python -m st_agent.music.bar_tables [checkpoint] [--meter M] [--unit L]``."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", type=Path, default=None)
    ap.add_argument("--meter", default="4/4")
    ap.add_argument("--unit", default="1/8")
    ap.add_argument("--compose", type=int, default=1500,
                    help="phrases to compose for more keys after the corpus walk")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chained", type=int, default=0,
                    help="then phrases composed in chains, each continuing the one before")
    ap.add_argument("--chain-len", type=int, default=6)
    ap.add_argument("--merge", action="store_true",
                    help="add to the tables already in the checkpoint's file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_tables(args.checkpoint, args.meter, args.unit, args.compose, args.seed,
                 args.chained, args.chain_len, args.merge)


if __name__ == "__main__":
    main()
