"""The composer: knobs (and the music so far) in, a valid ABC phrase out.

How a phrase is made
--------------------
1. The knobs become control bins (:class:`st_agent.tokenizer.corpus.Controls`): valence
   -> mode family and register, tempo -> tempo class, energy -> density class.
2. The key follows the mode family: a phrase that continues a context in the
   same family keeps its key; otherwise the composer takes the family's key
   (``A`` major or ``A`` minor by default: parallel keys, so a change of
   valence changes the mode and keeps the tonic). When the mode flips, the
   previous phrases stay in the prompt respelled in the new key (explicit
   accidentals, :func:`~st_agent.music.ranker.respell`; ``keep_context``), so
   the melody continues across the join.
3. The prompt is ``<|bos|>`` + ``M: L: K:`` + the context phrases with their
   own control tokens + the new control tokens. The GPT-2 samples ``candidates``
   continuations in one batch, with the int8 fast path of the decoder
   (:mod:`st_agent.music.quantized`; ``int8=False`` or a machine without an
   int8 engine decodes in float32).
4. **Meter-aware decoding** (default, :mod:`st_agent.music.bar_grammar`): at
   every step each candidate may only sample tokens that keep its bars valid
   (every bar line closes exactly one bar of the meter, no repeat signs,
   endings, chords, decorations or stray text, ties on one pitch); a candidate
   finishes at its fourth bar line. The bar lines are the model's own: nothing
   is re-barred. With ``meter_aware=False`` the model samples freely until it
   has written four bars of music and its bar lines are drawn again from the
   note lengths (the repair of earlier versions, kept for comparison).
5. Ranking: among the valid candidates, the one closest to the requested
   energy (melody onsets per quarter note vs. :meth:`Composer.target_density`)
   and register wins, with the music ranker's penalties on top
   (``ranker="music"``, :mod:`st_agent.music.ranker`: the melody's own key
   against the requested one, a cadence on the tonic, leaps beyond a fifth
   inside the phrase and at the join, runs of one pitch (``repeat_penalty``),
   too few pitches, flat rhythm). ``ranker="density"`` ranks as earlier
   versions did (density, register, ``repeat_penalty``). The best candidate is
   then checked by ``abc2midi`` (an independent parser; the next ones only when
   it fails or warns, a warning costing 0.5). With ``satisfied > 0`` a batch
   stops at the first finished candidate that scores at or below it. When no
   candidate is valid, another batch is sampled, up to ``max_tries`` batches;
   past that :class:`ComposerError` is raised.

The ``Q:`` field is set from the tempo knob; the renderer plays at that tempo.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from st_agent.music.abc import AbcError, check_many
from st_agent.music.abc_safety import parse_unit
from st_agent.music.bar_grammar import BarGrammar, BarHook, bars_are_valid
from st_agent.music.config import ComposerConfig
from st_agent.music.decoding import CachedDecoder
from st_agent.music.generator import load_generator
from st_agent.music.meter import parse_meter as parse_abc_meter
from st_agent.music.quantized import fast_decoder
from st_agent.music.ranker import RankerWeights, melody_facts, melody_notes, penalty, respell
from st_agent.theory import parse_key
from st_agent.tokenizer.abc_text import body_stats, parse_meter, quarters_fast, rebar
from st_agent.tokenizer.corpus import BOS, SPECIAL_TOKENS, Controls
from st_agent.types import Knobs, Phrase

__all__ = ["Composer", "ComposerConfig", "ComposerError"]

logger = logging.getLogger(__name__)

#: Most tokens a phrase may take when every candidate of a batch ran out of
#: ``ComposerConfig.max_new_tokens`` (the budget doubles per such batch up to this).
_MAX_NEW_TOKENS = 192


class ComposerError(RuntimeError):
    """The composer could not produce a valid phrase within its tries."""


@dataclass
class _Candidate:
    body: str
    score: float
    reason: str = ""
    raw: str = ""  # the text as sampled, before any repair
    raw_valid: bool = False  # its own bars are valid as sampled
    details: dict = field(default_factory=dict)


@dataclass
class _Outcome:
    """One phrase's winner and what sampling it took."""

    body: str = ""
    raw: str = ""
    tries: int = 0
    sampled: int = 0
    raw_valid: int = 0
    reasons: dict = field(default_factory=dict)

    def count(self, cands: list[_Candidate]) -> None:
        """Count the finished candidates of a batch (the cut-off ones apart)."""
        finished = [c for c in cands if not c.reason.startswith("cut")]
        self.sampled += len(finished)
        self.raw_valid += sum(c.raw_valid for c in finished)
        for c in cands:
            if c.reason:
                tag = c.reason.split(":")[0]
                self.reasons[tag] = self.reasons.get(tag, 0) + 1


