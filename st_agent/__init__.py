"""Sonic Telegram agent: a closed loop between a listener's body and a music generator."""

__version__ = "0.1.0"
