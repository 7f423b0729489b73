"""Where the measured phrase banks live: shipped with the package, else a user cache.

The default banks (grid 5, two phrases per point, seed 0, measured from the
bundled composer) ship as package data in ``envs/assets/``, so no first use
builds anything. Any other bank is built once into the user cache folder
(:func:`st_agent.paths.cache_dir`, ``$ST_AGENT_CACHE_DIR`` to move it) under a
file lock, so two processes never build the same bank at once; nothing is
ever written into the checkout or site-packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from st_agent.paths import cache_dir

__all__ = ["bank_path", "build_lock", "composer_fingerprint", "load_or_build", "shipped_bank"]

logger = logging.getLogger(__name__)

Bank = TypeVar("Bank")


def shipped_bank(filename: str) -> Path | None:
    """The shipped copy of a bank file, if the package has one."""
    ref = resources.files("st_agent.envs").joinpath("assets", filename)
    try:
        with resources.as_file(ref) as p:
            return Path(p) if Path(p).is_file() else None
    except FileNotFoundError:
        return None


def bank_path(filename: str, for_writing: bool = False) -> Path:
    """Shipped copy when there is one (unless ``for_writing``), else
    ``<cache_dir>/phrase_bank/<filename>``."""
    shipped = None if for_writing else shipped_bank(filename)
    return shipped or cache_dir() / "phrase_bank" / filename


@contextlib.contextmanager
def build_lock(path: Path, timeout_sec: float = 3600.0) -> Iterator[None]:
    """Hold ``<path>.lock`` while a bank is built (another builder waits, then loads).

    Raises
    ------
    TimeoutError
        When another process holds the lock for longer than ``timeout_sec``.
    """
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        with lock.acquire(timeout=timeout_sec):
            yield
    except Timeout as e:
        raise TimeoutError(f"another process has been building {path} for over "
                           f"{timeout_sec:.0f} s; remove {path}.lock if it died") from e


def composer_fingerprint() -> str:
    """First 12 hex digits of the SHA-256 of the bundled composer's weights: names the
    model a bank's phrases were composed by (written into the bank's JSON)."""
    from st_agent.music.generator import BUNDLED_COMPOSER

    h = hashlib.sha256()
    with (BUNDLED_COMPOSER / "model.safetensors").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def load_or_build(path: Path, grid: int, overwrite: bool, load: Callable[[Path], Bank],
                  build: Callable[[], Bank], extra: dict[str, Any]) -> Bank:
    """Load the bank at ``path`` if it has this ``grid``; else build it once, under a lock.

    Parameters
    ----------
    path : Path
        The bank's JSON file.
    grid : int
        Points per knob axis the caller wants (a file with another grid is rebuilt).
    overwrite : bool
        Rebuild even when the file exists.
    load, build : callable
        ``load(path)`` reads a bank (with ``.grid``); ``build()`` composes one (with
        ``.to_json()``).
    extra : dict
        Written into the JSON beside the bank (how it was built), with the
        :func:`composer_fingerprint` of the composer that built it.
    """
    if path.is_file() and not overwrite:
        bank = load(path)
        if bank.grid == grid:
            return bank
        logger.warning("%s has grid %d, not %d: rebuilding", path, bank.grid, grid)
        overwrite = True
    with build_lock(path):
        if path.is_file() and not overwrite:  # another process built it while we waited
            return load(path)
        bank = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(bank.to_json() | extra | {
            "composer_weights_sha256": composer_fingerprint()}), encoding="utf-8")
        tmp.replace(path)
    logger.info("bank of %d^3 grid points -> %s", grid, path)
    return bank
