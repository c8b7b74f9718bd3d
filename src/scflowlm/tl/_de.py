"""The top differentially expressed genes of a condition (scanpy's rank_genes_groups on a temporary AnnData)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._utils import dense

__all__ = ["top_de_genes"]


def top_de_genes(
    adata: AnnData,
    *,
    target: np.ndarray,
    reference: np.ndarray,
    n_genes: int = 100,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    rank_by: Literal["abs_score", "score"] = "abs_score",
    layer: str | None = None,
) -> np.ndarray:
    """Top differentially expressed genes of target cells against reference cells.

    Runs ``sc.tl.rank_genes_groups`` (target vs reference) on a temporary AnnData, so nothing is written to
    ``adata``. The expression must be log-normalised.

    Parameters
    ----------
    adata
        Cells x genes.
    target, reference
        Boolean masks (or integer indices) of the target cells (for example a stimulated condition) and of the
        reference cells (the control cells of the same other covariates).
    n_genes
        Number of genes returned.
    method
        Test of ``rank_genes_groups``.
    rank_by
        ``"abs_score"``: largest absolute test statistic (up- and down-regulated genes);
        ``"score"``: scanpy's order (largest statistic, i.e. up-regulated first).
    layer
        Layer to test instead of ``X``.

    Returns
    -------
    Integer indices into ``adata.var_names`` of the top genes, shape (min(n_genes, n_vars),).
    """
    ti = np.flatnonzero(target) if np.asarray(target).dtype == bool else np.asarray(target, dtype=int)
    ri = (
        np.flatnonzero(reference) if np.asarray(reference).dtype == bool else np.asarray(reference, dtype=int)
    )
    if len(ti) < 2 or len(ri) < 2:
        msg = f"need at least 2 target and 2 reference cells, got {len(ti)} and {len(ri)}"
        raise ValueError(msg)
    x = adata.layers[layer] if layer is not None else adata.X
    sub = x[np.concatenate([ti, ri])]
    tmp = AnnData(sub if sp.issparse(sub) else dense(sub))
    tmp.var_names = np.arange(adata.n_vars).astype(str)
    tmp.obs["group"] = pd.Categorical(["target"] * len(ti) + ["reference"] * len(ri))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            tmp, "group", groups=["target"], reference="reference", method=method, n_genes=adata.n_vars
        )
    res = tmp.uns["rank_genes_groups"]
    names = np.asarray([r[0] for r in res["names"]]).astype(int)  # (n_vars,) scanpy order
    scores = np.asarray([r[0] for r in res["scores"]], dtype=np.float64)
    scores = np.nan_to_num(scores, nan=0.0)
    order = np.argsort(-np.abs(scores), kind="stable") if rank_by == "abs_score" else np.arange(len(names))
    return names[order][: min(n_genes, adata.n_vars)]
