"""Predictions in the shape Arc Institute's cell-eval reads: a (predicted, real) pair with controls and one label."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from .._utils import dense, obs_mask
from ._utils import _check_keys, _resolve_keys

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

__all__ = ["to_cell_eval"]


def to_cell_eval(
    adata_real: AnnData,
    adata_pred: AnnData | Sequence[AnnData],
    *,
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    pert_col: str = "target",
    control_label: str = "non-targeting",
    sep: str = "_",
    path: str | Path | None = None,
) -> tuple[AnnData, AnnData]:
    """The pair of AnnData that ``cell-eval`` (``MetricsEvaluator``, ``cell-eval run``) accepts.

    cell-eval compares a predicted and a real AnnData that share their genes (same order) and one perturbation
    column, in which the control cells carry one control label; the prediction must include control cells. This
    builds both from the real data and one or more predictions (of a model or a ``tl.baseline_*``):

    - one label per condition in ``pert_col``: the values of the context keys and the perturbation, joined by
      ``sep`` (``"CD14+ Monocytes_stimulated"``; just the perturbation without context keys); control cells get
      ``control_label``;
    - the real AnnData: the real cells of every predicted condition, and the control cells of their contexts;
    - the predicted AnnData: the predicted cells, and the same real control cells (cell-eval's convention);
      its ``X`` is dense, with values below 0 (possible where a PCA maps states back to genes) set to 0, as
      log-expression cannot be negative and cell-eval refuses it.

    With several contexts the control cells of all of them share ``control_label``, so cell-eval's changes are
    taken from the pooled controls; for changes within a context, pass the predictions of one context at a time.

    Parameters
    ----------
    adata_real
        Real cells (log-normalised ``X``), including the control cells.
    adata_pred
        One prediction or several (concatenated), with the same ``var_names`` as ``adata_real``.
    condition_keys, perturbation_key, control_value
        The condition keys (default: as recorded in ``uns["scflowlm"]`` of the first prediction or of
        ``adata_real``).
    pert_col
        Name of the perturbation column of both outputs (cell-eval's ``pert_col``).
    control_label
        Label of the control cells (cell-eval's ``control_pert``).
    sep
        Joins the values of a condition into its label.
    path
        A folder to write ``real.h5ad`` and ``pred.h5ad`` to (for ``cell-eval run``), or None.

    Returns
    -------
    ``(adata_pred, adata_real)``, new AnnData objects (in the argument order of ``cell_eval.MetricsEvaluator``);
    nothing of the inputs changes.

    Examples
    --------
    >>> pred_ce, real_ce = scflowlm.tl.to_cell_eval(adata, pred)
    >>> from cell_eval import MetricsEvaluator
    >>> results, agg = MetricsEvaluator(pred_ce, real_ce, control_pert="non-targeting", pert_col="target").compute(
    ...     profile="minimal"
    ... )
    """
    preds = [adata_pred] if isinstance(adata_pred, ad.AnnData) else list(adata_pred)
    if not preds:
        msg = "adata_pred is an empty list: pass a prediction (or several)"
        raise ValueError(msg)
    keys, pkey, ctrl = _resolve_keys(
        *preds,
        adata_real,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
    )
    genes = list(adata_real.var_names)
    if not adata_real.var_names.is_unique:
        dup = adata_real.var_names[adata_real.var_names.duplicated()].unique()[:5].tolist()
        msg = f"adata_real has duplicate gene names ({dup}); cell-eval needs unique ones: call var_names_make_unique() on the real data before setup and prediction"
        raise ValueError(msg)
    _check_keys(adata_real, keys, "adata_real")
    for i, p in enumerate(preds):
        _check_keys(p, keys, f"adata_pred[{i}]" if len(preds) > 1 else "adata_pred")
        if list(p.var_names) != genes:
            msg = f"prediction {i} has other genes than adata_real (or another order); subset both to the same genes"
            raise ValueError(msg)
    context_keys = [k for k in keys if k != pkey]

    def label(row: dict) -> str:
        return sep.join(str(row[k]) for k in [*context_keys, pkey])

    pred = ad.concat(preds, join="inner", merge="same")
    conditions = pred.obs[keys].astype(str).drop_duplicates().to_dict("records")
    conditions = [c for c in conditions if c[pkey] != str(ctrl)]
    real_mask = np.zeros(adata_real.n_obs, dtype=bool)
    ctrl_mask = np.zeros(adata_real.n_obs, dtype=bool)
    for cond in conditions:
        real_mask |= obs_mask(adata_real.obs, cond)
        ctrl_mask |= obs_mask(adata_real.obs, {k: cond[k] for k in context_keys} | {pkey: str(ctrl)})
    if not ctrl_mask.any():
        msg = f"adata_real has no control cells ({pkey} == {ctrl!r}) in the contexts of the predictions"
        raise ValueError(msg)

    def build(X, obs: pd.DataFrame, labels: list[str]) -> AnnData:
        out = ad.AnnData(
            np.maximum(dense(X), 0.0).astype(np.float32), var=pd.DataFrame(index=pd.Index(genes))
        )
        out.obs = pd.DataFrame(
            {k: obs[k].astype(str).to_numpy() for k in keys}, index=pd.Index(obs.index.astype(str))
        )
        out.obs[pert_col] = pd.Categorical(labels)
        out.obs_names_make_unique()
        return out

    controls = adata_real[ctrl_mask]
    control_cells = build(controls.X, controls.obs, [control_label] * controls.n_obs)  # in both outputs

    def with_controls(cells: ad.AnnData) -> ad.AnnData:
        """The cells under their flattened labels, then the real control cells under ``control_label``."""
        labels = [label(r) for r in cells.obs[keys].astype(str).to_dict("records")]
        return ad.concat([build(cells.X, cells.obs, labels), control_cells])

    real_out = with_controls(adata_real[real_mask])
    pred_out = with_controls(pred[~pred.obs[pkey].astype(str).eq(str(ctrl)).to_numpy()])
    for out in (real_out, pred_out):
        out.obs_names_make_unique()
        out.obs[pert_col] = out.obs[pert_col].astype("category")
    if path is not None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        real_out.write_h5ad(folder / "real.h5ad")
        pred_out.write_h5ad(folder / "pred.h5ad")
    return pred_out, real_out
