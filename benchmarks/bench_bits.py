"""Held-out bits per ABC character of a composer checkpoint, beside the ``xz`` floor.

How the figure is computed (``phrase_bits``): each held-out tune is the sequence
the model trains on (``<|bos|>`` header, then per phrase its control tokens,
``<|phrase|>``, the 4 bars and a newline, then ``<|eos|>``). The model scores
every token given all the tokens before it (one forward pass; tunes longer than
the model's context are scored in windows that keep the previous half-context).
Only the *phrase tokens* count: the tokens after each ``<|phrase|>`` up to and
including the phrase's newline; the header, the pickup line of the conditioned
corpus, the control tokens and ``<|eos|>`` are context, not scored. Then

    bits per character          = sum NLL (nats) / ln 2 / characters those tokens decode to
    bits per non-space character = the same sum / characters that are not spaces or newlines
    bits per note               = the same sum / notes, rests and chords in those phrases

The floor is ``xz`` given the training set: ``8 * (len(xz(train + test)) -
len(xz(train)))`` bytes over the characters of the test phrases, where
``train`` and ``test`` are the phrase lines (bars and newline, the same
characters the model is scored on) of each split, ``xz`` at preset 9 extreme.

Usage::

    nice .venv/bin/python benchmarks/bench_bits.py                      # shipped model
    nice .venv/bin/python benchmarks/bench_bits.py --checkpoint runs/X/checkpoint --corpus condition
    nice .venv/bin/python benchmarks/bench_bits.py --compare runs/A runs/B   # same melodies
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from st_agent.music.generator import BUNDLED_COMPOSER, load_generator
from st_agent.tokenizer.abc_lexer import TOKEN_RE
from st_agent.tokenizer.corpus import PHRASE, LabelledTune, label_tune, load_corpus


@dataclass
class Bits:
    """Summed phrase-token NLL and what it is divided by."""

    nats: float = 0.0
    tokens: int = 0
    chars: int = 0
    nonspace: int = 0
    notes: int = 0
    tunes: int = 0

    def add(self, other: Bits) -> None:
        for name in ("nats", "tokens", "chars", "nonspace", "notes", "tunes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def line(self, label: str) -> str:
        b = self.nats / math.log(2)
        return (f"{label}: {self.tunes} tunes, {self.tokens} phrase tokens, {self.chars} chars: "
                f"{b / self.chars:.3f} bits/char, {b / self.nonspace:.3f} bits/non-space char, "
                f"{b / self.notes:.3f} bits/note, {self.nats / self.tokens:.3f} nats/token")


@torch.no_grad()
def token_nll(model, ids: list[int]) -> np.ndarray:
    """NLL (nats) of ``ids[1:]`` each given all before it; shape (len(ids) - 1,)."""
    n_pos = model.config.n_positions
    out = np.zeros(len(ids) - 1)
    done = 0  # tokens of ids[1:] scored
    while done < len(ids) - 1:
        start = max(0, done + 1 - n_pos // 2) if done else 0
        end = min(len(ids), start + n_pos)
        x = torch.tensor([ids[start:end]])
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
        nll = -logp.gather(1, x[0, 1:, None])[:, 0].numpy()  # targets ids[start+1:end]
        first = done - start  # index in nll of target ids[done + 1]
        out[done:end - 1] = nll[first:]
        done = end - 1
    return out


def phrase_bits(model, tok, texts: list[str]) -> Bits:
    """Bits of the phrase tokens of training-format texts (see the module docstring)."""
    total = Bits()
    for b in tune_bits(model, tok, texts):
        total.add(b)
    return total


def tune_bits(model, tok, texts: list[str]) -> list[Bits]:
    """:func:`phrase_bits` of each text."""
    phrase_id = tok.convert_tokens_to_ids(PHRASE)
    special = set(tok.all_special_ids)
    out = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        nll = token_nll(model, ids)
        scored, inside = [], False
        for i, t in enumerate(ids):
            if t == phrase_id:
                inside = True
                continue
            if t in special:
                inside = False
            elif inside:
                scored.append(i)
                if tok.decode([t]).endswith("\n"):
                    inside = False
        body = tok.decode([ids[i] for i in scored])
        out.append(Bits(nats=float(nll[np.array(scored) - 1].sum()) if scored else 0.0,
                       tokens=len(scored), chars=len(body),
                       nonspace=sum(not c.isspace() for c in body),
                       notes=sum(m.lastgroup in ("note", "rest", "chord")
                                 for m in TOKEN_RE.finditer(body)), tunes=1))
    return out


def paired_ci(a: list[Bits], b: list[Bits], n_boot: int = 2000, seed: int = 0
              ) -> tuple[float, float, float]:
    """Difference of bits per note (b - a) over the same tunes, with a bootstrap 95 % CI
    (tunes resampled, ratio of sums)."""
    na = np.array([x.nats for x in a]) / math.log(2)
    nb = np.array([x.nats for x in b]) / math.log(2)
    ca, cb = np.array([x.notes for x in a]), np.array([x.notes for x in b])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diff = nb[idx].sum(1) / cb[idx].sum(1) - na[idx].sum(1) / ca[idx].sum(1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(nb.sum() / cb.sum() - na.sum() / ca.sum()), float(lo), float(hi)


def phrase_lines(tunes: list[LabelledTune]) -> str:
    """The phrase lines of tunes (bars and newline), as the model is scored on."""
    return "".join(p + "\n" for t in tunes for p in t.tune.phrases)


def xz_bits(train: str, test: str) -> float:
    """``xz`` bits per character of ``test`` given ``train``."""
    def size(s: str) -> int:
        return len(lzma.compress(s.encode(), preset=9 | lzma.PRESET_EXTREME))

    return 8 * (size(train + test) - size(train)) / len(test)


def load(kind: str):
    """The corpus of a ``--corpus`` kind."""
    if kind == "original":
        return load_corpus()
    from st_agent.tokenizer.corpus_condition import load_condition_corpus

    return load_condition_corpus(only_44=kind == "condition44")[0]


def own_split(checkpoint: Path, kind: str, split: str, max_tunes: int) -> None:
    """Bits of a checkpoint on its own corpus's held-out split, and the xz floor."""
    bundle = load_generator(checkpoint)
    corpus = load(kind)
    tunes = corpus.split(split)[:max_tunes]
    texts = [label_tune(t, bundle.labels).training_text() for t in tunes]
    print(phrase_bits(bundle.model, bundle.tokenizer, texts).line(
        f"model {checkpoint} on {kind} {split}"))
    test = phrase_lines(tunes)
    print(f"xz floor ({kind}, test phrases given train phrases): "
          f"{xz_bits(phrase_lines(corpus.train), test):.3f} bits/char "
          f"({len(test)} test chars)")


