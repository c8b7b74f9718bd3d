"""The AnnData side shared by the flow models: setup, training, prediction (the only AnnData -> tensor bridge)."""

from __future__ import annotations

import logging
import math
import os
import pickle
import signal
import threading
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, NumericalObsField, ObsmField
from scvi.dataloaders import DataSplitter
from scvi.model._utils import use_distributed_sampler
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner
from tqdm.auto import tqdm

from scflowlm._constants import (
    CONDITION_COL,
    CONTEXT_COL,
    CONTROL_COL,
    PROMPT_COL,
    REGISTRY_KEYS,
    SOURCE_OBSM,
    UNS_KEY,
)
from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import PromptBuilder

from ._training import (
    BestWeights,
    ExceptionRecorder,
    FlowTrainingPlan,
    LastCheckpoint,
    quiet_loggers,
    quiet_training,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

__all__ = ["FlowModelBase"]

#: joins the field values of a condition into one category label of ``obs[CONDITION_COL]``
SEP = " | "
#: the one condition label of a template without fields
NO_FIELDS = "<none>"

Condition = Mapping[str, Any]


def _dense_rows(X, rows: np.ndarray | slice) -> np.ndarray:
    """Rows of a dense, sparse or backed matrix as a dense float64 array."""
    block = X[rows]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float64)


def _column_means(X, *, chunk: int = 4096) -> np.ndarray:
    """Per-column means of a (possibly backed or sparse) matrix, read in chunks of rows."""
    n = X.shape[0]
    total = np.zeros(X.shape[1])
    for start in range(0, n, chunk):
        total += _dense_rows(X, slice(start, min(start + chunk, n))).sum(0)
    return total / n


def _check_finite(X, what: str, *, chunk: int = 4096) -> None:
    """Raise a ValueError naming how many cells (and the first) have NaN/inf in ``X``; reads ``chunk`` rows at a time."""
    n, bad, first = X.shape[0], 0, None
    for start in range(0, n, chunk):
        block = X[start : min(start + chunk, n)]
        if sp.issparse(block):
            block = sp.csr_matrix(block)
            rows = np.unique(np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))[~np.isfinite(block.data)])
        else:
            rows = np.nonzero(~np.isfinite(np.asarray(block)).all(1))[0]
        if len(rows):
            bad += len(rows)
            first = start + int(rows[0]) if first is None else first
    if bad:
        raise ValueError(
            f"{what} has NaN or infinite values in {bad} cells (first: row {first}); remove or impute them first."
        )


def _label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The category label of one condition: its values joined by :data:`SEP` (``"<none>"`` without keys)."""
    return SEP.join(str(values[k]) for k in keys) if keys else NO_FIELDS


def _labels(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """:func:`_label` for every row of ``frame``."""
    if not keys:
        return pd.Series(NO_FIELDS, index=frame.index)
    return frame[list(keys)].astype(str).agg(SEP.join, axis=1)


def _check_same_categories(obs: pd.DataFrame, fields: list[str], context_keys: list[str], registry: dict) -> None:
    """Raise a ValueError naming the obs values (and conditions) that a saved model's registry lacks."""
    states = registry["field_registries"]
    problems = []
    for key, cols, col in (
        (REGISTRY_KEYS.CONDITION_KEY, fields, CONDITION_COL),
        (REGISTRY_KEYS.CONTEXT_KEY, context_keys, CONTEXT_COL),
    ):
        known = [str(c) for c in states[key]["state_registry"]["categorical_mapping"]]
        new = sorted(set(obs[col].astype(str)) - set(known))
        if not new:
            continue
        table = pd.DataFrame([lab.split(SEP) for lab in known], columns=cols)
        for f in cols:
            unseen = sorted(set(obs[f].astype(str)) - set(table[f]))
            if unseen:
                problems.append(f"obs[{f!r}] has value(s) {unseen[:5]} the model was not trained on")
        if key == REGISTRY_KEYS.CONDITION_KEY:
            problems.append(f"{len(new)} condition(s) were not registered in training, e.g. {new[:3]}")
    if problems:
        raise ValueError(
            "This AnnData does not match the one the model was trained on: "
            + "; ".join(dict.fromkeys(problems))
            + ". Load the model with AnnData of the training conditions (a subset is fine) and generate new "
            "conditions with predict_perturbation()."
        )


