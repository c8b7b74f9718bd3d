"""Neural network building blocks (pure torch; no AnnData)."""

from __future__ import annotations

from ._backbone import (
    backbone_forward,
    build_backbone,
    default_backbone_config,
    new_kv_cache,
    select_attn_implementation,
)
from ._head import VariationalHead
from ._prompt_tokenizer import tokenizer_from_state, tokenizer_state, word_tokenizer
from ._state_tokenizer import SpatioTemporalTokenizer
from ._vector_field import VectorFieldMLP, time_features

__all__ = [
    "SpatioTemporalTokenizer",
    "VariationalHead",
    "VectorFieldMLP",
    "backbone_forward",
    "build_backbone",
    "default_backbone_config",
    "new_kv_cache",
    "select_attn_implementation",
    "time_features",
    "tokenizer_from_state",
    "tokenizer_state",
    "word_tokenizer",
]
