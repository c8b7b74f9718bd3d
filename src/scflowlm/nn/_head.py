"""Variational decoding head: continuous next tokens (paper section 3.3)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["VariationalHead"]

VariationalMode = Literal["cvae", "paper", "none"]


def _mlp(n_in: int, n_hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden),
        nn.LayerNorm(n_hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(n_hidden, n_out),
    )


def _gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)), summed over the last dimension."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0).sum(-1)


class VariationalHead(nn.Module):
    """Map the backbone outputs of one state's K tokens to the velocity towards the next state.

    The head predicts an *increment*: ``z_next = z + dt * v`` with ``v`` decoded from a latent sample, so
    the loss is measured in velocity units (calibration: decoding the next point directly underfits).

    Three modes:

    ``"cvae"`` (default)
        A conditional VAE with a learned prior. Prior ``N(mu, sigma^2)`` from the backbone outputs ``h``;
        during training the latent comes from a posterior that also sees the target velocity, and the KL is
        taken between posterior and prior. At inference ``z ~ N(mu, tau * sigma^2)``. The latent carries
        the part of the next state that the history does not determine, so sampling gives a distribution,
        not the conditional mean.
    ``"paper"``
        As written in the paper: ``z ~ N(mu(h), sigma(h)^2)`` both in training and inference (variance
        scaled by ``tau`` at inference), KL to ``N(0, I)``, decoder from ``z`` alone.
    ``"none"``
        Deterministic decoder from ``h``; no latent, no KL.

    Parameters
    ----------
    input_size
        Size of ``h`` (``K * H``: the K token outputs of a state, concatenated).
    n_features
        Dimension ``D`` of a state.
    n_latent
        Latent dimension.
    n_hidden
        Width of the MLPs.
    mode
        One of ``"cvae"``, ``"paper"``, ``"none"``.
    dropout
        Dropout inside the MLPs.
    zero_init
        Start the decoder's output layer at zero: the velocity is 0 until training moves it, so a flow that
        starts at a head start predicts the head start itself until the data say otherwise.
    """

    def __init__(
        self,
        input_size: int,
        n_features: int,
        n_latent: int,
        n_hidden: int,
        mode: VariationalMode = "cvae",
        dropout: float = 0.0,
        *,
        zero_init: bool = False,
    ):
        super().__init__()
        if mode not in ("cvae", "paper", "none"):
            raise ValueError(f"variational must be 'cvae', 'paper' or 'none', got {mode!r}.")
        self.mode = mode
        self.n_latent = n_latent
        if mode != "none":
            self.prior = _mlp(input_size, n_hidden, 2 * n_latent, dropout)  # -> (mu, logvar)
        if mode == "cvae":
            self.posterior = _mlp(input_size + n_features, n_hidden, 2 * n_latent, dropout)
        dec_in = {"cvae": n_latent + input_size, "paper": n_latent, "none": input_size}[mode]
        self.decoder = _mlp(dec_in, n_hidden, n_features, dropout)
        if zero_init:
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)

    def _split(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 6.0)

    def forward(self, h: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass.

        Parameters
        ----------
        h
            ``[..., input_size]`` backbone outputs.
        target
            ``[..., D]`` true velocity (used by the ``"cvae"`` posterior only).

        Returns
        -------
        ``(v, kl)``: predicted velocity ``[..., D]`` and KL divergence ``[...]`` (summed over latent dims).
        """
        if self.mode == "none":
            return self.decoder(h), h.new_zeros(h.shape[:-1])
        mu_p, logvar_p = self._split(self.prior(h))
        if self.mode == "paper":
            z = mu_p + torch.randn_like(mu_p) * (0.5 * logvar_p).exp()
            kl = _gaussian_kl(mu_p, logvar_p, torch.zeros_like(mu_p), torch.zeros_like(logvar_p))
            return self.decoder(z), kl
        mu_q, logvar_q = self._split(self.posterior(torch.cat([h, target], dim=-1)))
        z = mu_q + torch.randn_like(mu_q) * (0.5 * logvar_q).exp()
        kl = _gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
        return self.decoder(torch.cat([z, h], dim=-1)), kl

    @torch.no_grad()
    def sample(
        self,
        h: torch.Tensor,
        *,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Inference pass: ``z ~ N(mu, temperature * sigma^2)`` from the prior, decoded to a velocity.

        Parameters
        ----------
        h
            ``[..., input_size]`` backbone outputs.
        temperature
            ``tau >= 0``; 0 decodes the prior mean.
        noise
            ``[..., n_latent]`` standard normal draws for ``z``; default: drawn from ``generator``.
        generator
            Torch generator for the latent noise when ``noise`` is not given.

        Returns
        -------
        ``[..., D]`` velocity.
        """
        if self.mode == "none":
            return self.decoder(h)
        mu, logvar = self._split(self.prior(h))
        if noise is None:
            device = generator.device if generator is not None else mu.device
            noise = torch.randn(mu.shape, generator=generator, device=device)
        z = mu + noise.to(mu) * (0.5 * logvar).exp() * temperature**0.5
        return self.decoder(z if self.mode == "paper" else torch.cat([z, h], dim=-1))
