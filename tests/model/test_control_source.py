from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from helpers import quiet_train, setup, small_model

import scflowlm


def shifted_cells(n=80, d=6, shift=3.0, seed=0):
    """Two contexts; 'drug' moves cells by `shift` along dim 0 only; each cell's own position elsewhere is random."""
    rng = np.random.default_rng(seed)
    rows, obs = [], []
    for ctx, offset in (("A", 0.0), ("B", 2.0)):
        for pert in ("control", "drug"):
            x = rng.normal(0.0, 1.0, (n, d)) + offset
            if pert == "drug":
                x[:, 0] += shift
            rows.append(x)
            obs += [(ctx, pert)] * n
    X = np.vstack(rows).astype(np.float32)
    obs = pd.DataFrame(obs, columns=["cell_type", "condition"], index=[f"c{i}" for i in range(len(X))])
    adata = ad.AnnData(X=X, obs=obs)
    adata.obsm["X_pca"] = X - X.mean(0)  # a centred PCA with identity loadings: X maps back exactly
    adata.varm["PCs"] = np.eye(d, dtype=np.float32)
    return adata


def test_one_prediction_per_source_cell_in_order(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "B")].copy()
    pred = model.predict_perturbation({"condition": "IFNB"}, source=ctrl, seed=0)
    assert pred.n_obs == ctrl.n_obs
    assert list(pred.obs_names) == [f"{n}-pred" for n in ctrl.obs_names]
    assert (pred.obs["condition"] == "IFNB").all()
    assert (pred.obs["cell_type"] == "B").all()
    np.testing.assert_allclose(pred.obsm["X_source"], ctrl.obsm["X_pca"], rtol=1e-5, atol=1e-5)
    assert pred.obs["prompt"].iloc[0] == "Generate a B cell stimulated with IFNB:"
    # same seed, same cells; a boolean mask of the registered data is the same source
    mask = ((adata.obs.condition == "control") & (adata.obs.cell_type == "B")).to_numpy()
    again = model.predict_perturbation({"condition": "IFNB"}, source=mask, seed=0)
    np.testing.assert_allclose(pred.X, again.X, atol=1e-5)
    # source=None draws n_cells registered controls of the condition's context
    auto = model.predict_perturbation({"cell_type": "T", "condition": "TNF"}, n_cells=7, seed=0)
    assert auto.n_obs == 7
    t_ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "T")]
    assert {n.removesuffix("-pred") for n in auto.obs_names} <= set(t_ctrl.obs_names)
    many = model.predict_perturbation(
        {"cell_type": "T", "condition": "TNF"}, n_cells=t_ctrl.n_obs + 5, seed=0
    )
    assert many.n_obs == t_ctrl.n_obs + 5  # more cells than controls: drawn with replacement
    assert (many.obs["cell_type"] == "T").all()
    sampled = model.sample(12, seed=0)  # population sampling starts from registered controls of each context
    assert sampled.n_obs == 12
    assert "X_source" in sampled.obsm


def test_auto_source_follows_registered_controls(adata):
    setup(adata)
    assert small_model(adata, source="auto").module.source == "control"
    plain = scflowlm.data.synthetic_perturbation(n_cells_per_condition=10, n_genes=20, n_pcs=4)
    scflowlm.CaLMFlowModel.setup_anndata(
        plain, prompt_template="Generate a {cell_type} cell with {condition}:"
    )
    assert small_model(plain, source="auto").module.source == "noise"
    with pytest.raises(ValueError, match="needs control cells"):
        small_model(plain, source="control")


