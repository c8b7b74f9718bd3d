"""Training callbacks: best weights kept in memory, resumable checkpoints, the exception that ended a run."""

from __future__ import annotations

import logging
import math
import os

import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["BestWeights", "EMAWeights", "ExceptionRecorder", "LastCheckpoint"]

logger = logging.getLogger(__name__)


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


class EMAWeights(Callback):
    """An exponential moving average of the module's weights, used for validation and (optionally) kept at the end.

    After every optimisation step from ``start_step`` on, ``ema = decay * ema + (1 - decay) * weights`` (floating
    parameters and buffers, on the device of the module). Validation runs on the averaged weights (so
    :class:`BestWeights`, placed before this callback, records averaged weights); with ``load_at_end`` the average
    replaces the weights when training ends.

    Parameters
    ----------
    decay
        Weight of the running average per step (0.999: an average over about the last 1,000 steps).
    start_step
        First step that enters the average (before it the average follows the weights).
    load_at_end
        Put the averaged weights into the module at the end of training.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, *, load_at_end: bool = True):
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}.")
        self.decay, self.start_step, self.load_at_end = decay, start_step, load_at_end
        self.average: dict[str, torch.Tensor] | None = None
        self._stash: dict[str, torch.Tensor] | None = None

    def _weights(self, pl_module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in pl_module.module.state_dict().items() if v.is_floating_point()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        current = self._weights(pl_module)
        if self.average is None or trainer.global_step <= self.start_step:
            self.average = {k: v.detach().clone() for k, v in current.items()}
            return
        with torch.no_grad():
            for k, v in current.items():
                self.average[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def _swap_in(self, pl_module) -> None:
        if self.average is not None and self._stash is None:
            self._stash = {k: v.detach().clone() for k, v in self._weights(pl_module).items()}
            pl_module.module.load_state_dict(self.average, strict=False)

    def _swap_out(self, pl_module) -> None:
        if self._stash is not None:
            pl_module.module.load_state_dict(self._stash, strict=False)
            self._stash = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._swap_in(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._swap_out(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._swap_out(pl_module)
        if self.load_at_end and self.average is not None:
            pl_module.module.load_state_dict(self.average, strict=False)
