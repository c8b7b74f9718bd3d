from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm import tl

KEYS = ["cell_type", "condition"]
G = 40


def _toy(seed: int = 0) -> tuple[ad.AnnData, dict[str, np.ndarray]]:
    """Cell types A, A2 (similar to A) and B (different); planted shifts; a combination in A."""
    rng = np.random.default_rng(seed)
    base_a = rng.normal(size=G) * 2
    base = {"A": base_a, "A2": base_a + rng.normal(scale=0.1, size=G), "B": rng.normal(size=G) * 2}
    d_a, d_b = rng.normal(size=G), rng.normal(size=G)  # IFN response in the A-like / B-like types
    s1, s2 = rng.normal(size=G), rng.normal(size=G)  # single perturbations P and Q
    shift = {
        ("A", "IFN"): d_a,
        ("A2", "IFN"): d_a,
        ("B", "IFN"): d_b,
        ("A", "P"): s1,
        ("A", "Q"): s2,
        ("A", "P+Q"): s1 + s2,
    }
    blocks, obs = [], []
    for ct in base:
        for cond in ["control", "IFN", "P", "Q", "P+Q"]:
            if cond != "control" and (ct, cond) not in shift:
                continue
            n = 40
            blocks.append(base[ct] + shift.get((ct, cond), 0) + rng.normal(scale=0.2, size=(n, G)))
            obs += [(ct, cond)] * n
    x = np.concatenate(blocks)
    obs = pd.DataFrame(obs, columns=KEYS, index=[f"c{i}" for i in range(len(obs))])
    adata = ad.AnnData(x.astype(np.float32), obs=obs)
    adata.var_names = [f"g{i}" for i in range(G)]
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    adata.varm["PCs"] = vt[:10].T
    adata.obsm["X_pca"] = (x - mu) @ vt[:10].T
    return adata, {"d_a": d_a, "d_b": d_b, "s1": s1, "s2": s2, "base": base}


def _mean(a, mask=None):
    x = np.asarray(a.X if mask is None else a.X[mask])
    return x.mean(0)


def _ctrl_mean(adata, ct):
    return _mean(adata, ((adata.obs.cell_type == ct) & (adata.obs.condition == "control")).to_numpy())


KW = {"condition_keys": KEYS, "perturbation_key": "condition", "control_value": "control"}


def test_control_mean_returns_relabelled_controls():
    adata, _ = _toy()
    out = tl.baseline_control_mean(adata, conditions={"cell_type": "A", "condition": "IFN"}, **KW)
    ctrl = (adata.obs.cell_type == "A") & (adata.obs.condition == "control")
    assert out.n_obs == ctrl.sum()
    assert list(out.var_names) == list(adata.var_names)
    assert set(out.obs.condition) == {"IFN"}
    assert set(out.obs.cell_type) == {"A"}
    np.testing.assert_allclose(out.X, adata.X[ctrl.to_numpy()])
    np.testing.assert_array_equal(out.obs.source_cell, adata.obs_names[ctrl.to_numpy()])
    np.testing.assert_allclose(out.obsm["X_source"], adata.obsm["X_pca"][ctrl.to_numpy()])


def test_additive_recovers_planted_shift_and_excludes_own_context():
    adata, truth = _toy()
    held = {"cell_type": "A2", "condition": "IFN"}
    out = tl.baseline_additive(adata, conditions=held, **KW)
    # pooled over the other contexts A and B: mean of their measured shifts
    sa = _mean(
        adata, ((adata.obs.cell_type == "A") & (adata.obs.condition == "IFN")).to_numpy()
    ) - _ctrl_mean(adata, "A")
    sb = _mean(
        adata, ((adata.obs.cell_type == "B") & (adata.obs.condition == "IFN")).to_numpy()
    ) - _ctrl_mean(adata, "B")
    np.testing.assert_allclose(_mean(out) - _ctrl_mean(adata, "A2"), (sa + sb) / 2, atol=1e-4)
    np.testing.assert_allclose((sa + sb) / 2, (truth["d_a"] + truth["d_b"]) / 2, atol=0.15)
    # the PCA coordinates move by the same (projected) shift
    np.testing.assert_allclose(
        out.obsm["X_pca"], (np.asarray(out.X) - adata.X.mean(0)) @ adata.varm["PCs"], atol=1e-3
    )
    assert set(out.obs.source_context) == {"pooled"}


def test_additive_same_shift_everywhere_is_recovered():
    adata, truth = _toy()
    # B and A share no response here; restrict to A-like types where the planted shift is d_a
    sub = adata[adata.obs.cell_type.isin(["A", "A2"]).to_numpy()].copy()
    out = tl.baseline_additive(sub, conditions={"cell_type": "A2", "condition": "IFN"}, **KW)
    np.testing.assert_allclose(_mean(out) - _ctrl_mean(sub, "A2"), truth["d_a"], atol=0.15)