def test_unseen_context_asks_for_source(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    with pytest.raises(
        ValueError,
        match=r"no registered control cells for the context \{'cell_type': 'Plasma'\}.*pass source=",
    ):
        model.predict_perturbation({"cell_type": "Plasma", "condition": "IFNB"})


def test_source_with_other_genes_is_rejected(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    other = adata[:10, :20].copy()
    with pytest.raises(ValueError, match="genes differ"):
        model.predict_perturbation({"condition": "IFNB"}, source=other)
    # same genes but no obsm: projected with the stored loadings
    same = adata[adata.obs.condition == "control"][:10].copy()
    del same.obsm["X_pca"]
    pred = model.predict_perturbation({"condition": "IFNB"}, source=same, seed=0)
    np.testing.assert_allclose(pred.obsm["X_source"], adata[same.obs_names].obsm["X_pca"], atol=1e-3)


def test_noise_model_rejects_source(trained):
    model, adata = trained
    with pytest.raises(ValueError, match="source='control'"):
        model.predict_perturbation({"cell_type": "B", "condition": "IFNB"}, source=adata[:5].copy())


@pytest.mark.slow
def test_control_source_keeps_cell_identity_noise_source_does_not():
    """Known shift on dim 0: both sources recover it; only the control source keeps each cell's other dims."""
    adata = shifted_cells()
    kw = {
        "prompt_template": "Generate a {cell_type} cell with {condition}:",
        "perturbation_key": "condition",
        "control_value": "control",
    }
    held = {"cell_type": "B", "condition": "drug"}
    results = {}
    for source in ("control", "noise"):
        scvi.settings.seed = 0
        data = adata.copy()
        scflowlm.CaLMFlowModel.setup_anndata(data, **kw)
        model = quiet_train(small_model(data, source=source, n_time_points=4), max_epochs=120, lr=3e-3)
        ctrl = data[(data.obs.condition == "control") & (data.obs.cell_type == "A")].copy()
        pred = (
            model.predict_perturbation({"cell_type": "A", "condition": "drug"}, source=ctrl, seed=0)
            if source == "control"
            else model.predict_perturbation(
                {"cell_type": "A", "condition": "drug"}, n_cells=ctrl.n_obs, seed=0
            )
        )
        shift = pred.obsm["X_pca"].mean(0) - ctrl.obsm["X_pca"].mean(0)
        identity = scflowlm.metrics.paired_identity(
            ctrl.obsm["X_pca"], pred.obsm["X_pca"], mode="dims", fraction=0.8
        )
        results[source] = (shift, identity.summary["mean_corr"])
    for source, (shift, _) in results.items():
        assert abs(shift[0] - 3.0) < 1.0, (source, shift)
        assert np.abs(shift[1:]).max() < 0.8, (source, shift)
    assert results["control"][1] > 0.8
    assert abs(results["noise"][1]) < 0.3
    del held


def test_duplicate_obs_names_and_integer_positions(adata):
    """Bug 6: duplicate obs_names (AnnData allows them) crashed a control-source prediction deep in pandas."""
    adata.obs_names = [f"c{i % 50}" for i in range(adata.n_obs)]
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    ctrl = ((adata.obs.condition == "control") & (adata.obs.cell_type == "B")).to_numpy()
    by_mask = model.predict_perturbation({"condition": "IFNB"}, source=ctrl, seed=0)
    assert by_mask.obs_names.is_unique
    assert by_mask.n_obs == ctrl.sum()
    by_position = model.predict_perturbation({"condition": "IFNB"}, source=np.nonzero(ctrl)[0], seed=0)
    np.testing.assert_array_equal(by_position.X, by_mask.X)
    drawn = model.predict_perturbation({"cell_type": "T", "condition": "TNF"}, n_cells=60, seed=0)
    assert drawn.obs_names.is_unique
    assert drawn.n_obs == 60
    with pytest.raises(ValueError, match="duplicate obs_names, so names cannot select source cells"):
        model.predict_perturbation({"condition": "IFNB"}, source=["c1", "c2"])
    with pytest.raises(IndexError, match=r"source positions must be in \[0, 288\)"):
        model.predict_perturbation({"condition": "IFNB"}, source=np.array([0, 1, 999]))


@pytest.mark.parametrize("column", ["prompt", "seen_in_training"])
def test_source_columns_the_prediction_writes_are_refused(adata, column):
    """Bug 11: a source obs column named like a prediction column was overwritten silently."""
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "B")].copy()
    ctrl.obs[column] = "mine"
    with pytest.raises(
        ValueError, match=rf"obs has column\(s\) \['{column}'\], which the prediction writes itself"
    ):
        model.predict_perturbation({"condition": "IFNB"}, source=ctrl)


