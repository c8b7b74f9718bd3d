"""setup_anndata: what it checks, what it writes, and registrations that must not change a model's conditions."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import CONTROL_TEMPLATE, HOLDOUT, TEMPLATE, quiet_train, setup, small_model

import scflowlm
from scflowlm import CaLMFlowModel, ScflowlmWarning
from scflowlm.model import CFMModel


def data(**kwargs):
    """96 cells x 20 genes, 4 PCs: 12 conditions of 8 cells."""
    return scflowlm.data.synthetic_perturbation(
        **({"n_cells_per_condition": 8, "n_genes": 20, "n_pcs": 4} | kwargs)
    )


# ---------------------------------------------------------------- inputs refused with their cause


def test_names_missing_field(adata):
    with pytest.raises(KeyError, match=r"\['cell_kind'\] are not obs columns"):
        CaLMFlowModel.setup_anndata(adata, prompt_template="Generate a {cell_kind} cell:")


def test_missing_pca_says_how_to_make_it(adata):
    del adata.obsm["X_pca"]
    with pytest.raises(KeyError, match=r"sc\.pp\.pca"):
        setup(adata)


def test_missing_obsm_key():
    with pytest.raises(KeyError, match=r"adata.obsm\['X_umap'\] is missing"):
        setup(data(), obsm_key="X_umap")


def test_empty_anndata():
    with pytest.raises(ValueError, match="The AnnData has no cells"):
        setup(data()[:0].copy())


def test_nan_obs_value(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("cell_type")] = np.nan
    with pytest.raises(ValueError, match=r"obs\['cell_type'\] has 1 missing"):
        setup(adata)


def test_non_finite_states():
    adata = data()
    adata.obsm["X_pca"][[4, 9], 1] = np.nan
    with pytest.raises(ValueError, match=r"adata.obsm\['X_pca'\] has NaN or infinite values in 2 cells"):
        setup(adata)


@pytest.mark.parametrize("where", ["dense X", "sparse X", "layer"])
def test_non_finite_expression(where):
    adata = data()
    X = adata.X.copy()
    X[7, 3], X[40, 0] = np.nan, np.inf
    if where == "sparse X":
        adata.X = sp.csr_matrix(X)
    elif where == "layer":
        adata.layers["logcounts"] = X
    else:
        adata.X = X
    name = r"adata.layers\['logcounts'\]" if where == "layer" else "adata.X"
    with pytest.raises(ValueError, match=name + r" has NaN or infinite values in 2 cells \(first: row 7\)"):
        setup(adata, layer="logcounts" if where == "layer" else None)


def test_missing_layer():
    adata = data()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(KeyError, match=r"adata.layers\['logcounts'\] is missing; layers are \['counts'\]"):
        setup(adata, layer="logcounts")


@pytest.mark.parametrize(
    "template", ["Generate a {cell_type cell:", "Generate a cell_type} cell {condition}:"]
)
def test_unbalanced_brace_names_the_template(template):
    with pytest.raises(ValueError, match=r"is not valid .*name obs columns in braces"):
        setup(data(), prompt_template=template)


@pytest.mark.parametrize("reserved", ["prompt", "seen_in_training"])
def test_template_field_with_a_name_predictions_write(reserved):
    """Bug 11: a field named like a prediction column would be overwritten in the prediction."""
    adata = data()
    adata.obs[reserved] = adata.obs["condition"]
    with pytest.raises(ValueError, match=rf"\['{reserved}'\] have names that predictions write"):
        setup(
            adata,
            prompt_template=f"Generate a {{cell_type}} cell with {{{reserved}}}:",
            control_template=None,
            perturbation_key=None,
            control_value=None,
        )


# ---------------------------------------------------------------- warnings for what would silently mislead


def test_perturbation_missing_from_template_warns():
    """Bug 3: without the perturbation in the template, 12 conditions would share 3 prompts silently."""
    with pytest.warns(
        ScflowlmWarning, match=r"get the same prompt .*12 conditions, 3 distinct prompts.*\{condition\}"
    ):
        setup(data(), prompt_template="Generate a {cell_type} cell:", control_template=None)


def test_missing_controls_warn():
    with pytest.warns(ScflowlmWarning, match="there are no control cells"):
        setup(data(), control_value="untreated", control_template=None)


# ---------------------------------------------------------------- what is written, and typed values


def test_writes_only_registration_entries(adata):
    before, X = set(adata.obs.columns), adata.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)
        setup(adata)
    assert set(adata.obs.columns) == before  # codes live in obsm, not obs
    assert {"_scvi_condition", "_scvi_context"} <= set(adata.obsm)
    assert adata.uns["scflowlm"]["condition_keys"] == ["cell_type", "condition"]
    assert adata.uns["scflowlm"]["control_value"] == "control"
    assert np.array_equal(adata.X, X)


def test_numeric_perturbation_is_compared_as_numbers():
    """Bug 4: a float dose column with control_value=0 finds its controls; {"dose": 1} is seen."""
    adata = data()
    adata.obs["dose"] = (
        adata.obs["condition"]
        .map({"control": 0.0, "IFNB": 1.0, "TNF": 10.0, "IFNB+TNF": 100.0})
        .astype(float)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)
        CaLMFlowModel.setup_anndata(
            adata,
            prompt_template="Generate a {cell_type} cell at dose {dose}:",
            perturbation_key="dose",
            control_value=0,
        )
        model = quiet_train(small_model(adata, source="auto"))
    assert model.module.source == "control"  # controls found, so auto -> control
    assert int(model.module.condition_is_control.sum()) == 3  # one control condition per cell type
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)  # dose 1 (an int) is the trained dose 1.0: no warning
        pred = model.predict_perturbation({"cell_type": "B", "dose": 1}, n_cells=4, seed=0)
    assert pred.obs["dose"].iloc[0] == 1.0
    assert bool(pred.obs["seen_in_training"].all())
    assert pred.obs["prompt"].iloc[0] == "Generate a B cell at dose 1.0:"


@pytest.mark.parametrize("categorical", [False, True])
def test_integer_obs_values(categorical):
    """Integer doses (plain int64 or categorical of ints) work in templates, predictions and as conditions."""
    adata = data()
    adata.obs["dose"] = np.tile([1, 10, 100], adata.n_obs // 3)
    if categorical:
        adata.obs["dose"] = pd.Categorical(adata.obs["dose"])
    setup(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition} at dose {dose}:",
        control_template="Generate an unstimulated {cell_type} cell at dose {dose}:",
    )
    model = quiet_train(small_model(adata))
    assert "Generate a B cell with IFNB at dose 10:" in model.prompts
    pred = model.predict_perturbation(
        {"cell_type": "B", "condition": "IFNB", "dose": "10"}, n_cells=3, seed=0
    )
    assert (pred.obs["dose"] == 10).all()
    assert pred.obs["prompt"].iloc[0] == "Generate a B cell with IFNB at dose 10:"
    assert bool(pred.obs["seen_in_training"].iloc[0])


def test_values_that_meet_at_a_separator_stay_apart():
    """Bug 8: "B |" and " IFNB" (or "|" inside values) once met at the " | " join of condition labels."""
    adata = data()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).map({"B": "B |", "T": "T", "NK": "NK | x"})
    adata.obs["condition"] = (
        adata.obs["condition"].astype(str).map(lambda c: " " + c if c != "control" else c)
    )
    setup(adata)
    model = quiet_train(small_model(adata))
    assert len(model.conditions) == 12
    assert "Generate a B | cell stimulated with  IFNB:" in model.prompts
    pred = model.predict_perturbation({"cell_type": "NK | x", "condition": " TNF"}, n_cells=3, seed=0)
    assert pred.obs["prompt"].iloc[0] == "Generate a NK | x cell stimulated with  TNF:"
    assert bool(pred.obs["seen_in_training"].iloc[0])


# ---------------------------------------------------------------- registering again keeps every model's codes


@pytest.mark.parametrize("other", ["other class", "other template"])
def test_setup_again_does_not_change_a_models_conditions(other):
    """Bug 1: a second setup_anndata on the same AnnData once re-coded the first model's cells silently."""
    adata = data()
    setup(adata)
    model = small_model(adata)
    expected = adata.obs[["cell_type", "condition"]].astype(str).agg("/".join, axis=1).to_numpy()
    if other == "other class":
        CFMModel.setup_anndata(
            adata,
            prompt_template="Generate a {condition} {cell_type} cell:",
            perturbation_key="condition",
            control_value="control",
        )
    else:
        setup(adata, prompt_template="A {condition} cell of type {cell_type}:", control_template=None)
    cells = model.conditions.iloc[model._cell_conditions()].astype(str).agg("/".join, axis=1).to_numpy()
    assert (cells == expected).all()
    quiet_train(model, holdout=[HOLDOUT])
    assert model.predict_perturbation(HOLDOUT, n_cells=2, seed=0).obs["prompt"].iloc[0] == TEMPLATE.format(
        **HOLDOUT
    )
    assert model.prompts[0] == TEMPLATE.format(cell_type="B", condition="IFNB")
    assert CONTROL_TEMPLATE.format(cell_type="B") in model.prompts


