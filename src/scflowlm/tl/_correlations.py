"""Correlations of mean expression (R^2, Pearson, Spearman, change from control) and top DE genes."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from ._utils import _dense, _mean

if TYPE_CHECKING:
    from collections.abc import Sequence


def _profile(a: AnnData | np.ndarray) -> np.ndarray:
    """Mean expression profile (features,) of cells (AnnData ``X`` or a 2-D array); 1-D arrays pass through."""
    if isinstance(a, AnnData):
        return _mean(a.X)
    if sp.issparse(a):
        return _mean(a)
    a = np.asarray(a, dtype=np.float64)
    return a if a.ndim == 1 else a.mean(0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b)[0])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def mean_correlations(
    x: AnnData | np.ndarray,
    y: AnnData | np.ndarray,
    *,
    control: AnnData | np.ndarray | None = None,
    genes: Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """Agreement between the mean expression of real and generated cells.

    With ``mu_real``, ``mu_pred`` (and ``mu_ctrl``) the mean profiles, over the selected genes:

    - ``pearson``: Pearson r of ``mu_pred`` vs ``mu_real``; ``r2`` = its square (the paper's R^2, which
      its tables report as Pearson^2);
    - ``r2_score``: coefficient of determination ``1 - sum (mu_real - mu_pred)^2 / sum (mu_real - mean)^2``
      (sklearn ``r2_score``, as CellFlow / CPA); can be negative;
    - ``spearman``: Spearman rho of ``mu_pred`` vs ``mu_real``;
    - ``pearson_delta`` (with ``control``): Pearson r of ``mu_pred - mu_ctrl`` vs ``mu_real - mu_ctrl``
      (cell-eval's ``pearson_delta``): it tests the predicted change, which the R^2 of means hides when the
      control already looks like the target.

    Parameters
    ----------
    x
        Real cells (AnnData: ``X``; array cells x genes) or their mean profile (1-D array).
    y
        Generated cells or their mean profile, same genes.
    control
        Control cells (or their mean) of the same context, for ``pearson_delta``.
    genes
        Integer indices of the genes to use (for example the top DE genes); all genes if None.

    Returns
    -------
    dict with keys ``r2``, ``r2_score``, ``pearson``, ``spearman`` and, with ``control``, ``pearson_delta``.
    """
    mr, mp = _profile(x), _profile(y)  # (genes,)
    if mr.shape != mp.shape:
        msg = f"real and generated profiles differ in length: {mr.shape} != {mp.shape}"
        raise ValueError(msg)
    idx = np.arange(len(mr)) if genes is None else np.asarray(genes, dtype=int)
    a, b = mr[idx], mp[idx]
    r = _pearson(a, b)
    ss = float(np.sum((a - a.mean()) ** 2))
    out = {
        "r2": r**2,
        "r2_score": 1.0 - float(np.sum((a - b) ** 2)) / ss if ss > 0 else float("nan"),
        "pearson": r,
        "spearman": _spearman(a, b),
    }
    if control is not None:
        mc = _profile(control)[idx]
        out["pearson_delta"] = _pearson(a - mc, b - mc)
    return out


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
    ri = np.flatnonzero(reference) if np.asarray(reference).dtype == bool else np.asarray(reference, dtype=int)
    if len(ti) < 2 or len(ri) < 2:
        msg = f"need at least 2 target and 2 reference cells, got {len(ti)} and {len(ri)}"
        raise ValueError(msg)
    x = adata.layers[layer] if layer is not None else adata.X
    sub = x[np.concatenate([ti, ri])]
    tmp = AnnData(sub if sp.issparse(sub) else _dense(sub))
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
