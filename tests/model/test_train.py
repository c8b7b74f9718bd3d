"""train: arguments checked, the held-out split, divergence, interruption, resuming, reproducibility, scale."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from helpers import HOLDOUT, quiet_train, setup, small_model, tiny_config
from lightning.pytorch.callbacks import Callback

import scflowlm
from scflowlm import CaLMFlowModel
from scflowlm._utils import column_mean
from scflowlm.train import NonFiniteLossError


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


# ---------------------------------------------------------------- arguments and the split


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, r"max_epochs must be an integer >= 1, got 0"),  # bug 9
        ({"max_epochs": -1}, r"max_epochs must be an integer >= 1, got -1"),
        ({"max_epochs": 1.5}, r"max_epochs must be an integer >= 1, got 1.5"),
        ({"train_size": 1.5}, r"train_size must be in \(0, 1\], got 1.5"),  # bug 5
        ({"validation_size": -0.2}, r"validation_size must be in \[0, 1\) or None, got -0.2"),
        ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, got 2.5"),
        ({"lr": float("nan")}, r"lr must be a positive number"),
        ({"holdout": "NK"}, r"holdout must be a dict of obs column -> value"),
        ({"holdout": {"cell_type": "Plasma"}}, r"matches no cell"),
        (
            {"holdout": [{"condition": c} for c in ("control", "IFNB", "TNF", "IFNB+TNF")]},
            r"covers all 96 cells",
        ),
        ({"holdout": {"dose": 1}}, r"names unknown obs column\(s\) \['dose'\]"),
        ({"batch_size": 500}, r"batch_size=500 is larger than the 86 training cells"),
        ({"ckpt_path": "nowhere.ckpt"}, r"ckpt_path 'nowhere.ckpt' is not a file"),
        ({"ema_decay": "0.99"}, r"ema_decay must be a number in \(0, 1\) .*got '0.99'"),
        ({"ema_decay": 1.0}, r"ema_decay must be a number in \(0, 1\)"),
        (  # a regression of issue 30: Lightning's "invalid dataloader ... Found None"
            {"train_size": 1.0, "early_stopping": True},
            r"early_stopping=True needs a validation set, but train_size=1.0 .*leaves no validation cells",
        ),
    ],
)
def test_bad_arguments_name_the_cause(kwargs, match):
    model = small_model(setup(data()))
    scale, mean = model.module.x_scale.clone(), model.module.x_mean.clone()
    with pytest.raises((ValueError, TypeError, KeyError, FileNotFoundError), match=match):
        model.train(**({"max_epochs": 1, "batch_size": 16} | kwargs))
    assert not model.is_trained_  # nothing was marked trained
    assert torch.equal(model.module.x_scale, scale)
    assert torch.equal(model.module.x_mean, mean)


def test_holdout_is_the_test_set_and_values_are_typed():
    adata = setup(data())
    model = quiet_train(small_model(adata), holdout=[HOLDOUT], batch_size=16)
    held = ((adata.obs.cell_type == "NK") & (adata.obs.condition == "IFNB+TNF")).to_numpy()
    assert set(model.test_indices_) == set(np.nonzero(held)[0])
    assert not set(model.train_indices_) & set(model.test_indices_)
    codes = set(model.train_conditions_)
    table = model.condition_table
    assert len(codes) == 11
    assert table.index_of(table.encode(HOLDOUT)[1]) not in codes
    adata.obs["dose"] = np.tile([1.0, 10.0], adata.n_obs // 2)
    numeric = quiet_train(small_model(adata), holdout={"dose": 10}, batch_size=16)  # 10 matches 10.0
    assert len(numeric.test_indices_) == adata.n_obs // 2


def test_training_reduces_loss(adata):
    setup(adata)
    model = quiet_train(small_model(adata), max_epochs=5)
    loss = model.history["train_loss"]["train_loss"].to_numpy(dtype=float)
    assert loss[-1] < loss[0]


def test_an_error_in_training_surfaces_as_it_is(capsys):
    """scvi-tools prints "Exception raised during training. <class 'NameError'>" before re-raising; we do not."""

    class Boom(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            raise ZeroDivisionError("boom")

    model = small_model(setup(data()))
    with pytest.raises(ZeroDivisionError, match="boom"):
        train(model, max_epochs=1, callbacks=[Boom()])
    assert "NameError" not in capsys.readouterr().out


def test_train_prints_no_library_chatter(capfd, caplog):
    """Progress and loss, not Lightning's device lines, tips or library-internal deprecations; verbose brings them."""
    caplog.set_level(logging.INFO)
    model = small_model(setup(data()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    shown = "".join(capfd.readouterr()) + caplog.text + " ".join(str(w.message) for w in caught)
    for chatter in ("GPU available", "TPU available", "litlogger", "deprecated"):
        assert chatter not in shown
    caplog.clear()
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, verbose=True)
    assert "GPU available" in caplog.text


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
    np.testing.assert_allclose(column_mean(adata.X, chunk=7), mem.X.mean(0), rtol=1e-5)
    pred = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    assert pred.shape == (5, mem.n_vars)
    assert np.isfinite(pred.X).all()


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


def test_control_targets_false_trains_on_perturbed_cells_only():
    adata = setup(data())
    model = quiet_train(
        small_model(adata, source="control", control_targets=False), holdout=[HOLDOUT], batch_size=16
    )
    is_control = (adata.obs.condition == "control").to_numpy()
    assert not is_control[model.train_indices_].any()
    assert not is_control[model.validation_indices_].any()
    held = ((adata.obs.cell_type == "NK") & (adata.obs.condition == "IFNB+TNF")).to_numpy()
    assert set(model.test_indices_) == set(np.nonzero(held)[0])  # the test set is still the held-out cells
    assert len(model.module.control_x) > 0  # the controls are the sources
    assert model.predict_perturbation(HOLDOUT, n_cells=3, seed=0).n_obs == 3


def test_ema_weights_are_what_the_model_ends_with():
    from scflowlm.train import EMAWeights

    class Last(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.raw = weights(pl_module)

    model, last = small_model(setup(data())), Last()
    train(model, max_epochs=3, ema_decay=0.5, keep_best=False, callbacks=[last])
    final = weights(model)
    assert not same_weights(final, last.raw)  # an average, not the last step's weights
    ema = EMAWeights(0.5)
    assert ema.decay == 0.5
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        EMAWeights(1.0)


def test_too_few_perturbed_cells_says_controls_are_sources():
    adata = setup(data())
    model = small_model(adata, source="control")  # control_targets=False, the default
    with pytest.raises(
        ValueError, match=r"larger than the \d+ training cells \(\d+ control cells are not flows"
    ):
        model.train(max_epochs=1, batch_size=80, train_size=0.9)


def test_only_control_cells_say_there_is_nothing_to_train_on():
    """With only control cells and control_targets=False, no smaller batch_size helps: say why, not that."""
    adata = data()
    adata = setup(adata[adata.obs["condition"] == "control"].copy())
    model = small_model(adata, source="control")
    with pytest.raises(ValueError, match=r"no cells to train on \(\d+ control cells are not flows") as err:
        model.train(max_epochs=1, batch_size=16)
    assert "smaller batch_size" not in str(err.value)


# ---------------------------------------------------------------- resuming only what a checkpoint can continue


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    scvi.settings.seed = 0
    train(small_model(setup(data())), max_epochs=1, checkpoint_dir=str(path))
    return path / "last.ckpt"


def _resume(model, ckpt):
    scvi.settings.seed = 0
    model.train(max_epochs=2, batch_size=16, ckpt_path=str(ckpt), enable_progress_bar=False)


def test_resume_refuses_a_checkpoint_of_other_data(checkpoint):
    """Bug 10: a checkpoint made on other cells silently replaced the new data's standardisation."""
    other = data(seed=1)
    other.obs_names = [f"other{i}" for i in range(other.n_obs)]
    with pytest.raises(ValueError, match=r"written while training on other data \(cells"):
        _resume(small_model(setup(other)), checkpoint)
    fewer = data()[1:].copy()
    with pytest.raises(ValueError, match=r"other data \(cells, training cells differ\)"):
        _resume(small_model(setup(fewer)), checkpoint)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (CaLMFlowModel, {"n_latent": 4}, r"another architecture or class .*other shapes"),
        (scflowlm.model.CFMModel, {"n_hidden": 16}, r"another architecture or class .*weights missing"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_architecture(checkpoint, cls, kwargs, match):
    adata = data()
    cls.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        control_template="Generate an unstimulated {cell_type} cell:",
        perturbation_key="condition",
        control_value="control",
    )
    model = small_model(adata, **kwargs) if cls is CaLMFlowModel else cls(adata, **kwargs)
    with pytest.raises(ValueError, match=match):
        _resume(model, checkpoint)


def test_resume_refuses_a_checkpoint_of_the_other_model_class(tmp_path):
    """An OT-CFM checkpoint resumed by CaLMFlow (the reverse of the case above) names the cause, not torch's error."""
    scvi.settings.seed = 0
    adata = data()
    scflowlm.model.CFMModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        control_template="Generate an unstimulated {cell_type} cell:",
        perturbation_key="condition",
        control_value="control",
    )
    cfm = scflowlm.model.CFMModel(adata, n_hidden=16)
    train(cfm, max_epochs=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"another architecture or class"):
        _resume(small_model(setup(data())), tmp_path / "last.ckpt")


def test_resume_refuses_a_file_that_is_no_checkpoint(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a Lightning checkpoint .*last.ckpt"):
        _resume(small_model(setup(data())), text)


def test_a_subclass_swaps_the_splitter_class():
    """train() wires classes together: a new split is one class set as _data_splitter_cls, not an edit of train."""
    from scflowlm.model import HoldoutSplitter

    class TrainOnEverything(HoldoutSplitter):
        def __init__(self, adata_manager, **kwargs):
            super().__init__(adata_manager, **(kwargs | {"validation_size": 0.0}))

    class Model(CaLMFlowModel):
        _data_splitter_cls = TrainOnEverything

    adata = data()
    Model.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    model = Model(
        adata, n_time_points=4, n_space_tokens=2, backbone=tiny_config(), n_latent=8, source="noise"
    )
    train(model, holdout=[HOLDOUT])
    assert len(model.validation_indices_) == 0
    assert len(model.train_indices_) == 96 - 8  # every cell but the held-out ones trains
    assert "validation_loss" not in model.history
