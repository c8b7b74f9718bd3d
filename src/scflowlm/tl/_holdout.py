"""Unseen-combination splits: which condition combinations to hold out."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .._utils import random_state
from .._warnings import ScflowlmWarning
from ._utils import _check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData


def holdout_combinations(
    adata: AnnData,
    *,
    keys: Sequence[str],
    n_per_group: int = 1,
    group_key: str | None = None,
    control: Mapping[str, Any] | None = None,
    min_cells: int = 1,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Choose combinations of condition values to hold out, each of whose values stays seen in training.

    For every value of ``group_key`` (e.g. each cell type), up to ``n_per_group`` combinations of ``keys``
    present in ``adata`` (with at least ``min_cells`` cells) are drawn at random. A combination is held out only
    if, after holding it out together with those already chosen, each of its values (of every key) still occurs
    in some kept combination that is not a control one, so that the model has seen every value and only the
    combination is new. Combinations with a control value (``control``, e.g. ``{"condition": "control"}``) are
    never held out. A group where fewer than ``n_per_group`` combinations qualify gives a warning.

    Parameters
    ----------
    adata
        Cells with the ``keys`` columns in ``obs``.
    keys
        obs columns whose value combinations form the conditions, e.g. ``["cell_type", "condition"]``.
    n_per_group
        Combinations held out per group.
    group_key
        Key that defines the groups; the first of ``keys`` if None.
    control
        ``{key: control value}``: combinations with any of these values are never held out (and do not count
        as seeing a value of another key).
    min_cells
        Smallest number of cells of a combination that may be held out.
    seed
        Seed of the random choice.

    Returns
    -------
    List of held-out combinations, as dicts ``{key: value}`` (values as strings), grouped by ``group_key``.
    """
    keys = list(keys)
    _check_keys(adata, keys)
    group_key = keys[0] if group_key is None else group_key
    if group_key not in keys:
        msg = f"group_key {group_key!r} must be one of keys {keys}"
        raise ValueError(msg)
    control = {k: str(v) for k, v in (control or {}).items()}
    counts = adata.obs[keys].astype(str).value_counts()
    combos = [dict(zip(keys, c, strict=True)) for c in counts.index]
    sizes = {tuple(c.items()): int(n) for c, n in zip(combos, counts.to_numpy(), strict=True)}

    def is_control(c: dict[str, str]) -> bool:
        return any(c.get(k) == v for k, v in control.items())

    rng = random_state(seed)
    held: list[dict[str, str]] = []
    held_set: set[tuple] = set()
    for group in sorted({c[group_key] for c in combos}):
        cands = [
            c
            for c in combos
            if c[group_key] == group and not is_control(c) and sizes[tuple(c.items())] >= min_cells
        ]
        cands = [cands[i] for i in rng.permutation(len(cands))]
        chosen = 0
        for c in cands:
            if chosen >= n_per_group:
                break
            trial = held_set | {tuple(c.items())}
            kept = [k for k in combos if tuple(k.items()) not in trial and not is_control(k)]
            if all(any(k[key] == c[key] for k in kept) for key in keys if key != group_key) and any(
                k[group_key] == group for k in combos if tuple(k.items()) not in trial
            ):
                held.append(c)
                held_set = trial
                chosen += 1
        if chosen < n_per_group:
            warnings.warn(
                f"{group_key}={group!r}: only {chosen} of {n_per_group} combinations can be held out "
                "with every value still seen in training",
                ScflowlmWarning,
                stacklevel=2,
            )
    return held
