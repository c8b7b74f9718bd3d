"""Evaluation tools: distribution metrics, correlations, Leiden metrics, baselines, splits."""

from __future__ import annotations

from ._baselines import (
    baseline_additive,
    baseline_control_mean,
    baseline_nearest_context,
    baseline_real_vs_real,
)
from ._correlations import mean_correlations, top_de_genes
from ._distances import adaptive_mmd, edistance, mmd, wasserstein
from ._embedding import joint_embedding
from ._evaluate import METRIC_GROUPS, METRICS, evaluate
from ._holdout import holdout_combinations
from ._linear import baseline_linear
from ._leiden import LeidenClassifier, fit_leiden_classifier, inception_score, leiden_kl
from ._paired import PairedIdentity, paired_identity

__all__ = [
    "METRICS",
    "METRIC_GROUPS",
    "LeidenClassifier",
    "PairedIdentity",
    "adaptive_mmd",
    "baseline_additive",
    "baseline_control_mean",
    "baseline_linear",
    "baseline_nearest_context",
    "baseline_real_vs_real",
    "edistance",
    "evaluate",
    "fit_leiden_classifier",
    "holdout_combinations",
    "inception_score",
    "joint_embedding",
    "leiden_kl",
    "mean_correlations",
    "mmd",
    "paired_identity",
    "top_de_genes",
    "wasserstein",
]
