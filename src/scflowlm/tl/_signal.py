"""Which conditions of a data set move beyond the noise of their own cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ._evaluate import evaluate

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd
    from anndata import AnnData

__all__ = ["condition_signal"]


def condition_signal(
    adata: AnnData,
    *,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    exclude_perturbed: bool | Literal["auto"] = "auto",
    seed: int = 0,
) -> pd.DataFrame:
    """Each perturbed condition's change over its half-split noise, and whether it counts as signal.

    The ``"signal"`` metrics of :func:`scflowlm.tl.evaluate` on the real cells alone: ``signal_ratio`` is the norm
    of the condition's change from its context's control mean over the median norm of the difference between the
    means of two random halves of its cells (:func:`scflowlm.metrics.signal_to_noise`); ``has_signal`` is a ratio
    of at least 2. Use it to choose held-out conditions worth scoring, and to summarise scores on the conditions
    with signal apart from all (an average over conditions without signal measures noise).

    Parameters
    ----------
    adata
        Real cells with the condition columns (and control cells).
    conditions
        Conditions to measure (default: every perturbed condition).
    condition_keys, perturbation_key, control_value
        As in :func:`scflowlm.tl.evaluate` (default: recorded by ``setup_anndata``).
    exclude_perturbed
        Leave the perturbed genes out of the norms (see :func:`scflowlm.tl.evaluate`).
    seed
        Seed of the half splits.

    Returns
    -------
    One row per condition: its keys, ``n_real``, ``n_excluded``, ``signal_ratio``, ``has_signal``. Nothing is
    written to ``adata``.
    """
    table = evaluate(
        adata,
        adata,
        conditions=conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        metrics=["signal_ratio"],
        exclude_perturbed=exclude_perturbed,
        seed=seed,
        key_added=None,
    )
    return table.drop(columns=["n_pred"])
