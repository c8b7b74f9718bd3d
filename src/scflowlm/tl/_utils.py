"""Private helpers shared by the tools (array access, subsampling, blockwise distances)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._constants import UNS_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

#: rows per block in the blockwise pairwise computations (bounds memory to ``_BLOCK * m`` floats).
_BLOCK = 2048


def _dense(a: Any) -> np.ndarray:
    """Dense float64 2-D array of ``a`` (sparse matrices are densified)."""
    if sp.issparse(a):
        a = a.toarray()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    return a


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


def _mean(a: Any) -> np.ndarray:
    """Column means of a dense or sparse cells x features matrix, shape (features,)."""
    return np.asarray(a.mean(axis=0), dtype=np.float64).ravel()


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _subsample_idx(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_n`` of ``n`` items drawn without replacement."""
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_n, replace=False))


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (n, m), clipped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # (n, m)
    return np.maximum(d, 0.0)


def _match_mask(obs: pd.DataFrame, condition: Mapping[str, Any]) -> np.ndarray:
    """Boolean mask of the rows of ``obs`` whose columns equal every value of ``condition``."""
    mask = np.ones(len(obs), dtype=bool)
    for key, value in condition.items():
        if key not in obs.columns:
            msg = f"obs has no column {key!r}"
            raise KeyError(msg)
        mask &= (obs[key].astype(str) == str(value)).to_numpy()
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
    record: Mapping[str, Any] = next((a.uns[UNS_KEY] for a in adatas if a is not None and UNS_KEY in a.uns), {})
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
