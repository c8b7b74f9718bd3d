from __future__ import annotations

import numpy as np

import scflowlm


def test_synthetic_shapes_and_additive_combination():
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=200, n_genes=30, n_pcs=5, seed=1)
    assert adata.shape == (3 * 4 * 200, 30)
    assert adata.obsm["X_pca"].shape == (2400, 5)
    assert adata.varm["PCs"].shape == (30, 5)

    def mean(ct, cond):
        sel = (adata.obs.cell_type == ct) & (adata.obs.condition == cond)
        return adata.X[sel.to_numpy()].mean(0)

    ctrl = mean("B", "control")
    combo = mean("B", "IFNB+TNF") - ctrl
    additive = (mean("B", "IFNB") - ctrl) + (mean("B", "TNF") - ctrl)
    assert np.corrcoef(combo, additive)[0, 1] > 0.95


def test_synthetic_seed():
    a = scflowlm.data.synthetic_perturbation(seed=3, n_cells_per_condition=5)
    b = scflowlm.data.synthetic_perturbation(seed=3, n_cells_per_condition=5)
    c = scflowlm.data.synthetic_perturbation(seed=4, n_cells_per_condition=5)
    assert np.array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
