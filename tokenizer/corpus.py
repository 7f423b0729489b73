"""The ABC corpus: loading, de-duplication, split, and per-phrase control labels.

The default corpus is the ABC tunes that the ``music21`` package ships in its
``corpus/`` folder (about 13,000 public-domain folk tunes: Ryan's Mammoth
Collection, O'Neill's 1850, the Essen folksong collection, Nottingham). Users
add their own folders of ``.abc`` files with ``extra_dirs``.

Control labels are computed from the music itself, per 4-bar phrase:

========  =======  ============================================================
control   bins     computed from
========  =======  ============================================================
valence   4        mode family (from ``K:``, overruled by Krumhansl–Kessler
                   key-finding on the notes when they clearly say the relative
                   key of the other family) × register (phrase mean pitch at or
                   above the corpus median): v0 minor low, v1 minor high, v2
                   major low, v3 major high
tempo     3        quarter-note BPM from ``Q:`` where present, else the tune
                   type in ``R:`` (air → slow, hornpipe → medium, reel → fast);
                   t0 < 90 BPM ≤ t1 < 130 BPM ≤ t2
energy    5        melody onsets per quarter note, binned at the corpus
                   quintiles of the training split
========  =======  ============================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from st_agent.theory import find_key, parse_key
from st_agent.tokenizer.abc_text import NormalisedTune, body_stats, normalise_tune, split_tunes
from st_agent.types import Knobs, bpm_from_tempo

__all__ = [
    "N_ENERGY",
    "N_TEMPO",
    "N_VALENCE",
    "SPECIAL_TOKENS",
    "Controls",
    "Corpus",
    "LabelStats",
    "LabelledTune",
    "load_corpus",
    "music21_abc_files",
]

logger = logging.getLogger(__name__)

N_VALENCE = 4
N_TEMPO = 3
N_ENERGY = 5
TEMPO_EDGES_BPM = (90.0, 130.0)

BOS, EOS, PAD, PHRASE = "<|bos|>", "<|eos|>", "<|pad|>", "<|phrase|>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD, BOS, EOS, PHRASE,
    *(f"<|v{i}|>" for i in range(N_VALENCE)),
    *(f"<|t{i}|>" for i in range(N_TEMPO)),
    *(f"<|e{i}|>" for i in range(N_ENERGY)),
)

# Tune types (R: field, lower case, first word that matches) to tempo bins.
_RHYTHM_TEMPO = {
    "air": 0, "slow": 0, "lament": 0, "lullaby": 0, "hymn": 0, "psalm": 0,
    "pastoral": 0, "choral": 0,
    "hornpipe": 1, "strathspey": 1, "march": 1, "waltz": 1, "mazurka": 1,
    "schottische": 1, "barndance": 1, "country": 1, "song": 1, "lied": 1,
    "ballade": 1, "romanze": 1, "minuet": 1, "set": 1, "quadrille": 1,
    "reel": 2, "jig": 2, "slide": 2, "polka": 2, "fling": 2, "breakdown": 2,
    "clog": 2, "single": 2, "double": 2, "slip": 2, "galop": 2,
}


@dataclass(frozen=True)
class Controls:
    """Control bins of one phrase: valence 0-3, tempo 0-2, energy 0-4."""

    valence: int
    tempo: int
    energy: int

    def __post_init__(self) -> None:
        for name, n in (("valence", N_VALENCE), ("tempo", N_TEMPO), ("energy", N_ENERGY)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or not 0 <= value < n:
                raise ValueError(f"{name} bin must be an int in [0, {n - 1}], got {value!r}")

    @classmethod
    def from_knobs(cls, knobs: Knobs) -> Controls:
        """The bins that knob values ask for (the inverse of the labelling)."""
        bpm = bpm_from_tempo(knobs.tempo)
        return cls(
            valence=min(int(knobs.valence * N_VALENCE), N_VALENCE - 1),
            tempo=int(np.searchsorted(TEMPO_EDGES_BPM, bpm, side="right")),
            energy=min(int(knobs.energy * N_ENERGY), N_ENERGY - 1),
        )

    @property
    def family(self) -> str:
        """Mode family the valence bin stands for."""
        return "major" if self.valence >= N_VALENCE // 2 else "minor"

    def tokens(self) -> str:
        """Control tokens followed by the phrase marker, as text."""
        return f"<|v{self.valence}|><|t{self.tempo}|><|e{self.energy}|>{PHRASE}"


@dataclass
class LabelStats:
    """Corpus statistics the labels are binned with (saved as ``labels.json``).

    Attributes
    ----------
    register_median : float
        Median phrase mean pitch (MIDI) of the training split.
    energy_edges : list of float
        Inner quantile edges of melody onsets per quarter note (4 values).
    energy_targets : list of float
        Median onsets per quarter note inside each energy bin (5 values); the
        composer ranks candidates by their distance to these.
    """

    register_median: float = 72.0
    energy_edges: list[float] = field(default_factory=lambda: [1.0, 1.5, 1.8, 2.0])
    energy_targets: list[float] = field(default_factory=lambda: [0.8, 1.3, 1.7, 1.9, 2.2])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> LabelStats:
        data = json.loads(Path(path).read_text())
        return cls(**data)


@dataclass(frozen=True)
class PhraseMeasure:
    """What the labeller measured of one phrase."""

    notes_per_quarter: float
    mean_pitch: float


@dataclass(frozen=True)
class LabelledTune:
    """A normalised tune with a control label per phrase."""

    tune: NormalisedTune
    family: str
    tempo_bin: int
    measures: tuple[PhraseMeasure, ...]
    source: str
    controls: tuple[Controls, ...] = ()

    def training_text(self) -> str:
        """The sequence the language model learns: header, then per phrase its
        control tokens, the phrase and a newline, between ``<|bos|>`` and
        ``<|eos|>``."""
        if len(self.controls) != len(self.tune.phrases):
            raise ValueError("tune is not labelled yet; call Corpus.label()")
        parts = [BOS, self.tune.header()]
        for c, p in zip(self.controls, self.tune.phrases, strict=True):
            parts.append(c.tokens() + p + "\n")
        parts.append(EOS)
        return "".join(parts)


def music21_abc_files() -> list[Path]:
    """All ``.abc`` files in the ``music21`` package's corpus folder, sorted."""
    import music21

    root = Path(music21.__file__).parent / "corpus"
    files = sorted(root.rglob("*.abc"))
    if not files:
        raise FileNotFoundError(
            f"no .abc files under {root}; reinstall music21 (pip install --force-reinstall music21)"
        )
    return files


