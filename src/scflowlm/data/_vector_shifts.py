"""Shifts of singles never measured, from gene vectors: ridge (penalty chosen leave-one-out) or nearest neighbours.

Both rules are linear in the measured singles' shifts: they return weights ``W [k, m]`` such that the estimate of
``k`` new singles is ``W @ shifts`` for the shifts ``[m, D]`` of ``m`` measured ones, in any representation (genes,
PCA states). So :func:`scflowlm.data.estimate_shifts` turns them into terms over rows of a condition table, and the
models' head start, the ``tl`` baselines and the benchmarks estimate a single from its vector the same way.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np

__all__ = ["ALPHAS", "VECTOR_RULES", "choose_alpha", "vector_shifts", "vector_weights"]

#: the rules of :func:`vector_weights`
VECTOR_RULES = ("ridge", "knn")
#: the penalties ``alpha='loo'`` chooses among (relative to the vectors' mean squared norm); ``inf``: the mean shift
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, np.inf)


def _check_alpha(alpha) -> None:
    if alpha == "loo":
        return
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or np.isnan(alpha) or alpha <= 0:
        raise ValueError(
            f"alpha must be a number > 0 (the ridge penalty relative to the vectors' mean squared norm) or 'loo', "
            f"got {alpha!r}."
        )


def _centred_kernel(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(K_c [m, m], centre [E], scale)``: inner products of the centred vectors and their mean diagonal."""
    centre = vectors.mean(0)
    X = vectors - centre  # [m, E]
    K = X @ X.T  # [m, m]
    return K, centre, max(float(np.mean(np.diag(K))), 1e-12)


def choose_alpha(vectors: np.ndarray, shifts: np.ndarray, alphas=ALPHAS) -> tuple[float, np.ndarray]:
    """The ridge penalty with the smallest leave-one-perturbation-out error, and every candidate's error.

    For each ``alpha`` the ridge of :func:`vector_weights` predicts each measured single from the others; with an
    unpenalised intercept the left-out residual is exactly ``e_i / (1 - H_ii)`` for the hat matrix
    ``H = 11'/m + K_c (K_c + lambda I)^-1``, so one eigendecomposition of ``K_c`` serves every candidate. The
    candidate ``inf`` is the mean of the others: where the vectors predict nothing, it wins, and the estimate is
    the mean training shift rather than noise. Of the candidates whose mean error is within one standard error of
    the smallest, the one that shrinks most is chosen (the one-standard-error rule): a penalty the data must
    clearly earn. Errors are squared norms over the ``D`` coordinates, averaged over the singles.

    Parameters
    ----------
    vectors
        ``[m, E]`` vectors of the measured singles (``m >= 3``).
    shifts
        ``[m, D]`` their shifts.
    alphas
        Candidates (``inf`` allowed).

    Returns
    -------
    ``(alpha, errors [len(alphas)])``: the chosen penalty and each candidate's mean left-out error.
    """
    vectors, shifts = np.atleast_2d(vectors), np.asarray(shifts, dtype=np.float64).reshape(len(vectors), -1)
    m = len(vectors)
    if m < 3:
        return float(np.inf), np.full(len(alphas), np.nan)
    K, _, scale = _centred_kernel(vectors)
    values, basis = np.linalg.eigh(K)  # K = V diag(values) V'
    values = np.clip(values, 0.0, None)
    residual_mean = shifts - shifts.mean(0)  # [m, D]
    projected = basis.T @ residual_mean  # [m, D]
    per_single = []  # [A, m] squared left-out error of each single
    for alpha in alphas:
        if np.isinf(alpha):
            hat_diag = np.full(m, 1.0 / m)
            fitted = np.zeros_like(residual_mean)
        else:
            shrink = values / (values + alpha * scale)  # [m]
            hat_diag = 1.0 / m + (basis**2) @ shrink
            fitted = basis @ (shrink[:, None] * projected)
        loo = (residual_mean - fitted) / np.maximum(1.0 - hat_diag, 1e-12)[:, None]
        per_single.append((loo**2).sum(1))
    per_single = np.asarray(per_single)
    errors = per_single.mean(1)  # [A]
    best = int(np.argmin(errors))
    # the one-standard-error rule: the most shrinkage whose error is within one standard error of the best
    limit = errors[best] + per_single[best].std(ddof=1) / np.sqrt(m)
    order = np.argsort(alphas)  # from the least to the most shrinkage
    chosen = order[max(i for i in range(len(order)) if errors[order[i]] <= limit)]
    return float(alphas[chosen]), errors


