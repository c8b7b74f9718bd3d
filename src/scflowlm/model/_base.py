"""The AnnData side shared by the flow models: registration, training, the bridge to the torch module."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.model.base import BaseModelClass

from scflowlm._constants import REGISTRY_KEYS
from scflowlm._utils import check_choice, check_fraction, group_means
from scflowlm.data import ConditionCatalog, ConditionTable, PromptBuilder
from scflowlm.module import FlowData

from ._adapt import AdaptMixin
from ._gene_map import GeneMap
from ._generation import GenerationMixin
from ._registration import SetupMixin
from ._save_load import SaveLoadMixin
from ._setup import registered_categories
from ._sources import SourceMixin
from ._training import TrainingMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    import pandas as pd

    from scflowlm.module import FlowModuleBase

__all__ = ["FlowModelBase"]


#: the head starts a control-source flow can take (``start_shift`` of the models)
START_SHIFTS = ("auto", "none", "additive", "nearest_context")
#: where ``"nearest_context"`` training flows start (``shift_training`` of the models)
SHIFT_TRAININGS = ("held_out", "own")


class FlowModelBase(
    SetupMixin, AdaptMixin, TrainingMixin, GenerationMixin, SourceMixin, SaveLoadMixin, BaseModelClass
):
    """Shared AnnData handling of :class:`~scflowlm.model.CaLMFlowModel` and :class:`~scflowlm.model.CFMModel`.

    ``__init__`` is one template: read the registry and the cells (:meth:`_init_data`), resolve the source, then
    let the subclass build its module from one :class:`~scflowlm.module.FlowData` (:meth:`_module_data`). A
    subclass implements four hooks:

    - :meth:`_build_module`: its torch module, from its own init parameters;
    - :meth:`_condition_inputs`: what conditions the module besides field codes (prompts, covariates);
    - :meth:`_sample_states`: the one call into the module that a prediction makes;
    - :meth:`_saved_params` (optional): init parameters a load needs besides the given ones.
    """

    #: whether a control-source model also learns the identity flows of control cells
    control_targets: bool = True

    def __init__(self, adata: ad.AnnData | None, registry: dict | None, init_params: dict):
        super().__init__(adata, registry)
        self.init_params_ = init_params
        params = init_params["non_kwargs"]
        check_fraction("head_start_dropout", params["head_start_dropout"])
        penalty = params.get("head_start_penalty", 0.0)
        if (
            isinstance(penalty, bool)
            or not isinstance(penalty, numbers.Real)
            or not np.isfinite(penalty)
            or penalty < 0
        ):
            raise ValueError(f"head_start_penalty must be a finite number >= 0, got {penalty!r}.")
        loading = params["condition_codes"] is not None
        #: the head start asked for (``"auto"`` is resolved on the registered data; an adapted model resolves it again)
        self.start_shift_requested_ = params["start_shift"]
        self._init_data(adata, params["condition_codes"])
        source = self._init_source(
            params["source"],
            loading=loading,
            start_shift=params["start_shift"],
            shift_training=params["shift_training"],
            control_targets=params["control_targets"],
            combination_scale=params.get("combination_scale", 1.0),
        )
        self.module = self._build_module(source, params, loading=loading)
        # what load() needs to rebuild the same model: the training conditions, the resolved source (a load with
        # other cells must not resolve "auto" again) and whatever the subclass adds
        params |= {
            "condition_codes": self.condition_table.codes.tolist(),
            "source": source,
            "start_shift": self.start_shift,
        }
        params |= self._saved_params()
        n_params = sum(p.numel() for p in self.module.parameters()) / 1e6
        self._model_summary_string = (
            f"{self._describe()} ({n_params:.2f} M parameters), source {source}, "
            f"{len(self.condition_table)} training conditions."
        )

    # ------------------------------------------------------------------ the subclass's hooks
    def _build_module(self, source: str, params: dict, *, loading: bool) -> FlowModuleBase:
        """The torch module, built from :meth:`_module_data` (``loading``: a placeholder of the right sizes)."""
        raise NotImplementedError

    def _condition_inputs(self, in_head_start: np.ndarray) -> dict[str, torch.Tensor]:
        """The module's conditioning inputs besides field codes (``prompt_ids``/``prompt_mask``, ``covariates``).

        ``in_head_start``: ``[C, P]`` which singles of each registered condition its head start holds.
        """
        raise NotImplementedError

    def _describe(self) -> str:
        """The architecture in a few words (the start of the model's summary)."""
        raise NotImplementedError

    def _saved_params(self) -> dict:
        """Init parameters to save beyond those given (e.g. a backbone as a config)."""
        return {}

    # ------------------------------------------------------------------ what the model knows
    @property
    def _setup_args(self) -> dict:
        """The arguments ``setup_anndata`` was called with."""
        return self.registry_["setup_args"]

    @property
    def condition_table(self):
        """The registered conditions (:attr:`catalog`'s table)."""
        return self.catalog.table

    @property
    def prompt_builder(self) -> PromptBuilder:
        """What renders the prompts (:attr:`catalog`'s)."""
        return self.catalog.builder

    @property
    def prompts(self) -> list[str]:
        """The prompt of every registered condition."""
        return self.catalog.prompts()

    @property
    def vocabulary(self) -> list[str]:
        """The single perturbations the condition encoder knows (its rows), sorted: registered or with a vector."""
        return self.catalog.vocabulary

    @property
    def perturbation_embeddings(self) -> pd.DataFrame | None:
        """The gene vectors given to ``setup_anndata`` (perturbation name -> vector), or ``None``."""
        return self.catalog.vectors

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
        builder = PromptBuilder(
            args["prompt_template"], args["control_template"], args["perturbation_key"], args["control_value"]
        )
        fields = builder.fields
        cats = registered_categories(self.registry_, REGISTRY_KEYS.CONDITION_KEY)
        cell_codes = self._registered_codes(REGISTRY_KEYS.CONDITION_KEY) if adata is not None else None
        if condition_codes is None:
            codes = cell_codes if cell_codes is not None else np.zeros((1, 0), dtype=np.int64)
            table = ConditionTable.from_codes(
                fields,
                cats,
                codes,
                perturbation_key=args["perturbation_key"],
                control_value=args["control_value"],
                combination_sep=args.get("combination_sep", "+"),
            )
        else:
            table = ConditionTable(
                fields,
                cats,
                np.asarray(condition_codes),
                args["perturbation_key"],
                args["control_value"],
                args.get("combination_sep", "+"),
            )
            if cell_codes is not None and fields:
                new = {tuple(r) for r in np.unique(cell_codes, axis=0)} - set(table._index)
                if new:
                    raise ValueError(
                        f"This AnnData does not match the one the model was trained on: {len(new)} condition(s) were "
                        "not registered in training. Load the model with AnnData of the training conditions (a subset "
                        "is fine) and generate new conditions with predict_perturbation()."
                    )
        self.catalog = ConditionCatalog(table, builder, args.get("perturbation_embeddings"))
        self.context_keys = list(args.get("context_keys") or builder.context_fields)
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
        self,
        source: str,
        *,
        loading: bool,
        start_shift: str,
        shift_training: str,
        control_targets: bool,
        combination_scale: float | str = 1.0,
    ) -> str:
        """Resolve ``source`` (returned) and set the options of control-source flows, checked.

        A noise source has no control cells, so its head start is always ``"none"``.
        """
        source = self._resolve_source(source, loading=loading)
        check_choice("start_shift", start_shift, START_SHIFTS)
        if source != "control":  # no control cells to start from
            start_shift = "none"
        elif start_shift == "auto":  # combinations, or gene vectors that a single's head start is fitted on
            catalog = self.catalog
            start_shift = (
                "additive" if catalog.has_combinations() or catalog.vectors_cover_singles() else "none"
            )
        self.start_shift = start_shift
        self.shift_training = check_choice("shift_training", shift_training, SHIFT_TRAININGS)
        if combination_scale != "fit" and (
            isinstance(combination_scale, bool)
            or not isinstance(combination_scale, numbers.Real)
            or not np.isfinite(combination_scale)
            or combination_scale <= 0
        ):
            raise ValueError(
                f"combination_scale must be 'fit' or a number > 0 (1: the plain sum of the singles), got "
                f"{combination_scale!r}."
            )
        self.combination_scale = combination_scale
        self.control_targets = bool(control_targets)
        return source

    #: the ridge penalty of a single's head start from its gene vector (``"loo"``: :func:`scflowlm.data.choose_alpha`)
    _vector_alpha: float | str = "loo"

    def _head_start(
        self, conditions, means: np.ndarray, members: np.ndarray, *, training: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Head start ``[n, D]`` and which singles it holds ``[n, P]`` (:meth:`scflowlm.data.ConditionCatalog.head_start`).

        With this model's ``start_shift``, ``combination_scale`` and, in training with ``shift_training="own"``,
        each training condition's own shift.
        """
        return self.catalog.head_start(
            conditions,
            means,
            members,
            mode=self.start_shift,
            combination_scale=self.combination_scale,
            own_in_training=training and self.shift_training == "own",
            vector_alpha=self._vector_alpha,
        )

    # ------------------------------------------------------------------ registered cells
    def _registered(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A registered field's values (re-registered first if another ``setup_anndata`` changed the AnnData)."""
        self.adata_manager.validate()
        values = np.asarray(self.adata_manager.get_from_registry(key))
        return values if rows is None else values[rows]

    def _cell_conditions(self) -> np.ndarray:
        """Condition (row of :attr:`condition_table`) of every registered cell."""
        return self.condition_table.rows_of_codes(self._registered_codes(REGISTRY_KEYS.CONDITION_KEY))

    def _registered_codes(self, key: str) -> np.ndarray:
        """Per-cell codes ``[n, F]`` of a joint categorical field (``[n, 0]`` when it has no columns)."""
        if not registered_categories(self.registry_, key):
            return np.zeros((self.adata.n_obs, 0), dtype=np.int64)
        return self._registered(key).astype(np.int64)

    def _cell_is_control(self) -> np.ndarray:
        """``[n]`` whether each registered cell is a control cell."""
        control = self.condition_table.control_mask()  # [C]
        return control[self._cell_conditions()] if len(control) else np.zeros(self.adata.n_obs, dtype=bool)

    # ------------------------------------------------------------------ the module's data
    def _module_data(
        self, rows: np.ndarray | None = None, *, mean_rows: np.ndarray | None = None, loading: bool = False
    ) -> FlowData:
        """What the module knows of the registered cells in ``rows`` (default: all), as one object.

        Standardisation statistics, contexts and control pool of those cells, the mean state of each condition over
        ``mean_rows`` (default: ``rows``; in training the cells not held out, validation cells included, so the head
        start is estimated from every measured cell) and its head start, and the subclass's conditioning inputs.
        ``loading``: only the conditions and inputs, with empty statistics that the saved ``state_dict`` replaces
        (a load needs no cells).
        """
        table = self.condition_table
        every = [table.condition(i) for i in range(len(table))]
        members = self.catalog.members(every)  # [C, P]
        conditions = {
            "condition_codes": torch.as_tensor(table.codes),
            "n_categories": [len(table.categories[f]) for f in table.fields],
            "condition_is_control": torch.as_tensor(table.control_mask()),
            "members": torch.as_tensor(members),
        }
        vectors = self.catalog.single_vectors()
        if vectors is not None:
            conditions["single_vectors"] = torch.as_tensor(vectors)
        if loading:  # the saved state_dict replaces every placeholder
            in_head_start = np.zeros(members.shape, dtype=bool)
            placeholders = {
                "in_head_start": torch.as_tensor(in_head_start),
                "known_singles": torch.zeros(len(self.vocabulary), dtype=torch.bool),
            }
            empty = FlowData.empty(self.n_features)
            return dataclasses.replace(
                empty, **conditions, **placeholders, **self._condition_inputs(in_head_start)
            )
        rows = np.arange(self.adata.n_obs) if rows is None else np.asarray(rows)
        x = self._registered(REGISTRY_KEYS.X_KEY, rows).astype(np.float64)  # [n, D]
        if getattr(self, "standardization_", None) is not None:  # an adapted model keeps its reference's
            mean, scale = (
                np.asarray(self.standardization_[0], dtype=np.float64),
                float(self.standardization_[1]),
            )
        else:
            mean = x.mean(0)
            scale = math.sqrt(max(float(((x - mean) ** 2).mean()), 1e-12))
        cats = registered_categories(self.registry_, REGISTRY_KEYS.CONTEXT_KEY)
        ctx_codes = self._registered_codes(REGISTRY_KEYS.CONTEXT_KEY)
        contexts = ConditionTable.from_codes(list(cats), cats, ctx_codes)  # ordered by value
        pool = rows[self._cell_is_control()[rows]]  # the control cells among rows
        cell_conditions = self._cell_conditions()[rows]
        mean_rows = rows if mean_rows is None else np.asarray(mean_rows)
        means = group_means(
            self._registered(REGISTRY_KEYS.X_KEY, mean_rows).astype(np.float64),
            self._cell_conditions()[mean_rows],
            len(table),
        )  # [C, D]
        if getattr(self, "reference_means_", None) is not None:  # what an adapted model's reference measured
            means = np.where(np.isfinite(means), means, self.reference_means_)
        known = np.zeros(len(self.vocabulary), dtype=bool)  # singles perturbed in these cells
        trained = members[np.unique(cell_conditions)]
        known[trained[trained >= 0]] = True
        if getattr(self, "reference_known_", None) is not None:
            known |= np.asarray(self.reference_known_, dtype=bool)
        shift, in_head_start = self._head_start(every, means, members, training=True)
        return FlowData(
            **conditions,
            context_codes=torch.as_tensor(contexts.codes),
            n_context_categories=[len(cats[k]) for k in cats],
            x_mean=torch.as_tensor(mean, dtype=torch.float32),
            x_scale=torch.tensor(scale, dtype=torch.float32),
            control_x=torch.as_tensor(self._registered(REGISTRY_KEYS.X_KEY, pool), dtype=torch.float32),
            control_context=torch.as_tensor(contexts.rows_of_codes(ctx_codes[pool])),
            condition_means=torch.as_tensor(means),
            condition_shift=torch.as_tensor(shift, dtype=torch.float32),
            in_head_start=torch.as_tensor(in_head_start),
            known_singles=torch.as_tensor(known),
            **self._condition_inputs(in_head_start),
        )
