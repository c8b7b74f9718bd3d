"""A forest plot of :func:`scflowlm.tl.compare`: each predictor minus the reference, with its CI."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .._docs import doc_params
from ._utils import _finish, _new_ax

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: colours of a verdict
VERDICT_COLORS = {"better": "#2a9d8f", "worse": "#e76f51", "tie": "#8d99ae"}


def _draw(ax: Axes, table: pd.DataFrame, metric: str, *, gap: bool) -> None:
    rows = table[table["metric"] == metric].reset_index(drop=True)
    if rows.empty:
        raise KeyError(
            f"metric {metric!r} is not in the comparison (metrics: {sorted(set(table['metric']))})."
        )
    y = np.arange(len(rows))[::-1]
    centre = rows["difference"].to_numpy(dtype=float)
    low, high = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
    colors = [VERDICT_COLORS.get(v, "#333333") for v in rows.get("verdict", ["tie"] * len(rows))]
    ax.hlines(y, low, high, colors=colors, linewidth=2)
    ax.scatter(centre, y, c=colors, zorder=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    labels = []
    for _, r in rows.iterrows():
        label = str(r["predictor"])
        if gap and np.isfinite(r.get("gap_closed", np.nan)):
            label += f"\n(gap closed {r['gap_closed']:+.0%})"
        labels.append(label)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xlabel(f"{metric}: predictor - {rows['reference'].iloc[0]}")
    ax.set_title(metric)


@doc_params()
def compare(
    table: pd.DataFrame,
    *,
    metric: str | Sequence[str] | None = None,
    gap: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | list[Axes] | Figure | None:
    """Each predictor's difference from the reference with its bootstrap CI (the table of :func:`scflowlm.tl.compare`).

    One row per predictor: the point is the mean difference, the bar the confidence interval, coloured by the
    verdict (better, worse, tie: the CI holds 0); the label adds the share of the gap to the real-vs-real floor
    closed, where it is defined.

    Parameters
    ----------
    table
        The output of :func:`scflowlm.tl.compare`.
    metric
        Metric(s) to draw, one panel each (default: all of the table's).
    gap
        Write the share of the gap closed into the labels.
    ax
        Axes to draw in (one metric only); a new figure if None.
    %(show)s

    Returns
    -------
    The Axes (a list for several metrics), the Figure with ``return_fig``, or None once shown.
    """
    table = pd.DataFrame(table)
    metrics = (
        list(dict.fromkeys(table["metric"]))
        if metric is None
        else ([metric] if isinstance(metric, str) else list(metric))
    )
    if len(metrics) == 1:
        n = int((table["metric"] == metrics[0]).sum())
        fig, ax = _new_ax(ax, figsize=(5.0, 1.0 + 0.5 * n))
        _draw(ax, table, metrics[0], gap=gap)
        return _finish(fig, ax, show=show, return_fig=return_fig)
    if ax is not None:
        raise ValueError("pass ax only with a single metric")
    n = max(int((table["metric"] == m).sum()) for m in metrics)
    fig, axs = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 1.0 + 0.5 * n), squeeze=False)
    axes = list(axs[0])
    for a, m in zip(axes, metrics, strict=True):
        _draw(a, table, m, gap=gap)
    fig.tight_layout()
    return _finish(fig, axes, show=show, return_fig=return_fig)
