"""The one owner of what a condition is: its table, prompts, single perturbations with their vectors, head starts.

A model builds one :class:`ConditionCatalog` from its registration, the tools of :mod:`scflowlm.tl` one from obs
(:meth:`ConditionCatalog.from_obs`), and a model adapted to new data extends its reference's
(:meth:`ConditionCatalog.extend`). Generation asks it for a request's typed condition, prompt, single perturbations
and head start; the module's data asks it for the same of every registered condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._conditions import ConditionTable
from ._shifts import ShiftEstimate, ShiftTerm, estimate_shifts, fit_combination_scale
from ._values import COMBINATION_SEP, as_condition_list

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

    from ._prompts import PromptBuilder

__all__ = ["HEAD_STARTS", "ConditionCatalog"]

#: the head starts a flow can take (``start_shift`` of the models; ``"auto"`` resolved by the model)
HEAD_STARTS = ("none", "additive", "nearest_context")


@dataclass
class ConditionCatalog:
    """The registered conditions and everything that is read from a condition.

    Parameters
    ----------
    table
        The registered conditions (:class:`~scflowlm.data.ConditionTable`).
    builder
        Renders prompts (a model's; ``None`` in the tools, which need none).
    vectors
        Gene vectors of single perturbations, named as :meth:`~scflowlm.data.ConditionTable.singles_of` spells them
        (:meth:`~scflowlm.data.ConditionTable.align_vectors`), or ``None``.
    """

    table: ConditionTable
    builder: PromptBuilder | None = None
    vectors: pd.DataFrame | None = None

    @classmethod
    def from_obs(
        cls,
        obs: pd.DataFrame,
        keys: Sequence[str],
        *,
        perturbation_key: str | None,
        control_value: Any,
        combination_sep: str = COMBINATION_SEP,
        vectors: pd.DataFrame | None = None,
    ) -> tuple[ConditionCatalog, np.ndarray]:
        """The catalog of the conditions in ``obs`` (columns ``keys``) and the row ``[n]`` of every cell."""
        table, rows = ConditionTable.from_obs(
            obs,
            keys,
            perturbation_key=perturbation_key,
            control_value=control_value,
            combination_sep=combination_sep,
        )
        return cls(table, None, None if vectors is None else table.align_vectors(vectors)), rows

    # ------------------------------------------------------------------ conditions
    def __len__(self) -> int:
        return len(self.table)

    def conditions(self) -> list[dict[str, Any]]:
        """Every registered condition as ``{field: value}``, in row order."""
        return [self.table.condition(i) for i in range(len(self.table))]

    def typed(self, conditions: Any, *, name: str = "conditions") -> list[dict[str, Any]]:
        """A user's condition(s) in the registered spelling and types (``"B+A"`` -> ``"A+B"``, ``1`` -> ``1.0``)."""
        return [
            {k: self.table.typed(k, c[k])[0] for k in self.table.fields}
            for c in as_condition_list(condition=conditions, name=name)
        ]

    def has_combinations(self) -> bool:
        """Whether a registered condition combines two or more single perturbations."""
        return any(len(self.table.perturbations(c)) > 1 for c in self.conditions())

    # ------------------------------------------------------------------ single perturbations
    @property
    def vocabulary(self) -> list[str]:
        """The single perturbations a condition encoder knows, sorted: the registered ones and those with a vector."""
        extra = [] if self.vectors is None else list(self.vectors.index)
        return sorted(set(self.table.singles()) | set(extra))

    def vectors_cover_singles(self) -> bool:
        """Whether the gene vectors cover at least one registered single (a head start can be fitted on them)."""
        return self.vectors is not None and bool(set(self.table.singles()) & set(self.vectors.index))

    def single_vectors(self) -> np.ndarray | None:
        """``[V, E]`` gene vector of each single of :attr:`vocabulary` (zeros without one), or ``None``."""
        if self.vectors is None:
            return None
        return self.vectors.reindex(self.vocabulary).fillna(0.0).to_numpy(dtype=np.float32)

    def parts(self, conditions: Sequence[Mapping[str, Any] | None]) -> list[tuple[str, ...]]:
        """The single perturbations of each condition (``()`` for a control or a raw prompt)."""
        return [self.table.perturbations(c) if c is not None else () for c in conditions]

    def members(self, conditions: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """``[n, P]`` vocabulary index of each single perturbation of each condition (``-1``: padding or unknown)."""
        index = {s: i for i, s in enumerate(self.vocabulary)}
        parts = self.parts(conditions)
        out = np.full((len(parts), max([1, *map(len, parts)])), -1, dtype=np.int64)
        for i, singles in enumerate(parts):
            for j, s in enumerate(singles):
                out[i, j] = index.get(s, -1)
        return out

    def unknown_singles(self, conditions: Sequence[Mapping[str, Any] | None], known: np.ndarray) -> list[str]:
        """The singles of ``conditions`` with neither training cells (``known [V]``) nor a gene vector, sorted."""
        index = {s: i for i, s in enumerate(self.vocabulary)}
        vectors = set() if self.vectors is None else set(self.vectors.index)
        return sorted(
            {
                s
                for singles in self.parts(conditions)
                for s in singles
                if (s not in index or not known[index[s]]) and s not in vectors
            }
        )

    # ------------------------------------------------------------------ prompts
    def prompts(self) -> list[str]:
        """The prompt of every registered condition, in row order."""
        return [self.builder.render(c) for c in self.conditions()]

    def render(self, condition: Mapping[str, Any]) -> str:
        return self.builder.render(condition)

    def reading_prompts(
        self,
        conditions: Sequence[Mapping[str, Any] | None],
        in_head_start: np.ndarray,
        prompts: Sequence[str],
    ) -> list[str]:
        """The prompt each condition reads at its head start: its perturbation field names only what is left to move.

        ``in_head_start [n, P]``: which of a condition's singles (in :meth:`members` order) its head start holds;
        ``prompts``: the full prompts, read by conditions without a head start (and raw prompts).
        """
        key, out = self.builder.perturbation_key, []
        for i, cond in enumerate(conditions):
            if cond is None or not in_head_start[i].any():
                out.append(prompts[i])
                continue
            parts = self.table.perturbations(cond)
            left = self.table.combination_sep.join(s for j, s in enumerate(parts) if not in_head_start[i, j])
            out.append(" ".join(self.builder.render(dict(cond) | {key: left}).split()))
        return out

    def context_free_prompts(self) -> list[str]:
        """Each registered condition's prompt with its context fields left empty (for ``prompt_dropout``)."""
        context = set(self.builder.context_fields)
        out = []
        for cond in self.conditions():
            free = {f: ("" if f in context else v) for f, v in cond.items()}
            out.append(" ".join(self.builder.render(free).split()))
        return out

    # ------------------------------------------------------------------ head starts
    def head_start(
        self,
        conditions: Sequence[Mapping[str, Any] | None],
        means: np.ndarray,
        members: np.ndarray,
        *,
        mode: str,
        combination_scale: float | str = 1.0,
        own_in_training: bool = False,
        vector_alpha: float | str = "loo",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Head start ``[n, D]`` of each condition and which of its singles ``members [n, P]`` it holds ``[n, P]``.

        ``means``: ``[C, D]`` mean state of each registered condition's measured cells (NaN: none). ``mode``:

        ``"none"``
            zeros;
        ``"additive"``
            the sum of the condition's singles measured in its context (a measured single: its own shift), a single
            not measured there from the other contexts or, never measured, from its gene vector (ridge, penalty
            ``vector_alpha``, ``"loo"``: the mean training shift where the vectors predict nothing), a combination's
            sum times ``combination_scale`` (``"fit"``: :func:`scflowlm.data.fit_combination_scale`);
        ``"nearest_context"``
            the shift of the same perturbation in the most similar other context, or with ``own_in_training`` the
            condition's own shift (training only).

        Raw prompts (``None``) get zeros.
        """
        shift = np.zeros((len(conditions), means.shape[1]))
        in_head_start = np.zeros(members.shape, dtype=bool)
        known = [i for i, c in enumerate(conditions) if c is not None]
        if mode == "none" or not known:
            return shift, in_head_start
        measured = np.isfinite(means).all(1)
        targets = [conditions[i] for i in known]
        if mode == "nearest_context" and own_in_training:
            estimates = [self._own_shift(c, measured) for c in targets]
        elif mode == "additive":
            scale = (
                fit_combination_scale(self.table, measured, np.nan_to_num(means))
                if combination_scale == "fit"
                else float(combination_scale)
            )
            estimates = estimate_shifts(
                self.table,
                measured,
                targets,
                mode="additive",
                similarity_means=np.nan_to_num(means),
                vectors=self.vectors,
                alpha=vector_alpha,
                combination_scale=scale,
            )
        else:
            estimates = estimate_shifts(self.table, measured, targets, mode="nearest", similarity_means=means)
        vocabulary = np.asarray([*self.vocabulary, ""])
        for i, estimate in zip(known, estimates, strict=True):
            shift[i] = estimate.apply(means)
            in_head_start[i] = np.isin(vocabulary[members[i]], estimate.parts) & (members[i] >= 0)
        return shift, in_head_start

    def _own_shift(self, condition: Mapping[str, Any], measured: np.ndarray) -> ShiftEstimate:
        """A condition's own measured shift (its mean minus its context's control mean), as an estimate."""
        table = self.table
        row = table.row_of(condition)
        control = table.row_of(dict(condition) | {table.perturbation_key: table.control_value})
        parts = table.perturbations(condition)
        if row < 0 or control < 0 or not parts or not (measured[row] and measured[control]):
            return ShiftEstimate()
        return ShiftEstimate([ShiftTerm(row, control)], parts, "own")
