"""The AnnData side shared by the flow models: registration, training, the bridge to the torch module."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scvi.model.base import BaseModelClass

from scflowlm._constants import REGISTRY_KEYS
from scflowlm.data import ConditionTable, PromptBuilder
from scflowlm.train import (
    FlowTrainingPlan,
)

from ._gene_map import GeneMap
from ._generation import GenerationMixin
from ._save_load import SaveLoadMixin
from ._setup import register, registered_categories
from ._shift import condition_means, nearest_context_shifts, own_shifts
from ._sources import SourceMixin
from ._training import TrainingMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    import pandas as pd

__all__ = ["FlowModelBase"]


def _rows_of(table: ConditionTable, codes: np.ndarray) -> np.ndarray:
    """Row of ``table`` of every row of per-cell codes ``[n, F]`` (``-1`` for a combination not in it)."""
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # [n] one integer per combination (mixed radix): a 1-D unique is about 10x faster than axis=0 at 1M cells
    keys = np.zeros(len(codes), dtype=np.int64)
    for column in codes.T:
        column = column - column.min()
        keys = keys * (int(column.max()) + 1) + column
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return np.array([table.index_of(codes[i]) for i in first], dtype=np.int64)[inverse.reshape(-1)]


#: the head starts a control-source flow can take (see ``start_shift`` of the models)
START_SHIFTS = ("none", "nearest_context")
#: where training flows with a head start begin (see ``shift_training`` of the models)
SHIFT_TRAININGS = ("held_out", "own")


class FlowModelBase(TrainingMixin, GenerationMixin, SourceMixin, SaveLoadMixin, BaseModelClass):
    """Shared AnnData handling of :class:`~scflowlm.model.CaLMFlowModel` and :class:`~scflowlm.model.CFMModel`.

    A subclass calls :meth:`_init_data` in ``__init__``, builds ``self.module`` (a
    :class:`~scflowlm.module.FlowModuleBase`), then calls :meth:`_init_module`; it implements
    :meth:`_sample_states`, the one call into the module that a prediction makes.
    """

    _training_plan_cls = FlowTrainingPlan
    #: head start of control-source flows, set by a subclass's ``start_shift`` argument
    start_shift: str = "none"
    #: where training flows start with a head start: ``"held_out"`` estimates or their ``"own"`` shift
    shift_training: str = "held_out"
    #: whether a control-source model also learns the identity flows of control cells
    control_targets: bool = True

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        *,
        prompt_template: str,
        control_template: str | None = None,
        perturbation_key: str | None = None,
        control_value: Any = None,
        obsm_key: str = "X_pca",
        layer: str | None = None,
        context_keys: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData: which obs columns make the prompt and where the cell states are.

        Parameters
        ----------
        adata
            Cells x genes; ``adata.obsm[obsm_key]`` holds the cell states (PCA coordinates).
        prompt_template
            Prompt with obs column names in braces, e.g.
            ``"Generate a {cell_type} cell stimulated with {condition}:"``.
        control_template
            Prompt used for control cells (``obs[perturbation_key] == control_value``), e.g.
            ``"Generate an unstimulated {cell_type} cell:"``.
        perturbation_key
            The obs column with the perturbation.
        control_value
            The label of control cells in ``obs[perturbation_key]``, of the column's type (a number for a
            numeric column).
        obsm_key
            Key of the cell states in ``adata.obsm`` (make them with :func:`scanpy.pp.pca`).
        layer
            Layer with the expression that the PCA was computed from (``None``: ``adata.X``); used to map
            generated states back to genes.
        context_keys
            obs columns that define a cell's context (which control cells a perturbed cell starts from with
            ``source="control"``); defaults to the template fields other than ``perturbation_key``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).

        Notes
        -----
        Checks the inputs (finite states and expression, read in chunks for a backed AnnData; template fields
        present and without missing values; control cells present; distinct conditions get distinct prompts).
        Writes the integer codes of the template fields and context columns to ``adata.obsm["_scvi_condition"]``
        and ``adata.obsm["_scvi_context"]``, scvi-tools' registry entries and ``adata.uns["scflowlm"]`` (the keys,
        for :mod:`scflowlm.tl`); nothing else of ``adata`` changes.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        register(
            cls,
            adata,
            setup_method_args=setup_method_args,
            prompt_template=prompt_template,
            control_template=control_template,
            perturbation_key=perturbation_key,
            control_value=control_value,
            obsm_key=obsm_key,
            layer=layer,
            context_keys=context_keys,
            **kwargs,
        )

    # ------------------------------------------------------------------ what the model knows
    @property
    def _setup_args(self) -> dict:
        """The arguments ``setup_anndata`` was called with."""
        return self.registry_["setup_args"]

    @property
    def conditions(self) -> pd.DataFrame:
        """The registered conditions, one row each (typed values of the template fields)."""
        return self.condition_table.frame()

    @property
    def gene_map(self) -> GeneMap:
        """The map between states and genes (saved as ``loadings_``, ``gene_means_``, ``var_names_``)."""
        return GeneMap(self.loadings_, self.gene_means_, self.var_names_)

    def _init_data(self, adata: ad.AnnData | None, condition_codes: Sequence[Sequence[int]] | None) -> None:
        """Read what every model needs from the registry and the AnnData (not the module).

        ``condition_codes``: the condition table of the training data (``None`` on first build: from ``adata``).
        """
        args = self._setup_args
        self.prompt_builder = PromptBuilder(
            args["prompt_template"], args["control_template"], args["perturbation_key"], args["control_value"]
        )
        fields = self.prompt_builder.fields
        cats = registered_categories(self.registry_, REGISTRY_KEYS.CONDITION_KEY)
        cell_codes = self._registered_codes(REGISTRY_KEYS.CONDITION_KEY) if adata is not None else None
        if condition_codes is None:
            codes = cell_codes if cell_codes is not None else np.zeros((1, 0), dtype=np.int64)
            self.condition_table = ConditionTable.from_codes(
                fields,
                cats,
                codes,
                perturbation_key=args["perturbation_key"],
                control_value=args["control_value"],
            )
        else:
            self.condition_table = ConditionTable(
                fields, cats, np.asarray(condition_codes), args["perturbation_key"], args["control_value"]
            )
            if cell_codes is not None and fields:
                new = {tuple(r) for r in np.unique(cell_codes, axis=0)} - set(self.condition_table._index)
                if new:
                    raise ValueError(
                        f"This AnnData does not match the one the model was trained on: {len(new)} condition(s) were "
                        "not registered in training. Load the model with AnnData of the training conditions (a subset "
                        "is fine) and generate new conditions with predict_perturbation()."
                    )
        table = self.condition_table
        self.prompts = [self.prompt_builder.render(table.condition(i)) for i in range(len(table))]
        self.context_keys = list(args.get("context_keys") or self.prompt_builder.context_fields)
        self.train_conditions_ = list(range(len(table)))
        self.n_features = len(
            self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"]
        )
        # a load restores the saved ones after __init__
        self.loadings_ = self.gene_means_ = self.var_names_ = None
        if adata is not None and condition_codes is None:
            gene_map = GeneMap.from_anndata(
                adata, n_features=self.n_features, obsm_key=args["obsm_key"], layer=args["layer"]
            )
            self.loadings_, self.gene_means_, self.var_names_ = (
                gene_map.loadings,
                gene_map.means,
                gene_map.var_names,
            )

    def _resolve_source(self, source: str, *, loading: bool = False) -> str:
        """``"auto"`` -> ``"control"`` when control cells are registered, else ``"noise"``; checks the others.

        A saved model records the resolved source; ``loading`` accepts it for an AnnData without control cells
        (predictions then need ``source=``).
        """
        if source not in ("auto", "noise", "control"):
            raise ValueError(f"source must be 'auto', 'noise' or 'control', got {source!r}.")
        has_controls = self._setup_args["control_value"] is not None
        if has_controls and self.adata is not None:
            has_controls = bool(self._cell_is_control().any())
        if source == "auto":
            return "control" if has_controls else "noise"
        if source == "control" and not has_controls and self.adata is not None and not loading:
            raise ValueError(
                "source='control' needs control cells: setup_anndata(..., perturbation_key=, control_value=) "
                "with at least one cell of the control value."
            )
        return source

    def _init_source(
        self, source: str, *, loading: bool, start_shift: str, shift_training: str, control_targets: bool
    ) -> str:
        """Resolve ``source`` (returned) and set the options of control-source flows, checked.

        A noise source has no control cells, so its head start is always ``"none"``.
        """
        source = self._resolve_source(source, loading=loading)
        self._check_choice("start_shift", start_shift, START_SHIFTS)
        self.start_shift = start_shift if source == "control" else "none"
        self.shift_training = self._check_choice("shift_training", shift_training, SHIFT_TRAININGS)
        self.control_targets = bool(control_targets)
        return source

    @staticmethod
    def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
        """``value`` if it is one of ``choices``, else a ValueError naming the argument."""
        if value not in choices:
            raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
        return value

    def _init_module(self) -> None:
        """Give the new module the condition and context tables, then standardisation and control pool."""
        table = self.condition_table
        n_cats = [len(table.categories[f]) for f in table.fields]
        is_control = [table.is_control(table.condition(i)) for i in range(len(table))]
        self.module.set_conditions(table.codes, n_cats, is_control)
        if self.adata is not None:
            self._prepare_module()

    # ------------------------------------------------------------------ registered cells
    def _registered(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A registered field's values (re-registered first if another ``setup_anndata`` changed the AnnData)."""
        self.adata_manager.validate()
        values = np.asarray(self.adata_manager.get_from_registry(key))
        return values if rows is None else values[rows]

    def _cell_conditions(self) -> np.ndarray:
        """Condition (row of :attr:`condition_table`) of every registered cell."""
        return _rows_of(self.condition_table, self._registered_codes(REGISTRY_KEYS.CONDITION_KEY))

    def _registered_codes(self, key: str) -> np.ndarray:
        """Per-cell codes ``[n, F]`` of a joint categorical field (``[n, 0]`` when it has no columns)."""
        if not registered_categories(self.registry_, key):
            return np.zeros((self.adata.n_obs, 0), dtype=np.int64)
        return self._registered(key).astype(np.int64)

    def _cell_is_control(self) -> np.ndarray:
        """``[n]`` whether each registered cell is a control cell."""
        control = self.condition_table.control_mask()  # [C]
        return control[self._cell_conditions()] if len(control) else np.zeros(self.adata.n_obs, dtype=bool)

    def _prepare_module(self, rows: np.ndarray | None = None) -> None:
        """Standardisation, contexts and control pool from the cells in ``rows`` (default: all registered cells)."""
        x = self._registered(REGISTRY_KEYS.X_KEY, rows).astype(np.float64)  # [n, D]
        mean = x.mean(0)
        scale = math.sqrt(max(float(((x - mean) ** 2).mean()), 1e-12))
        self.module.set_standardization(torch.as_tensor(mean, dtype=torch.float32), scale)
        cats = registered_categories(self.registry_, REGISTRY_KEYS.CONTEXT_KEY)
        ctx_codes = self._registered_codes(REGISTRY_KEYS.CONTEXT_KEY)
        contexts = ConditionTable.from_codes(list(cats), cats, ctx_codes)  # ordered by value
        self.module.set_contexts(contexts.codes, [len(cats[k]) for k in cats])
        keep = np.zeros(self.adata.n_obs, dtype=bool)
        keep[np.arange(self.adata.n_obs) if rows is None else rows] = True
        pool = np.nonzero(self._cell_is_control() & keep)[0]
        x_pool = torch.as_tensor(self._registered(REGISTRY_KEYS.X_KEY, pool), dtype=torch.float32)
        self.module.set_control_pool(x_pool, torch.as_tensor(_rows_of(contexts, ctx_codes[pool])))
        rows = np.arange(self.adata.n_obs) if rows is None else rows
        self.condition_means_ = condition_means(x, self._cell_conditions()[rows], len(self.condition_table))
        if self.start_shift != "none":
            table, args = self.condition_table, self._setup_args
            every = [table.condition(i) for i in range(len(table))]
            # "own": training flows start at their own shift, and the flow learns the shape
            if self.shift_training == "own":
                shift = own_shifts(
                    every,
                    self.condition_means_,
                    perturbation_key=args["perturbation_key"],
                    control_value=args["control_value"],
                )
            else:  # at the estimate they would get if held out: the flow learns to correct it
                shift = self._shifts(every)
            self.module.set_condition_shift(torch.as_tensor(shift, dtype=torch.float32))

    def _shifts(self, conditions: Sequence[dict[str, Any] | None]) -> np.ndarray:
        """Head start ``[T, D]`` of each condition (zeros without ``start_shift`` or for a raw prompt)."""
        out = np.zeros((len(conditions), self.n_features))
        known = [i for i, c in enumerate(conditions) if c is not None]
        if self.start_shift == "none" or self.module.source != "control" or not known:
            return out
        table, args = self.condition_table, self._setup_args
        out[known] = nearest_context_shifts(
            [table.condition(i) for i in range(len(table))],
            self.condition_means_,
            [conditions[i] for i in known],
            perturbation_key=args["perturbation_key"],
            control_value=args["control_value"],
        )
        return out
