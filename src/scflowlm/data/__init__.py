"""Prompts, synthetic data and dataset loaders."""

from __future__ import annotations

from ._catalog import HEAD_STARTS, ConditionCatalog
from ._conditions import ConditionTable
from ._datasets import DONG2023_URL, dong2023, fetch, kang2018, perturbench_devel
from ._gene_vectors import gene_descriptions, gene_loading_embeddings, gene_text_embeddings
from ._hgnc import hgnc_symbols
from ._knowledge import KNOWLEDGE_SOURCES, gene_knowledge_embeddings
from ._prompts import PromptBuilder, template_fields
from ._screen import simulate_screen
from ._shifts import SHIFT_MODES, ShiftEstimate, ShiftTerm, estimate_shifts, fit_combination_scale
from ._synthetic import synthetic_perturbation
from ._values import (
    COMBINATION_SEP,
    as_condition_list,
    coerce_value,
    match_combination,
    match_mask,
    match_value,
    repeated_singles,
    same_value,
    split_combination,
    value_mask,
)
from ._vector_shifts import ALPHAS, VECTOR_RULES, choose_alpha, vector_shifts, vector_weights
from ._vectors import check_gene_vectors

__all__ = [
    "ALPHAS",
    "HEAD_STARTS",
    "ConditionCatalog",
    "KNOWLEDGE_SOURCES",
    "SHIFT_MODES",
    "ShiftEstimate",
    "ShiftTerm",
    "VECTOR_RULES",
    "choose_alpha",
    "estimate_shifts",
    "fit_combination_scale",
    "vector_shifts",
    "vector_weights",
    "COMBINATION_SEP",
    "ConditionTable",
    "as_condition_list",
    "check_gene_vectors",
    "coerce_value",
    "match_combination",
    "match_mask",
    "match_value",
    "repeated_singles",
    "split_combination",
    "value_mask",
    "DONG2023_URL",
    "PromptBuilder",
    "dong2023",
    "fetch",
    "gene_descriptions",
    "gene_knowledge_embeddings",
    "gene_loading_embeddings",
    "gene_text_embeddings",
    "hgnc_symbols",
    "kang2018",
    "perturbench_devel",
    "same_value",
    "simulate_screen",
    "synthetic_perturbation",
    "template_fields",
]
