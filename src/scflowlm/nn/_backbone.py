"""The causal language model backbone (GPT-NeoX / Pythia): building it, running it with a key/value cache."""

from __future__ import annotations

import importlib.util
import inspect
import logging
from typing import TYPE_CHECKING

import torch
from transformers import AutoTokenizer, DynamicCache, GPTNeoXConfig, GPTNeoXModel

from ._prompt_tokenizer import tokenizer_from_state, tokenizer_state, word_tokenizer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from transformers import PreTrainedTokenizerFast

__all__ = [
    "backbone_forward",
    "build_backbone",
    "default_backbone_config",
    "KVStorage",
    "new_kv_cache",
    "reserve_kv_cache",
    "select_attn_implementation",
]

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


def select_attn_implementation(requested: str | None = None, *, device: str | torch.device = "cpu") -> str:
    """Choose the attention kernel.

    ``"flash_attention_2"`` is used only when asked for or when ``requested`` is ``None``/``"auto"``, the
    ``flash_attn`` package is installed and the device is CUDA; it then needs half precision (train with
    ``precision="bf16-mixed"``). Everything else uses PyTorch SDPA.
    """
    has_flash = importlib.util.find_spec("flash_attn") is not None
    on_cuda = torch.device(device).type == "cuda"
    if requested in (None, "auto"):
        return "flash_attention_2" if (has_flash and on_cuda) else "sdpa"
    if requested == "flash_attention_2" and not (has_flash and on_cuda):
        raise ValueError(
            "flash_attention_2 needs the flash-attn package (pip install 'scflowlm[gpu]') and CUDA."
        )
    return requested


def _sdpa_with_cpu_decode(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """PyTorch SDPA, except for one query per sequence on a CPU (a cached generation step).

    There the same softmax attention is written as broadcast products: the CPU SDPA kernel spends most of its time
    on the thousands of tiny (sequence, head) blocks a generation batch holds (``benchmarks/speed.py``: about a fifth
    of CaLMFlow's generation time at its defaults). ``query``: ``[S, heads, 1, d]``; ``key``, ``value``:
    ``[S, heads, T, d]``; ``attention_mask``: ``None`` or ``[S, 1, 1, T]`` (bool, True = attend, as
    ``sdpa_mask`` builds it). Returns ``([S, 1, heads, d], None)`` as ``sdpa_attention_forward`` does.
    """
    single = query.shape[2] == 1 and query.device.type == "cpu" and key.shape[1] == query.shape[1]
    if not single or dropout > 0 or (attention_mask is not None and attention_mask.dtype != torch.bool):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query * key).sum(-1, keepdim=True) * scale  # [S, heads, T, 1]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.transpose(-1, -2), float("-inf"))  # mask [S, 1, T, 1]
    out = (scores.softmax(-2) * value).sum(-2, keepdim=True)  # [S, heads, 1, d]
    return out.transpose(1, 2), None


#: the name under which the backbone runs ``attn_implementation="sdpa"``: SDPA with the CPU decode step above;
#: ``None`` on transformers versions without registrable attention and mask functions (before 4.53): plain SDPA
SDPA_KERNEL: str | None = "scflowlm_sdpa"
try:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError:  # pragma: no cover - old transformers
    SDPA_KERNEL = None
else:
    AttentionInterface.register(SDPA_KERNEL, _sdpa_with_cpu_decode)
    AttentionMaskInterface.register(SDPA_KERNEL, sdpa_mask)


