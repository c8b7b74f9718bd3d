from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import HOLDOUT
from scipy import stats

import scflowlm
from scflowlm import tl

KEYS = ["cell_type", "condition"]
KW = {"condition_keys": KEYS, "perturbation_key": "condition", "control_value": "control"}


@pytest.fixture(scope="module")
def toy():
    """3 cell types x (control, stim), log-like expression with a planted response on 15 of 60 genes."""
    rng = np.random.default_rng(0)
    g = 60
    blocks, obs = [], []
    common = np.zeros(g)
    common[:15] = rng.normal(scale=1.5, size=15)
    for ct in ["A", "B", "C"]:
        base = rng.gamma(2.0, size=g)
        resp = common + rng.normal(scale=0.2, size=g) * (common != 0)
        for cond in ["control", "stim"]:
            n = 80
            mu = base + (resp if cond == "stim" else 0)
            blocks.append(mu + rng.normal(scale=0.4, size=(n, g)))
            obs += [(ct, cond)] * n
    x = np.concatenate(blocks).astype(np.float32)
    adata = ad.AnnData(x, obs=pd.DataFrame(obs, columns=KEYS, index=[f"c{i}" for i in range(len(obs))]))
    adata.var_names = [f"g{i}" for i in range(g)]
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    adata.varm["PCs"] = vt[:10].T.astype(np.float64)
    adata.obsm["X_pca"] = (x - mu) @ vt[:10].T
    return adata


def test_evaluate_table_and_storage(toy):
    conds = [{"cell_type": ct, "condition": "stim"} for ct in ["A", "B"]]
    # one call per condition: a baseline never reads the cells of the conditions it predicts, so each is estimated
    # from the other types, as evaluate's additive reference of that condition is
    preds = [tl.baseline_additive(toy, conditions=[c], **KW) for c in conds]
    pred = ad.concat(preds, uns_merge="same")
    df = tl.evaluate(toy, pred, space="pca", **KW)
    assert list(df[["cell_type", "condition"]].itertuples(index=False, name=None)) == [
        ("A", "stim"),
        ("B", "stim"),
    ]
    assert set(tl.METRICS) <= set(df.columns)
    assert pred.uns["scflowlm_evaluate"] is df
    assert (df.n_real == 80).all()
    scores = [m for m in tl.METRICS if not m.startswith("pearson_interaction")]
    assert df[scores].notna().all().all()
    # the prediction is the additive baseline, the interaction score's reference: it says nothing beyond it
    assert df[[m for m in tl.METRICS if m.startswith("pearson_interaction")]].isna().all().all()
    # the correlation columns equal the direct computation with scipy
    real_a = np.asarray(toy.X[((toy.obs.cell_type == "A") & (toy.obs.condition == "stim")).to_numpy()]).mean(
        0
    )
    ctrl_a = np.asarray(
        toy.X[((toy.obs.cell_type == "A") & (toy.obs.condition == "control")).to_numpy()]
    ).mean(0)
    pred_a = np.asarray(pred.X[(pred.obs.cell_type == "A").to_numpy()]).mean(0)
    assert df.loc[0, "pearson"] == pytest.approx(stats.pearsonr(real_a, pred_a)[0], rel=1e-6)
    assert df.loc[0, "pearson_delta"] == pytest.approx(
        stats.pearsonr(real_a - ctrl_a, pred_a - ctrl_a)[0], rel=1e-6
    )
    assert df.loc[0, "r2"] == pytest.approx(df.loc[0, "pearson"] ** 2)


def test_evaluate_ranks_baselines(toy):
    cond = {"cell_type": "C", "condition": "stim"}
    train = toy[~((toy.obs.cell_type == "C") & (toy.obs.condition == "stim")).to_numpy()].copy()
    ctrl = tl.baseline_control_mean(train, conditions=cond, **KW)
    add = tl.baseline_additive(train, conditions=cond, **KW)
    ref, half = tl.baseline_real_vs_real(toy, conditions=cond, condition_keys=KEYS, seed=0)
    # every predictor is scored against the same reference half, at the same number of cells (40): W2 and MMD
    # depend on the sample size, so a half-split floor is only comparable at equal n
    kw = {
        "space": "pca",
        "metrics": ["r2_de", "pearson_delta", "mmd", "wasserstein", "edistance"],
        "max_cells": 40,
    }
    d_ctrl = tl.evaluate(ref, ctrl, **kw, **KW).iloc[0]
    d_add = tl.evaluate(ref, add, **kw, **KW).iloc[0]
    d_rvr = tl.evaluate(ref, half, **kw, **KW).iloc[0]
    assert d_rvr["r2_de"] > 0.9
    assert d_add["pearson_delta"] > 0.9
    for m in ["mmd", "wasserstein", "edistance"]:
        assert d_rvr[m] < d_add[m] < d_ctrl[m], m


