"""Source distributions and couplings shared by the flow modules (pure torch + POT)."""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import nn

from scflowlm._constants import REGISTRY_KEYS

__all__ = ["FlowSourceMixin", "ot_permutation"]


def ot_permutation(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Exact optimal-transport assignment between two equally sized sets (squared Euclidean cost).

    Parameters
    ----------
    x0
        ``[n, D]`` source points.
    x1
        ``[n, D]`` target points.

    Returns
    -------
    ``[n]`` long tensor ``perm`` such that ``x0[perm[j]]`` is paired with ``x1[j]``.
    """
    n = x0.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=x0.device)
    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()  # [n, n]
    w = np.full(n, 1.0 / n)
    plan = ot.emd(w, w, cost / max(cost.max(), 1e-12))  # [n, n], a permutation matrix / n
    return torch.as_tensor(plan.argmax(axis=0), dtype=torch.long, device=x0.device)


class FlowSourceMixin(nn.Module):
    """Buffers and helpers every flow module shares: batch inputs, standardisation and the flow's source.

    Cell states are standardised inside the module: ``(x - x_mean) / x_scale`` with a per-feature mean and
    one global scale (so the mean per-feature variance is 1 and distances keep the PCA geometry).

    With ``source="control"`` the module keeps a pool of control cells (standardised) and their context
    codes; each perturbed training cell starts from a control cell of its own context, paired by minibatch
    exact optimal transport, and control cells start from themselves.
    """

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The registered tensors every flow module reads from a minibatch."""
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "condition": tensors[REGISTRY_KEYS.CONDITION_KEY],
            "context": tensors[REGISTRY_KEYS.CONTEXT_KEY],
            "is_control": tensors[REGISTRY_KEYS.CONTROL_KEY],
        }

    def _init_source(self, n_features: int, source: str) -> None:
        if source not in ("noise", "control"):
            raise ValueError(f"source must be 'noise' or 'control', got {source!r}.")
        self.source = source
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("control_x", torch.zeros(0, n_features), persistent=False)
        self.register_buffer("control_context", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_standardization(self, mean: torch.Tensor, scale: float | torch.Tensor) -> None:
        """Set the per-feature mean ``[D]`` and the global scale used to standardise states."""
        self.x_mean.copy_(torch.as_tensor(mean, dtype=self.x_mean.dtype))
        self.x_scale.copy_(torch.as_tensor(scale, dtype=self.x_scale.dtype))

    def set_control_pool(self, x: torch.Tensor, context: torch.Tensor) -> None:
        """Set the control cells ``[Nc, D]`` (raw coordinates) and their context codes ``[Nc]``."""
        self.control_x = self.standardize(torch.as_tensor(x, dtype=torch.float32).to(self.x_mean.device))
        self.control_context = torch.as_tensor(context, dtype=torch.long).to(self.x_mean.device)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw coordinates ``[..., D]`` -> standardised."""
        return (x - self.x_mean) / self.x_scale

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``[..., D]`` -> raw coordinates."""
        return x * self.x_scale + self.x_mean

    def draw_source(
        self, x1: torch.Tensor, context: torch.Tensor | None = None, is_control: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Source points for a training batch of standardised targets ``x1 [B, D]``.

        ``"noise"``: ``N(0, I)``. ``"control"``: control cells of each target's context, paired by exact OT
        within the context; targets that are themselves controls start from themselves.
        """
        if self.source == "noise":
            return torch.randn_like(x1)
        x0 = x1.clone()
        perturbed = ~is_control.bool().view(-1)
        for c in torch.unique(context[perturbed]):
            rows = torch.nonzero(perturbed & (context.view(-1) == c)).view(-1)
            pool = torch.nonzero(self.control_context == c).view(-1)
            if len(pool) == 0:
                raise RuntimeError(f"No control cells for context code {int(c)}; cannot use source='control'.")
            pick = pool[torch.randint(len(pool), (len(rows),), device=pool.device)]
            candidates = self.control_x[pick]  # [n_c, D]
            x0[rows] = candidates[ot_permutation(candidates, x1[rows])]
        return x0