def _use_kernel(model: GPTNeoXModel, attn_implementation: str) -> GPTNeoXModel:
    """Run ``"sdpa"`` as :data:`SDPA_KERNEL` (same masks, same results; faster cached steps on a CPU)."""
    if attn_implementation == "sdpa" and SDPA_KERNEL is not None:
        model.config._attn_implementation = SDPA_KERNEL
    return model


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
        model = _use_kernel(
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
    return _use_kernel(GPTNeoXModel(config), attn_implementation), tok


#: name of the key/value-cache argument of ``GPTNeoXModel.forward``: ``cache`` from transformers 5.x on (where
#: ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values`` before.
_CACHE_ARG = "cache" if "cache" in inspect.signature(GPTNeoXModel.forward).parameters else "past_key_values"


def new_kv_cache() -> DynamicCache:
    """An empty key/value cache for :func:`backbone_forward` (filled in place by each call)."""
    return DynamicCache()


class KVStorage:
    """Memory for the reserved key/value caches of successive generation batches, kept from one batch to the next.

    A batch's cache is dead once its rollout returns, so the next batch can write into the same memory: fresh memory
    costs a page fault per page on first write, which on some machines takes longer than the whole copy.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}

    def take(self, key: tuple[int, str], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised ``shape`` tensor of ``like``'s dtype and device: the first rows of a kept one if it fits."""
        kept = self._tensors.get(key)
        fits = (
            kept is not None
            and kept.shape[1:] == shape[1:]
            and kept.shape[0] >= shape[0]
            and kept.dtype == like.dtype
            and kept.device == like.device
        )
        if not fits:
            kept = self._tensors[key] = like.new_empty(shape)
        return kept[: shape[0]]


try:  # transformers >= 4.56 keeps one layer object per layer; older versions grow plain lists (no reservation)
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - old transformers
    DynamicLayer = None


if DynamicLayer is not None:

    class _ReservedLayer(DynamicLayer):
        """A cache layer with room reserved: new keys and values are written in place instead of concatenated."""

        def reserve(self, extra: int, rows: torch.Tensor | None, storage: KVStorage, index: int) -> None:
            U, heads, length, dim = self.keys.shape
            S = U if rows is None else len(rows)
            keys, values = self.keys, self.values  # [U, heads, P, d]
            if rows is not None and U > 1:  # one gather per prefix row; a single prefix is broadcast below
                keys, values = keys.index_select(0, rows), values.index_select(0, rows)  # [S, heads, P, d]
            shape = (S, heads, length + extra, dim)  # [S, heads, P + extra, d]
            self._keys = storage.take((index, "keys"), shape, keys)
            self._values = storage.take((index, "values"), (*shape[:3], values.shape[-1]), values)
            self._keys[:, :, :length] = keys
            self._values[:, :, :length] = values
            self.length = length
            self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            n = key_states.shape[-2]
            if self.length + n > self._keys.shape[-2] or key_states.shape[0] != self._keys.shape[0]:
                return super().update(key_states, value_states, *args, **kwargs)  # past the reservation
            self._keys[:, :, self.length : self.length + n] = key_states
            self._values[:, :, self.length : self.length + n] = value_states
            self.length += n
            self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]
            return self.keys, self.values


def reserve_kv_cache(
    cache: DynamicCache, extra: int, *, rows: torch.Tensor | None = None, storage: KVStorage | None = None
) -> DynamicCache:
    """Give every layer of a filled cache room for ``extra`` more positions (in place; returns the cache).

    Each later :func:`backbone_forward` then writes its keys and values into the reserved room instead of copying
    the whole cache to grow it: generation of short sequences from a shared prompt spends most of its time on those
    copies. With ``rows`` (``[S]`` indices into the cache's ``U`` sequences), sequence ``s`` of the result holds the
    keys and values of cached sequence ``rows[s]``, written straight into the reserved room (one copy, as
    ``reorder_cache(rows)`` followed by a reservation would make two; a single cached prompt is broadcast). With
    ``storage``, the reserved room is taken from memory a previous batch's cache used (see :class:`KVStorage`).
    Without per-layer cache objects (transformers before 4.56) only the reordering is done.
    """
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or not layers:
        if rows is not None:
            cache.reorder_cache(rows)
        return cache
    for i, layer in enumerate(layers):
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            if rows is not None and getattr(layer, "is_initialized", False):
                layer.reorder_cache(rows)
            continue
        reserved = _ReservedLayer.__new__(_ReservedLayer)
        reserved.__dict__.update(layer.__dict__)
        reserved.reserve(extra, rows, storage if storage is not None else KVStorage(), i)
        cache.layers[i] = reserved
    return cache


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
