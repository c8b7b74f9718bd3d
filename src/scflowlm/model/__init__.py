"""AnnData-facing models."""

from __future__ import annotations

from ._base import FlowModelBase
from ._calmflow import CaLMFlowModel
from ._training import BestWeights, FlowTrainingPlan, LastCheckpoint, NonFiniteLossError

__all__ = ["BestWeights", "CaLMFlowModel", "FlowModelBase", "FlowTrainingPlan", "LastCheckpoint", "NonFiniteLossError"]
