"""Differentially expressed genes of a condition (scanpy's rank_genes_groups on a temporary AnnData)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._utils import dense

__all__ = ["top_de_genes"]

DeMethod = Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"]


def _indices(mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    return np.flatnonzero(arr) if arr.dtype == bool else arr.astype(int)


def _rank(target: Any, reference: Any, method: DeMethod) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every gene ranked target vs reference: ``(genes, scores, adjusted p-values)`` in scanpy's order.

    ``target`` and ``reference`` are cells x genes matrices (dense or sparse), at least 2 cells each.
    """
    if target.shape[0] < 2 or reference.shape[0] < 2:
        msg = f"need at least 2 target and 2 reference cells, got {target.shape[0]} and {reference.shape[0]}"
        raise ValueError(msg)
    both = sp.vstack([target, reference]) if sp.issparse(target) and sp.issparse(reference) else None
    tmp = AnnData(both if both is not None else np.vstack([dense(target), dense(reference)]))
    n_genes = tmp.n_vars
    tmp.var_names = np.arange(n_genes).astype(str)
    tmp.obs["group"] = pd.Categorical(["target"] * target.shape[0] + ["reference"] * reference.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            tmp, "group", groups=["target"], reference="reference", method=method, n_genes=n_genes
        )
    res = tmp.uns["rank_genes_groups"]
    names = np.asarray([r[0] for r in res["names"]]).astype(int)  # [G] scanpy order
    scores = np.nan_to_num(np.asarray([r[0] for r in res["scores"]], dtype=np.float64), nan=0.0)
    padj = np.asarray([r[0] for r in res["pvals_adj"]], dtype=np.float64) if "pvals_adj" in res else None
    padj = np.full(n_genes, np.nan) if padj is None else padj  # logreg has no p-values
    return names, scores, np.nan_to_num(padj, nan=1.0)


def top_de_genes(
    adata: AnnData,
    *,
    target: np.ndarray,
    reference: np.ndarray,
    n_genes: int = 100,
    method: DeMethod = "wilcoxon",
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
    x = adata.layers[layer] if layer is not None else adata.X
    names, scores, _ = _rank(x[_indices(target)], x[_indices(reference)], method)
    order = np.argsort(-np.abs(scores), kind="stable") if rank_by == "abs_score" else np.arange(len(names))
    return names[order][: min(n_genes, adata.n_vars)]


def de_genes(target: Any, reference: Any, *, fdr: float = 0.05, method: DeMethod = "wilcoxon") -> np.ndarray:
    """The genes differentially expressed between two sets of cells at a false discovery rate, most significant first.

    ``rank_genes_groups`` (``method``) of ``target`` (cells x genes, dense or sparse) against ``reference``; genes
    whose Benjamini-Hochberg adjusted p-value is below ``fdr``, ordered by the absolute test statistic. The same
    test and threshold for real and predicted cells (against the same real control cells) make the DE overlap of
    :func:`scflowlm.metrics.de_overlap` (cell-eval orders by the absolute log fold change instead, which is not
    defined for log-expression that a PCA map can make negative).

    Returns
    -------
    Integer indices of the genes (columns), possibly empty.
    """
    names, scores, padj = _rank(target, reference, method)
    keep = padj < fdr
    names, scores = names[keep], scores[keep]
    return names[np.argsort(-np.abs(scores), kind="stable")]
