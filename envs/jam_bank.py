"""The jam bank: real phrases on a knob grid, with what the fast jam needs to mix them.

:class:`st_agent.envs.jam.JamEnv` in its ``"fast"`` fidelity draws each voice
from a :class:`JamBank`: phrases composed by the real composer at every point
of a knob grid, their features as one listener hears them, and the
pitch-class masks of their melodies, from which the clashes of any mix are
counted exactly. The default bank ships with the package or is built once
into the user cache (:mod:`st_agent.envs.bank_cache`) under a file lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from st_agent.envs.bank_cache import bank_path, load_or_build
from st_agent.envs.phrase_bank import PhraseBank
from st_agent.music.ensemble import STEPS_PER_QUARTER, voice_masks
from st_agent.types import Knobs

__all__ = ["JAM_BANK_FORMAT", "JamBank", "build_jam_bank", "default_jam_bank_path"]

logger = logging.getLogger(__name__)

JAM_BANK_FORMAT = "st-agent-jam-bank"


def default_jam_bank_path(grid: int = 5, per_point: int = 2, seed: int = 0) -> Path:
    """``jam_bank_g{grid}_p{per_point}_s{seed}.json``: the shipped copy, else in the user
    cache (:mod:`st_agent.envs.bank_cache`)."""
    return bank_path(f"jam_bank_g{grid}_p{per_point}_s{seed}.json")


@dataclass
class JamBank:
    """Real phrases on a knob grid with what the fast jam needs to mix them.

    Each entry is a phrase composed by the real composer: its features as a
    single listener would hear it (melody + accompaniment at its own energy,
    as in :class:`PhraseBank`) and the pitch-class masks of its melody on the
    sixteenth grid (:func:`st_agent.music.ensemble.voice_masks`), from which the
    clashes of any combination of entries are counted exactly.

    Parameters
    ----------
    bank : PhraseBank
        Knobs and features of the M entries.
    sounding, onset : ndarray of int64, shape (M, n_steps)
        Pitch-class masks of each entry's melody.
    bars : int
        Bars per phrase.
    """

    bank: PhraseBank
    sounding: np.ndarray
    onset: np.ndarray
    bars: int = 4
    mean_pitch: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sounding = np.asarray(self.sounding, dtype=np.int64)
        self.onset = np.asarray(self.onset, dtype=np.int64)
        m = len(self.bank.features)
        if self.sounding.shape != self.onset.shape or self.sounding.shape[0] != m:
            raise ValueError(f"masks must have shape ({m}, n_steps), got {self.sounding.shape} "
                             f"and {self.onset.shape}")
        self.mean_pitch = np.array([f.mean_pitch for f in self.bank.features])
        g = self.bank.grid
        vals = np.arange(g) / (g - 1)
        self._minor_top = int(np.flatnonzero(vals < 0.5).max())
        self._major_low = int(np.flatnonzero(vals >= 0.5).min())

    @property
    def grid(self) -> int:
        """Points per knob axis."""
        return self.bank.grid

    def snap(self, knobs: np.ndarray, major: np.ndarray) -> np.ndarray:
        """Grid points nearest to ``knobs`` (N, 3) with valence inside each voice's
        family (``major`` (N,) bool), as knob values (N, 3)."""
        g = self.bank.grid
        i = np.clip(np.rint(np.asarray(knobs, dtype=float) * (g - 1)).astype(int), 0, g - 1)
        i[:, 0] = np.where(major, np.maximum(i[:, 0], self._major_low),
                           np.minimum(i[:, 0], self._minor_top))
        return i / (g - 1)

    def pick(self, knobs: np.ndarray, major: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Entry per voice: a random phrase of its snapped grid point; shape (N,)."""
        return self.bank.pick_many(self.snap(knobs, major), rng)

    def to_json(self) -> dict:
        """Plain dict for :meth:`load`."""
        return {"format": JAM_BANK_FORMAT, "version": 1, "bars": self.bars,
                "bank": self.bank.to_json(), "sounding": self.sounding.tolist(),
                "onset": self.onset.tolist()}

    @classmethod
    def load(cls, path: str | Path) -> JamBank:
        """Read a bank written by :func:`build_jam_bank`.

        Raises
        ------
        FileNotFoundError, ValueError
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no jam bank at {path}; build one with "
                                    "st_agent.envs.jam.build_jam_bank(path)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != JAM_BANK_FORMAT or doc.get("version") != 1:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
            from st_agent.types import MusicFeatures

            b = doc["bank"]
            bank = PhraseBank(int(b["grid"]), np.asarray(b["knobs"]),
                              [MusicFeatures(**f) for f in b["features"]])
            return cls(bank, np.asarray(doc["sounding"]), np.asarray(doc["onset"]),
                       int(doc["bars"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a {JAM_BANK_FORMAT} version 1 file: {e}") from e


def build_jam_bank(path: str | Path | None = None, grid: int = 5, per_point: int = 2,
                   seed: int = 0, overwrite: bool = False) -> JamBank:
    """Compose, render and measure ``per_point`` phrases at every grid point.

    Parameters
    ----------
    path : str or Path, optional
        JSON cache; default :func:`default_jam_bank_path`. An existing file is
        loaded instead of rebuilt (unless ``overwrite``).
    grid : int
        Points per knob axis, >= 2.
    per_point : int
        Phrases per grid point, >= 1.
    seed : int
        Composer seeds are ``seed * 10**6 + entry``.
    overwrite : bool

    Returns
    -------
    bank : JamBank
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    if isinstance(per_point, bool) or not isinstance(per_point, int) or per_point < 1:
        raise ValueError(f"per_point must be an int >= 1, got {per_point!r}")
    if path is None:  # a rebuild goes to the user cache, never over the shipped copy
        path = bank_path(f"jam_bank_g{grid}_p{per_point}_s{seed}.json", for_writing=overwrite)
    return load_or_build(Path(path), grid, overwrite, JamBank.load,
                         lambda: _compose_jam_bank(grid, per_point, seed),
                         {"per_point": per_point, "seed": seed})


