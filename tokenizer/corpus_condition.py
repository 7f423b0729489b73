"""The training corpus in the composer's condition: whole bars from a downbeat, A / Am.

The composer prompts ``M:4/4``, ``L:1/8``, ``K:A`` or ``K:Am`` and asks for four
whole bars from a downbeat (meter-aware decoding, plain ``|`` bar lines, no
chords). The default corpus (:mod:`st_agent.tokenizer.corpus`) keeps each tune's
own meter, unit, key and bar lines and folds a pickup into its first phrase. This
module renotates every tune towards that condition, exactly, and refuses (with a
counted reason) what it cannot renotate exactly:

- **Key**: each tune is transposed by the nearest interval (-6 .. +5 semitones)
  that takes its tonic to A (:mod:`st_agent.tokenizer.abc_renotate`); major-family
  modes (ionian, mixolydian, lydian) are written under ``K:A``, minor-family ones
  (aeolian, dorian, phrygian, locrian) under ``K:Am``, the modal degrees with
  explicit accidentals. The tonic is the one the default corpus's mode family
  uses (``K:``, or its relative key when the notes say so). The original key and
  the interval are kept on the tune (:class:`ConditionedTune`) as labels.
- **Unit**: every tune is written in ``L:1/8`` (lengths x 1/2 from ``L:1/16``,
  x 2 from ``L:1/4``; always exact).
- **Meter**: 2/4 bars are paired into 4/4 bars and 3/8 into 6/8 (a trailing odd
  bar is dropped); 2/2 is written 4/4 (the same bar); other meters stay.
- **Bars**: a short first bar is the tune's *pickup*, kept on its own line after
  the header (never part of a phrase); two consecutive short bars that add up to
  one bar (a bar split by a repeat sign) are joined; a short last bar is dropped;
  any other bar of the wrong length refuses the tune. Phrases are 4 whole bars;
  a remainder of 1-3 bars at the end is dropped. Bar lines are plain ``|``.

Sequence format (one tune)::

    <|bos|>M:4/4\\nL:1/8\\nK:Am\\nE|\\n<|v.|><|t.|><|e.|><|phrase|>A2 ...|...|...|...|\\n...<|eos|>

The pickup line, when present, is the line between ``K:`` and the first control
tokens.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from st_agent.theory import Key, parse_key
from st_agent.tokenizer.abc_bars import split_bars
from st_agent.tokenizer.abc_renotate import (
    RenotationError,
    Transposition,
    renotate_bars,
    split_at_bar_lines,
    transposition_to,
)
from st_agent.tokenizer.abc_text import NormalisedTune, normalise_tune, parse_meter, split_tunes
from st_agent.tokenizer.corpus import (
    Corpus,
    LabelledTune,
    _fit_stats,
    _measure,
    _split_of,
    _tempo_bin,
    _tune_family,
    label_tune,
    music21_abc_files,
)

__all__ = [
    "CORPUS_KINDS",
    "ConditionError",
    "ConditionReport",
    "ConditionedTune",
    "Conditioning",
    "condition_tune",
    "load_condition_corpus",
]

logger = logging.getLogger(__name__)

#: ``--corpus`` values: the default corpus, every tune conditioned, only 4/4 ones.
CORPUS_KINDS = ("original", "condition", "condition44")
REFERENCE_KEYS = {"major": "A", "minor": "Am"}
PAIRED_METERS = {"2/4": "4/4", "3/8": "6/8"}
RENAMED_METERS = {"2/2": "4/4"}
TARGET_UNIT = Fraction(1, 8)
BARS_PER_PHRASE = 4


class ConditionError(ValueError):
    """A tune that cannot be brought into the condition exactly (message = reason)."""


@dataclass(frozen=True)
class ConditionedTune(NormalisedTune):
    """A tune renotated into the composer's condition.

    Attributes (besides :class:`NormalisedTune`'s)
    ----------------------------------------------
    pickup : str
        The pickup bar (ending with ``|``), "" when the tune starts on a downbeat.
    original_key, original_meter, original_unit : str
        ``K:``, ``M:``, ``L:`` of the source (the key is a label, not in the text).
    semitones : int
        The interval the tune was transposed by (-6 .. +5).
    """

    pickup: str = ""
    original_key: str = ""
    original_meter: str = ""
    original_unit: str = ""
    semitones: int = 0

    def header(self) -> str:
        """Header lines (M, L, Q, K), then the pickup line when there is one."""
        head = super().header()
        return head + (self.pickup + "\n" if self.pickup else "")


@dataclass
class Conditioning:
    """How one tune was conditioned (for the report and the music21 check).

    Attributes
    ----------
    tune : ConditionedTune
    source_text : str
        The kept source bars in their original notation (pickup first), one
        string: what the renotation must sound like, shifted by ``semitones``.
    counts : Counter
        ``merged`` (split bars joined), ``bar_lines_restored`` (bars holding
        several, cut), ``final_partial`` / ``section_partial`` / ``odd_pair`` /
        ``short_tail`` (bars dropped), ``grace`` / ``decoration`` / ``other``
        (tokens dropped), ``bars_in`` / ``bars_out`` (source / output bars kept).
    """

    tune: ConditionedTune
    source_text: str
    counts: Counter = field(default_factory=Counter)


def _tonic(key: Key, family: str) -> tuple[str, int]:
    """Tonic letter and pitch class the tune is transposed from."""
    if family == key.family:
        return key.tonic_letter, key.tonic_pc
    letters = "CDEFGAB"
    li = letters.index(key.tonic_letter)
    if family == "minor":  # a major signature on its relative minor: down a minor third
        return letters[(li - 2) % 7], (key.tonic_pc - 3) % 12
    return letters[(li + 2) % 7], (key.tonic_pc + 3) % 12


def _segment(durations: Sequence[Fraction], bar_len: Fraction, counts: Counter
             ) -> tuple[list[int], list[list[list[int]]]]:
    """Indices of the pickup bar and the runs of whole bars (each a list of source bars).

    A short bar that is neither the pickup, nor half of a split bar, ends a run
    and is dropped (``section_partial``: the bar before a repeat whose other part
    is the section's pickup); a run starts again after it.
    """
    idx = [i for i, d in enumerate(durations) if d > 0]
    pickup: list[int] = []
    runs: list[list[list[int]]] = [[]]
    k = 0
    if idx and durations[idx[0]] < bar_len:
        pickup, k = [idx[0]], 1
    while k < len(idx):
        d = durations[idx[k]]
        if d == bar_len:
            runs[-1].append([idx[k]])
            k += 1
        elif k + 1 < len(idx) and d + durations[idx[k + 1]] == bar_len:
            runs[-1].append([idx[k], idx[k + 1]])
            counts["merged"] += 1
            k += 2
        else:
            counts["final_partial" if k == len(idx) - 1 else "section_partial"] += 1
            runs.append([])
            k += 1
    return pickup, [r for r in runs if r]


def _whole_bars(runs: list[list[list[int]]], paired: bool, counts: Counter) -> list[list[int]]:
    """Pair bars (2/4 -> 4/4) and cut each run to whole phrases; the kept bars in order."""
    whole: list[list[int]] = []
    for run in runs:
        if paired:
            if len(run) % 2:
                run = run[:-1]
                counts["odd_pair"] += 1
            run = [run[i] + run[i + 1] for i in range(0, len(run), 2)]
        tail = len(run) % BARS_PER_PHRASE
        counts["short_tail"] += tail
        whole.extend(run[:len(run) - tail])
    return whole


def _source_bars(tune: NormalisedTune, key: Key, unit: Fraction, bar_len: Fraction,
                 counts: Counter) -> tuple[list[str], list[Fraction]]:
    """The tune's bars and their durations; a bar holding several is split."""
    bars: list[str] = []
    durations: list[Fraction] = []
    for b in (b for p in tune.phrases for b in split_bars(p)):
        d = renotate_bars([b], key, key, Transposition(), unit, Fraction(1)).duration
        if d > bar_len:
            pieces = split_at_bar_lines(b, unit, bar_len)
            if pieces is None:
                raise ConditionError("a bar longer than the meter")
            counts["bar_lines_restored"] += len(pieces) - 1
            bars.extend(pieces)
            durations.extend([bar_len] * len(pieces))
        else:
            bars.append(b)
            durations.append(d)
    return bars, durations


def condition_tune(tune: NormalisedTune, family: str | None = None) -> Conditioning:
    """Renotate one normalised tune into the composer's condition.

    Parameters
    ----------
    tune : NormalisedTune
        From :func:`st_agent.tokenizer.abc_text.normalise_tune`.
    family : {"major", "minor"}, optional
        Mode family (the default corpus's label); default: from ``K:``.

    Returns
    -------
    conditioning : Conditioning

    Raises
    ------
    ConditionError
        With the reason, when the tune cannot be conditioned exactly.
    """
    key = parse_key(tune.key)
    family = key.family if family is None else family
    if family not in REFERENCE_KEYS:
        raise ValueError(f"family must be 'major' or 'minor', got {family!r}")
    if any(w == "exp" or w[:1] in "^_=" for w in tune.key.split()[1:]):
        raise ConditionError("K: with explicit accidentals")
    target = parse_key(REFERENCE_KEYS[family])
    tr = transposition_to(*_tonic(key, family))
    unit = Fraction(tune.unit)
    bar_len = parse_meter(tune.meter)
    counts: Counter = Counter()
    try:
        bars, durations = _source_bars(tune, key, unit, bar_len, counts)
    except RenotationError as e:
        raise ConditionError(str(e)) from e
    pickup_idx, runs = _segment(durations, bar_len, counts)
    meter = RENAMED_METERS.get(tune.meter, PAIRED_METERS.get(tune.meter, tune.meter))
    whole = _whole_bars(runs, tune.meter in PAIRED_METERS, counts)
    if not whole:
        raise ConditionError("fewer than 4 whole bars")
    scale = unit / TARGET_UNIT
    try:
        pickup = renotate_bars([bars[i] for i in pickup_idx], key, target, tr, unit, scale
                               ) if pickup_idx else None
        out = [renotate_bars([bars[i] for i in group], key, target, tr, unit, scale)
               for group in whole]
    except RenotationError as e:
        raise ConditionError(str(e)) from e
    for r in ([pickup] if pickup else []) + out:
        counts.update(r.dropped)
    counts["bars_out"] = len(out)
    counts["bars_in"] = sum(len(g) for g in whole) + len(pickup_idx)
    phrases = tuple("".join(r.text for r in out[i:i + BARS_PER_PHRASE])
                    for i in range(0, len(out), BARS_PER_PHRASE))
    conditioned = ConditionedTune(
        meter=meter, unit="1/8", key=REFERENCE_KEYS[family], tempo_bpm=tune.tempo_bpm,
        rhythm=tune.rhythm, phrases=phrases, pickup=pickup.text if pickup else "",
        original_key=tune.key, original_meter=tune.meter, original_unit=tune.unit,
        semitones=tr.semitones)
    kept = pickup_idx + [i for g in whole for i in g]
    return Conditioning(conditioned, "".join(bars[i] for i in kept), counts)


@dataclass
class ConditionReport:
    """What conditioning the corpus gave, per split, with every drop counted.

    Attributes
    ----------
    n_read, n_duplicates : int
        Tunes read; duplicates dropped (as in the default corpus).
    refused_default : Counter
        Tunes the default corpus already refuses, by reason.
    refused : Counter
        Tunes the default corpus keeps but conditioning refuses, by reason.
    tunes, phrases : dict
        Split -> ``Counter`` with ``original`` and ``conditioned`` (and, for
        phrases, ``original_44`` = 4/4 with ``L:1/8``, ``conditioned_44`` = 4/4).
    counts : Counter
        Summed :attr:`Conditioning.counts` of the kept tunes (bars and tokens dropped).
    meters : Counter
        ``"<source M> L:<source L> -> <M>"`` per conditioned tune.
    semitones : Counter
        Interval -> conditioned tunes.
    pickups : int
        Conditioned tunes with a pickup line.
    """

    n_read: int = 0
    n_duplicates: int = 0
    refused_default: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    tunes: dict[str, Counter] = field(default_factory=dict)
    phrases: dict[str, Counter] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    meters: Counter = field(default_factory=Counter)
    semitones: Counter = field(default_factory=Counter)
    pickups: int = 0

    def summary(self) -> dict:
        """The report as plain JSON-able values."""
        return {
            "n_read": self.n_read, "n_duplicates": self.n_duplicates,
            "refused_default": dict(self.refused_default), "refused": dict(self.refused),
            "tunes": {k: dict(v) for k, v in self.tunes.items()},
            "phrases": {k: dict(v) for k, v in self.phrases.items()},
            "counts": dict(self.counts), "meters": dict(self.meters.most_common()),
            "semitones": {str(k): v for k, v in sorted(self.semitones.items())},
            "pickups": self.pickups,
        }


def _read_tunes(paths: Iterable[Path], report: ConditionReport):
    """Yield the de-duplicated normalised tunes and their raw text (as :func:`load_corpus`)."""
    seen: set[str] = set()
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        for raw in split_tunes(text):
            report.n_read += 1
            try:
                tune = normalise_tune(raw)
                family = _tune_family(tune)
            except ValueError as e:
                report.refused_default[str(e).split(";")[0]] += 1
                continue
            norm = tune.text()
            dedup = "".join(norm.split())
            if dedup in seen:
                report.n_duplicates += 1
                continue
            seen.add(dedup)
            report.counts["bars_written"] += sum(len(split_bars(p)) for p in tune.phrases)
            yield tune, family, norm, Path(path).name


def load_condition_corpus(
    files: Iterable[Path] | None = None,
    extra_dirs: Sequence[Path] = (),
    salt: str = "sonic-telegram-split-v1",
    eval_fractions: tuple[float, float] = (0.05, 0.05),
    only_44: bool = False,
) -> tuple[Corpus, ConditionReport]:
    """Read the corpus like :func:`~st_agent.tokenizer.corpus.load_corpus`, conditioned.

    The tunes, their de-duplication and their train/validation/test assignment
    (a salted hash of the *original* normalised text) are those of the default
    corpus, so the conditioned test split holds the same melodies (the ones
    that could be conditioned). Labels are fitted on the conditioned training split.

    Parameters
    ----------
    files, extra_dirs, salt, eval_fractions
        As :func:`~st_agent.tokenizer.corpus.load_corpus`.
    only_44 : bool
        Keep only tunes that end up in ``M:4/4`` (the composer's meter).

    Returns
    -------
    corpus : Corpus
        Its tunes are :class:`LabelledTune` whose ``tune`` is a :class:`ConditionedTune`.
    report : ConditionReport
    """
    paths = list(files) if files is not None else music21_abc_files()
    for d in extra_dirs:
        found = sorted(Path(d).rglob("*.abc")) if Path(d).is_dir() else []
        if not found:
            raise FileNotFoundError(f"ABC folder {d} does not exist or holds no .abc files")
        paths.extend(found)
    report = ConditionReport()
    labelled: dict[str, list[LabelledTune]] = {"train": [], "validation": [], "test": []}
    for name in labelled:
        report.tunes[name], report.phrases[name] = Counter(), Counter()
    for tune, family, norm, source in _read_tunes(paths, report):
        split = _split_of(norm, salt, eval_fractions)
        report.tunes[split]["original"] += 1
        report.phrases[split]["original"] += len(tune.phrases)
        if tune.meter == "4/4" and tune.unit == "1/8":
            report.phrases[split]["original_44"] += len(tune.phrases)
        try:
            c = condition_tune(tune, family)
        except ConditionError as e:
            report.refused[str(e)] += 1
            continue
        ct = c.tune
        if only_44 and ct.meter != "4/4":
            report.refused["not 4/4 after conditioning (only_44)"] += 1
            continue
        report.tunes[split]["conditioned"] += 1
        report.phrases[split]["conditioned"] += len(ct.phrases)
        if ct.meter == "4/4":
            report.phrases[split]["conditioned_44"] += len(ct.phrases)
        report.counts.update(c.counts)
        report.meters[f"{tune.meter} L:{tune.unit} -> {ct.meter}"] += 1
        report.semitones[ct.semitones] += 1
        report.pickups += bool(ct.pickup)
        labelled[split].append(LabelledTune(tune=ct, family=family, tempo_bin=_tempo_bin(ct),
                                            measures=_measure(ct), source=source))
    stats = _fit_stats(labelled["train"])
    corpus = Corpus(train=[], validation=[], test=[], stats=stats, n_read=report.n_read,
                    rejected=dict(report.refused_default + report.refused),
                    n_duplicates=report.n_duplicates)
    for name, tunes in labelled.items():
        setattr(corpus, name, [label_tune(t, stats) for t in tunes])
    logger.info("condition corpus: %d/%d/%d tunes, refused %s", len(corpus.train),
                len(corpus.validation), len(corpus.test), dict(report.refused))
    return corpus, report
