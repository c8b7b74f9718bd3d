"""A head start for control-source flows: each condition's expected shift, estimated without its own cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from scflowlm.data import same_value

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["condition_means", "nearest_context_shifts", "own_shifts"]

#: separator of the single perturbations of a combination label
COMBO_SEP = "+"


def _key(condition: dict[str, Any], fields: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(condition[f]) for f in fields)


def condition_means(states: np.ndarray, cell_condition: np.ndarray, n_conditions: int) -> np.ndarray:
    """Mean state ``[C, D]`` of each condition's cells (NaN for a condition without cells)."""
    out = np.full((n_conditions, states.shape[1]), np.nan)
    for c in np.unique(cell_condition):
        out[int(c)] = states[cell_condition == c].mean(0)
    return out


def nearest_context_shifts(
    conditions: Sequence[dict[str, Any]],
    means: np.ndarray,
    targets: Sequence[dict[str, Any]],
    *,
    perturbation_key: str,
    control_value: Any,
) -> np.ndarray:
    """Shift ``[T, D]`` of each target condition from its context's control cells, estimated from other cells.

    The estimate is :func:`scflowlm.tl.baseline_nearest_context`'s, in state space: the mean change (perturbed
    minus control mean) of the same perturbation in the context whose control mean correlates best with the
    target's; for a combination ``"A+B"`` measured in no other context, the sum of its singles' shifts (own
    context first, else the nearest). A target's own cells are never used, so a training condition gets the
    estimate it would get if it were held out, and the flow learns to correct the estimate. Controls, and
    conditions without any estimate, get zeros.

    Parameters
    ----------
    conditions
        The registered conditions (typed dicts).
    means
        ``[C, D]`` mean state of each condition's training cells (:func:`condition_means`; NaN: no cells).
    targets
        The conditions to estimate shifts for.
    perturbation_key, control_value
        The perturbation field and its control value.
    """
    fields = [f for f in (conditions[0] if conditions else {}) if f != perturbation_key]
    table = means
    means: dict[tuple, np.ndarray] = {}  # (context..., perturbation) -> mean state
    for cond, mean in zip(conditions, table, strict=True):
        if np.isfinite(mean).all():
            means[(*_key(cond, fields), str(cond[perturbation_key]))] = mean
    ctrl_label = next((k[-1] for k in means if same_value(k[-1], control_value)), str(control_value))
    contexts = sorted({k[:-1] for k in means if k[-1] == ctrl_label})
    control = {ctx: means[(*ctx, ctrl_label)] for ctx in contexts}

    def shift(ctx: tuple, pert: str) -> np.ndarray | None:
        if (*ctx, pert) in means and ctx in control:
            return means[(*ctx, pert)] - control[ctx]
        return None

    def nearest(ctx: tuple, pert: str) -> np.ndarray | None:
        others = [o for o in contexts if o != ctx and (*o, pert) in means]
        if not others or ctx not in control:
            return None
        r = [np.corrcoef(control[ctx], control[o])[0, 1] for o in others]
        return shift(others[int(np.nanargmax(np.nan_to_num(r, nan=-np.inf)))], pert)

    out = np.zeros((len(targets), table.shape[1]))
    for i, target in enumerate(targets):
        pert = str(target[perturbation_key])
        if same_value(target[perturbation_key], control_value):
            continue
        ctx = _key(target, fields)
        estimate = nearest(ctx, pert)
        if estimate is None and COMBO_SEP in pert:
            parts = [
                shift(ctx, s) if shift(ctx, s) is not None else nearest(ctx, s) for s in pert.split(COMBO_SEP)
            ]
            estimate = None if any(p is None for p in parts) else np.sum(parts, axis=0)
        if estimate is not None:
            out[i] = estimate
    return out


def own_shifts(
    conditions: Sequence[dict[str, Any]], means: np.ndarray, *, perturbation_key: str, control_value: Any
) -> np.ndarray:
    """Shift ``[C, D]`` of each condition measured on its own cells (mean minus its context's control mean).

    Zeros for controls and for conditions without cells or without controls in their context.
    """
    fields = [f for f in (conditions[0] if conditions else {}) if f != perturbation_key]
    control = {
        _key(c, fields): m
        for c, m in zip(conditions, means, strict=True)
        if same_value(c[perturbation_key], control_value) and np.isfinite(m).all()
    }
    out = np.zeros_like(means)
    for i, (cond, mean) in enumerate(zip(conditions, means, strict=True)):
        ctrl = control.get(_key(cond, fields))
        if (
            ctrl is not None
            and np.isfinite(mean).all()
            and not same_value(cond[perturbation_key], control_value)
        ):
            out[i] = mean - ctrl
    return out
