"""What every flow module shares: condition lookup, standardisation, the flow's source (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi.module.base import BaseModuleClass
from torch import nn

from scflowlm._constants import REGISTRY_KEYS

from ._coupling import ot_permutation

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CodeIndex", "FlowModuleBase"]

SOURCES = ("noise", "control")


class CodeIndex(nn.Module):
    """Map rows of per-field integer codes to the index of a known combination.

    ``codes [K, F]`` lists the known combinations (row ``k`` is combination ``k``); ``n_categories [F]`` the
    number of values of each field. A row of codes ``[F]`` is folded into one integer (mixed radix) and looked up
    by binary search, so any number of fields and values works without a dense table.
    """

    def __init__(self, codes: torch.Tensor | None = None, n_categories: Sequence[int] | None = None):
        super().__init__()
        self.register_buffer("strides", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("sorted_keys", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("order", torch.zeros(0, dtype=torch.long), persistent=False)
        if codes is not None:
            self.set(codes, n_categories)

    def set(self, codes: torch.Tensor, n_categories: Sequence[int]) -> None:
        """Known combinations ``[K, F]`` with ``n_categories[f]`` values in field ``f``."""
        codes = torch.as_tensor(codes, dtype=torch.long).reshape(len(codes), len(n_categories))
        sizes = torch.as_tensor(list(n_categories), dtype=torch.long)  # [F]
        strides = torch.ones_like(sizes)
        if len(sizes) > 1:
            strides[:-1] = torch.flip(torch.cumprod(torch.flip(sizes[1:], [0]), 0), [0])
        keys = (codes * strides).sum(-1)  # [K]
        sorted_keys, order = torch.sort(keys)
        device = self.strides.device
        self.strides, self.sorted_keys, self.order = (
            strides.to(device),
            sorted_keys.to(device),
            order.to(device),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-row codes ``[B, F]`` -> combination index ``[B]``; raises for an unknown combination."""
        if self.strides.numel() == 0:  # no fields: a single combination
            return torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        keys = (codes.long().view(codes.shape[0], -1) * self.strides).sum(-1)  # [B]
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=len(self.sorted_keys) - 1)  # [B]
        if not bool((self.sorted_keys[pos] == keys).all()):
            raise KeyError("A combination of field values was not registered when the model was built.")
        return self.order[pos]


