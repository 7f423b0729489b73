"""Byte-level BPE tokenizer for normalised ABC, with control tokens.

Pre-tokenisation splits at newlines only (each newline is its own token, so a
phrase ends at a token boundary and decoding can stop there), then maps bytes
to symbols without GPT-2's regex: that regex splits ABC at every letter/digit
boundary and makes sequences up to 1.85x longer (see REFERENCE_FIGURES.md).
Control tokens, ``<|phrase|>``, ``<|bos|>``, ``<|eos|>`` and ``<|pad|>`` are
special tokens: never split, never merged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from st_agent.tokenizer.corpus import BOS, EOS, PAD, SPECIAL_TOKENS

__all__ = ["TOKENIZER_FILES", "load_tokenizer", "save_tokenizer", "to_transformers",
           "train_tokenizer"]

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


def to_transformers(tok: Tokenizer, model_max_length: int | None = None
                    ) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer as a ``transformers`` fast tokenizer.

    Parameters
    ----------
    tok : tokenizers.Tokenizer
        From :func:`train_tokenizer` or ``tokenizer.json``.
    model_max_length : int, optional
        Longest sequence (tokens) the model takes; transformers' "very large"
        default when None.
    """
    extra = {} if model_max_length is None else {"model_max_length": int(model_max_length)}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)],
        clean_up_tokenization_spaces=False, **extra,
    )


#: What :func:`save_tokenizer` writes into a checkpoint folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_tokenizer(tok: PreTrainedTokenizerFast, folder: Path,
                   model_max_length: int | None = None) -> list[Path]:
    """Write a tokenizer so that ``transformers.AutoTokenizer`` loads it as it is.

    Without ``tokenizer_config.json``, ``AutoTokenizer.from_pretrained`` on a
    checkpoint folder falls back to the tokenizer of the model type (GPT-2's,
    with other special tokens) and encodes ABC differently. This writes
    ``tokenizer.json`` (the BPE model, as :func:`load_tokenizer` reads it),
    ``tokenizer_config.json`` (class ``PreTrainedTokenizerFast``, the special
    tokens, ``model_max_length``) and ``special_tokens_map.json``.

    Parameters
    ----------
    tok : PreTrainedTokenizerFast
        From :func:`to_transformers` or :func:`load_tokenizer`.
    folder : Path
        An existing folder (a checkpoint).
    model_max_length : int, optional
        The model's context in tokens (``n_positions``).

    Returns
    -------
    paths : list of Path
        The files written (:data:`TOKENIZER_FILES`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist; create it first")
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise TypeError(f"tok must be a PreTrainedTokenizerFast, got {type(tok).__name__}")
    if model_max_length is not None:
        tok.model_max_length = int(model_max_length)
    tok.save_pretrained(str(folder))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    # The class name every transformers version resolves to the fast tokenizer.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    others = [t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)]
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
               "additional_special_tokens": others}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return [folder / name for name in TOKENIZER_FILES]


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
