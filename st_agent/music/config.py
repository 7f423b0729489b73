"""Settings of the music wing's entry points, importable without torch.

The command line (``st-agent generate --help``, ``st-agent train-generator --help``)
reads these dataclasses to build its options; the modules that do the work
(:mod:`st_agent.music.composer`, :mod:`st_agent.music.generate`,
:mod:`st_agent.music.generator`) import torch and transformers only when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

__all__ = ["ComposerConfig", "GenerateConfig", "TrainGeneratorConfig"]


@dataclass
class ComposerConfig:
    """Settings of :class:`Composer`."""

    checkpoint: Path | None = None
    """Composer checkpoint folder; None = the bundled one."""
    candidates: int = 8
    """Continuations sampled per batch; the best valid one is kept."""
    max_tries: int = 6
    """Batches to sample before giving up with ComposerError."""
    temperature: float = 0.9
    """Sampling temperature."""
    top_k: int = 40
    """Sample among the top-k tokens (0 = all)."""
    meter: str = "4/4"
    """``M:`` of a new piece (a context keeps its own)."""
    unit: str = "1/8"
    """``L:`` of a new piece (a context keeps its own)."""
    major_key: str = "A"
    """Key for valence >= 0.5 (major family)."""
    minor_key: str = "Am"
    """Key for valence < 0.5 (minor family)."""
    context_phrases: int = 2
    """Most previous phrases shown to the model."""
    enough: int = 4
    """Stop sampling a batch once this many candidates have finished their
    phrase (the slower ones are dropped): waiting for the slowest costs more
    than it adds."""
    max_new_tokens: int = 48
    """Most tokens per phrase (the corpus's 95th percentile is about 30)."""
    threads: int = 1
    """Torch threads while composing (restored afterwards); small batches decode
    fastest on one thread, which leaves the other cores to audio and estimation.
    0 leaves torch's setting alone."""
    meter_aware: bool = True
    """Meter-aware decoding: while sampling, only tokens that keep every bar
    exactly full are allowed, so the model's own bar lines are kept
    (:mod:`st_agent.music.bar_grammar`). False samples freely and redraws the
    bar lines from the note lengths afterwards (the repair of earlier versions)."""
    bar_tables: bool = True
    """Start meter-aware decoding with the bar-grammar tables the checkpoint ships
    (``bar_grammar_*.npz``); False computes every table when first needed."""
    repeat_penalty: float = 0.1
    """Ranking penalty per note beyond 3 in a candidate's longest run of one
    repeated pitch (0 = off; the density score is a relative error, so 0.1 weighs
    a 4-note run like a 10 % density miss); keeps slow, sparse phrases from
    sitting on one note without going below the corpus' own share of 4-note runs
    (``benchmarks/bench_composer.py --sections repetition``)."""

    # --- music v2: the int8 decoder, the ranker, context across mode flips ---
    int8: bool = True
    """Decode with the int8 fast path (:mod:`st_agent.music.quantized`: GPT-2's linear
    layers dynamically quantised); falls back to float32 with a warning when no int8
    engine works here. False decodes in float32."""
    ranker: str = "music"
    """How candidates are ranked: ``"music"`` adds the melody's own key, cadence, leaps,
    join and rhythm (:mod:`st_agent.music.ranker`) to density and register;
    ``"density"`` is the ranking of earlier versions (density, register, repeats)."""
    keep_context: bool = True
    """When the valence flips the mode (A major <-> A minor), show the model the
    previous phrases respelled in the new key (explicit accidentals) instead of
    dropping them, so the melody continues across the join."""
    satisfied: float = 0.0
    """Early stop: a batch ends as soon as one finished candidate scores at or below
    this (0 = off; candidates then finish until ``enough`` have)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.repeat_penalty, int | float) and self.repeat_penalty >= 0):
            raise ValueError(f"repeat_penalty must be a number >= 0, got {self.repeat_penalty!r}")
        if self.ranker not in ("music", "density"):
            raise ValueError(f"ranker must be 'music' or 'density', got {self.ranker!r}")
        if not (isinstance(self.satisfied, int | float) and self.satisfied >= 0):
            raise ValueError(f"satisfied must be a number >= 0, got {self.satisfied!r}")


@dataclass
class GenerateConfig:
    """Compose a piece under fixed knobs (``st-agent generate``)."""

    valence: float = 0.2
    """Valence knob in [0, 1]: 0 dark (minor, low), 1 bright (major, high)."""
    tempo: float = 0.3
    """Tempo knob in [0, 1]: 50 to 160 quarter-note BPM."""
    energy: float = 0.1
    """Energy knob in [0, 1]: sparse and soft to dense and loud."""
    bars: int = 16
    """Length in bars, a multiple of 4."""
    out: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/calm")
    """Output folder (created)."""
    seed: int | None = 0
    """Random seed; None for a different piece each time."""
    wav: bool = True
    """Also synthesise a WAV with FluidSynth."""
    play: bool = False
    """Also play the piece through FluidSynth's audio driver (falls back to the
    WAV alone, with a warning, when there is no audio device)."""
    soundfont: Path | None = None
    """SoundFont (.sf2); None = TimGM6mb.sf2 shipped with pretty_midi."""
    checkpoint: Path | None = None
    """Composer checkpoint folder; None = the bundled one."""
    session_sound: bool = False
    """Session sound (MUSIC, issue 15): instruments chosen by energy and valence
    (``ArrangementConfig.for_knobs``), stereo, the session's reverb and chorus."""

    def __post_init__(self) -> None:
        from st_agent.types import Knobs

        Knobs(valence=self.valence, tempo=self.tempo, energy=self.energy)  # range checks
        if isinstance(self.bars, bool) or not isinstance(self.bars, int) or self.bars < 4 \
                or self.bars % 4:
            raise ValueError(f"bars must be a positive multiple of 4 (4, 8, 12, ...), "
                             f"got {self.bars!r}")