# ---------------------------------------------------------------- one-context data, typed columns, extreme inputs


@pytest.mark.parametrize("cls", [CaLMFlowModel, CFMModel])
def test_context_free_template_end_to_end(cls, tmp_path):
    """Bug 1: a template without a context field (one cell line, as in a CRISPR screen) crashed model construction."""
    adata = data()
    cls.setup_anndata(
        adata,
        prompt_template="Generate a cell stimulated with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    model = small_model(adata, source="auto") if cls is CaLMFlowModel else CFMModel(adata, n_hidden=16)
    assert model.module.source == "control"
    quiet_train(model, holdout={"condition": "IFNB+TNF"}, batch_size=16)
    pred = model.predict_perturbation({"condition": "IFNB+TNF"}, n_cells=10, seed=0)
    assert pred.shape == (10, adata.n_vars)
    assert np.isfinite(pred.X).all()
    model.save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m", adata=adata)
    again = loaded.predict_perturbation({"condition": "IFNB+TNF"}, n_cells=10, seed=0)
    np.testing.assert_allclose(again.X, pred.X, atol=1e-5)
    table = scflowlm.tl.evaluate(adata, pred, metrics=["r2", "pearson_delta"], space="pca")
    assert table["condition"].tolist() == ["IFNB+TNF"]
    assert table["n_real"].iloc[0] == 24
    assert np.isfinite(table["pearson_delta"]).all()


def test_template_without_fields_trains_and_samples():
    adata = data()
    CaLMFlowModel.setup_anndata(adata, prompt_template="Generate a cell:")
    model = quiet_train(small_model(adata), batch_size=16)
    assert model.sample(5, seed=0).shape == (5, adata.n_vars)


def test_boolean_perturbation_column():
    """Bug 2: on a bool column every string but "true"/"1" read as False, so control_value="ctrl" found controls."""
    adata = data()
    adata.obs["treated"] = (adata.obs["condition"] != "control").to_numpy()
    template = "A {cell_type} cell, treated={treated}:"
    with pytest.raises(ValueError, match=r"control_value='ctrl' cannot be a value of obs\['treated'\].*bool"):
        CaLMFlowModel.setup_anndata(
            adata, prompt_template=template, perturbation_key="treated", control_value="ctrl"
        )
    CaLMFlowModel.setup_anndata(
        adata, prompt_template=template, perturbation_key="treated", control_value=False
    )
    model = quiet_train(small_model(adata, source="auto"), batch_size=16)
    assert model.module.source == "control"
    assert int(model.module.condition_is_control.sum()) == 3
    with pytest.warns(ScflowlmWarning, match=r"never seen in training: \{'treated': 'yes'\}"):
        pred = model.predict_perturbation({"cell_type": "B", "treated": "yes"}, n_cells=2, seed=0)
    assert not pred.obs["seen_in_training"].any()
    assert pred.obs["prompt"].iloc[0] == "A B cell, treated=yes:"
    pred = model.predict_perturbation({"cell_type": "B", "treated": "TRUE"}, n_cells=2, seed=0)
    assert pred.obs["seen_in_training"].all()
    assert bool(pred.obs["treated"].iloc[0]) is True


def test_integers_above_2_53_stay_apart():
    """Bug 4: plate ids 2**53 and 2**53 + 1 compared as float64 got one code; predicting one gave the other."""
    adata = data()
    adata.obs["plate"] = np.where(np.arange(adata.n_obs) % 2, 2**53, 2**53 + 1).astype(np.int64)
    setup(adata, prompt_template="A {cell_type} cell {condition} on plate {plate}:", control_template=None)
    model = quiet_train(small_model(adata), holdout={"plate": 2**53 + 1}, batch_size=16)
    assert len(model.test_indices) == int((adata.obs["plate"] == 2**53 + 1).sum()) == 48
    with pytest.warns(ScflowlmWarning, match="never seen in training"):
        pred = model.predict_perturbation(
            {"cell_type": "B", "condition": "TNF", "plate": 2**53 + 1}, n_cells=2
        )
    assert pred.obs["prompt"].iloc[0].endswith(f"plate {2**53 + 1}:")
    assert int(pred.obs["plate"].iloc[0]) == 2**53 + 1
    seen = model.predict_perturbation({"cell_type": "B", "condition": "TNF", "plate": str(2**53)}, n_cells=2)
    assert seen.obs["seen_in_training"].all()


def test_states_beyond_float32_range_are_refused():
    """Bug 7: float64 states beyond float32's range passed the finiteness check and predicted NaN."""
    adata = data()
    adata.obsm["X_pca"] = adata.obsm["X_pca"].astype(np.float64) * 1e39
    with pytest.raises(ValueError, match=r"obsm\['X_pca'\] has values beyond float32's range .*96 cells"):
        setup(adata)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda a: a.varm.pop("PCs"),
            r"varm\['PCs'\] is missing, but mapping the 4 columns .*needs shape \(20, >= 4\)",
        ),
        (
            lambda a: a.varm.__setitem__("PCs", a.varm["PCs"][:, :3]),
            r"varm\['PCs'\] has shape \(20, 3\), but mapping the 4 columns .*n_comps=4",
        ),
    ],
)
def test_pcs_that_cannot_map_states_to_genes_warn_with_shapes(change, match):
    adata = data()
    change(adata)
    setup(adata)
    with pytest.warns(ScflowlmWarning, match=match):
        model = small_model(adata)
    assert model.gene_map.loadings is None


