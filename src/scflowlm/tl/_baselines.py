"""Simple predictors to report beside a model: control, additive shift, nearest-context shift, real vs real."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import SOURCE_OBSM, UNS_KEY
from .._docs import doc_params
from .._utils import PredictionRecord, dense, group_means, obs_mask, predicted_anndata, random_state
from .._warnings import ScflowlmWarning
from ..data import (
    ShiftEstimate,
    as_condition_list,
    estimate_shifts,
    fit_combination_scale,
)
from ._utils import _catalog, _check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData


def _predict(
    adata: AnnData,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    condition_keys: Sequence[str] | None,
    perturbation_key: str | None,
    control_value: Any,
    obsm_keys: Sequence[str],
    mode: Literal["control", "pooled", "nearest", "mean", "additive"],
    combo_sep: str | None = None,
    name: str | None = None,
    scale: float | Literal["fit"] = 1.0,
    vectors: pd.DataFrame | str | None = None,
    vector_options: dict | None = None,
) -> AnnData:
    """The context's control cells shifted by the estimate of :func:`scflowlm.data.estimate_shifts` (``mode``).

    ``scale``: the factor of combinations built from their singles (``"fit"``:
    :func:`scflowlm.data.fit_combination_scale` on the training combinations' ``X``); ``vectors``: gene vectors
    (checked and named as ``setup_anndata`` does) with ``vector_options`` for :func:`~scflowlm.data.estimate_shifts`.
    """
    catalog, rows, targets = _catalog(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combo_sep=combo_sep,
        vectors=vectors,
    )
    table = catalog.table
    keys, perturbation_key, control_value, sep = (
        table.fields,
        table.perturbation_key,
        table.control_value,
        table.combination_sep,
    )
    reps = {"X": adata.X} | {k: adata.obsm[k] for k in obsm_keys if k in adata.obsm}
    means = {r: group_means(m, rows, len(table)) for r, m in reps.items()}  # [C, D] per representation
    held = {table.row_of(c) for c in targets}  # the conditions to predict are never read
    measured = (np.bincount(rows[rows >= 0], minlength=len(table)) > 0) & ~np.isin(
        np.arange(len(table)), list(held)
    )
    if scale == "fit":
        scale = fit_combination_scale(table, measured, means["X"])
    if mode == "control":
        estimates = [ShiftEstimate() for _ in targets]
    else:
        estimates = estimate_shifts(
            table,
            measured,
            targets,
            mode=mode,
            similarity_means=means["X"],
            vectors=catalog.vectors,
            combination_scale=scale,
            **(vector_options or {}),
        )
    name = (
        name
        or {
            "control": "control_mean",
            "pooled": "pooled",
            "additive": "additive",
            "nearest": "nearest_context",
            "mean": "mean_shift",
        }[mode]
    )
    first = next(
        (r for r in reps if r != "X"), None
    )  # its unshifted states are the predictions' source states
    X, obsm, obs = [], {r: [] for r in reps if r != "X"} | ({SOURCE_OBSM: []} if first else {}), []
    for cond, estimate in zip(targets, estimates, strict=True):
        context = {k: cond[k] for k in table.context_fields}
        idx = np.flatnonzero(obs_mask(adata.obs, context | {perturbation_key: control_value}))
        if not len(idx):
            msg = f"no control cells for the context of {cond}"
            raise ValueError(msg)
        if mode != "control" and table.perturbations(cond) and not estimate.terms:
            warnings.warn(
                f"no shift measurable for {cond}: predicting the control cells", ScflowlmWarning, stacklevel=3
            )
        X.append(dense(adata.X[idx]) + estimate.apply(means["X"]))
        for r in reps.keys() - {"X"}:
            obsm[r].append(dense(reps[r][idx]) + estimate.apply(means[r]))
        if first:
            obsm[SOURCE_OBSM].append(dense(reps[first][idx]))
        part = pd.DataFrame({k: [cond[k]] * len(idx) for k in keys})
        part["baseline"], part["source_cell"], part["source_context"] = (
            name,
            adata.obs_names[idx],
            estimate.source,
        )
        obs.append(part)
    obs = pd.concat(obs, ignore_index=True)
    obs.index = [f"{name}-{i}" for i in range(len(obs))]
    record = PredictionRecord(
        keys, perturbation_key, control_value, sep, first or "X_pca", f"baseline_{name}"
    )
    obsm = {r: np.concatenate(v) for r, v in obsm.items()}
    return predicted_anndata(np.concatenate(X), obs, adata.var[[]].copy(), record=record, obsm=obsm)


@doc_params()
def baseline_control_mean(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
) -> AnnData:
    """The no-change baseline: the context's own control cells, relabelled as the condition.

    Parameters
    ----------
    %(baseline_common)s

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="control",
    )


