"""The table of registered conditions: per-field codes, typed values, contexts and single perturbations.

Values are compared with the one equality rule of :mod:`scflowlm.data._values`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scflowlm._warnings import ScflowlmWarning

from ._values import (
    COMBINATION_SEP,
    _is_text,
    coerce_value,
    match_combination,
    match_value,
    repeated_singles,
    split_combination,
    value_mask,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["ConditionTable"]


@dataclass
class ConditionTable:
    """The registered conditions: one row per combination of template-field values present in the data.

    A condition is a combination of values of the template fields (``fields``). Each field's values are kept as
    the user gave them (``categories``: numbers stay numbers) and coded by their position; ``codes[c]`` holds the
    field codes of condition ``c``. Rows are ordered by their values (numbers numerically, text alphabetically),
    so the order does not depend on how the data were sorted. A template without fields has one condition.

    Parameters
    ----------
    fields
        Template fields, in template order.
    categories
        Per field, every value it can take (numpy array, typed).
    codes
        ``[C, F]`` field codes of the C conditions.
    perturbation_key
        The field that holds the perturbation (or ``None``).
    control_value
        The control value of ``perturbation_key`` (or ``None``).
    combination_sep
        Separator of the single perturbations in a value of ``perturbation_key`` (``"A+B"``).
    """

    fields: list[str]
    categories: dict[str, np.ndarray]
    codes: np.ndarray
    perturbation_key: str | None = None
    control_value: Any = None
    combination_sep: str = COMBINATION_SEP
    _index: dict[tuple[int, ...], int] = field(init=False, repr=False)
    _parts_index: dict[tuple, int] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.fields = list(self.fields)
        codes = np.asarray(self.codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(self.fields):
            codes = (
                codes.reshape(-1, len(self.fields)) if self.fields else np.zeros((len(codes), 0), np.int64)
            )
        self.codes = codes
        self._index = {tuple(int(v) for v in row): i for i, row in enumerate(self.codes)}

    @classmethod
    def from_codes(
        cls,
        fields: Sequence[str],
        categories: Mapping[str, np.ndarray],
        cell_codes: np.ndarray,
        *,
        perturbation_key: str | None = None,
        control_value: Any = None,
        combination_sep: str = COMBINATION_SEP,
    ) -> ConditionTable:
        """The table of the distinct rows of per-cell field codes ``[n, F]``, ordered by their values.

        Without fields (``F = 0``) every cell is of the one condition ``()``.
        """
        fields = list(fields)
        cats = {f: np.asarray(categories[f]) for f in fields}
        cell_codes = np.asarray(cell_codes, dtype=np.int64)
        if not fields:
            uniq = np.zeros((1 if len(cell_codes) else 0, 0), dtype=np.int64)
        else:
            uniq = np.unique(cell_codes.reshape(-1, len(fields)), axis=0)  # [C, F]
            ranks = [_value_rank(cats[f]) for f in fields]  # code -> rank of its value
            keys = [ranks[j][uniq[:, j]] for j in reversed(range(len(fields)))]
            uniq = uniq[np.lexsort(keys)] if len(uniq) else uniq
        return cls(fields, cats, uniq, perturbation_key, control_value, combination_sep)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.codes)

    def value(self, field_name: str, code: int) -> Any:
        """The (typed) value of a field's code."""
        v = self.categories[field_name][code]
        return v.item() if isinstance(v, np.generic) else v

    def condition(self, i: int) -> dict[str, Any]:
        """Condition ``i`` as ``{field: value}``."""
        return {f: self.value(f, int(c)) for f, c in zip(self.fields, self.codes[i], strict=True)}

    def frame(self) -> pd.DataFrame:
        """All conditions, one row each (typed columns)."""
        return pd.DataFrame([self.condition(i) for i in range(len(self))], columns=self.fields)

    def index_of(self, codes: Sequence[int]) -> int:
        """Row of a condition given its field codes, or ``-1``."""
        return self._index.get(tuple(int(c) for c in codes), -1)

    @property
    def context_fields(self) -> list[str]:
        """The fields other than the perturbation: what a condition's context is made of."""
        return [f for f in self.fields if f != self.perturbation_key]

    def control_mask(self) -> np.ndarray:
        """``[C]`` whether each condition has the control value in its perturbation field."""
        if self.perturbation_key is None or self.control_value is None:
            return np.zeros(len(self), dtype=bool)
        is_control = value_mask(self.categories[self.perturbation_key], self.control_value)  # [K]
        return is_control[self.codes[:, self.fields.index(self.perturbation_key)]]

    def is_control(self, condition: Mapping[str, Any]) -> bool:
        """Whether a condition has the control value in its perturbation field (compared by type)."""
        if self.perturbation_key is None or self.control_value is None:
            return False
        cats = self.categories[self.perturbation_key]
        code = match_value(cats, self.control_value)
        return code >= 0 and match_value(cats, condition[self.perturbation_key]) == code

    def perturbations(self, condition: Mapping[str, Any]) -> tuple[str, ...]:
        """The single perturbations of a condition, sorted (``()`` for a control or without a perturbation key)."""
        if self.perturbation_key is None or self.is_control(condition):
            return ()
        return self.singles_of(condition[self.perturbation_key])

    def singles_of(self, value: Any) -> tuple[str, ...]:
        """The single perturbations a value of the perturbation field names, as the vocabulary spells them.

        Text is split at :attr:`combination_sep` (:func:`~scflowlm.data.split_combination`: sorted, each once); a
        number or boolean is one perturbation, named by its value in the column's type (``1`` -> ``"1.0"`` for a
        float column, so a dose ``1e20`` or ``-1`` is never split at a separator).
        """
        cats = self.categories[self.perturbation_key]
        if _is_text(cats):
            return split_combination(value, self.combination_sep)
        typed = coerce_value(cats, value)
        return (str(typed if typed is not None else value),)

    def align_vectors(self, vectors: pd.DataFrame) -> pd.DataFrame:
        """Gene vectors renamed to the singles they belong to, compared by the perturbation column's type.

        A name is read as a value of the perturbation column (``1`` and ``"1.0"`` name the dose ``1.0`` of a float
        column; text is stripped) and renamed as :meth:`singles_of` spells it. A vector named as a combination
        (``"A+B"``) or that cannot be a value of the column (text for a numeric column) is refused with a ValueError;
        so are two vectors that name the same single.
        """
        if self.perturbation_key is None:
            raise ValueError(
                "perturbation_embeddings are vectors of single perturbations, so they need a perturbation_key: "
                "pass setup_anndata(..., perturbation_key=<the obs column of the perturbations>)."
            )
        cats = self.categories[self.perturbation_key]
        names = []
        for name in vectors.index:
            if not _is_text(cats) and coerce_value(cats, name) is None:
                raise ValueError(
                    f"perturbation_embeddings has a vector named {name!r}, which cannot be a value of the "
                    f"{cats.dtype} column obs[{self.perturbation_key!r}]; name each vector by a value of that column."
                )
            singles = self.singles_of(name)
            if len(singles) != 1:
                raise ValueError(
                    f"perturbation_embeddings has a vector named {name!r}, "
                    + (
                        f"a combination of {list(singles)}: vectors are of single perturbations (the model builds "
                        "a combination from its singles); give one vector per single."
                        if singles
                        else "an empty name; give each vector the name of its single perturbation."
                    )
                )
            names.append(singles[0])
        index = pd.Index(names)
        if not index.is_unique:
            dup = sorted(set(index[index.duplicated()]))
            raise ValueError(
                f"perturbation_embeddings has several vectors for the same perturbation(s) {dup[:5]} (names compared "
                f"as values of obs[{self.perturbation_key!r}]); keep one each."
            )
        return vectors.set_axis(index, axis=0)

    def context(self, condition: Mapping[str, Any]) -> tuple:
        """The context of a condition: its values of :attr:`context_fields`, typed as registered."""
        return tuple(self.typed(f, condition[f])[0] for f in self.context_fields)

    def singles(self) -> list[str]:
        """Every single perturbation of the registered conditions, sorted (the per-perturbation vocabulary)."""
        return sorted({s for i in range(len(self)) for s in self.perturbations(self.condition(i))})

    def row_of(self, condition: Mapping[str, Any]) -> int:
        """Row of a condition (``-1`` if it is not registered); a combination matches in any order (B+A = A+B)."""
        _, codes = self.encode(condition)
        row = self.index_of(codes) if min(codes, default=0) >= 0 else -1
        if row >= 0 or self.perturbation_key is None:
            return row
        return self._by_parts().get((self.context(condition), self.perturbations(condition)), -1)

    def _by_parts(self) -> dict[tuple, int]:
        """(context, single perturbations) -> row, for combinations written in another order."""
        if self._parts_index is None:
            self._parts_index = {}
            for i in range(len(self)):
                cond = self.condition(i)
                self._parts_index.setdefault((self.context(cond), self.perturbations(cond)), i)
        return self._parts_index

    @classmethod
    def from_obs(
        cls,
        obs: pd.DataFrame,
        fields: Sequence[str],
        *,
        perturbation_key: str | None = None,
        control_value: Any = None,
        combination_sep: str = COMBINATION_SEP,
    ) -> tuple[ConditionTable, np.ndarray]:
        """The table of the conditions in ``obs`` (columns ``fields``) and the row ``[n]`` of every cell."""
        fields = list(fields)
        categories, codes = {}, []
        for f in fields:
            column = obs[f]
            if isinstance(column.dtype, pd.CategoricalDtype):
                column = column.cat.remove_unused_categories()
                categories[f], code = np.asarray(column.cat.categories), column.cat.codes.to_numpy()
            else:
                code, uniques = pd.factorize(column, sort=False)
                categories[f] = np.asarray(uniques)
            codes.append(np.asarray(code, dtype=np.int64))
        cell_codes = np.stack(codes, axis=1) if codes else np.zeros((len(obs), 0), dtype=np.int64)  # [n, F]
        table = cls.from_codes(
            fields,
            categories,
            cell_codes,
            perturbation_key=perturbation_key,
            control_value=control_value,
            combination_sep=combination_sep,
        )
        return table, table.rows_of_codes(cell_codes)

    def rows_of_codes(self, cell_codes: np.ndarray) -> np.ndarray:
        """Row ``[n]`` of each row of per-cell field codes ``[n, F]`` (``-1`` for a combination not in the table)."""
        cell_codes = np.asarray(cell_codes, dtype=np.int64)
        if len(cell_codes) == 0:
            return np.zeros(0, dtype=np.int64)
        # one integer per row of codes (mixed radix): a 1-D unique is much faster than axis=0 for many cells
        keys = np.zeros(len(cell_codes), dtype=np.int64)
        for column in cell_codes.T:
            column = column - column.min()
            keys = keys * (int(column.max()) + 1) + column
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return np.array([self.index_of(cell_codes[i]) for i in first], dtype=np.int64)[inverse.reshape(-1)]

    # ------------------------------------------------------------------ user input
    def encode(self, condition: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """A user's condition -> (typed condition, field codes); a value not in training has code ``-1``.

        Values that match a category (see :func:`value_mask`) are replaced by the category itself, so
        ``{"dose": 1}`` becomes ``{"dose": 1.0}`` for a float column and renders the training prompt.
        """
        unknown = sorted(set(condition) - set(self.fields), key=str)
        if unknown:
            raise KeyError(
                f"Condition has unknown field(s) {unknown}; the prompt template fields are {self.fields}."
            )
        missing = [f for f in self.fields if f not in condition]
        if missing:
            raise KeyError(f"Condition {dict(condition)} lacks the template field(s) {missing}.")
        typed, codes = {}, []
        for f in self.fields:
            typed[f], code = self.typed(f, condition[f])
            codes.append(code)
        return typed, codes

    def typed(self, field_name: str, value: Any) -> tuple[Any, int]:
        """(the registered value equal to ``value``, its code), or ``(value, -1)`` for a value not registered.

        In the perturbation field a combination matches in any order and spacing (``"B + A"`` is the registered
        ``"A+B"``), and a single named twice counts once (``"A+A"`` is ``"A"``, with a warning).
        """
        cats = self.categories[field_name]
        if field_name != self.perturbation_key:
            code = match_value(cats, value)
            return (self.value(field_name, code) if code >= 0 else value), code
        code = match_combination(cats, value, self.combination_sep)
        if code < 0 or not _same_text(self.value(field_name, code), value):
            twice = repeated_singles(value, self.combination_sep) if _is_text(cats) else []
            if twice:
                read = (
                    self.value(field_name, code)
                    if code >= 0
                    else self.combination_sep.join(self.singles_of(value))
                )
                warnings.warn(
                    f"{field_name}={value!r} names {twice} more than once; a perturbation counts once, so it is read "
                    f"as {read!r}.",
                    ScflowlmWarning,
                    stacklevel=4,
                )
        return (self.value(field_name, code) if code >= 0 else value), code


def _same_text(a: Any, b: Any) -> bool:
    """Whether two values are written the same (``"A+B"`` and ``"B+A"`` are not)."""
    return str(a) == str(b)


def _value_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value (numbers numerically, integers exactly, anything else as text)."""
    if values.dtype.kind in "iub":
        order = np.argsort(values, kind="stable")
    elif values.dtype.kind == "f":
        order = np.argsort(values.astype(float), kind="stable")
    else:
        order = np.argsort(np.array([str(v) for v in values], dtype=object), kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values))
    return ranks
