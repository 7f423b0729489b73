"""Where the project writes: run outputs and caches, decided in one place.

Outputs go to ``runs/`` (the layout's output folder): ``$ST_AGENT_RUNS_DIR`` when
set, else ``runs/`` of the source checkout the package runs from, else
``runs/`` under the user's data folder. Caches (built once, reusable) go to
``$ST_AGENT_CACHE_DIR`` or the user's cache folder; never into the checkout or
site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "runs_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _checkout_root() -> Path | None:
    """The source checkout this package is imported from, if it is one."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "envs").is_dir():
        return root
    return None


def runs_dir() -> Path:
    """The folder run outputs go under (not created here)."""
    env = os.environ.get("ST_AGENT_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    root = _checkout_root()
    if root is not None:
        return root / "runs"
    import platformdirs

    return Path(platformdirs.user_data_dir("st-agent")) / "runs"


def cache_dir() -> Path:
    """The folder caches go under (not created here)."""
    env = os.environ.get("ST_AGENT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("st-agent"))
