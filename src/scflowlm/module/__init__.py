"""Torch modules: Volterra flow-matching math, CaLMFlow and CFM (pure torch; no AnnData)."""

from __future__ import annotations

from ._base import CodeIndex, FlowModuleBase
from ._calmflow import CaLMFlowModule
from ._cfm import CFMModule
from ._coupling import ot_permutation, sinkhorn_pairing
from ._data import FlowData
from ._volterra import group_trajectories, straight_path, time_grid

__all__ = [
    "CFMModule",
    "CaLMFlowModule",
    "CodeIndex",
    "FlowData",
    "FlowModuleBase",
    "group_trajectories",
    "ot_permutation",
    "sinkhorn_pairing",
    "straight_path",
    "time_grid",
]
