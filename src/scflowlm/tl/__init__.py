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
from ._compare import compare
from ._de import top_de_genes
from ._evaluate import HIGHER_IS_BETTER, METRIC_GROUPS, METRICS, evaluate
from ._holdout import holdout_combinations
from ._linear import baseline_linear
from ._paired import paired_identity
from ._signal import condition_signal
from ._vector_baselines import baseline_knn, baseline_ridge

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "METRIC_GROUPS",
    "baseline_additive",
    "baseline_control_mean",
    "baseline_knn",
    "baseline_linear",
    "baseline_mean_shift",
    "baseline_nearest_context",
    "baseline_real_vs_real",
    "baseline_ridge",
    "compare",
    "condition_signal",
    "evaluate",
    "holdout_combinations",
    "paired_identity",
    "to_cell_eval",
    "top_de_genes",
]
