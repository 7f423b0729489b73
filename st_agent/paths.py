"""Where the project writes: run outputs and caches, decided in one place.

Outputs go to ``runs/`` (the layout's output folder): ``$ST_AGENT_RUNS_DIR`` when
set, else ``runs/`` of the source checkout the package runs from, else
``runs/`` under the user's data folder. Caches (built once, reusable) go to
``$ST_AGENT_CACHE_DIR`` or the user's cache folder; never into the checkout or
site-packages. Per-user settings and keys (the local consent key) go to
``$ST_AGENT_CONFIG_DIR`` or the user's config folder (``~/.config/st-agent`` on Linux,
where session key files go by default too); per-user data that outlives a run (the
subject registry, personal listener and controller files) to ``$ST_AGENT_DATA_DIR`` or
the user's data folder (``~/.local/share/st-agent``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "config_dir", "data_dir", "runs_dir"]

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


def config_dir() -> Path:
    """The folder per-user settings and keys go under (not created here)."""
    env = os.environ.get("ST_AGENT_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("st-agent"))


def data_dir() -> Path:
    """The folder per-user data (subject registry, personal files) goes under (not
    created here)."""
    env = os.environ.get("ST_AGENT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("st-agent"))
