"""The CaLMFlow torch module: a causal LM solving the Volterra flow-matching problem (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

from scflowlm.nn import (
    KVStorage,
    SpatioTemporalTokenizer,
    VariationalHead,
    backbone_forward,
    new_kv_cache,
    reserve_kv_cache,
)

from ._base import FlowModuleBase
from ._rollout import CaLMFlowGeneration
from ._volterra import group_trajectories, straight_path, time_grid

if TYPE_CHECKING:
    from transformers import DynamicCache

    from ._data import FlowData

__all__ = ["CaLMFlowModule"]


class CaLMFlowModule(CaLMFlowGeneration, FlowModuleBase):
    """Prompt + spatiotemporal tokens -> GPT-NeoX -> variational head -> next state.

    Training (teacher forcing, simulation-free): a batch of cells ``x1`` and sources ``x0`` (noise or paired
    control cells) give straight paths at ``N`` time points; cells of one condition are grouped ``M`` to a
    sequence; the prompt of the condition is prepended (no loss on it); the outputs of the ``K`` tokens of every
    (time, trajectory) state predict the velocity to the next state.

    Loss per trajectory: ``sum_d (v_hat - v)^2`` averaged over the ``N - 1`` steps (squared next-point error
    divided by ``dt^2``: velocity units, summed over features) ``+ kl_weight * KL`` (summed over latent
    dimensions, averaged over steps).

    Parameters
    ----------
    backbone
        A GPT-NeoX trunk (:class:`~transformers.GPTNeoXModel`) fed ``inputs_embeds``.
    n_features
        Dimension ``D`` of a cell state.
    data
        The conditions, statistics and control pool, with the prompts (``prompt_ids``, ``prompt_mask``: ``[2C, L]``,
        rows ``C..2C-1`` the prompts a condition reads when it starts at its head start, naming only the
        perturbations still to move; with ``prompt_dropout``, ``[3C, L]``, rows ``2C..3C-1`` the context-free
        prompts); see :class:`~scflowlm.module.FlowData`.
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
    kl_weight
        ``beta``, the weight of the KL term.
    source
        ``"noise"`` or ``"control"``.
    dropout
        Dropout in the tokenizer and head MLPs.
    prompt_dropout
        Probability that a training sequence reads its condition's context-free prompt instead of the full one.
    head_start_dropout
        Probability that a training condition starts without its head start (per minibatch), so the flow is also
        learned from the control cells alone; see :meth:`~scflowlm.module.FlowModuleBase.head_start_use`.
    zero_velocity
        Start the head's output at zero (:class:`~scflowlm.nn.VariationalHead`'s ``zero_init``): the flow moves
        nothing until training moves it, so an untrained flow predicts its head start.
    head_start_penalty
        Weight ``lambda`` of a penalty ``lambda * |v_hat|^2`` on the velocity of sequences that start at their head
        start: a move away from the head start must lower the flow-matching error by more than it costs.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_features: int,
        data: FlowData,
        *,
        n_time_points: int = 4,
        n_space_tokens: int = 1,
        n_trajectories: int = 1,
        n_latent: int = 16,
        variational: str = "cvae",
        kl_weight: float = 0.3,
        source: str = "noise",
        dropout: float = 0.0,
        prompt_dropout: float = 0.0,
        head_start_dropout: float = 0.0,
        zero_velocity: bool = False,
        head_start_penalty: float = 0.0,
    ):
        if data.prompt_ids is None or data.prompt_mask is None:
            raise ValueError(
                "CaLMFlowModule needs data.prompt_ids and data.prompt_mask (the conditions' prompts)."
            )
        super().__init__(n_features, source, data, head_start_dropout=head_start_dropout)
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.encoder = self._build_encoder(data, hidden)
        self.n_time_points, self.n_space_tokens = n_time_points, n_space_tokens
        self.n_trajectories, self.kl_weight = n_trajectories, kl_weight
        self.prompt_dropout = prompt_dropout
        self.head_start_penalty = float(head_start_penalty)
        self.state_tokenizer = SpatioTemporalTokenizer(
            n_features, hidden, n_space_tokens, n_time_points, dropout
        )
        self.head = VariationalHead(
            n_space_tokens * hidden,
            n_features,
            n_latent,
            max(2 * hidden, 128),
            variational,
            dropout,
            zero_init=zero_velocity,
        )
        self.register_buffer("times", time_grid(n_time_points), persistent=False)

    # ------------------------------------------------------------------ prompts
    def embed_prompt(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt token ids ``[S, L]`` -> embeddings ``[S, L, H]`` from the backbone's input embedding."""
        return self.backbone.get_input_embeddings()(ids)

    def known_tokens(self) -> torch.Tensor:
        """``[V]`` whether a prompt token id is a word of the prompts of the conditions with training cells.

        Every prompt row of such a condition counts (full, head-start and context-free). A learned word embedding of
        no such prompt was never trained: it is random, and reads as noise.
        """
        n = len(self.condition_is_control)
        measured = torch.isfinite(self.condition_means).all(1)  # [C]
        rows = measured.repeat(len(self.prompt_ids) // max(n, 1))  # [C']: rows c, C+c, (2C+c) of condition c
        ids = self.prompt_ids[rows][self.prompt_mask[rows].bool()]  # [tokens]
        out = torch.zeros(self.backbone.get_input_embeddings().num_embeddings, dtype=torch.bool)
        out[ids.cpu()] = True
        return out

    def prefix(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        members: torch.Tensor | None = None,
        in_head_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What a sequence reads before its states: the prompt's words, then the condition encoder's token.

        ``prompt_ids``, ``prompt_mask``: ``[U, L]`` (left-padded); ``members``, ``in_head_start``: ``[U, P]`` the
        conditions' single perturbations (see :class:`~scflowlm.nn.ConditionEncoder`; ``None``: none). Returns the
        embeddings ``[U, L+1, H]`` and their mask ``[U, L+1]``.
        """
        if members is None:
            members = torch.full((len(prompt_ids), 1), -1, dtype=torch.long, device=prompt_ids.device)
            in_head_start = torch.zeros_like(members, dtype=torch.bool)
        words = self.embed_prompt(prompt_ids)  # [U, L, H]
        token = self.encoder(members.to(words.device), in_head_start.to(words.device))
        emb = torch.cat([words, token.unsqueeze(1).to(words)], dim=1)  # [U, L+1, H]
        return emb, torch.cat([prompt_mask, prompt_mask.new_ones(len(prompt_mask), 1)], dim=1)  # [U, L+1]

    def _prompt_cache(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        rows: torch.Tensor,
        members: torch.Tensor | None = None,
        in_head_start: torch.Tensor | None = None,
        reserve: int = 0,
        storage: KVStorage | None = None,
    ) -> tuple[DynamicCache, torch.Tensor | None]:
        """Encode each of ``U`` prefixes once; every sequence then reads the keys and values of its own.

        ``prompt_ids``, ``prompt_mask``: ``[U, L]``; ``members``, ``in_head_start``: ``[U, P]`` (see :meth:`prefix`);
        ``rows``: ``[S]`` prefix of each sequence. Returns the key/value cache ``[S, ..., L+1, ...]`` and the prefix
        mask ``[S, L+1]`` (``None`` without padding: plain causal attention, no mask tensor to build). Gradients
        flow through the cache, so the prefix costs ``U`` instead of ``S`` passes in training too. ``reserve > 0``
        (generation) leaves room for that many more positions, in ``storage`` (:func:`~scflowlm.nn.reserve_kv_cache`).
        """
        emb, mask = self.prefix(prompt_ids, prompt_mask, members, in_head_start)  # [U, L+1, H], [U, L+1]
        padded, cache = not bool(mask.all()), new_kv_cache()
        backbone_forward(self.backbone, emb, attention_mask=mask if padded else None, cache=cache)
        if reserve > 0:  # [U, ...] -> [S, ..., L+1+reserve, ...]
            reserve_kv_cache(cache, reserve, rows=rows, storage=storage)
        else:
            cache.reorder_cache(rows)  # [U, ...] -> [S, ...]
        return cache, (mask[rows] if padded else None)

    def _run(self, emb: torch.Tensor, pmask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone over ``[prefix ; tokens]`` without a cache (the reference the cached passes must equal).

        ``emb``, ``pmask``: ``[S, L+1, H]``, ``[S, L+1]`` from :meth:`prefix`. Returns the outputs at the token
        positions ``[S, T, H]``.
        """
        emb = torch.cat([emb.to(tokens.dtype), tokens], dim=1)  # [S, L+1+T, H]
        mask = None  # no padding: plain causal attention, no mask tensor to build
        if not bool(pmask.all()):
            mask = torch.cat([pmask, pmask.new_ones(tokens.shape[:2])], dim=1)  # [S, L+1+T]
        return backbone_forward(self.backbone, emb, attention_mask=mask)[:, pmask.shape[1] :]

    # ------------------------------------------------------------------ training
    @auto_move_data
    def inference(self, x, condition, context) -> dict[str, torch.Tensor]:
        """Teacher-forced pass: backbone outputs of every state and the true velocities.

        Returns
        -------
        ``{"h": [S, N-1, M, K*H], "velocity": [S, N-1, M, D]}``.
        """
        use_head_start = self.head_start_use()  # [C]
        # [B, D] in the frame of the head start: the flow learns what it leaves to move
        x1 = self.standardize(x) - self.head_start(condition, use_head_start)
        x0 = self.draw_source(x1, condition, context)  # [B, D]
        groups = group_trajectories(condition, self.n_trajectories)  # [S, M]
        path = straight_path(x0[groups], x1[groups], self.times).transpose(1, 2)  # [S, N, M, D]
        n_conditions = len(self.condition_is_control)
        prompt = condition[groups[:, 0]]  # [S] row of each sequence's prompt
        prompt = prompt + n_conditions * use_head_start[prompt]  # rows C..2C-1: the head start's prompts
        if self.training and self.prompt_dropout > 0:  # some sequences read their context-free prompt
            dropped = torch.rand(len(prompt), device=prompt.device) < self.prompt_dropout
            prompt = torch.where(dropped, prompt % n_conditions + 2 * n_conditions, prompt)
        used, rows = torch.unique(prompt, return_inverse=True)  # [U], [S]
        cond = used % n_conditions  # [U] the condition of each prompt
        in_head_start = self.in_head_start[cond] & use_head_start[cond].unsqueeze(-1)  # [U, P]
        cache, mask = self._prompt_cache(
            self.prompt_ids[used], self.prompt_mask[used], rows, self.members[cond], in_head_start
        )
        tokens = self.state_tokenizer(path)  # [S, N*M*K, H]
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(tokens.shape[:2])], dim=1)  # [S, L+N*M*K]
        h = backbone_forward(self.backbone, tokens, attention_mask=mask, cache=cache)  # [S, N*M*K, H]
        S, N, M = path.shape[:3]
        h = h.view(S, N, M, -1)  # [S, N, M, K*H]
        dt = self.times[1:] - self.times[:-1]  # [N-1]
        velocity = (path[:, 1:] - path[:, :-1]) / dt.view(1, -1, 1, 1)  # [S, N-1, M, D]
        started = use_head_start[condition[groups[:, 0]]]  # [S] sequences that start at their head start
        return {"h": h[:, :-1], "velocity": velocity, "started": started}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"h": inference_outputs["h"], "velocity": inference_outputs["velocity"]}

    @auto_move_data
    def generative(self, h, velocity) -> dict[str, torch.Tensor]:
        """Variational head on every state: predicted velocity ``[S, N-1, M, D]`` and KL ``[S, N-1, M]``."""
        v_hat, kl = self.head(h, velocity)
        return {"v_hat": v_hat, "kl": kl}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Volterra flow-matching loss (paper eq. 9) per trajectory; see the class docstring for the scale.

        Sequences that start at their head start add ``head_start_penalty * sum_d v_hat^2`` per step.
        """
        err = (generative_outputs["v_hat"] - inference_outputs["velocity"]).pow(2).sum(-1)  # [S, N-1, M]
        if self.head_start_penalty > 0:  # a flow that starts at its head start pays for every move
            started = inference_outputs["started"].to(err).view(-1, 1, 1)  # [S, 1, 1]
            err = err + self.head_start_penalty * started * generative_outputs["v_hat"].pow(2).sum(-1)
        recon = err.mean(1).reshape(-1)  # [S*M]
        kl = generative_outputs["kl"].mean(1).reshape(-1)  # [S*M]
        loss = (recon + self.kl_weight * kl).mean()
        return LossOutput(loss=loss, reconstruction_loss=recon, kl_local=kl)
