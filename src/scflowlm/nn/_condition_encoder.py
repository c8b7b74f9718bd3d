"""The condition encoder: where the perturbations of a condition become one embedding, the same in any order."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConditionEncoder"]


class ConditionEncoder(nn.Module):
    """The single perturbations of a condition -> one embedding, built from its parts.

    Each single ``s`` of a condition becomes a token

    ``t_s = known_s * E[s] + W v_s`` (its identity), or ``t_s = h`` when the flow's head start already holds its
    measured effect (the additive prior)

    with ``E[s]`` a learned embedding of the single (used only for singles seen in training: an embedding that no
    training cell updated would be noise), ``W v_s`` a learned projection of the single's gene vector ``v_s`` (when
    the model was given vectors; the route to singles never perturbed in training), and ``h`` one learned
    embedding for every part that is already in the head start: the model reads what it has still to move, and a
    pair whose two singles are in the head start reads exactly as a single in the head start did in training. The
    condition's embedding is the **mean** of its tokens: ``A+B`` and ``B+A`` give the same embedding and a single
    and a pair share every parameter. A condition without perturbations (a control) embeds to zeros.

    Parameters
    ----------
    n_singles
        Size ``V`` of the vocabulary of single perturbations.
    hidden_size
        Width ``H`` of the embedding.
    vector_size
        Dimension ``E`` of the gene vectors (0: none).
    init_std
        Standard deviation of the initial embeddings (GPT-NeoX's ``initializer_range``, so the token sits at the
        scale of the prompt's word embeddings).
    """

    def __init__(self, n_singles: int, hidden_size: int, *, vector_size: int = 0, init_std: float = 0.02):
        super().__init__()
        self.n_singles, self.hidden_size, self.vector_size = n_singles, hidden_size, vector_size
        self.embedding = nn.Embedding(max(n_singles, 1), hidden_size)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.in_prior = nn.Parameter(torch.zeros(hidden_size))
        self.project = nn.Linear(vector_size, hidden_size, bias=False) if vector_size else None
        if self.project is not None:
            nn.init.normal_(self.project.weight, std=init_std / max(vector_size, 1) ** 0.5)

    def forward(
        self,
        members: torch.Tensor,
        in_prior: torch.Tensor,
        known: torch.Tensor,
        vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings ``[B, H]`` of ``B`` conditions.

        Parameters
        ----------
        members
            ``[B, P]`` vocabulary index of each single of each condition, ``-1`` padding.
        in_prior
            ``[B, P]`` whether each single's effect is in the condition's head start.
        known
            ``[V]`` whether each single was seen in training (its embedding trained).
        vectors
            ``[V, E]`` gene vector of each single (zeros for a single without one), or ``None``.
        """
        valid = members >= 0  # [B, P]
        known = known if len(known) else known.new_zeros(1)  # an empty vocabulary: every row is padding
        index = members.clamp(min=0)  # [B, P]
        tokens = self.embedding(index) * known[index].unsqueeze(-1).to(self.embedding.weight)  # [B, P, H]
        if self.project is not None and vectors is not None:
            tokens = tokens + self.project(vectors[index].to(tokens))  # [B, P, H]
        covered = in_prior.unsqueeze(-1).to(tokens)  # [B, P, 1]
        tokens = (
            tokens * (1 - covered) + covered * self.in_prior
        )  # [B, P, H]: covered parts lose their identity
        tokens = tokens * valid.unsqueeze(-1).to(tokens)
        count = valid.sum(1, keepdim=True).clamp(min=1).to(tokens)  # [B, 1]
        return tokens.sum(1) / count  # [B, H]
