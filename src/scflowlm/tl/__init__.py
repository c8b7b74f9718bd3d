"""Tools on AnnData: evaluation of predictions, baselines, held-out splits, embeddings (metrics: :mod:`scflowlm.metrics`)."""

from __future__ import annotations

from ._baselines import (
    baseline_additive,
    baseline_control_mean,
    baseline_mean_shift,
    baseline_nearest_context,
    baseline_real_vs_real,
)
from ._cell_eval import to_cell_eval
from ._de import top_de_genes
from ._evaluate import METRIC_GROUPS, METRICS, evaluate
from ._holdout import holdout_combinations
from ._linear import baseline_linear
from ._paired import paired_identity

__all__ = [
    "METRICS",
    "METRIC_GROUPS",
    "baseline_additive",
    "baseline_control_mean",
    "baseline_linear",
    "baseline_mean_shift",
    "baseline_nearest_context",
    "baseline_real_vs_real",
    "evaluate",
    "holdout_combinations",
    "paired_identity",
    "to_cell_eval",
    "top_de_genes",
]
