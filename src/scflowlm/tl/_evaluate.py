"""One-call evaluation of predicted cells against real cells, one row per condition."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .._constants import EVALUATE_KEY, UNS_KEY
from .._docs import doc_params
from .._utils import (
    dense,
    group_means,
    obs_mask,
    pca_coords,
    random_state,
    subsample_idx,
)
from ..data import ConditionTable, estimate_shifts, same_value
from ..metrics import (
    adaptive_mmd,
    edistance,
    fit_leiden_classifier,
    inception_score,
    joint_embedding,
    leiden_kl,
    mean_correlations,
    mmd,
    wasserstein,
)
from ._de import top_de_genes
from ._utils import _check_keys, _combination_sep, _conditions_in, _resolve_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

    from ..metrics import LeidenClassifier

logger = logging.getLogger(__name__)

#: the distribution distances, by name: ``f(real, pred, options)`` on two sets of cells
_DISTANCES = {
    "mmd": lambda a, b, o: mmd(a, b, gamma=o["gamma"], seed=o["seed"]),
    "adaptive_mmd": lambda a, b, o: adaptive_mmd(a, b),
    "wasserstein": lambda a, b, o: wasserstein(a, b, method=o["w2_method"]),
    "edistance": lambda a, b, o: edistance(a, b),
}
#: the correlations of mean expression (:func:`scflowlm.metrics.mean_correlations`), on all genes
_CORRELATIONS = ("r2", "r2_score", "pearson", "spearman", "pearson_delta", "pearson_interaction", "mae")
#: every metric :func:`evaluate` knows, by the group names accepted in its ``metrics`` argument (the one registry)
METRIC_GROUPS = {
    "correlation": _CORRELATIONS + tuple(f"{m}_de" for m in _CORRELATIONS),
    "distribution": tuple(_DISTANCES),
    "leiden": ("leiden_kl", "inception_score"),
}
METRICS = tuple(m for group in METRIC_GROUPS.values() for m in group)
METRIC_GROUPS["all"] = METRICS
CORRELATION_METRICS, DISTRIBUTION_METRICS, LEIDEN_METRICS = (
    METRIC_GROUPS[g] for g in ("correlation", "distribution", "leiden")
)


def _resolve_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    if metrics is None:
        return list(METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for name in names:
        for m in METRIC_GROUPS.get(name, (name,)):
            if m not in METRICS:
                msg = f"unknown metric {m!r}; known: {METRICS} and groups {tuple(METRIC_GROUPS)}"
                raise ValueError(msg)
            if m not in out:
                out.append(m)
    return out


@dataclass
class _Condition:
    """The cells of one evaluated condition: real, predicted, and the real controls of its context."""

    real: np.ndarray  # boolean masks over adata_real / adata_pred
    pred: np.ndarray
    control: np.ndarray | None  # None for a control condition or fewer than 2 controls
    additive: np.ndarray | None = None  # [G] tl.baseline_additive's mean expression (None: no estimate)


def _correlations(
    adata_real, adata_pred, cells: _Condition, wanted, *, n_top_de, de_method
) -> dict[str, float]:
    """Correlations of means on all genes, then on the top DE genes of the real condition (suffix ``_de``)."""
    xr, xp = adata_real.X[cells.real], adata_pred.X[cells.pred]
    xc = adata_real.X[cells.control] if cells.control is not None else None
    row = mean_correlations(xr, xp, control=xc, reference=cells.additive)
    if any(m.endswith("_de") for m in wanted) and cells.control is not None and cells.real.sum() >= 2:
        de = top_de_genes(
            adata_real, target=cells.real, reference=cells.control, n_genes=n_top_de, method=de_method
        )
        de_row = mean_correlations(xr, xp, control=xc, reference=cells.additive, genes=de)
        row |= {f"{k}_de": v for k, v in de_row.items()}
    return row


def _additive_means(
    adata_real, conditions, keys, perturbation_key, control_value, sep
) -> list[np.ndarray | None]:
    """:func:`~scflowlm.tl.baseline_additive`'s mean expression ``[G]`` of each condition (``None``: no estimate).

    The context's control mean plus the estimate of :func:`scflowlm.data.estimate_shifts` (``"pooled"``), from the
    real cells of other conditions (a condition's own cells are never used).
    """
    table, rows = ConditionTable.from_obs(
        adata_real.obs,
        keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combination_sep=sep,
    )
    means = group_means(adata_real.X, rows, len(table))  # [C, G]
    measured = np.bincount(rows[rows >= 0], minlength=len(table)) > 0
    typed = [{k: table.typed(k, c[k])[0] for k in keys} for c in conditions]
    estimates = estimate_shifts(table, measured, typed, mode="pooled", similarity_means=means)
    out = []
    for cond, estimate in zip(typed, estimates, strict=True):
        control = table.row_of(cond | {perturbation_key: control_value})
        out.append(means[control] + estimate.apply(means) if estimate.terms and control >= 0 else None)
    return out


def _distances(
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
    return {m: _DISTANCES[m](a, b, options) for m in wanted if m in _DISTANCES}


def _leiden(clf: LeidenClassifier, real_labels: np.ndarray, pred: np.ndarray, wanted) -> dict[str, float]:
    """Leiden-cluster KL of the predicted vs the real cells, and the inception score of the predicted ones."""
    out = {}
    if "leiden_kl" in wanted:
        out["leiden_kl"] = leiden_kl(None, pred, classifier=clf, real_labels=real_labels)
    if "inception_score" in wanted:
        out["inception_score"] = inception_score(pred, classifier=clf)
    return out


@doc_params()
def evaluate(
    adata_real: AnnData,
    adata_pred: AnnData,
    *,
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    metrics: str | Sequence[str] | None = None,
    space: Literal["umap", "pca", "raw"] = "umap",
    rep: str | None = None,
    n_top_de: int = 100,
    de_method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    max_cells: int | None = 1000,
    mmd_gamma: float | Sequence[float] | str | None = None,
    w2_method: Literal["exact", "sinkhorn"] = "exact",
    n_umap_components: int = 10,
    leiden_resolution: float = 0.3,
    leiden_classifier: LeidenClassifier | None = None,
    include_controls: bool = False,
    seed: int = 0,
    key_added: str | None = EVALUATE_KEY,
) -> pd.DataFrame:
    """Evaluate predicted cells against real cells, condition by condition.

    A condition is one combination of the ``condition_keys`` values present in both ``adata_pred`` and
    ``adata_real``. Its context is the values of the other keys (all but ``perturbation_key``); its control
    cells are the real cells of the same context with ``perturbation_key == control_value``.

    Metrics (columns; see ``metrics``):

    - correlations of mean expression over all genes (``X``): ``r2`` (Pearson r squared, as the paper's
      tables), ``r2_score`` (coefficient of determination), ``pearson``, ``spearman``, ``pearson_delta``
      (Pearson r of the change from the control mean), ``pearson_interaction`` (Pearson r of the prediction minus
      :func:`~scflowlm.tl.baseline_additive`'s with the real cells minus it: what the prediction gets right beyond
      the additive expectation; NaN where the additive baseline has no estimate) and ``mae`` (mean absolute error
      of the means; :func:`scflowlm.metrics.mean_correlations`);
    - the same on the ``n_top_de`` top DE genes of the real condition against its control cells
      (:func:`scflowlm.tl.top_de_genes`, ``de_method``), suffix ``_de``;
    - distribution distances between the real and predicted cells of the condition, each set subsampled to
      ``max_cells`` (``seed``): ``mmd``, ``adaptive_mmd``, ``wasserstein``, ``edistance``
      (:mod:`scflowlm.metrics`), computed in ``space``: ``"umap"`` (paper: a 10-D UMAP fitted on the
      condition's real + predicted cells, from their PCA coordinates), ``"pca"`` (the PCA coordinates) or
      ``"raw"`` (genes of ``X``);
    - ``leiden_kl`` and ``inception_score``: a Leiden clustering (``leiden_resolution``) of all real cells in
      PCA space and an MLP trained on it (:func:`scflowlm.metrics.fit_leiden_classifier`), fitted once; the
      predicted cells of each condition are classified and compared with the real cells of the condition.

    PCA coordinates: real cells from ``adata_real.obsm[rep]``; predicted cells from ``adata_pred.obsm[rep]``
    when present, else ``adata_pred.X`` projected with ``adata_real.varm["PCs"]`` after centring on the real
    gene means (which assumes that ``adata_real`` holds the cells the PCA was fitted on); with neither, a PCA
    is fitted on ``adata_real.X``.

    Parameters
    ----------
    adata_real
        Real cells (log-normalised ``X``), including the control cells.
    adata_pred
        Predicted cells with the same ``var_names`` and the ``condition_keys`` columns in ``obs``.
    condition_keys
        obs columns that define a condition, e.g. ``["cell_type", "condition"]``. Default: as recorded in
        ``adata_pred.uns["scflowlm"]`` (by the model or baseline that made the prediction) or in
        ``adata_real.uns["scflowlm"]`` (by ``setup_anndata``).
    perturbation_key
        The condition key that holds the perturbation (default: recorded, as ``condition_keys``).
    control_value
        Control label of ``perturbation_key`` (default: recorded, as ``condition_keys``).
    conditions
        Conditions to evaluate (dicts ``{key: value}``); default: every condition of ``adata_pred`` that is in
        ``adata_real`` (control conditions only with ``include_controls``).
    metrics
        Metric names and/or groups (``"correlation"``, ``"distribution"``, ``"leiden"``, ``"all"``); all if None.
    space
        %(space)s
    rep
        obsm key of the PCA coordinates (default: the ``obsm_key`` the prediction records, else ``"X_pca"``).
    n_top_de
        Number of top DE genes.
    de_method
        Test of ``sc.tl.rank_genes_groups``.
    max_cells
        Subsample size per set for the distribution metrics (O(n^2) memory and time). None keeps all.
    mmd_gamma
        RBF ``gamma`` of :func:`scflowlm.metrics.mmd`; None: 1 (paper) in ``"umap"`` space, ``"median"`` otherwise.
    w2_method
        ``"exact"`` or ``"sinkhorn"`` (:func:`scflowlm.metrics.wasserstein`).
    n_umap_components
        Dimensions of the joint UMAP.
    leiden_resolution
        Resolution of the Leiden clustering.
    leiden_classifier
        A classifier already fitted (:func:`scflowlm.metrics.fit_leiden_classifier`) on the real PCA coordinates,
        to reuse across calls; the real cells' clusters are then its predictions.
    include_controls
        Also evaluate control conditions (their change and DE metrics are NaN).
    seed
        Seed of subsampling, UMAP, Leiden and the classifier.
    key_added
        Where the table is stored in ``adata_pred.uns`` (not stored if None).

    Returns
    -------
    DataFrame with one row per condition: the ``condition_keys`` columns, ``n_real``, ``n_pred``, then one
    column per metric.

    Writes ``adata_pred.uns["scflowlm_evaluate" | key_added]``: the same table (pandas DataFrame), which
    :func:`scflowlm.pl.evaluate` plots. Nothing else is written; ``adata_real`` is not changed.
    """
    keys, perturbation_key, control_value = _resolve_keys(
        adata_pred,
        adata_real,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
    )
    if rep is None:
        rep = adata_pred.uns.get(UNS_KEY, {}).get("obsm_key", "X_pca")
    if perturbation_key not in keys:
        msg = f"perturbation_key {perturbation_key!r} must be one of condition_keys {keys}"
        raise ValueError(msg)
    _check_keys(adata_real, keys, "adata_real")
    _check_keys(adata_pred, keys, "adata_pred")
    wanted = _resolve_metrics(metrics)
    need_genes = any(m in CORRELATION_METRICS for m in wanted) or space == "raw"
    if need_genes and list(adata_real.var_names) != list(adata_pred.var_names):
        msg = "adata_real and adata_pred must have the same var_names (same order)"
        raise ValueError(msg)
    context_keys = [k for k in keys if k != perturbation_key]
    sep = _combination_sep(adata_real, adata_pred)
    mask_of = {"perturbation_key": perturbation_key, "combination_sep": sep}  # "B+A" finds "A+B"
    if conditions is None:
        # every predicted condition with real cells (values compared by the columns' types)
        conditions = [
            c for c in _conditions_in(adata_pred.obs, keys) if obs_mask(adata_real.obs, c, **mask_of).any()
        ]
        if not include_controls:
            conditions = [c for c in conditions if not same_value(c[perturbation_key], control_value)]
    conditions = [{k: str(c[k]) for k in keys} for c in conditions]

    pca_real = pca_pred = None
    if any(m in DISTRIBUTION_METRICS + LEIDEN_METRICS for m in wanted):
        pca_real, pca_pred = pca_coords(adata_real, adata_pred, rep=rep)  # (n_real, k), (n_pred, k)
    clf = real_labels = None
    if any(m in LEIDEN_METRICS for m in wanted):
        clf = leiden_classifier or fit_leiden_classifier(pca_real, resolution=leiden_resolution, seed=seed)
        real_labels = (
            clf.labels
            if len(clf.labels) == len(pca_real) and leiden_classifier is None
            else clf.predict(pca_real)
        )
        logger.info("Leiden: %d clusters, classifier accuracy %.3f", clf.n_clusters, clf.accuracy)
    gamma = mmd_gamma if mmd_gamma is not None else (1.0 if space == "umap" else "median")

    additive = [None] * len(conditions)
    if any("interaction" in m for m in wanted):
        additive = _additive_means(adata_real, conditions, keys, perturbation_key, control_value, sep)
    rows = []
    for i, cond in enumerate(conditions):
        m_real, m_pred = obs_mask(adata_real.obs, cond, **mask_of), obs_mask(adata_pred.obs, cond, **mask_of)
        row: dict[str, Any] = dict(cond) | {"n_real": int(m_real.sum()), "n_pred": int(m_pred.sum())}
        if row["n_real"] and row["n_pred"]:
            ctrl = obs_mask(
                adata_real.obs, {k: cond[k] for k in context_keys} | {perturbation_key: control_value}
            )
            is_control = same_value(cond[perturbation_key], control_value)
            cells = _Condition(
                m_real, m_pred, ctrl if not is_control and ctrl.sum() >= 2 else None, additive[i]
            )
            if any(m in CORRELATION_METRICS for m in wanted):
                row |= _correlations(
                    adata_real, adata_pred, cells, wanted, n_top_de=n_top_de, de_method=de_method
                )
            if any(m in DISTRIBUTION_METRICS for m in wanted):
                if space == "raw":
                    real, pred = (
                        dense(adata_real.X[np.flatnonzero(m_real)]),
                        dense(adata_pred.X[np.flatnonzero(m_pred)]),
                    )
                else:
                    real, pred = pca_real[m_real], pca_pred[m_pred]
                row |= _distances(
                    real,
                    pred,
                    wanted,
                    space=space,
                    gamma=gamma,
                    w2_method=w2_method,
                    max_cells=max_cells,
                    n_umap=n_umap_components,
                    seed=seed,
                    subsample_seed=seed + i,
                )
            if clf is not None:
                row |= _leiden(clf, real_labels[m_real], pca_pred[m_pred], wanted)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*keys, "n_real", "n_pred", *wanted])
    if key_added is not None:
        adata_pred.uns[key_added] = df
    return df
