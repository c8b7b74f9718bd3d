"""What a condition value means: one equality rule for the values of a column, and combinations of perturbations.

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
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COMBINATION_SEP",
    "as_condition_list",
    "coerce_value",
    "match_combination",
    "match_mask",
    "match_value",
    "repeated_singles",
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


def _is_text(values: np.ndarray | Sequence[Any]) -> bool:
    """Whether a column's values are compared as text (not numbers or booleans): only text is split at a separator."""
    return np.asarray(values).dtype.kind not in "biuf"


def match_combination(categories: np.ndarray | Sequence[Any], value: Any, sep: str | None) -> int:
    """Position of ``value`` among ``categories``, a combination matching in any order and spacing, or ``-1``.

    ``"B+A"`` and ``"A + B"`` find the category ``"A+B"`` (first the exact value by :func:`value_mask`, then the
    category made of the same singles, :func:`split_combination`). Numeric and boolean columns are never split.
    """
    code = match_value(categories, value)
    if code >= 0 or not sep or not _is_text(categories) or not isinstance(value, str):
        return code
    parts = split_combination(value, sep)
    if not parts:
        return -1
    for i, c in enumerate(np.asarray(categories)):
        if split_combination(c, sep) == parts:
            return i
    return -1


def match_mask(column: pd.Series, value: Any, *, combination_sep: str | None = None) -> np.ndarray:
    """``[n]`` which entries of an obs column equal ``value`` (the column's type decides; see :func:`value_mask`).

    With ``combination_sep`` (the perturbation column), a combination matches in any order and spacing
    (``"B+A"`` finds the cells of ``"A+B"``; :func:`match_combination`).
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = np.asarray(column.cat.categories)
        hit = value_mask(cats, value)  # [K]
        if combination_sep and not hit.any():
            code = match_combination(cats, value, combination_sep)
            hit = np.arange(len(cats)) == code
        codes = column.cat.codes.to_numpy()
        return np.concatenate([hit, [False]])[codes]  # code -1 (missing) -> last entry
    values = pd.unique(column)
    hit = value_mask(values, value)
    if combination_sep and not hit.any():
        hit = np.arange(len(values)) == match_combination(values, value, combination_sep)
    return column.isin(values[hit]).to_numpy()


def split_combination(value: Any, sep: str = COMBINATION_SEP) -> tuple[str, ...]:
    """The distinct single perturbations of a combination label, stripped and sorted (``"B + A"`` -> ``("A", "B")``).

    A single named twice counts once (``"A+A"`` -> ``("A",)``; :func:`repeated_singles` tells). Only text is split:
    the models and :mod:`scflowlm.tl` never call this on a numeric or boolean column (a dose ``-1`` or ``1e+20``
    is one perturbation).
    """
    parts = [p.strip() for p in str(value).split(sep)] if sep else [str(value).strip()]
    return tuple(sorted({p for p in parts if p}))


def repeated_singles(value: Any, sep: str = COMBINATION_SEP) -> list[str]:
    """The singles a combination label names more than once (``"A+A+B"`` -> ``["A"]``), sorted."""
    parts = [p.strip() for p in str(value).split(sep)] if sep else [str(value).strip()]
    parts = [p for p in parts if p]
    return sorted({p for p in parts if parts.count(p) > 1})


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
