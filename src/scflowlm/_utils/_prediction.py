"""What made a prediction, and the AnnData of predicted cells: one type and one builder for models and baselines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from anndata.utils import make_index_unique

from scflowlm._constants import UNS_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PredictionRecord", "predicted_anndata"]


@dataclass
class PredictionRecord:
    """``adata.uns["scflowlm"]``: the keys that describe conditions, and what made a prediction.

    ``setup_anndata`` writes it without ``model``; a model's prediction and every ``tl.baseline_*`` write it with
    the name of what predicted, so that :mod:`scflowlm.tl` and :mod:`scflowlm.pl` need not be told the keys again.
    """

    condition_keys: list[str]
    perturbation_key: str | None = None
    control_value: Any = None
    combination_sep: str = "+"
    obsm_key: str = "X_pca"
    model: str | None = None
    context_keys: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_uns(self) -> dict:
        """The record as ``uns`` holds it (h5ad-writable: no ``None``; settings only of plain scalar types)."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "settings"}
        out["condition_keys"] = list(self.condition_keys)
        return out | {k: v for k, v in self.settings.items() if isinstance(v, int | float | str | bool)}

    @classmethod
    def read(cls, *adatas: ad.AnnData | None) -> PredictionRecord | None:
        """The record of the first AnnData that has one (``None`` when none has)."""
        for a in adatas:
            if a is not None and UNS_KEY in a.uns:
                uns: Mapping[str, Any] = a.uns[UNS_KEY]
                known = {k: uns[k] for k in cls.__dataclass_fields__ if k in uns and k != "settings"}
                if "condition_keys" in known:
                    known["condition_keys"] = [str(k) for k in np.atleast_1d(known["condition_keys"])]
                    return cls(**known)
        return None


def _unique_names(names: pd.Index) -> pd.Index:
    """Names made unique as anndata does (``"a", "a-1", "a-2"``), vectorised for the common case.

    The n-th repeat of a name gets ``-n``; where that could clash with a name already present, anndata's own
    (slower) rule decides.
    """
    if names.is_unique:
        return names
    repeat = pd.Series(names).groupby(names, sort=False).cumcount().to_numpy()  # [n] 0 for a first occurrence
    out = pd.Index(np.where(repeat > 0, names + "-" + repeat.astype(str), names))
    return out if out.is_unique else make_index_unique(names)


def predicted_anndata(
    X: np.ndarray,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    *,
    record: PredictionRecord,
    obsm: Mapping[str, np.ndarray] | None = None,
) -> ad.AnnData:
    """A new AnnData of predicted cells, as models and baselines return them.

    ``X`` and ``obsm`` as float32, unique string obs names, the condition keys as categorical obs columns, and
    ``uns["scflowlm"]`` the record.
    """
    obs = obs.copy()
    obs.index = _unique_names(pd.Index(obs.index.astype(str)))
    for key in record.condition_keys:
        if key in obs:
            obs[key] = pd.Categorical(obs[key])
    out = ad.AnnData(X=np.asarray(X, dtype=np.float32), obs=obs, var=var)
    for key, value in (obsm or {}).items():
        out.obsm[key] = np.asarray(value, dtype=np.float32)
    out.uns[UNS_KEY] = record.to_uns()
    return out