@doc_params()
def baseline_additive(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
    scale: float | Literal["fit"] = 1.0,
) -> AnnData:
    """Additive shift: context's control cells + the sum of the condition's single perturbations' shifts.

    The shift of a single in a context is the mean of its cells minus the mean of that context's control cells.
    Each single of the condition (a combination ``"A+B"``: ``A`` and ``B``) contributes its shift in the condition's
    own context where it was measured there, else its shift averaged (each context weighted equally) over every
    other context that measured it; a combination's sum is multiplied by ``scale``. This is the one meaning of
    "additive" in scflowlm: the models' additive head start (``start_shift="additive"``) and the reference of the
    interaction score are the same estimate (:func:`scflowlm.data.estimate_shifts`, ``"additive"``). Without any
    usable shift it warns and returns the control cells.

    Parameters
    ----------
    %(baseline_common)s
    combo_sep
        %(combo_sep)s
    scale
        The factor of a combination built from its singles: 1 (default) the plain sum; ``"fit"`` one scale
        learned on the training combinations whose singles are measured (least squares,
        :func:`scflowlm.data.fit_combination_scale`): Norman et al.'s doubles are typically about 20% smaller than
        the sum of their singles. ``obs["source_context"]`` records it (``"own*0.8"``).

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="additive",
        combo_sep=combo_sep,
        name="additive" if scale == 1.0 else "additive_scaled",
        scale=scale,
    )


@doc_params()
def baseline_mean_shift(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
) -> AnnData:
    """Mean training shift: context's control cells + the average shift of every other perturbation measured there.

    The predictor that knows a perturbation happened but not which one (the "training mean" of
    :cite:t:`ahlmann2025deep`): the shifts of all other perturbed conditions of the same context (mean of their
    cells minus the mean of the context's controls), averaged with equal weights. The bar a prediction for a
    perturbation never measured has to clear.

    Parameters
    ----------
    %(baseline_common)s
    combo_sep
        %(combo_sep)s

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="mean",
        combo_sep=combo_sep,
    )


@doc_params()
def baseline_nearest_context(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
) -> AnnData:
    """Nearest-context shift: context's control cells + the shift measured in the most similar other context.

    Among the other contexts that have the perturbation (and control cells), the one whose control mean
    expression has the largest Pearson correlation with the target context's control mean gives the shift
    (mean of its perturbed cells minus mean of its control cells). Combinations unseen in other contexts fall
    back to the sum of single shifts as in :func:`baseline_additive` (the nearest context for a single missing
    from the target context). ``obs["source_context"]`` records the context used.

    Parameters
    ----------
    %(baseline_common)s
    combo_sep
        %(combo_sep)s

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="nearest",
        combo_sep=combo_sep,
    )


def baseline_real_vs_real(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[AnnData, AnnData]:
    """Real-vs-real floor: a disjoint random half split of the true cells of each condition.

    Scoring the second half against the first gives the best value a predictor can reach at this number of
    cells (sampling noise only).

    Parameters
    ----------
    adata
        Cells x genes with the true cells of ``conditions``.
    conditions
        Conditions to split, as dicts ``{key: value}``.
    condition_keys
        obs columns that define a condition (default: from ``adata.uns["scflowlm"]``).
    seed
        Seed of the split.

    Returns
    -------
    ``(reference, predicted)``: ``predicted`` holds a random half (``n // 2`` cells) of each condition's
    cells; ``reference`` is ``adata`` without those cells (so it keeps the other half of each condition and
    every other cell, e.g. the controls that DE and change metrics need). Pass ``reference`` as
    ``adata_real`` and ``predicted`` as ``adata_pred`` to :func:`scflowlm.tl.evaluate`. Both are copies.
    """
    if condition_keys is None:
        condition_keys = adata.uns.get(UNS_KEY, {}).get("condition_keys")
    if condition_keys is None:
        msg = "condition_keys is needed: pass it, or register adata with setup_anndata (uns['scflowlm'])"
        raise ValueError(msg)
    _check_keys(adata, list(condition_keys))
    rng = random_state(seed)
    take = np.zeros(adata.n_obs, dtype=bool)
    for cond in as_condition_list(conditions, name="conditions"):
        idx = np.flatnonzero(obs_mask(adata.obs, cond))
        if len(idx) < 2:
            msg = f"need at least 2 cells to split {cond}, got {len(idx)}"
            raise ValueError(msg)
        take[rng.permutation(idx)[: len(idx) // 2]] = True
    pred = adata[take].copy()
    pred.obs["baseline"] = "real_vs_real"
    if sp.issparse(pred.X):
        pred.X = pred.X.toarray()
    return adata[~take].copy(), pred
