"""What every flow module shares: its data as buffers, condition lookup, standardisation, the source (pure torch)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import torch
from scvi.module.base import BaseModuleClass
from torch import nn

from scflowlm._constants import REGISTRY_KEYS
from scflowlm.nn import ConditionEncoder

from ._coupling import ot_permutation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._data import FlowData

__all__ = ["CodeIndex", "FlowModuleBase"]

SOURCES = ("noise", "control")


class _DataBuffers(nn.Module):
    """A module whose buffers hold data of any size: loading a ``state_dict`` takes the saved shapes."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CodeIndex(_DataBuffers):
    """Map rows of per-field integer codes to the index of a known combination.

    ``codes [K, F]`` lists the known combinations (row ``k`` is combination ``k``); ``n_categories [F]`` the
    number of values of each field. A row of codes ``[F]`` is folded into one integer (mixed radix) and looked up
    by binary search, so any number of fields and values works without a dense table.
    """

    def __init__(self, codes: torch.Tensor, n_categories: Sequence[int]):
        super().__init__()
        codes = torch.as_tensor(codes, dtype=torch.long).reshape(len(codes), len(n_categories))
        sizes = torch.as_tensor(list(n_categories), dtype=torch.long)  # [F]
        strides = torch.ones_like(sizes)
        if len(sizes) > 1:
            strides[:-1] = torch.flip(torch.cumprod(torch.flip(sizes[1:], [0]), 0), [0])
        sorted_keys, order = torch.sort((codes * strides).sum(-1))  # [K], [K]
        self.register_buffer("strides", strides)
        self.register_buffer("sorted_keys", sorted_keys)
        self.register_buffer("order", order)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-row codes ``[B, F]`` -> combination index ``[B]``; raises for an unknown combination."""
        if self.strides.numel() == 0:  # no fields: a single combination
            return torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        keys = (codes.long().view(codes.shape[0], -1) * self.strides).sum(-1)  # [B]
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=len(self.sorted_keys) - 1)  # [B]
        if not bool((self.sorted_keys[pos] == keys).all()):
            raise KeyError("A combination of field values was not registered when the model was built.")
        return self.order[pos]


class FlowModuleBase(_DataBuffers, BaseModuleClass):
    """The base of the flow modules: its data, minibatch inputs, standardisation and the source.

    Built from one :class:`~scflowlm.module.FlowData`, whose tensors become buffers (all in the ``state_dict``):
    cells come in as registered field codes; :attr:`conditions` and :attr:`contexts` turn them into a condition
    index (a prompt, a covariate vector) and a context index (which control cells a cell starts from).

    Cell states are standardised inside the module: ``(x - x_mean) / x_scale`` with a per-feature mean and one
    global scale (so the mean per-feature variance is 1 and distances keep the PCA geometry). The module
    standardises its inputs, its control pool and head starts where it uses them, and unstandardises its outputs,
    in training and in :meth:`sample`.

    With ``source="control"`` each perturbed training cell starts from a control cell of its own context (plus
    its condition's head start), paired by minibatch exact optimal transport, and control cells start from
    themselves.
    """

    def __init__(self, n_features: int, source: str, data: FlowData, *, head_start_dropout: float = 0.0):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be 'noise' or 'control', got {source!r}.")
        if (
            isinstance(head_start_dropout, bool)
            or not isinstance(head_start_dropout, numbers.Real)
            or not 0 <= head_start_dropout < 1
        ):
            raise ValueError(
                f"head_start_dropout must be a number in [0, 1) (e.g. 0.1), got {head_start_dropout!r}."
            )
        self.source = source
        self.n_features = n_features
        self.head_start_dropout = head_start_dropout
        self.conditions = CodeIndex(data.condition_codes, data.n_categories)
        self.contexts = CodeIndex(data.context_codes, data.n_context_categories)
        for name, value in self._plain_tensors(data).items():
            self.register_buffer(name, value)

    #: the condition encoder's class (a seam: a subclass may pool the singles another way)
    _encoder_cls = ConditionEncoder
    #: state_dict keys of earlier releases -> today's (a save of theirs loads)
    _RENAMED = {
        "in_prior": "in_head_start",
        "known_singles": "encoder.known",
        "single_vectors": "encoder.vectors",
        "encoder.in_prior": "encoder.covered_token",
    }

    @staticmethod
    def _plain_tensors(data: FlowData) -> dict[str, torch.Tensor]:
        """The tensors of ``data`` that become buffers of their own.

        The codes live in the two indices, the vocabulary of singles in the encoder.
        """
        tensors = data.tensors()
        kept_elsewhere = ("condition_codes", "context_codes", "known_singles", "single_vectors")
        return {k: v for k, v in tensors.items() if k not in kept_elsewhere}

    def _build_encoder(self, data: FlowData, width: int) -> ConditionEncoder:
        """The condition encoder (:attr:`_encoder_cls`) of ``width``, holding the vocabulary of ``data``."""
        vector_size = 0 if data.single_vectors is None else data.single_vectors.shape[1]
        encoder = self._encoder_cls(len(data.known_singles), width, vector_size=vector_size)
        encoder.set_vocabulary(data.known_singles, data.single_vectors)
        return encoder

    def load_data(self, data: FlowData) -> None:
        """Replace all data of the module at once (the training cells' data when training starts)."""
        device = self.x_mean.device
        self.conditions = CodeIndex(data.condition_codes, data.n_categories).to(device)
        self.contexts = CodeIndex(data.context_codes, data.n_context_categories).to(device)
        for name, value in self._plain_tensors(data).items():
            setattr(self, name, value.to(device))
        self.encoder.set_vocabulary(data.known_singles, data.single_vectors)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self._RENAMED.items():  # a save of an earlier release
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def data_shape_errors(self, *, n_conditions: int, n_singles: int) -> list[str]:
        """What in the module's data does not fit ``n_conditions`` conditions and ``n_singles`` singles (a damaged save).

        One line per buffer whose shape is wrong; empty when all fit.
        """
        C, D, V = n_conditions, self.n_features, n_singles
        members = tuple(self.members.shape)
        expected = {
            "condition_is_control": (C,),
            "condition_means": (C, D),
            "condition_shift": (C, D),
            "members": (C, members[1] if len(members) == 2 else -1),
            "in_head_start": members,
            "encoder.known": (V,),
            "x_mean": (D,),
            "x_scale": (),
            "control_x": (len(self.control_x), D),
            "control_context": (len(self.control_x),),
        }
        if self.encoder.vectors is not None:
            expected["encoder.vectors"] = (V, self.encoder.vectors.shape[-1])
        if getattr(self, "covariates", None) is not None:
            expected["covariates"] = (C, self.covariates.shape[-1])
        if getattr(self, "prompt_ids", None) is not None:
            expected["prompt_mask"] = tuple(self.prompt_ids.shape)
        state = dict(self.named_buffers())
        out = [
            f"{name} has shape {tuple(state[name].shape)}, expected {shape}"
            for name, shape in expected.items()
            if tuple(state[name].shape) != shape
        ]
        prompts = getattr(self, "prompt_ids", None)
        if prompts is not None and (prompts.ndim != 2 or C == 0 or len(prompts) % C):
            out.append(f"prompt_ids has {len(prompts)} rows, not a multiple of the {C} conditions")
        return out

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cell states and their condition and context indices."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        none = x.new_zeros(x.shape[0], 0)
        condition = self.conditions(tensors.get(REGISTRY_KEYS.CONDITION_KEY, none))  # [B]
        context = self.contexts(tensors.get(REGISTRY_KEYS.CONTEXT_KEY, none))  # [B]
        return {"x": x, "condition": condition, "context": context}

    # ------------------------------------------------------------------ standardisation
    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw coordinates ``[..., D]`` -> standardised (in the module's dtype)."""
        return (x.to(self.x_mean) - self.x_mean) / self.x_scale

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``[..., D]`` -> raw coordinates."""
        return x * self.x_scale + self.x_mean

    # ------------------------------------------------------------------ the source
    def head_start_use(self) -> torch.Tensor:
        """``[C]`` which conditions start at their head start in this minibatch.

        In training, each condition with a head start keeps it with probability ``1 - head_start_dropout`` (one draw per
        condition and minibatch), so the model also learns each flow without it; in evaluation, always.
        """
        has = (
            self.in_head_start.any(1)
            if self.in_head_start.numel()
            else torch.zeros_like(self.condition_is_control)
        )
        if self.training and self.head_start_dropout > 0:
            has = has & (torch.rand(len(has), device=has.device) >= self.head_start_dropout)
        return has

    def head_start(self, condition: torch.Tensor, use_head_start: torch.Tensor) -> torch.Tensor:
        """Standardised head start ``[B, D]`` of each cell's condition (zeros where ``use_head_start [C]`` is off).

        The head start translates a condition's whole flow: the module learns the flow from the control cells to
        the targets minus the head start (:meth:`draw_source` pairs them), and generation adds it back to every
        state. A flow that moves nothing then predicts the control cells plus the head start.
        """
        return (
            self.condition_shift[condition] * use_head_start[condition].unsqueeze(-1) / self.x_scale
        )  # a shift

    def draw_source(self, x1: torch.Tensor, condition: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Source points for a training batch of standardised targets ``x1 [B, D]``.

        ``"noise"``: ``N(0, I)``. ``"control"``: control cells of each target's context, paired with the targets by
        exact OT within the context; targets that are themselves controls start from themselves.
        """
        if self.source == "noise":
            return torch.randn_like(x1)
        x0 = x1.clone()
        perturbed = ~self.condition_is_control[condition]  # [B]
        for c in torch.unique(context[perturbed]):
            rows = torch.nonzero(perturbed & (context == c)).view(-1)
            pool = torch.nonzero(self.control_context == c).view(-1)
            if len(pool) == 0:
                raise RuntimeError(f"No control cells for context {int(c)}; cannot use source='control'.")
            pick = pool[torch.randint(len(pool), (len(rows),), device=pool.device)]
            candidates = self.standardize(self.control_x[pick])  # [n_c, D]
            x0[rows] = candidates[ot_permutation(candidates, x1[rows])]
        return x0

    def start_states(
        self, rows: torch.Tensor, x0: torch.Tensor | None, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Standardised start states ``[n, D]`` of a prediction: ``x0`` (raw) standardised, or ``N(0, I)`` noise.

        Noise for the cells of condition ``c`` (``rows == c``, in order) comes from ``generators[c]``.
        """
        if x0 is not None:
            return self.standardize(x0)
        out = torch.empty(len(rows), self.x_mean.shape[0], dtype=self.x_mean.dtype)
        for c, gen in enumerate(generators):
            idx = torch.nonzero(rows.cpu() == c).view(-1)
            if len(idx):
                out[idx] = torch.randn(len(idx), out.shape[1], generator=gen).to(out)
        return out.to(self.x_mean.device)