def same_melodies(original_ckpt: Path, condition_ckpt: Path, split: str, max_tunes: int) -> None:
    """Both models on the same held-out melodies, each in its own notation."""
    from st_agent.tokenizer.corpus import _measure
    from st_agent.tokenizer.corpus_condition import ConditionError, condition_tune

    a, b = load_generator(original_ckpt), load_generator(condition_ckpt)
    corpus = load_corpus()
    orig, cond = [], []
    for t in corpus.split(split)[:max_tunes]:
        try:
            c = condition_tune(t.tune, t.family).tune
        except ConditionError:
            continue
        orig.append(label_tune(t, a.labels).training_text())
        lt = LabelledTune(tune=c, family=t.family, tempo_bin=t.tempo_bin,
                          measures=_measure(c), source=t.source)
        cond.append(label_tune(lt, b.labels).training_text())
    print(f"same melodies: {len(orig)} {split} tunes that condition")
    ta, tb = tune_bits(a.model, a.tokenizer, orig), tune_bits(b.model, b.tokenizer, cond)
    for label, tunes in ((f"{original_ckpt} (original text)", ta),
                         (f"{condition_ckpt} (conditioned text)", tb)):
        total = Bits()
        for x in tunes:
            total.add(x)
        print(total.line("  " + label))
    d, lo, hi = paired_ci(ta, tb)
    print(f"  bits per note, conditioned - original, same tunes: {d:+.3f} "
          f"(bootstrap 95 % CI {lo:+.3f} .. {hi:+.3f}, tunes resampled)")


def trained_on(checkpoint: Path) -> str:
    """The ``corpus`` in a checkpoint's ``train_config.json`` ("original" before it had one)."""
    for folder in (checkpoint, checkpoint / "checkpoint"):
        cfg = folder / "train_config.json"
        if cfg.is_file():
            return json.loads(cfg.read_text()).get("corpus", "original")
    return "original"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED_COMPOSER)
    ap.add_argument("--corpus", default=None, choices=["original", "condition", "condition44"],
                    help="held-out text to score (default: the corpus the checkpoint was "
                         "trained on, from its train_config.json)")
    ap.add_argument("--split", default="test", choices=["validation", "test"])
    ap.add_argument("--max-tunes", type=int, default=100_000)
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("ORIGINAL", "CONDITION"),
                    help="two checkpoints, trained on the original and the conditioned "
                         "corpus: score both on the same melodies")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.compare:
        same_melodies(*args.compare, args.split, args.max_tunes)
    else:
        own_split(args.checkpoint, args.corpus or trained_on(args.checkpoint), args.split,
                  args.max_tunes)


if __name__ == "__main__":
    main()
