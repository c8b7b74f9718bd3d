"""Generated trajectories, from source to predicted cell, over the real cells they should reach."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import PATH_OBSM, UNS_KEY
from .._docs import doc_params
from .._utils import dense, random_state, subsample_idx
from ..metrics import joint_embedding
from ._umap import COLORS, _filter
from ._utils import _finish, _new_ax

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _conditions(adata: AnnData, keys: list[str]) -> list[dict]:
    """The distinct conditions of a prediction (for messages)."""
    return adata.obs[keys].astype(str).drop_duplicates().to_dict("records")[:5] if keys else []


@doc_params()
def flow(
    adata_real: AnnData,
    adata_pred: AnnData,
    *,
    condition: Mapping[str, Any] | None = None,
    basis: Literal["pca", "umap"] = "pca",
    n_paths: int = 30,
    rep: str | None = None,
    max_cells: int | None = 1000,
    seed: int = 0,
    size: float = 8.0,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """A few generated paths, source to end point, drawn over the real target cells.

    Reads the states of each path from ``adata_pred.obsm["X_path"]`` (cells x states x coordinates, written by
    ``predict_perturbation(..., return_path=True)``) and the real cells' states from ``adata_real.obsm[rep]``.
    Nothing is written to either AnnData.

    Parameters
    ----------
    adata_real
        Real cells with their states in ``obsm[rep]``.
    adata_pred
        A prediction made with ``return_path=True``.
    condition
        ``{obs key: value}`` selecting the real target cells (and the paths); default: the conditions of the
        prediction (all its paths, the real cells of its conditions).
    basis
        ``"pca"``: the first two state coordinates (the first two principal components), as is. ``"umap"``: a 2-D
        UMAP fitted on the real cells and the path states together (:func:`scflowlm.metrics.joint_embedding`).
    n_paths
        Paths drawn (chosen at random with ``seed``).
    rep
        obsm key of the states (default: the one the prediction records, else ``"X_pca"``).
    max_cells
        Real cells drawn at most (subsampled with ``seed``).
    seed
        Seed of the choices and of the UMAP.
    size
        Marker size of the real cells and the end points.
    title
        Axes title; by default the condition values.
    %(ax_show)s

    Returns
    -------
    The Axes (real cells, start points and end points as scatter collections with the legend labels ``real``,
    ``start``, ``end``; one line per path), the Figure with ``return_fig``, or None once shown.
    """
    if PATH_OBSM not in adata_pred.obsm:
        msg = f"adata_pred.obsm[{PATH_OBSM!r}] is missing: predict with return_path=True"
        raise KeyError(msg)
    rep = rep or adata_pred.uns.get(UNS_KEY, {}).get("obsm_key", "X_pca")
    keys = adata_pred.uns.get(UNS_KEY, {}).get("condition_keys", [])
    if condition is None and keys:
        conds = adata_pred.obs[keys].astype(str).drop_duplicates().to_dict("records")
        real_mask = np.zeros(adata_real.n_obs, dtype=bool)
        for c in conds:
            real_mask |= _filter(adata_real, c)
        pred_mask = np.ones(adata_pred.n_obs, dtype=bool)
    else:
        real_mask = _filter(adata_real, condition, other=adata_pred)
        pred_mask = _filter(adata_pred, condition, other=adata_real)
    if rep not in adata_real.obsm:
        msg = f"adata_real.obsm[{rep!r}] is missing: pass the AnnData the model was set up with, or rep="
        raise KeyError(msg)
    if not pred_mask.any():
        msg = f"no predicted cell matches {condition}; the prediction's conditions: {_conditions(adata_pred, keys)}"
        raise ValueError(msg)
    if not real_mask.any():
        msg = (
            f"no real cell matches {condition or 'the predicted conditions'}: nothing to draw the paths over"
        )
        raise ValueError(msg)
    rng = random_state(seed)
    real = dense(adata_real.obsm[rep])[real_mask]
    real = real[subsample_idx(len(real), max_cells, rng)]  # (n_real, D)
    paths = np.asarray(adata_pred.obsm[PATH_OBSM])[pred_mask]  # (n, T, D)
    paths = paths[subsample_idx(len(paths), n_paths, rng)]  # (p, T, D)
    p, T, D = paths.shape
    if D < 2 or real.shape[1] < 2:
        msg = f"the states have {min(D, real.shape[1])} coordinate(s); a 2-D plot of paths needs at least two"
        raise ValueError(msg)
    if basis == "umap":
        real2, flat = joint_embedding(real, paths.reshape(p * T, D), space="umap", n_components=2, seed=seed)
        paths2, labels = flat.reshape(p, T, 2), ("UMAP1", "UMAP2")
    elif basis == "pca":
        real2, paths2, labels = real[:, :2], paths[:, :, :2], ("PC1", "PC2")
    else:
        msg = f"basis must be 'pca' or 'umap', not {basis!r}"
        raise ValueError(msg)

    fig, ax = _new_ax(ax)
    ax.scatter(real2[:, 0], real2[:, 1], s=size, c=COLORS["real"], alpha=0.35, linewidths=0, label="real")
    for path in paths2:
        ax.plot(path[:, 0], path[:, 1], color=COLORS["generated"], alpha=0.5, linewidth=0.8)
    ax.scatter(
        paths2[:, 0, 0], paths2[:, 0, 1], s=size, c=COLORS["source"], marker="o", label="start", zorder=3
    )
    ax.scatter(
        paths2[:, -1, 0],
        paths2[:, -1, 1],
        s=size * 1.5,
        c=COLORS["generated"],
        marker="^",
        label="end",
        zorder=3,
    )
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(frameon=False, loc="best")
    ax.set_title(title if title is not None else ", ".join(str(v) for v in (condition or {}).values()))
    return _finish(fig, ax, show=show, return_fig=return_fig)
