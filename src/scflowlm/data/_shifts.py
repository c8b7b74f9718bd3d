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
    The same perturbation averaged over every other context that has it (a combination measured as a whole
    elsewhere included), else the sum of its singles.
``"additive"``
    The sum of the target's single perturbations' shifts (a combination "A+B" from the singles "A" and "B"): each
    single as measured in the target's own context, else averaged over the other contexts that measured it, else,
    with gene ``vectors``, estimated from the singles measured in the target's context (ridge or nearest
    neighbours); parts left without an estimate are left out of :attr:`ShiftEstimate.parts`. A single measured in
    its context gets its own shift. The one meaning of "additive" in the package: the models' additive head start,
    :func:`scflowlm.tl.baseline_additive` and the reference of the interaction score.
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

from ._vector_shifts import vector_weights

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

    from ._conditions import ConditionTable

__all__ = ["SHIFT_MODES", "ShiftEstimate", "ShiftTerm", "estimate_shifts", "fit_combination_scale"]

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
    #: whether it is the sum of two or more singles' estimates (what ``combination_scale`` scales)
    summed: bool = False

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
    vectors: pd.DataFrame | None = None,
    vector_rule: Literal["ridge", "knn"] = "ridge",
    alpha: float | Literal["loo"] = "loo",
    n_neighbors: int = 5,
    combination_scale: float = 1.0,
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
        with the target context's, and ``alpha="loo"`` chooses the ridge penalty on the changes of these means.
    vectors
        Gene vectors of singles (index: their names as :meth:`~scflowlm.data.ConditionTable.singles_of` spells
        them; :meth:`~scflowlm.data.ConditionTable.align_vectors`). In ``"additive"`` mode a single not measured in
        the target's context is estimated from the singles measured there that have a vector
        (:func:`scflowlm.data.vector_weights`: ``vector_rule`` ``"ridge"`` with ``alpha``, or ``"knn"`` with
        ``n_neighbors``). Without them such a single contributes nothing.
    combination_scale
        Factor on the estimate of a target built as the sum of two or more singles (a combination from its parts;
        :func:`fit_combination_scale` fits it on the measured combinations). 1: the plain sum.
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
    if vectors is not None and similarity_means is None:
        raise ValueError("vectors need similarity_means: the shifts the vector rule is fitted on.")
    if (
        isinstance(combination_scale, bool)
        or not isinstance(combination_scale, numbers.Real)
        or not np.isfinite(combination_scale)
    ):
        raise ValueError(f"combination_scale must be a finite number, got {combination_scale!r}.")
    estimator = _Estimator(table, measured.astype(bool), similarity_means)
    estimator.vector_options = {
        "vectors": vectors,
        "rule": vector_rule,
        "alpha": alpha,
        "n_neighbors": n_neighbors,
    }
    return [_scaled(e, combination_scale) for e in estimator.run(targets, mode)]


def _scaled(estimate: ShiftEstimate, scale: float) -> ShiftEstimate:
    """``estimate`` with its terms scaled when it is the sum of two or more singles' estimates."""
    if scale == 1.0 or not estimate.summed:
        return estimate  # 1, a single, or a combination measured as such in another context
    terms = [ShiftTerm(t.perturbed, t.control, t.weight * scale) for t in estimate.terms]
    return ShiftEstimate(terms, estimate.parts, f"{estimate.source}*{scale:.3g}", summed=True)


