"""Couplings of sources and targets: exact and entropic optimal transport (pure torch + POT)."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import torch

__all__ = ["ot_permutation", "sinkhorn_pairing"]


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


def sinkhorn_pairing(
    x0: torch.Tensor,
    x1: torch.Tensor,
    reg: float,
    *,
    groups: torch.Tensor | None = None,
    num_iter_max: int = 1000,
    stop_threshold: float = 1e-6,
) -> torch.Tensor:
    """Sample a source for every target from the entropic OT plan (squared Euclidean cost).

    The plan ``pi`` between the uniform measures on ``x0`` and ``x1`` is computed with ``ot.sinkhorn`` at
    regularisation ``reg`` (as in Tong et al.'s SB-CFM: ``reg = 2 sigma^2`` on the unnormalised cost); target
    ``j`` then receives source ``i`` drawn from ``pi[:, j]`` (the conditional of the plan), so every target
    is used once and sources may repeat. With ``reg -> 0`` this tends to the exact OT assignment, with
    ``reg -> inf`` to independent random pairing.

    With ``groups``, sources and targets are only paired within a group: the cost between groups is
    infinite, so one Sinkhorn run gives the block-diagonal plan of all groups at once (each block is the
    entropic plan of its group).

    The cost is shifted by its column and then row minima before the iterations: the plan does not change
    (the shifts are absorbed by the dual potentials), but every row and column of the Gibbs kernel keeps an
    entry equal to 1, so ``exp(-cost / reg)`` cannot underflow to an all-zero row in high dimensions.

    Parameters
    ----------
    x0
        ``[n, D]`` source points.
    x1
        ``[n, D]`` target points.
    reg
        Entropic regularisation.
    groups
        ``[n]`` group codes shared by ``x0[i]`` and ``x1[i]`` (e.g. the condition), or ``None``.
    num_iter_max
        Maximum Sinkhorn iterations.
    stop_threshold
        Stopping threshold on the marginal error.

    Returns
    -------
    ``[n]`` long tensor ``idx`` such that ``x0[idx[j]]`` is paired with ``x1[j]``.
    """
    n = x0.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=x0.device)
    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()  # [n, n]
    if groups is not None:
        g = groups.detach().view(-1).cpu().numpy()  # [n]
        cost[g[:, None] != g[None, :]] = np.inf
    cost = cost - cost.min(axis=0, keepdims=True)  # [n, n]
    cost = cost - cost.min(axis=1, keepdims=True)  # [n, n]
    w = np.full(n, 1.0 / n)
    with warnings.catch_warnings():
        # convergence warnings: an unconverged plan is still a usable coupling
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(w, w, cost, reg, numItermax=num_iter_max, stopThr=stop_threshold)  # [n, n]
    plan = torch.as_tensor(plan, dtype=torch.float64).T  # [n (targets), n (sources)]
    if not torch.isfinite(plan).all() or (plan.sum(1) <= 0).any():
        # numerical failure: independent pairing (within the groups)
        plan = torch.as_tensor(np.isfinite(cost).T, dtype=torch.float64)
    idx = torch.multinomial(plan / plan.sum(1, keepdim=True), 1).view(-1)  # [n]
    return idx.to(x0.device)
