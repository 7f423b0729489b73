"""Test-wide settings: per-user state goes to a temporary folder, never the user's home.

Sessions write a local consent key (``st_agent.paths.config_dir``) and register their
subject (``st_agent.paths.data_dir``); a test run must not leave them in the account
that runs it, nor read the account's own.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_BASE: list[str] = []


def pytest_configure(config: object) -> None:
    base = tempfile.mkdtemp(prefix="st-agent-tests-")
    _BASE.append(base)
    for name, sub in (("ST_AGENT_CONFIG_DIR", "config"), ("ST_AGENT_DATA_DIR", "data")):
        os.environ[name] = os.path.join(base, sub)


def pytest_unconfigure(config: object) -> None:
    for base in _BASE:
        shutil.rmtree(base, ignore_errors=True)
