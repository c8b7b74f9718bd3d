"""A small synthetic perturbation data set (the embedded default for demos and tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["synthetic_perturbation"]


def synthetic_perturbation(
    *,
    n_cells_per_condition: int = 60,
    n_genes: int = 100,
    cell_types: Sequence[str] = ("B", "T", "NK"),
    perturbations: Sequence[str] = ("control", "IFNB", "TNF", "IFNB+TNF"),
    n_pcs: int = 16,
    effect_size: float = 1.5,
    seed: int = 0,
) -> ad.AnnData:
    """Make log-expression-like cells for every (cell type, perturbation) pair.

    Cells of a cell type scatter around a type-specific mean along a few latent programs (their *state*).
    A single perturbation shifts a fixed set of 10 genes by ``effect_size`` (the direction and the genes
    depend on the perturbation, the size on the cell type); a combination ``"A+B"`` is the sum of its
    singles, so additive models can answer unseen combinations.

    Parameters
    ----------
    n_cells_per_condition
        Cells per (cell type, perturbation) pair.
    n_genes
        Number of genes.
    cell_types
        Cell type labels.
    perturbations
        Perturbation labels; ``"control"`` is the unperturbed state, ``"+"`` joins combinations.
    n_pcs
        Number of principal components stored in ``obsm["X_pca"]``.
    effect_size
        Size of a single perturbation's shift per affected gene.
    seed
        Seed of the random generator.

    Returns
    -------
    AnnData with ``X`` (dense float32, cells x genes), ``obs["cell_type"]`` and ``obs["condition"]``
    (categorical), ``obsm["X_pca"]``, ``varm["PCs"]`` and ``uns["pca"]`` from :func:`scanpy.pp.pca`.
    """
    rng = np.random.default_rng(seed)
    n_programs = 4
    programs = rng.normal(0.0, 1.0, (n_programs, n_genes))  # [P, G] shared cell-state programs
    singles = sorted({s for p in perturbations if p != "control" for s in p.split("+")})
    effects = {}
    for s in singles:
        genes = rng.choice(n_genes, 10, replace=False)
        eff = np.zeros(n_genes)
        eff[genes] = effect_size * rng.choice([-1.0, 1.0], 10)
        effects[s] = eff
    blocks, obs = [], []
    for ct in cell_types:
        base = rng.normal(2.0, 1.0, n_genes)  # [G] type-specific mean
        gain = rng.uniform(0.6, 1.4)  # type-specific response strength
        for pert in perturbations:
            state = rng.normal(0.0, 0.6, (n_cells_per_condition, n_programs))  # [n, P]
            x = base + state @ programs + rng.normal(0.0, 0.3, (n_cells_per_condition, n_genes))
            if pert != "control":
                x = x + gain * sum(effects[s] for s in pert.split("+"))
            blocks.append(x)
            obs += [(ct, pert)] * n_cells_per_condition
    X = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame(obs, columns=["cell_type", "condition"])
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=list(cell_types))
    obs["condition"] = pd.Categorical(obs["condition"], categories=list(perturbations))
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"gene{i}" for i in range(n_genes)]))
    sc.pp.pca(adata, n_comps=n_pcs, random_state=seed)
    return adata