def _tune_family(tune: NormalisedTune) -> str:
    """Mode family from K:, overruled by the notes when they say the relative
    key of the other family: folk collections such as Essen write only the
    signature (``K:G`` for a tune in E minor). The notes say so when the tune
    ends on the relative tonic and Krumhansl–Kessler key-finding agrees."""
    key = parse_key(tune.key)
    acc = key.accidentals()
    hist = np.zeros(12)
    last_pc = -1
    for p in tune.phrases:
        s = body_stats(p, Fraction(tune.unit), acc)
        hist += np.array(s.pc_hist)
        last_pc = s.last_pc if s.last_pc >= 0 else last_pc
    # The relative key shares the signature: major tonic = minor tonic + 3.
    relative = (key.tonic_pc + (3 if key.family == "minor" else -3)) % 12
    tonic, family, _ = find_key(hist)
    if family != key.family and tonic == relative and last_pc == relative:
        return family
    return key.family


def _tempo_bin(tune: NormalisedTune) -> int:
    if tune.tempo_bpm is not None and tune.tempo_bpm > 0:
        return int(np.searchsorted(TEMPO_EDGES_BPM, tune.tempo_bpm, side="right"))
    for word in tune.rhythm.replace(",", " ").split():
        if word in _RHYTHM_TEMPO:
            return _RHYTHM_TEMPO[word]
    return 1


