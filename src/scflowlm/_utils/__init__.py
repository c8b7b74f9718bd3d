"""Package-level private helpers shared across subpackages (arrays, logging, checks, prediction AnnDatas).

Subpackages import each other's public names only; what several of them need and no user should call lives here.
"""

from __future__ import annotations

from ._arrays import (
    column_mean,
    dense,
    dense_rows,
    group_means,
    pearson,
    random_state,
    subsample_idx,
    top_pcs,
)
from ._checks import check_choice, check_fraction, check_int
from ._logging import quiet_loggers
from ._obs import obs_mask
from ._pca import pca_coords
from ._prediction import PredictionRecord, predicted_anndata

__all__ = [
    "PredictionRecord",
    "check_choice",
    "check_fraction",
    "check_int",
    "column_mean",
    "dense",
    "dense_rows",
    "group_means",
    "obs_mask",
    "pca_coords",
    "pearson",
    "predicted_anndata",
    "quiet_loggers",
    "random_state",
    "subsample_idx",
    "top_pcs",
]
