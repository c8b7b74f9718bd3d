"""The causal language model backbone (GPT-NeoX / Pythia): its configuration, building it, running it."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXModel

from ._attention import use_kernel
from ._prompt_tokenizer import tokenizer_from_state, tokenizer_state, word_tokenizer

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from transformers import DynamicCache, PreTrainedTokenizerFast

__all__ = ["backbone_forward", "build_backbone", "default_backbone_config"]

logger = logging.getLogger(__name__)


def default_backbone_config(
    vocab_size: int, *, hidden_size: int = 64, n_layers: int = 2, n_heads: int = 4
) -> GPTNeoXConfig:
    """A small random-init GPT-NeoX configuration (the offline default).

    The default is the paper's single-cell model (appendix: 64 hidden dimensions, a 256-wide feed-forward layer,
    4 attention heads, 2 blocks).

    Parameters
    ----------
    vocab_size
        Size of the prompt vocabulary.
    hidden_size
        Width of the residual stream.
    n_layers
        Number of transformer blocks.
    n_heads
        Number of attention heads.
    """
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=4096,
        rotary_pct=0.25,
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def build_backbone(
    backbone: str | GPTNeoXConfig | None,
    *,
    prompts: Iterable[str],
    tokenizer: str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[GPTNeoXModel, PreTrainedTokenizerFast]:
    """Build the backbone and its tokenizer.

    Parameters
    ----------
    backbone
        ``None``: a small random-init GPT-NeoX with a word-level tokenizer built from ``prompts``.
        A string: a Hugging Face model name or local directory (e.g. ``"EleutherAI/pythia-160m"``); weights
        and tokenizer come from ``from_pretrained``. A :class:`~transformers.GPTNeoXConfig`: random init
        with that configuration (and a word-level tokenizer unless ``tokenizer`` is given).
    prompts
        The training prompts (for the word-level vocabulary).
    tokenizer
        A tokenizer state from :func:`tokenizer_state` to reuse (as on load).
    attn_implementation
        ``"sdpa"``, ``"eager"`` or ``"flash_attention_2"``.

    Returns
    -------
    ``(model, tokenizer)``: the GPT-NeoX trunk (no LM head) and a left-padding fast tokenizer.
    """
    if isinstance(backbone, str):
        model = use_kernel(
            GPTNeoXModel.from_pretrained(backbone, attn_implementation=attn_implementation),
            attn_implementation,
        )
        if tokenizer is None:
            tok = AutoTokenizer.from_pretrained(backbone, padding_side="left")
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tokenizer = tokenizer_state(tok)
        return model, tokenizer_from_state(tokenizer)
    tok = tokenizer_from_state(tokenizer) if tokenizer is not None else word_tokenizer(prompts)
    config = backbone if backbone is not None else default_backbone_config(len(tok))
    config = GPTNeoXConfig.from_dict(config.to_dict())  # a private copy
    if config.vocab_size < len(tok):
        raise ValueError(
            f"The backbone vocabulary ({config.vocab_size}) is smaller than the tokenizer's ({len(tok)})."
        )
    config._attn_implementation = attn_implementation
    return use_kernel(GPTNeoXModel(config), attn_implementation), tok


#: name of the key/value-cache argument of ``GPTNeoXModel.forward``: ``cache`` from transformers 5.x on (where
#: ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values`` before.
_CACHE_ARG = "cache" if "cache" in inspect.signature(GPTNeoXModel.forward).parameters else "past_key_values"


def backbone_forward(
    backbone: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """Run the trunk on embeddings and return its last hidden states ``[S, T, H]``.

    With a ``cache`` (from :func:`new_kv_cache`), the keys and values of these ``T`` positions are appended to
    it in place and the positions continue after those already cached, so the next call feeds only new
    tokens. The cache travels under the argument name of the installed transformers version.

    Parameters
    ----------
    backbone
        A :class:`~transformers.GPTNeoXModel`.
    inputs_embeds
        ``[S, T, H]`` token embeddings.
    attention_mask
        ``[S, P + T]`` mask over the cached ``P`` and the new positions (1 = attend), or ``None`` without padding.
    cache
        The key/value cache, or ``None`` for a plain (training, uncached) pass.
    """
    kwargs = {} if cache is None else {_CACHE_ARG: cache, "use_cache": True}
    out = backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
    return out.last_hidden_state
