"""The head start of control-source flows, and the single perturbations of each condition the encoder reads."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import ShiftEstimate, ShiftTerm, estimate_shifts, vector_shifts

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

__all__ = ["SHIFT_TRAININGS", "START_SHIFTS", "HeadStartMixin"]

#: the head starts a control-source flow can take (see ``start_shift`` of the models)
START_SHIFTS = ("auto", "none", "additive", "nearest_context")
#: where ``"nearest_context"`` training flows start (see ``shift_training`` of the models)
SHIFT_TRAININGS = ("held_out", "own")


class HeadStartMixin:
    """Each condition's single perturbations (indices into :attr:`vocabulary`) and head start.

    The head start is the condition's expected shift from its context's control cells, estimated by
    :func:`scflowlm.data.estimate_shifts` from the mean states of the training conditions; the perturbations whose
    measured effect it holds are flagged for the condition encoder (``in_prior``).
    """

    #: the head start of control-source flows: ``"none"``, ``"additive"`` or ``"nearest_context"`` (resolved)
    start_shift: str = "none"
    #: where ``"nearest_context"`` training flows start: ``"held_out"`` estimates or their ``"own"`` shift
    shift_training: str = "held_out"

    def _resolve_start_shift(self, start_shift: str, source: str) -> str:
        """Resolve ``"auto"``: ``"additive"`` for control-source data with combinations or gene vectors, else ``"none"``.

        Gene vectors (``perturbation_embeddings``) count when they cover at least one registered single: the head
        start of a single never measured is fitted on the measured singles' vectors. A noise source has no control
        cells, so its head start is always ``"none"``.
        """
        if start_shift not in START_SHIFTS:
            raise ValueError(f"start_shift must be one of {START_SHIFTS}, got {start_shift!r}.")
        if source != "control":
            return "none"
        if start_shift == "auto":
            table = self.condition_table
            combos = any(len(table.perturbations(table.condition(i))) > 1 for i in range(len(table)))
            vectors = self.perturbation_embeddings  # they estimate a single from the measured ones they cover
            covered = vectors is not None and bool(set(table.singles()) & set(vectors.index))
            return "additive" if combos or covered else "none"
        return start_shift

    @property
    def perturbation_embeddings(self) -> pd.DataFrame | None:
        """The gene vectors given to ``setup_anndata`` (perturbation name -> vector), or ``None``."""
        return self._setup_args.get("perturbation_embeddings")

    @property
    def vocabulary(self) -> list[str]:
        """The single perturbations the condition encoder knows (its embedding rows), sorted.

        The registered ones and those with a gene vector.
        """
        vectors = self.perturbation_embeddings
        extra = [] if vectors is None else list(vectors.index)
        return sorted(set(self.condition_table.singles()) | set(extra))

    def _single_vectors(self) -> np.ndarray | None:
        """``[V, E]`` gene vector of each single of :attr:`vocabulary` (zeros without one), or ``None``."""
        vectors = self.perturbation_embeddings
        if vectors is None:
            return None
        return vectors.reindex(self.vocabulary).fillna(0.0).to_numpy(dtype=np.float32)

    def _members(self, conditions: Sequence[dict[str, Any] | None], *, warn: bool = False) -> np.ndarray:
        """``[n, P]`` vocabulary index of each single perturbation of each condition (``-1`` padding).

        ``warn`` (at prediction): a warning names the singles with neither training cells nor a gene vector. The
        condition encoder knows nothing of them (they add nothing to the condition's embedding, nor to its head
        start), so only the prompt's words carry them.
        """
        table, index = self.condition_table, {s: i for i, s in enumerate(self.vocabulary)}
        parts = [table.perturbations(c) if c is not None else () for c in conditions]
        out = np.full((len(parts), max([1, *map(len, parts)])), -1, dtype=np.int64)
        for i, singles in enumerate(parts):
            for j, s in enumerate(singles):
                out[i, j] = index.get(s, -1)
        if warn:
            known = self.module.known_singles.cpu().numpy()
            vectors = self.perturbation_embeddings
            unknown = {
                s
                for singles in parts
                for s in singles
                if (s not in index or not known[index[s]]) and (vectors is None or s not in vectors.index)
            }
            if unknown:
                warnings.warn(
                    f"These perturbations have no gene vector and no training cells: {sorted(unknown)}. The "
                    "condition encoder knows nothing of them, so only the prompt's words carry them; give them "
                    "vectors with setup_anndata(perturbation_embeddings=...) (see scflowlm.data.gene_text_embeddings).",
                    ScflowlmWarning,
                    stacklevel=5,
                )
        return out

    def _head_start(
        self,
        conditions: Sequence[dict[str, Any] | None],
        means: np.ndarray,
        members: np.ndarray,
        *,
        training: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Head start ``[n, D]`` of each condition and which of its singles ``members [n, P]`` it holds ``[n, P]``.

        ``means``: ``[C, D]`` mean state of each registered condition's training cells (NaN: none). Zeros without
        ``start_shift`` and for a raw prompt (``None``). ``"additive"``: the sum of the condition's singles measured in
        its context (a measured single: its own shift); ``"nearest_context"``: the shift of the same perturbation in
        the most similar other context, or, in training with ``shift_training="own"``, the condition's own shift.
        """
        shift = np.zeros((len(conditions), means.shape[1]))
        in_prior = np.zeros(members.shape, dtype=bool)
        known = [i for i, c in enumerate(conditions) if c is not None]
        if self.start_shift == "none" or not known:
            return shift, in_prior
        table, measured = self.condition_table, np.isfinite(means).all(1)
        targets = [conditions[i] for i in known]
        if self.start_shift == "nearest_context" and training and self.shift_training == "own":
            estimates = [self._own_shift(c, measured) for c in targets]
        else:
            mode = "additive" if self.start_shift == "additive" else "nearest"
            estimates = estimate_shifts(table, measured, targets, mode=mode, similarity_means=means)
        vocabulary = np.asarray(self.vocabulary + [""])
        for i, estimate in zip(known, estimates, strict=True):
            shift[i] = estimate.apply(means)
            in_prior[i] = np.isin(vocabulary[members[i]], estimate.parts) & (members[i] >= 0)
        if self.start_shift == "additive" and self.perturbation_embeddings is not None:
            self._add_vector_shifts(conditions, known, means, measured, members, shift, in_prior)
        return shift, in_prior

    def _add_vector_shifts(self, conditions, known, means, measured, members, shift, in_prior) -> None:
        """Add the vector estimate of every single never measured in a condition's context.

        The singles with a gene vector that no measured single covers get :func:`scflowlm.data.vector_shifts`,
        fitted on the singles measured in the context, added to ``shift`` and flagged in ``in_prior``.
        """
        table, vectors = self.condition_table, self.perturbation_embeddings
        vocabulary, fits = np.asarray(self.vocabulary + [""]), {}
        for i in known:
            cond = conditions[i]
            left = [j for j in range(members.shape[1]) if members[i, j] >= 0 and not in_prior[i, j]]
            left = [j for j in left if vocabulary[members[i, j]] in vectors.index]
            if not left or table.is_control(cond):
                continue
            ctx = table.context(cond)
            if ctx not in fits:
                fits[ctx] = self._measured_singles(ctx, measured, means)
            names, shifts = fits[ctx]
            if not names:
                continue
            new = vectors.loc[vocabulary[members[i, left]]].to_numpy()
            shift[i] += vector_shifts(vectors.loc[names].to_numpy(), shifts, new).sum(0)
            in_prior[i, left] = True

    def _measured_singles(
        self, ctx: tuple, measured: np.ndarray, means: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """The singles measured in context ``ctx`` that have a gene vector, and their shifts ``[m, D]``."""
        table, vectors = self.condition_table, self.perturbation_embeddings
        key = table.perturbation_key
        control = table.row_of(dict(zip(table.context_fields, ctx, strict=True)) | {key: table.control_value})
        names, shifts = [], []
        for row in np.flatnonzero(measured):
            cond = table.condition(int(row))
            parts = table.perturbations(cond)
            if len(parts) == 1 and table.context(cond) == ctx and parts[0] in vectors.index and control >= 0:
                names.append(parts[0])
                shifts.append(means[row] - means[control])
        return names, np.asarray(shifts).reshape(len(names), means.shape[1])

    def _own_shift(self, condition: dict[str, Any], measured: np.ndarray) -> ShiftEstimate:
        """A condition's own measured shift (its mean minus its context's control mean), as an estimate."""
        table = self.condition_table
        row = table.row_of(condition)
        control = table.row_of(condition | {table.perturbation_key: table.control_value})
        parts = table.perturbations(condition)
        if row < 0 or control < 0 or not parts or not (measured[row] and measured[control]):
            return ShiftEstimate()
        return ShiftEstimate([ShiftTerm(row, control)], parts, "own")
