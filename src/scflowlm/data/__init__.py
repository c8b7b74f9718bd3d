"""Prompts, synthetic data and dataset loaders."""

from __future__ import annotations

from ._conditions import (
    COMBINATION_SEP,
    ConditionTable,
    as_condition_list,
    coerce_value,
    match_mask,
    match_value,
    same_value,
    split_combination,
    value_mask,
)
from ._datasets import DONG2023_URL, dong2023, fetch, kang2018, perturbench_devel
from ._prompts import PromptBuilder, template_fields
from ._synthetic import synthetic_perturbation

__all__ = [
    "COMBINATION_SEP",
    "ConditionTable",
    "as_condition_list",
    "coerce_value",
    "match_mask",
    "match_value",
    "split_combination",
    "value_mask",
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