def _sampling_record(outcomes: list[_Outcome], meter_aware: bool) -> dict:
    """What sampling a piece took, for ``Phrase.extra`` (benchmarks read it)."""
    reasons: dict[str, int] = {}
    for o in outcomes:
        for tag, k in o.reasons.items():
            reasons[tag] = reasons.get(tag, 0) + k
    return {"meter_aware": meter_aware, "raw_body": "\n".join(o.raw.strip() for o in outcomes),
            "samples": sum(o.sampled for o in outcomes),
            "raw_valid_samples": sum(o.raw_valid for o in outcomes), "rejections": reasons}


def _rebarred(text: str, unit: Fraction, bar_len: Fraction) -> tuple[str, str]:
    """The re-barring repair (``meter_aware=False``): the model's bar lines are
    drawn again from the note lengths and the first four bars kept.

    Returns the body and "" or "" and the reason for rejecting it.
    """
    if re.search(r"\[[A-Za-z]:", text):
        return "", "field: inline field in the phrase"
    # First/second endings mean nothing in a 4-bar phrase that is played once:
    # drop their markers and keep the music.
    text = re.sub(r"\[\d+(?:[,-]\d+)*", "", text)
    text = re.sub(r"(:*\|+:*)\s*\d+(?:[,-]\d+)*", r"\1", text)
    try:
        return "".join(rebar(text, unit, bar_len, 4)), ""
    except ValueError as e:
        return "", f"bars: {e}"


class _BarCounter:
    """Step hook: no end of phrase before the requested bars of music exist.

    Counts the music written so far by each candidate from note lengths (bar
    lines are not trusted); while a candidate is short of ``phrase_len``, its
    end-of-phrase tokens are banned; once past it, the candidate is finished.
    When ``enough`` candidates are finished, the rest are cut off: waiting for
    the slowest candidate would cost more than it adds.

    The text up to the last bar line is measured once and cached, so each step
    measures only the bar being written.
    """

    def __init__(self, token_text: list[str], end_ids: tuple[int, ...], n: int, unit: Fraction,
                 phrase_len: Fraction, enough: int) -> None:
        self.token_text = token_text
        self.end_ids = list(end_ids)
        self.unit_q = float(unit) * 4  # quarters
        self.phrase_q = float(phrase_len) * 4
        self.done_quota = min(n, max(1, enough))
        self.closed_q = [0.0] * n  # quarters before the last bar line
        self.tail = [""] * n  # text after the last bar line
        self.finished = [False] * n
        self.complete = [False] * n  # finished by itself, not cut off
        self.bias = torch.zeros((n, len(token_text)))

    def __call__(self, tokens: list[int]) -> tuple[torch.Tensor, list[bool]]:
        self.bias.zero_()
        for i, t in enumerate(tokens):
            if self.finished[i]:
                continue
            if t in self.end_ids:  # the sampler stops it at its end of phrase
                self.finished[i] = self.complete[i] = True
                continue
            tail = self.tail[i] + self.token_text[t]
            cut = tail.rfind("|")
            if cut >= 0:
                self.closed_q[i] += quarters_fast(tail[:cut], self.unit_q)
                tail = tail[cut + 1:]
            self.tail[i] = tail
            q = self.closed_q[i] + quarters_fast(tail, self.unit_q)
            if q < self.phrase_q - 1e-9:
                self.bias[i, self.end_ids] = float("-inf")
            elif q > self.phrase_q + 1e-9 or tail[-1:] in (" ", "]", ":") or (
                    cut >= 0 and not tail):
                self.finished[i] = self.complete[i] = True
        if sum(self.finished) >= self.done_quota:
            self.finished = [True] * len(self.finished)
        return self.bias, list(self.finished)


