"""What ``tl.evaluate`` computes for the cells of one condition, and across the conditions of one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import group_means, obs_mask, random_state, subsample_idx
from ..data import ConditionCatalog, estimate_shifts
from ..metrics import (
    adaptive_mmd,
    de_overlap,
    discrimination,
    edistance,
    inception_score,
    joint_embedding,
    leiden_kl,
    mean_correlations,
    mmd,
    signal_to_noise,
    variance_r2,
    wasserstein,
)
from ._de import de_genes, top_de_genes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..metrics import LeidenClassifier

#: the distribution distances, by name: ``f(real, pred, options)`` on two sets of cells
DISTANCES = {
    "mmd": lambda a, b, o: mmd(a, b, gamma=o["gamma"], seed=o["seed"]),
    "adaptive_mmd": lambda a, b, o: adaptive_mmd(a, b),
    "wasserstein": lambda a, b, o: wasserstein(a, b, method=o["w2_method"]),
    "edistance": lambda a, b, o: edistance(a, b),
}
#: a condition's real change counts as signal when it is at least this many times its half-split noise
SIGNAL_RATIO = 2.0


@dataclass
class ConditionCells:
    """The cells of one evaluated condition: real, predicted, and the real controls of its context.

    ``genes``: the genes its mean-expression metrics read (all but its perturbed genes where those are excluded).
    """

    real: np.ndarray  # boolean masks over adata_real / adata_pred
    pred: np.ndarray
    control: np.ndarray | None  # None for a control condition or fewer than 2 controls
    genes: np.ndarray  # [g] gene indices
    additive: np.ndarray | None = None  # [G] tl.baseline_additive's mean expression (None: no estimate)


def correlations(adata_real, adata_pred, cells: ConditionCells, wanted, *, n_top_de, de_method) -> dict:
    """Mean-expression metrics on the condition's genes, then on its top DE genes (suffix ``_de``).

    The top DE genes are the real condition's against its control cells, among ``cells.genes``.
    """
    xr, xp = adata_real.X[cells.real], adata_pred.X[cells.pred]
    xc = adata_real.X[cells.control] if cells.control is not None else None
    row = mean_correlations(xr, xp, control=xc, reference=cells.additive, genes=cells.genes)
    if "r2_var" in wanted:
        row["r2_var"] = variance_r2(xr, xp, genes=cells.genes) if len(xp) >= 2 and len(xr) >= 2 else np.nan
    if any(m.endswith("_de") for m in wanted) and cells.control is not None and cells.real.sum() >= 2:
        left_out = adata_real.n_vars - len(cells.genes)
        ranked = top_de_genes(
            adata_real,
            target=cells.real,
            reference=cells.control,
            n_genes=n_top_de + left_out,
            method=de_method,
        )
        de = ranked[np.isin(ranked, cells.genes)][:n_top_de]
        de_row = mean_correlations(xr, xp, control=xc, reference=cells.additive, genes=de)
        if "r2_var_de" in wanted:
            de_row["r2_var"] = variance_r2(xr, xp, genes=de) if len(xp) >= 2 and len(xr) >= 2 else np.nan
        row |= {f"{k}_de": v for k, v in de_row.items()}
    return row


def de_agreement(adata_real, adata_pred, cells: ConditionCells, *, method, fdr, seed) -> dict:
    """DE overlap (:func:`scflowlm.metrics.de_overlap`) and both DE counts, against the same real control cells.

    The predicted cells are subsampled to the number of real cells (``seed``), so both tests have the same power: a
    prediction of one cell per control cell would otherwise call more genes DE for its numbers alone.
    """
    if cells.control is None or cells.real.sum() < 2 or cells.pred.sum() < 2:
        return {}
    control = adata_real.X[cells.control]
    pred_rows = np.flatnonzero(cells.pred)
    pred_rows = pred_rows[subsample_idx(len(pred_rows), int(cells.real.sum()), random_state(seed))]
    real = de_genes(adata_real.X[cells.real], control, fdr=fdr, method=method)
    pred = de_genes(adata_pred.X[pred_rows], control, fdr=fdr, method=method)
    real, pred = real[np.isin(real, cells.genes)], pred[np.isin(pred, cells.genes)]
    return {"de_overlap": de_overlap(real, pred), "n_de_real": len(real), "n_de_pred": len(pred)}


def signal(adata_real, cells: ConditionCells, *, seed: int) -> dict:
    """The real change over its half-split noise (:func:`scflowlm.metrics.signal_to_noise`), and the flag."""
    if cells.control is None or cells.real.sum() < 4:
        return {}
    change, noise = signal_to_noise(
        adata_real.X[cells.real], adata_real.X[cells.control], genes=cells.genes, seed=seed
    )
    ratio = change / noise if noise > 0 else np.inf
    return {"signal_ratio": ratio, "has_signal": bool(ratio >= SIGNAL_RATIO)}


def distances(
    real, pred, wanted, *, space, gamma, w2_method, max_cells, n_umap, seed, subsample_seed
) -> dict:
    """The distribution distances in ``space``, each set subsampled to ``max_cells`` first."""
    rng = random_state(subsample_seed)
    a, b = real[subsample_idx(len(real), max_cells, rng)], pred[subsample_idx(len(pred), max_cells, rng)]
    if len(a) < 2 or len(b) < 2:
        return {}
    if space == "umap":
        a, b = joint_embedding(a, b, space="umap", n_components=n_umap, seed=seed)
    options = {"gamma": gamma, "seed": seed, "w2_method": w2_method}
    return {m: DISTANCES[m](a, b, options) for m in wanted if m in DISTANCES}


def leiden(clf: LeidenClassifier, real_labels: np.ndarray, pred: np.ndarray, wanted) -> dict[str, float]:
    """Leiden-cluster KL of the predicted vs the real cells, and the inception score of the predicted ones."""
    out = {}
    if "leiden_kl" in wanted:
        out["leiden_kl"] = leiden_kl(None, pred, classifier=clf, real_labels=real_labels)
    if "inception_score" in wanted:
        out["inception_score"] = inception_score(pred, classifier=clf)
    return out


def additive_means(
    adata_real, conditions, keys, perturbation_key, control_value, sep
) -> list[np.ndarray | None]:
    """:func:`~scflowlm.tl.baseline_additive`'s mean expression ``[G]`` of each condition (``None``: no estimate).

    The context's control mean plus the ``"additive"`` estimate of :func:`scflowlm.data.estimate_shifts`, from the
    real cells of the other conditions (a condition's own cells are never used).
    """
    catalog, rows = catalog_of(adata_real, keys, perturbation_key, control_value, sep)
    table = catalog.table
    means = group_means(adata_real.X, rows, len(table))  # [C, G]
    measured = np.bincount(rows[rows >= 0], minlength=len(table)) > 0
    out = []
    for cond in catalog.typed(conditions):
        without = measured & (np.arange(len(table)) != table.row_of(cond))  # never the condition's own cells
        [estimate] = estimate_shifts(table, without, [cond], mode="additive", similarity_means=means)
        control = table.row_of(cond | {perturbation_key: control_value})
        out.append(means[control] + estimate.apply(means) if estimate.terms and control >= 0 else None)
    return out


def catalog_of(adata, keys, perturbation_key, control_value, sep):
    """The catalog of ``adata.obs`` and the row of every cell (:meth:`scflowlm.data.ConditionCatalog.from_obs`)."""
    return ConditionCatalog.from_obs(
        adata.obs, keys, perturbation_key=perturbation_key, control_value=control_value, combination_sep=sep
    )


def discrimination_ranks(
    adata_real,
    adata_pred,
    conditions: Sequence[dict[str, Any]],
    cells: Sequence[ConditionCells | None],
    *,
    keys,
    perturbation_key,
    control_value,
    sep,
) -> np.ndarray:
    """``[n]`` :func:`scflowlm.metrics.discrimination` of each evaluated condition among the real ones.

    The candidates are every perturbed condition of ``adata_real`` with at least 2 control cells in its context;
    changes are means minus the context's control mean; each prediction's perturbed genes are left out.
    """
    catalog, rows = catalog_of(adata_real, keys, perturbation_key, control_value, sep)
    table = catalog.table
    means = group_means(adata_real.X, rows, len(table))  # [C, G]
    counts = np.bincount(rows[rows >= 0], minlength=len(table))
    control_row = {}
    for i in range(len(table)):
        cond = table.condition(i)
        if table.is_control(cond) and counts[i] >= 2:
            control_row[table.context(cond)] = i
    candidates = [
        i
        for i in range(len(table))
        if counts[i]
        and not table.is_control(table.condition(i))
        and table.context(table.condition(i)) in control_row
    ]
    real = np.stack([means[i] - means[control_row[table.context(table.condition(i))]] for i in candidates])
    out = np.full(len(conditions), np.nan)
    position = {row: j for j, row in enumerate(candidates)}
    pred, own, exclude, which = [], [], [], []
    for i, (cond, c) in enumerate(zip(conditions, cells, strict=True)):
        [typed] = catalog.typed([cond])
        row = table.row_of(typed)
        if c is None or c.control is None or row not in position:
            continue
        mu = np.asarray(adata_pred.X[c.pred].mean(0)).ravel() - means[control_row[table.context(typed)]]
        pred.append(mu)
        own.append(position[row])
        exclude.append(np.setdiff1d(np.arange(adata_real.n_vars), c.genes))
        which.append(i)
    if pred:
        out[which] = discrimination(np.stack(pred), real, own, exclude=exclude)
    return out


def perturbed_genes(var_names, singles: Sequence[str]) -> np.ndarray:
    """Indices of the genes of ``var_names`` that a condition perturbs (its singles that are gene names)."""
    index = {str(g): i for i, g in enumerate(var_names)}
    return np.array(sorted({index[s] for s in singles if s in index}), dtype=int)


def control_mask(obs, cond, context_keys, perturbation_key, control_value) -> np.ndarray:
    """The real control cells of a condition's context."""
    return obs_mask(obs, {k: cond[k] for k in context_keys} | {perturbation_key: control_value})
