"""Simple predictors to report beside a model: control, additive shift, nearest-context shift, real vs real."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import SOURCE_OBSM, UNS_KEY
from .._docs import doc_params
from .._utils import column_mean, dense, obs_mask, pearson, random_state
from .._warnings import ScflowlmWarning
from ._utils import _check_keys, _conditions_in, _resolve_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData


def _as_list(conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if isinstance(conditions, dict) or hasattr(conditions, "keys"):
        conditions = [conditions]  # type: ignore[list-item]
    return [{k: str(v) for k, v in c.items()} for c in conditions]  # type: ignore[union-attr]


class _Shifts:
    """Group means of ``X`` and obsm entries per condition, and perturbation shifts per context."""

    def __init__(
        self,
        adata: AnnData,
        keys: Sequence[str],
        perturbation_key: str,
        control_value: str,
        obsm_keys: Sequence[str],
    ) -> None:
        self.adata = adata
        self.keys = list(keys)
        self.pkey = perturbation_key
        self.ctrl = str(control_value)
        self.ckeys = [k for k in keys if k != perturbation_key]
        self.reps = ["X", *[k for k in obsm_keys if k in adata.obsm]]
        self._means: dict[tuple, dict[str, np.ndarray] | None] = {}
        self.contexts = sorted({tuple(c[k] for k in self.ckeys) for c in _conditions_in(adata.obs, keys)})

    def cond(self, ctx: tuple, pert: str) -> dict[str, str]:
        return dict(zip(self.ckeys, ctx, strict=True)) | {self.pkey: pert}

    def mask(self, ctx: tuple, pert: str) -> np.ndarray:
        return obs_mask(self.adata.obs, self.cond(ctx, pert))

    def means(self, ctx: tuple, pert: str) -> dict[str, np.ndarray] | None:
        """Mean of each representation over the cells of (context, perturbation); None without cells."""
        key = (ctx, pert)
        if key not in self._means:
            m = self.mask(ctx, pert)
            if not m.any():
                self._means[key] = None
            else:
                self._means[key] = {
                    r: column_mean(self.adata.X[m] if r == "X" else self.adata.obsm[r][m]) for r in self.reps
                }
        return self._means[key]

    def shift(self, ctx: tuple, pert: str) -> dict[str, np.ndarray] | None:
        """Mean of perturbed minus mean of control cells in one context; None if either group is empty."""
        mp, mc = self.means(ctx, pert), self.means(ctx, self.ctrl)
        if mp is None or mc is None:
            return None
        return {r: mp[r] - mc[r] for r in self.reps}

    def others_with(self, ctx: tuple, pert: str) -> list[tuple]:
        return [c for c in self.contexts if c != ctx and self.shift(c, pert) is not None]

    def nearest(self, ctx: tuple, candidates: list[tuple]) -> tuple:
        """Candidate context whose control mean (genes) correlates best with the control mean of ``ctx``."""
        ref = self.means(ctx, self.ctrl)["X"]
        r = [pearson(ref, self.means(c, self.ctrl)["X"]) for c in candidates]
        return candidates[int(np.nanargmax(np.nan_to_num(r, nan=-np.inf)))]

    def other_shift(self, ctx: tuple, pert: str, mode: str) -> tuple[dict[str, np.ndarray] | None, str]:
        """Shift of ``pert`` measured in contexts other than ``ctx`` (pooled mean or nearest context)."""
        others = self.others_with(ctx, pert)
        if not others:
            return None, ""
        if mode == "nearest":
            best = self.nearest(ctx, others)
            return self.shift(best, pert), "|".join(best)
        shifts = [self.shift(c, pert) for c in others]
        return {r: np.mean([s[r] for s in shifts], axis=0) for r in self.reps}, "pooled"


def _predict(
    adata: AnnData,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    condition_keys: Sequence[str] | None,
    perturbation_key: str | None,
    control_value: Any,
    obsm_keys: Sequence[str],
    mode: Literal["control", "pooled", "nearest"],
    combo_sep: str = "+",
) -> AnnData:
    keys, perturbation_key, control_value = _resolve_keys(
        adata, condition_keys=condition_keys, perturbation_key=perturbation_key, control_value=control_value
    )
    _check_keys(adata, keys)
    if perturbation_key not in keys:
        msg = f"perturbation_key {perturbation_key!r} must be one of condition_keys {keys}"
        raise ValueError(msg)
    sh = _Shifts(adata, keys, perturbation_key, control_value, obsm_keys)
    name = {"control": "control_mean", "pooled": "additive", "nearest": "nearest_context"}[mode]
    parts = []
    for cond in _as_list(conditions):
        ctx = tuple(cond[k] for k in sh.ckeys)
        pert = cond[perturbation_key]
        m_ctrl = sh.mask(ctx, sh.ctrl)
        if not m_ctrl.any():
            msg = f"no control cells for the context of {cond}"
            raise ValueError(msg)
        shift, source = None, "none"
        if mode != "control":
            shift, source = sh.other_shift(ctx, pert, mode)
            if shift is None and combo_sep in pert:
                # unseen combination: sum of the single shifts, own context first, else other contexts
                singles, srcs = [], []
                for single in pert.split(combo_sep):
                    s_own = sh.shift(ctx, single)
                    s, src = (s_own, "own") if s_own is not None else sh.other_shift(ctx, single, mode)
                    if s is None:
                        singles = None
                        break
                    singles.append(s)
                    srcs.append(f"{single}:{src}")
                if singles:
                    shift = {r: np.sum([s[r] for s in singles], axis=0) for r in sh.reps}
                    source = ";".join(srcs)
            if shift is None:
                warnings.warn(
                    f"no shift measurable for {cond}: predicting the control cells",
                    ScflowlmWarning,
                    stacklevel=3,
                )
                source = "none"
        idx = np.flatnonzero(m_ctrl)
        x = dense(adata.X[idx])  # (n_ctrl, genes)
        obsm = {k: dense(adata.obsm[k][idx]) for k in sh.reps[1:]}
        src_obsm = {SOURCE_OBSM: obsm[sh.reps[1]].copy()} if len(sh.reps) > 1 else {}
        if shift is not None:
            x = x + shift["X"][None, :]
            obsm = {k: v + shift[k][None, :] for k, v in obsm.items()}
        obs = pd.DataFrame(
            {k: [cond[k]] * len(idx) for k in keys},
            index=[f"{name}-{len(parts)}-{i}" for i in range(len(idx))],
        )
        obs["baseline"] = name
        obs["source_cell"] = adata.obs_names[idx].to_numpy()
        obs["source_context"] = source
        parts.append(
            ad.AnnData(x.astype(np.float32), obs=obs, var=adata.var[[]].copy(), obsm=obsm | src_obsm)
        )
    out = ad.concat(parts, axis=0, merge="same")
    out.var_names = adata.var_names.copy()
    for k in keys:
        out.obs[k] = out.obs[k].astype("category")
    out.uns[UNS_KEY] = _record(name, keys, perturbation_key, control_value, obsm_keys)
    return out


def _record(
    name: str, keys: list[str], perturbation_key: str, control_value: Any, obsm_keys: Sequence[str]
) -> dict:
    """What made a baseline prediction, as a model's prediction records it in ``uns["scflowlm"]``."""
    return {
        "model": f"baseline_{name}",
        "condition_keys": keys,
        "perturbation_key": perturbation_key,
        "control_value": control_value,
        "obsm_key": next(iter(obsm_keys), "X_pca"),
    }


