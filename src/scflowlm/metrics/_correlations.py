"""Correlations of mean expression: R^2, Pearson, Spearman, and of the change from control."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from scipy import stats

from .._utils import column_mean, pearson

if TYPE_CHECKING:
    from collections.abc import Sequence


def _profile(a: Any) -> np.ndarray:
    """Mean expression profile (features,) of cells (a dense or sparse 2-D array); 1-D arrays pass through."""
    if sp.issparse(a):
        return column_mean(a)
    a = np.asarray(a, dtype=np.float64)
    return a if a.ndim == 1 else a.mean(0)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def mean_correlations(
    x: np.ndarray,
    y: np.ndarray,
    *,
    control: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    genes: Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """Agreement between the mean expression of real and generated cells.

    With ``mu_real``, ``mu_pred`` (and ``mu_ctrl``) the mean profiles, over the selected genes:

    - ``pearson``: Pearson r of ``mu_pred`` vs ``mu_real``; ``r2`` = its square (the paper's R^2, which
      its tables report as Pearson^2);
    - ``r2_score``: coefficient of determination ``1 - sum (mu_real - mu_pred)^2 / sum (mu_real - mean)^2``
      (sklearn ``r2_score``, as CellFlow / CPA); can be negative;
    - ``spearman``: Spearman rho of ``mu_pred`` vs ``mu_real``;
    - ``mae``: mean absolute error ``mean |mu_pred - mu_real|`` (cell-eval's ``mae``);
    - ``mse``: mean squared error ``mean (mu_pred - mu_real)^2`` (the L2 of :cite:t:`ahlmann2025deep`, squared
      and divided by the number of genes; cell-eval's ``mse``): unlike a correlation it sees the size of the
      change, so a prediction that moves the right genes too far (or not far enough) pays for it;
    - ``pearson_delta`` (with ``control``): Pearson r of ``mu_pred - mu_ctrl`` vs ``mu_real - mu_ctrl``
      (cell-eval's ``pearson_delta``): it tests the predicted change, which the R^2 of means hides when the
      control already looks like the target;
    - ``pearson_interaction`` (with ``reference``): Pearson r of ``mu_pred - mu_ref`` vs ``mu_real - mu_ref``,
      where ``mu_ref`` is a reference prediction, the additive expectation of a combination (its control mean
      plus the sum of its singles' shifts): the *interaction* score of :cite:t:`ahlmann2025deep`. It tests what a
      prediction says beyond the reference; a prediction equal to the reference has no defined score (NaN).

    Parameters
    ----------
    x
        Real cells (cells x genes, dense or sparse) or their mean profile (1-D array).
    y
        Generated cells or their mean profile, same genes.
    control
        Control cells (or their mean) of the same context, for ``pearson_delta``.
    reference
        A reference prediction's cells or mean profile (e.g. :func:`scflowlm.tl.baseline_additive`'s), for
        ``pearson_interaction``.
    genes
        Integer indices of the genes to use (for example the top DE genes); all genes if None.

    Returns
    -------
    dict with keys ``r2``, ``r2_score``, ``pearson``, ``spearman``, ``mae``, ``mse`` and, with ``control``, ``pearson_delta``,
    with ``reference``, ``pearson_interaction``.
    """
    mr, mp = _profile(x), _profile(y)  # (genes,)
    if mr.shape != mp.shape:
        msg = f"real and generated profiles differ in length: {mr.shape} != {mp.shape}"
        raise ValueError(msg)
    idx = np.arange(len(mr)) if genes is None else np.asarray(genes, dtype=int)
    a, b = mr[idx], mp[idx]
    r = pearson(a, b)
    ss = float(np.sum((a - a.mean()) ** 2))
    out = {
        "r2": r**2,
        "r2_score": 1.0 - float(np.sum((a - b) ** 2)) / ss if ss > 0 else float("nan"),
        "pearson": r,
        "spearman": _spearman(a, b),
        "mae": float(np.mean(np.abs(a - b))),
        "mse": float(np.mean((a - b) ** 2)),
    }
    if control is not None:
        mc = _profile(control)[idx]
        out["pearson_delta"] = pearson(a - mc, b - mc)
    if reference is not None:
        ref = _profile(reference)[idx]
        # a prediction that is the reference (up to float32 rounding) says nothing beyond it: no score
        same = np.abs(b - ref).max() <= 1e-5 * max(float(np.abs(ref).max()), 1e-12)
        out["pearson_interaction"] = float("nan") if same else pearson(a - ref, b - ref)
    return out
