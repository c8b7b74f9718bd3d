"""The linear PCA-ridge baseline of Ahlmann-Eltze, Huber & Anders (Nature Methods 2025)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from .._constants import UNS_KEY
from .._docs import doc_params
from .._utils import column_mean, dense, obs_mask
from ._baselines import _record
from ._utils import _check_keys, _conditions_in, _resolve_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

__all__ = ["baseline_linear"]


def _ridge_bilinear(Y: np.ndarray, G: np.ndarray, P: np.ndarray, ridge: float) -> np.ndarray:
    """``W`` minimising ``||Y - G W P||^2`` with ridge ``ridge`` on both sides (closed form of the paper).

    ``Y`` [genes, J], ``G`` [genes, K], ``P`` [E, J] -> ``W`` [K, E].
    """
    left = np.linalg.solve(G.T @ G + ridge * np.eye(G.shape[1]), G.T)  # [K, genes]
    right = np.linalg.solve(P @ P.T + ridge * np.eye(P.shape[0]), P)  # [E, J]
    return left @ Y @ right.T  # [K, E]


@doc_params()
def baseline_linear(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    n_components: int = 10,
    ridge: float = 0.1,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str = "+",
) -> AnnData:
    """Linear PCA-ridge baseline: ``change = G W P + b`` fitted on the training pseudobulks.

    The linear model of :cite:t:`ahlmann2025deep`, generalised from gene perturbations to conditions made of a
    context and a perturbation:

    - ``Y`` [genes, J]: the change of every training condition ``j`` = (context ``c``, perturbation ``p``)
      with control cells in its context: mean expression of its cells minus the mean of the context's controls;
      ``b`` = the mean change over the ``J`` conditions (row means of ``Y``).
    - ``G`` [genes, K]: gene embedding, the first ``K = n_components`` principal component scores of the genes
      in the matrix of training pseudobulks (genes x conditions, controls included), as the paper's
      "training data" embedding.
    - ``P`` [E, J]: condition embedding ``onehot(p) x [1, z_c]`` (outer product, flattened), where ``z_c`` holds
      the projection of context ``c``'s control mean (centred over contexts) on the gene PCs, scaled to a
      mean squared norm of 1 over the contexts: the effect of a perturbation is linear in the context's control
      profile. With one context this is a plain one-hot.
    - ``W`` [K, E] by ridge regression on both sides (penalty ``ridge``), in closed form as in the paper.

    A condition to predict gets ``G W P + b``; a combination ``"A+B"`` the sum of the predicted singles (the
    paper's additive rule for double perturbations). Singles never seen in training contribute nothing. The
    predicted change is added to the context's own control cells, as the other ``baseline_*`` functions do.

    Parameters
    ----------
    %(baseline_keys)s
    n_components
        ``K``: dimensions of the gene embedding (the paper: 10).
    ridge
        Ridge penalty on both sides (the paper: 0.1).
    obsm_keys
        obsm entries shifted along with ``X``: the change of ``X`` mapped through ``adata.varm["PCs"]``, which
        holds for a PCA of ``X`` (entries without matching loadings are left out).
    combo_sep
        Separator of the perturbations in a combination label.

    Returns
    -------
    An AnnData shaped like a prediction: the control cells of each condition's context (copies), relabelled
    with the condition, ``X`` shifted by the predicted change; the same ``var_names``; obs columns
    ``condition_keys``, ``baseline`` (``"linear"``) and ``source_cell``; ``obsm`` entries shifted likewise;
    ``uns["scflowlm"]`` the keys, as a model's prediction records them.
    """
    keys, perturbation_key, control_value = _resolve_keys(
        adata, condition_keys=condition_keys, perturbation_key=perturbation_key, control_value=control_value
    )
    _check_keys(adata, keys)
    if perturbation_key not in keys:
        msg = f"perturbation_key {perturbation_key!r} must be one of condition_keys {keys}"
        raise ValueError(msg)
    ctrl = str(control_value)
    ckeys = [k for k in keys if k != perturbation_key]
    targets = [conditions] if hasattr(conditions, "keys") else list(conditions)
    targets = [{k: str(c[k]) for k in keys} for c in targets]
    target_set = {tuple(c[k] for k in keys) for c in targets}
    obs = adata.obs

    def mean_of(cond: dict[str, str]) -> np.ndarray | None:
        m = obs_mask(obs, cond)
        return column_mean(adata.X[m]) if m.any() else None

    seen = [c for c in _conditions_in(obs, keys) if tuple(c[k] for k in keys) not in target_set]
    contexts = sorted({tuple(c[k] for k in ckeys) for c in seen})
    control_mean = {
        ctx: mean_of(dict(zip(ckeys, ctx, strict=True)) | {perturbation_key: ctrl}) for ctx in contexts
    }
    train = [
        c
        for c in seen
        if c[perturbation_key] != ctrl and control_mean[tuple(c[k] for k in ckeys)] is not None
    ]
    if not train:
        msg = "baseline_linear needs training conditions with control cells in their context"
        raise ValueError(msg)
    singles = sorted({s for c in train for s in c[perturbation_key].split(combo_sep)})
    means = {tuple(c[k] for k in keys): mean_of(c) for c in seen}
    ctx_of = {tuple(c[k] for k in keys): tuple(c[k] for k in ckeys) for c in train}

    # Y [genes, J]: changes of the training conditions; b [genes]: their mean
    cols = [tuple(c[k] for k in keys) for c in train]
    Y = np.stack([means[j] - control_mean[ctx_of[j]] for j in cols], axis=1)
    b = Y.mean(1)
    # G [genes, K]: principal component scores of the genes over the training pseudobulks
    pseudo = np.stack(list(means.values()), axis=1)  # [genes, all training conditions]
    pseudo = pseudo - pseudo.mean(0, keepdims=True)
    U, S, _ = np.linalg.svd(pseudo, full_matrices=False)
    K = max(1, min(n_components, len(S)))
    G = U[:, :K] * S[:K]  # [genes, K]
    # z_c [K]: each context's control mean in the basis G (centred over contexts)
    ctrl_stack = np.stack([m for m in control_mean.values() if m is not None])
    ctrl_centre = ctrl_stack.mean(0)
    basis = U[:, :K].T  # [K, genes], orthonormal: noise directions keep their small size
    z_all = (ctrl_stack - ctrl_centre) @ basis.T  # [contexts, K]
    # unit mean squared norm, comparable to the bias 1
    z_scale = float(np.sqrt((z_all**2).sum(1).mean())) or 1.0

    def embed(ctx: tuple, single: str) -> np.ndarray:
        onehot = np.zeros(len(singles))
        if single in singles:
            onehot[singles.index(single)] = 1.0
        m = control_mean.get(ctx)
        if m is None:
            m = mean_of(dict(zip(ckeys, ctx, strict=True)) | {perturbation_key: ctrl})
        z = basis @ (m - ctrl_centre) / z_scale  # [K]
        return np.outer(onehot, np.concatenate([[1.0], z])).ravel()  # [|singles| * (K + 1)]

    P = np.stack(
        [sum(embed(ctx_of[j], s) for s in j[keys.index(perturbation_key)].split(combo_sep)) for j in cols],
        axis=1,
    )  # [E, J]
    W = _ridge_bilinear(Y - b[:, None], G, P, ridge)  # [K, E]

    loadings = adata.varm["PCs"] if "PCs" in adata.varm else None
    reps = [
        k
        for k in obsm_keys
        if k in adata.obsm and loadings is not None and adata.obsm[k].shape[1] == loadings.shape[1]
    ]
    parts = []
    for i, cond in enumerate(targets):
        ctx = tuple(cond[k] for k in ckeys)
        m_ctrl = obs_mask(obs, dict(zip(ckeys, ctx, strict=True)) | {perturbation_key: ctrl})
        if not m_ctrl.any():
            msg = f"no control cells for the context of {cond}"
            raise ValueError(msg)
        pert = cond[perturbation_key]
        change = np.zeros(adata.n_vars)
        if pert != ctrl:
            for s in pert.split(combo_sep):  # a combination: the sum of its predicted singles
                change += G @ W @ embed(ctx, s) + b
        idx = np.flatnonzero(m_ctrl)
        x = dense(adata.X[idx]) + change[None, :]
        obsm = {k: dense(adata.obsm[k][idx]) + (change @ loadings)[None, :] for k in reps}
        names = [f"linear-{i}-{j}" for j in range(len(idx))]
        frame = pd.DataFrame({k: [cond[k]] * len(idx) for k in keys}, index=names)
        frame["baseline"] = "linear"
        frame["source_cell"] = adata.obs_names[idx].to_numpy()
        parts.append(ad.AnnData(x.astype(np.float32), obs=frame, var=adata.var[[]].copy(), obsm=obsm))
    out = ad.concat(parts, axis=0, merge="same")
    out.var_names = adata.var_names.copy()
    for k in keys:
        out.obs[k] = out.obs[k].astype("category")
    out.uns[UNS_KEY] = _record("linear", keys, perturbation_key, control_value, reps or ("X_pca",))
    return out
