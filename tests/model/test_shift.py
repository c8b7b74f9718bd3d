"""The head start of control-source flows: each condition's expected shift, never from its own cells."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import quiet_train, setup, small_model

import scflowlm


def test_model_starts_held_out_flows_from_the_shifted_controls(adata):
    setup(adata)
    held = {"cell_type": "NK", "condition": "IFNB"}
    model = quiet_train(small_model(adata, source="control", start_shift="nearest_context"), holdout=[held])
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "NK")].copy()
    pred = model.predict_perturbation(held, source=ctrl, seed=0, return_path=True)
    condition = model.condition_table.encode(held)[0]
    means = model.module.condition_means.numpy()
    expected = model._head_start([condition], means, model.catalog.members([condition]), training=False)[0][0]
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(pred.obsm["X_path"][:, 0], ctrl.obsm["X_pca"] + expected, atol=1e-4)
    np.testing.assert_allclose(pred.obsm["X_source"], ctrl.obsm["X_pca"], atol=1e-5)  # the cells themselves
    assert (
        np.isfinite(model.module.condition_means.numpy()).all(axis=1).sum() == 11
    )  # the held-out condition has no cells
    with pytest.raises(ValueError, match="start_shift must be one of"):
        small_model(adata, start_shift="linear")
    assert (
        scflowlm.CaLMFlowModel(
            adata,
            source="noise",
            start_shift="nearest_context",
            backbone=model.init_params_["non_kwargs"]["backbone"],
        ).start_shift
        == "none"
    )


@pytest.mark.parametrize("training", ["held_out", "own"])
def test_training_head_start_follows_shift_training(adata, training):
    setup(adata)
    model = small_model(adata, source="control", start_shift="nearest_context", shift_training=training)
    table = model.condition_table
    i = table.index_of(table.encode({"cell_type": "B", "condition": "IFNB"})[1])
    measured = (
        model.module.condition_means.numpy()[i]
        - model.module.condition_means.numpy()[
            table.index_of(table.encode({"cell_type": "B", "condition": "control"})[1])
        ]
    )
    module_shift = model.module.condition_shift[i].numpy()  # raw; the module divides by its scale in use
    if training == "own":
        np.testing.assert_allclose(module_shift, measured, atol=1e-4)
    else:
        # the held-out estimate, not the condition's own change
        assert np.abs(module_shift - measured).max() > 0.05
    with pytest.raises(ValueError, match="shift_training must be one of"):
        small_model(adata, shift_training="oracle")
