"""Metrics: arrays in, numbers out (no AnnData). :func:`scflowlm.tl.evaluate` applies them condition by condition."""

from __future__ import annotations

from ._correlations import mean_correlations
from ._distances import CELLFLOW_GAMMAS, adaptive_mmd, edistance, mmd, wasserstein
from ._embedding import joint_embedding
from ._leiden import LeidenClassifier, fit_leiden_classifier, inception_score, leiden_kl
from ._paired import PairedIdentity, paired_identity

__all__ = [
    "CELLFLOW_GAMMAS",
    "LeidenClassifier",
    "PairedIdentity",
    "adaptive_mmd",
    "edistance",
    "fit_leiden_classifier",
    "inception_score",
    "joint_embedding",
    "leiden_kl",
    "mean_correlations",
    "mmd",
    "paired_identity",
    "wasserstein",
]