def test_more_pcs_than_states_use_the_first_ones():
    """obsm with fewer PCs than varm["PCs"] (the first k kept): genes are still predicted, without a warning."""
    adata = data()
    adata.obsm["X_pca"] = adata.obsm["X_pca"][:, :3].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)
        setup(adata)
        model = small_model(adata)
    assert model.gene_map.loadings.shape == (20, 3)


def test_subset_of_the_pca_cells_keeps_the_pca_centre():
    """A model of a subset of the cells the PCA was fitted on maps states to genes around the PCA's centre."""
    full = data()
    setup(full)
    subset = full[full.obs["cell_type"] != "NK"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)  # no false alarm about the PCA
        setup(subset)
        model = small_model(subset)
    states = model.gene_map.project(subset, layer=None)
    np.testing.assert_allclose(states, subset.obsm["X_pca"], atol=1e-4)  # the projection reproduces obsm
    X, _ = model.gene_map.to_genes(subset.obsm["X_pca"])
    naive = subset.obsm["X_pca"] @ subset.varm["PCs"].T + subset.X.mean(0)  # centred on the subset's means
    assert np.abs(X - subset.X).mean() < np.abs(naive - subset.X).mean()


def test_states_map_to_genes_as_one_float64_product_in_any_chunks(monkeypatch):
    """to_genes goes a few rows at a time; the genes are the float64 product rounded once, whatever the chunk size."""
    from scflowlm.model import _gene_map

    adata = data()
    setup(adata)
    gene_map = small_model(adata).gene_map
    states = np.random.default_rng(0).normal(size=(601, gene_map.loadings.shape[1])).astype(np.float32)
    expected = (
        states.astype(np.float64) @ gene_map.loadings.astype(np.float64).T + gene_map.means.astype(np.float64)
    ).astype(np.float32)
    X, var = gene_map.to_genes(states)  # 601 rows: more than one chunk, a partial last one
    assert X.dtype == np.float32
    assert list(var.index) == list(adata.var_names)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(_gene_map, "GENE_MAP_ROWS", 7)
    np.testing.assert_array_equal(gene_map.to_genes(states)[0], X)
