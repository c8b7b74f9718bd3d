"""The Lightning training plan of the flow models."""

from __future__ import annotations

import math

import torch
from scvi.train import TrainingPlan

from ._checkpoint import DATA_KEY

__all__ = ["FlowTrainingPlan", "NonFiniteLossError"]


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
    data_record
        What identifies the training data, written into every Lightning checkpoint (see
        :func:`~scflowlm.train.check_checkpoint`), so that a resumed run can be checked against it.
    **kwargs
        Passed to :class:`~scvi.train.TrainingPlan` (``lr``, ``weight_decay``, ``optimizer``, loss kwargs).
    """

    def __init__(
        self,
        module,
        *,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.05,
        data_record: dict | None = None,
        **kwargs,
    ):
        kwargs.setdefault("n_epochs_kl_warmup", None)
        kwargs.setdefault("n_steps_kl_warmup", None)
        super().__init__(module, **kwargs)
        self.warmup_fraction = warmup_fraction
        self.min_lr_ratio = min_lr_ratio
        self.data_record = dict(data_record or {})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record what identifies the training data in the checkpoint (read back on resume)."""
        checkpoint[DATA_KEY] = self.data_record

    def training_step(self, batch, batch_idx):
        """One optimisation step; raises :class:`NonFiniteLossError` on a NaN or infinite loss."""
        loss = super().training_step(batch, batch_idx)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                f"(batch {batch_idx}). Lower the learning rate, check the input coordinates for extreme values, "
                "or train in float32."
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