class FlowModelBase(BaseModelClass):
    """Shared AnnData handling of :class:`~scflowlm.CaLMFlowModel` and :class:`~scflowlm.baselines.CFMModel`.

    A subclass builds ``self.module`` in ``__init__`` (after calling :meth:`_init_data`) and implements
    :meth:`_generate_std`, which maps standardised start states of one condition to standardised cells.
    """

    _training_plan_cls = FlowTrainingPlan

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        *,
        prompt_template: str,
        control_template: str | None = None,
        perturbation_key: str | None = None,
        control_value: str | None = None,
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
            The label of control cells in ``obs[perturbation_key]``.
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
        Writes ``adata.obs["_scflowlm_condition"]``, ``["_scflowlm_context"]`` and ``["_scflowlm_is_control"]``
        and scvi-tools' registry entries in ``adata.uns``; nothing else of ``adata`` changes.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
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
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"adata.layers[{layer!r}] is missing; layers are {list(adata.layers)}.")
        _check_finite(adata.layers[layer] if layer is not None else adata.X, f"adata.layers[{layer!r}]" if layer else "adata.X")

        builder = PromptBuilder(prompt_template, control_template, perturbation_key, control_value)
        missing = [f for f in builder.fields if f not in adata.obs.columns]
        if missing:
            raise KeyError(
                f"Template field(s) {missing} are not obs columns; available columns: {list(adata.obs.columns)}."
            )
        context_keys = list(context_keys) if context_keys is not None else builder.context_fields
        missing = [k for k in context_keys if k not in adata.obs.columns]
        if missing:
            raise KeyError(f"context_keys {missing} are not obs columns.")
        for f in dict.fromkeys(builder.fields + context_keys):
            col = adata.obs[f]
            if col.isna().any():
                raise ValueError(f"obs[{f!r}] has {int(col.isna().sum())} missing (NaN) values; fill or drop them.")
            values = col.astype(str)
            if values.str.contains(SEP, regex=False).any():
                raise ValueError(f"obs[{f!r}] values may not contain {SEP!r}.")
        if perturbation_key is not None and control_value is not None:
            if not (adata.obs[perturbation_key].astype(str) == str(control_value)).any():
                warnings.warn(
                    f"No cell has obs[{perturbation_key!r}] == {control_value!r}; there are no control cells.",
                    ScflowlmWarning,
                    stacklevel=2,
                )

        obs = adata.obs
        obs[CONDITION_COL] = pd.Categorical(_labels(obs, builder.fields))
        obs[CONTEXT_COL] = pd.Categorical(_labels(obs, context_keys))
        if perturbation_key is not None and control_value is not None:
            obs[CONTROL_COL] = (obs[perturbation_key].astype(str) == str(control_value)).astype(np.float32)
        else:
            obs[CONTROL_COL] = np.float32(0.0)

        fields = [
            ObsmField(REGISTRY_KEYS.X_KEY, obsm_key),
            CategoricalObsField(REGISTRY_KEYS.CONDITION_KEY, CONDITION_COL),
            CategoricalObsField(REGISTRY_KEYS.CONTEXT_KEY, CONTEXT_COL),
            NumericalObsField(REGISTRY_KEYS.CONTROL_KEY, CONTROL_COL),
        ]
        if kwargs.get("source_registry") is not None:
            _check_same_categories(obs, builder.fields, context_keys, kwargs["source_registry"])
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        try:
            with quiet_loggers("scvi.data.fields"):  # "Generating sequential column names"
                adata_manager.register_fields(adata, **kwargs)
        except ValueError as err:
            if "source_registry" in kwargs:
                raise ValueError(f"This AnnData does not match the one the model was trained on: {err}") from err
            raise
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ init helpers
    @property
    def _setup_args(self) -> dict:
        """The arguments ``setup_anndata`` was called with."""
        return self.registry_["setup_args"]

    def _categories(self, key: str) -> list[str]:
        return list(self.registry_["field_registries"][key]["state_registry"]["categorical_mapping"])

    def _init_data(self, adata: ad.AnnData | None) -> None:
        """Read what every model needs from the registry and the AnnData (not the module)."""
        args = self._setup_args
        self.prompt_builder = PromptBuilder(
            args["prompt_template"], args["control_template"], args["perturbation_key"], args["control_value"]
        )
        fields = self.prompt_builder.fields
        labels = self._categories(REGISTRY_KEYS.CONDITION_KEY)
        self.conditions = pd.DataFrame(  # row = condition code, one column per template field
            [lab.split(SEP) if fields else [] for lab in labels], columns=fields, index=range(len(labels))
        )
        self.condition_labels = labels
        self.contexts = self._categories(REGISTRY_KEYS.CONTEXT_KEY)
        self.prompts = [self.prompt_builder.render(self.conditions.iloc[i].to_dict()) for i in range(len(labels))]
        self.context_keys = list(args["context_keys"]) if args.get("context_keys") is not None else self.prompt_builder.context_fields
        x_state = self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
        self.n_features = len(x_state["column_names"])
        if adata is not None:
            self._set_gene_map(adata)

    def _resolve_source(self, source: str) -> str:
        """``"auto"`` -> ``"control"`` when control cells are registered, else ``"noise"``; checks the others."""
        if source not in ("auto", "noise", "control"):
            raise ValueError(f"source must be 'auto', 'noise' or 'control', got {source!r}.")
        has_controls = self._setup_args["control_value"] is not None
        if has_controls and self.adata is not None:
            has_controls = bool((self._registered(REGISTRY_KEYS.CONTROL_KEY) > 0.5).any())
        if source == "auto":
            return "control" if has_controls else "noise"
        if source == "control" and not has_controls:
            raise ValueError(
                "source='control' needs control cells: setup_anndata(..., perturbation_key=, control_value=) "
                "with at least one cell of the control value."
            )
        return source

    def _set_gene_map(self, adata: ad.AnnData) -> None:
        """Store what maps states back to genes: ``loadings_`` [G, D] and ``gene_means_`` [G]."""
        D = self.n_features
        pcs = adata.varm.get("PCs") if hasattr(adata, "varm") else None
        if pcs is not None and np.asarray(pcs).shape == (adata.n_vars, D):
            layer = self._setup_args["layer"]
            X = adata.layers[layer] if layer is not None else adata.X
            self.loadings_ = np.asarray(pcs, dtype=np.float32)
            self.gene_means_ = _column_means(X).astype(np.float32)
        else:
            self.loadings_ = None
            self.gene_means_ = None
            warnings.warn(
                f"adata.varm['PCs'] with shape ({adata.n_vars}, {D}) is missing: predictions will hold the "
                f"{D} state coordinates as variables instead of genes.",
                ScflowlmWarning,
                stacklevel=3,
            )

    def _registered(self, key: str, indices: np.ndarray | None = None) -> np.ndarray:
        values = np.asarray(self.adata_manager.get_from_registry(key))
        return values if indices is None else values[indices]

    def _prepare_module(self, indices: np.ndarray | None = None) -> None:
        """Standardisation and control pool from the cells in ``indices`` (default: all registered cells)."""
        x = self._registered(REGISTRY_KEYS.X_KEY, indices).astype(np.float64)  # [n, D]
        mean = x.mean(0)
        scale = math.sqrt(max(float(((x - mean) ** 2).mean()), 1e-12))
        self.module.set_standardization(torch.as_tensor(mean, dtype=torch.float32), scale)
        self._set_control_pool(indices)

    def _set_control_pool(self, indices: np.ndarray | None = None) -> None:
        is_ctrl = self._registered(REGISTRY_KEYS.CONTROL_KEY).reshape(-1) > 0.5
        keep = np.zeros_like(is_ctrl)
        keep[np.arange(len(is_ctrl)) if indices is None else indices] = True
        rows = np.nonzero(is_ctrl & keep)[0]
        x = self._registered(REGISTRY_KEYS.X_KEY, rows).astype(np.float32)
        ctx = self._registered(REGISTRY_KEYS.CONTEXT_KEY, rows).reshape(-1)
        self.module.set_control_pool(torch.as_tensor(x), torch.as_tensor(ctx))

    # ------------------------------------------------------------------ training
    def _holdout_mask(self, holdout: Condition | Sequence[Condition] | None) -> np.ndarray:
        obs = self.adata.obs
        mask = np.zeros(self.adata.n_obs, dtype=bool)
        if holdout is None:
            return mask
        for cond in [holdout] if isinstance(holdout, Mapping) else holdout:
            unknown = sorted(set(cond) - set(obs.columns))
            if unknown:
                raise KeyError(f"holdout condition {dict(cond)} names unknown obs column(s) {unknown}.")
            hit = np.ones(self.adata.n_obs, dtype=bool)
            for k, v in cond.items():
                hit &= (obs[k].astype(str) == str(v)).to_numpy()
            if not hit.any():
                raise ValueError(f"holdout condition {dict(cond)} matches no cell.")
            mask |= hit
        return mask

    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        holdout: Condition | Sequence[Condition] | None = None,
        train_size: float = 0.9,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        gradient_clip_val: float = 1.0,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        keep_best: bool = True,
        checkpoint_dir: str | None = None,
        ckpt_path: str | None = None,
        verbose: bool = False,
        **trainer_kwargs,
    ) -> None:
        """Train with teacher forcing (simulation-free), through scvi-tools and Lightning.

        Parameters
        ----------
        max_epochs
            Passes over the training cells; default: about 4,000 optimisation steps, between 20 and 1,000 epochs.
        batch_size
            Cells per minibatch.
        lr
            Peak learning rate (AdamW, linear warm-up then cosine decay).
        weight_decay
            AdamW weight decay.
        holdout
            Condition dict(s) (obs column -> value) whose cells are excluded from training and validation,
            e.g. ``[{"cell_type": "k562", "condition": "KLF1+MAP2K6"}]``; they become the test set.
        train_size, validation_size
            Split of the remaining cells (scvi-tools' :class:`~scvi.dataloaders.DataSplitter`).
        accelerator, devices
            Lightning device settings; ``strategy="ddp"`` etc. go in ``trainer_kwargs`` (see Notes).
        early_stopping
            Stop when the validation loss stops improving.
        gradient_clip_val
            Gradient norm clipping.
        plan_kwargs
            Extra :class:`~scflowlm.model.FlowTrainingPlan` arguments.
        datasplitter_kwargs
            Extra :class:`~scvi.dataloaders.DataSplitter` arguments.
        keep_best
            Keep the weights of the best validation loss (training loss without a validation set) in memory
            and load them back when training ends, stops early, diverges or is interrupted
            (:class:`~scflowlm.model.BestWeights`). ``False``: the model keeps its last weights.
        checkpoint_dir
            Write a resumable Lightning checkpoint ``<checkpoint_dir>/last.ckpt`` after every epoch
            (:class:`~scflowlm.model.LastCheckpoint`).
        ckpt_path
            Resume from a Lightning checkpoint (e.g. ``<checkpoint_dir>/last.ckpt``): weights, optimiser,
            learning-rate schedule and epoch counter continue up to ``max_epochs`` (the total, not extra epochs).
            Use the same AnnData, architecture, ``batch_size``, ``max_epochs`` and ``scvi.settings.seed``.
        verbose
            Also print Lightning's informational lines (accelerator availability, tips, why ``fit`` stopped).
            By default only the progress bar (with the training loss) and warnings are shown.
        **trainer_kwargs
            Passed to the Lightning trainer (``precision="bf16-mixed"``, ``strategy``, ``callbacks``, ...).

        Notes
        -----
        Sets ``is_trained_``, ``history_`` (see :attr:`history`) and ``train_indices_``/``validation_indices_``/
        ``test_indices_`` (the held-out cells).

        A non-finite training loss stops training with :class:`~scflowlm.model.NonFiniteLossError` (naming
        the epoch, step and batch). ``KeyboardInterrupt`` (Ctrl+C, a notebook's stop button) ends training
        with the best weights so far loaded (``keep_best``) and is raised again after the model is usable.

        *Reproducibility.* With ``scvi.settings.seed = s`` set before the model is built, the same data and
        settings give identical weights and predictions on CPU (the split, initialisation, minibatch order
        and sampling all follow the seed). On GPU, scvi-tools sets ``torch.backends.cudnn.deterministic``,
        but some CUDA kernels (attention backward passes, atomics in scatter/index ops, flash attention,
        bf16 reductions) are non-deterministic: runs agree closely, not bit for bit. For bitwise GPU
        reproducibility also call ``torch.use_deterministic_algorithms(True)``, set
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and use ``attn_implementation="eager"``, at a speed cost.

        *Several devices.* Distribution is Lightning's: ``model.train(strategy="ddp", devices=4,
        accelerator="gpu")`` trains on 4 GPUs with one process each (the data loaders get scvi-tools'
        distributed sampler, so ``batch_size`` is per device). Run it from a script (``python train.py``),
        not a notebook: Lightning re-executes the script for the other ranks (in notebooks use
        ``strategy="ddp_notebook"``). Only rank 0 should save the model
        (``if model.trainer.is_global_zero: model.save(...)``). ``early_stopping`` is switched off under DDP
        by scvi-tools.
        """
        if self.adata is None:
            raise ValueError("This model has no AnnData; pass one to load() to train.")
        if ckpt_path is not None and not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"ckpt_path {str(ckpt_path)!r} is not a file (a Lightning .ckpt checkpoint).")
        held = self._holdout_mask(holdout)
        pool = np.nonzero(~held)[0]
        split_seed = scvi.settings.seed
        if split_seed is None and use_distributed_sampler(trainer_kwargs.get("strategy")):
            # every DDP rank must draw the same split: rank 0 picks the seed, the ranks Lightning launches inherit it
            split_seed = int(os.environ.setdefault("SCFLOWLM_SPLIT_SEED", str(np.random.default_rng().integers(2**31))))
        rng = np.random.default_rng(split_seed)
        pool = rng.permutation(pool)
        n_val = len(pool) - int(round(train_size * len(pool))) if validation_size is None else int(round(validation_size * len(pool)))
        n_val = min(n_val, len(pool) - 1)
        train_idx, val_idx, test_idx = np.sort(pool[n_val:]), np.sort(pool[:n_val]), np.nonzero(held)[0]
        if len(train_idx) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {len(train_idx)} training cells; pass a smaller batch_size."
            )
        steps_per_epoch = max(len(train_idx) // batch_size, 1)
        if max_epochs is None:
            max_epochs = int(np.clip(round(4000 / steps_per_epoch), 20, 1000))
        self._prepare_module(train_idx)
        codes = np.unique(self._registered(REGISTRY_KEYS.CONDITION_KEY, train_idx).astype(int))
        self.train_conditions_ = [self.condition_labels[c] for c in codes]
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        if use_distributed_sampler(trainer_kwargs.get("strategy")):
            datasplitter_kwargs.setdefault("distributed_sampler", True)
        splitter = DataSplitter(
            self.adata_manager,
            external_indexing=[train_idx, val_idx, test_idx],
            batch_size=batch_size,
            drop_last=True,
            **datasplitter_kwargs,
        )
        plan_kwargs = {"lr": lr, "weight_decay": weight_decay, "optimizer": "AdamW"} | (plan_kwargs or {})
        plan_kwargs.setdefault("max_kl_weight", self._kl_weight)
        plan = self._training_plan_cls(self.module, **plan_kwargs)
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping", True)
            trainer_kwargs.setdefault("early_stopping_monitor", "elbo_validation")
        trainer_kwargs.setdefault("check_val_every_n_epoch", max(1, max_epochs // 20) if len(val_idx) else None)
        trainer_kwargs.setdefault("log_every_n_steps", min(10, steps_per_epoch))  # small data: no Lightning warning
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        best = BestWeights("validation_loss" if len(val_idx) else "train_loss") if keep_best else None
        ended_by = ExceptionRecorder()
        callbacks += [c for c in (best, LastCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None) if c]
        callbacks.append(ended_by)
        sigint = signal.getsignal(signal.SIGINT)
        self.module.train()  # eval mode after an earlier train() or predict(); Lightning warns otherwise
        try:
            with quiet_training(verbose=verbose):
                runner = TrainRunner(
                    self,
                    training_plan=plan,
                    data_splitter=splitter,
                    max_epochs=max_epochs,
                    accelerator=accelerator,
                    devices=devices,
                    gradient_clip_val=gradient_clip_val,
                    callbacks=callbacks,
                    ckpt_path=None if ckpt_path is None else os.fspath(ckpt_path),
                    **trainer_kwargs,
                )
                runner()
        except SystemExit:
            # Lightning turns KeyboardInterrupt into sys.exit(1); give the user back the interrupt instead
            if not isinstance(ended_by.exception, KeyboardInterrupt):
                raise
            self.module.eval()
            self.is_trained_ = runner.trainer.current_epoch > 0
            if best is not None and best.restored:
                kept = f"the weights of epoch {best.best_epoch} ({best.monitor}={best.best_score:.4g})"
            else:
                kept = f"its last weights (after {runner.trainer.current_epoch} epochs)"
            raise KeyboardInterrupt(f"Training interrupted; the model keeps {kept}.") from None
        finally:
            self.module.eval()
            # Lightning ignores SIGINT from the first Ctrl+C on; restore the handler so the next one works
            if sigint is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, sigint)

    #: KL weight handed to the training plan (set by a subclass)
    _kl_weight: float = 0.0

    # ------------------------------------------------------------------ prediction
    def _trained_conditions(self) -> pd.DataFrame:
        """The conditions of the training cells (all registered conditions before training)."""
        labels = getattr(self, "train_conditions_", None)
        if labels is None:
            return self.conditions
        return self.conditions[pd.Index(self.condition_labels).isin(labels)]

    def _warn_unseen(self, conditions: Iterable[dict[str, str]]) -> list[bool]:
        trained = self._trained_conditions()
        seen = {f: set(trained[f]) for f in trained.columns}
        known = set(_labels(trained, list(trained.columns)))
        flags = []
        for cond in conditions:
            new = {f: v for f, v in cond.items() if v not in seen.get(f, set())}
            if new:
                warnings.warn(f"Values never seen in training: {new}. The prompt still conditions on them.", ScflowlmWarning, stacklevel=3)
            flags.append(_label(cond, list(self.conditions.columns)) in known)
        return flags

    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _source_states(
        self, source, conditions: list[dict[str, str]] | None, *, n_cells: int | None = None, seed: int | None = None
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Resolve ``source`` to raw start states ``[n, D]`` and the obs of those cells.

        ``source=None`` draws ``n_cells`` registered control cells of the condition's context (without
        replacement while there are enough, ``seed``).
        """
        if isinstance(source, ad.AnnData):
            return self._project(source), source.obs.copy()
        if self.adata is None:
            raise ValueError("Without a registered AnnData, pass source= as an AnnData of control cells.")
        obs = self.adata.obs
        if source is None:
            if conditions is None or len(conditions) != 1:
                raise ValueError("source=None needs exactly one condition dict.")
            cond = conditions[0]
            is_ctrl = self._registered(REGISTRY_KEYS.CONTROL_KEY).reshape(-1) > 0.5
            hit = is_ctrl.copy()
            for k in self.context_keys:
                if k in cond:
                    hit &= (obs[k].astype(str) == cond[k]).to_numpy()
            if not hit.any():
                ctx = {k: cond.get(k) for k in self.context_keys}
                raise ValueError(
                    f"There are no registered control cells for the context {ctx}; pass source= (an AnnData "
                    "of control cells, a boolean mask or obs names) to say which cells to perturb."
                )
            rows = np.nonzero(hit)[0]
            if n_cells is not None:
                rng = np.random.default_rng(seed)
                rows = np.sort(rng.choice(rows, size=n_cells, replace=n_cells > len(rows)))
        elif isinstance(source, np.ndarray | pd.Series | list | pd.Index):
            arr = np.asarray(source)
            if arr.dtype == bool:
                if arr.shape != (self.adata.n_obs,):
                    raise ValueError(f"A boolean source mask needs {self.adata.n_obs} entries, got {arr.shape}.")
                rows = np.nonzero(arr)[0]
            else:
                rows = obs.index.get_indexer(arr.astype(str))
                if (rows < 0).any():
                    raise KeyError(f"source names not in the registered AnnData: {list(arr[rows < 0][:5])}.")
        else:
            raise TypeError("source must be an AnnData, a boolean mask, obs names or None.")
        if len(rows) == 0:
            raise ValueError("source selects no cells.")
        return self._registered(REGISTRY_KEYS.X_KEY, rows).astype(np.float32), obs.iloc[rows].copy()

    def _project(self, source: ad.AnnData) -> np.ndarray:
        """States of a source AnnData in the training space.

        The source must have the training genes (in order); otherwise it is rejected with what differs.
        Cells of the registered AnnData (same obs names and coordinates) keep their registered states; other
        cells are projected with the stored PCA loadings, or, without loadings, read from ``obsm[obsm_key]``.
        """
        key = self._setup_args["obsm_key"]
        if self.adata is not None and source is self.adata:
            return self._registered(REGISTRY_KEYS.X_KEY).astype(np.float32)
        if self._var_names is not None and list(source.var_names) != list(self._var_names):
            train = pd.Index(self._var_names)
            missing, extra = train.difference(source.var_names), pd.Index(source.var_names).difference(train)
            raise ValueError(
                f"The source AnnData's genes differ from training ({source.n_vars} vs {len(train)} genes; "
                f"missing: {list(missing[:5])}; not in training: {list(extra[:5])}"
                + ("; same genes in another order" if not len(missing) and not len(extra) else "")
                + "). Its coordinates may come from another PCA: subset it to the training genes, "
                "source[:, model.adata.var_names]."
            )
        if self.adata is not None and key in source.obsm:
            rows = self.adata.obs_names.get_indexer(source.obs_names)
            if (rows >= 0).all():
                registered = self._registered(REGISTRY_KEYS.X_KEY, rows)
                theirs = np.asarray(source.obsm[key])
                if theirs.shape == registered.shape and np.allclose(theirs, registered, rtol=1e-5, atol=1e-5):
                    return registered.astype(np.float32)
        if self.loadings_ is not None:
            layer = self._setup_args["layer"]
            X = source.layers[layer] if layer is not None else source.X
            x = _dense_rows(X, slice(0, source.n_obs))
            return ((x - self.gene_means_) @ self.loadings_).astype(np.float32)  # [n, D]
        if key in source.obsm and np.asarray(source.obsm[key]).shape[1] == self.module.x_mean.shape[0]:
            return np.asarray(source.obsm[key], dtype=np.float32)
        raise ValueError(
            f"Cannot place the source cells in the training space: there are no stored PCA loadings and "
            f"obsm[{key!r}] is missing or has another width than the model's {self.module.x_mean.shape[0]}."
        )

    @property
    def _var_names(self) -> pd.Index | None:
        if self.adata is not None:
            return self.adata.var_names
        return getattr(self, "var_names_", None)

    def _to_genes(self, states: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """Raw states ``[n, D]`` -> expression ``[n, G]`` and var."""
        if self.loadings_ is None:
            return states.astype(np.float32), pd.DataFrame(index=[f"PC{i + 1}" for i in range(states.shape[1])])
        X = states @ self.loadings_.T + self.gene_means_  # [n, G]
        var = pd.DataFrame(index=pd.Index(self._var_names if self._var_names is not None else np.arange(X.shape[1]).astype(str)))
        return X.astype(np.float32), var

    def _parse_condition(self, condition) -> tuple[list[dict[str, str] | None], list[str]]:
        """Condition argument -> (list of condition dicts or None for raw prompts, list of prompts)."""
        if isinstance(condition, str):
            return [None], [condition]
        conds = self.prompt_builder.normalize(condition)
        return conds, [self.prompt_builder.render(c) for c in conds]

    def predict_perturbation(
        self,
        condition: Condition | Sequence[Condition] | str,
        *,
        n_cells: int = 500,
        source: ad.AnnData | np.ndarray | Sequence[str] | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int = 256,
        **generate_kwargs,
    ) -> ad.AnnData:
        """Generate cells under a condition (possibly one never seen in training).

        Parameters
        ----------
        condition
            A dict of template field -> value (``{"cell_type": "CD4 T", "condition": "IFN-beta"}``), a list of
            such dicts, or a raw prompt string. Unseen values are allowed (with a warning).
        n_cells
            Cells per condition. A control-source model given ``source=None`` starts them from ``n_cells``
            registered control cells of the condition's context (drawn without replacement while there are
            enough); with a ``source`` it makes one cell per source cell instead.
        source
            Control-source models only (``source="control"``, the default when control cells are registered):
            the cells to perturb, as an AnnData of control cells, a boolean mask or obs names of the
            registered AnnData. One prediction per source cell, in order. Fields missing from ``condition``
            are taken from each source cell's obs.
        temperature
            ``tau >= 0``: scales the variance of the latent at inference.
        seed
            Seed for the start noise and the latent samples; the same seed gives the same cells.
        batch_size
            Cells generated at once (bounds memory).
        **generate_kwargs
            Model-specific generation options.

        Returns
        -------
        A new AnnData: ``X`` generated expression in the genes of the training data (via ``varm["PCs"]``),
        ``obs`` the condition fields, ``"prompt"`` and ``"seen_in_training"`` (with a source, the source's obs
        with the condition's fields overwritten), ``obsm[obsm_key]`` the generated states, ``obsm["X_source"]``
        the start states of a control source, ``uns["scflowlm"]`` the generation settings.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        generator = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.randint(2**31, ()).item()))
        kw = {"temperature": temperature, "batch_size": batch_size, **generate_kwargs}
        self.module.eval()
        if self.module.source == "control":
            if source is None and n_cells <= 0:
                raise ValueError(f"n_cells must be positive, got {n_cells}.")
            return self._predict_from_source(condition, source, generator, seed, kw, n_cells=n_cells)
        if source is not None:
            raise ValueError("source= needs a model trained with source='control'.")
        if n_cells <= 0:
            raise ValueError(f"n_cells must be positive, got {n_cells}.")
        conds, prompts = self._parse_condition(condition)
        seen = self._warn_unseen([c for c in conds if c is not None]) if conds[0] is not None else [False]
        D = self.module.x_mean.shape[0]
        states, obs_rows = [], []
        for cond, prompt, s in zip(conds, prompts, seen, strict=True):
            x0 = torch.randn(n_cells, D, generator=generator)  # [n, D] standardised noise
            x1 = self._generate_std(cond, prompt, x0, generator=generator, **kw)
            states.append(self.module.unstandardize(x1.to(self.module.x_mean.device)).cpu().numpy())
            obs_rows += [{**(cond or {}), PROMPT_COL: prompt, "seen_in_training": s}] * n_cells
        obs = pd.DataFrame(obs_rows)
        return self._assemble(np.concatenate(states), obs, None, kw | {"seed": seed})

    def _predict_from_source(self, condition, source, generator, seed, kw, *, n_cells: int) -> ad.AnnData:
        if isinstance(condition, str):
            raise ValueError("A control-source model needs a condition dict (fields are merged with the source obs).")
        conds = [condition] if isinstance(condition, Mapping) else list(condition)
        if len(conds) != 1:
            raise ValueError("With a control source, predict one condition at a time.")
        cond = {k: str(v) for k, v in conds[0].items()}
        unknown = sorted(set(cond) - set(self.prompt_builder.fields))
        if unknown:
            raise KeyError(f"Condition has unknown field(s) {unknown}; the prompt template fields are {self.prompt_builder.fields}.")
        x_src, obs = self._source_states(source, [cond], n_cells=n_cells if source is None else None, seed=seed)
        fields = self.prompt_builder.fields
        missing = [f for f in fields if f not in cond and f not in obs.columns]
        if missing:
            raise KeyError(f"Field(s) {missing} are neither in the condition nor in the source obs.")
        for f, v in cond.items():
            obs[f] = v
        full = obs[fields].astype(str).to_dict("records")
        labels = [_label(c, fields) for c in full]
        uniq = list(dict.fromkeys(labels))
        seen = dict(zip(uniq, self._warn_unseen([dict(zip(fields, u.split(SEP), strict=True)) for u in uniq]), strict=True))
        x0_all = self.module.standardize(torch.as_tensor(x_src).to(self.module.x_mean.device)).cpu()
        out = np.zeros_like(x_src)
        prompts = np.empty(len(labels), dtype=object)
        labels_arr = np.asarray(labels, dtype=object)
        for lab in uniq:
            rows = np.nonzero(labels_arr == lab)[0]
            c = dict(zip(fields, lab.split(SEP), strict=True))
            prompt = self.prompt_builder.render(c)
            x1 = self._generate_std(c, prompt, x0_all[rows], generator=generator, **kw)
            out[rows] = self.module.unstandardize(x1.to(self.module.x_mean.device)).cpu().numpy()
            prompts[rows] = prompt
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith(("_scvi_", "_scflowlm_"))])  # registration columns
        obs[PROMPT_COL] = prompts
        obs["seen_in_training"] = [seen[lab] for lab in labels]
        obs.index = [f"{name}-pred" for name in obs.index.astype(str)]
        return self._assemble(out, obs, x_src, kw | {"seed": seed})

    def _assemble(self, states: np.ndarray, obs: pd.DataFrame, source: np.ndarray | None, params: dict) -> ad.AnnData:
        X, var = self._to_genes(states)
        obs = obs.reset_index(drop=True) if not isinstance(obs.index[0], str) or obs.index.duplicated().any() else obs
        obs.index = obs.index.astype(str)
        for col in self.prompt_builder.fields:
            if col in obs:
                obs[col] = obs[col].astype(str).astype("category")
        pred = ad.AnnData(X=X, obs=obs, var=var)
        pred.obsm[self._setup_args["obsm_key"]] = states.astype(np.float32)
        if source is not None:
            pred.obsm[SOURCE_OBSM] = source.astype(np.float32)
        pred.uns[UNS_KEY] = {
            "model": type(self).__name__,
            **{k: v for k, v in params.items() if isinstance(v, int | float | str | bool)},
        }
        return pred

    def sample(self, n_cells: int, *, temperature: float = 1.0, seed: int | None = None, batch_size: int = 256) -> ad.AnnData:
        """Generate ``n_cells`` cells across the training conditions, in their training proportions.

        With a template without fields this is plain unconditional generation. Returns a new AnnData as
        :meth:`predict_perturbation` does.
        """
        if n_cells <= 0:
            raise ValueError(f"n_cells must be positive, got {n_cells}.")
        rng = np.random.default_rng(seed)
        if self.adata is not None:
            codes = self._registered(REGISTRY_KEYS.CONDITION_KEY).reshape(-1).astype(int)
            freq = np.bincount(codes, minlength=len(self.conditions)) / len(codes)
        else:
            freq = np.full(len(self.conditions), 1.0 / len(self.conditions))
        counts = rng.multinomial(n_cells, freq)
        parts = []
        for code in tqdm(np.nonzero(counts)[0], desc="sampling conditions", disable=len(counts) < 4):
            cond = self.conditions.iloc[code].to_dict()
            parts.append(self.predict_perturbation(cond, n_cells=int(counts[code]), temperature=temperature, seed=int(rng.integers(2**31)), batch_size=batch_size))
        if len(parts) == 1:
            return parts[0]
        out = ad.concat(parts, index_unique="-", uns_merge="first")
        out.obs_names = np.arange(out.n_obs).astype(str)
        return out

    def _generate_std(self, condition: dict[str, str] | None, prompt: str, x0: torch.Tensor, *, generator: torch.Generator, **kwargs) -> torch.Tensor:
        """Standardised start states ``[n, D]`` of one condition -> standardised generated cells ``[n, D]``."""
        raise NotImplementedError

    @classmethod
    def load(cls, dir_path: str, adata: ad.AnnData | None = None, *, prefix: str | None = None, **kwargs):
        """Load a model saved with :meth:`save` (see :meth:`scvi.model.base.BaseModelClass.load`).

        With ``adata``, it is checked against the saved registry: the genes (names and order), the
        ``obsm`` width and the condition/context values must be those of training (a subset of the cells
        is fine). Raises :class:`FileNotFoundError` for a missing directory or model file and
        :class:`ValueError` for an unreadable (corrupt) save or an AnnData that does not match, naming what
        differs.
        """
        path = os.fspath(dir_path)
        model_file = os.path.join(path, f"{prefix or ''}model.pt")
        if kwargs.get("backup_url") is None:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"No saved model at {path!r}: the directory does not exist.")
            if not os.path.isfile(model_file):
                raise FileNotFoundError(
                    f"{path!r} holds no saved model: {os.path.basename(model_file)} is missing "
                    f"(the directory has {sorted(os.listdir(path))[:10]})."
                )
        try:
            with warnings.catch_warnings():
                # scvi-tools only warns about other genes; they are an error below
                warnings.filterwarnings("ignore", message=r".?var_names.? for the loaded")
                model = super().load(path, adata=adata, prefix=prefix, **kwargs)
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, RuntimeError, ValueError, KeyError) as err:
            unreadable = isinstance(err, pickle.UnpicklingError | EOFError | zipfile.BadZipFile | OSError) or (
                isinstance(err, RuntimeError) and ("PytorchStreamReader" in str(err) or "zip archive" in str(err))
            ) or (isinstance(err, ValueError) and str(err).startswith("Failed to load model file"))
            if isinstance(err, KeyError) and err.args and err.args[0] in ("attr_dict", "var_names", "model_state_dict"):
                unreadable = True
            if not unreadable or isinstance(err, FileNotFoundError):
                raise
            raise ValueError(
                f"The saved model in {path!r} cannot be read: it is corrupt, incomplete or not a {cls.__name__} "
                f"save ({type(err).__name__}: {err})."
            ) from err
        saved = getattr(model, "var_names_", None)
        if adata is not None and adata is not False and saved is not None:
            saved = pd.Index(np.asarray(saved).astype(str))
            genes = pd.Index(adata.var_names.astype(str))
            if not genes.equals(saved):
                missing, extra = saved.difference(genes, sort=False), genes.difference(saved, sort=False)
                detail = (
                    "the same genes in another order"
                    if not len(missing) and not len(extra)
                    else f"{len(genes)} genes vs {len(saved)} in training; missing: {list(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}; not in training: {list(extra[:5])}{' ...' if len(extra) > 5 else ''}"
                )
                raise ValueError(
                    f"The AnnData's genes differ from the ones the model was trained on ({detail}). "
                    "Subset and order them as in training: adata[:, model.var_names_]."
                )
        return model

    def save(self, dir_path: str, *, prefix: str | None = None, overwrite: bool = False, save_anndata: bool = False, **kwargs) -> None:
        """Save the model (weights, registry, init parameters and every ``*_`` attribute) to ``dir_path``.

        Raises :class:`ValueError` if ``dir_path`` exists and ``overwrite`` is False. See
        :meth:`scvi.model.base.BaseModelClass.save`.
        """
        self.var_names_ = None if self.adata is None else np.asarray(self.adata.var_names.astype(str))
        super().save(dir_path, prefix=prefix, overwrite=overwrite, save_anndata=save_anndata, **kwargs)
