"""scflowlm: CaLMFlow (Volterra flow matching with causal language models) for single-cell perturbations.

The subpackages load on first use (``scflowlm.tl``, ``from scflowlm import CaLMFlowModel``), so that
``python -m scflowlm --help`` answers before torch and scvi-tools are imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import scflowlm_version
from ._warnings import ScflowlmWarning

if TYPE_CHECKING:
    from . import data, metrics, model, module, nn, pl, tl, train
    from .model import CaLMFlowModel

__version__ = scflowlm_version()

_SUBPACKAGES = ("data", "metrics", "model", "module", "nn", "pl", "tl", "train")

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


def __getattr__(name: str):
    """Import a subpackage (or the model class) the first time it is asked for."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "CaLMFlowModel":
        return importlib.import_module(f"{__name__}.model").CaLMFlowModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
