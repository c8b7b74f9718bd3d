"""Does a prediction have the right spread: R^2 of the per-gene variance (scGen's "variance R^2")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import dense, pearson

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["variance_r2"]


def variance_r2(x: Any, y: Any, *, genes: Sequence[int] | np.ndarray | None = None) -> float:
    """Pearson R^2 of the per-gene variance of real cells ``x`` against generated cells ``y``.

    ``r2_var = pearson(var(x_g), var(y_g))^2`` over the genes ``g`` (sample variances, ddof 1), the "variance R^2"
    of scGen :cite:p:`lotfollahi2019scgen` and PrePR-CT: the mean R^2 tests where the cells are, this tests whether
    the genes that vary most among the real cells vary most among the generated ones.

    It is blind to a common scale (a prediction twice as spread on every gene scores 1): read it beside a
    distribution distance (E-distance). A prediction whose genes all have the same variance (collapsed to one
    point: all zeros) has no per-gene structure and scores 0 rather than NaN, and so does one whose variances are
    anti-correlated with the real ones (a plain squared r would score that high).

    Parameters
    ----------
    x, y
        Real and generated cells (cells x genes, dense or sparse), at least 2 of each.
    genes
        Integer indices of the genes to use (the top DE genes); all genes if None.
    """
    a, b = dense(x), dense(y)  # [n, G], [m, G]
    if len(a) < 2 or len(b) < 2:
        msg = f"need at least 2 real and 2 generated cells, got {len(a)} and {len(b)}"
        raise ValueError(msg)
    idx = np.arange(a.shape[1]) if genes is None else np.asarray(genes, dtype=int)
    va, vb = a[:, idx].var(0, ddof=1), b[:, idx].var(0, ddof=1)  # [g]
    if np.ptp(vb) <= 1e-12 * max(float(np.abs(vb).max()), 1e-12):
        return 0.0 if np.ptp(va) > 0 else float("nan")
    r = pearson(va, vb)
    return max(r, 0.0) ** 2 if np.isfinite(r) else r
