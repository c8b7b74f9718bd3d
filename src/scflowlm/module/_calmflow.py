"""The CaLMFlow torch module: a causal LM solving the Volterra flow-matching problem (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from scflowlm.nn import SpatioTemporalTokenizer, VariationalHead, backbone_forward, new_kv_cache

from ._coupling import FlowSourceMixin
from ._volterra import group_trajectories, straight_path, time_grid

if TYPE_CHECKING:
    from transformers import DynamicCache

__all__ = ["CaLMFlowModule"]


class CaLMFlowModule(FlowSourceMixin, BaseModuleClass):
    """Prompt + spatiotemporal tokens -> GPT-NeoX -> variational head -> next state.

    Training (teacher forcing, simulation-free): a batch of cells ``x1`` and sources ``x0`` (noise or paired
    control cells) give straight paths at ``N`` time points; cells of one condition are grouped ``M`` to a
    sequence; the prompt embedding of the condition is prepended (no loss on it); the outputs of the ``K``
    tokens of every (time, trajectory) state predict the velocity to the next state.

    Loss per trajectory: ``sum_d (v_hat - v)^2`` averaged over the ``N - 1`` steps (squared next-point error
    divided by ``dt^2``: velocity units, summed over features) ``+ kl_weight * KL`` (summed over latent
    dimensions, averaged over steps).

    Parameters
    ----------
    backbone
        A GPT-NeoX trunk (:class:`~transformers.GPTNeoXModel`) fed ``inputs_embeds``.
    n_features
        Dimension ``D`` of a cell state.
    n_time_points
        ``N``.
    n_space_tokens
        ``K``.
    n_trajectories
        ``M``.
    n_latent
        Latent dimension of the variational head.
    variational
        Head mode, see :class:`~scflowlm.nn.VariationalHead`.
    source
        ``"noise"`` or ``"control"``.
    dropout
        Dropout in the tokenizer and head MLPs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_features: int,
        *,
        n_time_points: int = 16,
        n_space_tokens: int = 4,
        n_trajectories: int = 1,
        n_latent: int = 32,
        variational: str = "cvae",
        source: str = "noise",
        dropout: float = 0.0,
    ):
        super().__init__()
        self._init_source(n_features, source)
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.n_features = n_features
        self.n_time_points = n_time_points
        self.n_space_tokens = n_space_tokens
        self.n_trajectories = n_trajectories
        self.tokenizer = SpatioTemporalTokenizer(n_features, hidden, n_space_tokens, n_time_points, dropout)
        self.head = VariationalHead(
            n_space_tokens * hidden, n_features, n_latent, max(2 * hidden, 128), variational, dropout
        )
        self.register_buffer("times", time_grid(n_time_points), persistent=False)
        self.register_buffer("prompt_ids", torch.zeros(0, 1, dtype=torch.long), persistent=False)
        self.register_buffer("prompt_mask", torch.zeros(0, 1, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ prompts
    def set_prompts(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Token ids ``[C, L]`` and attention mask ``[C, L]`` of the C training conditions (left-padded)."""
        device = self.x_mean.device
        self.prompt_ids = torch.as_tensor(ids, dtype=torch.long).to(device)
        self.prompt_mask = torch.as_tensor(mask, dtype=torch.long).to(device)

    def embed_prompt(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt token ids ``[S, L]`` -> embeddings ``[S, L, H]`` from the backbone's input embedding."""
        return self.backbone.get_input_embeddings()(ids)

    # ------------------------------------------------------------------ training
    @auto_move_data
    def inference(self, x, condition, context, is_control) -> dict[str, torch.Tensor]:
        """Teacher-forced pass: backbone outputs of every state and the true velocities.

        Returns
        -------
        ``{"h": [S, N-1, M, K*H], "velocity": [S, N-1, M, D]}``.
        """
        condition, context = condition.view(-1).long(), context.view(-1).long()
        x1 = self.standardize(x.float())  # [B, D]
        x0 = self.draw_source(x1, context, is_control)  # [B, D]
        groups = group_trajectories(condition, self.n_trajectories)  # [S, M]
        path = straight_path(x0[groups], x1[groups], self.times).transpose(1, 2)  # [S, N, M, D]
        used, rows = torch.unique(condition[groups[:, 0]], return_inverse=True)  # [U], [S]
        cache, mask = self._prompt_cache(self.prompt_ids[used], self.prompt_mask[used], rows)
        tokens = self.tokenizer(path)  # [S, N*M*K, H]
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(tokens.shape[:2])], dim=1)  # [S, L+N*M*K]
        h = backbone_forward(self.backbone, tokens, attention_mask=mask, cache=cache)  # [S, N*M*K, H]
        S, N, M = path.shape[:3]
        h = h.view(S, N, M, -1)  # [S, N, M, K*H]
        dt = self.times[1:] - self.times[:-1]  # [N-1]
        velocity = (path[:, 1:] - path[:, :-1]) / dt.view(1, -1, 1, 1)  # [S, N-1, M, D]
        return {"h": h[:, :-1], "velocity": velocity}

    def _prompt_cache(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor
    ) -> tuple[DynamicCache, torch.Tensor | None]:
        """Encode each of ``C`` prompts once; every sequence then reads the keys and values of its own prompt.

        ``prompt_ids``, ``prompt_mask``: ``[C, L]`` (left-padded); ``rows``: ``[S]`` prompt of each sequence.
        Returns the key/value cache ``[S, ..., L, ...]`` and the prompt mask ``[S, L]`` (``None`` without
        padding: plain causal attention, no mask tensor to build). Gradients flow through the cache, so the
        prompt costs ``C`` instead of ``S`` passes in training too.
        """
        padded = not bool(prompt_mask.all())
        cache = new_kv_cache()
        emb = self.embed_prompt(prompt_ids)  # [C, L, H]
        backbone_forward(self.backbone, emb, attention_mask=prompt_mask if padded else None, cache=cache)
        cache.reorder_cache(rows)  # [C, ...] -> [S, ...]
        return cache, (prompt_mask[rows] if padded else None)

    def _run(self, prompt: torch.Tensor, pmask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone over ``[prompt ; tokens]`` without a cache (the reference the cached passes must equal).

        Returns the outputs at the token positions ``[S, T, H]``.
        """
        emb = torch.cat([self.embed_prompt(prompt).to(tokens.dtype), tokens], dim=1)  # [S, L+T, H]
        mask = None  # no padding: plain causal attention, no mask tensor to build
        if not bool(pmask.all()):
            mask = torch.cat([pmask, pmask.new_ones(tokens.shape[:2])], dim=1)  # [S, L+T]
        return backbone_forward(self.backbone, emb, attention_mask=mask)[:, prompt.shape[1] :]

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"h": inference_outputs["h"], "velocity": inference_outputs["velocity"]}

    @auto_move_data
    def generative(self, h, velocity) -> dict[str, torch.Tensor]:
        """Variational head on every state: predicted velocity ``[S, N-1, M, D]`` and KL ``[S, N-1, M]``."""
        v_hat, kl = self.head(h, velocity)
        return {"v_hat": v_hat, "kl": kl}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 0.3) -> LossOutput:
        """Volterra flow-matching loss (paper eq. 9) per trajectory; see the class docstring for the scale."""
        err = (generative_outputs["v_hat"] - inference_outputs["velocity"]).pow(2).sum(-1)  # [S, N-1, M]
        recon = err.mean(1).reshape(-1)  # [S*M]
        kl = generative_outputs["kl"].mean(1).reshape(-1)  # [S*M]
        loss = (recon + kl_weight * kl).mean()
        return LossOutput(loss=loss, reconstruction_loss=recon, kl_local=kl)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        x0: torch.Tensor,
        *,
        temperature: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Autoregressive rollout from standardised sources.

        The prompt is encoded once (a one-row prompt is shared by all sequences); with ``use_cache`` every
        step then feeds only the ``M*K`` tokens of the newest state. Without it, the whole sequence is
        recomputed at every step (the reference for the cache).

        Parameters
        ----------
        prompt_ids, prompt_mask
            ``[1, L]`` (shared) or ``[S, L]``.
        x0
            ``[S, M, D]`` standardised start states.
        temperature
            ``tau``: scales the latent variance.
        use_cache
            Use the key/value cache.
        generator
            Torch generator for the latent noise.

        Returns
        -------
        ``[S, N, M, D]`` standardised path; ``[:, -1]`` are the generated cells.
        """
        S, M, _ = x0.shape
        N = self.n_time_points
        prompt_ids, prompt_mask = prompt_ids.to(x0.device), prompt_mask.to(x0.device)
        dt = self.times[1:] - self.times[:-1]
        path = [x0]
        if use_cache:  # one prompt for all sequences ([1, L]) or one per sequence ([S, L])
            shared = prompt_ids.shape[0] == 1
            rows = torch.zeros(S, dtype=torch.long, device=x0.device) if shared else torch.arange(S, device=x0.device)
            cache, mask = self._prompt_cache(prompt_ids, prompt_mask, rows)  # mask: [S, L], grows by M*K a step
        for i in range(N - 1):
            if use_cache:
                tokens = self.tokenizer(path[-1][:, None], time_index=i)  # [S, M*K, H]
                mask = torch.cat([mask, mask.new_ones(S, tokens.shape[1])], dim=1) if mask is not None else None
                h = backbone_forward(self.backbone, tokens, attention_mask=mask, cache=cache)  # [S, M*K, H]
            else:
                tokens = self.tokenizer(torch.stack(path, dim=1))  # [S, (i+1)*M*K, H]
                ids, pm = prompt_ids.expand(S, -1), prompt_mask.expand(S, -1)
                h = self._run(ids, pm, tokens)[:, -M * self.n_space_tokens :]  # [S, M*K, H]
            v = self.head.sample(h.reshape(S, M, -1), temperature=temperature, generator=generator)  # [S, M, D]
            path.append(path[-1] + dt[i] * v)
        return torch.stack(path, dim=1)

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Alias of :meth:`generate`."""
        return self.generate(*args, **kwargs)
