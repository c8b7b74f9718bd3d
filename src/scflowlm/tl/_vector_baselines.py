"""Baselines that reach perturbations never measured through gene vectors: ridge (GenePert) and nearest neighbours."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .._docs import doc_params
from ._baselines import _predict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd
    from anndata import AnnData

__all__ = ["baseline_knn", "baseline_ridge"]


@doc_params()
def baseline_ridge(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    perturbation_embeddings: pd.DataFrame | str,
    alpha: float | Literal["loo"] = "loo",
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
) -> AnnData:
    """Ridge regression from gene vectors to the change: the GenePert recipe :cite:p:`chen2024genepert`.

    A single measured in the condition's context keeps its own shift; a single that is not is estimated by a
    ridge regression (with an intercept) of the measured singles' changes of ``X`` on their vectors,
    :func:`scflowlm.data.vector_weights`. The penalty ``alpha="loo"`` (default) is chosen by
    leave-one-perturbation-out on the measured singles (:func:`scflowlm.data.choose_alpha`), so where the vectors
    predict nothing the estimate is the mean training shift (:func:`baseline_mean_shift`) rather than noise. A
    combination is the sum of its singles' estimates (:func:`baseline_additive`'s rule). The same estimate is the
    models' head start for a single never measured.

    Parameters
    ----------
    %(baseline_common)s
    perturbation_embeddings
        Gene vectors of the singles (name -> vector), or the ``adata.uns`` key of a table of them; checked as
        ``setup_anndata`` checks them.
    alpha
        Ridge penalty relative to the vectors' mean squared norm, or ``"loo"``.
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
        mode="additive",
        combo_sep=combo_sep,
        name="ridge",
        vectors=perturbation_embeddings,
        vector_options={"vector_rule": "ridge", "alpha": alpha},
    )


@doc_params()
def baseline_knn(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    perturbation_embeddings: pd.DataFrame | str,
    n_neighbors: int = 5,
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
) -> AnnData:
    """Nearest neighbours in gene-vector space: the mean change of the most similar measured singles.

    A single measured in the condition's context keeps its own shift; one that is not gets the mean shift of the
    ``n_neighbors`` measured singles whose vectors are most similar to its own (cosine;
    :func:`scflowlm.data.vector_weights`). A combination is the sum of its singles' estimates.

    Parameters
    ----------
    %(baseline_common)s
    perturbation_embeddings
        Gene vectors of the singles (name -> vector), or the ``adata.uns`` key of a table of them.
    n_neighbors
        How many measured singles to average.
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
        mode="additive",
        combo_sep=combo_sep,
        name="knn",
        vectors=perturbation_embeddings,
        vector_options={"vector_rule": "knn", "n_neighbors": n_neighbors},
    )
