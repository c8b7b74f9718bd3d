"""Plots: generated vs real cells on a UMAP, evaluation tables, training curves."""

from __future__ import annotations

from ._history import history
from ._metrics import metrics
from ._umap import umap_overlap

__all__ = ["history", "metrics", "umap_overlap"]
