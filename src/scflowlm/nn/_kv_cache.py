"""The key/value cache of generation: room reserved once per batch, memory kept across batches, and its size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import DynamicCache

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

__all__ = ["KVStorage", "kv_cache_bytes", "new_kv_cache", "reserve_kv_cache"]


def kv_cache_bytes(config: PretrainedConfig, n_tokens: int, *, bytes_per_number: int = 4) -> int:
    """Bytes the keys and values of one sequence of ``n_tokens`` positions take: ``2 x layers x tokens x hidden``."""
    return 2 * config.num_hidden_layers * n_tokens * config.hidden_size * bytes_per_number


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

    class ReservedLayer(DynamicLayer):
        """A cache layer with room reserved: new keys and values are written in place instead of concatenated."""

        @classmethod
        def from_layer(
            cls, layer: DynamicLayer, extra: int, *, rows: torch.Tensor | None, storage: KVStorage, index: int
        ) -> ReservedLayer:
            """A reserved copy of a filled layer: its keys and values (of ``rows``), with room for ``extra`` more."""
            reserved = cls()
            for name, value in vars(layer).items():  # the layer's own state (dtype, device, flags) as it is
                if name not in ("keys", "values"):
                    setattr(reserved, name, value)
            reserved.keys, reserved.values = layer.keys, layer.values
            reserved.reserve(extra, rows, storage, index)
            return reserved

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
        cache.layers[i] = ReservedLayer.from_layer(
            layer, extra, rows=rows, storage=storage if storage is not None else KVStorage(), index=i
        )
    return cache
