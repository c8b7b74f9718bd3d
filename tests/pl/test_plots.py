from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scflowlm import pl, tl

KEYS = ["cell_type", "condition"]
KW = {"condition_keys": KEYS, "perturbation_key": "condition", "control_value": "control"}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    g = 30
    blocks, obs = [], []
    for ct in ["A", "B"]:
        base = rng.gamma(2.0, size=g)
        for cond in ["control", "stim"]:
            blocks.append(
                base
                + (1.5 if cond == "stim" else 0) * (np.arange(g) < 8)
                + rng.normal(scale=0.3, size=(50, g))
            )
            obs += [(ct, cond)] * 50
    x = np.concatenate(blocks).astype(np.float32)
    adata = ad.AnnData(x, obs=pd.DataFrame(obs, columns=KEYS, index=[f"c{i}" for i in range(len(obs))]))
    adata.var_names = [f"g{i}" for i in range(g)]
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    adata.varm["PCs"] = vt[:8].T
    adata.obsm["X_pca"] = (x - mu) @ vt[:8].T
    return adata


def _legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_umap_overlap(toy, tmp_path):
    cond = {"cell_type": "A", "condition": "stim"}
    pred = tl.baseline_additive(toy, conditions=cond, **KW)
    ax = pl.umap_overlap(toy, pred, condition=cond, source=True, show=False)
    assert ax.get_xlabel() == "UMAP1"
    assert ax.get_ylabel() == "UMAP2"
    assert sorted(_legend_labels(ax)) == ["generated", "real", "source"]
    sizes = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert sizes == {"real": 50, "generated": 50, "source": 50}
    assert ax.get_title() == "A, stim"
    fig = pl.umap_overlap(toy, pred, condition=cond, show=False, return_fig=True, max_cells=20)
    assert isinstance(fig, Figure)
    assert {len(c.get_offsets()) for c in fig.axes[0].collections} == {20}
    fig.savefig(tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 1000


def test_evaluate_plot(toy, tmp_path):
    conds = [{"cell_type": ct, "condition": "stim"} for ct in ["A", "B"]]
    tables = []
    for name, fn in [("control", tl.baseline_control_mean), ("additive", tl.baseline_additive)]:
        pred = fn(toy, conditions=conds, **KW)
        tables.append(tl.evaluate(toy, pred, metrics="correlation", **KW).assign(model=name))
    df = pd.concat(tables, ignore_index=True)
    ax = pl.evaluate(df, metric="r2", show=False)
    assert ax.get_ylabel() == "r2"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A / stim", "B / stim", "mean"]
    assert _legend_labels(ax) == ["control", "additive"]
    bars = [p for p in ax.patches]
    assert len(bars) == 6  # 2 models x (2 conditions + mean)
    heights = np.array([b.get_height() for b in bars]).reshape(2, 3)
    np.testing.assert_allclose(
        heights[:, :2],
        df.pivot(index="model", columns="cell_type", values="r2").loc[["control", "additive"]].to_numpy(),
    )
    axes = pl.evaluate(df, metric=["r2", "r2_de"], kind="point", show=False)
    assert [a.get_ylabel() for a in axes] == ["r2", "r2_de"]
    assert all(len(a.collections) == 2 for a in axes)
    # from the AnnData where evaluate stored it
    pred = tl.baseline_additive(toy, conditions=conds, **KW)
    tl.evaluate(toy, pred, metrics=["pearson"], **KW)
    fig = pl.evaluate(pred, metric="pearson", show=False, return_fig=True)
    fig.savefig(tmp_path / "metrics.png")
    assert len(fig.axes[0].patches) == 3
    with pytest.raises(KeyError, match="nope"):
        pl.evaluate(df, metric="nope", show=False)


class _FakeModel:
    def __init__(self):
        epochs = pd.Index(np.arange(5), name="epoch")
        self.history = {
            "train_loss": pd.DataFrame({"train_loss": [5.0, 3.0, 2.0, 1.5, 1.2]}, index=epochs),
            "validation_loss": pd.DataFrame({"validation_loss": [5.5, 3.5, 2.6, 2.1, 2.0]}, index=epochs),
            "elbo_train": pd.DataFrame({"elbo_train": [9.0] * 5}, index=epochs),
        }


def test_history_plot(tmp_path):
    ax = pl.history(_FakeModel(), show=False)
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "loss"
    assert _legend_labels(ax) == ["train_loss", "validation_loss"]
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), [5.0, 3.0, 2.0, 1.5, 1.2])
    np.testing.assert_allclose(lines[1].get_xdata(), np.arange(5))
    fig = pl.history(_FakeModel().history, keys=["elbo_train"], logy=True, return_fig=True)
    assert fig.axes[0].get_yscale() == "log"
    fig.savefig(tmp_path / "history.png")
    with pytest.raises(ValueError, match="none of"):
        pl.history(_FakeModel(), keys=["missing"], show=False)


@pytest.mark.parametrize("basis", ["pca", "umap"])
def test_flow_draws_paths_from_source_to_prediction(trained, basis):
    from helpers import HOLDOUT

    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=12, seed=0, return_path=True)
    ax = pl.flow(adata, pred, basis=basis, n_paths=5, show=False)
    lines = ax.get_lines()
    assert len(lines) == 5
    assert all(len(line.get_xdata()) == model.module.n_time_points for line in lines)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["real", "start", "end"]
    n_real = int(((adata.obs.cell_type == "NK") & (adata.obs.condition == "IFNB+TNF")).sum())
    assert len(ax.collections[0].get_offsets()) == n_real
    if basis == "pca":  # the end markers are the predictions' first two coordinates
        ends = ax.collections[2].get_offsets()
        assert (np.abs(ends[:, :1] - pred.obsm["X_pca"][None, :, 0]).min(1) < 1e-4).all()
    with pytest.raises(KeyError, match="return_path=True"):
        pl.flow(adata, model.predict_perturbation(HOLDOUT, n_cells=3, seed=0), show=False)


def test_flow_and_umap_name_what_cannot_be_drawn(trained):
    """Bug 9: a misspelt condition key plotted every cell under its title; empty or flat inputs drew nothing."""
    from helpers import HOLDOUT

    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=6, seed=0, return_path=True)
    with pytest.raises(KeyError, match=r"condition key\(s\) \['celltype'\] are not obs columns"):
        pl.flow(adata, pred, condition={"celltype": "NK"}, show=False)
    with pytest.raises(KeyError, match=r"condition key\(s\) \['celltype'\] are not obs columns"):
        pl.umap_overlap(adata, pred, condition={"celltype": "NK"}, show=False)
    with pytest.raises(ValueError, match=r"no predicted cell matches \{'cell_type': 'B'\}"):
        pl.flow(adata, pred, condition={"cell_type": "B"}, show=False)
    no_states = adata.copy()
    del no_states.obsm["X_pca"]
    with pytest.raises(KeyError, match=r"adata_real.obsm\['X_pca'\] is missing"):
        pl.flow(no_states, pred, show=False)
    flat = pred.copy()
    flat.obsm["X_path"] = flat.obsm["X_path"][:, :, :1]
    flat_real = adata.copy()
    flat_real.obsm["X_pca"] = flat_real.obsm["X_pca"][:, :1]
    with pytest.raises(ValueError, match=r"the states have 1 coordinate\(s\); a 2-D plot"):
        pl.flow(flat_real, flat, show=False)