def _compose_jam_bank(grid: int, per_point: int, seed: int) -> JamBank:
    """Compose and measure the phrases of a jam bank (minutes: a progress bar shows it)."""
    from tqdm.auto import tqdm

    from st_agent.music.abc import abc_to_midi
    from st_agent.music.composer import Composer, ComposerError
    from st_agent.music.render import measure_features, parse_meter, render_phrase

    composer = Composer()
    knobs_out, feats, sounding, onset = [], [], [], []
    progress = tqdm(total=grid**3 * per_point, desc="building the jam bank", unit="phrase")
    n = 0
    bars = 4
    for iv, it, ie in product(range(grid), repeat=3):
        knobs = Knobs(iv / (grid - 1), it / (grid - 1), ie / (grid - 1))
        for _ in range(per_point):
            n += 1
            progress.update()
            try:
                phrase = composer.compose(knobs, bars=bars, seed=seed * 10**6 + n)
                pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter)
                f = measure_features(pm)
                mel = abc_to_midi(phrase.abc)
                steps = round(bars * parse_meter(phrase.meter)[0] * STEPS_PER_QUARTER)
                s, o = voice_masks(mel, [i for i in mel.instruments if not i.is_drum][:1], steps)
            except (ComposerError, ValueError, RuntimeError) as e:
                logger.warning("jam bank: skipped %r: %s", knobs, e)
                continue
            knobs_out.append(knobs.as_tuple())
            feats.append(f)
            sounding.append(s[0])
            onset.append(o[0])
    progress.close()
    return JamBank(PhraseBank(grid, np.asarray(knobs_out), feats), np.asarray(sounding),
                   np.asarray(onset), bars)
