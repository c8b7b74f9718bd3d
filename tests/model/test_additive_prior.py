"""The additive head start: with nothing learned beyond it, a model predicts the additive baseline exactly."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import quiet_train, tiny_config

import scflowlm
from scflowlm.model import CFMModel

HELD = {"cell_type": "A", "condition": "P+Q"}


def singles_and_a_pair(n=40, d=4, seed=0):
    """One context; P moves dim 0 by 2, Q dim 1 by 3, the pair both; the PCA is the identity (X = states + mean)."""
    rng = np.random.default_rng(seed)
    effects = {"control": [0, 0, 0, 0], "P": [2, 0, 0, 0], "Q": [0, 3, 0, 0], "P+Q": [2, 3.5, 0, 0]}
    X = np.vstack([rng.normal(size=(n, d)) + np.asarray(e, float) for e in effects.values()]).astype(
        np.float32
    )
    obs = pd.DataFrame(
        {"cell_type": "A", "condition": np.repeat(list(effects), n)}, index=[f"c{i}" for i in range(len(X))]
    )
    adata = ad.AnnData(X=X, obs=obs)
    adata.obsm["X_pca"] = X - X.mean(0)
    adata.varm["PCs"] = np.eye(d, dtype=np.float32)
    return adata


def _zero_correction(model):
    """Silence the learned flow: every velocity is zero."""
    if isinstance(model, CFMModel):
        model.module.field.forward = lambda x, t, c=None: torch.zeros_like(x)
    else:
        head = model.module.head
        head.sample = lambda h, **kw: torch.zeros(*h.shape[:2], model.n_features)


@pytest.mark.parametrize("cls", [scflowlm.CaLMFlowModel, CFMModel])
def test_zero_correction_is_exactly_the_additive_baseline(cls):
    adata = singles_and_a_pair()
    cls.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    kwargs = (
        {"backbone": tiny_config(), "n_time_points": 3, "n_latent": 4}
        if cls is not CFMModel
        else {"n_hidden": 16}
    )
    model = cls(adata, **kwargs)
    assert model.start_shift == "additive"  # "auto": the data have a combination
    quiet_train(model, holdout=[HELD], train_size=1.0, batch_size=16)
    _zero_correction(model)
    controls = (adata.obs["condition"] == "control").to_numpy()
    pred = model.predict_perturbation(HELD, source=controls, seed=0)
    train = adata[~(adata.obs["condition"] == "P+Q").to_numpy()].copy()
    additive = scflowlm.tl.baseline_additive(train, conditions=[HELD])
    np.testing.assert_allclose(pred.obsm["X_pca"], additive.obsm["X_pca"], atol=1e-5)
    np.testing.assert_allclose(pred.X, additive.X, atol=1e-5)


def test_the_encoder_is_told_the_head_start_and_the_prompt_names_what_is_left():
    adata = singles_and_a_pair()
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    model = scflowlm.CaLMFlowModel(adata, backbone=tiny_config(), n_time_points=3, n_latent=4)
    table = model.condition_table
    pair, p = table.row_of(HELD), table.row_of({"cell_type": "A", "condition": "P"})
    assert model.module.in_head_start[pair].tolist() == [True, True]
    assert model.module.in_head_start[p].tolist() == [True, False]
    ids, C = model.module.prompt_ids, len(table)
    tok = model.prompt_tokenizer
    assert tok.decode(ids[pair][ids[pair] > 0]) == "Generate a A cell with P + Q :"
    assert tok.decode(ids[C + pair][ids[C + pair] > 0]) == "Generate a A cell with :"  # nothing left to move
    # a condition whose parts are not all measured keeps the rest in its head-start prompt
    cond = {"cell_type": "A", "condition": "P+Z"}
    members = model.catalog.members([cond])
    shift, in_head_start = model._head_start(
        [cond], model.module.condition_means.numpy(), members, training=False
    )
    assert in_head_start.tolist() == [[True, False]]
    assert model.catalog.reading_prompts([cond], in_head_start, ["full"]) == ["Generate a A cell with Z:"]
    np.testing.assert_allclose(shift[0, :2], [2, 0], atol=0.5)


@pytest.mark.parametrize("cls", [scflowlm.CaLMFlowModel, CFMModel])
def test_a_flow_trained_zero_steps_is_its_head_start(cls):
    """The velocity starts at zero with a head start: an untrained flow predicts the additive answer exactly."""
    adata = singles_and_a_pair()
    cls.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    kwargs = (
        {"backbone": tiny_config(), "n_time_points": 3, "n_latent": 4}
        if cls is not CFMModel
        else {"n_hidden": 16}
    )
    model = cls(adata, **kwargs)
    quiet_train(model, holdout=[HELD], train_size=1.0, batch_size=16, max_steps=0)
    controls = (adata.obs["condition"] == "control").to_numpy()
    pred = model.predict_perturbation(HELD, source=controls, seed=0)
    train = adata[~(adata.obs["condition"] == "P+Q").to_numpy()].copy()
    additive = scflowlm.tl.baseline_additive(train, conditions=[HELD])
    np.testing.assert_allclose(pred.obsm["X_pca"], additive.obsm["X_pca"], atol=1e-5)
