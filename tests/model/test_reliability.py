"""Reliability and scale (issue 6): bad inputs, divergence, interruption, resuming, save/load across
processes, reproducibility, batched generation, backed AnnData and DDP.

Bad inputs already covered in test_calmflow.py (not repeated here): template field that is not an obs
column, NaN obs value in a template column, missing obsm['X_pca'], inf in obsm, n_cells <= 0,
temperature < 0, condition with an unknown field.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from helpers import HOLDOUT, TEMPLATE, quiet_train, setup, small_model, tiny_config
from lightning.pytorch.callbacks import Callback

import scflowlm
from scflowlm import CaLMFlowModel
from scflowlm.model import NonFiniteLossError
from scflowlm.model._base import _column_means


def data(**kwargs):
    """96 cells x 20 genes, 4 PCs: 12 conditions of 8 cells."""
    return scflowlm.data.synthetic_perturbation(
        **({"n_cells_per_condition": 8, "n_genes": 20, "n_pcs": 4, "seed": 0} | kwargs)
    )


def train(model, **kwargs):
    return quiet_train(model, **({"batch_size": 16} | kwargs))


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class AtEpoch(Callback):
    """Runs ``action(pl_module)`` when epoch ``epoch`` starts; records each validation's loss and weights."""

    def __init__(self, epoch: int, action):
        self.epoch, self.action, self.validated = epoch, action, []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            state = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}
            self.validated.append((float(trainer.callback_metrics["validation_loss"]), state))

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.action(pl_module)


@pytest.fixture(autouse=True)
def _keep_global_seed():
    seed = scvi.settings.seed
    yield
    scvi.settings.seed = seed


# ---------------------------------------------------------------- bad input: AnnData


def test_setup_empty_anndata():
    with pytest.raises(ValueError, match="The AnnData has no cells"):
        setup(data()[:0].copy())


def test_setup_nan_in_obsm():
    adata = data()
    adata.obsm["X_pca"][[4, 9], 1] = np.nan
    with pytest.raises(ValueError, match=r"adata.obsm\['X_pca'\] has NaN or infinite values in 2 cells"):
        setup(adata)


def test_setup_missing_obsm_key():
    with pytest.raises(KeyError, match=r"adata.obsm\['X_umap'\] is missing"):
        setup(data(), obsm_key="X_umap")


@pytest.mark.parametrize("where", ["dense X", "sparse X", "layer"])
def test_setup_non_finite_expression(where):
    adata = data()
    X = adata.X.copy()
    X[7, 3], X[40, 0] = np.nan, np.inf
    if where == "sparse X":
        adata.X = sp.csr_matrix(X)
    elif where == "layer":
        adata.layers["logcounts"] = X
    else:
        adata.X = X
    name = r"adata.layers\['logcounts'\]" if where == "layer" else "adata.X"
    with pytest.raises(ValueError, match=name + r" has NaN or infinite values in 2 cells \(first: row 7\)"):
        setup(adata, layer="logcounts" if where == "layer" else None)


def test_setup_missing_layer():
    adata = data()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(KeyError, match=r"adata.layers\['logcounts'\] is missing; layers are \['counts'\]"):
        setup(adata, layer="logcounts")


def test_train_fewer_cells_than_a_batch():
    model = small_model(setup(data()))
    with pytest.raises(ValueError, match=r"batch_size=500 is larger than the 86 training cells"):
        model.train(max_epochs=1, batch_size=500)


