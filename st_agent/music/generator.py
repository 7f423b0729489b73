"""The GPT-2 that writes ABC: configuration, training from scratch, loading.

A checkpoint is a folder that carries everything needed to use it, so loading
needs only a path (as nanoGPT stores ``model_args`` beside the weights):

- ``config.json`` and ``model.safetensors``: ``GPT2LMHeadModel.save_pretrained``
- ``tokenizer.json``: the BPE tokenizer with control tokens, with
  ``tokenizer_config.json`` and ``special_tokens_map.json`` so that
  ``transformers.AutoTokenizer.from_pretrained(folder)`` returns it as it is
- ``labels.json``: the corpus statistics the control labels were binned with
- ``train_config.json``: the :class:`TrainGeneratorConfig` that produced it

Loading refuses pickles: only ``model.safetensors`` is read.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from st_agent.music.config import TrainGeneratorConfig

__all__ = [
    "BUNDLED_COMPOSER",
    "GeneratorBundle",
    "TrainGeneratorConfig",
    "load_generator",
    "train_generator",
]

logger = logging.getLogger(__name__)

#: The small trained checkpoint that ships inside the package.
BUNDLED_COMPOSER = Path(__file__).parent / "assets" / "composer"

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class GeneratorBundle:
    """A loaded checkpoint: model, tokenizer and label statistics."""

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    labels: object  # st_agent.tokenizer.corpus.LabelStats
    path: Path


def _pack(texts: list[str], tok: PreTrainedTokenizerFast) -> np.ndarray:
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return np.concatenate([np.asarray(x, dtype=np.int32) for x in ids])


def _batch(data: np.ndarray, block: int, batch: int, rng: np.random.Generator,
           device: torch.device) -> torch.Tensor:
    starts = rng.integers(0, len(data) - block - 1, size=batch)
    x = np.stack([data[s:s + block] for s in starts]).astype(np.int64)
    return torch.from_numpy(x).to(device)


def _check_train_config(cfg: TrainGeneratorConfig) -> torch.device:
    """Validate the settings; return the training device."""
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.block_size < 8:
        raise ValueError(
            f"max_steps ({cfg.max_steps}) and batch_size ({cfg.batch_size}) must be >= 1 "
            f"and block_size ({cfg.block_size}) >= 8"
        )
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be one of ('auto', 'cpu', 'cuda'), got {cfg.device!r}")
    return torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                        else ("cpu" if cfg.device == "auto" else cfg.device))


def _prepare_data(cfg: TrainGeneratorConfig, ckpt: Path
                  ) -> tuple[PreTrainedTokenizerFast, np.ndarray, np.ndarray]:
    """Load the corpus, train the tokenizer, write it and the label statistics
    into the checkpoint folder, and pack the training and validation tokens."""
    from st_agent.tokenizer.bpe import save_tokenizer, to_transformers, train_tokenizer
    from st_agent.tokenizer.corpus import load_corpus

    files = None if cfg.music21 else []
    if cfg.corpus == "original":
        corpus = load_corpus(files=files, extra_dirs=cfg.extra_abc_dirs)
    else:
        from st_agent.tokenizer.corpus_condition import load_condition_corpus

        corpus, report = load_condition_corpus(files=files, extra_dirs=cfg.extra_abc_dirs,
                                               only_44=cfg.corpus == "condition44")
        (ckpt / "corpus_report.json").write_text(json.dumps(report.summary(), indent=2))
        if not corpus.train or not corpus.validation:
            raise ValueError(f"the {cfg.corpus} corpus has {len(corpus.train)} training and "
                             f"{len(corpus.validation)} validation tunes; both must be > 0")
    train_texts = [t.training_text() for t in corpus.train]
    val_texts = [t.training_text() for t in corpus.validation]
    tok = to_transformers(train_tokenizer(train_texts, cfg.vocab_size))
    # tokenizer.json plus tokenizer_config.json: AutoTokenizer loads it as it is
    save_tokenizer(tok, ckpt, model_max_length=2 * cfg.block_size)
    corpus.stats.save(ckpt / "labels.json")
    train_ids, val_ids = _pack(train_texts, tok), _pack(val_texts, tok)
    logger.info("training tokens %d, validation tokens %d", len(train_ids), len(val_ids))
    return tok, train_ids, val_ids


def _new_model(cfg: TrainGeneratorConfig, tok: PreTrainedTokenizerFast, device: torch.device
               ) -> tuple[GPT2LMHeadModel, torch.optim.Optimizer]:
    """A GPT-2 initialised from ``cfg.seed`` and its AdamW (decay on matrices only)."""
    torch.manual_seed(cfg.seed)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=2 * cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(config).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(0.9, 0.95))
    return model, opt


def _lr_at(cfg: TrainGeneratorConfig, step: int) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr / 10``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


@torch.no_grad()
def _val_loss(model: GPT2LMHeadModel, val_ids: np.ndarray, cfg: TrainGeneratorConfig,
              device: torch.device, autocast: torch.autocast) -> float:
    """Mean loss (nats per token) on the same ``eval_batches`` validation batches each time."""
    model.eval()
    vr = np.random.default_rng(cfg.seed + 1)
    losses = []
    for _ in range(cfg.eval_batches):
        x = _batch(val_ids, cfg.block_size, cfg.batch_size, vr, device)
        with autocast:
            losses.append(model(input_ids=x, labels=x).loss.item())
    model.train()
    return float(np.mean(losses))


def train_generator(cfg: TrainGeneratorConfig) -> Path:
    """Train the tokenizer and the GPT-2; return the run folder.

    The run folder ``<runs_dir>/<name>/`` receives ``config.json`` (this
    config), TensorBoard events under ``tb/``, and the best checkpoint (by
    validation loss) under ``checkpoint/``, loadable with :func:`load_generator`,
    :meth:`st_agent.music.composer.Composer.from_pretrained` and, for the
    tokenizer, ``transformers.AutoTokenizer.from_pretrained``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    device = _check_train_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.runs_dir) / cfg.name
    ckpt = run / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    tok, train_ids, val_ids = _prepare_data(cfg, ckpt)
    model, opt = _new_model(cfg, tok, device)
    rng = np.random.default_rng(cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    writer = SummaryWriter(str(run / "tb"))
    best = float("inf")
    t0 = time.monotonic()
    bar = tqdm(range(cfg.max_steps), desc="train-generator", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        x = _batch(train_ids, cfg.block_size, cfg.batch_size, rng, device)
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        elapsed = time.monotonic() - t0
        writer.add_scalar("train/loss", loss.item(), step)
        writer.add_scalar("train/lr", _lr_at(cfg, step), step)
        writer.add_scalar("train/tokens_per_sec",
                          (step + 1) * cfg.batch_size * cfg.block_size / elapsed, step)
        bar.set_postfix(loss=f"{loss.item():.3f}", best_val=f"{best:.3f}")
        last = step == cfg.max_steps - 1
        out_of_time = cfg.max_minutes > 0 and elapsed > 60 * cfg.max_minutes
        if (step + 1) % cfg.eval_every == 0 or last or out_of_time:
            vl = _val_loss(model, val_ids, cfg, device, autocast)
            writer.add_scalar("val/loss", vl, step)
            writer.add_scalar("val/perplexity", math.exp(vl), step)
            logger.info("step %d train %.3f val %.3f (ppl %.2f)", step + 1, loss.item(), vl,
                        math.exp(vl))
            if vl < best:
                best = vl
                model.save_pretrained(str(ckpt), safe_serialization=True)
                (ckpt / "train_config.json").write_text(
                    json.dumps(asdict(cfg) | {"best_val_loss": vl, "step": step + 1},
                               indent=2, default=str))
        if out_of_time:
            logger.info("stopping after %.1f minutes (max_minutes)", elapsed / 60)
            break
    writer.close()
    return run


def load_generator(path: Path | None = None, device: str = "cpu") -> GeneratorBundle:
    """Load a checkpoint folder (default: the bundled one), refusing pickles.

    Parameters
    ----------
    path : Path, optional
        Checkpoint folder (or a run folder holding ``checkpoint/``).
    device : str
        Torch device for the model.

    Raises
    ------
    FileNotFoundError
        When the folder or one of its files is missing.
    ValueError
        When the weights are not safetensors or are corrupt.
    """
    from safetensors import SafetensorError

    from st_agent.tokenizer.bpe import load_tokenizer
    from st_agent.tokenizer.corpus import LabelStats

    path = Path(path) if path is not None else BUNDLED_COMPOSER
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"
    if not path.is_dir():
        raise FileNotFoundError(
            f"composer checkpoint folder {path} not found; pass a folder written by "
            "`st-agent train-generator` (runs/<name>/checkpoint) or omit it for the bundled one"
        )
    weights = path / "model.safetensors"
    if not weights.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (f" It holds {pickles}: pickled weights are refused because loading them "
                "can run code; convert them to safetensors.") if pickles else ""
        raise FileNotFoundError(f"{weights} not found.{hint}")
    for name in ("config.json", "tokenizer.json", "labels.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found; a composer checkpoint needs config.json, "
                "model.safetensors, tokenizer.json and labels.json"
            )
    try:
        model = GPT2LMHeadModel.from_pretrained(str(path), use_safetensors=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"composer weights in {path} are corrupt or incomplete: {e}") from e
    tok = load_tokenizer(path / "tokenizer.json")
    if len(tok) != model.config.vocab_size:
        raise ValueError(
            f"tokenizer in {path} has {len(tok)} tokens but the model expects "
            f"{model.config.vocab_size}; they come from different runs"
        )
    model.to(device).eval()
    return GeneratorBundle(model=model, tokenizer=tok, labels=LabelStats.load(path / "labels.json"),
                           path=path)