class FlowModuleBase(BaseModuleClass):
    """The base of the flow modules: minibatch inputs, conditions, standardisation and the source.

    Cells come in as registered field codes; :attr:`conditions` and :attr:`contexts` turn them into a
    condition index (a prompt, a covariate vector) and a context index (which control cells a cell starts from).

    Cell states are standardised inside the module: ``(x - x_mean) / x_scale`` with a per-feature mean and one
    global scale (so the mean per-feature variance is 1 and distances keep the PCA geometry). The module
    standardises its inputs and unstandardises its outputs, in training and in :meth:`sample`.

    With ``source="control"`` the module keeps a pool of control cells and their context indices; each perturbed
    training cell starts from a control cell of its own context, paired by minibatch exact optimal transport,
    and control cells start from themselves.
    """

    def __init__(self, n_features: int, source: str):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be 'noise' or 'control', got {source!r}.")
        self.source = source
        self.conditions = CodeIndex()
        self.contexts = CodeIndex()
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("condition_is_control", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.register_buffer("condition_shift", torch.zeros(0, n_features), persistent=False)
        self.register_buffer("control_x", torch.zeros(0, n_features), persistent=False)
        self.register_buffer("control_context", torch.zeros(0, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ conditions and contexts
    def set_conditions(self, codes, n_categories: Sequence[int], is_control) -> None:
        """The C known conditions as field codes ``[C, F]``, and which of them are controls ``[C]``."""
        self.conditions.set(codes, n_categories)
        self.condition_is_control = torch.as_tensor(is_control, dtype=torch.bool).to(self.x_mean.device)

    def set_contexts(self, codes, n_categories: Sequence[int]) -> None:
        """The known contexts as codes ``[X, Fc]`` of the context fields."""
        self.contexts.set(codes, n_categories)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cell states and their condition and context indices."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        none = x.new_zeros(x.shape[0], 0)
        condition = self.conditions(tensors.get(REGISTRY_KEYS.CONDITION_KEY, none))  # [B]
        context = self.contexts(tensors.get(REGISTRY_KEYS.CONTEXT_KEY, none))  # [B]
        return {"x": x, "condition": condition, "context": context}

    # ------------------------------------------------------------------ standardisation
    def set_standardization(self, mean: torch.Tensor, scale: float | torch.Tensor) -> None:
        """Set the per-feature mean ``[D]`` and the global scale used to standardise states."""
        self.x_mean.copy_(torch.as_tensor(mean, dtype=self.x_mean.dtype))
        self.x_scale.copy_(torch.as_tensor(scale, dtype=self.x_scale.dtype))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw coordinates ``[..., D]`` -> standardised (in the module's dtype)."""
        return (x.to(self.x_mean) - self.x_mean) / self.x_scale

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``[..., D]`` -> raw coordinates."""
        return x * self.x_scale + self.x_mean

    # ------------------------------------------------------------------ the source
    def set_control_pool(self, x: torch.Tensor, context: torch.Tensor) -> None:
        """Set the control cells ``[Nc, D]`` (raw coordinates) and their context indices ``[Nc]``."""
        self.control_x = self.standardize(torch.as_tensor(x).to(self.x_mean.device))
        self.control_context = torch.as_tensor(context, dtype=torch.long).to(self.x_mean.device)

    def set_condition_shift(self, shift: torch.Tensor) -> None:
        """Head start ``[C, D]`` (raw coordinates) added to the control cells a condition's flows start from."""
        self.condition_shift = (
            torch.as_tensor(shift, dtype=self.x_mean.dtype).to(self.x_mean.device) / self.x_scale
        )

    def draw_source(self, x1: torch.Tensor, condition: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Source points for a training batch of standardised targets ``x1 [B, D]``.

        ``"noise"``: ``N(0, I)``. ``"control"``: control cells of each target's context (plus the condition's
        :meth:`head start <set_condition_shift>`), paired with the targets by exact OT within the context;
        targets that are themselves controls start from themselves.
        """
        if self.source == "noise":
            return torch.randn_like(x1)
        x0 = x1.clone()
        # [B, D]
        shift = self.condition_shift[condition] if len(self.condition_shift) else torch.zeros_like(x1)
        perturbed = ~self.condition_is_control[condition]  # [B]
        for c in torch.unique(context[perturbed]):
            rows = torch.nonzero(perturbed & (context == c)).view(-1)
            pool = torch.nonzero(self.control_context == c).view(-1)
            if len(pool) == 0:
                raise RuntimeError(f"No control cells for context {int(c)}; cannot use source='control'.")
            pick = pool[torch.randint(len(pool), (len(rows),), device=pool.device)]
            candidates = self.control_x[pick]  # [n_c, D]
            x0[rows] = candidates[ot_permutation(candidates, x1[rows] - shift[rows])] + shift[rows]
        return x0

    def start_states(
        self, rows: torch.Tensor, x0: torch.Tensor | None, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Standardised start states ``[n, D]`` of a prediction: ``x0`` (raw) standardised, or ``N(0, I)`` noise.

        Noise for the cells of condition ``c`` (``rows == c``, in order) comes from ``generators[c]``.
        """
        if x0 is not None:
            return self.standardize(x0)
        out = torch.empty(len(rows), self.x_mean.shape[0], dtype=self.x_mean.dtype)
        for c, gen in enumerate(generators):
            idx = torch.nonzero(rows.cpu() == c).view(-1)
            if len(idx):
                out[idx] = torch.randn(len(idx), out.shape[1], generator=gen).to(out)
        return out.to(self.x_mean.device)
