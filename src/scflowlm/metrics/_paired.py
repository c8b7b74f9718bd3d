"""Paired per-cell check: how much of each source cell's own position survives in its prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .._utils import dense, random_state


@dataclass
class PairedIdentity:
    """Result of :func:`paired_identity`.

    Attributes
    ----------
    per_dim
        One row per direction: ``dim``, ``shift`` (mean shift of the prediction from the source in units of
        the source standard deviation), ``corr`` (Pearson r across cells between source and prediction along
        the direction), ``corr_shuffled`` (the same with the pairing permuted: a null near 0) and ``unmoved``
        (whether the direction counts in the summary).
    summary
        ``mean_corr`` and ``median_corr`` over the unmoved directions, ``mean_corr_shuffled``, ``n_dims``.
    """

    per_dim: pd.DataFrame
    summary: dict[str, float]


def _colcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of matching columns of a and b (n, d) -> (d,); NaN where a column is constant."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def paired_identity(
    source: np.ndarray,
    pred: np.ndarray,
    *,
    mode: Literal["dims", "orthogonal"] = "dims",
    fraction: float = 0.5,
    seed: int = 0,
) -> PairedIdentity:
    """Correlation across cells between source cells and their paired predictions, off the perturbation axis.

    A perturbation model that maps each control cell to a perturbed cell should keep what the perturbation
    does not change (the cell's own position along unaffected directions). For one predicted cell per source
    cell, this measures, along directions the perturbation does not move, the Pearson correlation across cells
    between the source coordinate and the predicted coordinate. A model that ignores its source (e.g. sampling
    from noise) scores about 0; the identity map scores 1.

    Parameters
    ----------
    source
        Source cells, cells x d.
    pred
        Predicted cells, cells x d; row ``i`` is the prediction of source row ``i``.
    mode
        ``"dims"``: the coordinate axes; the ``fraction`` of them with the smallest standardised mean shift
        ``|mean(pred_j) - mean(source_j)| / std(source_j)`` count as unmoved.
        ``"orthogonal"``: the orthogonal complement of the mean shift vector, in the basis of the principal
        axes of the source cells projected on it (d - 1 directions, all unmoved).
    fraction
        Part of the axes counted as unmoved in ``"dims"`` mode.
    seed
        Seed of the shuffled pairing (null reference).

    Returns
    -------
    :class:`PairedIdentity` with the per-direction table and a summary.
    """
    src, prd = dense(source), dense(pred)  # (n, d)
    if src.shape != prd.shape:
        msg = f"source and prediction shapes differ: {src.shape} != {prd.shape}"
        raise ValueError(msg)
    n, d = src.shape
    shuffled = prd[random_state(seed).permutation(n)]  # (n, d) broken pairing
    shift = prd.mean(0) - src.mean(0)  # (d,)
    if mode == "dims":
        sd = src.std(0)
        z = np.abs(shift) / np.where(sd > 0, sd, np.inf)  # (d,)
        n_keep = max(1, int(np.ceil(fraction * d)))
        unmoved = np.zeros(d, dtype=bool)
        unmoved[np.argsort(z, kind="stable")[:n_keep]] = True
        a, b, c = src, prd, shuffled
    elif mode == "orthogonal":
        norm = np.linalg.norm(shift)
        u = shift / norm if norm > 0 else np.zeros(d)  # (d,)
        proj = np.eye(d) - np.outer(u, u)  # (d, d) projector on the complement
        sp_ = (src - src.mean(0)) @ proj  # (n, d)
        _, _, vt = np.linalg.svd(sp_, full_matrices=False)
        basis = vt[: d - 1 if norm > 0 else d].T  # (d, k) principal axes within the complement
        a, b, c = src @ basis, prd @ basis, shuffled @ basis  # (n, k)
        z = np.abs(prd.mean(0) @ basis - src.mean(0) @ basis) / np.maximum(a.std(0), 1e-12)  # ~0
        unmoved = np.ones(a.shape[1], dtype=bool)
    else:
        msg = f"mode must be 'dims' or 'orthogonal', not {mode!r}"
        raise ValueError(msg)
    corr, corr0 = _colcorr(a, b), _colcorr(a, c)  # (k,)
    per_dim = pd.DataFrame(
        {"dim": np.arange(len(corr)), "shift": z, "corr": corr, "corr_shuffled": corr0, "unmoved": unmoved}
    )
    summary = {
        "mean_corr": float(np.nanmean(corr[unmoved])),
        "median_corr": float(np.nanmedian(corr[unmoved])),
        "mean_corr_shuffled": float(np.nanmean(corr0[unmoved])),
        "n_dims": int(unmoved.sum()),
    }
    return PairedIdentity(per_dim=per_dim, summary=summary)