def vector_weights(
    vectors: np.ndarray,
    new_vectors: np.ndarray,
    *,
    rule: Literal["ridge", "knn"] = "ridge",
    alpha: float | Literal["loo"] = "loo",
    shifts: np.ndarray | None = None,
    n_neighbors: int = 5,
) -> np.ndarray:
    """Weights ``[k, m]`` of the ``m`` measured singles' shifts that estimate ``k`` new singles from their vectors.

    ``"ridge"``: a linear ridge regression of the shifts on the vectors with an intercept (the GenePert recipe),
    in its dual form (few singles, long vectors): ``estimate = mean + K_new (K_c + lambda I)^-1 (shifts - mean)``
    with ``K_c`` the inner products of the centred vectors and ``lambda = alpha * mean(diag K_c)`` (so ``alpha``
    does not depend on the vectors' scale). ``alpha="loo"`` chooses it by leave-one-perturbation-out on
    ``shifts`` (:func:`choose_alpha`): the mean shift where the vectors predict nothing.
    ``"knn"``: the mean shift of the ``n_neighbors`` measured singles whose vectors are most similar (cosine).

    Identical vectors, or ``alpha=inf``, give every new single the mean shift. Without measured singles: zeros.
    """
    if rule not in VECTOR_RULES:
        raise ValueError(f"rule must be one of {VECTOR_RULES}, got {rule!r}.")
    _check_alpha(alpha)
    vectors, new_vectors = (
        np.atleast_2d(vectors).astype(np.float64),
        np.atleast_2d(new_vectors).astype(np.float64),
    )
    m, k = len(vectors), len(new_vectors)
    if m and vectors.shape[1] != new_vectors.shape[1]:
        raise ValueError(
            f"new_vectors have {new_vectors.shape[1]} columns and vectors {vectors.shape[1]}: both must be vectors of "
            "the same kind (the same width)."
        )
    if m == 0:
        return np.zeros((k, 0))
    if rule == "knn":
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
            raise ValueError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}.")
        a = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        b = new_vectors / np.maximum(np.linalg.norm(new_vectors, axis=1, keepdims=True), 1e-12)
        similarity = b @ a.T  # [k, m]
        n = min(int(n_neighbors), m)
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :n]  # [k, n]
        weights = np.zeros((k, m))
        np.put_along_axis(weights, nearest, 1.0 / n, axis=1)
        return weights
    if alpha == "loo":
        if shifts is None:
            raise ValueError(
                "alpha='loo' needs the measured singles' shifts to choose the penalty: pass shifts=."
            )
        alpha, _ = choose_alpha(vectors, shifts)
    mean = np.full((k, m), 1.0 / m)
    if np.isinf(alpha):
        return mean
    K, centre, scale = _centred_kernel(vectors)
    X, Xn = vectors - centre, new_vectors - centre  # [m, E], [k, E]
    C = np.eye(m) - 1.0 / m  # [m, m] centring
    return mean + (Xn @ X.T) @ np.linalg.solve(K + alpha * scale * np.eye(m), C)


def vector_shifts(
    vectors: np.ndarray,
    shifts: np.ndarray,
    new_vectors: np.ndarray,
    *,
    alpha: float | Literal["loo"] = 1.0,
    rule: Literal["ridge", "knn"] = "ridge",
    n_neighbors: int = 5,
) -> np.ndarray:
    """Shifts ``[k, D]`` of singles never measured, from their gene vectors ``[k, E]``: :func:`vector_weights` ``@ shifts``.

    ``vectors [m, E]`` and ``shifts [m, D]``: the measured singles. With no measured single, zeros.
    """
    _check_alpha(alpha)
    vectors, new_vectors = np.atleast_2d(vectors), np.atleast_2d(new_vectors)
    shifts = np.asarray(shifts, dtype=np.float64)
    if len(vectors) != len(shifts):
        raise ValueError(
            f"vectors ({len(vectors)} rows) and shifts ({len(shifts)} rows) must have one row per single."
        )
    weights = vector_weights(
        vectors,
        new_vectors,
        rule=rule,
        alpha=alpha,
        shifts=shifts if len(shifts) else None,
        n_neighbors=n_neighbors,
    )
    if len(vectors) == 0:
        return np.zeros((len(new_vectors), shifts.shape[1] if shifts.ndim == 2 else 0))
    return weights @ shifts.reshape(len(shifts), -1)
