"""The prompt tokenizer: a word-level vocabulary of the training prompts, saved with the model."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    from collections.abc import Iterable

    from transformers import PreTrainedTokenizerBase

__all__ = ["is_word_level", "tokenizer_from_state", "tokenizer_state", "word_tokenizer"]

PAD, UNK = "[PAD]", "[UNK]"


def word_tokenizer(prompts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is the words and punctuation of ``prompts``.

    Words are split on whitespace and punctuation (``"KLF1+MAP2K6"`` -> ``KLF1``, ``+``, ``MAP2K6``), so an
    unseen combination of seen perturbations is still made of known tokens. Unknown words map to ``[UNK]``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for p in prompts for w, _ in pre.pre_tokenize_str(p)})
    vocab = {PAD: 0, UNK: 1} | {w: i + 2 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, padding_side="left")


def tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> str:
    """Serialise a fast tokenizer to a JSON string (kept in the model's init parameters)."""
    return json.dumps(
        {
            "tokenizer": tokenizer.backend_tokenizer.to_str(),
            "pad_token": tokenizer.pad_token,
            "unk_token": tokenizer.unk_token,
        }
    )


def tokenizer_from_state(state: str) -> PreTrainedTokenizerFast:
    """Rebuild a tokenizer saved by :func:`tokenizer_state`."""
    from tokenizers import Tokenizer

    d = json.loads(state)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(d["tokenizer"]),
        pad_token=d["pad_token"],
        unk_token=d["unk_token"],
        padding_side="left",
    )


def is_word_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` is a word-level vocabulary of :func:`word_tokenizer` (embeddings learned from scratch)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"
