"""Private array helpers of the metrics (dense arrays, subsampling, blockwise squared distances)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

#: rows per block in the blockwise pairwise computations (bounds memory to ``_BLOCK * m`` floats).
_BLOCK = 2048


def _dense(a: Any) -> np.ndarray:
    """Dense float64 2-D array of ``a`` (sparse matrices are densified)."""
    if sp.issparse(a):
        a = a.toarray()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    return a


def _mean(a: Any) -> np.ndarray:
    """Column means of a dense or sparse cells x features matrix, shape (features,)."""
    return np.asarray(a.mean(axis=0), dtype=np.float64).ravel()


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _subsample_idx(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_n`` of ``n`` items drawn without replacement."""
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_n, replace=False))


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (n, m), clipped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # (n, m)
    return np.maximum(d, 0.0)


def _two_sets(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of cells as dense arrays, each of at least 2 cells with the same features."""
    xa, ya = _dense(x), _dense(y)
    if len(xa) < 2 or len(ya) < 2:
        msg = f"need at least 2 cells in each set, got {len(xa)} and {len(ya)}"
        raise ValueError(msg)
    if xa.shape[1] != ya.shape[1]:
        msg = f"the two sets have different numbers of features: {xa.shape[1]} and {ya.shape[1]}"
        raise ValueError(msg)
    return xa, ya
