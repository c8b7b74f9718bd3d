"""Conditional flow matching (I-CFM, OT-CFM, SB-CFM; Tong et al. 2024) as a torch module (pure torch + POT)."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torchdiffeq import odeint

from scflowlm.nn._vector_field import VectorFieldMLP

from ._coupling import FlowSourceMixin, ot_permutation

__all__ = ["CFMModule", "sinkhorn_pairing"]

FLOWS = ("i", "ot", "sb")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
#: default Brownian-bridge sigma of SB-CFM (standardised units)
SB_DEFAULT_SIGMA = 0.5
#: smallest distance of a training time from 0 and 1 (the SB-CFM target diverges like 1/sqrt(t(1-t)))
T_EPS = 1e-4


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
        warnings.simplefilter("ignore")  # convergence warnings: an unconverged plan is still a usable coupling
        plan = ot.sinkhorn(w, w, cost, reg, numItermax=num_iter_max, stopThr=stop_threshold)  # [n, n]
    plan = torch.as_tensor(plan, dtype=torch.float64).T  # [n (targets), n (sources)]
    if not torch.isfinite(plan).all() or (plan.sum(1) <= 0).any():
        # numerical failure: independent pairing (within the groups)
        plan = torch.as_tensor(np.isfinite(cost).T, dtype=torch.float64)
    idx = torch.multinomial(plan / plan.sum(1, keepdim=True), 1).view(-1)  # [n]
    return idx.to(x0.device)


class CFMModule(FlowSourceMixin, BaseModuleClass):
    """Conditional flow matching with an MLP vector field ``v(x_t, t, c)`` (Tong et al. 2024).

    Training (simulation-free): targets ``x1`` are the standardised cells of a batch, sources ``x0`` come
    from :meth:`~scflowlm.module.FlowSourceMixin.draw_source` (``N(0, I)`` or OT-paired control cells of
    the same context). The covariate vector ``c`` of a cell is the row of :attr:`covariates` of its
    condition. With ``t ~ U(0, 1)``:

    ``flow="i"`` (I-CFM)
        Independent coupling; ``x_t = t x1 + (1 - t) x0 + sigma eps``, target ``u_t = x1 - x0``.
    ``flow="ot"`` (OT-CFM)
        Like I-CFM but noise sources are re-paired to the targets of each condition by minibatch exact OT
        (``ot.emd``).
    ``flow="sb"`` (SB-CFM)
        Noise sources are re-paired within each condition by sampling the entropic OT plan
        (``ot.sinkhorn``, regularisation ``2 sigma^2``); Brownian-bridge path
        ``x_t = t x1 + (1 - t) x0 + sigma sqrt(t (1 - t)) eps`` with target
        ``u_t = (1 - 2t) / (2 t (1 - t)) (x_t - t x1 - (1 - t) x0) + x1 - x0``.

    With ``source="control"`` the coupling is always that of ``draw_source`` (exact OT within the context,
    control cells start from themselves); ``flow`` then only selects the path noise.

    Loss per cell: ``sum_d (v(x_t, t, c) - u_t)^2`` (summed over features), averaged over the batch.

    Generation integrates ``dx/dt = v(x, t, c)`` from ``t = 0`` to ``1`` with ``torchdiffeq.odeint``.

    Parameters
    ----------
    n_features
        Dimension ``D`` of a cell state.
    n_covariates
        Dimension ``P`` of the covariate vector of a condition.
    flow
        ``"i"``, ``"ot"`` or ``"sb"``.
    sigma
        Path noise in standardised units. ``None``: 0 for ``"i"``/``"ot"``, 0.5 for ``"sb"`` (which needs
        ``sigma > 0``).
    n_hidden
        Width of the vector-field MLP.
    n_layers
        Hidden layers of the vector-field MLP.
    source
        ``"noise"`` or ``"control"``.
    dropout
        Dropout in the vector-field MLP.
    n_frequencies
        Sinusoidal time frequencies fed to the MLP.
    """

    def __init__(
        self,
        n_features: int,
        n_covariates: int,
        *,
        flow: str = "ot",
        sigma: float | None = None,
        n_hidden: int = 256,
        n_layers: int = 3,
        source: str = "noise",
        dropout: float = 0.0,
        n_frequencies: int = 4,
    ):
        super().__init__()
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}.")
        if sigma is None:
            sigma = SB_DEFAULT_SIGMA if flow == "sb" else 0.0
        if sigma < 0 or (flow == "sb" and sigma <= 0):
            raise ValueError(f"sigma must be >= 0 (and > 0 for flow='sb'), got {sigma}.")
        self._init_source(n_features, source)
        self.n_features = n_features
        self.n_covariates = n_covariates
        self.flow = flow
        self.sigma = float(sigma)
        self.field = VectorFieldMLP(
            n_features, n_covariates, n_hidden, n_layers, n_frequencies=n_frequencies, dropout=dropout
        )
        self.register_buffer("covariates", torch.zeros(0, n_covariates), persistent=False)

    # ------------------------------------------------------------------ conditions
    def set_condition_covariates(self, covariates: torch.Tensor) -> None:
        """Covariate vectors ``[C, P]`` of the C training conditions (row ``c`` for condition code ``c``)."""
        cov = torch.as_tensor(covariates, dtype=torch.float32)
        if cov.dim() != 2 or cov.shape[1] != self.n_covariates:
            raise ValueError(f"covariates must have shape [C, {self.n_covariates}], got {tuple(cov.shape)}.")
        self.covariates = cov.to(self.x_mean.device)

    # ------------------------------------------------------------------ coupling and paths
    def pair(self, x0: torch.Tensor, x1: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Re-pair noise sources ``x0 [B, D]`` with targets ``x1 [B, D]`` within each condition ``[B]``.

        Exact OT for ``flow="ot"``, a sample of the entropic plan for ``flow="sb"``, unchanged for ``"i"``.
        Returns the re-ordered sources ``[B, D]`` (row ``j`` pairs with ``x1[j]``).
        """
        if self.flow == "i":
            return x0
        if self.flow == "sb":
            return x0[sinkhorn_pairing(x0, x1, 2.0 * self.sigma**2, groups=condition)]  # [B, D]
        out = x0.clone()
        for c in torch.unique(condition):
            rows = torch.nonzero(condition == c).view(-1)  # [n_c]
            if len(rows) > 1:
                out[rows] = x0[rows][ot_permutation(x0[rows], x1[rows])]
        return out

    def sample_path(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point ``x_t`` on the conditional path and the matching target ``u_t``.

        Parameters
        ----------
        x0, x1
            ``[B, D]`` paired source and target.
        t
            ``[B]`` times in ``(0, 1)``.

        Returns
        -------
        ``(x_t, u_t)``, both ``[B, D]``.
        """
        tt = t.view(-1, 1)  # [B, 1]
        mu = tt * x1 + (1.0 - tt) * x0  # [B, D]
        u = x1 - x0  # [B, D]
        if self.sigma == 0:
            return mu, u
        eps = torch.randn_like(mu)  # [B, D]
        if self.flow == "sb":
            # sigma_t = sigma sqrt(t(1-t)); u_t = sigma_t' / sigma_t (x_t - mu_t) + (x1 - x0), written stably
            std = self.sigma * torch.sqrt(tt * (1.0 - tt))  # [B, 1]
            dstd = self.sigma * (1.0 - 2.0 * tt) / (2.0 * torch.sqrt(tt * (1.0 - tt)))  # [B, 1]
            return mu + std * eps, u + dstd * eps
        return mu + self.sigma * eps, u

    # ------------------------------------------------------------------ training
    @auto_move_data
    def inference(self, x, condition, context, is_control) -> dict[str, torch.Tensor]:
        """Draw sources, pair them, and sample the conditional paths of a batch.

        Returns
        -------
        ``{"x_t": [B, D], "t": [B], "u_t": [B, D], "c": [B, P]}``.
        """
        condition, context = condition.view(-1).long(), context.view(-1).long()
        x1 = self.standardize(x.float())  # [B, D]
        x0 = self.draw_source(x1, context, is_control)  # [B, D]
        if self.source == "noise":
            x0 = self.pair(x0, x1, condition)  # [B, D]
        t = torch.rand(x1.shape[0], device=x1.device) * (1.0 - 2.0 * T_EPS) + T_EPS  # [B]
        x_t, u_t = self.sample_path(x0, x1, t)  # [B, D], [B, D]
        c = self.covariates[condition]  # [B, P]
        return {"x_t": x_t, "t": t, "u_t": u_t, "c": c}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"x_t": inference_outputs["x_t"], "t": inference_outputs["t"], "c": inference_outputs["c"]}

    @auto_move_data
    def generative(self, x_t, t, c) -> dict[str, torch.Tensor]:
        """Vector field at the path points: ``{"v": [B, D]}``."""
        return {"v": self.field(x_t, t, c)}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Flow-matching loss: squared error summed over features, averaged over cells."""
        recon = (generative_outputs["v"] - inference_outputs["u_t"]).pow(2).sum(-1)  # [B]
        return LossOutput(loss=recon.mean(), reconstruction_loss=recon, kl_local=torch.zeros_like(recon))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        x0: torch.Tensor,
        covariates: torch.Tensor,
        *,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        n_steps: int | None = None,
        return_path: bool = False,
    ) -> torch.Tensor:
        """Integrate ``dx/dt = v(x, t, c)`` from standardised sources ``x0`` at ``t = 0`` to ``t = 1``.

        Parameters
        ----------
        x0
            ``[B, D]`` standardised start states.
        covariates
            ``[B, P]`` covariate vectors (or ``[1, P]`` / ``[P]``, shared by all cells).
        method
            A ``torchdiffeq`` solver: ``"dopri5"`` (adaptive, default), ``"euler"``, ``"rk4"``, ...
        rtol, atol
            Tolerances of adaptive solvers.
        n_steps
            Number of equal steps for fixed-step solvers (default 100); ignored by adaptive ones.
        return_path
            Return the states at ``n_steps + 1`` equally spaced times (default 101) instead of the end.

        Returns
        -------
        ``[B, D]`` standardised generated states (``[T, B, D]`` with ``return_path``).
        """
        was_training = self.training
        self.eval()
        x0 = x0.to(self.x_mean.device, torch.float32)
        c = torch.as_tensor(covariates, dtype=torch.float32, device=x0.device)
        if self.n_covariates == 0:
            c = x0.new_zeros(x0.shape[0], 0)  # [B, 0]
        else:
            c = c.reshape(-1, self.n_covariates).expand(x0.shape[0], -1)  # [B, P]

        def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.field(x, t, c)  # [B, D]

        options = None
        if method in FIXED_STEP_METHODS:
            n_steps = 100 if n_steps is None else int(n_steps)
            options = {"step_size": 1.0 / n_steps}
        if return_path:
            n_grid = 100 if n_steps is None else int(n_steps)
            times = torch.linspace(0.0, 1.0, n_grid + 1, device=x0.device)  # [T]
        else:
            times = torch.tensor([0.0, 1.0], device=x0.device)  # [2]
        path = odeint(rhs, x0, times, method=method, rtol=rtol, atol=atol, options=options)  # [T, B, D]
        self.train(was_training)
        return path if return_path else path[-1]

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Alias of :meth:`generate`."""
        return self.generate(*args, **kwargs)
