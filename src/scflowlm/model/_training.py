"""Training: the arguments checked, then a splitter, a training plan and a runner wired together."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import scvi
from scvi.model._utils import use_distributed_sampler

from scflowlm._docs import doc_params
from scflowlm.train import (
    BestWeights,
    EMAWeights,
    ExceptionRecorder,
    FlowTrainingPlan,
    FlowTrainRunner,
    LastCheckpoint,
    check_checkpoint,
    quiet_training,
)

from ._split import HoldoutSplitter, check_train_args, holdout_mask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["TrainingMixin"]

#: why control cells of a control-source model without control targets are left out of the loaders
_CONTROLS_ARE_SOURCES = (
    "control cells are not flows to learn with control_targets=False, the default: they are the sources; build "
    "the model with control_targets=True to train on them too"
)


class TrainingMixin:
    """``train`` of the flow models (needs the model's registry, module and ``_module_data``)."""

    _data_splitter_cls = HoldoutSplitter
    _training_plan_cls = FlowTrainingPlan
    _train_runner_cls = FlowTrainRunner
    #: peak learning rate of ``train()`` without ``lr``
    _default_lr: float = 1e-3
    #: optimisation steps of ``train()`` without ``max_epochs`` (clipped to 20..1,000 epochs)
    _default_steps: int = 4000
    #: conditions per training minibatch (:class:`~scflowlm.model.ConditionBatchSampler`); ``None``: random ones.
    #: One (as CellFlow samples): the optimal-transport pairing of a condition's cells with control cells then sees
    #: a whole minibatch of them, not a few (``docs/benchmarks/levers.md``).
    _conditions_per_batch: int | None = 1

    @doc_params()
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 128,
        lr: float | None = None,
        weight_decay: float = 1e-4,
        holdout: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        train_size: float = 0.9,
        validation_size: float | None = None,
        keep_best: bool = True,
        checkpoint_dir: str | None = None,
        ckpt_path: str | None = None,
        ema_decay: float | None = None,
        verbose: bool = False,
        **trainer_kwargs,
    ) -> None:
        """Train with teacher forcing (simulation-free), through scvi-tools and Lightning.

        Parameters
        ----------
        max_epochs, batch_size
            Passes over the training cells (default: the model's step budget, about 3,000 optimisation steps for
            CaLMFlowModel, 4,000 for CFMModel, a quarter of that for a model adapted with :meth:`load_query_data`,
            between 20 and 1,000 epochs) and cells per minibatch.
        lr, weight_decay
            Peak learning rate (AdamW, linear warm-up then cosine decay; default: the model's, CaLMFlow 2e-3, CFM
            1e-3, a quarter of it for an adapted model) and weight decay.
        holdout
            Condition dict(s) (obs column -> value) whose cells are excluded from training and validation,
            e.g. ``[{"cell_type": "k562", "condition": "KLF1+MAP2K6"}]``; they become the test set.
        train_size, validation_size
            Split of the remaining cells: ``train_size`` of them train and the rest validates, or, with
            ``validation_size``, that fraction validates and the rest trains.
        keep_best
            Load back the weights of the best validation loss (training loss without a validation set) when
            training ends, stops early, diverges or is interrupted (:class:`~scflowlm.train.BestWeights`).
        checkpoint_dir, ckpt_path
            Write a resumable Lightning checkpoint ``<checkpoint_dir>/last.ckpt`` after every epoch; resume from one
            up to ``max_epochs`` (the total) with the same AnnData, holdout, architecture, ``batch_size`` and seed
            (checked).
        ema_decay
            Train with an exponential moving average of the weights (decay per step, e.g. 0.999), which validation,
            ``keep_best`` and the final model use (:class:`~scflowlm.train.EMAWeights`). ``None``: no average.
        verbose
            Also print Lightning's informational lines (accelerator availability, tips).
        **trainer_kwargs
            %(trainer_kwargs)s

        Notes
        -----
        %(train_notes)s
        """
        if self.adata is None:
            raise ValueError("This model has no AnnData; pass one to load() to train.")
        adapted = getattr(self, "adapted_", False)
        lr = (self._default_lr * (self._adapt_lr_factor if adapted else 1.0)) if lr is None else lr
        args = {"max_epochs": max_epochs, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay}
        check_train_args(**args, train_size=train_size, validation_size=validation_size, ckpt_path=ckpt_path)
        splitter = self._splitter(holdout, train_size, validation_size, batch_size, trainer_kwargs)
        if trainer_kwargs.get("early_stopping") and not splitter.n_val_flows:
            raise ValueError(
                f"early_stopping=True needs a validation set, but train_size={train_size!r} with "
                f"validation_size={validation_size!r} leaves no validation cells; pass train_size < 1 (e.g. 0.9) or "
                "validation_size > 0, or train without early_stopping."
            )
        record = self._data_record(splitter.training_cells)
        if ckpt_path is not None:
            check_checkpoint(ckpt_path, self.module, record)
        self.train_conditions_ = sorted(
            set(self._cell_conditions()[splitter.training_cells].tolist())
            | set(getattr(self, "reference_conditions_", []))  # an adapted model's reference trained on them
        )
        measured = np.setdiff1d(np.arange(self.adata.n_obs), splitter.held_out_cells)  # training + validation
        self.module.load_data(self._module_data(splitter.training_cells, mean_rows=measured))
        steps = max(splitter.n_train_flows // batch_size, 1)  # per epoch
        budget = self._default_steps * (self._adapt_steps_factor if adapted else 1.0)
        max_epochs = max_epochs or int(np.clip(round(budget / steps), 20, 1000))
        plan_kwargs = {"lr": lr, "weight_decay": weight_decay, "optimizer": "AdamW"}
        plan_kwargs |= trainer_kwargs.pop("plan_kwargs", None) or {}
        plan = self._training_plan_cls(self.module, data_record=record, **plan_kwargs)
        best = BestWeights("validation_loss" if splitter.n_val_flows else "train_loss") if keep_best else None
        ended_by = ExceptionRecorder()
        warmup = int(plan.warmup_fraction * max_epochs * steps)
        callbacks = _extra_callbacks(best, ema_decay, warmup, checkpoint_dir)
        trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), *callbacks, ended_by]
        trainer_kwargs = _trainer_defaults(max_epochs, steps, splitter.n_val_flows, trainer_kwargs)
        ckpt_path = None if ckpt_path is None else os.fspath(ckpt_path)
        self._run_training(plan, splitter, best, ended_by, max_epochs, ckpt_path, verbose, trainer_kwargs)
        self.test_indices = splitter.held_out_cells  # the splitter's test set also holds unused controls

    def _splitter(
        self, holdout, train_size, validation_size, batch_size, trainer_kwargs: dict
    ) -> HoldoutSplitter:
        """The model's data splitter for ``train`` (pops ``datasplitter_kwargs`` from ``trainer_kwargs``)."""
        return self._data_splitter_cls(
            self.adata_manager,
            held_out=holdout_mask(
                self.adata.obs,
                holdout,
                perturbation_key=self.condition_table.perturbation_key,
                combination_sep=self.condition_table.combination_sep,
            ),
            not_flows=self._cell_is_control()
            & (self.module.source == "control" and not self.control_targets),
            not_flows_reason=_CONTROLS_ARE_SOURCES,
            train_size=train_size,
            validation_size=validation_size,
            seed=scvi.settings.seed,
            batch_size=batch_size,
            distributed=use_distributed_sampler(trainer_kwargs.get("strategy")),
            groups=self._cell_conditions(),
            **{"conditions_per_batch": self._conditions_per_batch}
            | (trainer_kwargs.pop("datasplitter_kwargs", None) or {}),
        )

    def _data_record(self, train_idx: np.ndarray) -> dict[str, str]:
        """What identifies this training run's data (checked when a checkpoint resumes it)."""

        def digest(text: str | bytes) -> str:
            return hashlib.sha1(text.encode() if isinstance(text, str) else text).hexdigest()

        return {
            "cells": digest("\0".join(self.adata.obs_names.astype(str))),
            "conditions": digest(self.conditions.to_csv()),
            "training cells": digest(np.asarray(train_idx, dtype=np.int64).tobytes()),
        }

    def _run_training(
        self, plan, splitter, best, ended_by, max_epochs, ckpt_path, verbose, trainer_kwargs
    ) -> None:
        """Build the runner and fit; a Ctrl+C leaves a usable model and is raised again as ``KeyboardInterrupt``."""
        sigint = signal.getsignal(signal.SIGINT)
        self.module.train()  # eval mode after an earlier train() or predict(); Lightning warns otherwise
        runner = None
        try:
            with quiet_training(verbose=verbose):  # the trainer's start-up lines and library deprecations
                runner = self._train_runner_cls(
                    self,
                    training_plan=plan,
                    data_splitter=splitter,
                    max_epochs=max_epochs,
                    ckpt_path=ckpt_path,
                    **trainer_kwargs,
                )
                runner()
        except SystemExit:
            # Lightning turns KeyboardInterrupt into sys.exit(1); give the user back the interrupt instead
            if not isinstance(ended_by.exception, KeyboardInterrupt):
                raise
            self.is_trained_ = runner is not None and runner.trainer.current_epoch > 0
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


def _extra_callbacks(
    best: BestWeights | None, ema_decay: float | None, warmup: int, checkpoint_dir: str | None
):
    """The callbacks ``train`` adds: best weights, then the weight average (which must come after), then checkpoints."""
    ema = None if ema_decay is None else EMAWeights(ema_decay, start_step=warmup, load_at_end=best is None)
    return [c for c in (best, ema, LastCheckpoint(checkpoint_dir) if checkpoint_dir else None) if c]


def _trainer_defaults(max_epochs: int, steps_per_epoch: int, n_validation: int, trainer_kwargs: dict) -> dict:
    """The trainer arguments, with the defaults of the flow models filled in."""
    out = {
        "accelerator": "auto",
        "devices": "auto",
        "gradient_clip_val": 1.0,
        "check_val_every_n_epoch": max(1, max_epochs // 20) if n_validation else None,
        "log_every_n_steps": min(10, steps_per_epoch),  # small data: no Lightning warning
    } | trainer_kwargs
    if out.get("early_stopping"):
        out.setdefault("early_stopping_monitor", "elbo_validation")
    return out