def fit_combination_scale(table: ConditionTable, measured: np.ndarray, means: np.ndarray) -> float:
    """One scale ``c`` of the sum of the singles that best fits the measured combinations (least squares).

    Over every measured combination whose singles are all measured in its context, with ``s`` the sum of their
    shifts and ``d`` its own shift (means minus the context's control mean): ``c = sum <d, s> / sum ||s||^2``.
    Norman et al. fitted doubles as ``c1 dA + c2 dB`` with median weights near 0.8: a double is typically
    smaller than the sum of its singles, which ``c < 1`` captures. 1.0 when no combination can be fitted.

    Parameters
    ----------
    table
        The registered conditions.
    measured
        ``[C]`` rows with cells (the held-out ones are not).
    means
        ``[C, D]`` mean of each row in the representation to fit in.
    """
    measured = np.asarray(measured, dtype=bool)
    estimator = _Estimator(table, measured, means)
    num = den = 0.0
    for i in np.flatnonzero(measured):
        cond = table.condition(int(i))
        ctx, parts = table.context(cond), table.perturbations(cond)
        if len(parts) < 2 or ctx not in estimator.controls:
            continue
        estimate = estimator._additive(ctx, parts)
        if estimate.parts != parts:  # a part not measured in this context
            continue
        s = estimate.apply(means)
        d = means[i] - means[estimator.controls[ctx]]
        num, den = num + float(s @ d), den + float(s @ s)
    return num / den if den > 0 else 1.0


class _Estimator:
    """The rows of the table by (context, single perturbations), and the rules of the modes."""

    def __init__(self, table: ConditionTable, measured: np.ndarray, similarity_means: np.ndarray | None):
        self.table, self.similarity_means = table, similarity_means
        self.rows: dict[tuple, int] = {}  # (context, singles) -> measured row
        for i in np.flatnonzero(measured):
            cond = table.condition(int(i))
            self.rows.setdefault((table.context(cond), table.perturbations(cond)), int(i))
        self.controls = {ctx: row for (ctx, parts), row in self.rows.items() if parts == ()}
        self.vector_options: dict = {}
        self._vector_fits: dict[tuple, tuple[list[str], list[int]]] = {}

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
        """The sum of the parts' single shifts, each from its own context, else the others, else its gene vector."""
        covered = [s for s in parts if (ctx, (s,)) in self.rows]
        terms = [ShiftTerm(self.rows[(ctx, (s,))], self.controls[ctx]) for s in covered]
        source = "own" if terms else "none"
        for s in [p for p in parts if p not in covered]:
            found = self._from_others(ctx, (s,), "pooled")
            if found is not None:
                terms += found[0]
                covered.append(s)
                source = "pooled" if source == "none" else f"{source}+pooled"
        vectors = self.vector_options.get("vectors")
        left = [s for s in parts if s not in covered and vectors is not None and s in vectors.index]
        if left:
            found = self._from_vectors(ctx, left)
            if found:
                terms += found
                covered += left
                source = f"{source}+vectors" if source != "none" else "vectors"
        return ShiftEstimate(terms, tuple(sorted(covered)), source, summed=len(covered) > 1)

    def _from_vectors(self, ctx: tuple, singles: list[str]) -> list[ShiftTerm]:
        """Terms estimating ``singles`` from the singles measured in ``ctx`` that have a vector (their sum)."""
        options, vectors = self.vector_options, self.vector_options["vectors"]
        if ctx not in self._vector_fits:
            names = [p[0] for (o, p) in self.rows if o == ctx and len(p) == 1 and p[0] in vectors.index]
            rows = [self.rows[(ctx, (n,))] for n in names]
            self._vector_fits[ctx] = (names, rows)
        names, rows = self._vector_fits[ctx]
        if not names:
            return []
        control = self.controls[ctx]
        shifts = self.similarity_means[rows] - self.similarity_means[control]  # [m, D]
        weights = vector_weights(
            vectors.loc[names].to_numpy(),
            vectors.loc[singles].to_numpy(),
            rule=options["rule"],
            alpha=options["alpha"],
            shifts=shifts,
            n_neighbors=options["n_neighbors"],
        ).sum(0)  # [m]: the singles' estimates summed
        return [ShiftTerm(r, control, float(w)) for r, w in zip(rows, weights, strict=True) if w != 0.0]

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
        return ShiftEstimate(
            terms, tuple(covered), ";".join(sources) if terms else "none", summed=len(covered) > 1
        )
