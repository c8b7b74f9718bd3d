"""Which cells train, validate and are held out: the arguments of ``train`` checked, then the split."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scflowlm.data import match_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["check_train_args", "holdout_mask", "split"]


def check_train_args(
    *, max_epochs: Any, batch_size: Any, train_size: Any, validation_size: Any, lr: Any
) -> None:
    """Raise a ValueError naming a ``train`` argument that would give a silently wrong run."""
    if max_epochs is not None and (not isinstance(max_epochs, numbers.Integral) or max_epochs < 1):
        raise ValueError(
            f"max_epochs must be a positive integer (or None for the default), got {max_epochs!r}."
        )
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(train_size, numbers.Real) or not 0 < train_size <= 1:
        raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
    if validation_size is not None and (
        not isinstance(validation_size, numbers.Real) or not 0 <= validation_size < 1
    ):
        raise ValueError(f"validation_size must be in [0, 1) or None, got {validation_size!r}.")
    if not isinstance(lr, numbers.Real) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}.")


def holdout_mask(
    obs: pd.DataFrame, holdout: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
) -> np.ndarray:
    """Cells matching any of the ``holdout`` conditions (obs column -> value; values compared by type)."""
    mask = np.zeros(len(obs), dtype=bool)
    if holdout is None:
        return mask
    if isinstance(holdout, Mapping):
        holdout = [holdout]
    elif isinstance(holdout, str | pd.Series) or not all(isinstance(h, Mapping) for h in holdout):
        raise TypeError(
            f"holdout must be a dict of obs column -> value, e.g. {{'cell_type': 'NK', 'condition': 'IFNB'}}, or a "
            f"list of them; got {holdout!r}."
        )
    for cond in holdout:
        unknown = sorted(set(cond) - set(obs.columns), key=str)
        if unknown:
            raise KeyError(f"holdout condition {dict(cond)} names unknown obs column(s) {unknown}.")
        hit = np.ones(len(obs), dtype=bool)
        for k, v in cond.items():
            hit &= match_mask(obs[k], v)
        if not hit.any():
            raise ValueError(f"holdout condition {dict(cond)} matches no cell.")
        mask |= hit
    if mask.all():
        raise ValueError(f"holdout {holdout} covers all {len(obs)} cells; nothing is left to train on.")
    return mask


def split(
    held: np.ndarray, *, train_size: float, validation_size: float | None, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices: the held-out cells are the test set; the rest is split at random."""
    pool = np.random.default_rng(seed).permutation(np.nonzero(~held)[0])
    if validation_size is None:
        n_val = len(pool) - int(round(train_size * len(pool)))
    else:
        n_val = int(round(validation_size * len(pool)))
    n_val = min(n_val, len(pool) - 1)
    return np.sort(pool[n_val:]), np.sort(pool[:n_val]), np.nonzero(held)[0]
