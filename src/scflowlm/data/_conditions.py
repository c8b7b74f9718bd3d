"""What a condition value means: one equality rule, combinations of perturbations, and the table of conditions.

Every part of scflowlm that asks "is this cell of that condition?" (a model's registration and predictions, the
held-out split, the control cells of a context, :mod:`scflowlm.tl`) asks it here, so a value given as ``1``,
``1.0`` or ``"1"`` finds the same cells everywhere.

The rule compares a value with the values of a column *by the column's type*: integers exactly as integers (no
float rounding, so plate ids above 2**53 stay apart), floats as floats of the column's precision, booleans only
against ``True``/``False`` (or the strings ``"true"``/``"false"``, any case, and the numbers 0 and 1), and
everything else as text.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COMBINATION_SEP",
    "ConditionTable",
    "as_condition_list",
    "coerce_value",
    "match_mask",
    "match_value",
    "same_value",
    "split_combination",
    "value_mask",
]

#: the default separator of the single perturbations of a combination label ("KLF1+MAP2K6")
COMBINATION_SEP = "+"

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _as_bool(value: Any) -> bool | None:
    """``value`` read as a boolean, or ``None`` if it is not one (``"yes"``, ``2``, ``"ctrl"``)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Number):
        return bool(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _as_int(value: Any) -> int | None:
    """``value`` read as an exact integer (``1``, ``1.0``, ``"1"``), or ``None``."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            number = float(str(value))
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None


def _as_float(value: Any) -> float | None:
    """``value`` read as a float (``1``, ``"1.5"``), or ``None`` (booleans are not numbers here)."""
    if isinstance(value, bool | np.bool_):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def coerce_value(categories: np.ndarray | Sequence[Any], value: Any) -> Any:
    """``value`` read in the type of a column's values ``categories``, or ``None`` if it cannot be one.

    ``"1"`` -> ``1`` for an integer column, ``"true"`` -> ``True`` for a boolean one, ``"ctrl"`` -> ``None`` for
    either; a text or mixed column takes any value (as text).
    """
    kind = np.asarray(categories).dtype.kind
    read = {"b": _as_bool, "i": _as_int, "u": _as_int, "f": _as_float}.get(kind)
    return read(value) if read is not None else value


def value_mask(categories: np.ndarray | Sequence[Any], value: Any) -> np.ndarray:
    """``[K]`` which of a column's values ``categories`` equal ``value``, compared by the column's type.

    See the module's rule: integer columns compare exact integers, float columns floats of the column's precision
    (NaN equals nothing), boolean columns booleans, any other column text.
    """
    cats = np.asarray(categories)
    kind = cats.dtype.kind
    if kind == "b":
        flag = _as_bool(value)
        return np.zeros(len(cats), dtype=bool) if flag is None else cats == flag
    if kind in "iu":
        number = _as_int(value)
        if number is None:
            return np.zeros(len(cats), dtype=bool)
        info = np.iinfo(cats.dtype)
        return cats == number if info.min <= number <= info.max else np.zeros(len(cats), dtype=bool)
    if kind == "f":
        number = _as_float(value)
        if number is None:
            return np.zeros(len(cats), dtype=bool)
        return cats == cats.dtype.type(number)
    if kind == "O":  # mixed Python objects: each by its own type
        return np.array([bool(value_mask(np.asarray([c]), value)[0]) for c in cats], dtype=bool)
    return np.array([str(c) for c in cats], dtype=object) == str(value)


def match_value(categories: np.ndarray | Sequence[Any], value: Any) -> int:
    """Position of ``value`` among a column's values ``categories`` (``-1`` if absent); see :func:`value_mask`."""
    hits = np.flatnonzero(value_mask(categories, value))
    return int(hits[0]) if len(hits) else -1


def same_value(a: Any, b: Any) -> bool:
    """Whether two values are the same under the rule of :func:`value_mask` (symmetric).

    The side that is not text decides the type: ``same_value(1, "1.0")`` and ``same_value("1", 1.0)`` hold,
    ``same_value("a", 1)`` does not.
    """
    if isinstance(a, str) and not isinstance(b, str):
        a, b = b, a
    return bool(value_mask(np.asarray([a]), b)[0])


def match_mask(column: pd.Series, value: Any) -> np.ndarray:
    """``[n]`` which entries of an obs column equal ``value`` (the column's type decides; see :func:`value_mask`)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        hit = value_mask(np.asarray(column.cat.categories), value)  # [K]
        codes = column.cat.codes.to_numpy()
        return np.concatenate([hit, [False]])[codes]  # code -1 (missing) -> last entry
    values = pd.unique(column)
    return column.isin(values[value_mask(values, value)]).to_numpy()


def split_combination(value: Any, sep: str = COMBINATION_SEP) -> tuple[str, ...]:
    """The single perturbations of a combination label, stripped and sorted (``"B + A"`` -> ``("A", "B")``)."""
    parts = [p.strip() for p in str(value).split(sep)] if sep else [str(value).strip()]
    return tuple(sorted(p for p in parts if p))


def as_condition_list(condition: Any, *, name: str = "condition") -> list[dict[str, Any]]:
    """One condition dict, a list of them, a pandas Series (one condition) or a DataFrame (one per row)."""
    if isinstance(condition, pd.DataFrame):
        out = condition.to_dict("records")
    elif isinstance(condition, pd.Series):
        out = [condition.to_dict()]
    elif isinstance(condition, Mapping):
        out = [dict(condition)]
    elif isinstance(condition, str) or not isinstance(condition, Sequence):
        raise TypeError(
            f"{name} must be a dict of template field -> value (or a list of them, a pandas Series or DataFrame), "
            f"got {type(condition).__name__} {condition!r}."
        )
    else:
        out = []
        for c in condition:
            if not isinstance(c, Mapping):
                raise TypeError(
                    f"Each {name} must be a dict of template field -> value, got {type(c).__name__} {c!r}."
                )
            out.append(dict(c))
    if not out:
        raise ValueError(f"No {name} given: pass at least one (the DataFrame or list is empty).")
    return out


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
        return split_combination(condition[self.perturbation_key], self.combination_sep)

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
        """(the registered value equal to ``value``, its code), or ``(value, -1)`` for a value not registered."""
        code = match_value(self.categories[field_name], value)
        return (self.value(field_name, code) if code >= 0 else value), code


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
