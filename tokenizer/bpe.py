"""Byte-level BPE tokenizer for normalised ABC, with control tokens.

Pre-tokenisation splits at newlines only (each newline is its own token, so a
phrase ends at a token boundary and decoding can stop there), then maps bytes
to symbols without GPT-2's regex: that regex splits ABC at every letter/digit
boundary and makes sequences up to 1.85x longer (see REFERENCE_FIGURES.md).
Control tokens, ``<|phrase|>``, ``<|bos|>``, ``<|eos|>`` and ``<|pad|>`` are
special tokens: never split, never merged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from st_agent.tokenizer.corpus import BOS, EOS, PAD, SPECIAL_TOKENS

__all__ = ["load_tokenizer", "train_tokenizer"]

logger = logging.getLogger(__name__)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> Tokenizer:
    """Train a byte-level BPE tokenizer on training texts.

    Parameters
    ----------
    texts : iterable of str
        Training sequences (with control tokens, as the model sees them).
    vocab_size : int
        Target size including the 256 byte symbols and the special tokens.

    Returns
    -------
    tokenizer : tokenizers.Tokenizer
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def to_transformers(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer as a ``transformers`` fast tokenizer."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)],
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Load ``tokenizer.json`` (or a folder holding it) as a fast tokenizer.

    Raises
    ------
    FileNotFoundError
        When the file is missing.
    ValueError
        When the file is not a tokenizer of this project (control tokens missing).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer file {path} not found; train one with `st-agent train-generator` "
            "or reinstall the package to get the bundled one"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"tokenizer file {path} is corrupt or not a tokenizer: {e}") from e
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"tokenizer file {path} lacks the control tokens {missing}")
    return to_transformers(tok)
