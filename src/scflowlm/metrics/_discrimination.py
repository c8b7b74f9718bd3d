"""Can the predictions be told apart: the rank of each prediction's own condition among all real ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["de_overlap", "discrimination"]


def discrimination(
    pred_changes: np.ndarray,
    real_changes: np.ndarray,
    own: Sequence[int] | np.ndarray,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    metric: Literal["l1", "l2"] = "l1",
) -> np.ndarray:
    """Normalised rank of each prediction's own real condition among all real conditions (0 is perfect).

    For prediction ``p`` with predicted change ``d_p`` (its mean minus its context's control mean) and the real
    changes ``r_1 .. r_R`` of ``R`` real conditions, ``own[p]`` being its own: ``rank_p = (#{j != own :
    dist(d_p, r_j) < dist(d_p, r_own)} + #{ties} / 2) / (R - 1)``, with ``dist`` the L1 (or L2) distance over
    the genes not in ``exclude[p]`` (the perturbed genes). 0: the prediction is nearer its own condition than any
    other; 0.5: no better than chance; 1: farther than all. The idea of cell-eval's discrimination score (PDS) of
    the Virtual Cell Challenge, which reports ``1 - rank / R``. Predictions that are all alike (mode collapse) score
    about 0.5 whatever their correlation with each condition.

    Parameters
    ----------
    pred_changes
        ``[P, G]`` predicted changes.
    real_changes
        ``[R, G]`` real changes, ``R >= 2``.
    own
        ``[P]`` row of ``real_changes`` that is each prediction's own condition.
    exclude
        Per prediction, gene indices left out of its distances (its perturbed genes); None: none.
    metric
        ``"l1"`` (cell-eval's default) or ``"l2"``.

    Returns
    -------
    ``[P]`` normalised ranks in ``[0, 1]`` (NaN with fewer than 2 real conditions).
    """
    pred, real = np.atleast_2d(pred_changes), np.atleast_2d(real_changes)
    own = np.asarray(own, dtype=int)
    if pred.shape[1] != real.shape[1] or len(own) != len(pred):
        msg = f"pred_changes {pred.shape}, real_changes {real.shape} and own ({len(own)}) do not fit together"
        raise ValueError(msg)
    if metric not in ("l1", "l2"):
        msg = f"metric must be 'l1' or 'l2', got {metric!r}"
        raise ValueError(msg)
    out = np.full(len(pred), np.nan)
    if len(real) < 2:
        return out
    for p in range(len(pred)):
        keep = np.ones(pred.shape[1], dtype=bool)
        if exclude is not None and len(exclude[p]):
            keep[np.asarray(exclude[p], dtype=int)] = False
        diff = real[:, keep] - pred[p, keep]  # [R, g]
        dist = np.abs(diff).sum(1) if metric == "l1" else np.sqrt((diff**2).sum(1))  # [R]
        others = np.delete(dist, own[p])
        target = dist[own[p]]
        out[p] = (np.sum(others < target) + 0.5 * np.sum(others == target)) / len(others)
    return out


def de_overlap(real_de: Sequence[int] | np.ndarray, pred_de: Sequence[int] | np.ndarray) -> float:
    """Share of the real DE genes among the prediction's top DE genes, truncated to the real count.

    ``overlap = |real ∩ pred[:k]| / k`` with ``k = len(real_de)`` and ``pred_de`` ordered from the most to the least
    significant: cell-eval's ``overlap_at_N`` (the Virtual Cell Challenge's DE score). NaN when the real condition
    has no DE gene. Report the two counts beside it: a prediction that calls far too many genes DE can still
    overlap well.
    """
    real = np.asarray(real_de, dtype=int)
    if len(real) == 0:
        return float("nan")
    top = np.asarray(pred_de, dtype=int)[: len(real)]
    return float(len(np.intersect1d(real, top)) / len(real))
