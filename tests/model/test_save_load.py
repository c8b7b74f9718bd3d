"""save and load: nothing lost on the way, and AnnData that does not fit a saved model refused with the cause."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scvi
import torch
from helpers import HOLDOUT, TEMPLATE, quiet_train, setup, small_model, tiny_config

import scflowlm
from scflowlm import CaLMFlowModel


def data(**kwargs):
    """96 cells x 20 genes, 4 PCs: 12 conditions of 8 cells."""
    return scflowlm.data.synthetic_perturbation(
        **({"n_cells_per_condition": 8, "n_genes": 20, "n_pcs": 4, "seed": 0} | kwargs)
    )


def train(model, **kwargs):
    return quiet_train(model, **({"batch_size": 16} | kwargs))


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
    prompts = [TEMPLATE.format(cell_type=c, condition=p) for c in "ABC" for p in "xyz"] + [
        "B NK T IFNB TNF + unstimulated an"
    ]
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


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An (untrained) model saved without its AnnData; registry checks need no training."""
    path = tmp_path_factory.mktemp("saved") / "model"
    small_model(setup(data())).save(path)
    return path


def _other_genes(a):
    return a[:, 2:].copy()


def _renamed_genes(a):
    a.var_names = [f"g{i}" for i in range(a.n_vars)]
    return a


def _reordered_genes(a):
    return a[:, ::-1].copy()


def _new_category(a):
    a.obs["cell_type"] = a.obs["cell_type"].cat.rename_categories({"B": "Plasma"})
    return a


def _narrower_obsm(a):
    a.obsm["X_pca"] = a.obsm["X_pca"][:, :3]
    return a


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            _other_genes,
            r"genes differ .*18 genes vs 20 in training; missing: \['gene0', 'gene1'\]; not in training: \[\]",
        ),
        (_renamed_genes, r"genes differ .*missing: \['gene0', .*not in training: \['g0', "),
        (_reordered_genes, r"genes differ .*the same genes in another order"),
        (_new_category, r"obs\['cell_type'\] has value\(s\) \['Plasma'\] the model was not trained on"),
        (_narrower_obsm, r"does not match .*obsm\['X_pca'\] has 3 .*column count of 4"),
    ],
)
def test_load_against_other_anndata(saved, change, match):
    adata = change(data())
    with pytest.raises(ValueError, match=match):
        CaLMFlowModel.load(saved, adata=adata)


