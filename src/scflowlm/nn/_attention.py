"""Which attention kernel the backbone runs: flash attention on CUDA when installed, else SDPA (with a CPU decode step)."""

from __future__ import annotations

import functools
import importlib.util

import torch

__all__ = ["SDPA_KERNEL", "attention_name", "select_attn_implementation", "use_kernel"]

#: the name under which the backbone runs ``attn_implementation="sdpa"``: SDPA with a faster CPU decode step
SDPA_KERNEL = "scflowlm_sdpa"


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
    on the thousands of tiny (sequence, head) blocks a generation batch holds (``docs/benchmarks/speed.md``).
    ``query``: ``[S, heads, 1, d]``; ``key``, ``value``:
    ``[S, heads, T, d]``; ``attention_mask``: ``None`` or ``[S, 1, 1, T]`` (bool, True = attend, as
    ``sdpa_mask`` builds it). Returns ``([S, 1, heads, d], None)`` as ``sdpa_attention_forward`` does.
    """
    single = query.shape[2] == 1 and query.device.type == "cpu" and key.shape[1] == query.shape[1]
    if not single or dropout > 0 or (attention_mask is not None and attention_mask.dtype != torch.bool):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query * key).sum(-1, keepdim=True) * scale  # [S, heads, T, 1]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.transpose(-1, -2), float("-inf"))  # mask [S, 1, T, 1]
    out = (scores.softmax(-2) * value).sum(-2, keepdim=True)  # [S, heads, 1, d]
    return out.transpose(1, 2), None


@functools.cache
def _register() -> bool:
    """Register :data:`SDPA_KERNEL` with transformers (once, when a backbone is first built, not at import).

    False on transformers versions without registrable attention and mask functions (before 4.53): plain SDPA.
    """
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # pragma: no cover - old transformers
        return False
    AttentionInterface.register(SDPA_KERNEL, _sdpa_with_cpu_decode)
    AttentionMaskInterface.register(SDPA_KERNEL, sdpa_mask)
    return True


def use_kernel(model, attn_implementation: str):
    """Run ``"sdpa"`` as :data:`SDPA_KERNEL` (same masks, same results; faster cached steps on a CPU).

    The kernel is registered on the first call. :func:`attention_name` still reads the user's ``"sdpa"``.
    """
    if attn_implementation == "sdpa" and _register():
        model.config._attn_implementation = SDPA_KERNEL
    return model


def attention_name(config) -> str:
    """The attention implementation a backbone's config runs, as the user chose it (``"sdpa"`` for its CPU variant)."""
    name = getattr(config, "_attn_implementation", None) or "sdpa"
    return "sdpa" if name == SDPA_KERNEL else name
