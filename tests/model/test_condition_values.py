"""One spelling per condition: a combination in any order, a single named twice, numeric perturbations (issue 30)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import quiet_train, tiny_config

import scflowlm
from scflowlm import ScflowlmWarning

PAIR = {"cell_type": "B", "condition": "A+B"}


def _data(perturbations=("control", "A", "B", "A+B", "C"), **kwargs):
    return scflowlm.data.synthetic_perturbation(
        n_cells_per_condition=8,
        n_genes=16,
        n_pcs=4,
        seed=0,
        cell_types=("B", "T"),
        perturbations=perturbations,
    )


def _model(adata, **setup):
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        **{
            "prompt_template": "Generate a {cell_type} cell with {condition}:",
            "control_template": "Generate a control {cell_type} cell:",
            "perturbation_key": "condition",
            "control_value": "control",
        }
        | setup,
    )
    return scflowlm.CaLMFlowModel(adata, n_time_points=3, backbone=tiny_config(), n_latent=4)


@pytest.fixture(scope="module")
def trained():
    adata = _data()
    return quiet_train(_model(adata), batch_size=8), adata


@pytest.mark.parametrize("spelling", ["B+A", "A + B", " B +A"])
def test_a_pair_written_in_another_order_is_the_registered_pair(trained, spelling):
    """Bug 1: 'B+A' was labelled 'B+A', unseen, warned as new and scored on 0 rows by tl.evaluate."""
    model, adata = trained
    with warnings_as_errors():
        pred = model.predict_perturbation({"cell_type": "B", "condition": spelling}, n_cells=6, seed=0)
    same = model.predict_perturbation(PAIR, n_cells=6, seed=0)
    assert set(pred.obs["condition"]) == {"A+B"}
    assert pred.obs["seen_in_training"].all()
    assert pred.obs["prompt"].iloc[0] == "Generate a B cell with A+B:"
    np.testing.assert_array_equal(pred.X, same.X)
    scores = scflowlm.tl.evaluate(adata, pred, space="pca", metrics=["pearson_delta"], key_added=None)
    assert len(scores) == 1
    assert np.isfinite(scores["pearson_delta"]).all()


def test_tools_find_a_pair_in_any_spelling(trained):
    model, adata = trained
    pred = model.predict_perturbation(PAIR, n_cells=6, seed=0)
    pred.obs["condition"] = (
        pred.obs["condition"].astype(str).replace({"A+B": "B+A"})
    )  # another tool's spelling
    scores = scflowlm.tl.evaluate(adata, pred, space="pca", metrics=["pearson_delta"], key_added=None)
    assert scores["n_real"].tolist() == [8]
    ax = scflowlm.pl.umap_overlap(adata, pred, condition={"cell_type": "B", "condition": "B + A"}, show=False)
    assert ax is not None


def test_holdout_in_another_spelling_holds_out_the_pair():
    model = _model(_data())
    quiet_train(model, batch_size=8, holdout=[{"cell_type": "B", "condition": "B + A"}])
    held = model.adata.obs.iloc[model.test_indices]
    assert set(map(tuple, held[["cell_type", "condition"]].astype(str).to_numpy())) == {("B", "A+B")}


def test_holdout_that_matches_nothing_names_the_values():
    adata = _data()
    adata = adata[~((adata.obs["cell_type"] == "T") & (adata.obs["condition"] == "C")).to_numpy()].copy()
    model = _model(adata)
    with pytest.raises(ValueError, match=r"obs\['condition'\] has no value 'A\+D' \(its values: \["):
        quiet_train(model, batch_size=8, holdout=[{"cell_type": "B", "condition": "A+D"}])
    with pytest.raises(ValueError, match="each value is in obs, but no cell has them all"):
        quiet_train(model, batch_size=8, holdout=[{"cell_type": "T", "condition": "C"}])


def test_a_single_named_twice_counts_once(trained):
    """Bug 2: 'A+A' moved the cells 1.9-2.0x as far as 'A' (its head start and baseline_additive added A twice)."""
    model, adata = trained
    single = model.predict_perturbation({"cell_type": "B", "condition": "A"}, n_cells=6, seed=0)
    with pytest.warns(ScflowlmWarning, match=r"names \['A'\] more than once"):
        twice = model.predict_perturbation({"cell_type": "B", "condition": "A+A"}, n_cells=6, seed=0)
    np.testing.assert_array_equal(twice.X, single.X)
    assert set(twice.obs["condition"]) == {"A"}
    with pytest.warns(ScflowlmWarning, match="more than once"):
        base_twice = scflowlm.tl.baseline_additive(adata, conditions=[{"cell_type": "B", "condition": "A+A"}])
    base = scflowlm.tl.baseline_additive(adata, conditions=[{"cell_type": "B", "condition": "A"}])
    np.testing.assert_allclose(base_twice.X, base.X)


def test_registered_values_that_name_a_single_twice_warn_at_setup():
    adata = _data(("control", "A", "A+A"))
    with pytest.warns(ScflowlmWarning, match=r"name a perturbation more than once: \{'A\+A': \['A'\]\}"):
        _model(adata)


def test_a_numeric_perturbation_column_is_never_split():
    """Bug 6: dose 1e20 ('1e+20') became the pair '1e' + '20' and turned the head start additive."""
    adata = _data(("control", "A", "B", "C"))
    adata.obs["condition"] = (
        adata.obs["condition"].astype(str).map({"control": 0.0, "A": 1e20, "B": -1.0, "C": 2.0}).astype(float)
    )
    model = _model(adata, control_value=0.0, combination_sep="-")
    assert model.vocabulary == ["-1.0", "1e+20", "2.0"]
    assert model.start_shift == "none"


class warnings_as_errors:
    """Every ScflowlmWarning raised inside is an error (a prediction that should not warn)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", ScflowlmWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_a_word_outside_the_vocabulary_is_named_as_written(trained):
    """The warning about words left out of the prompt once named the tokenizer's '[UNK]' instead of the word."""
    model, _ = trained
    controls = (model.adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(ScflowlmWarning, match=r"The prompt word\(s\) \['Qzx'\] are in no prompt"):
        model.predict_perturbation({"cell_type": "B", "condition": "Qzx"}, source=controls, seed=0)
