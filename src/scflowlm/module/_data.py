"""What a flow module knows of its data: one object of plain tensors, built by the model (no AnnData here)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FlowData"]


@dataclass
class FlowData:
    """Conditions, contexts, standardisation statistics, the control pool and the conditioning inputs of a module.

    The model builds it from its AnnData (:meth:`scflowlm.model.FlowModelBase._module_data`): from all registered
    cells when the model is built, from the training cells when it trains. Every tensor becomes a buffer of the
    module, in its ``state_dict``; states are kept raw and standardised where the module uses them, so a module
    can be rebuilt from a ``state_dict`` alone.

    Parameters
    ----------
    condition_codes
        ``[C, F]`` field codes of the ``C`` known conditions (row ``c`` is condition ``c``).
    n_categories
        ``[F]`` number of values of each field.
    condition_is_control
        ``[C]`` whether each condition is a control condition.
    context_codes
        ``[X, Fc]`` codes of the context fields of the ``X`` known contexts.
    n_context_categories
        ``[Fc]`` number of values of each context field.
    x_mean
        ``[D]`` per-feature mean of the training states.
    x_scale
        ``[]`` one global scale: states are standardised as ``(x - x_mean) / x_scale``.
    control_x
        ``[Nc, D]`` raw states of the training control cells (the sources of control-source flows).
    control_context
        ``[Nc]`` context index of each control cell.
    condition_means
        ``[C, D]`` raw mean state of each condition's training cells (NaN for a condition without any).
    condition_shift
        ``[C, D]`` raw head start added to the control cells a condition's flows start from (zeros: none).
    members
        ``[C, P]`` the single perturbations of each condition, as indices into the vocabulary of singles
        (``-1`` padding; a control has none).
    in_head_start
        ``[C, P]`` whether each single's measured effect is in the condition's head start.
    known_singles
        ``[V]`` whether each single of the vocabulary was perturbed in the training cells.
    single_vectors
        ``[V, E]`` gene vector of each single (zeros for one without), or ``None``.
    prompt_ids, prompt_mask
        ``[C', L]`` token ids and attention mask of the conditions' prompts, left-padded (CaLMFlow).
    covariates
        ``[C, P]`` covariate vector of each condition (CFM).
    """

    condition_codes: torch.Tensor
    n_categories: Sequence[int]
    condition_is_control: torch.Tensor
    context_codes: torch.Tensor
    n_context_categories: Sequence[int]
    x_mean: torch.Tensor
    x_scale: torch.Tensor
    control_x: torch.Tensor
    control_context: torch.Tensor
    condition_means: torch.Tensor
    condition_shift: torch.Tensor
    members: torch.Tensor
    in_head_start: torch.Tensor
    known_singles: torch.Tensor
    single_vectors: torch.Tensor | None = None
    prompt_ids: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    covariates: torch.Tensor | None = None

    #: fields that are per-field counts, not tensors
    COUNTS = ("n_categories", "n_context_categories")

    @classmethod
    def empty(cls, n_features: int) -> FlowData:
        """A placeholder of the right kinds and no conditions (a module to load a ``state_dict`` into)."""
        zeros = torch.zeros
        return cls(
            condition_codes=zeros(0, 0, dtype=torch.long),
            n_categories=[],
            condition_is_control=zeros(0, dtype=torch.bool),
            context_codes=zeros(0, 0, dtype=torch.long),
            n_context_categories=[],
            x_mean=zeros(n_features),
            x_scale=torch.ones(()),
            control_x=zeros(0, n_features),
            control_context=zeros(0, dtype=torch.long),
            condition_means=zeros(0, n_features),
            condition_shift=zeros(0, n_features),
            members=zeros(0, 0, dtype=torch.long),
            in_head_start=zeros(0, 0, dtype=torch.bool),
            known_singles=zeros(0, dtype=torch.bool),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of this object by name (``None`` entries left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in self.COUNTS and getattr(self, f.name) is not None
        }