def test_layer_model_needs_that_layer_in_a_source(adata):
    adata.layers["logcounts"] = adata.X.copy()
    setup(adata, layer="logcounts")
    model = quiet_train(small_model(adata, source="control"))
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "B")].copy()
    del ctrl.layers["logcounts"]
    del ctrl.obsm["X_pca"]
    with pytest.raises(KeyError, match=r"no layers\['logcounts'\], the layer the model was set up with"):
        model.predict_perturbation({"condition": "IFNB"}, source=ctrl)


def test_many_conditions_from_the_same_source_cells(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "B")].copy()
    both = model.predict_perturbation([{"condition": "IFNB"}, {"condition": "TNF"}], source=ctrl, seed=0)
    assert both.n_obs == 2 * ctrl.n_obs
    assert both.obs_names.is_unique
    alone = model.predict_perturbation({"condition": "TNF"}, source=ctrl, seed=0)
    np.testing.assert_allclose(both.X[ctrl.n_obs :], alone.X, atol=1e-5)


# ---------------------------------------------------------------- typed values, and sources that cannot work


def _dose_model(adata, dtype):
    adata.obs["dose"] = np.where(adata.obs["condition"] == "control", 0, 1).astype(dtype)
    setup(
        adata,
        prompt_template="A {cell_type} cell at dose {dose}:",
        control_template=None,
        perturbation_key="dose",
        control_value=0,
    )
    return quiet_train(small_model(adata, source="control"))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
@pytest.mark.parametrize("value", [1, 1.0, "1"])
def test_one_equality_rule_in_the_model_and_the_tools(adata, dtype, value):
    """Bug 3: an int dose given as 1.0 was written untyped, and tl.evaluate found no real cells (0 rows).

    The held-out split, the prediction's obs and tl.evaluate find the same cells for 1, 1.0 and "1".
    """
    condition = {"cell_type": "B", "dose": value}
    model = _dose_model(adata, dtype)
    quiet_train(model, holdout=condition)
    real = set(adata.obs_names[(adata.obs["cell_type"] == "B") & (adata.obs["dose"] == 1)])
    assert len(real) == 72
    assert set(adata.obs_names[model.test_indices]) == real
    pred = model.predict_perturbation(condition, n_cells=6, seed=0)
    assert pred.obs["dose"].cat.categories.dtype.kind == np.dtype(dtype).kind  # written as registered
    assert pred.obs["dose"].iloc[0] == 1
    table = scflowlm.tl.evaluate(adata, pred, metrics=["r2"], conditions=[condition])
    assert table["n_real"].tolist() == [72]
    assert scflowlm.tl.evaluate(adata, pred, metrics=["r2"])["n_real"].tolist() == [72]


def test_sources_that_cannot_work_name_the_fix(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    ctrl = adata[adata.obs["condition"] == "control"].copy()
    with pytest.raises(ValueError, match="The source AnnData has no cells"):  # bug 5
        model.predict_perturbation({"condition": "TNF"}, source=ctrl[:0].copy(), seed=0)
    ctrl.obs.index = pd.RangeIndex(ctrl.n_obs)
    with pytest.raises(ValueError, match=r"obs index holds integer labels .*source.obs_names.astype\(str\)"):
        model.predict_perturbation({"condition": "TNF"}, source=ctrl, seed=0)
    with pytest.raises(ValueError, match=r"about \d+ GB, more than this machine's"):  # before numpy fails
        model.predict_perturbation({"cell_type": "B", "condition": "TNF"}, n_cells=10**10, seed=0)
