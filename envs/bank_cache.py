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
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from st_agent.paths import cache_dir

__all__ = ["bank_path", "build_lock", "shipped_bank"]

logger = logging.getLogger(__name__)


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
