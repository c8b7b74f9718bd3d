"""Training: the arguments checked, the held-out split, then scvi-tools' data splitter and Lightning."""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import scvi
from scvi.dataloaders import DataSplitter
from scvi.model._utils import use_distributed_sampler

from scflowlm.train import (
    BestWeights,
    EMAWeights,
    ExceptionRecorder,
    FlowTrainRunner,
    LastCheckpoint,
    quiet_training,
)

from ._split import check_train_args, holdout_mask, split

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["TrainingMixin"]


class TrainingMixin:
    """``train`` of the flow models (needs the model's registry, module and ``_prepare_module``)."""

    #: peak learning rate of ``train()`` without ``lr``
    _default_lr: float = 1e-3
    #: optimisation steps of ``train()`` without ``max_epochs`` (clipped to 20..1,000 epochs)
    _default_steps: int = 4000

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
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        gradient_clip_val: float = 1.0,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        keep_best: bool = True,
        checkpoint_dir: str | None = None,
        ckpt_path: str | None = None,
        ema_decay: float | None = None,
        verbose: bool = False,
        enable_progress_bar: bool | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with teacher forcing (simulation-free), through scvi-tools and Lightning.

        Parameters
        ----------
        max_epochs
            Passes over the training cells; default: the model's step budget (about 3,000 optimisation steps for
            CaLMFlowModel, 4,000 for CFMModel), between 20 and 1,000 epochs.
        batch_size
            Cells per minibatch.
        lr
            Peak learning rate (AdamW, linear warm-up then cosine decay); default: the model's (CaLMFlow 2e-3, CFM
            1e-3).
        weight_decay
            AdamW weight decay.
        holdout
            Condition dict(s) (obs column -> value) whose cells are excluded from training and validation,
            e.g. ``[{"cell_type": "k562", "condition": "KLF1+MAP2K6"}]``; they become the test set.
        train_size, validation_size
            Split of the remaining cells: ``train_size`` of them train and the rest validates, or, with
            ``validation_size``, that fraction validates and the rest trains.
        accelerator, devices
            Lightning device settings; ``strategy="ddp"`` etc. go in ``trainer_kwargs`` (see Notes).
        early_stopping
            Stop when the validation loss stops improving.
        gradient_clip_val
            Gradient norm clipping.
        plan_kwargs
            Extra :class:`~scflowlm.train.FlowTrainingPlan` arguments.
        datasplitter_kwargs
            Extra :class:`~scvi.dataloaders.DataSplitter` arguments.
        keep_best
            Keep the weights of the best validation loss (training loss without a validation set) in memory
            and load them back when training ends, stops early, diverges or is interrupted
            (:class:`~scflowlm.train.BestWeights`). ``False``: the model keeps its last weights.
        checkpoint_dir
            Write a resumable Lightning checkpoint ``<checkpoint_dir>/last.ckpt`` after every epoch
            (:class:`~scflowlm.train.LastCheckpoint`).
        ckpt_path
            Resume from a Lightning checkpoint (e.g. ``<checkpoint_dir>/last.ckpt``): weights, optimiser,
            learning-rate schedule and epoch counter continue up to ``max_epochs`` (the total, not extra epochs).
            Use the same AnnData, architecture, ``batch_size``, ``max_epochs`` and ``scvi.settings.seed``.
        ema_decay
            Keep an exponential moving average of the weights with this decay per step (e.g. 0.999), from the end
            of the learning-rate warm-up on; validation and ``keep_best`` use the averaged weights, and the model
            ends with them (:class:`~scflowlm.train.EMAWeights`). ``None``: no average.
        verbose
            Also print Lightning's informational lines (accelerator availability, tips, why ``fit`` stopped).
            By default only the progress (with the training loss) and warnings are shown.
        enable_progress_bar
            How training shows its progress. ``None`` (default): a progress bar on a terminal or in a notebook;
            where no terminal watches the output (a pipe, ``nohup``, SLURM, CI) a plain line about every tenth
            of the epochs instead (:class:`~scflowlm.train.ProgressLines`: epoch, training loss, elapsed
            time), so that logs stay short. ``True``: the bar wherever the output goes. ``False``: no progress
            output.
        **trainer_kwargs
            Passed to the Lightning trainer (``precision="bf16-mixed"``, ``strategy``, ``callbacks``, ...).

        Notes
        -----
        Sets ``is_trained_``, ``history_`` (see :attr:`history`), ``train_conditions_`` and
        ``train_indices_``/``validation_indices_``/``test_indices_`` (the held-out cells).

        A non-finite training loss stops training with :class:`~scflowlm.train.NonFiniteLossError` (naming
        the epoch, step and batch). ``KeyboardInterrupt`` (Ctrl+C, a notebook's stop button) ends training
        with the best weights so far loaded (``keep_best``) and is raised again after the model is usable.

        *Reproducibility.* With ``scvi.settings.seed = s`` set before the model is built, the same data and
        settings give identical weights and predictions on CPU (the split, initialisation, minibatch order
        and sampling all follow the seed). On GPU, some CUDA kernels (attention backward passes, atomics in
        scatter/index ops, flash attention, bf16 reductions) are non-deterministic: runs agree closely, not bit
        for bit; for bitwise GPU reproducibility also call ``torch.use_deterministic_algorithms(True)``, set
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and use ``attn_implementation="eager"``, at a speed cost.

        *Several devices.* Distribution is Lightning's: ``model.train(strategy="ddp", devices=4,
        accelerator="gpu")`` trains on 4 GPUs with one process each (``batch_size`` is per device). Run it from
        a script, not a notebook (there, ``strategy="ddp_notebook"``). Only rank 0 should save the model
        (``if model.trainer.is_global_zero: model.save(...)``). See the docs' "Large data" page.
        """
        if self.adata is None:
            raise ValueError("This model has no AnnData; pass one to load() to train.")
        lr = self._default_lr if lr is None else lr
        check_train_args(
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_size=train_size,
            validation_size=validation_size,
            lr=lr,
        )
        if ckpt_path is not None and not os.path.isfile(ckpt_path):
            raise FileNotFoundError(
                f"ckpt_path {str(ckpt_path)!r} is not a file (a Lightning .ckpt checkpoint)."
            )
        distributed = use_distributed_sampler(trainer_kwargs.get("strategy"))
        seed = scvi.settings.seed
        if seed is None and distributed:
            # every DDP rank must draw the same split: rank 0 picks the seed, the ranks Lightning launches inherit it
            seed = int(
                os.environ.setdefault("SCFLOWLM_SPLIT_SEED", str(np.random.default_rng().integers(2**31)))
            )
        train_idx, val_idx, test_idx = split(
            holdout_mask(self.adata.obs, holdout),
            train_size=train_size,
            validation_size=validation_size,
            seed=seed,
        )
        fit_idx, fit_val, splitter_test = train_idx, val_idx, test_idx
        if self.module.source == "control" and not self.control_targets:
            # control cells stay the sources (the pool) but are no flows to learn: no identity paths
            is_control = self._cell_is_control()
            dropped = np.concatenate([train_idx[is_control[train_idx]], val_idx[is_control[val_idx]]])
            fit_idx, fit_val = train_idx[~is_control[train_idx]], val_idx[~is_control[val_idx]]
            # the splitter wants every cell placed
            splitter_test = np.sort(np.concatenate([test_idx, dropped]))
        if len(fit_idx) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {len(fit_idx)} training cells; pass a smaller batch_size."
            )
        self._prepare_module(train_idx)  # standardisation and control pool from every training cell
        self.train_conditions_ = sorted(set(self._cell_conditions()[train_idx].tolist()))
        self._before_training(train_idx)
        train_idx, val_idx = fit_idx, fit_val
        steps_per_epoch = max(len(train_idx) // batch_size, 1)
        if max_epochs is None:
            max_epochs = int(np.clip(round(self._default_steps / steps_per_epoch), 20, 1000))
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        if distributed:
            datasplitter_kwargs.setdefault("distributed_sampler", True)
        splitter = DataSplitter(
            self.adata_manager,
            external_indexing=[train_idx, val_idx, splitter_test],
            batch_size=batch_size,
            drop_last=True,
            **datasplitter_kwargs,
        )
        plan_kwargs = {
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer": "AdamW",
        } | (plan_kwargs or {})
        plan = self._training_plan_cls(self.module, **plan_kwargs)
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping", True)
            trainer_kwargs.setdefault("early_stopping_monitor", "elbo_validation")
        trainer_kwargs.setdefault(
            "check_val_every_n_epoch", max(1, max_epochs // 20) if len(val_idx) else None
        )
        # small data: no Lightning warning
        trainer_kwargs.setdefault("log_every_n_steps", min(10, steps_per_epoch))
        best = BestWeights("validation_loss" if len(val_idx) else "train_loss") if keep_best else None
        ended_by = ExceptionRecorder()
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        ema = None
        if ema_decay is not None:
            warmup = int(plan_kwargs.get("warmup_fraction", 0.05) * max_epochs * steps_per_epoch)
            ema = EMAWeights(ema_decay, start_step=warmup, load_at_end=best is None)
        extra = (best, ema, LastCheckpoint(checkpoint_dir) if checkpoint_dir else None)  # best before ema
        callbacks += [c for c in extra if c] + [ended_by]
        self._run_training(
            plan,
            splitter,
            best,
            ended_by,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            gradient_clip_val=gradient_clip_val,
            callbacks=callbacks,
            ckpt_path=None if ckpt_path is None else os.fspath(ckpt_path),
            verbose=verbose,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )
        self.test_indices = test_idx  # the held-out cells (the splitter's test set may hold unused controls)

    def _before_training(self, train_idx: np.ndarray) -> None:
        """Hook: what a subclass derives from the training cells (default: nothing)."""

    def _run_training(self, plan, splitter, best, ended_by, *, verbose: bool, **runner_kwargs) -> None:
        """Run the fit; a Ctrl+C leaves a usable model and is raised again as ``KeyboardInterrupt``."""
        sigint = signal.getsignal(signal.SIGINT)
        self.module.train()  # eval mode after an earlier train() or predict(); Lightning warns otherwise
        runner = None
        try:
            with quiet_training(verbose=verbose):
                runner = FlowTrainRunner(self, training_plan=plan, data_splitter=splitter, **runner_kwargs)
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
