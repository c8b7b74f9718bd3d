"""What ``setup_anndata`` checks and registers: inputs that would give silently wrong results are refused here."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, ObsmField

from scflowlm._constants import PROMPT_COL, REGISTRY_KEYS, SEEN_COL, UNS_KEY
from scflowlm._utils import PredictionRecord, quiet_loggers
from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import (
    ConditionTable,
    PromptBuilder,
    check_gene_vectors,
    coerce_value,
    match_value,
    repeated_singles,
    same_value,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad

__all__ = ["check_against_registry", "register", "registered_categories"]

#: obs columns a prediction writes itself: a template field may not have these names.
RESERVED = (PROMPT_COL, SEEN_COL)


def check_finite(X, what: str, *, chunk: int = 4096) -> None:
    """Raise a ValueError naming how many cells (and the first) have NaN/inf in ``X``; reads ``chunk`` rows at a time."""
    n, bad, first = X.shape[0], 0, None
    for start in range(0, n, chunk):
        block = X[start : min(start + chunk, n)]
        if sp.issparse(block):
            block = sp.csr_matrix(block)
            rows = np.unique(
                np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))[~np.isfinite(block.data)]
            )
        else:
            rows = np.nonzero(~np.isfinite(np.asarray(block)).all(1))[0]
        if len(rows):
            bad += len(rows)
            first = start + int(rows[0]) if first is None else first
    if bad:
        raise ValueError(
            f"{what} has NaN or infinite values in {bad} cells (first: row {first}); remove or impute them first."
        )


def _check_states(adata: ad.AnnData, obsm_key: str, layer: str | None) -> None:
    if adata.n_obs == 0:
        raise ValueError("The AnnData has no cells.")
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm[{obsm_key!r}] is missing. Compute PCA coordinates first, e.g. "
            f"`sc.pp.pca(adata, n_comps=50)` (writes obsm['X_pca'] and varm['PCs']), or pass obsm_key=."
        )
    coords = np.asarray(adata.obsm[obsm_key])
    if coords.ndim != 2 or coords.shape[1] == 0:
        raise ValueError(f"adata.obsm[{obsm_key!r}] must be a 2-D array with at least one column.")
    if not np.all(np.isfinite(coords)):
        bad = int((~np.isfinite(coords)).any(1).sum())
        raise ValueError(f"adata.obsm[{obsm_key!r}] has NaN or infinite values in {bad} cells.")
    too_large = np.abs(coords) >= np.finfo(np.float32).max  # the model computes in float32
    if too_large.any():
        raise ValueError(
            f"adata.obsm[{obsm_key!r}] has values beyond float32's range (|x| up to {np.abs(coords).max():.3g}) in "
            f"{int(too_large.any(1).sum())} cells; the model computes in float32. Use coordinates of a usual scale, "
            "e.g. a PCA of log-normalised expression (sc.pp.normalize_total, sc.pp.log1p, sc.pp.pca)."
        )
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"adata.layers[{layer!r}] is missing; layers are {list(adata.layers)}.")
    X = adata.layers[layer] if layer is not None else adata.X
    check_finite(X, f"adata.layers[{layer!r}]" if layer else "adata.X")


def _check_fields(adata: ad.AnnData, builder: PromptBuilder, context_keys: Sequence[str]) -> None:
    missing = [f for f in builder.fields if f not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"Template field(s) {missing} are not obs columns; available columns: {list(adata.obs.columns)}."
        )
    reserved = [f for f in builder.fields if f in RESERVED]
    if reserved:
        raise ValueError(
            f"Template field(s) {reserved} have names that predictions write themselves ({list(RESERVED)}); "
            "rename the obs column(s)."
        )
    missing = [k for k in context_keys if k not in adata.obs.columns]
    if missing:
        raise KeyError(f"context_keys {missing} are not obs columns.")
    for f in dict.fromkeys([*builder.fields, *context_keys]):
        col = adata.obs[f]
        if col.isna().any():
            raise ValueError(
                f"obs[{f!r}] has {int(col.isna().sum())} missing (NaN) values; fill or drop them."
            )


def _check_distinct_prompts(adata: ad.AnnData, builder: PromptBuilder) -> None:
    """Warn when different conditions get the same prompt: CaLMFlow could not tell them apart."""
    if not builder.fields:
        return
    combos = adata.obs[builder.fields].drop_duplicates()
    prompts: dict[str, dict] = {}
    for row in combos.to_dict("records"):
        other = prompts.setdefault(builder.render(row), row)
        if other is not row:
            missing = [f for f in builder.fields if not same_value(row[f], other[f])]
            warnings.warn(
                f"The conditions {other} and {row} get the same prompt {builder.render(row)!r}, so CaLMFlow cannot "
                f"tell them apart ({len(combos)} conditions, {len({builder.render(r) for r in combos.to_dict('records')})} "
                f"distinct prompts). Put {['{' + f + '}' for f in missing]} into the template(s).",
                ScflowlmWarning,
                stacklevel=4,
            )
            return


def _check_repeated_singles(adata: ad.AnnData, perturbation_key: str | None, sep: str) -> None:
    """Warn about perturbation values that name a single twice (``"A+A"``): a perturbation counts once."""
    if perturbation_key is None or perturbation_key not in adata.obs or not sep:
        return
    values = pd.unique(adata.obs[perturbation_key])
    if np.asarray(values).dtype.kind in "biuf":
        return
    twice = {str(v): repeated_singles(v, sep) for v in values if repeated_singles(v, sep)}
    if twice:
        warnings.warn(
            f"obs[{perturbation_key!r}] has value(s) that name a perturbation more than once: {twice}. A perturbation "
            "counts once: 'A+A' is read as the single 'A' (its head start and encoding are A's).",
            ScflowlmWarning,
            stacklevel=4,
        )


def _check_controls(adata: ad.AnnData, perturbation_key: str | None, control_value: Any) -> None:
    if perturbation_key is None or control_value is None:
        return
    values = np.asarray(pd.unique(adata.obs[perturbation_key]))
    if coerce_value(values, control_value) is None:  # "ctrl" for a boolean or numeric column
        raise ValueError(
            f"control_value={control_value!r} cannot be a value of obs[{perturbation_key!r}], a column of "
            f"{values.dtype} values ({values[:5].tolist()}); pass control_value= as one of them."
        )
    if match_value(values, control_value) < 0:
        warnings.warn(
            f"No cell has obs[{perturbation_key!r}] == {control_value!r} (values: {list(values[:5])}); "
            "there are no control cells.",
            ScflowlmWarning,
            stacklevel=4,
        )


def register(
    cls,
    adata: ad.AnnData,
    *,
    setup_method_args: dict,
    prompt_template: str,
    control_template: str | None,
    perturbation_key: str | None,
    control_value: Any,
    obsm_key: str,
    layer: str | None,
    context_keys: Sequence[str] | None,
    perturbation_embeddings: pd.DataFrame | str | None = None,
    combination_sep: str = "+",
    **kwargs,
) -> None:
    """Check ``adata`` and register its fields with ``cls`` (the body of ``setup_anndata``).

    Registers ``obsm[obsm_key]`` (the cell states) and, jointly as integer codes per column (scvi-tools'
    :class:`~scvi.data.fields.CategoricalJointObsField`), the template fields and the context columns: scvi-tools
    writes the codes to ``obsm["_scvi_condition"]`` and ``obsm["_scvi_context"]``. Records the keys in
    ``adata.uns["scflowlm"]`` so that :mod:`scflowlm.tl` functions need not be told them again.
    """
    _check_states(adata, obsm_key, layer)
    if not isinstance(combination_sep, str):
        raise TypeError(f"combination_sep must be a string such as '+', got {combination_sep!r}.")
    builder = PromptBuilder(prompt_template, control_template, perturbation_key, control_value)
    context_keys = list(context_keys) if context_keys is not None else builder.context_fields
    _check_fields(adata, builder, context_keys)
    _check_repeated_singles(adata, perturbation_key, combination_sep)
    # the registry keeps the vectors themselves (not a uns key): a load needs no AnnData to rebuild the model
    setup_method_args["setup_args"]["perturbation_embeddings"] = check_embeddings(
        adata,
        perturbation_embeddings,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combination_sep=combination_sep,
    )
    _check_distinct_prompts(adata, builder)
    _check_controls(adata, perturbation_key, control_value)
    fields = [ObsmField(REGISTRY_KEYS.X_KEY, obsm_key)]
    if builder.fields:
        fields.append(CategoricalJointObsField(REGISTRY_KEYS.CONDITION_KEY, builder.fields))
    if context_keys:
        fields.append(CategoricalJointObsField(REGISTRY_KEYS.CONTEXT_KEY, context_keys))
    if kwargs.get("source_registry") is not None and not kwargs.get("extend_categories"):
        check_against_registry(adata, kwargs["source_registry"], builder.fields, context_keys)
    manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
    try:
        with quiet_loggers("scvi.data.fields"):  # "Generating sequential column names"
            manager.register_fields(adata, **kwargs)
    except ValueError as err:
        if "source_registry" in kwargs:
            raise ValueError(f"This AnnData does not match the one the model was trained on: {err}") from err
        raise
    cls.register_manager(manager)
    adata.uns[UNS_KEY] = PredictionRecord(
        condition_keys=builder.fields,
        perturbation_key=perturbation_key,
        control_value=control_value,
        combination_sep=combination_sep,
        obsm_key=obsm_key,
    ).to_uns()


def check_embeddings(
    adata: ad.AnnData,
    embeddings: pd.DataFrame | str | None,
    *,
    perturbation_key: str | None,
    control_value: Any,
    combination_sep: str,
) -> pd.DataFrame | None:
    """The gene vectors of ``setup_anndata(perturbation_embeddings=...)``, checked and named as the column's singles.

    :func:`scflowlm.data.check_gene_vectors` checks the table; the names are read by the perturbation column's type
    (:meth:`scflowlm.data.ConditionTable.align_vectors`); one warning names the perturbations with cells but no vector.
    """
    if embeddings is None:
        return None
    vectors = check_gene_vectors(embeddings, uns=adata.uns)
    table, _ = ConditionTable.from_obs(
        adata.obs,
        [perturbation_key] if perturbation_key is not None else [],
        perturbation_key=perturbation_key,
        control_value=control_value,
        combination_sep=combination_sep,
    )
    vectors = table.align_vectors(vectors)
    missing = [s for s in table.singles() if s not in vectors.index]
    if missing:
        folded = {str(n).lower(): n for n in vectors.index}
        near = {s: folded[s.lower()] for s in missing if s.lower() in folded}
        hint = (
            f" Vectors named like them in another case: {near}; rename them as obs has them." if near else ""
        )
        warnings.warn(
            f"{len(missing)} of the {len(table.singles())} perturbations with cells have no vector in "
            f"perturbation_embeddings: {missing[:10]}{' ...' if len(missing) > 10 else ''}. The condition encoder "
            f"learns them from their cells alone.{hint}",
            ScflowlmWarning,
            stacklevel=4,
        )
    return vectors


def registered_categories(registry: dict, key: str) -> dict[str, np.ndarray]:
    """Per column, the values of a registered joint categorical field (typed), ``{}`` if it was not registered."""
    state = registry["field_registries"].get(key, {}).get("state_registry", {})
    return {k: np.asarray(v) for k, v in state.get("mappings", {}).items()}


def check_against_registry(
    adata: ad.AnnData, registry: dict, fields: Sequence[str], context_keys: Sequence[str]
) -> None:
    """Raise a ValueError naming the obs values a saved model's registry lacks."""
    problems = []
    for key in (REGISTRY_KEYS.CONDITION_KEY, REGISTRY_KEYS.CONTEXT_KEY):
        for col, cats in registered_categories(registry, key).items():
            unseen = [v for v in pd.unique(adata.obs[col]) if match_value(cats, v) < 0]
            if unseen:
                problems.append(
                    f"obs[{col!r}] has value(s) {sorted(map(str, unseen))[:5]} the model was not trained on"
                )
    if problems:
        raise ValueError(
            "This AnnData does not match the one the model was trained on: "
            + "; ".join(dict.fromkeys(problems))
            + ". Load the model with AnnData of the training conditions (a subset is fine) and generate new "
            "conditions with predict_perturbation()."
        )
