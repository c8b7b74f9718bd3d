"""Paired per-cell check of a prediction AnnData: how much of each source cell survives in its prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._constants import SOURCE_OBSM, UNS_KEY
from ..metrics import paired_identity as _paired_identity
from ._utils import _as_array

if TYPE_CHECKING:
    from anndata import AnnData

    from ..metrics import PairedIdentity

__all__ = ["paired_identity"]


def paired_identity(
    adata_pred: AnnData,
    *,
    source_key: str = SOURCE_OBSM,
    pred_key: str | None = None,
    mode: Literal["dims", "orthogonal"] = "dims",
    fraction: float = 0.5,
    seed: int = 0,
) -> PairedIdentity:
    """:func:`scflowlm.metrics.paired_identity` of a control-source prediction: source cells vs their predictions.

    Parameters
    ----------
    adata_pred
        A prediction with one cell per source cell: the source states in ``obsm[source_key]`` (as
        ``predict_perturbation(..., source=...)`` writes them) and the predicted states in ``obsm[pred_key]``.
    source_key
        obsm key of the source states.
    pred_key
        obsm key of the predicted states (default: the ``obsm_key`` the prediction records, else ``"X_pca"``).
    mode, fraction, seed
        See :func:`scflowlm.metrics.paired_identity`.

    Returns
    -------
    :class:`~scflowlm.metrics.PairedIdentity` with the per-direction table and a summary.
    """
    if pred_key is None:
        pred_key = adata_pred.uns.get(UNS_KEY, {}).get("obsm_key", "X_pca")
    if source_key not in adata_pred.obsm:
        msg = f"adata_pred.obsm[{source_key!r}] is missing: only a control-source prediction has source cells"
        raise KeyError(msg)
    return _paired_identity(
        _as_array(adata_pred, source_key),
        _as_array(adata_pred, pred_key),
        mode=mode,
        fraction=fraction,
        seed=seed,
    )
