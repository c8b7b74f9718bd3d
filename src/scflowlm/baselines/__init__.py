"""Baselines on the same AnnData interface as CaLMFlow."""

from __future__ import annotations

from ._cfm import CFMModel

__all__ = ["CFMModel"]