def test_nearest_context_picks_most_similar_context():
    adata, truth = _toy()
    out = tl.baseline_nearest_context(adata, conditions=[{"cell_type": "A2", "condition": "IFN"}], **KW)
    assert set(out.obs.source_context) == {"A"}
    np.testing.assert_allclose(_mean(out) - _ctrl_mean(adata, "A2"), truth["d_a"], atol=0.15)
    out_b = tl.baseline_nearest_context(adata, conditions=[{"cell_type": "B", "condition": "IFN"}], **KW)
    assert set(out_b.obs.source_context) <= {"A", "A2"}


def test_combination_falls_back_to_sum_of_own_singles():
    adata, truth = _toy()
    for fn, source in ((tl.baseline_additive, "own"), (tl.baseline_nearest_context, "P:own;Q:own")):
        out = fn(adata, conditions={"cell_type": "A", "condition": "P+Q"}, **KW)
        assert set(out.obs.condition) == {"P+Q"}
        np.testing.assert_allclose(_mean(out) - _ctrl_mean(adata, "A"), truth["s1"] + truth["s2"], atol=0.2)
        assert out.obs.source_context.iloc[0] == source


def test_mean_shift_averages_the_other_perturbations_of_the_context():
    adata, _ = _toy()
    out = tl.baseline_mean_shift(adata, conditions={"cell_type": "A", "condition": "Z"}, **KW)
    ctrl = _ctrl_mean(adata, "A")
    others = [
        _mean(adata, ((adata.obs.cell_type == "A") & (adata.obs.condition == c)).to_numpy()) - ctrl
        for c in ("IFN", "P", "Q", "P+Q")
    ]
    np.testing.assert_allclose(_mean(out) - ctrl, np.mean(others, axis=0), atol=1e-4)
    # a measured perturbation's own cells are never part of its estimate
    own = tl.baseline_mean_shift(adata, conditions={"cell_type": "A", "condition": "P"}, **KW)
    np.testing.assert_allclose(_mean(own) - ctrl, np.mean([others[i] for i in (0, 2, 3)], axis=0), atol=1e-4)
    assert set(out.obs.baseline) == {"mean_shift"}


def test_no_shift_warns_and_predicts_controls():
    adata, _ = _toy()
    sub = adata[adata.obs.cell_type == "B"].copy()
    with pytest.warns(UserWarning, match="no shift"):
        out = tl.baseline_additive(sub, conditions={"cell_type": "B", "condition": "IFN"}, **KW)
    np.testing.assert_allclose(_mean(out), _ctrl_mean(sub, "B"), atol=1e-5)


def test_real_vs_real_disjoint_halves():
    adata, _ = _toy()
    conds = [{"cell_type": "A", "condition": "IFN"}, {"cell_type": "B", "condition": "IFN"}]
    ref, pred = tl.baseline_real_vs_real(adata, conditions=conds, condition_keys=KEYS, seed=3)
    assert pred.n_obs == 40
    assert ref.n_obs == adata.n_obs - 40
    assert not set(ref.obs_names) & set(pred.obs_names)
    for c in conds:
        m_pred = ((pred.obs.cell_type == c["cell_type"]) & (pred.obs.condition == c["condition"])).sum()
        m_ref = ((ref.obs.cell_type == c["cell_type"]) & (ref.obs.condition == c["condition"])).sum()
        assert m_pred == m_ref == 20
    ref2, pred2 = tl.baseline_real_vs_real(adata, conditions=conds, condition_keys=KEYS, seed=3)
    assert list(pred2.obs_names) == list(pred.obs_names)


KANG = (
    __import__("pathlib").Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "kang2018_muscat_example"
    / "kang2018_muscat_example_sce.h5ad"
)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not KANG.exists(), reason="shared Kang 2018 example data not found beside the repository")
def test_kang_nearest_context_beats_control():
    import scanpy as sc

    adata = sc.read_h5ad(KANG)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    kw = {"condition_keys": KEYS, "perturbation_key": "condition", "control_value": "control"}
    cond = {"cell_type": "CD14+ Monocytes", "condition": "stimulated"}
    held = ((adata.obs.cell_type == cond["cell_type"]) & (adata.obs.condition == "stimulated")).to_numpy()
    train = adata[~held].copy()
    ctrl = tl.baseline_control_mean(train, conditions=cond, obsm_keys=(), **kw)
    near = tl.baseline_nearest_context(train, conditions=cond, obsm_keys=(), **kw)
    assert set(near.obs.source_context) == {"FCGR3A+ Monocytes"}
    r_ctrl = tl.evaluate(adata, ctrl, metrics=["r2", "r2_de"], **kw).iloc[0]
    r_near = tl.evaluate(adata, near, metrics=["r2", "r2_de", "pearson_delta_de"], **kw).iloc[0]
    assert r_near["r2_de"] > r_ctrl["r2_de"] + 0.3
    assert r_near["pearson_delta_de"] > 0.9
