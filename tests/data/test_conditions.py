"""What a condition value means: one equality rule for every column type, combinations, the condition table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scflowlm.data import (
    ConditionTable,
    as_condition_list,
    coerce_value,
    match_mask,
    match_value,
    same_value,
    split_combination,
)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (np.array([0, 1, 10]), 1, [False, True, False]),
        (np.array([0, 1, 10]), 1.0, [False, True, False]),
        (np.array([0, 1, 10]), "1", [False, True, False]),
        (np.array([0, 1, 10]), "1.0", [False, True, False]),
        (np.array([0, 1, 10]), 1.5, [False, False, False]),
        (np.array([0.0, 1.0, 1.5]), "1.5", [False, False, True]),
        (np.array([0.0, 1.0, 1.5]), 1, [False, True, False]),
        (np.array([0.1, 0.2], dtype=np.float32), "0.1", [True, False]),
        (np.array([True, False]), "TRUE", [True, False]),
        (np.array([True, False]), 0, [False, True]),
        (np.array([True, False]), "yes", [False, False]),
        (np.array([True, False]), "ctrl", [False, False]),
        (np.array(["a", "1"]), 1, [False, True]),
        (np.array([2**53, 2**53 + 1], dtype=np.int64), 2**53 + 1, [False, True]),
        (np.array([2**53, 2**53 + 1], dtype=np.int64), str(2**53), [True, False]),
    ],
)
def test_one_equality_rule_by_the_columns_type(column, value, expected):
    assert match_mask(pd.Series(column), value).tolist() == expected
    assert match_mask(pd.Series(pd.Categorical(column)), value).tolist() == expected
    hits = [i for i, e in enumerate(expected) if e]
    assert match_value(column, value) == (hits[0] if hits else -1)


def test_same_value_is_symmetric_and_the_non_text_side_decides():
    assert same_value(0, 0.0)
    assert same_value("1", 1.0)
    assert same_value(1.0, "1")
    assert not same_value("a", 1)
    assert same_value("x", "x")
    assert not same_value(True, "yes")


def test_coerce_value_reads_a_value_in_the_columns_type():
    assert coerce_value(np.array([1, 2]), "3") == 3
    assert coerce_value(np.array([True]), "false") is False
    assert coerce_value(np.array([True]), "ctrl") is None
    assert coerce_value(np.array([1.5]), "x") is None
    assert coerce_value(np.array(["a"]), 3) == 3


def test_combinations_split_into_sorted_singles():
    assert split_combination("KLF1+MAP2K6") == ("KLF1", "MAP2K6")
    assert split_combination(" MAP2K6 + KLF1 ") == ("KLF1", "MAP2K6")
    assert split_combination("A_B", "_") == ("A", "B")
    assert split_combination("IFNB") == ("IFNB",)


def test_empty_condition_list_is_refused():
    with pytest.raises(ValueError, match="No condition given"):
        as_condition_list(pd.DataFrame({"a": []}))
    with pytest.raises(ValueError, match="No condition given"):
        as_condition_list([])


def test_table_without_fields_has_one_condition():
    table = ConditionTable.from_codes([], {}, np.zeros((5, 0), dtype=np.int64))
    assert len(table) == 1
    assert table.condition(0) == {}
    assert table.index_of(()) == 0


def test_perturbations_of_a_condition():
    table = ConditionTable.from_codes(
        ["p"],
        {"p": np.array(["ctrl", "A+B", "B"])},
        np.array([[0], [1], [2]]),
        perturbation_key="p",
        control_value="ctrl",
    )
    singles = {table.condition(i)["p"]: table.perturbations(table.condition(i)) for i in range(3)}
    assert singles == {"ctrl": (), "A+B": ("A", "B"), "B": ("B",)}


def test_control_mask_agrees_with_is_control():
    """The vectorised control flags (used for the control pool of every prediction) equal the per-condition test."""
    table = ConditionTable.from_codes(
        ["cell_type", "dose"],
        {"cell_type": np.array(["A", "B"]), "dose": np.array([0.0, 1.0, 10.0])},
        np.array([[0, 0], [0, 1], [1, 0], [1, 2], [1, 2]]),
        perturbation_key="dose",
        control_value=0,
    )
    expected = [table.is_control(table.condition(i)) for i in range(len(table))]
    assert table.control_mask().tolist() == expected == [True, False, True, False]
    no_key = ConditionTable.from_codes(["cell_type"], {"cell_type": np.array(["A"])}, np.array([[0]]))
    assert no_key.control_mask().tolist() == [False]
