"""How a condition's shift from its context's controls is estimated from other conditions: one rule for all.

The shift baselines of :mod:`scflowlm.tl` and the head start of the models ask the same question: which measured
conditions, combined how, estimate the change of a condition from its context's control cells? The answer is a
list of :class:`ShiftTerm` (row pairs of a :class:`~scflowlm.data.ConditionTable` with weights), independent of the
representation, so one estimate shifts genes (``X``) and states (PCA coordinates) alike:
``shift = sum_t weight_t * (mean[perturbed_t] - mean[control_t])``.

Modes:

``"nearest"``
    The same perturbation in the other context whose control mean correlates best with the target context's
    (:func:`scflowlm.tl.baseline_nearest_context`).
``"pooled"``
    The same perturbation averaged over every other context that has it (:func:`scflowlm.tl.baseline_additive`).
``"additive"``
    The sum of the target's single perturbations measured in its own context (a combination "A+B" from its
    measured singles "A" and "B"); parts that are not measured are left out and named in
    :attr:`ShiftEstimate.parts`. A single gets its own measured shift. This is the head start of the models'
    additive prior.
``"mean"``
    The mean shift of every other perturbed condition measured in the target's context, whatever its
    perturbation (:func:`scflowlm.tl.baseline_mean_shift`): what a predictor that ignores the perturbation's
    identity can reach.

In ``"nearest"`` and ``"pooled"``, a combination no other context has falls back to the sum of its singles, each from
its own context when measured there, else from the other contexts (nearest or pooled); a single measured nowhere
contributes nothing (it is left out of :attr:`ShiftEstimate.parts`). A target's own cells are never used by these
two modes.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._conditions import ConditionTable

__all__ = ["SHIFT_MODES", "ShiftEstimate", "ShiftTerm", "estimate_shifts", "vector_shifts"]

#: the modes of :func:`estimate_shifts`
SHIFT_MODES = ("nearest", "pooled", "additive", "mean")


@dataclass(frozen=True)
class ShiftTerm:
    """One measured change: ``weight * (mean[perturbed] - mean[control])`` over rows of a condition table."""

    perturbed: int
    control: int
    weight: float = 1.0


@dataclass
class ShiftEstimate:
    """The estimated shift of one condition: its terms, the single perturbations they cover, and where from.

    No terms: no estimate (a control, or nothing measured).
    """

    terms: list[ShiftTerm] = field(default_factory=list)
    parts: tuple[str, ...] = ()
    source: str = "none"

    def apply(self, means: np.ndarray) -> np.ndarray:
        """The shift ``[D]`` in the representation of ``means`` (``[C, D]``, one row per table row)."""
        out = np.zeros(means.shape[1])
        for t in self.terms:
            out += t.weight * (means[t.perturbed] - means[t.control])
        return out


def estimate_shifts(
    table: ConditionTable,
    measured: np.ndarray,
    targets: Sequence[Mapping[str, Any]],
    *,
    mode: Literal["nearest", "pooled", "additive", "mean"],
    similarity_means: np.ndarray | None = None,
) -> list[ShiftEstimate]:
    """The shift estimate of each target condition (see the module's text for the modes).

    Parameters
    ----------
    table
        The registered conditions (with ``perturbation_key`` and ``control_value``).
    measured
        ``[C]`` whether each row has cells to measure (``False`` for held-out or empty conditions).
    targets
        Conditions (dicts over the table's fields) to estimate; they need not be registered.
    mode
        ``"nearest"``, ``"pooled"``, ``"additive"`` or ``"mean"``.
    similarity_means
        ``[C, G]`` mean profile of each row; ``"nearest"`` picks the context whose control profile correlates best
        with the target context's.
    """
    if mode not in SHIFT_MODES:
        raise ValueError(f"mode must be one of {SHIFT_MODES}, got {mode!r}.")
    measured = np.asarray(measured)
    if measured.shape != (len(table),):
        raise ValueError(
            f"measured must hold one flag per row of the table ({len(table)} rows), got shape {measured.shape}."
        )
    if mode == "nearest" and similarity_means is None:
        raise ValueError("mode='nearest' needs similarity_means, the mean profile of each row.")
    if similarity_means is not None:
        similarity_means = np.asarray(similarity_means)
        if similarity_means.ndim != 2 or len(similarity_means) != len(table):
            raise ValueError(
                f"similarity_means must be [rows, features] with one row per row of the table ({len(table)}), got "
                f"shape {similarity_means.shape}."
            )
    needed = [f for f in table.fields if f != table.perturbation_key]
    for target in targets:
        missing = [f for f in needed + [table.perturbation_key] if f is not None and f not in target]
        if missing:
            raise KeyError(
                f"The target {dict(target)} lacks the field(s) {missing}; a target names a value of every field of "
                f"the table ({table.fields})."
            )
    return _Estimator(table, measured.astype(bool), similarity_means).run(targets, mode)


class _Estimator:
    """The rows of the table by (context, single perturbations), and the rules of the modes."""

    def __init__(self, table: ConditionTable, measured: np.ndarray, similarity_means: np.ndarray | None):
        self.table, self.similarity_means = table, similarity_means
        self.rows: dict[tuple, int] = {}  # (context, singles) -> measured row
        for i in np.flatnonzero(measured):
            cond = table.condition(int(i))
            self.rows.setdefault((table.context(cond), table.perturbations(cond)), int(i))
        self.controls = {ctx: row for (ctx, parts), row in self.rows.items() if parts == ()}

    def run(self, targets: Sequence[Mapping[str, Any]], mode: str) -> list[ShiftEstimate]:
        out = []
        for target in targets:
            ctx, parts = self.table.context(target), self.table.perturbations(target)
            if not parts or ctx not in self.controls:
                out.append(ShiftEstimate())
            elif mode == "additive":
                out.append(self._additive(ctx, parts))
            elif mode == "mean":
                out.append(self._mean(ctx, parts))
            else:
                out.append(self._transfer(ctx, parts, mode))
        return out

    def _additive(self, ctx: tuple, parts: tuple[str, ...]) -> ShiftEstimate:
        """The sum of the parts measured as singles in the target's own context."""
        covered = [s for s in parts if (ctx, (s,)) in self.rows]
        terms = [ShiftTerm(self.rows[(ctx, (s,))], self.controls[ctx]) for s in covered]
        return ShiftEstimate(terms, tuple(covered), "own" if terms else "none")

    def _mean(self, ctx: tuple, parts: tuple[str, ...]) -> ShiftEstimate:
        """The average shift of the other perturbed conditions measured in the target's own context."""
        rows = [r for (o, p), r in self.rows.items() if o == ctx and p and p != parts]
        terms = [ShiftTerm(r, self.controls[ctx], 1.0 / len(rows)) for r in rows]
        return ShiftEstimate(terms, (), "mean" if terms else "none")

    def _others(self, ctx: tuple, parts: tuple[str, ...]) -> list[tuple]:
        """Other contexts where ``parts`` and the controls are measured."""
        return [o for (o, p) in self.rows if p == parts and o != ctx and o in self.controls]

    def _from_others(
        self, ctx: tuple, parts: tuple[str, ...], mode: str
    ) -> tuple[list[ShiftTerm], str] | None:
        others = self._others(ctx, parts)
        if not others:
            return None
        if mode == "nearest":
            ref = self.similarity_means[self.controls[ctx]]
            r = [np.corrcoef(ref, self.similarity_means[self.controls[o]])[0, 1] for o in others]
            best = others[int(np.nanargmax(np.nan_to_num(r, nan=-np.inf)))]
            return [ShiftTerm(self.rows[(best, parts)], self.controls[best])], "|".join(map(str, best))
        weight = 1.0 / len(others)
        return [ShiftTerm(self.rows[(o, parts)], self.controls[o], weight) for o in others], "pooled"

    def _transfer(self, ctx: tuple, parts: tuple[str, ...], mode: str) -> ShiftEstimate:
        """The perturbation measured in other contexts; for a combination, else the sum of its singles."""
        found = self._from_others(ctx, parts, mode)
        if found is not None:
            return ShiftEstimate(found[0], parts, found[1])
        if len(parts) < 2:
            return ShiftEstimate()
        terms, covered, sources = [], [], []
        for s in parts:
            if (ctx, (s,)) in self.rows:
                terms.append(ShiftTerm(self.rows[(ctx, (s,))], self.controls[ctx]))
                covered.append(s)
                sources.append(f"{s}:own")
                continue
            found = self._from_others(ctx, (s,), mode)
            if found is None:  # never measured anywhere: it contributes nothing
                continue
            terms += found[0]
            covered.append(s)
            sources.append(f"{s}:{found[1]}")
        return ShiftEstimate(terms, tuple(covered), ";".join(sources) if terms else "none")


def vector_shifts(
    vectors: np.ndarray, shifts: np.ndarray, new_vectors: np.ndarray, *, alpha: float = 1.0
) -> np.ndarray:
    """Shifts ``[k, D]`` of singles never measured, from their gene vectors ``[k, E]``.

    A linear ridge regression (with an intercept, in its dual form: few singles, long vectors) of the measured
    singles' shifts ``[m, D]`` on their vectors ``[m, E]``: ``mean + K_new (K + lambda I)^-1 (shifts - mean)`` with
    ``K`` the inner products of the centred vectors and ``lambda = alpha * mean(diag K)``, so ``alpha`` does not
    depend on the vectors' scale. With no measured single, zeros.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(
            f"alpha must be a number > 0 (the ridge penalty relative to the vectors' mean squared norm), got {alpha!r}."
        )
    vectors, new_vectors = np.atleast_2d(vectors), np.atleast_2d(new_vectors)
    if len(vectors) and vectors.shape[1] != new_vectors.shape[1]:
        raise ValueError(
            f"new_vectors have {new_vectors.shape[1]} columns and vectors {vectors.shape[1]}: both must be vectors of "
            "the same kind (the same width)."
        )
    if len(vectors) != len(shifts):
        raise ValueError(
            f"vectors ({len(vectors)} rows) and shifts ({len(shifts)} rows) must have one row per single."
        )
    if len(vectors) == 0:
        return np.zeros((len(new_vectors), shifts.shape[1] if shifts.ndim == 2 else 0))
    centre, mean = vectors.mean(0), shifts.mean(0)
    X, Xn = vectors - centre, new_vectors - centre  # [m, E], [k, E]
    K = X @ X.T  # [m, m]
    lam = alpha * max(float(np.mean(np.diag(K))), 1e-12)
    weights = np.linalg.solve(K + lam * np.eye(len(K)), shifts - mean)  # [m, D]
    return mean + (Xn @ X.T) @ weights
