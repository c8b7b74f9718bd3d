"""predict_perturbation and sample: the prediction AnnData, its guarantees, and arguments refused with their cause."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from helpers import CONTROL_TEMPLATE, HOLDOUT, quiet_train, setup, small_model

import scflowlm
from scflowlm import ScflowlmWarning


def test_prediction_of_a_held_out_combination(trained):
    model, adata = trained
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
    record = pred.uns["scflowlm"]
    assert record["model"] == "CaLMFlowModel"
    assert record["obsm_key"] == "X_pca"
    assert record["condition_keys"] == ["cell_type", "condition"]
    assert record["control_value"] == "control"


def test_same_seed_same_cells_other_seed_differs(trained):
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


def test_many_conditions_in_one_call_equal_one_at_a_time(trained):
    """Conditions are batched together, yet each is generated as if predicted alone with the seed."""
    model, _ = trained
    conds = [HOLDOUT, {"cell_type": "B", "condition": "control"}, {"cell_type": "T", "condition": "TNF"}]
    together = model.predict_perturbation(conds, n_cells=9, seed=5, batch_size=7)
    for i, cond in enumerate(conds):
        alone = model.predict_perturbation(cond, n_cells=9, seed=5, batch_size=256)
        np.testing.assert_allclose(together.X[9 * i : 9 * (i + 1)], alone.X, atol=1e-5)
    assert together.obs["prompt"].iloc[9] == CONTROL_TEMPLATE.format(cell_type="B")


def test_generation_runs_in_bounded_batches(monkeypatch):
    model = small_model(
        setup(scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4)),
        n_trajectories=2,
    )
    sizes = []
    rollout = model.module.rollout

    def spy(ids, mask, x0, **kwargs):
        sizes.append(x0.shape[0] * x0.shape[1])  # [S, M, D]: cells in this call
        return rollout(ids, mask, x0, **kwargs)

    monkeypatch.setattr(model.module, "rollout", spy)
    pred = model.predict_perturbation(HOLDOUT, n_cells=45, seed=0, batch_size=8)
    assert pred.n_obs == 45
    assert np.isfinite(pred.X).all()
    assert max(sizes) <= 8
    assert len(sizes) == 6  # 23 sequences of 2 (the last padded), 4 per batch


def test_unseen_value_warns_and_raw_prompt(trained):
    model, _ = trained
    with pytest.warns(ScflowlmWarning, match="never seen in training.*Plasma"):
        pred = model.predict_perturbation({"cell_type": "Plasma", "condition": "IFNB"}, n_cells=5, seed=0)
    assert pred.obs["prompt"].iloc[0] == "Generate a Plasma cell stimulated with IFNB:"
    raw = model.predict_perturbation("Generate a B cell stimulated with TNF:", n_cells=4, seed=0)
    assert raw.n_obs == 4


def test_conditions_as_list_series_or_frame_and_sample(trained):
    model, _ = trained
    pred = model.predict_perturbation(
        [{"cell_type": "B", "condition": "control"}, HOLDOUT], n_cells=6, seed=1
    )
    assert pred.n_obs == 12
    assert pred.obs["prompt"].iloc[0] == CONTROL_TEMPLATE.format(cell_type="B")
    series = model.predict_perturbation(pd.Series(HOLDOUT), n_cells=3, seed=1)
    np.testing.assert_array_equal(series.X, model.predict_perturbation(HOLDOUT, n_cells=3, seed=1).X)
    frame = model.predict_perturbation(
        pd.DataFrame([HOLDOUT, {"cell_type": "T", "condition": "TNF"}]), n_cells=3, seed=1
    )
    assert list(frame.obs["cell_type"]) == ["NK"] * 3 + ["T"] * 3
    sampled = model.sample(30, seed=0)
    assert sampled.n_obs == 30
    assert sampled.obs["cell_type"].nunique() > 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_cells": 0}, ValueError, r"n_cells must be an integer >= 1, got 0"),
        ({"n_cells": 5.0}, ValueError, r"n_cells must be an integer >= 1, got 5.0"),
        ({"n_cells": 10**10}, ValueError, r"about \d+ GB, more than this machine's"),
        ({"temperature": -1.0}, ValueError, r"temperature must be a finite number >= 0"),
        (
            {"temperature": float("nan")},
            ValueError,
            r"temperature must be a finite number >= 0, got nan",
        ),  # bug 10
        ({"temperature": float("inf")}, ValueError, r"temperature must be a finite number >= 0, got inf"),
        ({"seed": -1}, ValueError, r"seed must be an integer >= 0, got -1"),
        ({"seed": 2**64}, ValueError, r"seed must be below 2\*\*63"),
        ({"batch_size": 2.5}, ValueError, r"batch_size must be an integer >= 1, got 2.5"),
        ({"use_kv": True}, TypeError, r"Unknown generation option\(s\): \['use_kv'\]"),
    ],
)
def test_bad_arguments_name_the_cause(trained, kwargs, error, match):
    model, _ = trained
    with pytest.raises(error, match=match):
        model.predict_perturbation(HOLDOUT, **kwargs)


def test_bad_conditions(trained):
    model, _ = trained
    with pytest.raises(KeyError, match=r"unknown field\(s\) \['dose'\]"):
        model.predict_perturbation({"cell_type": "B", "condition": "TNF", "dose": "1"})
    with pytest.raises(KeyError, match=r"lacks the template field\(s\) \['condition'\]"):
        model.predict_perturbation({"cell_type": "B"})
    with pytest.raises(TypeError, match="condition must be a dict"):
        model.predict_perturbation(42)
    with pytest.raises(
        ValueError, match="No condition given"
    ):  # bug 5: an empty table crashed in transformers
        model.predict_perturbation(model.conditions.iloc[:0])


def test_untrained_model_warns(adata):
    """Bug 12: random-weight cells came back without a word."""
    model = small_model(setup(adata))
    with pytest.warns(ScflowlmWarning, match="is not trained: its predictions come from random weights"):
        model.predict_perturbation(HOLDOUT, n_cells=2, seed=0)


def test_a_model_cast_to_double_predicts(trained):
    model, _ = trained
    expected = model.predict_perturbation(HOLDOUT, n_cells=4, seed=0).X
    model.module.double()
    try:
        got = model.predict_perturbation(HOLDOUT, n_cells=4, seed=0).X
    finally:
        model.module.float()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_multi_trajectory_model(adata):
    setup(adata)
    model = quiet_train(small_model(adata, n_trajectories=3))
    pred = model.predict_perturbation(HOLDOUT, n_cells=7, seed=0)
    assert pred.n_obs == 7


def test_sparse_and_dense_x_give_the_same_model():
    dense = setup(scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4))
    sparse = scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4)
    sparse.X = sp.csr_matrix(sparse.X)
    setup(sparse)
    preds = []
    for adata in (dense, sparse):
        scvi.settings.seed = 0
        model = quiet_train(small_model(adata), batch_size=16)
        preds.append(model.predict_perturbation(HOLDOUT, n_cells=6, seed=1).X)
        np.testing.assert_allclose(model.gene_means_, np.asarray(dense.X).mean(0), rtol=1e-5)
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-5, atol=1e-5)


def test_module_is_called_once_per_prediction(trained, monkeypatch):
    """One crossing from model to module: the module standardises, samples and unstandardises."""
    model, _ = trained
    calls = []
    sample = model.module.sample
    monkeypatch.setattr(model.module, "sample", lambda *a, **k: calls.append(1) or sample(*a, **k))
    model.predict_perturbation([HOLDOUT, {"cell_type": "B", "condition": "TNF"}], n_cells=3, seed=0)
    assert len(calls) == 1
    assert isinstance(model.module.x_mean, torch.Tensor)


def test_return_path_holds_the_rollout_from_source_to_prediction(trained):
    model, _ = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=7, seed=2, return_path=True)
    path = pred.obsm["X_path"]
    assert path.shape == (7, model.module.n_time_points, pred.obsm["X_pca"].shape[1])
    np.testing.assert_allclose(path[:, -1], pred.obsm["X_pca"], atol=1e-6)
    plain = model.predict_perturbation(HOLDOUT, n_cells=7, seed=2)
    np.testing.assert_allclose(plain.X, pred.X, atol=1e-6)  # asking for the path changes nothing else
    sampled = model.sample(9, seed=0, return_path=True)
    assert sampled.obsm["X_path"].shape[:2] == (9, model.module.n_time_points)


def test_return_path_of_a_control_source_starts_at_the_source(adata):
    setup(adata)
    model = quiet_train(small_model(adata, source="control"))
    assert (
        model.start_shift == "additive"
    )  # the data have combinations: flows start at the additive head start
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "B")].copy()
    pred = model.predict_perturbation({"condition": "IFNB"}, source=ctrl, seed=0, return_path=True)
    table = model.condition_table
    ifnb, control = (table.row_of({"cell_type": "B", "condition": c}) for c in ("IFNB", "control"))
    means = model.module.condition_means.numpy()
    np.testing.assert_allclose(
        pred.obsm["X_path"][:, 0], ctrl.obsm["X_pca"] + means[ifnb] - means[control], atol=1e-4
    )
    np.testing.assert_allclose(pred.obsm["X_source"], ctrl.obsm["X_pca"], atol=1e-5)
    np.testing.assert_allclose(pred.obsm["X_path"][:, -1], pred.obsm["X_pca"], atol=1e-6)


def test_prompt_dropout_trains_on_context_free_prompts(adata):
    setup(adata)
    model = small_model(adata, prompt_dropout=0.5)
    free = model.catalog.context_free_prompts()
    assert free[model.condition_table.index_of(model.condition_table.encode(HOLDOUT)[1])] == (
        "Generate a cell stimulated with IFNB+TNF:"
    )
    assert model.module.prompt_ids.shape[0] == 3 * len(
        model.condition_table
    )  # full, head-start reading, context-free
    quiet_train(model, max_epochs=2)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    with pytest.raises(ValueError, match=r"prompt_dropout must be a number in \[0, 1\)"):
        small_model(adata, prompt_dropout=1.0)
    with pytest.raises(
        ValueError, match=r"head_start_dropout must be a number in \[0, 1\) \(e.g. 0.1\), got '0.1'"
    ):
        small_model(adata, head_start_dropout="0.1")


def test_non_finite_predictions_warn(trained, monkeypatch):
    """Bug 7 (the other half): NaN states came back without a word."""
    model, _ = trained
    real = type(model.module).sample
    monkeypatch.setattr(type(model.module), "sample", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.warns(scflowlm.ScflowlmWarning, match=r"3 of 3 predicted cells have NaN or infinite states"):
        model.predict_perturbation(HOLDOUT, n_cells=3, seed=0)
