"""Real and predicted cells in one PCA space (where ``tl.evaluate``'s distances and ``pl``'s embeddings start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._arrays import column_mean, dense, top_pcs

if TYPE_CHECKING:
    from anndata import AnnData


def pca_coords(
    adata_real: AnnData,
    adata_pred: AnnData,
    *,
    rep: str = "X_pca",
    n_pcs: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Real and predicted cells in the real data's PCA space.

    Real cells: ``adata_real.obsm[rep]``. Predicted cells: ``adata_pred.obsm[rep]`` when present (generated PCA
    coordinates); otherwise ``adata_pred.X`` projected with ``adata_real.varm["PCs"]`` after centring on the
    real gene means. Without either, a PCA (``n_pcs`` components) is fitted on ``adata_real.X`` and both are
    projected on it.

    Returns
    -------
    ``(real, pred)`` of shapes (n_real, k) and (n_pred, k).
    """
    has_real = rep in adata_real.obsm
    if has_real and rep in adata_pred.obsm:
        r, p = dense(adata_real.obsm[rep]), dense(adata_pred.obsm[rep])
        if r.shape[1] == p.shape[1]:
            return r, p
    if list(adata_real.var_names) != list(adata_pred.var_names):
        msg = "adata_real and adata_pred must have the same var_names to share a PCA"
        raise ValueError(msg)
    mu = column_mean(adata_real.X)  # (genes,)
    if has_real and "PCs" in adata_real.varm:
        pcs = np.asarray(adata_real.varm["PCs"], dtype=np.float64)  # (genes, k)
        if pcs.shape[1] == dense(adata_real.obsm[rep]).shape[1]:
            return dense(adata_real.obsm[rep]), (dense(adata_pred.X) - mu) @ pcs
    xr = dense(adata_real.X) - mu  # (n_real, genes)
    pcs = top_pcs(xr, n_pcs)  # (genes, k)
    return xr @ pcs, (dense(adata_pred.X) - mu) @ pcs
