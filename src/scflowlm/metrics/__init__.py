"""Metrics: arrays in, numbers out (no AnnData). :func:`scflowlm.tl.evaluate` applies them condition by condition."""

from __future__ import annotations

from ._correlations import mean_correlations
from ._discrimination import de_overlap, discrimination
from ._distances import CELLFLOW_GAMMAS, adaptive_mmd, edistance, mmd, wasserstein
from ._embedding import joint_embedding
from ._leiden import LeidenClassifier, fit_leiden_classifier, inception_score, leiden_kl
from ._noise import signal_to_noise
from ._paired import PairedIdentity, paired_identity
from ._spread import variance_r2

__all__ = [
    "CELLFLOW_GAMMAS",
    "LeidenClassifier",
    "PairedIdentity",
    "adaptive_mmd",
    "de_overlap",
    "discrimination",
    "edistance",
    "fit_leiden_classifier",
    "inception_score",
    "joint_embedding",
    "leiden_kl",
    "mean_correlations",
    "mmd",
    "paired_identity",
    "signal_to_noise",
    "variance_r2",
    "wasserstein",
]
