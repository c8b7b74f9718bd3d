"""A table of gene vectors checked once, as the models and the tools take it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["check_gene_vectors"]

#: most names an error lists
_SHOW = 10


def check_gene_vectors(
    vectors: pd.DataFrame | Mapping[str, Iterable[float]] | str,
    *,
    uns: Mapping[str, object] | None = None,
    name: str = "perturbation_embeddings",
) -> pd.DataFrame:
    """A table of gene vectors (one row per perturbation, indexed by its name), checked; what the models and tools take.

    Parameters
    ----------
    vectors
        A DataFrame (index: names), a dict of name -> vector, or the key of one in ``uns``.
    uns
        The ``adata.uns`` a key is read from.
    name
        The argument's name, for the errors.

    Returns
    -------
    A new float32 DataFrame: names as stripped strings, columns labelled ``"0", "1", ...`` (writable to h5ad).
    Refused, with an error naming ``name`` and the fix: a key not in ``uns``, another type, a MultiIndex, vectors
    of different lengths, no rows or columns, values that are not numbers, not finite or beyond float32's range
    (the models compute in float32), and two vectors of one name.
    """
    if isinstance(vectors, str):
        if uns is None or vectors not in uns:
            keys = [] if uns is None else list(uns)[:_SHOW]
            raise KeyError(
                f"{name}={vectors!r} is not a key of adata.uns (keys: {keys}); pass a DataFrame (perturbation name -> "
                "vector), a dict of name -> vector, or the adata.uns key of one."
            )
        vectors = uns[vectors]
    if isinstance(vectors, dict):
        lengths = {str(k): int(np.size(v)) for k, v in vectors.items()}
        if len(set(lengths.values())) > 1:
            shown = dict(list(lengths.items())[:_SHOW])
            raise ValueError(
                f"{name} holds vectors of different lengths ({sorted(set(lengths.values()))}; by name: {shown}); "
                "give every perturbation a vector of the same length."
            )
        vectors = pd.DataFrame.from_dict({k: np.ravel(v) for k, v in vectors.items()}, orient="index")
    if not isinstance(vectors, pd.DataFrame):
        raise TypeError(
            f"{name} must be a DataFrame with one row per perturbation (index: its name), a dict of name -> vector, "
            f"or the adata.uns key of one; got {type(vectors).__name__}."
        )
    if isinstance(vectors.index, pd.MultiIndex):
        raise ValueError(
            f"{name} has a MultiIndex ({vectors.index.nlevels} levels); give one name per row: the perturbation's "
            "name (e.g. vectors.droplevel(...) or vectors.set_axis(names))."
        )
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(
            f"{name} has {vectors.shape[0]} rows and {vectors.shape[1]} columns; it needs one row per perturbation "
            "and at least one column."
        )
    try:
        values = vectors.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers only ({err}).") from err
    if not np.isfinite(values).all():
        bad = [str(n) for n in vectors.index[~np.isfinite(values).all(1)]]
        raise ValueError(
            f"{name} must hold finite numbers; the vectors of {bad[:_SHOW]} have NaN or infinite values: fill or "
            "drop those rows."
        )
    big = np.abs(values) >= np.finfo(np.float32).max
    if big.any():
        bad = [str(n) for n in vectors.index[big.any(1)]]
        raise ValueError(
            f"{name} has values beyond float32's range (|x| up to {np.abs(values).max():.3g}) in the vectors of "
            f"{bad[:_SHOW]}; the models compute in float32: rescale the vectors (e.g. to unit length)."
        )
    index = pd.Index([str(n).strip() for n in vectors.index])
    if not index.is_unique:
        raise ValueError(f"{name} has duplicate names: {sorted(set(index[index.duplicated()]))[:_SHOW]}.")
    columns = pd.Index([str(i) for i in range(values.shape[1])])
    return pd.DataFrame(values.astype(np.float32), index=index, columns=columns)
