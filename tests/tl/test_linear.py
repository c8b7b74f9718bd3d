from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm import tl

KW = {
    "condition_keys": ["cell_type", "condition"],
    "perturbation_key": "condition",
    "control_value": "control",
}
G = 30


def _data(response, seed=0, n=30):
    """Cells of (cell type, condition) = base[type] + shift[(type, condition)] + noise."""
    rng = np.random.default_rng(seed)
    blocks, obs = [], []
    for (ct, cond), mean in response.items():
        blocks.append(mean + rng.normal(scale=0.1, size=(n, G)))
        obs += [(ct, cond)] * n
    x = np.concatenate(blocks)
    adata = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame(obs, columns=KW["condition_keys"]))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{i}" for i in range(G)]
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    adata.varm["PCs"] = vt[:8].T
    adata.obsm["X_pca"] = (x - mu) @ vt[:8].T
    return adata


def _change(pred, adata, ct):
    ctrl = ((adata.obs.cell_type == ct) & (adata.obs.condition == "control")).to_numpy()
    return np.asarray(pred.X).mean(0) - np.asarray(adata.X[ctrl]).mean(0)


def test_combination_is_the_sum_of_the_predicted_singles():
    rng = np.random.default_rng(1)
    base, s1, s2 = rng.normal(size=G) * 2, rng.normal(size=G), rng.normal(size=G)
    adata = _data(
        {("A", "control"): base, ("A", "P"): base + s1, ("A", "Q"): base + s2, ("A", "P+Q"): base + s1 + s2}
    )
    held = {"cell_type": "A", "condition": "P+Q"}
    train = adata[~((adata.obs.condition == "P+Q").to_numpy())].copy()
    pred = tl.baseline_linear(train, conditions=held, **KW)
    assert pred.n_obs == 30
    assert set(pred.obs.condition) == {"P+Q"}
    assert set(pred.obs.baseline) == {"linear"}
    assert np.abs(_change(pred, adata, "A") - (s1 + s2)).mean() < 0.1
    # the PCA coordinates move with X
    np.testing.assert_allclose(
        pred.obsm["X_pca"], (np.asarray(pred.X) - adata.X.mean(0)) @ adata.varm["PCs"], atol=1e-3
    )


def test_response_linear_in_the_context_profile_is_extrapolated():
    """The IFN response grows with a context's position along a control-profile axis: the linear model follows
    it to a context beyond the seen ones, where the nearest-context shift copies the nearest response."""
    rng = np.random.default_rng(2)
    axis, d0, d1 = rng.normal(size=G), rng.normal(size=G), rng.normal(size=G)
    response = {}
    for a, ct in enumerate("ABCDE"):
        base = 3.0 + a * axis
        response[(ct, "control")] = base
        response[(ct, "IFN")] = base + d0 + a * d1
    adata = _data(response)
    held = {"cell_type": "E", "condition": "IFN"}
    train = adata[~((adata.obs.cell_type == "E") & (adata.obs.condition == "IFN")).to_numpy()].copy()
    truth = d0 + 4 * d1
    err_lin = np.abs(_change(tl.baseline_linear(train, conditions=held, **KW), adata, "E") - truth).mean()
    err_near = np.abs(
        _change(tl.baseline_nearest_context(train, conditions=held, **KW), adata, "E") - truth
    ).mean()
    assert err_lin < 0.35  # ridge shrinkage and the column-centred gene PCA of the paper cost a little
    assert err_near > 2 * err_lin


def test_needs_controls_and_condition_keys():
    adata = _data({("A", "control"): np.zeros(G), ("A", "P"): np.ones(G)})
    with pytest.raises(ValueError, match="perturbation_key"):
        tl.baseline_linear(
            adata,
            conditions={"cell_type": "A", "condition": "P"},
            condition_keys=["cell_type"],
            perturbation_key="condition",
            control_value="control",
        )
    with pytest.raises(ValueError, match="no control cells"):
        tl.baseline_linear(adata, conditions={"cell_type": "B", "condition": "P"}, **KW)


def test_gene_vectors_reach_a_perturbation_never_measured():
    """Effects linear in a gene vector: the vectors predict an unseen single; without them only the mean change."""
    rng = np.random.default_rng(2)
    base, M = rng.normal(size=G) * 2, rng.normal(size=(G, 3))
    names = [f"S{i}" for i in range(12)] + ["Z"]
    vectors = pd.DataFrame(rng.normal(size=(13, 3)), index=names)
    response = {("A", "control"): base} | {("A", s): base + M @ vectors.loc[s].to_numpy() for s in names}
    adata = _data(response, n=20)
    train = adata[(adata.obs.condition != "Z").to_numpy()].copy()
    held = {"cell_type": "A", "condition": "Z"}
    truth = M @ vectors.loc["Z"].to_numpy()
    with_vectors = tl.baseline_linear(train, conditions=held, perturbation_embeddings=vectors, **KW)
    without = tl.baseline_linear(train, conditions=held, **KW)
    r_with = np.corrcoef(_change(with_vectors, adata, "A"), truth)[0, 1]
    r_without = np.corrcoef(_change(without, adata, "A"), truth)[0, 1]
    assert r_with > 0.95
    assert r_without < 0.8


def test_gene_vectors_are_checked_and_read_from_uns_as_setup_takes_them():
    """Bug 5: NaN vectors gave NaN cells silently; an uns key gave pandas' 'DataFrame constructor not called'."""
    rng = np.random.default_rng(0)
    names = ["P", "Q", "R"]
    vectors = pd.DataFrame(rng.normal(size=(3, 2)), index=names)
    response = {("A", "control"): np.zeros(G)} | {("A", s): rng.normal(size=G) for s in names}
    adata = _data(response, n=10)
    held = {"cell_type": "A", "condition": "R"}
    adata.uns["gv"] = vectors
    by_key = tl.baseline_linear(adata, conditions=held, perturbation_embeddings="gv", **KW)
    by_table = tl.baseline_linear(adata, conditions=held, perturbation_embeddings=vectors, **KW)
    np.testing.assert_array_equal(by_key.X, by_table.X)
    bad = vectors.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"finite numbers; the vectors of \['P'\]"):
        tl.baseline_linear(adata, conditions=held, perturbation_embeddings=bad, **KW)
    with pytest.raises(KeyError, match="'nowhere' is not a key of adata.uns"):
        tl.baseline_linear(adata, conditions=held, perturbation_embeddings="nowhere", **KW)
