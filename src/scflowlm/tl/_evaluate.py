"""One-call evaluation of predicted cells against real cells, one row per condition."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ._correlations import mean_correlations, top_de_genes
from ._distances import adaptive_mmd, edistance, mmd, wasserstein
from ._embedding import _pca_coords, joint_embedding
from ._leiden import _cluster_distribution, _kl, fit_leiden_classifier, inception_score
from .._constants import EVALUATE_KEY, UNS_KEY
from ._utils import _check_keys, _conditions_in, _dense, _match_mask, _resolve_keys, _rng, _subsample_idx

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

    from ._leiden import LeidenClassifier

logger = logging.getLogger(__name__)

CORRELATION_METRICS = (
    "r2",
    "r2_score",
    "pearson",
    "spearman",
    "pearson_delta",
    "r2_de",
    "r2_score_de",
    "pearson_de",
    "spearman_de",
    "pearson_delta_de",
)
DISTRIBUTION_METRICS = ("mmd", "adaptive_mmd", "wasserstein", "edistance")
LEIDEN_METRICS = ("leiden_kl", "inception_score")
#: every metric :func:`evaluate` knows, and the groups accepted in its ``metrics`` argument.
METRICS = CORRELATION_METRICS + DISTRIBUTION_METRICS + LEIDEN_METRICS
METRIC_GROUPS = {
    "correlation": CORRELATION_METRICS,
    "distribution": DISTRIBUTION_METRICS,
    "leiden": LEIDEN_METRICS,
    "all": METRICS,
}


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
      tables), ``r2_score`` (coefficient of determination), ``pearson``, ``spearman`` and ``pearson_delta``
      (Pearson r of the change from the control mean; :func:`scflowlm.tl.mean_correlations`);
    - the same on the ``n_top_de`` top DE genes of the real condition against its control cells
      (:func:`scflowlm.tl.top_de_genes`, ``de_method``), suffix ``_de``;
    - distribution distances between the real and predicted cells of the condition, each set subsampled to
      ``max_cells`` (``seed``): ``mmd``, ``adaptive_mmd``, ``wasserstein``, ``edistance``. They are computed in
      ``space``: ``"umap"`` (paper: a 10-D UMAP fitted on the condition's real + predicted cells, from their
      PCA coordinates), ``"pca"`` (the PCA coordinates) or ``"raw"`` (genes of ``X``);
    - ``leiden_kl`` and ``inception_score``: a Leiden clustering (``leiden_resolution``) of all real cells in
      PCA space and an MLP trained on it (:func:`scflowlm.tl.fit_leiden_classifier`), fitted once; the
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
        Space of the distribution distances.
    rep
        obsm key of the PCA coordinates (default: the ``obsm_key`` the prediction records, else ``"X_pca"``).
    n_top_de
        Number of top DE genes.
    de_method
        Test of ``sc.tl.rank_genes_groups``.
    max_cells
        Subsample size per set for the distribution metrics (O(n^2) memory and time). None keeps all.
    mmd_gamma
        RBF ``gamma`` of :func:`scflowlm.tl.mmd`; None: 1 (paper) in ``"umap"`` space, ``"median"`` otherwise.
    w2_method
        ``"exact"`` or ``"sinkhorn"`` (:func:`scflowlm.tl.wasserstein`).
    n_umap_components
        Dimensions of the joint UMAP.
    leiden_resolution
        Resolution of the Leiden clustering.
    leiden_classifier
        A classifier already fitted (:func:`scflowlm.tl.fit_leiden_classifier`) on the real PCA coordinates,
        to reuse across calls; the real cells' clusters are then its predictions.
    include_controls
        Also evaluate control conditions (their change and DE metrics are NaN).
    seed
        Seed of subsampling, UMAP, Leiden and the classifier.
    key_added
        The table is stored in ``adata_pred.uns[key_added]`` (not stored if None).

    Returns
    -------
    DataFrame with one row per condition: the ``condition_keys`` columns, ``n_real``, ``n_pred``, then one
    column per metric. Also written to ``adata_pred.uns["scflowlm_evaluate" | key_added]``, which
    :func:`scflowlm.pl.evaluate` plots.
    """
    keys, perturbation_key, control_value = _resolve_keys(
        adata_pred, adata_real, condition_keys=condition_keys, perturbation_key=perturbation_key,
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

    if conditions is None:
        real_set = {tuple(c.values()) for c in _conditions_in(adata_real.obs, keys)}
        conditions = [c for c in _conditions_in(adata_pred.obs, keys) if tuple(c.values()) in real_set]
        if not include_controls:
            conditions = [c for c in conditions if str(c[perturbation_key]) != str(control_value)]
    conditions = [{k: str(c[k]) for k in keys} for c in conditions]

    need_pca = any(m in DISTRIBUTION_METRICS + LEIDEN_METRICS for m in wanted)
    pca_real = pca_pred = None
    if need_pca:
        pca_real, pca_pred = _pca_coords(adata_real, adata_pred, rep=rep)  # (n_real, k), (n_pred, k)

    clf = real_labels = None
    if any(m in LEIDEN_METRICS for m in wanted) and leiden_classifier is not None:
        clf = leiden_classifier
        real_labels = clf.predict(pca_real)
    elif any(m in LEIDEN_METRICS for m in wanted):
        clf = fit_leiden_classifier(pca_real, resolution=leiden_resolution, seed=seed)
        real_labels = clf.labels if len(clf.labels) == len(pca_real) else clf.predict(pca_real)
        logger.info("Leiden: %d clusters, classifier accuracy %.3f", clf.n_clusters, clf.accuracy)

    gamma = mmd_gamma if mmd_gamma is not None else (1.0 if space == "umap" else "median")
    rows = []
    for i, cond in enumerate(conditions):
        m_real = _match_mask(adata_real.obs, cond)
        m_pred = _match_mask(adata_pred.obs, cond)
        row: dict[str, Any] = dict(cond)
        row["n_real"], row["n_pred"] = int(m_real.sum()), int(m_pred.sum())
        if row["n_real"] == 0 or row["n_pred"] == 0:
            rows.append(row)
            continue
        is_control = cond[perturbation_key] == str(control_value)
        ctrl = {k: cond[k] for k in context_keys} | {perturbation_key: str(control_value)}
        m_ctrl = _match_mask(adata_real.obs, ctrl)
        has_ctrl = (not is_control) and m_ctrl.sum() >= 2

        if any(m in CORRELATION_METRICS for m in wanted):
            xr, xp = adata_real.X[m_real], adata_pred.X[m_pred]
            xc = adata_real.X[m_ctrl] if has_ctrl else None
            row.update(mean_correlations(xr, xp, control=xc))
            if any(m.endswith("_de") for m in wanted) and has_ctrl and row["n_real"] >= 2:
                de = top_de_genes(adata_real, target=m_real, reference=m_ctrl, n_genes=n_top_de, method=de_method)
                row.update({f"{k}_de": v for k, v in mean_correlations(xr, xp, control=xc, genes=de).items()})

        dist = [m for m in wanted if m in DISTRIBUTION_METRICS]
        if dist:
            rng = _rng(seed + i)
            if space == "raw":
                a = _dense(adata_real.X[np.flatnonzero(m_real)])
                b = _dense(adata_pred.X[np.flatnonzero(m_pred)])
            else:
                a, b = pca_real[m_real], pca_pred[m_pred]
            a = a[_subsample_idx(len(a), max_cells, rng)]
            b = b[_subsample_idx(len(b), max_cells, rng)]
            if len(a) >= 2 and len(b) >= 2:
                if space == "umap":
                    a, b = joint_embedding(a, b, space="umap", n_components=n_umap_components, seed=seed)
                kw = {"space": "raw", "max_cells": None}
                funcs = {
                    "mmd": partial(mmd, gamma=gamma, **kw),
                    "adaptive_mmd": partial(adaptive_mmd, **kw),
                    "wasserstein": partial(wasserstein, method=w2_method, **kw),
                    "edistance": partial(edistance, **kw),
                }
                row.update({m: funcs[m](a, b) for m in dist})

        if clf is not None:
            p = _cluster_distribution(real_labels[m_real], clf.n_clusters)
            q = _cluster_distribution(clf.predict(pca_pred[m_pred]), clf.n_clusters)
            if "leiden_kl" in wanted:
                row["leiden_kl"] = _kl(p, q, 1e-6)
            if "inception_score" in wanted:
                row["inception_score"] = inception_score(pca_pred[m_pred], classifier=clf)
        rows.append(row)

    df = pd.DataFrame(rows, columns=[*keys, "n_real", "n_pred", *wanted])
    if key_added is not None:
        adata_pred.uns[key_added] = df
    return df
