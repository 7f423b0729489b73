"""A bank of real phrases over a knob grid: what the fast environment plays.

Each entry is the :class:`~st_agent.types.MusicFeatures` measured from a phrase
really composed by :class:`~st_agent.music.composer.Composer` and rendered by
:func:`~st_agent.music.render.render_phrase`, so the fast env responds to what the
generator actually does, at a fraction of the cost. Built once by
:func:`build_phrase_bank` and cached as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from st_agent.envs.bank_cache import bank_path, composer_fingerprint, load_or_build
from st_agent.listener.model import feature_vector
from st_agent.types import Knobs, MusicFeatures

__all__ = ["BANK_FORMAT", "PhraseBank", "build_phrase_bank", "composer_fingerprint",
           "default_bank_path"]

logger = logging.getLogger(__name__)

BANK_FORMAT = "st-agent-phrase-bank"


def default_bank_path(grid: int = 5, per_point: int = 2, seed: int = 0) -> Path:
    """``bank_g{grid}_p{per_point}_s{seed}.json``: the shipped copy, else in the user cache."""
    return bank_path(f"bank_g{grid}_p{per_point}_s{seed}.json")


@dataclass
class PhraseBank:
    """Measured phrases on a regular knob grid.

    Parameters
    ----------
    grid : int
        Points per knob axis (``grid**3`` grid points, knobs ``i / (grid - 1)``).
    knobs : ndarray, shape (M, 3)
        Knobs each phrase was composed under.
    features : list of MusicFeatures
        Measured features, one per entry (M).
    """

    grid: int
    knobs: np.ndarray
    features: list[MusicFeatures]
    x: np.ndarray = field(init=False, repr=False)
    duration_sec: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise ValueError(f"grid must be an int >= 2, got {self.grid!r}")
        self.knobs = np.asarray(self.knobs, dtype=np.float64).reshape(-1, 3)
        if len(self.features) != len(self.knobs) or not len(self.features):
            raise ValueError(f"a phrase bank needs as many features as knobs (>= 1), got "
                             f"{len(self.features)} and {len(self.knobs)}")
        self.x = np.stack([feature_vector(f) for f in self.features])  # (M, 6)
        self.duration_sec = np.array([f.duration_sec for f in self.features])
        g = self.grid
        cell = np.rint(self.knobs * (g - 1)).astype(int) @ np.array([g * g, g, 1])
        points = np.array(list(product(range(g), repeat=3))) / (g - 1)  # (g^3, 3)
        self._members: list[np.ndarray] = []
        for k, pt in enumerate(points):
            idx = np.flatnonzero(cell == k)
            if idx.size == 0:  # composer failed here: use the nearest entries
                d = np.sum((self.knobs - pt) ** 2, axis=1)
                idx = np.flatnonzero(np.isclose(d, d.min()))
            self._members.append(idx)
        self._mean_x = np.stack([self.x[m].mean(axis=0) for m in self._members])
        self._mean_dur = np.array([self.duration_sec[m].mean() for m in self._members])

    @property
    def fingerprint(self) -> str:
        """First 12 hex digits of the SHA-256 of the knobs and the listener features
        (``x``): names the bank that controllers were tuned on."""
        h = hashlib.sha256(np.ascontiguousarray(self.knobs, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.x, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.duration_sec, dtype="<f8").tobytes())
        return h.hexdigest()[:12]

    def cell(self, knobs: Knobs | np.ndarray) -> int:
        """Index of the grid point nearest to ``knobs``."""
        k = np.asarray(knobs.as_tuple() if isinstance(knobs, Knobs) else knobs, dtype=float)
        g = self.grid
        i = np.clip(np.rint(k * (g - 1)).astype(int), 0, g - 1)
        return int(i[0] * g * g + i[1] * g + i[2])

    def pick(self, knobs: Knobs | np.ndarray, rng: np.random.Generator) -> int:
        """Entry index: a random phrase of the grid point nearest to ``knobs``."""
        members = self._members[self.cell(knobs)]
        return int(members[rng.integers(members.size)]) if members.size > 1 else int(members[0])

    def pick_many(self, knobs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:meth:`pick` for knobs of shape (N, 3): entry indices, shape (N,)."""
        if not hasattr(self, "_table"):
            sizes = np.array([m.size for m in self._members])
            table = np.zeros((len(self._members), sizes.max()), dtype=int)
            for c, m in enumerate(self._members):
                table[c, :m.size] = m
            self._table, self._sizes = table, sizes
        g = self.grid
        i = np.clip(np.rint(np.asarray(knobs, dtype=float) * (g - 1)).astype(int), 0, g - 1)
        c = i[:, 0] * g * g + i[:, 1] * g + i[:, 2]
        return self._table[c, rng.integers(self._sizes[c])]

    def expected(self, knobs: Knobs | np.ndarray) -> tuple[np.ndarray, float]:
        """Mean feature vector (6,) and duration (s) of the nearest grid point."""
        c = self.cell(knobs)
        return self._mean_x[c], float(self._mean_dur[c])

    def to_json(self) -> dict:
        """Plain dict for :meth:`load`."""
        return {"format": BANK_FORMAT, "version": 1, "grid": self.grid,
                "knobs": self.knobs.tolist(), "features": [f.as_dict() for f in self.features]}

    @classmethod
    def load(cls, path: str | Path) -> PhraseBank:
        """Read a bank written by :func:`build_phrase_bank`.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        ValueError
            When the file is not a phrase bank.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no phrase bank at {path}; build one with "
                                    "st_agent.envs.phrase_bank.build_phrase_bank(path)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != BANK_FORMAT or doc.get("version") != 1:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
            feats = [MusicFeatures(**f) for f in doc["features"]]
            return cls(int(doc["grid"]), np.asarray(doc["knobs"]), feats)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a {BANK_FORMAT} version 1 file: {e}") from e


def build_phrase_bank(path: str | Path | None = None, grid: int = 5, per_point: int = 2,
                      seed: int = 0, overwrite: bool = False) -> PhraseBank:
    """Compose, render and measure ``per_point`` phrases at every grid point.

    Parameters
    ----------
    path : str or Path, optional
        JSON cache; default :func:`default_bank_path`. An existing file with
        the same grid is loaded instead of rebuilt (unless ``overwrite``).
    grid : int
        Points per knob axis, >= 2 (``grid**3`` points).
    per_point : int
        Phrases per grid point, >= 1.
    seed : int
        Composer seeds are ``seed * 10**6 + entry``.
    overwrite : bool
        Rebuild even when the cache exists.

    Returns
    -------
    bank : PhraseBank
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    if isinstance(per_point, bool) or not isinstance(per_point, int) or per_point < 1:
        raise ValueError(f"per_point must be an int >= 1, got {per_point!r}")
    if path is None:  # a rebuild goes to the user cache, never over the shipped copy
        path = bank_path(f"bank_g{grid}_p{per_point}_s{seed}.json", for_writing=overwrite)
    return load_or_build(Path(path), grid, overwrite, PhraseBank.load,
                         lambda: _compose_bank(grid, per_point, seed),
                         {"per_point": per_point, "seed": seed})



def _compose_bank(grid: int, per_point: int, seed: int) -> PhraseBank:
    """Compose and measure the phrases of a bank (minutes: a progress bar shows it)."""
    from tqdm.auto import tqdm

    from st_agent.music.composer import Composer, ComposerError
    from st_agent.music.render import measure_features, render_phrase

    composer = Composer()
    knobs_out, feats = [], []
    n = 0
    progress = tqdm(total=grid**3 * per_point, desc="building the phrase bank", unit="phrase")
    for iv, it, ie in product(range(grid), repeat=3):
        knobs = Knobs(iv / (grid - 1), it / (grid - 1), ie / (grid - 1))
        for _ in range(per_point):
            n += 1
            progress.update()
            try:
                phrase = composer.compose(knobs, seed=seed * 10**6 + n)
                pm = render_phrase(phrase.abc, phrase.key, knobs, meter=phrase.meter)
                f = measure_features(pm)
            except (ComposerError, ValueError, RuntimeError) as e:
                logger.warning("phrase bank: skipped %r: %s", knobs, e)
                continue
            knobs_out.append(knobs.as_tuple())
            feats.append(f)
    progress.close()
    return PhraseBank(grid, np.asarray(knobs_out), feats)
