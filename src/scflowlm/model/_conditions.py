"""Conditions as integer codes per template field: what a model knows, and how a user's values map to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ConditionTable", "as_condition_list", "match_value"]


def match_value(categories: np.ndarray, value: Any) -> int:
    """Code of ``value`` among a field's ``categories`` (``-1`` if absent), compared by type.

    Numeric categories are compared as numbers (``1``, ``1.0`` and ``"1"`` all match the category ``1.0``);
    every other category is compared as text.
    """
    cats = np.asarray(categories)
    if cats.dtype.kind in "iuf":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return -1
        hits = np.flatnonzero(cats.astype(float) == number)
    elif cats.dtype.kind == "b":
        hits = np.flatnonzero(cats == (str(value).lower() in ("true", "1")))
    else:
        hits = np.flatnonzero(np.array([str(c) for c in cats], dtype=object) == str(value))
    return int(hits[0]) if len(hits) else -1


def as_condition_list(condition: Any, *, name: str = "condition") -> list[dict[str, Any]]:
    """One condition dict, a list of them, a pandas Series (one condition) or a DataFrame (one per row)."""
    if isinstance(condition, pd.DataFrame):
        return condition.to_dict("records")
    if isinstance(condition, pd.Series):
        return [condition.to_dict()]
    if isinstance(condition, Mapping):
        return [dict(condition)]
    if isinstance(condition, str) or not isinstance(condition, Sequence):
        raise TypeError(
            f"{name} must be a dict of template field -> value (or a list of them, a pandas Series or DataFrame), "
            f"got {type(condition).__name__} {condition!r}."
        )
    out = []
    for c in condition:
        if not isinstance(c, Mapping):
            raise TypeError(
                f"Each {name} must be a dict of template field -> value, got {type(c).__name__} {c!r}."
            )
        out.append(dict(c))
    if not out:
        raise ValueError(f"No {name} given.")
    return out


@dataclass
class ConditionTable:
    """The registered conditions: one row per combination of template-field values present in the data.

    A condition is a combination of values of the template fields (``fields``). Each field's values are kept as
    the user gave them (``categories``: numbers stay numbers) and coded by their position; ``codes[c]`` holds the
    field codes of condition ``c``. Rows are ordered by their values (numbers numerically, text alphabetically),
    so the order does not depend on how the data were sorted.

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
    """

    fields: list[str]
    categories: dict[str, np.ndarray]
    codes: np.ndarray
    perturbation_key: str | None = None
    control_value: Any = None
    _index: dict[tuple[int, ...], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64).reshape(-1, len(self.fields))
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
    ) -> ConditionTable:
        """The table of the distinct rows of per-cell field codes ``[n, F]``, ordered by their values."""
        fields = list(fields)
        cats = {f: np.asarray(categories[f]) for f in fields}
        uniq = np.unique(np.asarray(cell_codes, dtype=np.int64).reshape(-1, len(fields)), axis=0)  # [C, F]
        if len(fields):
            ranks = [_value_rank(cats[f]) for f in fields]  # code -> rank of its value
            keys = [ranks[j][uniq[:, j]] for j in reversed(range(len(fields)))]
            uniq = uniq[np.lexsort(keys)] if len(uniq) else uniq
        return cls(fields, cats, uniq, perturbation_key, control_value)

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

    def control_mask(self) -> np.ndarray:
        """``[C]`` whether each condition has the control value in its perturbation field."""
        if self.perturbation_key is None or self.control_value is None:
            return np.zeros(len(self), dtype=bool)
        code = match_value(self.categories[self.perturbation_key], self.control_value)
        return (code >= 0) & (self.codes[:, self.fields.index(self.perturbation_key)] == code)

    def is_control(self, condition: Mapping[str, Any]) -> bool:
        """Whether a condition has the control value in its perturbation field (compared by type)."""
        if self.perturbation_key is None or self.control_value is None:
            return False
        cats = self.categories[self.perturbation_key]
        code = match_value(cats, self.control_value)
        return code >= 0 and match_value(cats, condition[self.perturbation_key]) == code

    # ------------------------------------------------------------------ user input
    def encode(self, condition: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """A user's condition -> (typed condition, field codes); a value not in training has code ``-1``.

        Values that match a category (by type, see :func:`match_value`) are replaced by the category itself, so
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
            code = match_value(self.categories[f], condition[f])
            typed[f] = self.value(f, code) if code >= 0 else condition[f]
            codes.append(code)
        return typed, codes


def _value_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value (numbers numerically, anything else as text)."""
    if values.dtype.kind in "iufb":
        order = np.argsort(values.astype(float), kind="stable")
    else:
        order = np.argsort(np.array([str(v) for v in values], dtype=object), kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values))
    return ranks
