"""Neural network building blocks (pure torch; no AnnData)."""

from __future__ import annotations

from ._attention import attention_name, select_attn_implementation
from ._backbone import backbone_forward, build_backbone, default_backbone_config
from ._condition_encoder import ConditionEncoder
from ._decode import SharedPrefixDecoder, can_decode_shared
from ._head import VariationalHead
from ._kv_cache import KVStorage, kv_cache_bytes, new_kv_cache, reserve_kv_cache
from ._prompt_tokenizer import (
    is_word_level,
    tokenizer_from_state,
    tokenizer_state,
    word_tokenizer,
)
from ._state_tokenizer import SpatioTemporalTokenizer
from ._vector_field import VectorFieldMLP, time_features

__all__ = [
    "KVStorage",
    "attention_name",
    "ConditionEncoder",
    "SharedPrefixDecoder",
    "SpatioTemporalTokenizer",
    "VariationalHead",
    "VectorFieldMLP",
    "backbone_forward",
    "build_backbone",
    "can_decode_shared",
    "is_word_level",
    "kv_cache_bytes",
    "default_backbone_config",
    "new_kv_cache",
    "reserve_kv_cache",
    "select_attn_implementation",
    "time_features",
    "tokenizer_from_state",
    "tokenizer_state",
    "word_tokenizer",
]
