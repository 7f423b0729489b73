"""``python -m st_agent`` is ``st-agent``."""

from st_agent.cli import app

app()
