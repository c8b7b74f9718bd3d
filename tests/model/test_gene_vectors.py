"""Gene vectors (``setup_anndata(perturbation_embeddings=...)``): the route to perturbations never measured."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from helpers import quiet_train, tiny_config

import scflowlm
from scflowlm import ScflowlmWarning
from scflowlm.model import CFMModel

SINGLES = [f"S{i}" for i in range(8)]
NEW = "Z"  # a gene with a vector and no training cells


def linear_effects(n=30, d=4, seed=0):
    """One context; each single moves the state by ``M @ v`` (its vector ``v``); Z's cells exist but are held out."""
    rng = np.random.default_rng(seed)
    vectors = pd.DataFrame(rng.normal(size=(len(SINGLES) + 1, 3)), index=[*SINGLES, NEW])
    M = rng.normal(size=(d, 3)) * 1.5
    blocks, labels = [rng.normal(size=(n, d))], ["control"] * n
    for s in [*SINGLES, NEW]:
        blocks.append(rng.normal(size=(n, d)) + M @ vectors.loc[s].to_numpy())
        labels += [s] * n
    X = np.vstack(blocks).astype(np.float32)
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"cell_type": "A", "condition": labels}))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.obsm["X_pca"] = X - X.mean(0)
    adata.varm["PCs"] = np.eye(d, dtype=np.float32)
    adata.uns["gene_vectors"] = vectors
    return adata, M @ vectors.loc[NEW].to_numpy()


def _model(cls, adata, **setup):
    scvi.settings.seed = 0
    cls.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell with {condition}:",
        perturbation_key="condition",
        control_value="control",
        **setup,
    )
    kwargs = {"backbone": tiny_config(), "n_time_points": 3, "n_latent": 4} if cls is not CFMModel else {}
    return cls(adata, **kwargs)


@pytest.mark.parametrize("cls", [scflowlm.CaLMFlowModel, CFMModel])
def test_a_gene_with_a_vector_and_no_cells_is_predicted_and_survives_save_load(cls, tmp_path):
    adata, truth = linear_effects()
    model = _model(cls, adata, perturbation_embeddings="gene_vectors")
    assert model.start_shift == "additive"  # "auto" with gene vectors
    held = {"cell_type": "A", "condition": NEW}
    quiet_train(model, holdout=[held], max_epochs=2, batch_size=30)
    assert NEW in model.vocabulary
    assert not model.module.encoder.known[model.vocabulary.index(NEW)]
    controls = (adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(ScflowlmWarning, match="never seen"):
        pred = model.predict_perturbation(held, source=controls, seed=0)
    change = pred.obsm["X_pca"].mean(0) - adata.obsm["X_pca"][controls].mean(0)
    assert np.corrcoef(change, truth)[0, 1] > 0.8  # the vector's estimate, not zero
    model.save(tmp_path / "m", save_anndata=False)
    loaded = cls.load(tmp_path / "m", adata=adata)
    pd.testing.assert_frame_equal(loaded.perturbation_embeddings, model.perturbation_embeddings)
    with pytest.warns(ScflowlmWarning, match="never seen"):
        again = loaded.predict_perturbation(held, source=controls, seed=0)
    np.testing.assert_allclose(again.X, pred.X, atol=1e-5)


def test_with_a_zero_correction_an_unmeasured_gene_gets_the_ridge_estimate_of_its_vector():
    adata, _ = linear_effects()
    model = _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings="gene_vectors")
    held = {"cell_type": "A", "condition": NEW}
    quiet_train(model, holdout=[held], batch_size=30, train_size=1.0)  # the means of all training cells
    model.module.head.sample = lambda h, **kw: torch.zeros(*h.shape[:2], model.n_features)
    controls = (adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(ScflowlmWarning):
        pred = model.predict_perturbation(held, source=controls, seed=0)
    states, labels = adata.obsm["X_pca"], adata.obs["condition"].to_numpy()
    control_mean = states[labels == "control"].mean(0)
    shifts = np.stack([states[labels == s].mean(0) - control_mean for s in SINGLES])
    vectors = adata.uns["gene_vectors"]
    expected = scflowlm.data.vector_shifts(
        vectors.loc[SINGLES].to_numpy(), shifts, vectors.loc[[NEW]].to_numpy(), alpha="loo"
    )[0]
    np.testing.assert_allclose(pred.obsm["X_pca"] - states[controls], np.tile(expected, (30, 1)), atol=1e-4)


def test_a_gene_without_vector_or_cells_is_named_and_read_from_the_prompt_alone():
    adata, _ = linear_effects()
    vectors = adata.uns["gene_vectors"].drop(index=NEW)
    model = _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings=vectors)
    held = {"cell_type": "A", "condition": NEW}
    quiet_train(model, holdout=[held], batch_size=30)
    controls = (adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(ScflowlmWarning, match=r"no gene vector and no training cells: \['Z'\]"):
        pred = model.predict_perturbation(held, source=controls, seed=0)
    assert pred.n_obs == int(controls.sum())


def test_perturbation_embeddings_that_cannot_work_name_the_fix():
    adata, _ = linear_effects()
    with pytest.raises(KeyError, match="not a key of adata.uns"):
        _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings="nowhere")
    bad = adata.uns["gene_vectors"].copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite numbers"):
        _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings=bad)
    with pytest.raises(TypeError, match="DataFrame with one row per perturbation"):
        _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings=np.ones((3, 2)))


