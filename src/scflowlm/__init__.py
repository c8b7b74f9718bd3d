"""scflowlm: CaLMFlow (Volterra flow matching with causal language models) for single-cell perturbations."""

from __future__ import annotations

from . import data, metrics, model, module, nn, pl, tl, train
from ._version import scflowlm_version
from ._warnings import ScflowlmWarning
from .model import CaLMFlowModel

__version__ = scflowlm_version()

__all__ = [
    "CaLMFlowModel",
    "ScflowlmWarning",
    "data",
    "metrics",
    "model",
    "module",
    "nn",
    "pl",
    "tl",
    "train",
]
