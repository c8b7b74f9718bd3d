"""Lightning training plan shared by the flow models."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings

import torch
from lightning.pytorch.callbacks import Callback
from scvi.train import TrainingPlan

logger = logging.getLogger(__name__)

__all__ = ["BestWeights", "FlowTrainingPlan", "LastCheckpoint", "NonFiniteLossError"]

#: the logger of Lightning's start-up lines ("GPU available", "TPU available", tips, "Trainer.fit stopped")
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
#: warnings that libraries raise inside each other during training, which a user cannot act on:
#: Lightning 2.6 builds torch's deprecated ``LeafSpec`` (torch >= 2.10 warns on every ``fit``).
LIBRARY_INTERNAL_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",)


@contextlib.contextmanager
def quiet_loggers(*names: str, enabled: bool = True):
    """Raise the given loggers to WARNING while the block runs (their INFO lines are chatter to a user)."""
    loggers = [logging.getLogger(n) for n in names] if enabled else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def quiet_training(*, verbose: bool = False):
    """What a user sees of ``fit``: the progress bar and real warnings, not Lightning's start-up lines.

    Hides the INFO lines of :data:`LIGHTNING_INFO_LOGGER` unless ``verbose``, and always the library-internal
    deprecations of :data:`LIBRARY_INTERNAL_WARNINGS`.
    """
    with quiet_loggers(LIGHTNING_INFO_LOGGER, enabled=not verbose), warnings.catch_warnings():
        for pattern in LIBRARY_INTERNAL_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        yield


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite."""


class FlowTrainingPlan(TrainingPlan):
    """scvi-tools' training plan with a constant KL weight, warm-up + cosine learning rate, non-finite stop.

    A :class:`~scvi.train.TrainingPlan` whose learning rate warms up linearly then decays on a cosine (per
    step), and which raises :class:`NonFiniteLossError` on a NaN or infinite loss.

    Parameters
    ----------
    module
        The torch module.
    warmup_fraction
        Fraction of all optimisation steps spent warming the learning rate up from 0.
    min_lr_ratio
        Final learning rate as a fraction of ``lr``.
    **kwargs
        Passed to :class:`~scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``optimizer``, loss kwargs).
    """

    def __init__(self, module, *, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.05, **kwargs):
        kwargs.setdefault("n_epochs_kl_warmup", None)
        kwargs.setdefault("n_steps_kl_warmup", None)
        super().__init__(module, **kwargs)
        self.warmup_fraction = warmup_fraction
        self.min_lr_ratio = min_lr_ratio

    def training_step(self, batch, batch_idx):
        """One optimisation step; raises :class:`NonFiniteLossError` on a NaN or infinite loss."""
        loss = super().training_step(batch, batch_idx)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                "(batch {batch_idx}). Lower the learning rate, check the input coordinates for extreme values, or "
                "train in float32.".replace("{batch_idx}", str(batch_idx))
            )
        return loss

    def configure_optimizers(self):
        """AdamW-style optimiser with a per-step warm-up + cosine schedule."""
        config = super().configure_optimizers()
        if self.reduce_lr_on_plateau:
            return config
        optimizer = config["optimizer"]
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(self.warmup_fraction * total), 1)
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        config["lr_scheduler"] = {"scheduler": scheduler, "interval": "step"}
        return config


class BestWeights(Callback):
    """Keep the weights with the best monitored loss in memory; put them back when training ends or fails.

    After every validation (or, without a validation set, every training epoch) the module's ``state_dict``
    is copied to CPU memory if ``monitor`` improved. At the end of ``fit`` -- normal end, early stop, a
    :class:`NonFiniteLossError`, ``KeyboardInterrupt`` or any other exception -- the best copy is loaded
    back, so an interrupted or diverged run leaves the model at its best state so far rather than at its last
    (possibly NaN) one. Nothing is restored before the first evaluation.

    The copy is not part of Lightning checkpoints: a run resumed with ``ckpt_path`` tracks the best weights
    from the resumed epoch on.

    Parameters
    ----------
    monitor
        Logged metric to minimise (``"validation_loss"``; ``"train_loss"`` when there is no validation set).
    """

    def __init__(self, monitor: str = "validation_loss"):
        super().__init__()
        self.monitor = monitor
        self.best_score: float = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.exception: BaseException | None = None
        self.restored = False

    def _consider(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        if math.isfinite(score) and score < self.best_score:
            self.best_score = score
            self.best_epoch = int(trainer.current_epoch)
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.module.state_dict().items()
            }

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.monitor != "train_loss" and not trainer.sanity_checking:
            self._consider(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.monitor == "train_loss":
            self._consider(trainer, pl_module)

    def restore(self, pl_module) -> bool:
        """Load the best weights into ``pl_module.module``; ``False`` when none were recorded."""
        if self.best_state is None:
            return False
        pl_module.module.load_state_dict(self.best_state)
        self.restored = True
        logger.info(
            "Restored the weights of epoch %d (%s=%.4g).", self.best_epoch, self.monitor, self.best_score
        )
        return True

    def on_train_end(self, trainer, pl_module) -> None:
        self.restore(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.exception = exception
        if self.restore(pl_module) and not isinstance(exception, KeyboardInterrupt):
            exception.add_note(
                f"The model was reset to the weights of epoch {self.best_epoch} ({self.monitor}={self.best_score:.4g})."
            )


class ExceptionRecorder(Callback):
    """Remember the exception that ended ``fit`` (Lightning turns ``KeyboardInterrupt`` into ``SystemExit``)."""

    def __init__(self):
        super().__init__()
        self.exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.exception = exception


class LastCheckpoint(Callback):
    """Write a resumable Lightning checkpoint ``<dirpath>/last.ckpt`` at the end of every ``every_n_epochs`` epochs.

    The file holds the weights, optimiser, learning-rate schedule and loop state; pass it as
    ``model.train(..., ckpt_path=...)`` to continue the run. (Unlike :class:`~scvi.train.SaveCheckpoint`, which
    writes scvi-tools model directories, and without switching Lightning's ``enable_checkpointing`` on.)
    Under DDP only rank 0 writes.

    Parameters
    ----------
    dirpath
        Directory of the checkpoint (created if needed).
    every_n_epochs
        Epochs between writes.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | os.PathLike, every_n_epochs: int = 1):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.dirpath = os.fspath(dirpath)
        self.every_n_epochs = every_n_epochs

    @property
    def path(self) -> str:
        """Path of the checkpoint file."""
        return os.path.join(self.dirpath, self.FILENAME)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (
            trainer.current_epoch + 1
        ) % self.every_n_epochs == 0 or trainer.current_epoch + 1 == trainer.max_epochs:
            if trainer.is_global_zero:
                os.makedirs(self.dirpath, exist_ok=True)
            trainer.save_checkpoint(self.path)