def test_words_of_no_training_prompt_are_left_out_of_the_prompt(monkeypatch):
    """A never-measured gene's word has a random (untrained) embedding: the prompt leaves it out and says so."""
    adata, _ = linear_effects()
    model = _model(scflowlm.CaLMFlowModel, adata)
    held = {"cell_type": "A", "condition": NEW}
    quiet_train(model, holdout=[held], batch_size=30)
    seen = []
    real = model.module.sample
    monkeypatch.setattr(
        model.module,
        "sample",
        lambda ids, mask, *a, **k: seen.append((ids, mask)) or real(ids, mask, *a, **k),
    )
    controls = (adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(
        ScflowlmWarning, match=r"prompt word\(s\) \['Z'\] are in no prompt of a training condition"
    ):
        model.predict_perturbation(held, source=controls, seed=0)
    ids, mask = seen[-1]
    words = model.prompt_tokenizer.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert words == ["Generate", "a", "A", "cell", "with", ":"]
    # a measured single keeps every word
    model.predict_perturbation({"cell_type": "A", "condition": "S1"}, source=controls, seed=0)
    ids, mask = seen[-1]
    assert "S1" in model.prompt_tokenizer.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())


# ---------------------------------------------------------------- issue 30: names, tables and saves


def test_vectors_match_perturbations_by_the_columns_type_and_say_what_has_none():
    """Bug 3: names compared as exact text; nothing said when no vector matched; start_shift='auto' still additive."""
    adata, _ = linear_effects()
    vectors = adata.uns["gene_vectors"].rename(index=str.lower)  # another case: matches no perturbation
    with pytest.warns(
        ScflowlmWarning, match=r"9 of the 9 perturbations with cells have no vector.*another case"
    ):
        model = _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings=vectors)
    assert model.start_shift == "none"  # the vectors cover no measured single: nothing to fit a head start on
    spaced = adata.uns["gene_vectors"].rename(index=lambda n: f" {n} ")
    model = _model(scflowlm.CaLMFlowModel, adata.copy(), perturbation_embeddings=spaced)
    assert model.vocabulary == sorted([*SINGLES, NEW])
    assert model.start_shift == "additive"


@pytest.mark.parametrize(
    ("vectors", "match"),
    [
        (pd.DataFrame(np.ones((2, 3)), index=["S0+S1", "S2"]), "a combination of"),
        (pd.DataFrame(np.ones((0, 3))), "has 0 rows"),
        (pd.DataFrame(np.full((2, 3), 1e39), index=["S0", "S1"]), "beyond float32's range"),
        ({"S0": [1.0, 2.0], "S1": [1.0, 2.0, 3.0]}, r"different lengths \(\[2, 3\]"),
        (
            pd.DataFrame(np.ones((2, 3)), index=pd.MultiIndex.from_tuples([("S0", 1), ("S1", 1)])),
            "MultiIndex .* one name per row",
        ),
    ],
)
def test_vector_tables_that_cannot_work_name_the_fix(vectors, match):
    adata, _ = linear_effects()
    with pytest.raises(ValueError, match=match):
        _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings=vectors)


def test_vectors_need_a_perturbation_key():
    adata, _ = linear_effects()
    with pytest.raises(ValueError, match="need a perturbation_key"):
        scflowlm.CaLMFlowModel.setup_anndata(
            adata, prompt_template="Generate a {condition} cell:", perturbation_embeddings="gene_vectors"
        )


def test_a_vector_table_in_uns_keeps_the_anndata_writable(tmp_path):
    """Bug 4: integer column labels made write_h5ad raise, and a failed save left a folder with adata.h5ad only."""
    adata, _ = linear_effects()
    adata.uns["gene_vectors"] = scflowlm.data.gene_loading_embeddings(adata, genes=["0", "1"])
    assert list(adata.uns["gene_vectors"].columns) == ["0", "1", "2", "3"]
    adata.write_h5ad(tmp_path / "ok.h5ad")
    adata.uns["theirs"] = pd.DataFrame(np.ones((2, 3)), index=["a", "b"])  # int column labels: not writable
    model = _model(scflowlm.CaLMFlowModel, adata, perturbation_embeddings="theirs")
    with pytest.raises(TypeError):
        model.save(str(tmp_path / "model"), save_anndata=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.h5ad"]  # nothing half-written
    model.save(str(tmp_path / "model"))
    assert (tmp_path / "model" / "model.pt").exists()
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        model.save(str(tmp_path / "model"))


@pytest.mark.parametrize("cls", [scflowlm.CaLMFlowModel, CFMModel])
def test_the_head_start_of_a_new_gene_is_the_mean_shift_when_vectors_are_noise(cls):
    """Vectors unrelated to the effects: the head start falls back to the mean training shift, not noise."""
    adata, _ = linear_effects()
    noise = pd.DataFrame(np.random.default_rng(7).normal(size=(len(SINGLES) + 1, 3)), index=[*SINGLES, NEW])
    model = _model(cls, adata, perturbation_embeddings=noise)
    held = {"cell_type": "A", "condition": NEW}
    quiet_train(
        model, holdout=[held], batch_size=30, train_size=1.0, max_steps=0
    )  # an untrained flow: its head start
    controls = (adata.obs["condition"] == "control").to_numpy()
    with pytest.warns(ScflowlmWarning):
        pred = model.predict_perturbation(held, source=controls, seed=0)
    train = adata[(adata.obs["condition"] != NEW).to_numpy()].copy()
    mean = scflowlm.tl.baseline_mean_shift(train, conditions=[held])
    np.testing.assert_allclose(pred.obsm["X_pca"], mean.obsm["X_pca"], atol=1e-4)
