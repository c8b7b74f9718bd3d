"""Conditional flow matching (I-CFM, OT-CFM, SB-CFM; Tong et al. 2024) as a torch module (pure torch + POT)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi.module.base import LossOutput, auto_move_data
from torchdiffeq import odeint

from scflowlm.nn import VectorFieldMLP

from ._base import FlowModuleBase
from ._coupling import ot_permutation, sinkhorn_pairing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._data import FlowData

__all__ = ["CFMModule"]

FLOWS = ("i", "ot", "sb")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
#: default Brownian-bridge sigma of SB-CFM (standardised units)
SB_DEFAULT_SIGMA = 0.5
#: smallest distance of a training time from 0 and 1 (the SB-CFM target diverges like 1/sqrt(t(1-t)))
T_EPS = 1e-4


class CFMModule(FlowModuleBase):
    """Conditional flow matching with an MLP vector field ``v(x_t, t, c)`` (Tong et al. 2024).

    Training (simulation-free): targets ``x1`` are the standardised cells of a batch, sources ``x0`` come
    from :meth:`~scflowlm.module.FlowModuleBase.draw_source` (``N(0, I)`` or OT-paired control cells of
    the same context). The covariate vector ``c`` of a cell is its condition's row of :attr:`covariates` (the
    context fields, one-hot) followed by the :class:`~scflowlm.nn.ConditionEncoder` embedding of its single
    perturbations (the same per-perturbation structure as CaLMFlow's). With ``t ~ U(0, 1)``:

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
    data
        The conditions, statistics and control pool, with each condition's context covariates (``covariates``,
        ``[C, Pc]``, one-hot context fields); see :class:`~scflowlm.module.FlowData`.
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
    n_encoding
        Width of the condition encoder's embedding of the single perturbations.
    head_start_dropout
        Probability that a training condition starts without its head start (per minibatch).
    zero_velocity
        Start the vector field's output at zero: an untrained flow predicts its head start.
    head_start_penalty
        Weight ``lambda`` of a penalty ``lambda * |v|^2`` on the field where a flow starts at its head start.
    """

    def __init__(
        self,
        n_features: int,
        data: FlowData,
        *,
        flow: str = "ot",
        sigma: float | None = None,
        n_hidden: int = 256,
        n_layers: int = 3,
        source: str = "noise",
        dropout: float = 0.0,
        n_frequencies: int = 4,
        n_encoding: int = 32,
        head_start_dropout: float = 0.0,
        zero_velocity: bool = False,
        head_start_penalty: float = 0.0,
    ):
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}.")
        if sigma is None:
            sigma = SB_DEFAULT_SIGMA if flow == "sb" else 0.0
        if sigma < 0 or (flow == "sb" and sigma <= 0):
            raise ValueError(f"sigma must be >= 0 (and > 0 for flow='sb'), got {sigma}.")
        if data.covariates is None or data.covariates.dim() != 2:
            raise ValueError(
                "CFMModule needs data.covariates, the [C, Pc] context covariates of the conditions."
            )
        super().__init__(n_features, source, data, head_start_dropout=head_start_dropout)
        self.encoder = self._build_encoder(data, n_encoding)
        #: width of the vector field's covariate input: the context covariates and the encoder's embedding
        self.n_covariates = data.covariates.shape[1] + n_encoding
        self.flow = flow
        self.sigma = float(sigma)
        self.head_start_penalty = float(head_start_penalty)
        self.field = VectorFieldMLP(
            n_features,
            self.n_covariates,
            n_hidden,
            n_layers,
            n_frequencies=n_frequencies,
            dropout=dropout,
            zero_init=zero_velocity,
        )

    def condition_covariates(
        self, covariates: torch.Tensor, members: torch.Tensor, in_head_start: torch.Tensor
    ) -> torch.Tensor:
        """The vector field's covariates ``[U, Pc+E]`` of ``U`` conditions.

        ``covariates``: ``[U, Pc]`` context covariates; ``members``, ``in_head_start``: ``[U, P]`` the single perturbations
        and which are in the head start (:class:`~scflowlm.nn.ConditionEncoder`).
        """
        encoded = self.encoder(members, in_head_start)  # [U, E]
        return torch.cat([covariates.to(encoded), encoded], dim=-1)

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
    def inference(self, x, condition, context) -> dict[str, torch.Tensor]:
        """Draw sources, pair them, and sample the conditional paths of a batch.

        Returns
        -------
        ``{"x_t": [B, D], "t": [B], "u_t": [B, D], "c": [B, P], "started": [B]}`` (``started``: the cells whose flow
        starts at their head start).
        """
        use_head_start = self.head_start_use()  # [C]
        # [B, D] in the frame of the head start: the flow learns what it leaves to move
        x1 = self.standardize(x) - self.head_start(condition, use_head_start)
        x0 = self.draw_source(x1, condition, context)  # [B, D]
        if self.source == "noise":
            x0 = self.pair(x0, x1, condition)  # [B, D]
        t = torch.rand(x1.shape[0], device=x1.device) * (1.0 - 2.0 * T_EPS) + T_EPS  # [B]
        x_t, u_t = self.sample_path(x0, x1, t)  # [B, D], [B, D]
        used, rows = torch.unique(condition, return_inverse=True)  # [U], [B]
        in_head_start = self.in_head_start[used] & use_head_start[used].unsqueeze(-1)  # [U, P]
        c = self.condition_covariates(self.covariates[used], self.members[used], in_head_start)[
            rows
        ]  # [B, Pc+E]
        return {"x_t": x_t, "t": t, "u_t": u_t, "c": c, "started": use_head_start[condition]}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"x_t": inference_outputs["x_t"], "t": inference_outputs["t"], "c": inference_outputs["c"]}

    @auto_move_data
    def generative(self, x_t, t, c) -> dict[str, torch.Tensor]:
        """Vector field at the path points: ``{"v": [B, D]}``."""
        return {"v": self.field(x_t, t, c)}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Flow-matching loss: squared error summed over features, averaged over cells.

        Cells whose flow starts at their head start add ``head_start_penalty * sum_d v^2``.
        """
        recon = (generative_outputs["v"] - inference_outputs["u_t"]).pow(2).sum(-1)  # [B]
        if self.head_start_penalty > 0:  # a flow that starts at its head start pays for every move
            started = inference_outputs["started"].to(recon)  # [B]
            recon = recon + self.head_start_penalty * started * generative_outputs["v"].pow(2).sum(-1)
        return LossOutput(loss=recon.mean(), reconstruction_loss=recon, kl_local=torch.zeros_like(recon))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def integrate(
        self,
        x0: torch.Tensor,
        covariates: torch.Tensor,
        *,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        n_steps: int | None = None,
        times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integrate ``dx/dt = v(x, t, c)`` from standardised sources ``x0 [B, D]`` at ``t = 0`` to ``t = 1``.

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
        times
            ``[T]`` times in ``[0, 1]`` at which to return the state (default ``[0, 1]``).

        Returns
        -------
        ``[T, B, D]`` standardised states at ``times``.
        """
        was_training = self.training
        self.eval()
        c = torch.as_tensor(covariates, dtype=x0.dtype, device=x0.device)
        if self.n_covariates == 0:
            c = x0.new_zeros(x0.shape[0], 0)  # [B, 0]
        else:
            c = c.reshape(-1, self.n_covariates).expand(x0.shape[0], -1)  # [B, P]

        def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.field(x, t, c)  # [B, D]

        options = None
        if method in FIXED_STEP_METHODS:
            options = {"step_size": 1.0 / (100 if n_steps is None else int(n_steps))}
        if times is None:
            times = torch.tensor([0.0, 1.0])
        # [T, B, D]
        path = odeint(rhs, x0, times.to(x0), method=method, rtol=rtol, atol=atol, options=options)
        self.train(was_training)
        return path

    @torch.no_grad()
    def sample(
        self,
        covariates: torch.Tensor,
        rows: torch.Tensor,
        *,
        members: torch.Tensor | None = None,
        in_head_start: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
        generators: Sequence[torch.Generator],
        batch_size: int = 256,
        return_path: bool = False,
        n_path_points: int = 11,
        **solver,
    ) -> torch.Tensor:
        """Generate cells of several conditions at once; raw coordinates in, raw coordinates out.

        Parameters
        ----------
        covariates
            ``[C, Pc]`` context covariates of the C conditions of this call.
        rows
            ``[n]`` condition of each cell.
        members, in_head_start
            ``[C, P]`` the single perturbations of the conditions and which are in their head start (``None``:
            none); see :meth:`condition_covariates`.
        x0
            ``[n, D]`` raw start states (a control source), or ``None`` for ``N(0, I)`` noise drawn from
            ``generators[c]`` for the cells of condition ``c``.
        shift
            ``[n, D]`` raw head start of each cell, added to every state of its path (see :meth:`head_start`).
        generators
            One torch generator per condition.
        batch_size
            Cells integrated at once. Adaptive solvers choose their steps for a whole batch, so their results
            depend on the batch within the solver's tolerance; fixed-step solvers give the same cells for any batch.
        return_path
            Return the states at ``n_path_points`` equally spaced times ``[n, T, D]`` instead of the end point.
        n_path_points
            Number of states of a returned path.
        **solver
            ``method``, ``rtol``, ``atol``, ``n_steps`` of :meth:`integrate`.
        """
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        z0 = self.start_states(rows, x0, generators).cpu()  # [n, D] standardised
        covariates = torch.as_tensor(covariates, dtype=z0.dtype).to(self.x_mean.device)  # [C, Pc]
        if members is None:
            members = torch.full((len(covariates), 1), -1, dtype=torch.long)
            in_head_start = torch.zeros_like(members, dtype=torch.bool)
        device = self.x_mean.device
        cov = self.condition_covariates(
            covariates, members.to(device), in_head_start.to(device)
        ).cpu()  # [C, Pc+E]
        times = torch.linspace(0.0, 1.0, n_path_points) if return_path else None
        order = torch.argsort(rows, stable=True)  # cells of one condition together
        parts = []
        device = self.x_mean.device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            path = self.integrate(z0[idx].to(device), cov[rows[idx]].to(device), times=times, **solver)
            parts.append(self.unstandardize(path).transpose(0, 1).cpu())  # [b, T, D]
        out = torch.empty((len(rows), *parts[0].shape[1:]), dtype=z0.dtype) if parts else torch.empty(0)
        if parts:
            out[order] = torch.cat(parts)
        if shift is not None and parts:
            out = out + shift.unsqueeze(1).to(out)
        return out if return_path else out[:, -1]
