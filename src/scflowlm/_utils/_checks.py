"""Argument checks shared by the models and tools (one rule per kind of argument)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_choice", "check_fraction", "check_int"]


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer in ``[minimum, 2**63)`` (not a bool)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value >= 2**63:
        raise ValueError(f"{name} must be below 2**63 (a 64-bit integer), got {value!r}.")


def check_fraction(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number in ``[0, 1)`` (a probability of dropping)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (e.g. 0.1), got {value!r}.")


def check_choice(name: str, value: Any, choices: Any) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError naming ``name`` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value
