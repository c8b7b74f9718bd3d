"""Predictors against a reference with an honest error bar: paired bootstrap over conditions (and seeds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .._utils import random_state
from ._evaluate import HIGHER_IS_BETTER, METRICS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["compare"]

#: columns of a long score table that are neither the condition nor a metric
_NOT_CONDITION = ("seed", "n_real", "n_pred", "n_excluded", "n_de_real", "n_de_pred", "has_signal", "train s")


def compare(
    scores: pd.DataFrame,
    *,
    reference: str,
    floor: str | None = None,
    metrics: Sequence[str] | None = None,
    predictor_key: str = "model",
    condition_keys: Sequence[str] | None = None,
    seed_key: str = "seed",
    higher_is_better: Mapping[str, bool] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Each predictor minus a reference predictor per metric, with a paired bootstrap CI and the share of the gap closed.

    For a metric and a predictor ``p``: on each condition both ``p`` and the ``reference`` were scored on, the
    difference of their means over seeds, averaged over conditions. The confidence interval is the percentile
    interval of ``n_boot`` paired bootstrap replicates :cite:p:`efron1993bootstrap`: conditions drawn with
    replacement (the same draw for every predictor: paired), and within each drawn condition each predictor's
    seeds drawn with replacement, so the interval holds both the spread over conditions and over seeds. With few
    conditions the plain percentile interval is too narrow; its tails are expanded to a t interval's width
    (Hesterberg's expanded percentile interval: the levels ``Phi(sqrt(n / (n - 1)) t_{n-1}(tail))``).

    The **share of the gap closed** is ``(p - reference) / (floor - reference)`` on the same conditions, with the
    ``floor`` predictor the best a prediction can reach at this number of cells (real vs real,
    :func:`scflowlm.tl.baseline_real_vs_real`): 0 is the reference's level, 1 the floor's; negative is worse
    than the reference. It makes small wins legible: on metrics near their ceiling a difference of 0.01 may be
    half of what is left. Undefined (NaN) where the floor is not better than the reference.

    Parameters
    ----------
    scores
        A long table, one row per (condition, predictor, seed): the condition's columns, ``predictor_key``,
        optionally ``seed_key``, and metric columns, e.g. :func:`scflowlm.tl.evaluate` tables concatenated with
        a ``model`` column. Filter it first to compare on a subset (``has_signal``).
    reference
        The predictor everything is compared with (the best baseline).
    floor
        The real-vs-real predictor, for the share of the gap closed (``None``: not computed).
    metrics
        Metric columns (default: the columns of :data:`scflowlm.tl.METRICS` present).
    predictor_key
        The column naming the predictor.
    condition_keys
        Columns that identify a condition (default: the text columns that are not the predictor).
    seed_key
        The column of seeds (absent: one seed each).
    higher_is_better
        Per metric, whether higher is better (default: :func:`scflowlm.tl.evaluate`'s metrics as they are known;
        others higher).
    n_boot, level, seed
        Bootstrap replicates, the CI's coverage, and the seed of the draws.

    Returns
    -------
    One row per (metric, predictor other than the reference): ``metric``, ``predictor``, ``reference``,
    ``n_conditions``, ``predictor_mean``, ``reference_mean``, ``floor_mean``, ``difference``, ``ci_low``,
    ``ci_high``, ``verdict`` (``"better"``/``"worse"`` when the CI excludes 0, else ``"tie"``), ``gap_closed``,
    ``gap_ci_low``, ``gap_ci_high``.
    """
    if predictor_key not in scores:
        raise KeyError(
            f"scores has no column {predictor_key!r} (predictor_key); columns: {list(scores.columns)}."
        )
    predictors = list(dict.fromkeys(scores[predictor_key].astype(str)))
    for name, value in (("reference", reference), ("floor", floor)):
        if value is not None and value not in predictors:
            raise ValueError(f"{name}={value!r} is not a predictor of the table; predictors: {predictors}.")
    metrics = [m for m in METRICS if m in scores] if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in scores]
    if unknown:
        raise KeyError(f"metrics {unknown} are not columns of scores.")
    if condition_keys is None:
        condition_keys = [
            c
            for c in scores.columns
            if c not in (predictor_key, seed_key, *metrics, *_NOT_CONDITION)
            and not pd.api.types.is_numeric_dtype(scores[c])
        ]
    condition_keys = list(condition_keys)
    if not condition_keys:
        raise ValueError(
            "No condition columns: pass condition_keys= (the columns that identify a condition)."
        )
    direction = {m: HIGHER_IS_BETTER.get(m, True) for m in metrics} | dict(higher_is_better or {})
    table = scores.assign(
        _condition=scores[condition_keys].astype(str).agg("\x1f".join, axis=1),
        _predictor=scores[predictor_key].astype(str),
    )
    rng = random_state(seed)
    rows = []
    for metric in metrics:
        values = _seed_matrices(table, metric)
        if reference not in values:
            continue
        for predictor in predictors:
            if predictor in (reference, floor) or predictor not in values:
                continue
            rows.append(
                _one(values, metric, predictor, reference, floor, direction[metric], n_boot, level, rng)
            )
    return pd.DataFrame(rows)


