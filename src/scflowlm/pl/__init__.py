"""Plots (they only read): generated vs real cells on a UMAP, evaluation tables, training curves."""

from __future__ import annotations

from ._compare import compare
from ._evaluate import evaluate
from ._flow import flow
from ._history import history
from ._umap import umap_overlap

__all__ = ["compare", "evaluate", "flow", "history", "umap_overlap"]