@doc_params()
def baseline_control_mean(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
) -> AnnData:
    """The no-change baseline: the context's own control cells, relabelled as the condition.

    Parameters
    ----------
    %(baseline_common)s

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="control",
    )


@doc_params()
def baseline_additive(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str = "+",
) -> AnnData:
    """Pooled additive shift: context's control cells + the perturbation's mean shift in other contexts.

    The shift of a perturbation in a context is the mean of its cells minus the mean of that context's
    control cells; this baseline averages it (each context weighted equally) over every other context that has
    the perturbation. For a combination ``"A+B"`` that no other context has, the shift is the sum of the single
    shifts of ``A`` and ``B``, each measured in the same context when it has them, else pooled over the other
    contexts. Without any usable shift it warns and returns the control cells.

    Parameters
    ----------
    %(baseline_common)s
    combo_sep
        Separator of the perturbations in a combination label.

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="pooled",
        combo_sep=combo_sep,
    )


@doc_params()
def baseline_nearest_context(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    perturbation_key: str | None = None,
    control_value: Any = None,
    obsm_keys: Sequence[str] = ("X_pca",),
    combo_sep: str = "+",
) -> AnnData:
    """Nearest-context shift: context's control cells + the shift measured in the most similar other context.

    Among the other contexts that have the perturbation (and control cells), the one whose control mean
    expression has the largest Pearson correlation with the target context's control mean gives the shift
    (mean of its perturbed cells minus mean of its control cells). Combinations unseen in other contexts fall
    back to the sum of single shifts as in :func:`baseline_additive` (the nearest context for a single missing
    from the target context). ``obs["source_context"]`` records the context used.

    Parameters
    ----------
    %(baseline_common)s
    combo_sep
        Separator of the perturbations in a combination label.

    Returns
    -------
    %(baseline_returns)s
    """
    return _predict(
        adata,
        conditions,
        condition_keys=condition_keys,
        perturbation_key=perturbation_key,
        control_value=control_value,
        obsm_keys=obsm_keys,
        mode="nearest",
        combo_sep=combo_sep,
    )


