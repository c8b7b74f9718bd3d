"""Bar or point plots of the tables of :func:`scflowlm.tl.evaluate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import EVALUATE_KEY
from .._docs import doc_params
from ..tl import METRICS
from ._utils import _finish, _new_ax

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _condition_label(df: pd.DataFrame, exclude: Sequence[str]) -> pd.Series:
    """One label per row from the non-numeric columns (the condition keys)."""
    cols = [
        c
        for c in df.columns
        if c not in exclude and c not in METRICS and not pd.api.types.is_numeric_dtype(df[c])
    ]
    if not cols:
        return pd.Series([str(i) for i in range(len(df))], index=df.index)
    return df[cols].astype(str).agg(" / ".join, axis=1)


def _draw(
    ax: Axes, df: pd.DataFrame, metric: str, groupby: str | None, kind: str, *, show_mean: bool
) -> None:
    labels = _condition_label(df, [groupby] if groupby else [])
    conds = list(dict.fromkeys(labels))
    groups = list(dict.fromkeys(df[groupby].astype(str))) if groupby else [None]
    x = np.arange(len(conds) + (1 if show_mean else 0), dtype=float)
    width = 0.8 / len(groups)
    for gi, g in enumerate(groups):
        sel = df[groupby].astype(str) == g if groupby else pd.Series(data=True, index=df.index)
        vals = pd.Series(df.loc[sel, metric].to_numpy(dtype=float), index=labels[sel].to_numpy())
        vals = vals.groupby(level=0).mean()
        y = np.array([vals.get(c, np.nan) for c in conds])
        if show_mean:
            y = np.append(y, np.nanmean(y) if np.isfinite(y).any() else np.nan)
        xs = x + (gi - (len(groups) - 1) / 2) * width
        label = g if g is not None else metric
        if kind == "bar":
            ax.bar(xs, y, width=width * 0.95, label=label)
        elif kind == "point":
            ax.scatter(xs, y, label=label, zorder=3)
        else:
            msg = f"kind must be 'bar' or 'point', not {kind!r}"
            raise ValueError(msg)
    ax.set_xticks(x)
    ax.set_xticklabels([*conds, "mean"] if show_mean else conds, rotation=45, ha="right")
    ax.set_ylabel(metric)
    if groupby:
        ax.legend(frameon=False, title=groupby)


@doc_params()
def evaluate(
    adata: AnnData | pd.DataFrame,
    *,
    metric: str | Sequence[str] = "pearson_delta_de",
    key: str = EVALUATE_KEY,
    groupby: str | None = "model",
    kind: str = "bar",
    show_mean: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | list[Axes] | Figure | None:
    """Plot the metrics of :func:`scflowlm.tl.evaluate`, per condition and per model (it reads what that wrote).

    Parameters
    ----------
    adata
        A prediction AnnData that :func:`scflowlm.tl.evaluate` wrote its table to (``uns[key]``), or such tables
        (several concatenated, with a ``groupby`` column such as ``"model"``).
    metric
        Column(s) to plot; several give one panel each (``ax`` must then be None).
    key
        ``uns`` key when ``data`` is AnnData (``tl.evaluate``'s ``key_added``).
    groupby
        Column that distinguishes models (one bar colour each); ignored if absent.
    kind
        ``"bar"`` or ``"point"``.
    show_mean
        Add a ``mean`` position (mean over conditions) at the right.
    ax
        Axes to draw in (single metric only); a new figure if None.
    %(show)s

    Returns
    -------
    The Axes (a list for several metrics; x tick labels are the conditions, y label the metric, legend the
    models), the Figure with ``return_fig``, or None once shown.
    """
    df = adata.uns[key] if isinstance(adata, AnnData) else adata
    df = pd.DataFrame(df).reset_index(drop=True)
    metric_list = [metric] if isinstance(metric, str) else list(metric)
    missing = [m for m in metric_list if m not in df.columns]
    if missing:
        msg = f"metrics {missing} not in the table (columns: {list(df.columns)})"
        raise KeyError(msg)
    if groupby is not None and groupby not in df.columns:
        groupby = None
    if len(metric_list) == 1:
        fig, ax = _new_ax(ax, figsize=(max(4.0, 0.6 * len(df) + 2), 4.0))
        _draw(ax, df, metric_list[0], groupby, kind, show_mean=show_mean)
        return _finish(fig, ax, show=show, return_fig=return_fig)
    if ax is not None:
        msg = "pass ax only with a single metric"
        raise ValueError(msg)
    fig, axs = plt.subplots(1, len(metric_list), figsize=(4.5 * len(metric_list), 4.0), squeeze=False)
    axes = list(axs[0])
    for a, m in zip(axes, metric_list, strict=True):
        _draw(a, df, m, groupby, kind, show_mean=show_mean)
    fig.tight_layout()
    return _finish(fig, axes, show=show, return_fig=return_fig)