class _SatisfiedHook(BarHook):
    """:class:`BarHook` that also ends the batch at the first finished candidate whose
    score (``judge`` of its text) is at or below ``satisfied``: the ranker is content,
    so sampling the others would only cost time."""

    def __init__(self, grammar: BarGrammar, n: int, n_bars: int, enough: int,
                 judge: Callable[[str], float], satisfied: float) -> None:
        super().__init__(grammar, n, n_bars, enough)
        self.judge, self.satisfied = judge, float(satisfied)
        self._judged = [False] * n

    def __call__(self, tokens: list[int]) -> tuple[np.ndarray, list[bool]]:
        bias, finished = super().__call__(tokens)
        if all(finished):
            return bias, finished
        for i, done in enumerate(self.complete):
            if done and not self._judged[i]:
                self._judged[i] = True
                if self.judge(self.texts[i]) <= self.satisfied:
                    self.finished = [True] * len(self.finished)
                    self._bias[:] = 0.0
                    return self._bias, list(self.finished)
        return bias, finished


def _check_meter_unit(meter: object, unit: object, owner: str) -> None:
    """Raise :class:`~st_agent.music.abc.AbcError` naming ``owner.meter`` or
    ``owner.unit`` when either is not an allowed ABC value (``unit="1/0"`` used to
    raise ``ZeroDivisionError`` deep in the sampler)."""
    try:
        parse_abc_meter(meter)  # type: ignore[arg-type]
    except (AbcError, TypeError) as e:
        raise AbcError(f"{owner}.meter: {e}") from e
    parse_unit(unit, f"{owner}.unit")  # type: ignore[arg-type]


