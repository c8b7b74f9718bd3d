"""The condition encoder: where the perturbations of a condition become one embedding, the same in any order."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConditionEncoder"]


class ConditionEncoder(nn.Module):
    """The single perturbations of a condition -> one embedding, built from its parts.

    Each single ``s`` of a condition becomes a token

    ``t_s = known_s * E[s] + W v_s`` (its identity), or ``t_s = c`` when the flow's head start already holds its
    measured effect (it is *covered*)

    with ``E[s]`` a learned embedding of the single (used only for singles seen in training: an embedding that no
    training cell updated would be noise), ``W v_s`` a learned projection of the single's gene vector ``v_s`` (when
    the model was given vectors; the route to singles never perturbed in training), and ``c`` the one learned
    :attr:`covered_token` of every part already in the head start: the model reads what it has still to move, and a
    pair whose two singles are in the head start reads exactly as a single in the head start did in training. The
    condition's embedding is the **mean** of its tokens: ``A+B`` and ``B+A`` give the same embedding and a single
    and a pair share every parameter. A condition without perturbations (a control) embeds to zeros.

    The encoder owns its vocabulary: which singles were seen in training (``known``, a buffer) and their gene
    vectors (``vectors``, a buffer, or none), set with :meth:`set_vocabulary` when the training data change.

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
        self.covered_token = nn.Parameter(torch.zeros(hidden_size))
        self.project = nn.Linear(vector_size, hidden_size, bias=False) if vector_size else None
        if self.project is not None:
            nn.init.normal_(self.project.weight, std=init_std / max(vector_size, 1) ** 0.5)
        self.register_buffer("known", torch.zeros(n_singles, dtype=torch.bool))
        self.register_buffer("vectors", torch.zeros(n_singles, vector_size) if vector_size else None)

    def set_vocabulary(self, known: torch.Tensor, vectors: torch.Tensor | None = None) -> None:
        """Which of the ``V`` singles were seen in training (``[V]``) and their gene vectors (``[V, E]``)."""
        self.known = known.to(self.embedding.weight.device, torch.bool)
        if vectors is not None:
            self.vectors = vectors.to(self.embedding.weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("known", "vectors"):  # a saved vocabulary of another size
            saved = state_dict.get(prefix + name)
            if (
                saved is not None
                and getattr(self, name) is not None
                and saved.shape != getattr(self, name).shape
            ):
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, members: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, H]`` of ``B`` conditions.

        Parameters
        ----------
        members
            ``[B, P]`` vocabulary index of each single of each condition, ``-1`` padding.
        covered
            ``[B, P]`` whether each single's effect is in the condition's head start.
        """
        valid = members >= 0  # [B, P]
        known = self.known if len(self.known) else self.known.new_zeros(1)  # an empty vocabulary: all padding
        index = members.clamp(min=0)  # [B, P]
        tokens = self.embedding(index) * known[index].unsqueeze(-1).to(self.embedding.weight)  # [B, P, H]
        if self.project is not None and self.vectors is not None:
            tokens = tokens + self.project(self.vectors[index].to(tokens))  # [B, P, H]
        cover = covered.unsqueeze(-1).to(tokens)  # [B, P, 1]
        tokens = (
            tokens * (1 - cover) + cover * self.covered_token
        )  # [B, P, H]: covered parts lose their identity
        tokens = tokens * valid.unsqueeze(-1).to(tokens)
        count = valid.sum(1, keepdim=True).clamp(min=1).to(tokens)  # [B, 1]
        return tokens.sum(1) / count  # [B, H]
