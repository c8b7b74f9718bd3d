"""Joint low-dimensional spaces in which the distribution metrics are computed (arrays in, arrays out)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import scanpy as sc
from anndata import AnnData

from .._utils import dense, top_pcs

if TYPE_CHECKING:
    Space = Literal["umap", "pca", "raw"]

__all__ = ["joint_embedding"]


def joint_embedding(
    x: np.ndarray,
    y: np.ndarray,
    *,
    space: Space = "umap",
    n_components: int = 10,
    n_pcs: int = 50,
    n_neighbors: int = 15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed two sets of cells together in one space.

    The paper (appendix A.1.1) computes its distribution metrics in a 10-D UMAP fitted on the real and the
    generated cells together; this function builds that space.

    Parameters
    ----------
    x, y
        Two sets of cells, cells x features arrays.
    space
        ``"umap"``: UMAP with ``n_components`` dimensions of the pooled cells (scanpy ``pp.neighbors`` +
        ``tl.umap``; the neighbour graph is built on a joint PCA with ``n_pcs`` components when the input has
        more than ``n_pcs`` features, on the features themselves otherwise).
        ``"pca"``: joint PCA with ``n_pcs`` components of the pooled cells (centred on the pooled mean).
        ``"raw"``: the features as given.
    n_components
        UMAP dimensions.
    n_pcs
        PCA dimensions (``"pca"``, and before the UMAP neighbour graph).
    n_neighbors
        Neighbours of the UMAP graph (at most the number of cells minus one).
    seed
        Seed of the UMAP layout.

    Returns
    -------
    ``(x_emb, y_emb)``: arrays of shape (n_x, k) and (n_y, k) in the joint space.
    """
    xa, ya = dense(x), dense(y)  # (n, d), (m, d)
    if xa.shape[1] != ya.shape[1]:
        msg = f"x and y have different numbers of features: {xa.shape[1]} != {ya.shape[1]}"
        raise ValueError(msg)
    if space == "raw":
        return xa, ya
    z = np.concatenate([xa, ya], axis=0)  # (n + m, d)
    n = len(xa)
    if space == "pca":
        z = _pca(z, n_pcs)
        return z[:n], z[n:]
    if space != "umap":
        msg = f"space must be 'umap', 'pca' or 'raw', not {space!r}"
        raise ValueError(msg)
    tmp = AnnData(z.astype(np.float32))
    if z.shape[1] > n_pcs:
        tmp.obsm["X_rep"] = _pca(z, n_pcs).astype(np.float32)
    else:
        tmp.obsm["X_rep"] = tmp.X
    k = int(max(2, min(n_neighbors, len(z) - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(tmp, n_neighbors=k, use_rep="X_rep", random_state=seed)
        sc.tl.umap(tmp, n_components=n_components, random_state=seed)
    u = np.asarray(tmp.obsm["X_umap"], dtype=np.float64)  # (n + m, n_components)
    return u[:n], u[n:]


def _pca(z: np.ndarray, n_pcs: int) -> np.ndarray:
    """Scores of the first ``n_pcs`` principal components of ``z`` (centred), shape (n, k)."""
    zc = z - z.mean(0, keepdims=True)  # (n, d)
    return zc @ top_pcs(zc, n_pcs)  # (n, k)
