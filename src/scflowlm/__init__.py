"""scflowlm: CaLMFlow (Volterra flow matching with causal language models) for single-cell perturbations."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import baselines, data, metrics, model, module, nn, pl, tl, train
from ._warnings import ScflowlmWarning
from .model import CaLMFlowModel

try:
    __version__ = version("scflowlm")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = [
    "CaLMFlowModel",
    "ScflowlmWarning",
    "baselines",
    "data",
    "metrics",
    "model",
    "module",
    "nn",
    "pl",
    "tl",
    "train",
]