def test_metric_selection_groups_and_errors(toy):
    pred = tl.baseline_control_mean(toy, conditions={"cell_type": "A", "condition": "stim"}, **KW)
    df = tl.evaluate(toy, pred, metrics=["correlation", "edistance"], key_added=None, **KW)
    assert [c for c in df.columns if c in tl.METRICS] == [*tl.METRIC_GROUPS["correlation"], "edistance"]
    assert "scflowlm_evaluate" not in pred.uns
    assert np.isnan(df.loc[0, "pearson_delta"])  # no change predicted: undefined
    with pytest.raises(ValueError, match="unknown metric"):
        tl.evaluate(toy, pred, metrics=["nope"], **KW)
    with pytest.raises(ValueError, match="perturbation_key"):
        tl.evaluate(
            toy, pred, condition_keys=["cell_type"], perturbation_key="condition", control_value="control"
        )


def test_pred_projected_with_real_pcs(toy):
    # prediction without obsm: X is projected into the real PCA; real cells themselves land on their X_pca
    m = ((toy.obs.cell_type == "B") & (toy.obs.condition == "stim")).to_numpy()
    pred = ad.AnnData(np.asarray(toy.X[m]), obs=toy.obs[m].copy())
    pred.var_names = toy.var_names
    from scflowlm._utils import pca_coords

    _, p = pca_coords(toy, pred)
    np.testing.assert_allclose(p, toy.obsm["X_pca"][m], atol=1e-4)
    df = tl.evaluate(toy, pred, space="pca", metrics=["edistance", "r2"], **KW)
    assert df.loc[0, "edistance"] == pytest.approx(0.0, abs=1e-6)
    assert df.loc[0, "r2"] == pytest.approx(1.0)


def test_subsampling_is_seeded(toy):
    pred = tl.baseline_additive(toy, conditions={"cell_type": "A", "condition": "stim"}, **KW)
    kw = {"space": "pca", "metrics": ["wasserstein"], "max_cells": 30, "key_added": None, **KW}
    a = tl.evaluate(toy, pred, seed=1, **kw).loc[0, "wasserstein"]
    b = tl.evaluate(toy, pred, seed=1, **kw).loc[0, "wasserstein"]
    c = tl.evaluate(toy, pred, seed=2, **kw).loc[0, "wasserstein"]
    assert a == b
    assert a != c


def test_umap_space_and_leiden(toy):
    cond = {"cell_type": "A", "condition": "stim"}
    ref, half = tl.baseline_real_vs_real(toy, conditions=cond, condition_keys=KEYS, seed=0)
    ctrl = tl.baseline_control_mean(toy, conditions=cond, **KW)
    clf = scflowlm.metrics.fit_leiden_classifier(ref.obsm["X_pca"], seed=0)
    metrics = ["mmd", "leiden_kl", "inception_score"]
    good = tl.evaluate(ref, half, metrics=metrics, leiden_classifier=clf, **KW).iloc[0]
    bad = tl.evaluate(ref, ctrl, metrics=metrics, leiden_classifier=clf, **KW).iloc[0]
    assert good["leiden_kl"] < 0.1 < bad["leiden_kl"]
    assert good["mmd"] < bad["mmd"]
    assert good["inception_score"] >= 1.0


def test_evaluate_reads_the_keys_a_prediction_records(trained):
    """tl.evaluate(adata, pred): keys and the states' obsm key come from pred.uns["scflowlm"]."""
    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=20, seed=0)
    explicit = tl.evaluate(adata, pred, metrics=["r2", "mmd"], space="pca", key_added=None, **KW)
    recorded = tl.evaluate(adata, pred, metrics=["r2", "mmd"], space="pca", key_added=None)
    pd.testing.assert_frame_equal(explicit, recorded)
    baseline = tl.baseline_nearest_context(adata, conditions=[HOLDOUT])  # keys from setup_anndata's record
    assert tl.evaluate(adata, baseline, metrics=["r2"], key_added=None)["r2"].iloc[0] > 0.5


def test_evaluate_uses_the_prediction_states_under_another_obsm_key(trained):
    """Before, evaluate read obsm["X_pca"] while a prediction stored its states under the model's obsm_key."""
    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=20, seed=0)
    moved = pred.copy()
    moved.obsm["X_states"] = moved.obsm.pop("X_pca") + 100.0  # far away: a fall-back to X would not notice
    moved.uns["scflowlm"] = dict(moved.uns["scflowlm"], obsm_key="X_states")
    real = adata.copy()
    real.obsm["X_states"] = real.obsm["X_pca"]
    near = tl.evaluate(real, pred, metrics=["edistance"], space="pca", key_added=None)["edistance"].iloc[0]
    far = tl.evaluate(real, moved, metrics=["edistance"], space="pca", key_added=None)["edistance"].iloc[0]
    assert far > near + 1000.0
    bare_real = ad.AnnData(real.X, obs=real.obs, var=real.var)
    bare_pred = ad.AnnData(pred.X, obs=pred.obs, var=pred.var)
    with pytest.raises(ValueError, match="condition_keys, perturbation_key and control_value are needed"):
        tl.evaluate(bare_real, bare_pred, metrics=["r2"], key_added=None)


