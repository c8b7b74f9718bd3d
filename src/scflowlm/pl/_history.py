"""Training curves of a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._docs import doc_params
from ._utils import _finish, _new_ax

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@doc_params()
def history(
    model: Any,
    *,
    keys: Sequence[str] = ("train_loss", "validation_loss"),
    logy: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Plot training and validation loss per epoch.

    Parameters
    ----------
    model
        A trained model with a scvi-tools ``history`` dict (name -> DataFrame indexed by epoch with one column),
        or that dict itself.
    keys
        History entries to draw (those missing are skipped), e.g. ``"train_loss"``,
        ``"validation_loss"``, ``"elbo_train"``.
    logy
        Logarithmic y axis.
    %(ax_show)s

    Returns
    -------
    The Axes (one line per key, labelled with the key), the Figure with ``return_fig``, or None once shown.
    """
    hist: Mapping[str, pd.DataFrame] | None = getattr(model, "history", model)
    if not isinstance(hist, dict) and not hasattr(hist, "keys"):
        msg = "model has no history dict (train the model first)"
        raise ValueError(msg)
    present = [k for k in keys if k in hist and hist[k] is not None and len(hist[k]) > 0]
    if not present:
        msg = f"none of {list(keys)} in the history (available: {list(hist.keys())})"
        raise ValueError(msg)
    fig, ax = _new_ax(ax)
    for k in present:
        h = hist[k]
        s = h.iloc[:, 0] if isinstance(h, pd.DataFrame) else pd.Series(np.asarray(h))
        s = pd.to_numeric(s, errors="coerce").dropna()
        ax.plot(np.asarray(s.index, dtype=float), s.to_numpy(dtype=float), marker="o", ms=3, label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return _finish(fig, ax, show=show, return_fig=return_fig)
