"""``python -m st_agent`` is ``st-agent``."""

from .cli import app

app()