def test_evaluate_reads_the_combination_separator_of_the_prediction():
    """Bug 7: the separator was read from the real data's record only: NaN interaction scores without a word."""
    adata = scflowlm.data.synthetic_perturbation(
        n_cells_per_condition=20,
        n_genes=30,
        n_pcs=6,
        seed=0,
        cell_types=("NK",),  # one context: only the singles A and B estimate the pair
        perturbations=("control", "A", "B", "A;B"),
    )
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition}:",
        perturbation_key="condition",
        control_value="control",
        combination_sep=";",
    )
    pair = {"cell_type": "NK", "condition": "A;B"}
    pred = tl.baseline_mean_shift(adata, conditions=[pair])
    real = ad.AnnData(adata.X, obs=adata.obs[["cell_type", "condition"]].copy(), var=adata.var[[]].copy())
    real.obsm["X_pca"] = adata.obsm["X_pca"]
    scores = tl.evaluate(real, pred, metrics=["pearson_interaction"], space="pca", key_added=None)
    assert np.isfinite(scores["pearson_interaction"]).all()


def _screen(n=60, g=40, seed=0):
    """A CRISPRa-like screen: perturbation 'gK' raises gene gK by 4 and moves genes 20-29 by its own effect."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, size=g)
    effects = {"g1": np.zeros(g), "g2": np.zeros(g), "g3": np.zeros(g)}
    effects["g1"][20:30] = 1.0
    effects["g2"][20:30] = -1.0
    effects["g3"][25:35] = 0.02  # no signal at this number of cells
    blocks, obs = [base + rng.normal(scale=0.5, size=(n, g))], [("k562", "control")] * n
    for p, effect in effects.items():
        x = base + effect + rng.normal(scale=0.5, size=(n, g))
        x[:, int(p[1:])] += 4.0 * (p != "g3")
        blocks.append(x)
        obs += [("k562", p)] * n
    x = np.concatenate(blocks).astype(np.float32)
    adata = ad.AnnData(x, obs=pd.DataFrame(obs, columns=KEYS, index=[f"c{i}" for i in range(len(obs))]))
    adata.var_names = [f"g{i}" for i in range(g)]
    return adata


def _shifted(adata, condition, change):
    """The context's control cells moved by ``change``, labelled as ``condition``."""
    ctrl = (adata.obs["condition"] == "control").to_numpy()
    pred = ad.AnnData(
        adata.X[ctrl] + change,
        obs=pd.DataFrame(
            {"cell_type": "k562", "condition": condition},
            index=[f"p{condition}{i}" for i in range(ctrl.sum())],
        ),
    )
    pred.var_names = adata.var_names
    return pred


def test_perturbed_genes_are_left_out_where_perturbations_are_genes():
    """A prediction right on every gene but the trivially moved target: excluded, its change r is near 1."""
    adata = _screen()
    change = np.zeros(adata.n_vars)
    change[20:30] = 1.0  # g1's effect, without the +4 on g1 itself
    pred = _shifted(adata, "g1", change)
    metrics = ["pearson_delta", "mse"]
    auto = tl.evaluate(adata, pred, metrics=metrics, key_added=None, **KW).iloc[0]
    kept = tl.evaluate(adata, pred, metrics=metrics, key_added=None, exclude_perturbed=False, **KW).iloc[0]
    assert auto["n_excluded"] == 1
    assert kept["n_excluded"] == 0
    assert auto["pearson_delta"] > 0.9 > kept["pearson_delta"]
    assert auto["mse"] < kept["mse"]


def test_discrimination_de_overlap_and_signal_in_evaluate():
    adata = _screen()
    right = np.zeros(adata.n_vars)
    right[20:30] = 1.0
    collapsed = np.zeros(adata.n_vars)  # the same (no) change for every perturbation
    good = ad.concat([_shifted(adata, "g1", right), _shifted(adata, "g2", -right)])
    same = ad.concat([_shifted(adata, "g1", collapsed), _shifted(adata, "g2", collapsed)])
    wanted = ["discrimination", "de_overlap", "signal_ratio"]
    g = tl.evaluate(adata, good, metrics=wanted, key_added=None, **KW).set_index("condition")
    c = tl.evaluate(adata, same, metrics=wanted, key_added=None, **KW).set_index("condition")
    assert (g["discrimination"] == 0.0).all()
    assert (c["discrimination"] >= 0.5).all()
    assert g.loc["g1", "de_overlap"] > 0.8
    assert g.loc["g1", "n_de_real"] >= 10
    assert c.loc["g1", "n_de_pred"] == 0
    assert c.loc["g1", "de_overlap"] == 0.0
    assert g["has_signal"].all()
    signal = tl.condition_signal(adata, **KW).set_index("condition")
    assert signal.loc["g1", "has_signal"]
    assert not signal.loc["g3", "has_signal"]
    assert signal.loc["g3", "signal_ratio"] < 2 < signal.loc["g2", "signal_ratio"]
