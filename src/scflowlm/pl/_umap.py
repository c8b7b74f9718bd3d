"""Generated and real cells on one UMAP (paper, figures 3 and 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._constants import SOURCE_OBSM
from .._docs import doc_params
from .._utils import PredictionRecord, dense, obs_mask, pca_coords, random_state, subsample_idx
from ..metrics import joint_embedding
from ._utils import _finish, _new_ax

if TYPE_CHECKING:
    from collections.abc import Mapping

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: colours of the paper's overlap figures: generated blue, ground truth orange.
COLORS = {"real": "#ff7f0e", "generated": "#1f77b4", "source": "#9e9e9e"}


def _filter(
    adata: AnnData, condition: Mapping[str, Any] | None, *, other: AnnData | None = None
) -> np.ndarray:
    """Cells of ``adata`` matching ``condition``; a key in neither ``adata`` nor ``other`` is a KeyError (a typo)."""
    if not condition:
        return np.ones(adata.n_obs, dtype=bool)
    unknown = [
        k for k in condition if k not in adata.obs.columns and (other is None or k not in other.obs.columns)
    ]
    if unknown:
        msg = f"condition key(s) {unknown} are not obs columns; columns: {list(adata.obs.columns)[:10]}"
        raise KeyError(msg)
    record = PredictionRecord.read(adata, other)  # "B+A" finds the cells of "A+B"
    combos = (
        {"perturbation_key": record.perturbation_key, "combination_sep": record.combination_sep}
        if record
        else {}
    )
    return obs_mask(adata.obs, {k: v for k, v in condition.items() if k in adata.obs.columns}, **combos)


@doc_params()
def umap_overlap(
    adata_real: AnnData,
    adata_pred: AnnData,
    *,
    condition: Mapping[str, Any] | None = None,
    source: AnnData | np.ndarray | bool | None = None,
    rep: str = "X_pca",
    max_cells: int | None = 2000,
    seed: int = 0,
    size: float = 8.0,
    alpha: float = 0.6,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Real, generated (and source) cells on one 2-D UMAP fitted on all of them.

    Cells are placed in the real data's PCA space (see :func:`scflowlm.tl.evaluate`: ``obsm[rep]``, or ``X``
    projected with ``adata_real.varm["PCs"]``), subsampled, and embedded together with
    :func:`scflowlm.metrics.joint_embedding` (2 components). Nothing is written to the AnnData objects.

    Parameters
    ----------
    adata_real, adata_pred
        Real and generated cells.
    condition
        ``{obs key: value}`` that filters both (keys absent from one of them are ignored for it; a key in neither
        raises a KeyError).
    source
        Source cells drawn in grey: AnnData (PCA coordinates as above, not filtered by ``condition``), an array
        in the PCA space, or True for ``adata_pred.obsm["X_source"]`` (filtered with the generated cells).
    rep
        obsm key of the PCA coordinates.
    max_cells
        Each set is subsampled to at most this many cells (``seed``).
    seed
        Seed of the subsampling and of the UMAP.
    size, alpha
        Marker size and transparency.
    colors
        Colours of ``"real"``, ``"generated"`` and ``"source"``.
    title
        Axes title; by default the condition values.
    %(ax_show)s

    Returns
    -------
    The Axes (one scatter collection per set, legend labels ``real``, ``generated``, ``source``), the Figure
    with ``return_fig``, or None once shown.
    """
    col = COLORS | dict(colors or {})
    pr, pp = pca_coords(adata_real, adata_pred, rep=rep)  # (n_real, k), (n_pred, k)
    mr, mp = (
        _filter(adata_real, condition, other=adata_pred),
        _filter(adata_pred, condition, other=adata_real),
    )
    if not mr.any() or not mp.any():
        msg = f"no real ({mr.sum()}) or no generated ({mp.sum()}) cells for {condition}"
        raise ValueError(msg)
    sets = {"real": pr[mr], "generated": pp[mp]}
    if source is True:
        sets["source"] = dense(adata_pred.obsm[SOURCE_OBSM])[mp]
    elif isinstance(source, AnnData):
        sets["source"] = pca_coords(adata_real, source, rep=rep)[1]
    elif source is not None and source is not False:
        sets["source"] = dense(source)
    rng = random_state(seed)
    sets = {k: v[subsample_idx(len(v), max_cells, rng)] for k, v in sets.items()}
    names = list(sets)
    rest = np.concatenate([sets[k] for k in names[1:]])
    ur, urest = joint_embedding(sets["real"], rest, space="umap", n_components=2, seed=seed)
    emb = {"real": ur}
    start = 0
    for k in names[1:]:
        emb[k] = urest[start : start + len(sets[k])]
        start += len(sets[k])

    fig, ax = _new_ax(ax)
    for k in ["source", "real", "generated"]:
        if k in emb:
            ax.scatter(emb[k][:, 0], emb[k][:, 1], s=size, alpha=alpha, c=col[k], label=k, linewidths=0)
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else ", ".join(str(v) for v in (condition or {}).values()))
    ax.legend(frameon=False, markerscale=2)
    return _finish(fig, ax, show=show, return_fig=return_fig)
