"""Spatiotemporal tokenization of flow paths (paper section 4)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpatioTemporalTokenizer"]


class SpatioTemporalTokenizer(nn.Module):
    """Turn the states of M trajectories at N time points into a sequence of spatiotemporal tokens.

    Each state ``z`` (D features) is mapped by a learned network ``S: R^D -> R^(K*H)`` and split into
    ``K`` spatial tokens of the backbone width ``H`` (paper eq. 10). A learned embedding of the time index
    and one of the spatial index are added, so a token says when and which part of the state it is.
    Tokens are ordered time, then trajectory, then space (paper eq. 12).

    Parameters
    ----------
    n_features
        Dimension ``D`` of a state (number of PCA coordinates).
    hidden_size
        Width ``H`` of the backbone.
    n_space_tokens
        Number ``K`` of spatial tokens per state.
    n_time_points
        Number ``N`` of time points of a path.
    dropout
        Dropout inside the projection.
    """

    def __init__(
        self, n_features: int, hidden_size: int, n_space_tokens: int, n_time_points: int, dropout: float = 0.0
    ):
        super().__init__()
        self.n_space_tokens = n_space_tokens
        self.hidden_size = hidden_size
        self.proj = nn.Sequential(
            nn.Linear(n_features, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, n_space_tokens * hidden_size),
        )
        self.time_embedding = nn.Embedding(n_time_points, hidden_size)
        self.space_embedding = nn.Embedding(n_space_tokens, hidden_size)

    def forward(self, states: torch.Tensor, time_index: torch.Tensor | int = 0) -> torch.Tensor:
        """Tokenize states.

        Parameters
        ----------
        states
            ``[S, T, M, D]``: S sequences, T consecutive time points, M trajectories, D features.
        time_index
            Index of the first of the T time points (for the time embedding).

        Returns
        -------
        ``[S, T*M*K, H]`` token embeddings in the order time, trajectory, space.
        """
        S, T, M, _ = states.shape
        K, H = self.n_space_tokens, self.hidden_size
        tokens = self.proj(states).view(S, T, M, K, H)  # [S, T, M, K, H]
        times = torch.arange(T, device=states.device) + time_index
        tokens = tokens + self.time_embedding(times)[None, :, None, None, :]
        tokens = tokens + self.space_embedding.weight[None, None, None, :, :]
        return tokens.reshape(S, T * M * K, H)
