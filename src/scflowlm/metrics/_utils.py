"""Private array helpers of the metrics (blockwise squared distances, two sets of cells)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._utils import dense

#: rows per block in the blockwise pairwise computations (bounds memory to ``_BLOCK * m`` floats).
_BLOCK = 2048


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (n, m), clipped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # (n, m)
    return np.maximum(d, 0.0)


def _two_sets(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of cells as dense arrays, each of at least 2 cells with the same features."""
    xa, ya = dense(x), dense(y)
    if len(xa) < 2 or len(ya) < 2:
        msg = f"need at least 2 cells in each set, got {len(xa)} and {len(ya)}"
        raise ValueError(msg)
    if xa.shape[1] != ya.shape[1]:
        msg = f"the two sets have different numbers of features: {xa.shape[1]} and {ya.shape[1]}"
        raise ValueError(msg)
    return xa, ya
