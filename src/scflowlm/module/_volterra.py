"""Volterra flow-matching math: time grid, conditional paths, trajectory grouping (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["condition_sequences", "group_trajectories", "step_noise", "straight_path", "time_grid"]


def time_grid(n_time_points: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``N`` evenly spaced times ``t_0 = 0, ..., t_{N-1} = 1`` -> ``[N]``."""
    if n_time_points < 2:
        raise ValueError(f"n_time_points must be at least 2, got {n_time_points}.")
    return torch.linspace(0.0, 1.0, n_time_points, device=device)


def straight_path(x0: torch.Tensor, x1: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Optimal-transport conditional path ``z_t = (1 - t) x0 + t x1`` at the given times.

    Parameters
    ----------
    x0, x1
        ``[..., D]`` source and target points.
    times
        ``[N]``.

    Returns
    -------
    ``[..., N, D]``, time on the second-to-last axis.
    """
    t = times.view(*([1] * (x0.dim() - 1)), -1, 1)  # [1.., N, 1]
    return (1.0 - t) * x0.unsqueeze(-2) + t * x1.unsqueeze(-2)


def group_trajectories(
    condition: torch.Tensor, n_trajectories: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Group cells of the same condition into sequences of ``M`` trajectories.

    Every cell of the batch appears in exactly one sequence; a condition whose cell count is not a multiple
    of ``M`` fills its last sequence with other cells of the same condition drawn at random (those repeats
    count in the loss again, a small reweighting).

    Parameters
    ----------
    condition
        ``[B]`` condition codes.
    n_trajectories
        ``M``.

    Returns
    -------
    ``[S, M]`` long tensor of batch indices; all M cells of a row share a condition.
    """
    M = n_trajectories
    if M == 1:
        return torch.arange(condition.shape[0], device=condition.device).view(-1, 1)
    rows = []
    for c in torch.unique(condition):
        idx = torch.nonzero(condition == c).view(-1)
        perm = torch.randperm(len(idx), generator=generator).to(idx.device)
        idx = idx[perm]
        pad = (-len(idx)) % M
        if pad:
            fill = torch.randint(len(idx), (pad,), generator=generator).to(idx.device)
            idx = torch.cat([idx, idx[fill]])
        rows.append(idx.view(-1, M))
    return torch.cat(rows)


def condition_sequences(rows: torch.Tensor, n_trajectories: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generation's grouping: the cells of each condition, in order, ``M`` to a sequence.

    ``rows``: ``[n]`` condition of each cell. Returns the cell indices ``[S, M]`` and which of them are real
    ``[S, M]``: a condition's last sequence is filled with repeats of its last cell, to be dropped.
    """
    seqs, real = [], []
    for c in torch.unique(rows):
        idx = torch.nonzero(rows == c).view(-1)
        pad = (-len(idx)) % n_trajectories
        seqs.append(torch.cat([idx, idx[-1:].expand(pad)]).view(-1, n_trajectories))
        real.append((torch.arange(len(idx) + pad) < len(idx)).view(-1, n_trajectories))
    return torch.cat(seqs), torch.cat(real)


def step_noise(
    rows: torch.Tensor,
    generators: Sequence[torch.Generator],
    n_steps: int,
    n_latent: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal latent noise of every rollout step of every cell -> ``[n, n_steps, n_latent]``.

    The cells of condition ``c`` (``rows == c``, ``rows``: ``[n]``) draw from ``generators[c]`` step by step, as
    one rollout of them would, so a cell's noise depends neither on the batch size nor on the other conditions.
    """
    noise = torch.zeros(len(rows), n_steps, n_latent, dtype=dtype)  # [n, N-1, Z]
    for c, gen in enumerate(generators):
        idx = torch.nonzero(rows == c).view(-1)
        for i in range(n_steps) if len(idx) else ():
            noise[idx, i] = torch.randn(len(idx), n_latent, generator=gen).to(noise)
    return noise
