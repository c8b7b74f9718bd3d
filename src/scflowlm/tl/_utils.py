"""Private helpers shared by the tools (AnnData access, condition masks, recorded keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anndata import AnnData

from .._constants import UNS_KEY
from .._utils import PredictionRecord, dense
from ..data import COMBINATION_SEP, ConditionCatalog

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import pandas as pd


def _as_array(x: AnnData | np.ndarray, rep: str | None = None) -> np.ndarray:
    """Cells x features array from an array or from ``adata.obsm[rep]`` (``adata.X`` if ``rep`` is None)."""
    if isinstance(x, AnnData):
        if rep is None or rep == "X":
            return dense(x.X)
        if rep in x.obsm:
            return dense(x.obsm[rep])
        if rep in x.layers:
            return dense(x.layers[rep])
        msg = f"{rep!r} is neither in adata.obsm nor in adata.layers"
        raise KeyError(msg)
    return dense(x)


def _conditions_in(obs: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Distinct combinations of ``keys`` present in ``obs``, in order of first appearance."""
    combos = obs[list(keys)].astype(str).drop_duplicates()
    return [dict(zip(keys, row, strict=True)) for row in combos.itertuples(index=False, name=None)]


def _check_keys(adata: AnnData, keys: Sequence[str], name: str = "adata") -> None:
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        msg = f"{name}.obs lacks the condition columns {missing}"
        raise KeyError(msg)


def _resolve_keys(
    *adatas: AnnData,
    condition_keys: Sequence[str] | None,
    perturbation_key: str | None,
    control_value: Any,
) -> tuple[list[str], str, Any]:
    """The condition keys, perturbation key and control value: given, or recorded in ``uns["scflowlm"]``.

    A prediction records them (``predict_perturbation``, ``tl.baseline_*``), and so does ``setup_anndata``; the
    first of ``adatas`` with a record is read.
    """
    record = PredictionRecord.read(*adatas)
    keys = list(condition_keys) if condition_keys is not None else getattr(record, "condition_keys", None)
    pkey = perturbation_key if perturbation_key is not None else getattr(record, "perturbation_key", None)
    ctrl = control_value if control_value is not None else getattr(record, "control_value", None)
    if keys is None or pkey is None or ctrl is None:
        msg = (
            "condition_keys, perturbation_key and control_value are needed: pass them, or use AnnData that records "
            f"them in uns[{UNS_KEY!r}] (a model's prediction, a tl.baseline_* result, or data registered with "
            "setup_anndata)."
        )
        raise ValueError(msg)
    return [str(k) for k in keys], str(pkey), ctrl


def _combination_sep(*adatas: AnnData | None, given: str | None = None) -> str:
    """The separator of combinations: ``given``, else the first record of ``adatas`` (real data before predictions)."""
    if given is not None:
        return given
    for adata in adatas:
        record = PredictionRecord.read(adata)
        if record is not None:
            return record.combination_sep
    return COMBINATION_SEP


def _catalog(
    adata: AnnData,
    conditions: Any,
    *,
    condition_keys: Sequence[str] | None,
    perturbation_key: str | None,
    control_value: Any,
    combo_sep: str | None = None,
    vectors: Any = None,
) -> tuple[ConditionCatalog, np.ndarray, list[dict[str, Any]]]:
    """The set-up every baseline shares: keys resolved and checked, the catalog of ``adata.obs``, the typed targets.

    Returns ``(catalog, rows [n] of every cell, targets)``; gene ``vectors`` are checked and named as
    ``setup_anndata`` does (an ``adata.uns`` key is read).
    """
    from ..data import check_gene_vectors

    keys, perturbation_key, control_value = _resolve_keys(
        adata, condition_keys=condition_keys, perturbation_key=perturbation_key, control_value=control_value
    )
    _check_keys(adata, keys)
    if perturbation_key not in keys:
        msg = f"perturbation_key {perturbation_key!r} must be one of condition_keys {keys}"
        raise ValueError(msg)
    checked = None if vectors is None else check_gene_vectors(vectors, uns=adata.uns)
    catalog, rows = ConditionCatalog.from_obs(
        adata.obs,
        keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combination_sep=_combination_sep(adata, given=combo_sep),
        vectors=checked,
    )
    return catalog, rows, catalog.typed(conditions)
