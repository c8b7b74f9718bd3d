"""Adapting a trained model to new data: the query in the reference's genes and PCA, vocabularies extended,
everything learned kept, frozen parts fixed, save/load of the adapted model."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import torch
from helpers import quiet_train, tiny_config

import scflowlm
from scflowlm import ScflowlmWarning
from scflowlm.model import CFMModel

SETUP = {
    "prompt_template": "Generate a {cell_type} cell with {condition}:",
    "perturbation_key": "condition",
    "control_value": "control",
}
KWARGS = {
    scflowlm.CaLMFlowModel: {"backbone": tiny_config(), "n_time_points": 3, "n_latent": 4},
    CFMModel: {"n_hidden": 16, "n_layers": 3},
}


def _split():
    """Reference: cell types B and T without LPS; query: NK with LPS (a new single), no IFNB+TNF."""
    adata = scflowlm.data.synthetic_perturbation(
        n_cells_per_condition=24,
        n_genes=40,
        n_pcs=8,
        seed=0,
        perturbations=("control", "IFNB", "TNF", "IFNB+TNF", "LPS"),
    )
    types, condition = adata.obs["cell_type"].to_numpy(), adata.obs["condition"].to_numpy()
    ref = adata[np.isin(types, ["B", "T"]) & (condition != "LPS")].copy()
    query = adata[(types == "NK") & (condition != "IFNB+TNF")].copy()
    return adata, ref, query


@pytest.fixture(scope="module", params=[scflowlm.CaLMFlowModel, CFMModel], ids=["CaLMFlow", "CFM"])
def reference(request):
    cls = request.param
    adata, ref, query = _split()
    cls.setup_anndata(ref, **SETUP)
    model = quiet_train(cls(ref, **KWARGS[cls]), max_epochs=2, batch_size=16)
    return cls, model, ref, query


def test_query_genes_are_aligned_to_the_reference_pca(reference):
    """A shuffled, partial gene set gives the coordinates the reference's own map gives (missing genes as zeros)."""
    cls, model, _, query = reference
    order = np.random.default_rng(0).permutation(query.n_vars)
    partial = query[:, order[:-5]].copy()  # shuffled, 5 genes missing
    partial.var_names = partial.var_names.astype(str)
    with pytest.warns(
        ScflowlmWarning, match=r"35 of the reference's 40 genes: 5 missing ones are added as zeros"
    ):
        prepared = cls.prepare_query_anndata(partial, model)
    zeroed = query.copy()
    zeroed.X = np.asarray(zeroed.X).copy()
    zeroed.X[:, order[-5:]] = 0.0
    expected = model.gene_map.project(zeroed, layer=None)
    np.testing.assert_allclose(prepared.obsm["X_pca"], expected, atol=1e-5)
    assert list(prepared.var_names) == list(map(str, model.var_names_))
    assert list(query.var_names) == list(map(str, model.var_names_))  # the user's AnnData is not changed


def test_extra_query_genes_are_dropped_with_a_warning_that_names_only_them(reference):
    cls, model, _, query = reference
    wider = ad.concat([query, query[:, :3]], axis=1)  # three genes the reference does not know
    wider.var_names = [*map(str, query.var_names), "NEW1", "NEW2", "NEW3"]
    with pytest.warns(ScflowlmWarning, match=r"40 of the reference's 40 genes: 3 genes") as record:
        prepared = cls.prepare_query_anndata(wider, model)
    assert "zeros" not in str(record[0].message)
    assert list(prepared.var_names) == list(map(str, model.var_names_))


def test_the_adapted_model_keeps_every_reference_prediction(reference):
    """Vocabularies extended (a new single, a new cell type) without changing a reference condition's cells."""
    cls, model, ref, query = reference
    prepared = cls.prepare_query_anndata(query, model)
    adapted = cls.load_query_data(prepared, model)
    assert "LPS" in adapted.vocabulary
    assert "LPS" not in model.vocabulary
    assert len(adapted.condition_table) > len(model.condition_table)
    controls = ref[(ref.obs.cell_type == "B").to_numpy() & (ref.obs.condition == "control").to_numpy()]
    cond = {"cell_type": "B", "condition": "IFNB"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScflowlmWarning)
        before = model.predict_perturbation(cond, source=controls, seed=0)
        after = adapted.predict_perturbation(cond, source=controls, seed=0)
    np.testing.assert_allclose(after.obsm["X_pca"], before.obsm["X_pca"], atol=1e-4)
    assert after.obs["seen_in_training"].all()


def test_frozen_parameters_stay_and_the_adapted_model_saves_and_loads(reference, tmp_path):
    cls, model, _, query = reference
    prepared = cls.prepare_query_anndata(query, model)
    adapted = cls.load_query_data(prepared, model, freeze="backbone")
    frozen = {n: p.detach().clone() for n, p in adapted.module.named_parameters() if not p.requires_grad}
    assert frozen
    trainable = {n: p.detach().clone() for n, p in adapted.module.named_parameters() if p.requires_grad}
    quiet_train(adapted, max_epochs=2, batch_size=16)
    now = dict(adapted.module.named_parameters())
    for name, value in frozen.items():
        torch.testing.assert_close(now[name], value, msg=name)
    assert any(not torch.equal(now[n], v) for n, v in trainable.items())  # the rest learned
    controls = (prepared.obs["condition"] == "control").to_numpy()
    new = {"cell_type": "NK", "condition": "IFNB+LPS"}  # a new combination of a reference and a query single
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScflowlmWarning)
        pred = adapted.predict_perturbation(new, source=controls, seed=0)
        adapted.save(str(tmp_path / "adapted"))
        loaded = cls.load(str(tmp_path / "adapted"), adata=prepared)
        again = loaded.predict_perturbation(new, source=controls, seed=0)
    np.testing.assert_array_equal(again.X, pred.X)
    assert loaded.adapted_
    assert loaded.freeze_ == "backbone"
    assert {n for n, p in loaded.module.named_parameters() if not p.requires_grad} == set(frozen)


def test_adapting_checks_its_arguments(reference):
    cls, model, _, query = reference
    prepared = cls.prepare_query_anndata(query, model)
    with pytest.raises(ValueError, match=r"freeze must be one of \('none', 'backbone'\)"):
        cls.load_query_data(prepared, model, freeze="everything")
    other = CFMModel if cls is scflowlm.CaLMFlowModel else scflowlm.CaLMFlowModel
    with pytest.raises(TypeError, match=f"reference must be a {other.__name__}"):
        other.load_query_data(prepared, model)


@pytest.mark.parametrize("with_history", [True, False], ids=["reference history", "none"])
def test_fine_tuning_keeps_a_history(reference, monkeypatch, with_history):
    """Fine-tuning's epochs follow the reference's; without them, its own: no 'cannot be updated' warning."""
    cls, model, _, query = reference
    if not with_history:
        monkeypatch.setattr(model, "history_", None)
    adapted = cls.load_query_data(cls.prepare_query_anndata(query, model), model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapted.train(max_epochs=2, batch_size=32, enable_progress_bar=False, enable_checkpointing=False)
    assert not [w for w in caught if "cannot be updated" in str(w.message)]
    before = len(model.history_["train_loss"]) if with_history else 0
    assert len(adapted.history_["train_loss"]) == before + 2
