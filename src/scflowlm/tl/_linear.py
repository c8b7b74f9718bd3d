"""The linear PCA-ridge baseline of Ahlmann-Eltze, Huber & Anders (Nature Methods 2025)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._docs import doc_params
from .._utils import PredictionRecord, dense, group_means, obs_mask, predicted_anndata
from ._utils import _catalog

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
    perturbation_embeddings: pd.DataFrame | str | None = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str | None = None,
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
    - ``P`` [E, J]: condition embedding ``e(p) x [1, z_c]`` (outer product, flattened), where ``e(p)`` is the
      one-hot of the perturbation among the training singles, or its gene vector with ``perturbation_embeddings``
      (the paper's embedding of perturbations by external gene knowledge), and ``z_c`` holds
      the projection of context ``c``'s control mean (centred over contexts) on the gene PCs, scaled to a
      mean squared norm of 1 over the contexts: the effect of a perturbation is linear in the context's control
      profile. With one context this is a plain one-hot.
    - ``W`` [K, E] by ridge regression on both sides (penalty ``ridge``), in closed form as in the paper.

    A condition to predict gets ``G W P + b``; a combination ``"A+B"`` the sum of the predicted singles (the
    paper's additive rule for double perturbations). With gene vectors this is close to, but not, the GenePert
    recipe: the change is read through the ``K`` gene PCs (a low-rank map) and every single, measured or not, gets
    the fitted value rather than its own shift; :func:`baseline_ridge` is GenePert's plain ridge from a vector to
    the change of every gene, with its penalty chosen leave-one-out. A single never seen in training gets only the mean change
    ``b``, unless ``perturbation_embeddings`` gives it a vector: then ``G W P + b`` reaches perturbations never
    measured. The predicted change is added to the context's own control cells, as the other ``baseline_*``
    functions do.

    Parameters
    ----------
    %(baseline_keys)s
    n_components
        ``K``: dimensions of the gene embedding (the paper: 10).
    ridge
        Ridge penalty on both sides (the paper: 0.1).
    perturbation_embeddings
        Gene vectors of the single perturbations (perturbation name -> vector, one row each; e.g.
        :func:`scflowlm.data.gene_text_embeddings`), or the ``adata.uns`` key of such a table (as
        ``setup_anndata`` takes), used instead of the one-hot; a single without a vector contributes only ``b``.
        Checked as ``setup_anndata`` checks them (:func:`scflowlm.data.check_gene_vectors`).
    obsm_keys
        obsm entries shifted along with ``X``: the change of ``X`` mapped through ``adata.varm["PCs"]``, which
        holds for a PCA of ``X`` (entries without matching loadings are left out).
    combo_sep
        %(combo_sep)s

    Returns
    -------
    An AnnData shaped like a prediction: the control cells of each condition's context (copies), relabelled
    with the condition, ``X`` shifted by the predicted change; the same ``var_names``; obs columns
    ``condition_keys``, ``baseline`` (``"linear"``) and ``source_cell``; ``obsm`` entries shifted likewise;
    ``uns["scflowlm"]`` the keys, as a model's prediction records them.
    """
    catalog, rows, targets = _catalog(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combo_sep=combo_sep,
        vectors=perturbation_embeddings,
    )
    table = catalog.table
    keys, perturbation_key, control_value = table.fields, table.perturbation_key, table.control_value
    held = {table.row_of(c) for c in targets}  # the conditions to predict are never read
    all_means = group_means(adata.X, rows, len(table))  # [C, genes]
    seen = [i for i in range(len(table)) if i not in held and (rows == i).any()]
    control_row = {table.context(table.condition(i)): i for i in seen if table.control_mask()[i]}
    train = [
        i for i in seen if not table.control_mask()[i] and table.context(table.condition(i)) in control_row
    ]
    if not train:
        msg = "baseline_linear needs training conditions with control cells in their context"
        raise ValueError(msg)
    singles = sorted({s for i in train for s in table.perturbations(table.condition(i))})
    means = {i: all_means[i] for i in seen}
    control_mean = {ctx: all_means[i] for ctx, i in control_row.items()}
    ctx_of = {i: table.context(table.condition(i)) for i in train}

    # Y [genes, J]: changes of the training conditions; b [genes]: their mean
    Y = np.stack([means[j] - control_mean[ctx_of[j]] for j in train], axis=1)
    b = Y.mean(1)
    # G [genes, K]: principal component scores of the genes over the training pseudobulks
    pseudo = np.stack(list(means.values()), axis=1)  # [genes, all training conditions]
    pseudo = pseudo - pseudo.mean(0, keepdims=True)
    U, S, _ = np.linalg.svd(pseudo, full_matrices=False)
    K = max(1, min(n_components, len(S)))
    G = U[:, :K] * S[:K]  # [genes, K]
    # z_c [K]: each context's control mean in the basis G (centred over contexts)
    ctrl_stack = np.stack(list(control_mean.values()))
    ctrl_centre = ctrl_stack.mean(0)
    basis = U[:, :K].T  # [K, genes], orthonormal: noise directions keep their small size
    z_all = (ctrl_stack - ctrl_centre) @ basis.T  # [contexts, K]
    # unit mean squared norm, comparable to the bias 1
    z_scale = float(np.sqrt((z_all**2).sum(1).mean())) or 1.0

    vectors = None if catalog.vectors is None else catalog.vectors.astype(np.float64)

    def identity(single: str) -> np.ndarray:
        """The perturbation's part of the embedding: its one-hot, or its gene vector (zeros without one)."""
        if vectors is not None:
            return vectors.loc[single].to_numpy() if single in vectors.index else np.zeros(vectors.shape[1])
        onehot = np.zeros(len(singles))
        if single in singles:
            onehot[singles.index(single)] = 1.0
        return onehot

    def embed(ctx: tuple, single: str) -> np.ndarray:
        m = control_mean[ctx]
        z = basis @ (m - ctrl_centre) / z_scale  # [K]
        return np.outer(identity(single), np.concatenate([[1.0], z])).ravel()  # [V * (K + 1)]

    P = np.stack(
        [sum(embed(ctx_of[j], s) for s in table.perturbations(table.condition(j))) for j in train], axis=1
    )  # [E, J]
    W = _ridge_bilinear(Y - b[:, None], G, P, ridge)  # [K, E]

    loadings = adata.varm["PCs"] if "PCs" in adata.varm else None
    reps = [
        k
        for k in obsm_keys
        if k in adata.obsm and loadings is not None and adata.obsm[k].shape[1] == loadings.shape[1]
    ]
    X, obsm, obs = [], {k: [] for k in reps}, []
    for cond in targets:
        ctx = table.context(cond)
        idx = np.flatnonzero(
            obs_mask(
                adata.obs, {k: cond[k] for k in table.context_fields} | {perturbation_key: control_value}
            )
        )
        if not len(idx) or ctx not in control_mean:
            msg = f"no control cells for the context of {cond}"
            raise ValueError(msg)
        change = np.zeros(adata.n_vars)
        for s in table.perturbations(cond):  # a combination: the sum of its predicted singles
            change += G @ W @ embed(ctx, s) + b
        X.append(dense(adata.X[idx]) + change[None, :])
        for k in reps:
            obsm[k].append(dense(adata.obsm[k][idx]) + (change @ loadings)[None, :])
        part = pd.DataFrame({k: [cond[k]] * len(idx) for k in keys})
        part["baseline"], part["source_cell"] = "linear", adata.obs_names[idx]
        obs.append(part)
    obs = pd.concat(obs, ignore_index=True)
    obs.index = [f"linear-{i}" for i in range(len(obs))]
    record = PredictionRecord(
        keys,
        perturbation_key,
        control_value,
        table.combination_sep,
        next(iter(reps), "X_pca"),
        "baseline_linear",
    )
    obsm = {k: np.concatenate(v) for k, v in obsm.items()}
    return predicted_anndata(np.concatenate(X), obs, adata.var[[]].copy(), record=record, obsm=obsm)
