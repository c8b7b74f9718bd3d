"""Prompts, synthetic data and dataset loaders."""

from __future__ import annotations

from ._datasets import DONG2023_URL, dong2023, fetch, kang2018, perturbench_devel
from ._prompts import PromptBuilder, same_value, template_fields
from ._synthetic import synthetic_perturbation

__all__ = [
    "DONG2023_URL",
    "PromptBuilder",
    "dong2023",
    "fetch",
    "kang2018",
    "perturbench_devel",
    "same_value",
    "synthetic_perturbation",
    "template_fields",
]
