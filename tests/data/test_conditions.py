"""What a condition value means: one equality rule for every column type, combinations, the condition table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scflowlm import ScflowlmWarning
from scflowlm.data import (
    ConditionTable,
    as_condition_list,
    coerce_value,
    match_combination,
    match_mask,
    match_value,
    repeated_singles,
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


# ---------------------------------------------------------------- combinations: one spelling, each single once


def test_a_combination_matches_in_any_order_and_spacing():
    cats = np.array(["control", "A", "B", "A+B"], dtype=object)
    for spelling in ("A+B", "B+A", "A + B", " B+ A "):
        assert match_combination(cats, spelling, "+") == 3
    assert match_combination(cats, "A+C", "+") == -1
    assert match_combination(cats, "B+A", None) == -1  # no separator: text compared as written
    column = pd.Series(pd.Categorical(["A+B", "A", "B+A", "control"]))
    assert match_mask(column, "B + A", combination_sep="+").tolist() == [True, False, False, False]
    assert match_mask(column, "B + A").tolist() == [False, False, False, False]


def test_a_single_named_twice_counts_once():
    assert split_combination("A+A") == ("A",)
    assert split_combination("B+A+B") == ("A", "B")
    assert repeated_singles("A+A+B") == ["A"]
    assert repeated_singles("A+B") == []


def test_the_table_reads_a_pair_written_in_the_other_order_as_the_registered_one():
    table, _ = ConditionTable.from_obs(
        pd.DataFrame({"ct": ["x"] * 4, "p": ["control", "A", "B", "A+B"]}),
        ["ct", "p"],
        perturbation_key="p",
        control_value="control",
    )
    typed, codes = table.encode({"ct": "x", "p": "B + A"})
    assert typed["p"] == "A+B"
    assert table.index_of(codes) == table.row_of({"ct": "x", "p": "A+B"}) >= 0
    with pytest.warns(ScflowlmWarning, match=r"names \['A'\] more than once.*read as 'A'"):
        typed, _ = table.encode({"ct": "x", "p": "A+A"})
    assert typed["p"] == "A"


@pytest.mark.parametrize("sep", ["+", "-", "e"])
def test_a_numeric_perturbation_is_never_split(sep):
    """Bug 6: a dose 1e20 (text '1e+20') once read as the pair '1e' + '20', a dose -1 as dose 1 with sep '-'."""
    table, _ = ConditionTable.from_obs(
        pd.DataFrame({"dose": [0.0, 1e20, -1.0, 2.5]}),
        ["dose"],
        perturbation_key="dose",
        control_value=0.0,
        combination_sep=sep,
    )
    assert table.singles() == sorted(["1e+20", "-1.0", "2.5"])
    assert table.perturbations({"dose": -1}) == ("-1.0",)
    assert table.perturbations({"dose": "1e20"}) == ("1e+20",)


def test_vectors_are_named_by_the_perturbation_columns_type():
    """Bug 3: an int index [1, 2] for a float column once gave a vocabulary of '1', '1.0', '2', '2.0'."""
    table, _ = ConditionTable.from_obs(
        pd.DataFrame({"dose": [0.0, 1.0, 2.0]}), ["dose"], perturbation_key="dose", control_value=0.0
    )
    vectors = pd.DataFrame(np.eye(3), index=[1, 2, 3])
    assert list(table.align_vectors(vectors).index) == ["1.0", "2.0", "3.0"]
    with pytest.raises(ValueError, match="cannot be a value of the float64 column"):
        table.align_vectors(pd.DataFrame(np.eye(1), index=["high"]))
    with pytest.raises(ValueError, match="several vectors for the same perturbation"):
        table.align_vectors(pd.DataFrame(np.eye(2), index=[1, "1.0"]))
    text, _ = ConditionTable.from_obs(
        pd.DataFrame({"p": ["control", "A"]}), ["p"], perturbation_key="p", control_value="control"
    )
    assert list(text.align_vectors(pd.DataFrame(np.eye(2), index=[" A ", "Z"])).index) == ["A", "Z"]
    with pytest.raises(ValueError, match="a combination of \\['A', 'B'\\]"):
        text.align_vectors(pd.DataFrame(np.eye(1), index=["A+B"]))
    no_key, _ = ConditionTable.from_obs(pd.DataFrame({"p": ["A"]}), ["p"])
    with pytest.raises(ValueError, match="need a perturbation_key"):
        no_key.align_vectors(pd.DataFrame(np.eye(1), index=["A"]))
