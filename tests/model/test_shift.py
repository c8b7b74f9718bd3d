"""The head start of control-source flows: each condition's expected shift, never from its own cells."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import quiet_train, setup, small_model

import scflowlm
from scflowlm.model._shift import condition_means, nearest_context_shifts

D = 3


def _table():
    """Contexts A, A2 (A's twin) and B; perturbations P, Q and the pair P+Q in A only."""
    conds = [
        {"ct": ct, "p": p}
        for ct, ps in (("A", ["ctrl", "P", "Q", "P+Q"]), ("A2", ["ctrl", "P"]), ("B", ["ctrl", "P", "Q"]))
        for p in ps
    ]
    base = {"A": np.array([1.0, 0, 0]), "A2": np.array([1.0, 0.1, 0]), "B": np.array([0, 0, 5.0])}
    effect = {
        ("A", "P"): [1, 0, 0],
        ("A2", "P"): [2, 0, 0],
        ("B", "P"): [9, 0, 0],
        ("A", "Q"): [0, 1, 0],
        ("B", "Q"): [0, 9, 0],
        ("A", "P+Q"): [3, 3, 0],
    }
    means = np.stack(
        [base[c["ct"]] + np.asarray(effect.get((c["ct"], c["p"]), [0, 0, 0]), float) for c in conds]
    )
    return conds, means


def test_shift_comes_from_the_nearest_other_context_and_never_from_own_cells():
    conds, means = _table()
    kw = {"perturbation_key": "p", "control_value": "ctrl"}
    targets = [
        {"ct": "A", "p": "P"},
        {"ct": "A2", "p": "P"},
        {"ct": "A", "p": "ctrl"},
        {"ct": "A2", "p": "Q"},
    ]
    got = nearest_context_shifts(conds, means, targets, **kw)
    np.testing.assert_allclose(got[0], [2, 0, 0])  # A's own P cells unused: A2 (nearest) gives its shift
    np.testing.assert_allclose(got[1], [1, 0, 0])  # A2 <- A
    np.testing.assert_allclose(got[2], 0)  # controls start from themselves
    np.testing.assert_allclose(got[3], [0, 1, 0])  # Q in A2 (unseen there): from A, the nearest with Q


def test_unseen_combination_is_the_sum_of_its_singles_and_unknown_gets_zero():
    conds, means = _table()
    kw = {"perturbation_key": "p", "control_value": "ctrl"}
    got = nearest_context_shifts(
        conds, means, [{"ct": "B", "p": "P+Q"}, {"ct": "A", "p": "P+Q"}, {"ct": "B", "p": "Z"}], **kw
    )
    # measured in another context (A): its shift, as the baseline
    np.testing.assert_allclose(got[0], [3, 3, 0])
    np.testing.assert_allclose(got[1], [1, 1, 0])  # A's pair held out of its own estimate: A's singles
    np.testing.assert_allclose(got[2], 0)


def test_condition_means_leave_conditions_without_cells_nan():
    states = np.arange(12.0).reshape(6, 2)
    means = condition_means(states, np.array([0, 0, 2, 2, 2, 0]), 4)
    np.testing.assert_allclose(means[0], states[[0, 1, 5]].mean(0))
    assert np.isnan(means[1]).all()
    assert np.isnan(means[3]).all()


def test_model_starts_held_out_flows_from_the_shifted_controls(adata):
    setup(adata)
    held = {"cell_type": "NK", "condition": "IFNB"}
    model = quiet_train(small_model(adata, source="control", start_shift="nearest_context"), holdout=[held])
    ctrl = adata[(adata.obs.condition == "control") & (adata.obs.cell_type == "NK")].copy()
    pred = model.predict_perturbation(held, source=ctrl, seed=0, return_path=True)
    expected = model._shifts([model.condition_table.encode(held)[0]])[0]
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


def test_own_shift_is_the_conditions_measured_change():
    from scflowlm.model._shift import own_shifts

    conds, means = _table()
    got = own_shifts(conds, means, perturbation_key="p", control_value="ctrl")
    np.testing.assert_allclose(got[conds.index({"ct": "B", "p": "Q"})], [0, 9, 0])
    np.testing.assert_allclose(got[conds.index({"ct": "A", "p": "P+Q"})], [3, 3, 0])
    np.testing.assert_allclose(got[conds.index({"ct": "A", "p": "ctrl"})], 0)


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
