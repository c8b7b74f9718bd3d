from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from helpers import CONTROL_TEMPLATE, HOLDOUT, TEMPLATE, quiet_train, setup, small_model, tiny_config

from scflowlm import CaLMFlowModel, ScflowlmWarning

# ---------------------------------------------------------------- setup errors


def test_setup_names_missing_field(adata):
    with pytest.raises(KeyError, match=r"\['cell_kind'\] are not obs columns"):
        CaLMFlowModel.setup_anndata(adata, prompt_template="Generate a {cell_kind} cell:")


def test_setup_missing_pca_says_how_to_make_it(adata):
    del adata.obsm["X_pca"]
    with pytest.raises(KeyError, match=r"sc\.pp\.pca"):
        setup(adata)


def test_setup_rejects_nan_obs_value(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("cell_type")] = np.nan
    with pytest.raises(ValueError, match=r"obs\['cell_type'\] has 1 missing"):
        setup(adata)


def test_setup_rejects_non_finite_states(adata):
    adata.obsm["X_pca"][5, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite values in 1 cells"):
        setup(adata)


def test_setup_writes_only_registration_columns(adata):
    before = set(adata.obs.columns)
    X = adata.X.copy()
    setup(adata)
    added = {"_scflowlm_condition", "_scflowlm_context", "_scflowlm_is_control", "_scvi_condition", "_scvi_context"}
    assert set(adata.obs.columns) - before == added  # scvi-tools adds the _scvi_* code columns
    assert np.array_equal(adata.X, X)
    assert adata.obs["_scflowlm_is_control"].sum() == (adata.obs.condition == "control").sum()


def test_model_summary_and_prompts(adata):
    model = small_model(setup(adata))
    assert "CaLMFlow" in model._model_summary_string
    assert "Generate an unstimulated B cell:" in model.prompts
    assert "Generate a NK cell stimulated with IFNB+TNF:" in model.prompts


# ---------------------------------------------------------------- train and predict


def test_train_predict_holdout(trained):
    model, adata = trained
    assert model.is_trained_
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    held = (adata.obs.cell_type == "NK") & (adata.obs.condition == "IFNB+TNF")
    assert set(model.test_indices_) == set(np.nonzero(held.to_numpy())[0])
    assert not set(model.train_indices_) & set(model.test_indices_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)  # seen values only: no warning of ours
        pred = model.predict_perturbation(HOLDOUT, n_cells=37, seed=0)
    assert pred.shape == (37, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert pred.obsm["X_pca"].shape == (37, adata.obsm["X_pca"].shape[1])
    assert (pred.obs["condition"] == "IFNB+TNF").all()
    assert not pred.obs["seen_in_training"].any()
    # X is the generated state mapped through the PCA loadings
    np.testing.assert_allclose(
        pred.X, pred.obsm["X_pca"] @ adata.varm["PCs"].T + adata.X.mean(0), rtol=1e-4, atol=1e-4
    )
    assert np.isfinite(pred.X).all()


def test_predict_is_reproducible_and_seed_dependent(trained):
    model, _ = trained
    a = model.predict_perturbation(HOLDOUT, n_cells=10, seed=3)
    b = model.predict_perturbation(HOLDOUT, n_cells=10, seed=3)
    c = model.predict_perturbation(HOLDOUT, n_cells=10, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    assert np.abs(a.X - c.X).max() > 1e-4


def test_cached_and_uncached_predictions_agree(trained):
    model, _ = trained
    a = model.predict_perturbation(HOLDOUT, n_cells=20, seed=0, use_cache=True)
    b = model.predict_perturbation(HOLDOUT, n_cells=20, seed=0, use_cache=False)
    np.testing.assert_allclose(a.X, b.X, atol=1e-4)


def test_batches_do_not_change_results(trained):
    model, _ = trained
    a = model.predict_perturbation(HOLDOUT, n_cells=25, seed=0, batch_size=7)
    assert a.n_obs == 25


def test_unseen_value_warns_and_raw_prompt(trained):
    model, _ = trained
    with pytest.warns(UserWarning, match="never seen in training.*Plasma"):
        pred = model.predict_perturbation({"cell_type": "Plasma", "condition": "IFNB"}, n_cells=5, seed=0)
    assert pred.obs["prompt"].iloc[0] == "Generate a Plasma cell stimulated with IFNB:"
    raw = model.predict_perturbation("Generate a B cell stimulated with TNF:", n_cells=4, seed=0)
    assert raw.n_obs == 4


def test_list_of_conditions_and_sample(trained):
    model, _ = trained
    pred = model.predict_perturbation([{"cell_type": "B", "condition": "control"}, HOLDOUT], n_cells=6, seed=1)
    assert pred.n_obs == 12
    assert pred.obs["prompt"].iloc[0] == CONTROL_TEMPLATE.format(cell_type="B")
    sampled = model.sample(30, seed=0)
    assert sampled.n_obs == 30
    assert sampled.obs["cell_type"].nunique() > 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_cells": 0}, "n_cells must be positive"),
    ({"temperature": -1.0}, "temperature must be >= 0"),
])
def test_predict_bad_arguments(trained, kwargs, match):
    model, _ = trained
    with pytest.raises(ValueError, match=match):
        model.predict_perturbation(HOLDOUT, **kwargs)


def test_predict_unknown_field(trained):
    model, _ = trained
    with pytest.raises(KeyError, match=r"unknown field\(s\) \['dose'\]"):
        model.predict_perturbation({"cell_type": "B", "condition": "TNF", "dose": "1"})


def test_training_reduces_loss(adata):
    setup(adata)
    model = quiet_train(small_model(adata), max_epochs=5)
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    assert loss[-1] < loss[0]


def test_multi_trajectory_model(adata):
    setup(adata)
    model = quiet_train(small_model(adata, n_trajectories=3))
    pred = model.predict_perturbation(HOLDOUT, n_cells=7, seed=0)
    assert pred.n_obs == 7


# ---------------------------------------------------------------- save / load


def test_save_load_identical_predictions(trained, tmp_path):
    model, adata = trained
    before = model.predict_perturbation(HOLDOUT, n_cells=15, seed=7)
    model.save(tmp_path / "m")
    loaded = CaLMFlowModel.load(tmp_path / "m", adata=adata)
    after = loaded.predict_perturbation(HOLDOUT, n_cells=15, seed=7)
    np.testing.assert_array_equal(before.X, after.X)
    with pytest.raises(ValueError, match="already exists"):
        model.save(tmp_path / "m")


def test_pretrained_backbone_path_end_to_end(adata, tmp_path):
    """backbone=<local dir> goes through from_pretrained (weights + tokenizer), trains, saves and loads offline."""
    from transformers import GPTNeoXModel

    from scflowlm.nn import word_tokenizer

    setup(adata)
    prompts = [TEMPLATE.format(cell_type=c, condition=p) for c in "ABC" for p in "xyz"] + ["B NK T IFNB TNF + unstimulated an"]
    tok = word_tokenizer(prompts)
    GPTNeoXModel(tiny_config(vocab_size=len(tok))).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    model = quiet_train(small_model(adata, backbone=str(tmp_path / "lm")))
    assert model.init_params_["non_kwargs"]["backbone"].hidden_size == 32
    before = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    model.save(tmp_path / "m", save_anndata=True)
    (tmp_path / "lm" / "model.safetensors").unlink()  # load must not need the pretrained files again
    loaded = CaLMFlowModel.load(tmp_path / "m")
    np.testing.assert_array_equal(before.X, loaded.predict_perturbation(HOLDOUT, n_cells=5, seed=0).X)


def test_train_prints_no_library_chatter(adata, capfd, caplog):
    """Progress and loss, not Lightning's device lines, tips or library-internal deprecations; verbose brings them."""
    caplog.set_level(logging.INFO)
    model = small_model(setup(adata))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    shown = "".join(capfd.readouterr()) + caplog.text + " ".join(str(w.message) for w in caught)
    for chatter in ("GPU available", "TPU available", "litlogger", "deprecated"):
        assert chatter not in shown
    caplog.clear()
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False, verbose=True)
    assert "GPU available" in caplog.text
