"""Private helpers shared by the tools (AnnData access, condition masks, recorded keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._constants import UNS_KEY
from ..data import match_mask
from ..metrics._utils import _dense

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd


def _as_array(x: AnnData | np.ndarray, rep: str | None = None) -> np.ndarray:
    """Cells x features array from an array or from ``adata.obsm[rep]`` (``adata.X`` if ``rep`` is None)."""
    if isinstance(x, AnnData):
        if rep is None or rep == "X":
            return _dense(x.X)
        if rep in x.obsm:
            return _dense(x.obsm[rep])
        if rep in x.layers:
            return _dense(x.layers[rep])
        msg = f"{rep!r} is neither in adata.obsm nor in adata.layers"
        raise KeyError(msg)
    return _dense(x)


def _match_mask(obs: pd.DataFrame, condition: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask of the rows of ``obs`` whose columns equal every value of ``condition``.

    Values are compared by the column's type (:func:`scflowlm.data.match_mask`): ``1``, ``1.0`` and ``"1"`` find
    the same cells of an integer or float column.
    """
    mask = np.ones(len(obs), dtype=bool)
    for key, value in condition.items():
        if key not in obs.columns:
            msg = f"obs has no column {key!r}"
            raise KeyError(msg)
        mask &= match_mask(obs[key], value)
    return mask


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
    record: Mapping[str, Any] = next(
        (a.uns[UNS_KEY] for a in adatas if a is not None and UNS_KEY in a.uns), {}
    )
    keys = list(condition_keys) if condition_keys is not None else record.get("condition_keys")
    pkey = perturbation_key if perturbation_key is not None else record.get("perturbation_key")
    ctrl = control_value if control_value is not None else record.get("control_value")
    if keys is None or pkey is None or ctrl is None:
        msg = (
            "condition_keys, perturbation_key and control_value are needed: pass them, or use AnnData that records "
            f"them in uns[{UNS_KEY!r}] (a model's prediction, a tl.baseline_* result, or data registered with "
            "setup_anndata)."
        )
        raise ValueError(msg)
    return [str(k) for k in keys], str(pkey), ctrl
