"""How far a condition's mean moves compared with the noise of its own cells (half splits)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import dense, random_state

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["signal_to_noise"]


def signal_to_noise(
    x: Any,
    control: Any,
    *,
    genes: Sequence[int] | np.ndarray | None = None,
    n_splits: int = 20,
    seed: int = 0,
) -> tuple[float, float]:
    """The norm of a condition's change and the norm of its half-split noise: ``(||Δ||, noise)``.

    ``Δ = mean(x) - mean(control)``; ``noise`` is the median over ``n_splits`` random halves of the condition's
    cells of ``||mean(half_1) - mean(half_2)||``: how far the mean moves when nothing but the sampling of cells
    changes. A condition whose ``||Δ||`` is not well above its noise (say twice) has no measurable effect at this
    number of cells, and a score on it measures noise. Norms are Euclidean over ``genes`` (all if None).
    """
    a, c = dense(x), dense(control)
    idx = np.arange(a.shape[1]) if genes is None else np.asarray(genes, dtype=int)
    a, c = a[:, idx], c[:, idx]
    change = float(np.linalg.norm(a.mean(0) - c.mean(0)))
    if len(a) < 2:
        return change, float("nan")
    rng, half = random_state(seed), len(a) // 2
    gaps = []
    for _ in range(n_splits):
        order = rng.permutation(len(a))
        gaps.append(np.linalg.norm(a[order[:half]].mean(0) - a[order[half : 2 * half]].mean(0)))
    return change, float(np.median(gaps))
