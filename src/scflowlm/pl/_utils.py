"""Private plotting helpers (scanpy-style return convention)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _new_ax(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _finish(fig: Figure, axes: Axes | list[Axes], *, show: bool | None, return_fig: bool):
    """Scanpy convention: the Figure if ``return_fig``; None once shown; else the Axes."""
    if return_fig:
        return fig
    if show is None:
        import scanpy as sc

        show = bool(sc.settings.autoshow) and plt.get_backend().lower() != "agg"
    if show:
        plt.show()
        return None
    return axes
