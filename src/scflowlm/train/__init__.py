"""Training: the Lightning plan, callbacks and the runner of the flow models."""

from __future__ import annotations

from ._callbacks import BestWeights, EMAWeights, ExceptionRecorder, LastCheckpoint
from ._checkpoint import check_checkpoint
from ._plan import FlowTrainingPlan, NonFiniteLossError
from ._progress import ProgressLines, interactive_output, progress_trainer_kwargs
from ._runner import FlowTrainRunner, quiet_training

__all__ = [
    "BestWeights",
    "EMAWeights",
    "ExceptionRecorder",
    "FlowTrainRunner",
    "FlowTrainingPlan",
    "LastCheckpoint",
    "check_checkpoint",
    "NonFiniteLossError",
    "ProgressLines",
    "interactive_output",
    "progress_trainer_kwargs",
    "quiet_training",
]