@dataclass
class TrainGeneratorConfig:
    """Train the ABC GPT-2 from scratch (``st-agent train-generator``)."""

    name: str = "generator"
    """Run name; outputs go to ``<runs_dir>/<name>/``."""
    runs_dir: Path = Path("runs")
    """Folder that holds all runs."""
    extra_abc_dirs: tuple[Path, ...] = ()
    """Folders of your own ``.abc`` files to add to the music21 corpus."""
    music21: bool = True
    """Include music21's bundled ABC tunes; ``--no-music21`` trains on
    ``extra_abc_dirs`` alone (your own corpus, or a quick experiment)."""
    vocab_size: int = 800
    """BPE vocabulary size (bytes and control tokens included); 800 measured best
    for tokens per phrase vs. token frequency (``benchmarks/bench_tokenizer.py``)."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 256
    """Width of the residual stream."""
    n_head: int = 4
    """Attention heads."""
    block_size: int = 256
    """Training context in tokens (the model's position table is twice this)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residuals."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    max_steps: int = 850
    """Optimiser steps (the shipped model: 850)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW), after linear warm-up, then cosine decay to lr/10."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices."""
    eval_every: int = 100
    """Steps between validation-loss evaluations (the best checkpoint is kept)."""
    eval_batches: int = 20
    """Validation batches per evaluation."""
    seed: int = 0
    """Seed of the batch sampler and of the initial weights."""
    device: str = "auto"
    """``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda``."""
    bf16: bool = True
    """bfloat16 autocast (about 2x faster on modern CPUs, see REFERENCE_FIGURES.md)."""
    threads: int = 0
    """Torch CPU threads; 0 leaves torch's default."""
    max_minutes: float = 0.0
    """Stop after this many minutes of training (0 = no limit)."""
    corpus: str = "condition"
    """Training text: ``condition`` (renotated into the composer's condition: A / Am,
    L:1/8, 2/4 paired to 4/4, whole bars from a downbeat, the pickup on its own line;
    :mod:`st_agent.tokenizer.corpus_condition`; the shipped model's), ``condition44``
    (the conditioned tunes in 4/4 only) or ``original`` (each tune's own meter, unit,
    key and bars, a pickup folded into the first phrase; the earlier model's)."""

    def __post_init__(self) -> None:
        if self.corpus not in ("original", "condition", "condition44"):
            raise ValueError(f"corpus must be one of ('original', 'condition', 'condition44'), "
                             f"got {self.corpus!r}")
        if not self.music21 and not self.extra_abc_dirs:
            raise ValueError("--no-music21 leaves no tunes to train on: give your own with "
                             "--extra-abc-dirs DIR [DIR ...], or drop --no-music21")
