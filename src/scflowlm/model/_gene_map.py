"""The map between cell states (PCA coordinates) and genes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from scflowlm._utils import column_mean, dense_rows
from scflowlm._warnings import ScflowlmWarning

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["GeneMap"]

#: cells read to check that a PCA (obsm) and its loadings (varm["PCs"]) belong together
N_CHECK = 256
#: largest median relative error of ``(X - means) @ loadings`` against ``obsm`` for one and the same PCA
TOLERANCE = 1e-2
#: cells mapped to genes at once (a float64 buffer of this many rows x genes)
GENE_MAP_ROWS = 256


@dataclass
class GeneMap:
    """States ``z [n, D]`` <-> expression ``x [n, G]``: ``x = z @ loadings.T + means``, ``z = (x - means) @ loadings``.

    Parameters
    ----------
    loadings
        ``[G, D]`` PCA loadings (``adata.varm["PCs"]``), or ``None``: states stay states.
    means
        ``[G]`` gene means the PCA was centred on.
    var_names
        ``[G]`` gene names.
    """

    loadings: np.ndarray | None
    means: np.ndarray | None
    var_names: np.ndarray | None

    @classmethod
    def from_anndata(cls, adata: ad.AnnData, *, n_features: int, obsm_key: str, layer: str | None) -> GeneMap:
        """Loadings from ``varm["PCs"]`` and the centre of the PCA, read in chunks.

        The centre is recovered as ``mean(X) - mean(obsm) @ PCs.T``: the gene means of the cells the PCA was fitted
        on, also when the AnnData holds a subset of them (where ``mean(X)`` alone would shift every prediction).
        When ``varm["PCs"]`` has more components than ``obsm[obsm_key]`` has columns, the first ones are used.

        Warns when ``varm["PCs"]`` is missing or has too few components (predictions then hold the state
        coordinates instead of genes) or when it does not reproduce ``obsm[obsm_key]`` (another PCA).
        """
        names = np.asarray(adata.var_names.astype(str))
        pcs = adata.varm.get("PCs") if hasattr(adata, "varm") else None
        shape = None if pcs is None else np.asarray(pcs).shape
        if shape is None or shape[0] != adata.n_vars or shape[1] < n_features:
            found = "is missing" if shape is None else f"has shape {shape}"
            warnings.warn(
                f"adata.varm['PCs'] {found}, but mapping the {n_features} columns of adata.obsm[{obsm_key!r}] back to "
                f"the {adata.n_vars} genes needs shape ({adata.n_vars}, >= {n_features}): predictions will hold the "
                f"state coordinates as variables instead of genes. Compute both with sc.pp.pca(adata, "
                f"n_comps={n_features}) to predict genes.",
                ScflowlmWarning,
                stacklevel=4,
            )
            return cls(None, None, names)
        loadings = np.asarray(pcs, dtype=np.float64)[:, :n_features]  # [G, D]
        X = adata.layers[layer] if layer is not None else adata.X
        states = np.asarray(adata.obsm[obsm_key], dtype=np.float64)  # [n, D]
        centre = column_mean(X) - states.mean(0) @ loadings.T  # [G]
        gene_map = cls(loadings.astype(np.float32), centre.astype(np.float32), names)
        error = gene_map.mismatch(adata, obsm_key=obsm_key, layer=layer)
        if error > TOLERANCE:
            warnings.warn(
                f"adata.varm['PCs'] does not reproduce adata.obsm[{obsm_key!r}] (median relative error {error:.2g}): "
                "the loadings seem to belong to another PCA (or another layer than layer=), and generated states "
                "mapped to genes with them would be wrong. Recompute both with sc.pp.pca.",
                ScflowlmWarning,
                stacklevel=4,
            )
        return gene_map

    def to_genes(self, states: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """States ``[n, D]`` -> expression ``[n, G]`` and its ``var`` (``PC1..`` without loadings)."""
        if self.loadings is None:
            return states.astype(np.float32), pd.DataFrame(
                index=[f"PC{i + 1}" for i in range(states.shape[1])]
            )
        # float64 products: the same cells on any BLAS threading, rounded once to float32. In torch, whose threads
        # generation has just used: numpy's BLAS threads would compete with torch's still-spinning ones (4x slower).
        # A few rows at a time through one float64 buffer: the output is the only large memory touched (fresh memory
        # costs a page fault per page, and a float64 copy of the whole output would double it)
        states = torch.as_tensor(np.asarray(states), dtype=torch.float64)  # [n, D]
        loadings = torch.as_tensor(self.loadings, dtype=torch.float64).T  # [D, G]
        means = torch.as_tensor(self.means, dtype=torch.float64)  # [G]
        X = np.empty((len(states), loadings.shape[1]), dtype=np.float32)  # [n, G]
        out = torch.from_numpy(X)
        buffer = torch.empty(
            (min(GENE_MAP_ROWS, len(states)), loadings.shape[1]), dtype=torch.float64
        )  # [r, G]
        for start in range(0, len(states), GENE_MAP_ROWS):
            rows = slice(start, min(start + GENE_MAP_ROWS, len(states)))
            chunk = buffer[: rows.stop - start]
            torch.addmm(means, states[rows], loadings, out=chunk)
            out[rows] = chunk
        return X, pd.DataFrame(index=pd.Index(self.var_names))

    def project(
        self, adata: ad.AnnData, *, layer: str | None, rows: np.ndarray | slice | None = None
    ) -> np.ndarray:
        """Expression of ``adata`` (``X`` or ``layer``) -> states ``[n, D]``."""
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"The AnnData has no layers[{layer!r}], the layer the model was set up with; layers are "
                f"{list(adata.layers)}."
            )
        X = adata.layers[layer] if layer is not None else adata.X
        x = dense_rows(X, slice(0, adata.n_obs) if rows is None else rows)  # [n, G]
        return ((x - self.means) @ self.loadings).astype(np.float32)

    def mismatch(self, adata: ad.AnnData, *, obsm_key: str, layer: str | None) -> float:
        """Median relative error of the projected expression against ``obsm[obsm_key]`` over a few cells."""
        if self.loadings is None or obsm_key not in adata.obsm:
            return 0.0
        rows = np.linspace(0, adata.n_obs - 1, min(N_CHECK, adata.n_obs)).astype(int)
        rows = np.unique(rows)
        given = np.asarray(adata.obsm[obsm_key])[rows]  # [n, D]
        if given.shape[1] != self.loadings.shape[1]:
            return np.inf
        projected = self.project(adata, layer=layer, rows=rows)
        scale = np.linalg.norm(given, axis=1).mean() + 1e-12
        return float(np.median(np.linalg.norm(projected - given, axis=1)) / scale)
