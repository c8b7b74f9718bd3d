"""Neural network building blocks (pure torch; no AnnData)."""

from __future__ import annotations

from ._backbone import (
    KVStorage,
    backbone_forward,
    build_backbone,
    default_backbone_config,
    new_kv_cache,
    reserve_kv_cache,
    select_attn_implementation,
)
from ._condition_encoder import ConditionEncoder
from ._head import VariationalHead
from ._prompt_tokenizer import is_word_level, tokenizer_from_state, tokenizer_state, word_tokenizer
from ._state_tokenizer import SpatioTemporalTokenizer
from ._vector_field import VectorFieldMLP, time_features

__all__ = [
    "KVStorage",
    "ConditionEncoder",
    "SpatioTemporalTokenizer",
    "VariationalHead",
    "VectorFieldMLP",
    "backbone_forward",
    "build_backbone",
    "is_word_level",
    "default_backbone_config",
    "new_kv_cache",
    "reserve_kv_cache",
    "select_attn_implementation",
    "time_features",
    "tokenizer_from_state",
    "tokenizer_state",
    "word_tokenizer",
]
