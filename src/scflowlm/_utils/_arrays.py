"""Array helpers: dense copies of any matrix, chunked column means, subsampling, correlation, principal axes."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats
from sklearn.utils.extmath import randomized_svd

__all__ = [
    "column_mean",
    "group_means",
    "dense",
    "dense_rows",
    "pearson",
    "random_state",
    "subsample_idx",
    "top_pcs",
]

#: rows read at once from a (possibly backed) matrix
CHUNK = 4096


def dense(a: Any) -> np.ndarray:
    """Dense float64 2-D array of ``a`` (sparse matrices are densified; a 1-D array becomes one column)."""
    if sp.issparse(a):
        a = a.toarray()
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def dense_rows(X: Any, rows: np.ndarray | slice) -> np.ndarray:
    """Rows of a dense, sparse or backed matrix as a dense float64 array ``[n, G]``."""
    return dense(X[rows])


def column_mean(X: Any, *, chunk: int = CHUNK) -> np.ndarray:
    """Column means ``[G]`` of a dense, sparse or backed cells x features matrix, read ``chunk`` rows at a time.

    Sparse blocks are summed as they are (never densified).
    """
    n = X.shape[0]
    total = np.zeros(X.shape[1])
    for start in range(0, n, chunk):
        block = X[start : min(start + chunk, n)]
        total += np.asarray(block.sum(0), dtype=np.float64).ravel()
    return total / max(n, 1)


def group_means(X: Any, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean row ``[K, G]`` of each group of rows of a dense or sparse ``X``.

    ``groups [n]``: the group of each row, in ``0..K-1`` (``-1``: none). NaN for a group without rows.
    """
    groups = np.asarray(groups)
    keep = np.flatnonzero(groups >= 0)
    counts = np.bincount(groups[keep], minlength=n_groups).astype(np.float64)  # [K]
    indicator = sp.csr_matrix(
        (np.ones(len(keep)), (groups[keep], keep)), shape=(n_groups, X.shape[0])
    )  # [K, n]
    sums = indicator @ X  # [K, G]
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy generator from a seed (or the generator itself)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def subsample_idx(n: int, max_n: int | None, generator: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_n`` of ``n`` items drawn without replacement."""
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(generator.choice(n, size=max_n, replace=False))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors (NaN when either is constant or shorter than 2)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b)[0])


def top_pcs(zc: np.ndarray, n_pcs: int) -> np.ndarray:
    """Loadings ``[d, k]`` of the first ``k <= n_pcs`` principal axes of the centred matrix ``zc`` ``[n, d]``."""
    k = int(min(n_pcs, zc.shape[0] - 1, zc.shape[1]))
    if min(zc.shape) <= 2000:
        _, _, vt = np.linalg.svd(zc, full_matrices=False)
    else:
        _, _, vt = randomized_svd(zc, k, n_iter=7, random_state=0)
    return vt[:k].T
