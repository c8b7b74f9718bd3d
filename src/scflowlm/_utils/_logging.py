"""Logging helpers: quieting library chatter a user cannot act on."""

from __future__ import annotations

import contextlib
import logging

__all__ = ["quiet_loggers"]


@contextlib.contextmanager
def quiet_loggers(*names: str, enabled: bool = True):
    """Raise the given loggers to WARNING while the block runs (their INFO lines are chatter to a user)."""
    loggers = [logging.getLogger(n) for n in names] if enabled else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