def _seed_matrices(table: pd.DataFrame, metric: str) -> dict[str, dict[str, np.ndarray]]:
    """The finite values over its seeds, by predictor then condition."""
    out: dict[str, dict[str, np.ndarray]] = {}
    finite = table[np.isfinite(pd.to_numeric(table[metric], errors="coerce"))]
    for (predictor, condition), group in finite.groupby(["_predictor", "_condition"], sort=False):
        out.setdefault(predictor, {})[condition] = group[metric].to_numpy(dtype=float)
    return out


def _draw_means(
    per_condition: list[np.ndarray], cond_idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``[B]`` bootstrap means: conditions ``cond_idx [B, n]``, each condition's seeds redrawn with replacement."""
    width = max(len(v) for v in per_condition)
    matrix = np.full((len(per_condition), width), np.nan)  # [n, s]
    counts = np.array([len(v) for v in per_condition])
    for i, v in enumerate(per_condition):
        matrix[i, : len(v)] = v
    seeds = (rng.random((*cond_idx.shape, width)) * counts[cond_idx][..., None]).astype(int)  # [B, n, s]
    drawn = matrix[cond_idx[..., None], seeds]  # [B, n, s]
    keep = np.arange(width)[None, None, :] < counts[cond_idx][..., None]
    return (np.where(keep, drawn, 0.0).sum(-1) / keep.sum(-1)).mean(-1)  # [B]


def _expanded_tail(level: float, n: int) -> float:
    """The tail of the expanded percentile interval (Hesterberg).

    The plain percentile interval is too narrow for few conditions (it divides their variance by ``n``, not
    ``n - 1``); this widens it to a t interval's width.
    """
    tail = (1 - level) / 2
    if n < 2:
        return tail
    return float(stats.norm.cdf(np.sqrt(n / (n - 1)) * stats.t.ppf(tail, n - 1)))


def _one(values, metric, predictor, reference, floor, higher, n_boot, level, rng) -> dict:
    conditions = [c for c in values[predictor] if c in values[reference]]
    if floor is not None:
        with_floor = [c for c in conditions if c in values.get(floor, {})]
    row = {
        "metric": metric,
        "predictor": predictor,
        "reference": reference,
        "n_conditions": len(conditions),
    }
    if not conditions:
        return row
    cond_idx = rng.integers(len(conditions), size=(n_boot, len(conditions)))  # [B, n] one draw for all
    p_vals = [values[predictor][c] for c in conditions]
    r_vals = [values[reference][c] for c in conditions]
    p, r = np.mean([v.mean() for v in p_vals]), np.mean([v.mean() for v in r_vals])
    boot = _draw_means(p_vals, cond_idx, rng) - _draw_means(r_vals, cond_idx, rng)  # [B]
    tail = _expanded_tail(level, len(conditions))
    low, high = np.quantile(boot, [tail, 1 - tail])
    sign = 1 if higher else -1
    gain_low, gain_high = (low, high) if higher else (-high, -low)  # the CI of the gain (positive: better)
    verdict = "better" if gain_low > 0 else "worse" if gain_high < 0 else "tie"
    row |= {
        "predictor_mean": p,
        "reference_mean": r,
        "difference": p - r,
        "ci_low": low,
        "ci_high": high,
        "verdict": verdict if len(conditions) > 1 else "tie",
    }
    if floor is not None and with_floor:
        idx = rng.integers(len(with_floor), size=(n_boot, len(with_floor)))
        pv = [values[predictor][c] for c in with_floor]
        rv = [values[reference][c] for c in with_floor]
        fv = [values[floor][c] for c in with_floor]
        pm, rm, fm = (np.mean([v.mean() for v in x]) for x in (pv, rv, fv))
        gap = (fm - rm) * sign
        row["floor_mean"] = fm
        row["gap_closed"] = (pm - rm) / (fm - rm) if gap > 0 else np.nan
        if gap > 0:
            bp, br, bf = (_draw_means(x, idx, rng) for x in (pv, rv, fv))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where((bf - br) * sign > 0, (bp - br) / (bf - br), np.nan)
            ratios = ratios[np.isfinite(ratios)]
            if len(ratios):
                row["gap_ci_low"], row["gap_ci_high"] = np.quantile(ratios, [tail, 1 - tail])
    return row
