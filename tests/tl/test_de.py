from __future__ import annotations

import anndata as ad
import numpy as np

from scflowlm import tl


def test_top_de_genes_finds_planted_genes():
    rng = np.random.default_rng(2)
    x = rng.normal(loc=2.0, scale=0.3, size=(120, 200))
    up, down = np.arange(10), np.arange(10, 15)
    x[:60, up] += 2.0
    x[:60, down] -= 1.5
    adata = ad.AnnData(x)
    target = np.zeros(120, dtype=bool)
    target[:60] = True
    top = tl.top_de_genes(adata, target=target, reference=~target, n_genes=15)
    assert set(top) == set(up) | set(down)
    top_up = tl.top_de_genes(adata, target=target, reference=~target, n_genes=10, rank_by="score")
    assert set(top_up) == set(up)
    assert "rank_genes_groups" not in adata.uns