def test_sparse_and_dense_x_give_the_same_model():
    dense = setup(data())
    sparse = data()
    sparse.X = sp.csr_matrix(sparse.X)
    setup(sparse)
    preds = []
    for adata in (dense, sparse):
        scvi.settings.seed = 0
        model = small_model(adata)
        preds.append(model.predict_perturbation(HOLDOUT, n_cells=6, seed=1).X)
        np.testing.assert_allclose(model.gene_means_, np.asarray(dense.X).mean(0), rtol=1e-5)
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Category .* has fewer than 3 cells")
@pytest.mark.parametrize("categorical", [False, True])
def test_integer_obs_values(categorical):
    """Integer doses (plain int64 or categorical of ints) work in templates, predictions and as conditions."""
    adata = data()
    dose = np.tile([1, 10, 100], adata.n_obs // 3)
    adata.obs["dose"] = pd.Categorical(dose) if categorical else dose
    setup(adata, prompt_template="Generate a {cell_type} cell with {condition} at dose {dose}:")
    model = small_model(adata)
    assert "Generate a B cell with IFNB at dose 10:" in model.prompts
    pred = model.predict_perturbation({"cell_type": "B", "condition": "IFNB", "dose": 10}, n_cells=3, seed=0)
    assert (pred.obs["dose"] == "10").all()
    assert pred.obs["prompt"].iloc[0] == "Generate a B cell with IFNB at dose 10:"
    assert bool(pred.obs["seen_in_training"].iloc[0])


# ---------------------------------------------------------------- bad input: saved models


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


def test_train_missing_checkpoint():
    model = small_model(setup(data()))
    with pytest.raises(FileNotFoundError, match=r"ckpt_path 'nowhere.ckpt' is not a file"):
        model.train(max_epochs=1, batch_size=16, ckpt_path="nowhere.ckpt")


# ---------------------------------------------------------------- divergence and interruption


def _poison(pl_module):
    with torch.no_grad():
        next(pl_module.module.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_with_where_and_keeps_best_weights():
    model = small_model(setup(data()))
    spy = AtEpoch(1, _poison)
    with pytest.raises(
        NonFiniteLossError, match=r"training loss became nan at epoch 1, step 5 \(batch 0\)"
    ) as info:
        train(model, max_epochs=3, callbacks=[spy])
    assert "reset to the weights of epoch 0" in " ".join(getattr(info.value, "__notes__", []))
    assert all(torch.isfinite(v).all() for v in model.module.state_dict().values() if v.is_floating_point())
    assert same_weights(weights(model), spy.validated[0][1])


def _interrupt(pl_module):
    raise KeyboardInterrupt


@pytest.mark.parametrize("keep_best", [True, False])
def test_keyboard_interrupt_keeps_best_weights(keep_best):
    scvi.settings.seed = 0
    model = small_model(setup(data()))
    spy = AtEpoch(2, _interrupt)
    handler = signal.getsignal(signal.SIGINT)
    match = (
        r"keeps the weights of epoch [01] \(validation_loss="
        if keep_best
        else r"keeps its last weights \(after 2 epochs\)"
    )
    with pytest.raises(KeyboardInterrupt, match=match):
        train(model, max_epochs=4, lr=1e-2, callbacks=[spy], keep_best=keep_best)
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN is undone
    assert len(spy.validated) == 2
    losses = [loss for loss, _ in spy.validated]
    expected = spy.validated[int(np.argmin(losses))][1] if keep_best else spy.validated[-1][1]
    assert same_weights(weights(model), expected)
    assert not model.module.training
    model.predict_perturbation(HOLDOUT, n_cells=3, seed=0)


def test_resume_from_checkpoint(tmp_path):
    scvi.settings.seed = 0
    first = train(small_model(setup(data())), max_epochs=1, checkpoint_dir=str(tmp_path))
    ckpt = tmp_path / "last.ckpt"
    assert ckpt.is_file()
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0
    assert "optimizer_states" in saved
    assert "lr_schedulers" in saved

    class AtStart(Callback):
        def on_train_start(self, trainer, pl_module):
            self.epoch, self.state = trainer.current_epoch, weights(pl_module)

    scvi.settings.seed = 0
    model, start = small_model(setup(data())), AtStart()
    train(model, max_epochs=2, ckpt_path=str(ckpt), callbacks=[start])
    assert start.epoch == 1  # continues after the checkpointed epoch
    assert same_weights(start.state, weights(first))
    assert list(model.history["train_loss"].index) == [1]  # only the remaining epoch ran
    assert model.is_trained_


# ---------------------------------------------------------------- reproducibility and scale


def test_same_seed_same_predictions_other_seed_differs():
    def run(seed):
        scvi.settings.seed = seed
        model = train(small_model(setup(data())), max_epochs=1)
        return model.predict_perturbation(HOLDOUT, n_cells=8, seed=0).X

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_generation_runs_in_bounded_batches(monkeypatch):
    model = small_model(setup(data()), n_trajectories=2)
    sizes = []
    generate = model.module.generate

    def spy(ids, mask, x0, **kwargs):
        sizes.append(x0.shape[0] * x0.shape[1])  # [S, M, D]: cells in this call
        return generate(ids, mask, x0, **kwargs)

    monkeypatch.setattr(model.module, "generate", spy)
    pred = model.predict_perturbation(HOLDOUT, n_cells=45, seed=0, batch_size=8)
    assert pred.n_obs == 45
    assert np.isfinite(pred.X).all()
    assert max(sizes) <= 8
    assert len(sizes) == 6


def test_train_from_backed_anndata(tmp_path):
    """Only obsm is trained on: X stays on disk, read in chunks for the finiteness check and gene means."""
    mem = data()
    mem.write_h5ad(tmp_path / "a.h5ad")
    adata = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    setup(adata)
    model = train(small_model(adata), max_epochs=1)
    assert adata.isbacked
    assert not isinstance(adata.X, np.ndarray | sp.spmatrix)
    np.testing.assert_allclose(model.gene_means_, mem.X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(_column_means(adata.X, chunk=7), mem.X.mean(0), rtol=1e-5)
    pred = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    assert pred.shape == (5, mem.n_vars)
    assert np.isfinite(pred.X).all()


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
        np.testing.assert_array_equal(got[name], pred, err_msg=name)


# ---------------------------------------------------------------- several processes (Lightning DDP)

DDP_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np, torch
torch.set_num_threads(1)
import scflowlm
from transformers import GPTNeoXConfig

adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4, seed=0)
scflowlm.CaLMFlowModel.setup_anndata(
    adata, prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
    perturbation_key="condition", control_value="control",
)
config = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
model = scflowlm.CaLMFlowModel(adata, n_time_points=4, n_space_tokens=2, backbone=config, n_latent=8, source="noise")
model.train(max_epochs=2, batch_size=16, strategy="ddp", devices=2, accelerator="cpu", enable_progress_bar=False)
rank = model.trainer.global_rank
np.save(f"{sys.argv[1]}_train_cells_rank{rank}.npy", model.train_indices)
print(f"rank {rank} of {model.trainer.world_size} done", flush=True)
if model.trainer.is_global_zero:
    model.save(sys.argv[1])
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rank 0 of 2 done" in out
    assert "rank 1 of 2 done" in out
    cells = [np.load(tmp_path / f"model_train_cells_rank{r}.npy") for r in (0, 1)]
    assert len(cells[0]) == 86
    assert np.array_equal(*cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CaLMFlowModel.load(tmp_path / "model", adata=setup(data()))
    pred = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    assert model.is_trained_
    assert pred.n_obs == 5
    assert np.isfinite(pred.X).all()
