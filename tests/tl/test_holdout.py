from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm import tl


def _grid(cell_types, perts, n=5, missing=()):
    rows = [
        (ct, p)
        for ct, p in itertools.product(cell_types, ["control", *perts])
        if (ct, p) not in missing
        for _ in range(n)
    ]
    obs = pd.DataFrame(rows, columns=["cell_type", "condition"], index=[f"c{i}" for i in range(len(rows))])
    return ad.AnnData(np.zeros((len(rows), 2)), obs=obs)


def _check(adata, held):
    combos = set(map(tuple, adata.obs[["cell_type", "condition"]].astype(str).to_numpy()))
    kept = combos - {(h["cell_type"], h["condition"]) for h in held}
    for h in held:
        assert h["condition"] != "control"
        assert (h["cell_type"], h["condition"]) in combos
        assert any(c == h["condition"] for ct, c in kept)  # perturbation still seen in training
        assert any(ct == h["cell_type"] for ct, c in kept)  # cell type still seen in training


def test_holdout_properties():
    adata = _grid(["T", "B", "NK", "Mono"], ["IFN", "TNF", "IL2"])
    held = tl.holdout_combinations(
        adata, keys=["cell_type", "condition"], n_per_group=2, control={"condition": "control"}, seed=0
    )
    assert len(held) == 8
    assert len({tuple(h.values()) for h in held}) == 8
    for ct in ["T", "B", "NK", "Mono"]:
        assert sum(h["cell_type"] == ct for h in held) == 2
    _check(adata, held)
    assert held == tl.holdout_combinations(
        adata, keys=["cell_type", "condition"], n_per_group=2, control={"condition": "control"}, seed=0
    )
    other = tl.holdout_combinations(
        adata, keys=["cell_type", "condition"], n_per_group=2, control={"condition": "control"}, seed=1
    )
    assert other != held


def test_holdout_keeps_every_value_seen():
    # one perturbation: it can be held out in all but one cell type
    adata = _grid(["T", "B", "NK"], ["IFN"])
    with pytest.warns(UserWarning, match="only 0 of 1"):
        held = tl.holdout_combinations(
            adata, keys=["cell_type", "condition"], control={"condition": "control"}
        )
    assert len(held) == 2
    _check(adata, held)


def test_holdout_min_cells_and_missing_combos():
    adata = _grid(["T", "B"], ["IFN", "TNF"], missing=[("B", "TNF")])
    with pytest.warns(UserWarning, match="cell_type='T'"):
        held = tl.holdout_combinations(
            adata, keys=["cell_type", "condition"], control={"condition": "control"}, min_cells=1
        )
    _check(adata, held)
    assert {"cell_type": "B", "condition": "TNF"} not in held
