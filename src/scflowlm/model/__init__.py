"""The AnnData-facing models: CaLMFlow, and conditional flow matching beside it."""

from __future__ import annotations

from ._base import FlowModelBase
from ._calmflow import CaLMFlowModel
from ._cfm import CFMModel
from ._presets import PRESETS
from ._split import HoldoutSplitter

__all__ = ["PRESETS", "CFMModel", "CaLMFlowModel", "FlowModelBase", "HoldoutSplitter"]