def _split_of(text: str, salt: str, fractions: tuple[float, float]) -> str:
    """Assign a tune to train/validation/test by a salted hash of its text, so the
    split is fixed and does not move when tunes are added."""
    h = int.from_bytes(hashlib.sha1((salt + text).encode()).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "validation"
    if h < fractions[0] + fractions[1]:
        return "test"
    return "train"


@dataclass
class Corpus:
    """Labelled, de-duplicated tunes, split by tune.

    Attributes
    ----------
    train, validation, test : list of LabelledTune
    stats : LabelStats
    n_read : int
        Tunes read from the files.
    rejected : dict
        Reason -> count of tunes that could not be normalised.
    n_duplicates : int
        Tunes dropped as duplicates of an earlier one.
    """

    train: list[LabelledTune]
    validation: list[LabelledTune]
    test: list[LabelledTune]
    stats: LabelStats
    n_read: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    n_duplicates: int = 0

    def split(self, name: str) -> list[LabelledTune]:
        allowed = ("train", "validation", "test")
        if name not in allowed:
            raise ValueError(f"split must be one of {allowed}, got {name!r}")
        return getattr(self, name)

    def all_tunes(self) -> list[LabelledTune]:
        return [*self.train, *self.validation, *self.test]


def _measure(tune: NormalisedTune) -> tuple[PhraseMeasure, ...]:
    acc = parse_key(tune.key).accidentals()
    unit = Fraction(tune.unit)
    out = []
    for p in tune.phrases:
        s = body_stats(p, unit, acc)
        out.append(PhraseMeasure(s.notes_per_quarter, s.mean_pitch))
    return tuple(out)


def load_corpus(
    files: Iterable[Path] | None = None,
    extra_dirs: Sequence[Path] = (),
    salt: str = "sonic-telegram-split-v1",
    eval_fractions: tuple[float, float] = (0.05, 0.05),
) -> Corpus:
    """Read, normalise, de-duplicate, split and label ABC tunes.

    Parameters
    ----------
    files : iterable of Path, optional
        ABC files to read; default: the music21 corpus.
    extra_dirs : sequence of Path
        Folders whose ``*.abc`` files (recursively) are added to ``files``.
    salt : str
        Fixes the train/validation/test assignment of each tune.
    eval_fractions : (float, float)
        Fractions of tunes for validation and test.

    Returns
    -------
    corpus : Corpus

    Raises
    ------
    FileNotFoundError
        When an extra folder does not exist or holds no ``.abc`` file.
    """
    paths = list(files) if files is not None else music21_abc_files()
    for d in extra_dirs:
        d = Path(d)
        found = sorted(d.rglob("*.abc")) if d.is_dir() else []
        if not found:
            raise FileNotFoundError(f"ABC folder {d} does not exist or holds no .abc files")
        paths.extend(found)
    seen: set[str] = set()
    rejected: dict[str, int] = {}
    labelled: dict[str, list[LabelledTune]] = {"train": [], "validation": [], "test": []}
    n_read = n_dup = 0
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        for raw in split_tunes(text):
            n_read += 1
            try:
                tune = normalise_tune(raw)
                family = _tune_family(tune)
            except ValueError as e:
                reason = str(e).split(";")[0]
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            norm = tune.text()
            dedup_key = "".join(norm.split())
            if dedup_key in seen:
                n_dup += 1
                continue
            seen.add(dedup_key)
            lt = LabelledTune(tune=tune, family=family, tempo_bin=_tempo_bin(tune),
                              measures=_measure(tune), source=Path(path).name)
            labelled[_split_of(norm, salt, eval_fractions)].append(lt)
    stats = _fit_stats(labelled["train"])
    corpus = Corpus(train=[], validation=[], test=[], stats=stats, n_read=n_read,
                    rejected=rejected, n_duplicates=n_dup)
    for name, tunes in labelled.items():
        setattr(corpus, name, [label_tune(t, stats) for t in tunes])
    logger.info("corpus: %d read, %d kept (%d/%d/%d), %d duplicates, rejected %s",
                n_read, sum(len(v) for v in labelled.values()), len(corpus.train),
                len(corpus.validation), len(corpus.test), n_dup, rejected)
    return corpus


def _fit_stats(train: Sequence[LabelledTune]) -> LabelStats:
    pitches = [m.mean_pitch for t in train for m in t.measures if math.isfinite(m.mean_pitch)]
    dens = np.array([m.notes_per_quarter for t in train for m in t.measures
                     if m.notes_per_quarter > 0])
    if len(dens) < N_ENERGY or not pitches:
        return LabelStats()
    edges = np.quantile(dens, np.linspace(0, 1, N_ENERGY + 1)[1:-1])
    bins = np.searchsorted(edges, dens, side="right")
    targets = [float(np.median(dens[bins == b])) for b in range(N_ENERGY)]
    return LabelStats(register_median=float(np.median(pitches)),
                      energy_edges=[float(e) for e in edges], energy_targets=targets)


def label_phrase(measure: PhraseMeasure, family: str, tempo_bin: int,
                 stats: LabelStats) -> Controls:
    """Control bins of one measured phrase."""
    high = math.isfinite(measure.mean_pitch) and measure.mean_pitch >= stats.register_median
    valence = 2 * (family == "major") + int(high)
    energy = int(np.searchsorted(stats.energy_edges, measure.notes_per_quarter, side="right"))
    return Controls(valence=valence, tempo=tempo_bin, energy=min(energy, N_ENERGY - 1))


def label_tune(t: LabelledTune, stats: LabelStats) -> LabelledTune:
    """Return ``t`` with a :class:`Controls` per phrase."""
    controls = tuple(label_phrase(m, t.family, t.tempo_bin, stats) for m in t.measures)
    return LabelledTune(tune=t.tune, family=t.family, tempo_bin=t.tempo_bin,
                        measures=t.measures, source=t.source, controls=controls)
