from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import CONTROL_TEMPLATE, HOLDOUT, TEMPLATE, quiet_train

import scflowlm
from scflowlm import ScflowlmWarning
from scflowlm.model import CFMModel


def make_adata():
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=24, n_genes=40, n_pcs=8, seed=0)
    CFMModel.setup_anndata(
        adata,
        prompt_template=TEMPLATE,
        control_template=CONTROL_TEMPLATE,
        perturbation_key="condition",
        control_value="control",
    )
    return adata


def small_cfm(adata, **kwargs):
    return CFMModel(adata, **({"n_hidden": 32, "n_layers": 2, "source": "noise"} | kwargs))


@pytest.fixture(scope="module")
def adata():
    return make_adata()


@pytest.fixture(scope="module")
def trained(adata):
    return quiet_train(small_cfm(adata, flow="ot"), holdout=[HOLDOUT])


def test_covariates_are_the_context_and_the_encoded_singles(adata):
    """Context fields one-hot; the perturbation as the members the condition encoder reads (CaLMFlow's too)."""
    model = small_cfm(adata)
    assert model.covariate_vocabulary == {"cell_type": ["B", "NK", "T"]}
    assert model.vocabulary == ["IFNB", "TNF"]  # singles only; control has no member
    assert model.module.covariates.shape[1] == 3
    assert model.module.n_covariates == 3 + 32  # and the encoder's embedding
    np.testing.assert_array_equal(
        model.covariate_vector({"cell_type": "T", "condition": "control"}), [0, 0, 1]
    )
    members = model.catalog.members(
        [
            {"cell_type": "B", "condition": "IFNB+TNF"},
            {"cell_type": "B", "condition": "TNF+IFNB"},
            {"cell_type": "B", "condition": "control"},
            {"cell_type": "Plasma", "condition": "IFNB+XYZ"},
        ]
    )
    np.testing.assert_array_equal(members, [[0, 1], [0, 1], [-1, -1], [0, -1]])  # XYZ: unknown
    np.testing.assert_array_equal(
        model.covariate_vector({"cell_type": "Plasma", "condition": "TNF"}), [0, 0, 0]
    )
    # the module's tables follow the condition codes
    for code, cond in enumerate(model.conditions.to_dict("records")):
        np.testing.assert_array_equal(model.module.covariates[code].numpy(), model.covariate_vector(cond))
        np.testing.assert_array_equal(
            model.module.members[code].numpy()[:1], model.catalog.members([cond])[0][:1]
        )
    assert "OT-CFM" in model._model_summary_string


def test_values_only_in_holdout_are_zeroed(adata):
    model = quiet_train(small_cfm(adata, flow="i"), holdout=[{"cell_type": "NK"}])
    # NK appears only in held-out cells: its coordinate is never trained, so it reads as unseen
    np.testing.assert_array_equal(model.covariate_vector({"cell_type": "NK", "condition": "TNF"}), [0, 0, 0])
    assert model.module.covariates[:, 1].abs().sum() == 0
    # a single perturbed only in held-out cells keeps no learned embedding either
    held = quiet_train(small_cfm(adata, flow="i"), holdout=[{"condition": "TNF"}, {"condition": "IFNB+TNF"}])
    assert held.module.encoder.known.tolist() == [True, False]


@pytest.mark.parametrize("flow", ["i", "ot", "sb"])
@pytest.mark.parametrize("source", ["noise", "control"])
def test_train_predict(adata, flow, source):
    model = quiet_train(small_cfm(adata, flow=flow, source=source), holdout=[HOLDOUT])
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)  # seen values only: no warning of ours
        pred = model.predict_perturbation(HOLDOUT, n_cells=20, seed=0)
    assert pred.n_obs == 20
    if source == "control":  # started from 20 registered NK control cells
        assert "X_source" in pred.obsm
        assert not [c for c in pred.obs.columns if c.startswith(("_scvi", "_scflowlm"))]
    assert pred.shape[1] == adata.n_vars
    assert pred.obsm["X_pca"].shape == (pred.n_obs, 8)
    assert np.isfinite(pred.X).all()
    assert (pred.obs["condition"] == "IFNB+TNF").all()


def test_solver_options(trained):
    a = trained.predict_perturbation(HOLDOUT, n_cells=30, seed=1)
    b = trained.predict_perturbation(HOLDOUT, n_cells=30, seed=1, method="euler", n_steps=200)
    c = trained.predict_perturbation(HOLDOUT, n_cells=30, seed=1, batch_size=7)
    np.testing.assert_allclose(a.obsm["X_pca"], b.obsm["X_pca"], atol=0.05)
    # dopri5 adapts its steps to the whole batch: other batches change results within the tolerance only
    np.testing.assert_allclose(a.obsm["X_pca"], c.obsm["X_pca"], atol=1e-2)
    d = trained.predict_perturbation(HOLDOUT, n_cells=30, seed=2)
    assert np.abs(a.X - d.X).max() > 1e-3
    with pytest.raises(TypeError, match="Unknown generation option"):
        trained.predict_perturbation(HOLDOUT, n_cells=3, seed=0, use_cache=True)
    with pytest.raises(ValueError, match="condition dict"):
        trained.predict_perturbation("Generate a B cell stimulated with TNF:", n_cells=3, seed=0)
    assert trained.sample(12, seed=0).n_obs == 12


def test_save_load_identical_predictions(trained, adata, tmp_path):
    before = trained.predict_perturbation(HOLDOUT, n_cells=15, seed=7)
    trained.save(tmp_path / "m")
    loaded = CFMModel.load(tmp_path / "m", adata=adata)
    after = loaded.predict_perturbation(HOLDOUT, n_cells=15, seed=7)
    np.testing.assert_array_equal(before.X, after.X)
    np.testing.assert_array_equal(loaded.covariate_mask_, trained.covariate_mask_)
    # without the AnnData
    trained.save(tmp_path / "m2", save_anndata=False)
    bare = CFMModel.load(tmp_path / "m2", adata=None)
    np.testing.assert_array_equal(before.X, bare.predict_perturbation(HOLDOUT, n_cells=15, seed=7).X)


def test_invalid_arguments(adata):
    with pytest.raises(ValueError, match="flow"):
        small_cfm(adata, flow="rectified")
    with pytest.raises(ValueError, match="sigma"):
        small_cfm(adata, flow="sb", sigma=0.0)
    bare = scflowlm.data.synthetic_perturbation(n_cells_per_condition=5, n_genes=20, n_pcs=4, seed=0)
    CFMModel.setup_anndata(bare, prompt_template="Generate a {cell_type} cell with {condition}:")
    with pytest.raises(ValueError, match="source='control' needs"):
        CFMModel(bare, source="control")
    model = CFMModel(bare, n_hidden=8, n_layers=1)  # no perturbation key: every field is one-hot
    assert model.n_covariates == 3 + 4
