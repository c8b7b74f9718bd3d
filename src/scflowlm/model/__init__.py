"""AnnData-facing models."""

from __future__ import annotations

from ._base import FlowModelBase
from ._calmflow import CaLMFlowModel
from ._training import FlowTrainingPlan, NonFiniteLossError

__all__ = ["CaLMFlowModel", "FlowModelBase", "FlowTrainingPlan", "NonFiniteLossError"]
