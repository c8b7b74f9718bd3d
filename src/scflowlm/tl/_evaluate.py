"""One-call evaluation of predicted cells against real cells, one row per condition."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .._constants import EVALUATE_KEY, UNS_KEY
from .._docs import doc_params
from .._utils import dense, obs_mask, pca_coords
from ..data import same_value
from ..metrics import fit_leiden_classifier
from . import _scores
from ._utils import _check_keys, _combination_sep, _conditions_in, _resolve_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

    from ..metrics import LeidenClassifier

logger = logging.getLogger(__name__)

#: the metrics of mean expression (:func:`scflowlm.metrics.mean_correlations`), on the condition's genes
_CORRELATIONS = (
    "r2",
    "r2_score",
    "pearson",
    "spearman",
    "pearson_delta",
    "pearson_interaction",
    "mae",
    "mse",
)
#: every metric :func:`evaluate` knows, by the group names accepted in its ``metrics`` argument (the one registry)
METRIC_GROUPS = {
    "correlation": _CORRELATIONS + tuple(f"{m}_de" for m in _CORRELATIONS),
    "spread": ("r2_var", "r2_var_de"),
    "distribution": tuple(_scores.DISTANCES),
    "leiden": ("leiden_kl", "inception_score"),
    "discrimination": ("discrimination",),
    "de": ("de_overlap",),
    "signal": ("signal_ratio",),
}
METRICS = tuple(m for group in METRIC_GROUPS.values() for m in group)
METRIC_GROUPS["all"] = METRICS
#: columns a metric brings with it
_COMPANIONS = {"de_overlap": ("n_de_real", "n_de_pred"), "signal_ratio": ("has_signal",)}
#: whether a higher value of a metric is better (what :func:`scflowlm.tl.compare` calls better or worse)
HIGHER_IS_BETTER = {m: True for m in METRICS} | {
    m: False
    for m in (
        "mae",
        "mae_de",
        "mse",
        "mse_de",
        "mmd",
        "adaptive_mmd",
        "wasserstein",
        "edistance",
        "leiden_kl",
        "discrimination",
    )
}
_MEAN_METRICS = METRIC_GROUPS["correlation"] + METRIC_GROUPS["spread"]


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
    de_fdr: float = 0.05,
    exclude_perturbed: bool | Literal["auto"] = "auto",
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
    ``adata_real`` (a combination matches in any order: ``"B+A"`` is ``"A+B"``). Its context is the values of the
    other keys (all but ``perturbation_key``); its control cells are the real cells of the same context with
    ``perturbation_key == control_value``. The metrics are explained, with when each misleads, on the docs'
    metrics page.

    Metrics (columns; see ``metrics``):

    - ``"correlation"``, of mean expression over the condition's genes (``X``): ``r2`` (Pearson r squared, as the
      paper's tables), ``r2_score`` (coefficient of determination), ``pearson``, ``spearman``, ``pearson_delta``
      (Pearson r of the change from the control mean), ``pearson_interaction`` (Pearson r of the prediction minus
      :func:`~scflowlm.tl.baseline_additive`'s with the real cells minus it: what the prediction gets right beyond
      the additive expectation; NaN where the additive baseline has no estimate), ``mae`` and ``mse`` (mean
      absolute and squared error of the means; :func:`scflowlm.metrics.mean_correlations`);
      the same on the ``n_top_de`` top DE genes of the real condition against its control cells
      (:func:`scflowlm.tl.top_de_genes`, ``de_method``), suffix ``_de``;
    - ``"spread"``: ``r2_var`` (and ``r2_var_de``), R^2 of the per-gene variance
      (:func:`scflowlm.metrics.variance_r2`);
    - ``"distribution"``: distances between the real and predicted cells of the condition, each set subsampled to
      ``max_cells`` (``seed``): ``mmd``, ``adaptive_mmd``, ``wasserstein``, ``edistance``
      (:mod:`scflowlm.metrics`), computed in ``space``: ``"umap"`` (paper: a 10-D UMAP fitted on the
      condition's real + predicted cells, from their PCA coordinates), ``"pca"`` (the PCA coordinates) or
      ``"raw"`` (genes of ``X``);
    - ``"leiden"``: ``leiden_kl`` and ``inception_score``: a Leiden clustering (``leiden_resolution``) of all real
      cells in PCA space and an MLP trained on it (:func:`scflowlm.metrics.fit_leiden_classifier`), fitted once;
      the predicted cells of each condition are classified and compared with the real cells of the condition;
    - ``"discrimination"``: the normalised rank of the condition's own real change among the real changes of every
      perturbed condition of ``adata_real`` (:func:`scflowlm.metrics.discrimination`; 0 is perfect, 0.5 chance);
    - ``"de"``: ``de_overlap``, the share of the real condition's DE genes among the prediction's top DE genes
      (both against the real control cells, the same test ``de_method`` and false discovery rate ``de_fdr``, the
      predicted cells subsampled to the real count so both tests have the same power;
      :func:`scflowlm.metrics.de_overlap`), with the counts ``n_de_real`` and ``n_de_pred``;
    - ``"signal"``: ``signal_ratio``, the norm of the real condition's change over its half-split noise
      (:func:`scflowlm.metrics.signal_to_noise`), and ``has_signal`` (ratio at least 2; False where it cannot be
      measured): a condition without signal moves no further than the sampling of its own cells, so its scores
      measure noise.

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
        Metric names and/or groups (``"correlation"``, ``"spread"``, ``"distribution"``, ``"leiden"``,
        ``"discrimination"``, ``"de"``, ``"signal"``, ``"all"``); all if None.
    space
        %(space)s
    rep
        obsm key of the PCA coordinates (default: the ``obsm_key`` the prediction records, else ``"X_pca"``).
    n_top_de
        Number of top DE genes.
    de_method
        Test of ``sc.tl.rank_genes_groups``.
    de_fdr
        False discovery rate (Benjamini-Hochberg) below which a gene is DE, for ``de_overlap``.
    exclude_perturbed
        Leave a condition's perturbed genes (its single perturbations that are genes of ``var_names``, as in a
        CRISPRa/i screen, where the target gene trivially moves) out of every metric of expression (means, spread,
        DE genes, discrimination, signal), as cell-eval and the Turbine benchmark do. ``"auto"`` (default): where
        the perturbation names are genes of ``var_names``. The column ``n_excluded`` counts them.
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
        Seed of subsampling, UMAP, Leiden, the classifier and the half splits.
    key_added
        Where the table is stored in ``adata_pred.uns`` (not stored if None).

    Returns
    -------
    DataFrame with one row per condition: the ``condition_keys`` columns, ``n_real``, ``n_pred``, ``n_excluded``,
    then one column per metric (and ``n_de_real``, ``n_de_pred`` after ``de_overlap``, ``has_signal`` after
    ``signal_ratio``).

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
    if exclude_perturbed not in (True, False, "auto"):
        msg = f"exclude_perturbed must be True, False or 'auto', got {exclude_perturbed!r}"
        raise ValueError(msg)
    _check_keys(adata_real, keys, "adata_real")
    _check_keys(adata_pred, keys, "adata_pred")
    wanted = _resolve_metrics(metrics)
    expression = [m for m in wanted if m not in METRIC_GROUPS["distribution"] + METRIC_GROUPS["leiden"]]
    if (expression or space == "raw") and list(adata_real.var_names) != list(adata_pred.var_names):
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
    if any(m in METRIC_GROUPS["distribution"] + METRIC_GROUPS["leiden"] for m in wanted):
        pca_real, pca_pred = pca_coords(adata_real, adata_pred, rep=rep)  # (n_real, k), (n_pred, k)
    clf = real_labels = None
    if any(m in METRIC_GROUPS["leiden"] for m in wanted):
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
        additive = _scores.additive_means(adata_real, conditions, keys, perturbation_key, control_value, sep)
    singles = _scores.catalog_of(adata_real, [perturbation_key], perturbation_key, control_value, sep)[
        0
    ].table
    genes_are_perturbed = exclude_perturbed is True or (
        exclude_perturbed == "auto" and bool(set(singles.singles()) & set(map(str, adata_real.var_names)))
    )
    rows, cells_of = [], []
    for i, cond in enumerate(conditions):
        m_real, m_pred = obs_mask(adata_real.obs, cond, **mask_of), obs_mask(adata_pred.obs, cond, **mask_of)
        row: dict[str, Any] = dict(cond) | {"n_real": int(m_real.sum()), "n_pred": int(m_pred.sum())}
        is_control = same_value(cond[perturbation_key], control_value)
        excluded = (
            _scores.perturbed_genes(adata_real.var_names, singles.singles_of(cond[perturbation_key]))
            if genes_are_perturbed and not is_control
            else np.zeros(0, dtype=int)
        )
        row["n_excluded"] = len(excluded)
        cells = None
        if row["n_real"] and row["n_pred"]:
            ctrl = _scores.control_mask(adata_real.obs, cond, context_keys, perturbation_key, control_value)
            cells = _scores.ConditionCells(
                m_real,
                m_pred,
                ctrl if not is_control and ctrl.sum() >= 2 else None,
                np.setdiff1d(np.arange(adata_real.n_vars), excluded),
                additive[i],
            )
            if any(m in _MEAN_METRICS for m in wanted):
                row |= _scores.correlations(
                    adata_real, adata_pred, cells, wanted, n_top_de=n_top_de, de_method=de_method
                )
            if "de_overlap" in wanted:
                row |= _scores.de_agreement(
                    adata_real, adata_pred, cells, method=de_method, fdr=de_fdr, seed=seed
                )
            if "signal_ratio" in wanted:
                row |= _scores.signal(adata_real, cells, seed=seed)
            if any(m in METRIC_GROUPS["distribution"] for m in wanted):
                if space == "raw":
                    real = dense(adata_real.X[np.flatnonzero(m_real)])
                    pred = dense(adata_pred.X[np.flatnonzero(m_pred)])
                else:
                    real, pred = pca_real[m_real], pca_pred[m_pred]
                row |= _scores.distances(
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
                row |= _scores.leiden(clf, real_labels[m_real], pca_pred[m_pred], wanted)
        rows.append(row)
        cells_of.append(cells)
    if "discrimination" in wanted and rows:
        ranks = _scores.discrimination_ranks(
            adata_real,
            adata_pred,
            conditions,
            cells_of,
            keys=keys,
            perturbation_key=perturbation_key,
            control_value=control_value,
            sep=sep,
        )
        for row, rank in zip(rows, ranks, strict=True):
            row["discrimination"] = rank
    columns = [*keys, "n_real", "n_pred", "n_excluded"]
    for m in wanted:
        columns += [m, *_COMPANIONS.get(m, ())]
    df = pd.DataFrame(rows, columns=columns)
    if "has_signal" in df:  # False where it cannot be measured (a control, fewer than 4 cells)
        df["has_signal"] = df["has_signal"].fillna(value=False).astype(bool)
    if key_added is not None:
        adata_pred.uns[key_added] = df
    return df