class Composer:
    """Writes ABC phrases under knob values with the trained GPT-2.

    Parameters
    ----------
    config : ComposerConfig, optional

    Examples
    --------
    >>> composer = Composer()                               # doctest: +SKIP
    >>> phrase = composer.compose(Knobs(0.2, 0.3, 0.1), seed=0)  # doctest: +SKIP
    >>> print(phrase.abc)                                   # doctest: +SKIP
    """

    def __init__(self, config: ComposerConfig | None = None) -> None:
        self.config = cfg = config or ComposerConfig()
        if cfg.candidates < 1 or cfg.max_tries < 1:
            raise ValueError(
                f"candidates ({cfg.candidates}) and max_tries ({cfg.max_tries}) must be >= 1"
            )
        for k in (cfg.major_key, cfg.minor_key):
            parse_key(k)
        if parse_key(cfg.major_key).family != "major" or parse_key(cfg.minor_key).family != "minor":
            raise ValueError(
                f"major_key {cfg.major_key!r} must be a major-family key and minor_key "
                f"{cfg.minor_key!r} a minor-family key"
            )
        _check_meter_unit(cfg.meter, cfg.unit, "ComposerConfig")
        parse_meter(cfg.meter)
        bundle = load_generator(cfg.checkpoint)
        self.tokenizer = bundle.tokenizer
        self.labels = bundle.labels
        self.checkpoint = bundle.path
        #: The float32 decoder (the reference, and the fallback of the int8 path).
        self.float_decoder = CachedDecoder(bundle.model)
        #: The decoder that samples: int8 when ``config.int8`` and an engine works.
        self.decoder = fast_decoder(self.float_decoder, cfg.int8)
        #: The music ranker's weights (its repeat term is ``config.repeat_penalty``).
        self.ranker_weights = RankerWeights(repeat=cfg.repeat_penalty)
        vocab = self.tokenizer.get_vocab()
        self._newline_id = self.tokenizer.convert_tokens_to_ids(
            self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("\n")[0][0])
        if self._newline_id is None or self._newline_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer in {self.checkpoint} has no newline token")
        special = [vocab[t] for t in SPECIAL_TOKENS]
        self._stop_ids = {self._newline_id, self.tokenizer.eos_token_id}
        self._token_text = [self.tokenizer.decode([i], skip_special_tokens=False)
                            for i in range(len(self.tokenizer))]
        self._banned_ids = set(special) - {self.tokenizer.eos_token_id}
        self._grammars: dict[tuple[str, str], BarGrammar] = {}  # per (meter, unit)

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: object) -> Composer:
        """A composer over the checkpoint folder ``path``.

        Parameters
        ----------
        path : str or Path
            A checkpoint folder written by ``st-agent train-generator``
            (``runs/<name>/checkpoint``, or the run folder holding it), or the
            bundled :data:`~st_agent.music.generator.BUNDLED_COMPOSER`. Only
            ``model.safetensors`` is read: pickled weights are refused.
        **settings
            Other :class:`ComposerConfig` fields (``candidates=4``, ...).

        Returns
        -------
        composer : Composer

        Raises
        ------
        TypeError
            For a path that is not a str or Path, or a setting that is not a
            :class:`ComposerConfig` field.
        FileNotFoundError, ValueError
            For a missing folder or file, pickled or corrupt weights (as
            :func:`~st_agent.music.generator.load_generator`).

        Examples
        --------
        >>> composer = Composer.from_pretrained("runs/my-composer/checkpoint")  # doctest: +SKIP
        """
        if not isinstance(path, str | Path):
            raise TypeError(f"path must be a str or Path to a checkpoint folder, got "
                            f"{type(path).__name__}")
        names = {f.name for f in fields(ComposerConfig)} - {"checkpoint"}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown ComposerConfig settings {unknown}; allowed: {sorted(names)}")
        return cls(ComposerConfig(checkpoint=Path(path), **settings))

    # ------------------------------------------------------------------
    def choose_key(self, knobs: Knobs, context: Phrase | None) -> str:
        """Key of the next phrase: the context's when its family fits, else the
        configured key of the family the valence knob asks for."""
        family = Controls.from_knobs(knobs).family
        if context is not None and parse_key(context.key).family == family:
            return context.key
        return self.config.major_key if family == "major" else self.config.minor_key

    def compose(self, knobs: Knobs, context: Phrase | None = None, bars: int = 4,
                seed: int | None = None) -> Phrase:
        """Compose ``bars`` bars under ``knobs``, continuing ``context``.

        Parameters
        ----------
        knobs : Knobs
            Valence, tempo and energy in [0, 1].
        context : Phrase, optional
            The music so far; the new phrase continues it (same meter; same
            key unless the valence asks for the other mode family).
        bars : int
            A positive multiple of 4 (phrases are 4 bars).
        seed : int, optional
            Makes the result reproducible.

        Returns
        -------
        phrase : Phrase
            A standalone tune (``X: M: L: Q: K:`` + body) that abc2midi accepts.

        Raises
        ------
        ValueError
            For bars that are not a positive multiple of 4.
        TypeError
            When knobs is not a :class:`Knobs`.
        ComposerError
            When no valid phrase was found within ``max_tries`` batches.
        st_agent.music.abc.AbcError
            When ``context.meter`` or ``context.unit`` is not an allowed ABC value
            (:func:`~st_agent.music.meter.parse_meter`,
            :func:`~st_agent.music.abc_safety.parse_unit`).
        """
        if not isinstance(knobs, Knobs):
            raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}; "
                            "build one with Knobs(valence=..., tempo=..., energy=...)")
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 4 or bars % 4:
            raise ValueError(f"bars must be a positive multiple of 4 (4, 8, 12, ...), got {bars!r}")
        if context is not None and not isinstance(context, Phrase):
            raise TypeError(f"context must be a Phrase or None, got {type(context).__name__}")
        if context is not None:
            _check_meter_unit(context.meter, context.unit, "context")
        gen = torch.Generator()
        gen.manual_seed(int(seed) if seed is not None
                        else int(np.random.default_rng().integers(2**62)))
        t0 = time.perf_counter()
        key = self.choose_key(knobs, context)
        meter = context.meter if context is not None else self.config.meter
        unit = context.unit if context is not None else self.config.unit
        history, prev_pitch = self._history(context, key)
        controls = Controls.from_knobs(knobs)
        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            outcomes = []
            for _ in range(bars // 4):
                outcomes.append(self._compose_phrase(controls, knobs, key, meter, unit, history,
                                                     gen, prev_pitch))
                history.append((controls, outcomes[-1].body))
                notes = melody_notes(outcomes[-1].body, float(Fraction(unit)) * 4, key)
                prev_pitch = notes[-1][2] if notes else prev_pitch
        finally:
            torch.set_num_threads(threads)
        body = "\n".join(o.body for o in outcomes)
        abc = self.tune_text(body, key=key, meter=meter, unit=unit, bpm=knobs.bpm)
        return Phrase(abc=abc, body=body, knobs=knobs, meter=meter, unit=unit, key=key,
                      bars=bars, tries=sum(o.tries for o in outcomes),
                      extra={"compose_sec": time.perf_counter() - t0, "controls": controls,
                             **_sampling_record(outcomes, self.config.meter_aware)})

    def _history(self, context: Phrase | None, key: str
                 ) -> tuple[list[tuple[Controls, str]], int | None]:
        """The context phrases the prompt shows (respelled into ``key`` when the mode
        flipped and ``keep_context``) and the context's last melody pitch."""
        if context is None:
            return [], None
        notes = melody_notes(context.body, float(Fraction(context.unit)) * 4, context.key)
        prev_pitch = notes[-1][2] if notes else None
        if context.key != key and not self.config.keep_context:
            return [], prev_pitch  # a new section: the old phrase is in the wrong key
        body = context.body if context.key == key else respell(context.body, context.key, key)
        ctx_controls = Controls.from_knobs(context.knobs)
        return [(ctx_controls, line) for line in body.splitlines() if line], prev_pitch

    @staticmethod
    def tune_text(body: str, key: str, meter: str, unit: str, bpm: float, title: str = ""
                  ) -> str:
        """A complete ABC tune around ``body``."""
        head = ["X:1"]
        if title:
            head.append(f"T:{title}")
        head += [f"M:{meter}", f"L:{unit}", f"Q:1/4={round(bpm)}", f"K:{key}"]
        return "\n".join(head) + "\n" + body.rstrip("\n") + "\n"

    # ------------------------------------------------------------------
    def _prompt(self, controls: Controls, key: str, meter: str, unit: str,
                history: list[tuple[Controls, str]], new_tokens: int | None = None
                ) -> list[int]:
        head = f"{BOS}M:{meter}\nL:{unit}\nK:{key}\n"
        tail = controls.tokens()
        budget = self.decoder.max_len - (new_tokens or self.config.max_new_tokens)
        kept = history[-self.config.context_phrases:] if self.config.context_phrases else []
        while True:
            text = head + "".join(c.tokens() + b + "\n" for c, b in kept) + tail
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= budget or not kept:
                return ids[-budget:]
            kept = kept[1:]

    def _compose_phrase(self, controls: Controls, knobs: Knobs, key: str, meter: str, unit: str,
                        history: list[tuple[Controls, str]], gen: torch.Generator,
                        prev_pitch: int | None = None) -> _Outcome:
        cfg = self.config
        new_tokens = cfg.max_new_tokens
        prompt = self._prompt(controls, key, meter, unit, history, new_tokens)
        outcome = _Outcome()
        target = self.target_density(knobs.energy)
        for attempt in range(1, cfg.max_tries + 1):
            hook, first_bias = self._hook(meter, unit, lambda text: self._score_body(
                text.strip(), controls, target, key, meter, unit, prev_pitch)[0])
            outs = self.decoder.sample(
                prompt, cfg.candidates, new_tokens, self._stop_ids,
                self._banned_ids, cfg.temperature, cfg.top_k, gen, step_hook=hook,
                first_bias=first_bias)
            if not any(hook.complete) and any(len(o) >= new_tokens for o in outs):
                # every candidate ran out of tokens (a context in sixteenth notes takes
                # ~20 tokens a bar): the next batch gets twice the budget
                new_tokens = min(2 * new_tokens, _MAX_NEW_TOKENS)
                prompt = self._prompt(controls, key, meter, unit, history, new_tokens)
            cands = [self._screen(o, controls, target, key, meter, unit, prev_pitch) if done
                     else _Candidate("", math.inf, "cut: unfinished when enough candidates were")
                     for o, done in zip(outs, hook.complete, strict=True)]
            best = self._checked_best(cands, key, meter, unit)
            outcome.count(cands)
            if best is not None:
                outcome.body, outcome.raw, outcome.tries = best.body, best.raw, attempt
                return outcome
            logger.debug("batch %d: no valid candidate (%s)", attempt, outcome.reasons)
        raise ComposerError(
            f"no valid {key} phrase for {controls} after {cfg.max_tries} batches of "
            f"{cfg.candidates} candidates (rejections: {outcome.reasons}); raise "
            "ComposerConfig.max_tries or candidates, or check the checkpoint "
            f"{self.checkpoint}"
        )

    def _checked_best(self, cands: list[_Candidate], key: str, meter: str, unit: str
                      ) -> _Candidate | None:
        """The best-ranked candidate that ``abc2midi`` accepts, preferring one it has no
        warning about; the best is checked first, the others only when it fails or
        warns (one abc2midi run per phrase in the common case)."""
        ranked = sorted((c for c in cands if not c.reason), key=lambda c: c.score)
        if not ranked:
            return None
        checked: list[_Candidate] = []
        for group in (ranked[:1], ranked[1:]):
            if not group:
                continue
            tunes = [self.tune_text(c.body, key, meter, unit, 120.0) for c in group]
            for c, report in zip(group, check_many(tunes), strict=True):
                if not report.ok:
                    c.reason = "abc2midi: " + "; ".join(report.errors)[:80]
                elif report.warnings:
                    c.score += 0.5  # prefer phrases abc2midi has nothing to say about
                    checked.append(c)
                else:
                    return c
        return min(checked, key=lambda c: c.score) if checked else None

    def grammar(self, meter: str, unit: str) -> BarGrammar:
        """The bar grammar of ``meter`` and ``unit`` over this composer's vocabulary,
        with the checkpoint's precomputed tables when it ships them
        (:mod:`st_agent.music.bar_tables`)."""
        grammar = self._grammars.get((meter, unit))
        if grammar is None:
            from st_agent.music.bar_tables import load_tables, tables_path

            grammar = BarGrammar(self._token_text, float(Fraction(unit)) * 4,
                                 float(parse_meter(meter)) * 4,
                                 excluded_ids=self._banned_ids | self._stop_ids)
            if self.config.bar_tables:
                n = load_tables(grammar, tables_path(self.checkpoint, meter, unit))
                logger.debug("%d precomputed bar tables for M:%s L:%s", n, meter, unit)
            self._grammars[(meter, unit)] = grammar
        return grammar

    def _hook(self, meter: str, unit: str, judge: Callable[[str], float] | None = None
              ) -> tuple[BarHook | _BarCounter, np.ndarray | None]:
        """The step hook of one batch and its first-token bias; with ``config.satisfied``
        and ``judge`` (a finished candidate's text -> its score), the batch stops at the
        first candidate that scores at or below it."""
        cfg = self.config
        if not cfg.meter_aware:
            hook = _BarCounter(self._token_text, (self._newline_id, self.tokenizer.eos_token_id),
                               cfg.candidates, Fraction(unit), 4 * parse_meter(meter), cfg.enough)
            return hook, None
        grammar = self.grammar(meter, unit)
        if cfg.satisfied > 0 and judge is not None:
            bar_hook: BarHook = _SatisfiedHook(grammar, cfg.candidates, 4, cfg.enough, judge,
                                               cfg.satisfied)
        else:
            bar_hook = BarHook(grammar, cfg.candidates, 4, cfg.enough)
        return bar_hook, bar_hook.first_bias()

    def target_density(self, energy: float) -> float:
        """Melody onsets per quarter note the energy knob asks for: the corpus
        median of each energy bin at the bin's centre, linear in between."""
        n = len(self.labels.energy_targets)
        centres = (np.arange(n) + 0.5) / n
        return float(np.interp(energy, centres, self.labels.energy_targets))

    def _screen(self, ids: list[int], controls: Controls, target: float, key: str, meter: str,
                unit: str, prev_pitch: int | None = None) -> _Candidate:
        """Structural checks and the control score of one sampled continuation."""
        if ids and ids[-1] == self._newline_id:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if "<|" in text or "\n" in text:
            return _Candidate("", math.inf, "special: control token inside the phrase", raw=text)
        u, bar_len = Fraction(unit), parse_meter(meter)
        raw_valid = bars_are_valid(text, float(u) * 4, float(bar_len) * 4, 4)
        if self.config.meter_aware:
            if not raw_valid:
                return _Candidate("", math.inf, "bars: not 4 full bars as sampled (a dead end "
                                  "or max_new_tokens reached)", raw=text)
            body = text.strip()
        else:
            body, reason = _rebarred(text, u, bar_len)
            if reason:
                return _Candidate("", math.inf, reason, raw=text)
        score, details = self._score_body(body, controls, target, key, meter, unit, prev_pitch)
        return _Candidate(body, score, raw=text, raw_valid=raw_valid, details=details)

    def _score_body(self, body: str, controls: Controls, target: float, key: str, meter: str,
                    unit: str, prev_pitch: int | None) -> tuple[float, dict]:
        """The ranking score of a phrase body (lower is better) and what it measured:
        density vs the energy's target and register (both rankers), then long runs of
        one pitch (``"density"``) or the music ranker's terms (``"music"``)."""
        u = Fraction(unit)
        stats = body_stats(body, u, parse_key(key).accidentals())
        score = abs(stats.notes_per_quarter - target) / max(target, 1e-6)
        high = controls.valence % 2 == 1
        if math.isfinite(stats.mean_pitch) and (stats.mean_pitch >= self.labels.register_median
                                                ) != high:
            score += 0.25
        details = {"notes_per_quarter": stats.notes_per_quarter, "mean_pitch": stats.mean_pitch,
                   "longest_repeat": stats.longest_repeat}
        if self.config.ranker == "music":
            beat_q = parse_abc_meter(meter)[1]
            facts = melody_facts(body, float(u) * 4, key, prev_pitch, beat_q)
            score += penalty(facts, self.ranker_weights, beat_q, target=target)  # ranker v2
            details["melody"] = facts
        else:  # long runs of one repeated pitch (the calm corner's weakness)
            score += self.config.repeat_penalty * max(0, stats.longest_repeat - 3)
        return score, details

    def __repr__(self) -> str:
        return f"Composer(checkpoint={str(self.checkpoint)!r}, candidates={self.config.candidates})"


