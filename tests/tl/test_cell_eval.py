from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers import HOLDOUT

from scflowlm import tl

LABEL = "NK_IFNB+TNF"


@pytest.fixture(scope="module")
def pair(trained):
    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=30, seed=0)
    before = adata.obs.copy()
    pred_ce, real_ce = tl.to_cell_eval(adata, [pred, tl.baseline_control_mean(adata, conditions=[HOLDOUT])])
    assert adata.obs.equals(before)  # the input is not changed
    return pred, pred_ce, real_ce, adata


def test_pair_has_controls_one_label_and_the_same_genes(pair):
    pred, pred_ce, real_ce, adata = pair
    assert list(pred_ce.var_names) == list(real_ce.var_names) == list(adata.var_names)
    n_ctrl = int(((adata.obs.cell_type == "NK") & (adata.obs.condition == "control")).sum())
    n_real = int(((adata.obs.cell_type == "NK") & (adata.obs.condition == "IFNB+TNF")).sum())
    assert real_ce.obs["target"].value_counts().to_dict() == {LABEL: n_real, "non-targeting": n_ctrl}
    assert (pred_ce.obs["target"] == "non-targeting").sum() == n_ctrl  # the prediction carries the controls
    assert (pred_ce.obs["target"] == LABEL).sum() == 30 + n_ctrl  # the model's cells and the baseline's
    assert pred_ce.obs_names.is_unique
    assert pred_ce.X.min() >= 0
    assert set(pred_ce.obs["target"].cat.categories) == set(real_ce.obs["target"].cat.categories)


def test_pair_is_written_for_the_command_line(trained, tmp_path):
    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    tl.to_cell_eval(adata, pred, path=tmp_path)
    assert (tmp_path / "real.h5ad").is_file()
    assert (tmp_path / "pred.h5ad").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("cell_eval") is None, reason="the [eval] extra (cell-eval) is not installed"
)
def test_cell_eval_runs_and_agrees_with_evaluate(trained, tmp_path):
    from cell_eval import MetricsEvaluator

    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=60, seed=0)
    pred_ce, real_ce = tl.to_cell_eval(adata, pred)
    evaluator = MetricsEvaluator(
        pred_ce, real_ce, control_pert="non-targeting", pert_col="target", num_threads=1, outdir=str(tmp_path)
    )
    results, _ = evaluator.compute(profile="minimal", write_csv=False)
    row = results.to_pandas().set_index("perturbation").loc[LABEL]
    ours = tl.evaluate(adata, pred, metrics=["pearson_delta", "mae"], key_added=None).iloc[0]
    assert np.sign(row["pearson_delta"]) == np.sign(ours["pearson_delta"])
    assert abs(row["pearson_delta"] - ours["pearson_delta"]) < 0.1
    # rough size: the pair clips negative predicted log-expression at 0, which lowers cell-eval's MAE a little
    assert abs(row["mae"] - ours["mae"]) < 0.25 * ours["mae"]


def test_inputs_cell_eval_cannot_take_name_the_fix(trained):
    model, adata = trained
    pred = model.predict_perturbation(HOLDOUT, n_cells=5, seed=0)
    with pytest.raises(ValueError, match="adata_pred is an empty list"):
        tl.to_cell_eval(adata, [])
    no_column = pred.copy()
    del no_column.obs["cell_type"]
    with pytest.raises(KeyError, match=r"adata_pred.obs lacks the condition columns \['cell_type'\]"):
        tl.to_cell_eval(adata, no_column)
    dup = adata.copy()
    dup.var_names = ["g"] * 2 + list(dup.var_names[2:])
    pred_dup = pred.copy()
    pred_dup.var_names = dup.var_names
    with pytest.raises(ValueError, match=r"duplicate gene names \(\['g'\]\).*var_names_make_unique"):
        tl.to_cell_eval(dup, pred_dup)