def baseline_real_vs_real(
    adata: AnnData,
    *,
    conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    condition_keys: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[AnnData, AnnData]:
    """Real-vs-real floor: a disjoint random half split of the true cells of each condition.

    Scoring the second half against the first gives the best value a predictor can reach at this number of
    cells (sampling noise only).

    Parameters
    ----------
    adata
        Cells x genes with the true cells of ``conditions``.
    conditions
        Conditions to split, as dicts ``{key: value}``.
    condition_keys
        obs columns that define a condition (default: from ``adata.uns["scflowlm"]``).
    seed
        Seed of the split.

    Returns
    -------
    ``(reference, predicted)``: ``predicted`` holds a random half (``n // 2`` cells) of each condition's
    cells; ``reference`` is ``adata`` without those cells (so it keeps the other half of each condition and
    every other cell, e.g. the controls that DE and change metrics need). Pass ``reference`` as
    ``adata_real`` and ``predicted`` as ``adata_pred`` to :func:`scflowlm.tl.evaluate`. Both are copies.
    """
    if condition_keys is None:
        condition_keys = adata.uns.get(UNS_KEY, {}).get("condition_keys")
    if condition_keys is None:
        msg = "condition_keys is needed: pass it, or register adata with setup_anndata (uns['scflowlm'])"
        raise ValueError(msg)
    _check_keys(adata, list(condition_keys))
    rng = random_state(seed)
    take = np.zeros(adata.n_obs, dtype=bool)
    for cond in _as_list(conditions):
        idx = np.flatnonzero(obs_mask(adata.obs, cond))
        if len(idx) < 2:
            msg = f"need at least 2 cells to split {cond}, got {len(idx)}"
            raise ValueError(msg)
        take[rng.permutation(idx)[: len(idx) // 2]] = True
    pred = adata[take].copy()
    pred.obs["baseline"] = "real_vs_real"
    if sp.issparse(pred.X):
        pred.X = pred.X.toarray()
    return adata[~take].copy(), pred
