"""One-token generation steps of a GPT-NeoX after cached prompts, with the prompts' keys and values shared.

A generation batch holds thousands of sequences that start from a few prompts (usually one). Transformers' cached
step copies each prompt's keys and values into every sequence's cache and runs its layer machinery for a single
new token; :class:`SharedPrefixDecoder` instead keeps each prompt's keys and values once, attends to them with one
matrix product per head, writes the sequences' own keys and values into memory reserved for the whole rollout, and
runs the layers' weights directly. The outputs are those of the backbone's own forward (the tests compare them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import DynamicCache

__all__ = ["SharedPrefixDecoder", "can_decode_shared"]


def can_decode_shared(backbone: torch.nn.Module) -> bool:
    """Whether :class:`SharedPrefixDecoder` runs this backbone: a GPT-NeoX trunk (its layers and rotary embedding)."""
    layers = getattr(backbone, "layers", None)
    return (
        layers is not None
        and len(layers) > 0
        and hasattr(layers[0], "attention")
        and hasattr(layers[0].attention, "query_key_value")
        and hasattr(backbone, "rotary_emb")
        and hasattr(backbone, "final_layer_norm")
    )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class SharedPrefixDecoder:
    """The steps of ``S`` sequences after ``U`` cached prompts, one new token per sequence and step.

    Parameters
    ----------
    backbone
        The GPT-NeoX trunk (:class:`~transformers.GPTNeoXModel`), in evaluation mode.
    cache
        The key/value cache of the ``U`` prompts (``[U, heads, P, d]`` per layer), as the backbone filled it.
    rows
        ``[S]`` the prompt of each sequence.
    prefix_mask
        ``[U, P]`` which prompt positions are tokens (left padding excluded), or ``None`` without padding.
    steps
        The most steps this decoder will run (the room reserved for the sequences' own keys and values).
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        cache: DynamicCache,
        rows: torch.Tensor,
        prefix_mask: torch.Tensor | None,
        steps: int,
    ):
        self.backbone, self.rows = backbone, rows
        layers = cache.layers
        self.prefix_keys = [layer.keys for layer in layers]  # [U, h, P, d] each
        self.prefix_values = [layer.values for layer in layers]
        U, heads, P, d = self.prefix_keys[0].shape
        self.shared = U == 1  # one prompt: its keys are read by one product per head
        self.prefix_length = P
        # [S, 1, 1, P] additive mask of the padded prompt positions (0 or -inf), or None
        self.prefix_bias = None
        if prefix_mask is not None and not bool(prefix_mask.all()):
            bias = torch.zeros(prefix_mask.shape, dtype=self.prefix_keys[0].dtype, device=rows.device)
            self.prefix_bias = bias.masked_fill(~prefix_mask.bool(), float("-inf"))[rows][
                :, None, :
            ]  # [S, 1, P]
        S = len(rows)
        like = self.prefix_keys[0]
        self.keys = [like.new_empty((S, heads, steps, d)) for _ in layers]  # [S, h, steps, d]
        self.values = [like.new_empty((S, heads, steps, self.prefix_values[0].shape[-1])) for _ in layers]
        self.length = 0
        self.scale = d**-0.5

    def _gathered(self, tensors: list[torch.Tensor], i: int) -> torch.Tensor:
        return tensors[i] if self.shared else tensors[i][self.rows]  # [1 or S, h, P, d]

    @torch.no_grad()
    def __call__(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The last hidden states ``[S, 1, H]`` of one new token per sequence (``inputs_embeds`` ``[S, 1, H]``)."""
        if inputs_embeds.shape[1] != 1:
            raise ValueError("SharedPrefixDecoder takes one new token per sequence and step.")
        backbone, t = self.backbone, self.length
        h = inputs_embeds[:, 0]  # [S, H]
        S = h.shape[0]
        position = torch.full((1, 1), self.prefix_length + t, device=h.device, dtype=torch.long)
        cos, sin = backbone.rotary_emb(inputs_embeds, position_ids=position)  # [1, 1, r]
        cos, sin = cos[0], sin[0]  # [1, r]: broadcast over sequences and heads below
        for i, layer in enumerate(backbone.layers):
            attention = layer.attention
            qkv = attention.query_key_value(layer.input_layernorm(h))  # [S, 3H]
            heads = self.keys[i].shape[1]
            q, k, v = qkv.view(S, heads, -1).chunk(3, dim=-1)  # [S, h, d] each
            r = cos.shape[-1]
            q = torch.cat([q[..., :r] * cos + _rotate_half(q[..., :r]) * sin, q[..., r:]], dim=-1)
            k = torch.cat([k[..., :r] * cos + _rotate_half(k[..., :r]) * sin, k[..., r:]], dim=-1)
            self.keys[i][:, :, t] = k
            self.values[i][:, :, t] = v
            keys, values = self.keys[i][:, :, : t + 1], self.values[i][:, :, : t + 1]  # [S, h, t+1, d]
            prefix_k, prefix_v = self._gathered(self.prefix_keys, i), self._gathered(self.prefix_values, i)
            if self.shared:  # [S, h, P]: one product per head with the prompt's keys
                scores_prefix = torch.einsum("shd,hpd->shp", q, prefix_k[0])
            else:
                scores_prefix = (q.unsqueeze(2) * prefix_k).sum(-1)
            if self.prefix_bias is not None:
                scores_prefix = scores_prefix + self.prefix_bias
            scores_own = (q.unsqueeze(2) * keys).sum(-1)  # [S, h, t+1]
            weights = torch.cat([scores_prefix, scores_own], dim=-1).mul_(self.scale)  # [S, h, P+t+1]
            # softmax written out: torch's CPU kernel is several times slower over so short a last dimension
            weights = weights.sub_(weights.amax(-1, keepdim=True)).exp_()
            weights = weights.div_(weights.sum(-1, keepdim=True))
            P = scores_prefix.shape[-1]
            if self.shared:
                out = torch.einsum("shp,hpd->shd", weights[..., :P], prefix_v[0])
            else:
                out = (weights[..., :P].unsqueeze(-1) * prefix_v).sum(2)
            out = out + (weights[..., P:].unsqueeze(-1) * values).sum(2)  # [S, h, d]
            attn = attention.dense(out.reshape(S, -1))  # [S, H]
            if layer.use_parallel_residual:
                h = h + attn + layer.mlp(layer.post_attention_layernorm(h))
            else:
                h = h + attn
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        self.length += 1
        return backbone.final_layer_norm(h).unsqueeze(1)  # [S, 1, H]
