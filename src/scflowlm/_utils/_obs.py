"""Cells of AnnData obs that match a condition (values compared by their column's type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from scflowlm.data import match_mask

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

__all__ = ["obs_mask"]


def obs_mask(
    obs: pd.DataFrame,
    condition: Mapping[str, Any],
    *,
    perturbation_key: str | None = None,
    combination_sep: str | None = None,
) -> np.ndarray:
    """Boolean mask of the rows of ``obs`` whose columns equal every value of ``condition``.

    Values are compared by the column's type (:func:`scflowlm.data.match_mask`): ``1``, ``1.0`` and ``"1"`` find
    the same cells of an integer or float column. In ``perturbation_key`` a combination matches in any order and
    spacing when ``combination_sep`` is given (``"B+A"`` finds the cells of ``"A+B"``).
    """
    mask = np.ones(len(obs), dtype=bool)
    for key, value in condition.items():
        if key not in obs.columns:
            msg = f"obs has no column {key!r}"
            raise KeyError(msg)
        sep = combination_sep if key == perturbation_key else None
        mask &= match_mask(obs[key], value, combination_sep=sep)
    return mask