def test_load_a_subset_of_cells_is_fine(saved):
    adata = data()
    model = CaLMFlowModel.load(saved, adata=adata[adata.obs.cell_type != "NK"].copy())
    assert len(model.conditions) == 12


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        ("missing dir", FileNotFoundError, "the directory does not exist"),
        ("no model file", FileNotFoundError, r"holds no saved model: model.pt is missing"),
        ("garbage", ValueError, "cannot be read: it is corrupt, incomplete or not a CaLMFlowModel save"),
        ("truncated", ValueError, "cannot be read: it is corrupt"),
    ],
)
def test_load_missing_or_corrupt_directory(saved, tmp_path, damage, error, match):
    path = tmp_path / "model"
    if damage != "missing dir":
        path.mkdir()
        content = (saved / "model.pt").read_bytes()
        if damage == "garbage":
            (path / "model.pt").write_bytes(b"not a torch file")
        elif damage == "truncated":
            (path / "model.pt").write_bytes(content[: len(content) // 2])
    with pytest.raises(error, match=match):
        CaLMFlowModel.load(path, adata=data())


def test_load_without_anndata_then_save_keeps_the_genes(tmp_path):
    """Bug 2: load(dir) without AnnData, then save(): the gene names were lost (genes '0', '1', ...)."""
    adata = setup(data())
    train(small_model(adata)).save(tmp_path / "a")
    loaded = CaLMFlowModel.load(tmp_path / "a")
    loaded.save(tmp_path / "b")
    again = CaLMFlowModel.load(tmp_path / "b")
    assert list(again.predict_perturbation(HOLDOUT, n_cells=2, seed=0).var_names) == list(adata.var_names)


@pytest.mark.parametrize("change", ["sign flip", "shift"])
def test_load_with_another_pca_is_refused(tmp_path, change):
    """Bug 7: a recomputed PCA (a component's sign flipped) or shifted coordinates moved every prediction."""
    adata = setup(data())
    train(small_model(adata)).save(tmp_path / "m")
    other = data()
    if change == "sign flip":
        other.obsm["X_pca"][:, 0] *= -1
        other.varm["PCs"][:, 0] *= -1
    else:
        other.obsm["X_pca"] = other.obsm["X_pca"] + 1.5
    with pytest.raises(ValueError, match=r"is not the PCA the model was trained on: .*median relative error"):
        CaLMFlowModel.load(tmp_path / "m", adata=other)


def test_load_a_control_source_save_with_a_subset_without_controls(tmp_path):
    adata = setup(data())
    train(small_model(adata, source="control")).save(tmp_path / "m")
    subset = adata[(adata.obs.condition != "control").to_numpy()].copy()
    model = CaLMFlowModel.load(tmp_path / "m", adata=subset)
    assert model.module.source == "control"
    controls = adata[((adata.obs.condition == "control") & (adata.obs.cell_type == "NK")).to_numpy()].copy()
    assert model.predict_perturbation(HOLDOUT, source=controls, seed=0).n_obs == controls.n_obs
    with pytest.raises(ValueError, match="no registered control cells for the context"):
        model.predict_perturbation(HOLDOUT, seed=0)


# ---------------------------------------------------------------- nothing lost: save, load in a new process

LOAD_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import anndata as ad, numpy as np, torch
torch.set_num_threads(1)
from scflowlm import CaLMFlowModel
root, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    adata = None if "_with_" in name else ad.read_h5ad(root + "/adata.h5ad")
    model = CaLMFlowModel.load(root + "/" + name, adata=adata)
    out[name] = model.predict_perturbation({"cell_type": "NK", "condition": "IFNB+TNF"}, n_cells=6, seed=11).X
np.savez(root + "/pred.npz", **out)
"""


def test_save_load_in_new_process(tmp_path):
    from transformers import GPTNeoXModel

    from scflowlm.nn import word_tokenizer

    adata = setup(data())
    adata.write_h5ad(tmp_path / "adata.h5ad")
    tok = word_tokenizer(
        [TEMPLATE.format(cell_type=c, condition=p) for c in "BT" for p in "xy"]
        + ["NK IFNB TNF + an unstimulated"]
    )
    GPTNeoXModel(tiny_config(vocab_size=len(tok))).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    expected = {}
    for backbone in ("random", "pretrained"):
        scvi.settings.seed = 0
        model = train(
            small_model(adata, **({"backbone": str(tmp_path / "lm")} if backbone == "pretrained" else {}))
        )
        pred = model.predict_perturbation(HOLDOUT, n_cells=6, seed=11).X
        for with_adata in (False, True):
            name = f"{backbone}_{'with' if with_adata else 'without'}_adata"
            model.save(tmp_path / name, save_anndata=with_adata)
            expected[name] = pred
        with pytest.raises(ValueError, match="already exists"):  # overwrite protection
            model.save(tmp_path / name)
        model.save(tmp_path / name, save_anndata=True, overwrite=True)
    for f in (tmp_path / "lm").iterdir():  # the loaded models must not need the pretrained files
        f.unlink()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_SCRIPT), str(tmp_path), *expected],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "pred.npz")
    for name, pred in expected.items():
        # equal up to float32 rounding: kernels of a long-running test process may differ in the last bit
        np.testing.assert_allclose(got[name], pred, rtol=1e-5, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------- damaged or foreign saves name their cause


def _damage(saved, tmp_path, change):
    """A copy of the saved model whose model.pt ``change(dict)`` edited."""
    import shutil

    import torch

    path = tmp_path / "damaged"
    shutil.copytree(saved, path)
    content = torch.load(path / "model.pt", weights_only=False)
    change(content)
    torch.save(content, path / "model.pt")
    return path


def _nan_weight(c):
    key = next(k for k, v in c["model_state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    c["model_state_dict"][key][0] = float("nan")


def _drop_weight(c):
    c["model_state_dict"].pop(next(iter(c["model_state_dict"])))


def _reshape_weight(c):
    key = next(k for k, v in c["model_state_dict"].items() if k.endswith("weight") and v.dim() == 2)
    c["model_state_dict"][key] = c["model_state_dict"][key][:, :1]


def _no_gene_means(c):
    c["attr_dict"].pop("gene_means_")


def _no_var_names(c):
    c["attr_dict"].pop("var_names_")


def _short_condition_means(c):
    c["model_state_dict"]["condition_means"] = c["model_state_dict"]["condition_means"][:-1]


def _wide_in_head_start(c):
    prior = c["model_state_dict"]["in_head_start"]
    c["model_state_dict"]["in_head_start"] = torch.cat([prior, prior[:, :1]], dim=1)


def _newer_parameter(c):
    c["attr_dict"]["init_params_"]["non_kwargs"]["gene_embeddings_v9"] = 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_nan_weight, r"NaN or infinite weights in 1 tensor.*diverged, or the file is damaged"),  # bug 6
        (_drop_weight, r"cannot be read: it is corrupt, incomplete"),
        (_reshape_weight, r"cannot be read: it is corrupt, incomplete"),
        (_no_gene_means, r"is incomplete: its attributes lack \['gene_means_'\]"),
        (_no_var_names, r"is incomplete: its attributes lack \['var_names_'\]"),
        (
            _short_condition_means,
            r"is damaged: its data do not fit its \d+ conditions \(condition_means has shape",
        ),
        (_wide_in_head_start, r"is damaged: .*in_head_start has shape"),
        (_newer_parameter, r"saved by a newer scflowlm .*gene_embeddings_v9.*Upgrade scflowlm"),
    ],
)
def test_damaged_or_newer_save_names_the_cause(saved, tmp_path, change, match):
    path = _damage(saved, tmp_path, change)
    with pytest.raises(ValueError, match=match):
        CaLMFlowModel.load(path, adata=data())


def test_load_of_the_model_file_asks_for_its_folder(saved):
    with pytest.raises(NotADirectoryError, match=r"model.pt' is a file; pass the folder that holds it"):
        CaLMFlowModel.load(saved / "model.pt", adata=data())


def _earlier_release(c):
    """A save of the release before the renames: 'prior' names in the state and the init parameters."""
    state = c["model_state_dict"]
    for new, old in (
        ("in_head_start", "in_prior"),
        ("encoder.known", "known_singles"),
        ("encoder.covered_token", "encoder.in_prior"),
    ):
        state[old] = state.pop(new)
    params = c["attr_dict"]["init_params_"]["non_kwargs"]
    params["prior_dropout"] = params.pop("head_start_dropout")


def test_a_save_of_the_earlier_release_loads_the_same_model(saved, tmp_path):
    """Renamed buffers and the renamed head_start_dropout (prior_dropout) of an earlier save load as they were."""
    path = _damage(saved, tmp_path, _earlier_release)
    adata = data()
    with pytest.warns(FutureWarning, match="prior_dropout is now called head_start_dropout"):
        old = CaLMFlowModel.load(path, adata=adata)
    new = CaLMFlowModel.load(saved, adata=adata)
    for key, value in new.module.state_dict().items():
        torch.testing.assert_close(old.module.state_dict()[key], value)
    assert (
        old.init_params_["non_kwargs"]["head_start_dropout"]
        == new.init_params_["non_kwargs"]["head_start_dropout"]
    )
