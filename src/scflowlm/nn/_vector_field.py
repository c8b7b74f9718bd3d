"""Conditional vector-field MLP for the flow-matching baselines (pure torch)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["VectorFieldMLP", "time_features"]


def time_features(t: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """Features of a time ``t`` in ``[0, 1]``: ``t`` itself and sin/cos at ``n_frequencies`` frequencies.

    Parameters
    ----------
    t
        ``[B]`` or ``[B, 1]`` times.
    n_frequencies
        Number ``F`` of frequencies ``pi * 2^k`` (``k = 0, ..., F-1``); 0 gives ``t`` alone.

    Returns
    -------
    ``[B, 1 + 2F]`` features.
    """
    t = t.reshape(-1, 1)  # [B, 1]
    if n_frequencies == 0:
        return t
    freqs = math.pi * 2.0 ** torch.arange(n_frequencies, device=t.device, dtype=t.dtype)  # [F]
    angles = t * freqs  # [B, F]
    return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)  # [B, 1+2F]


class VectorFieldMLP(nn.Module):
    """Time- and covariate-conditioned vector field ``v(x_t, t, c)``.

    The input is the concatenation ``[x_t, c, phi(t)]`` of the state, the covariate vector and the time
    features of :func:`time_features`; ``n_layers`` hidden layers of width ``n_hidden`` with SiLU
    activations; a linear output of the state's dimension.

    Parameters
    ----------
    n_features
        Dimension ``D`` of a state.
    n_covariates
        Dimension ``P`` of the covariate vector (0 for an unconditional field).
    n_hidden
        Width of the hidden layers.
    n_layers
        Number of hidden layers (at least 1).
    n_frequencies
        Number of sinusoidal time frequencies.
    dropout
        Dropout after every hidden activation.
    zero_init
        Start the output layer at zero: the field is 0 until training moves it.
    """

    def __init__(
        self,
        n_features: int,
        n_covariates: int = 0,
        n_hidden: int = 256,
        n_layers: int = 3,
        *,
        n_frequencies: int = 4,
        dropout: float = 0.0,
        zero_init: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}.")
        self.n_features = n_features
        self.n_covariates = n_covariates
        self.n_frequencies = n_frequencies
        n_in = n_features + n_covariates + 1 + 2 * n_frequencies
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [nn.Linear(n_in if i == 0 else n_hidden, n_hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_hidden, n_features))
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | float, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Velocity at states ``x`` ``[B, D]``, times ``t`` (scalar, ``[B]`` or ``[B, 1]``), covariates ``c`` ``[B, P]``.

        Returns
        -------
        ``[B, D]`` velocities.
        """
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t.reshape(B)  # [B]
        if c is None:
            c = x.new_zeros(B, self.n_covariates)  # [B, 0] or [B, P]
        h = torch.cat([x, c.to(x.dtype), time_features(t, self.n_frequencies)], dim=-1)  # [B, D+P+1+2F]
        return self.net(h)  # [B, D]
