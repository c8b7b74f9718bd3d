"""One estimator of a condition's shift from other conditions, for the baselines and the models' head start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scflowlm._utils import group_means
from scflowlm.data import ConditionTable, estimate_shifts, vector_shifts


def _table():
    """Contexts A, A2 (A's twin) and B; perturbations P, Q and the pair P+Q in A only. Returns table and means."""
    conds = [
        {"ct": ct, "p": p}
        for ct, ps in (("A", ["ctrl", "P", "Q", "P+Q"]), ("A2", ["ctrl", "P"]), ("B", ["ctrl", "P", "Q"]))
        for p in ps
    ]
    base = {"A": np.array([1.0, 0, 0]), "A2": np.array([1.0, 0.1, 0]), "B": np.array([0, 0, 5.0])}
    effect = {
        ("A", "P"): [1, 0, 0],
        ("A2", "P"): [2, 0, 0],
        ("B", "P"): [9, 0, 0],
        ("A", "Q"): [0, 1, 0],
        ("B", "Q"): [0, 9, 0],
        ("A", "P+Q"): [3, 3, 0],
    }
    table, rows = ConditionTable.from_obs(
        pd.DataFrame(conds), ["ct", "p"], perturbation_key="p", control_value="ctrl"
    )
    means = np.zeros((len(table), 3))
    for c, row in zip(conds, rows, strict=True):
        means[row] = base[c["ct"]] + np.asarray(effect.get((c["ct"], c["p"]), [0, 0, 0]), float)
    return table, means


def _shifts(targets, mode, measured=None):
    table, means = _table()
    measured = np.ones(len(table), dtype=bool) if measured is None else measured
    estimates = estimate_shifts(table, measured, targets, mode=mode, similarity_means=means)
    return np.stack([e.apply(means) for e in estimates]), estimates


def test_nearest_comes_from_the_nearest_other_context_and_never_from_own_cells():
    got, _ = _shifts(
        [{"ct": "A", "p": "P"}, {"ct": "A2", "p": "P"}, {"ct": "A", "p": "ctrl"}, {"ct": "A2", "p": "Q"}],
        "nearest",
    )
    np.testing.assert_allclose(got[0], [2, 0, 0])  # A's own P cells unused: A2 (nearest) gives its shift
    np.testing.assert_allclose(got[1], [1, 0, 0])  # A2 <- A
    np.testing.assert_allclose(got[2], 0)  # controls start from themselves
    np.testing.assert_allclose(got[3], [0, 1, 0])  # Q in A2 (unseen there): from A, the nearest with Q


def test_unseen_combination_is_the_sum_of_its_singles_and_unknown_gets_nothing():
    got, estimates = _shifts(
        [{"ct": "B", "p": "P+Q"}, {"ct": "A", "p": "Q+P"}, {"ct": "B", "p": "Z"}], "nearest"
    )
    np.testing.assert_allclose(got[0], [3, 3, 0])  # measured in another context (A): its shift
    np.testing.assert_allclose(got[1], [1, 1, 0])  # A's pair (in any order) held out of its own estimate
    assert estimates[1].source == "P:own;Q:own"
    np.testing.assert_allclose(got[2], 0)
    assert not estimates[2].terms


def test_a_combination_with_a_single_measured_nowhere_sums_the_measured_ones():
    got, estimates = _shifts([{"ct": "B", "p": "Q+Z"}, {"ct": "A2", "p": "P+Z"}], "pooled")
    np.testing.assert_allclose(got[0], [0, 9, 0])  # Q measured in B; Z nowhere: nothing for it
    assert estimates[0].parts == ("Q",)
    np.testing.assert_allclose(got[1], [2, 0, 0])  # P of A2's own cells
    assert estimates[1].parts == ("P",)


def test_pooled_averages_the_other_contexts():
    got, _ = _shifts([{"ct": "A", "p": "P"}], "pooled")
    np.testing.assert_allclose(got[0], [(2 + 9) / 2, 0, 0])


def test_additive_sums_the_singles_of_its_own_context_else_of_the_others_and_names_them():
    measured = np.ones(9, dtype=bool)
    table, _ = _table()
    measured[table.row_of({"ct": "B", "p": "Q"})] = False  # B's Q held out
    got, estimates = _shifts(
        [{"ct": "A", "p": "P+Q"}, {"ct": "B", "p": "P+Q"}, {"ct": "A", "p": "P"}, {"ct": "B", "p": "ctrl"}],
        "additive",
        measured,
    )
    np.testing.assert_allclose(got[0], [1, 1, 0])  # the singles, not the pair's own cells
    assert estimates[0].parts == ("P", "Q")
    np.testing.assert_allclose(
        got[1], [9, 1, 0]
    )  # P from B; Q, not measured in B, from A (the one other context)
    assert estimates[1].parts == ("P", "Q")
    assert estimates[1].source == "own+pooled"
    [alone] = estimate_shifts(
        table, measured, [{"ct": "B", "p": "Z"}], mode="additive", similarity_means=_table()[1]
    )
    assert not alone.terms  # measured nowhere, no vector: no estimate
    np.testing.assert_allclose(got[2], [1, 0, 0])  # a measured single: its own shift
    assert not estimates[3].terms


def test_unknown_mode_and_nearest_without_profiles_are_refused():
    table, _ = _table()
    with pytest.raises(ValueError, match="mode must be one of"):
        estimate_shifts(table, np.ones(9, bool), [], mode="linear")
    with pytest.raises(ValueError, match="needs similarity_means"):
        estimate_shifts(table, np.ones(9, bool), [], mode="nearest")


def test_group_means_leave_groups_without_rows_nan():
    states = np.arange(12.0).reshape(6, 2)
    means = group_means(states, np.array([0, 0, 2, 2, 2, 0]), 4)
    np.testing.assert_allclose(means[0], states[[0, 1, 5]].mean(0))
    assert np.isnan(means[1]).all()
    assert np.isnan(means[3]).all()


def test_inputs_of_the_wrong_shape_name_the_argument():
    """Bug 8: a measured mask of the wrong length returned empty estimates; wrong targets gave a bare KeyError."""
    table, means = _table()
    with pytest.raises(ValueError, match=r"measured must hold one flag per row of the table \(9 rows\)"):
        estimate_shifts(table, np.ones(3, dtype=bool), [{"ct": "A", "p": "P"}], mode="additive")
    with pytest.raises(KeyError, match=r"The target \{'p': 'P'\} lacks the field\(s\) \['ct'\]"):
        estimate_shifts(table, np.ones(len(table), dtype=bool), [{"p": "P"}], mode="additive")
    with pytest.raises(ValueError, match=r"similarity_means must be \[rows, features\].*shape \(2, 3\)"):
        estimate_shifts(
            table,
            np.ones(len(table), dtype=bool),
            [{"ct": "A", "p": "P"}],
            mode="nearest",
            similarity_means=means[:2],
        )


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), "1"])
def test_vector_shifts_need_a_positive_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a number > 0"):
        vector_shifts(np.ones((3, 2)), np.ones((3, 4)), np.ones((1, 2)), alpha=alpha)


def test_vector_shifts_of_identical_vectors_and_other_widths():
    """Identical vectors once raised LinAlgError (alpha=0); vectors of another width a numpy broadcast error."""
    shifts = np.arange(12.0).reshape(3, 4)
    got = vector_shifts(np.ones((3, 2)), shifts, np.ones((1, 2)))
    np.testing.assert_allclose(got, shifts.mean(0, keepdims=True))  # nothing to tell them apart: the mean
    with pytest.raises(ValueError, match="new_vectors have 5 columns and vectors 2"):
        vector_shifts(np.ones((3, 2)), shifts, np.ones((1, 5)))


def test_the_left_out_error_is_exact_and_noise_vectors_choose_the_mean():
    """choose_alpha's closed form equals refitting without each single; noise vectors give the infinite penalty."""
    from scflowlm.data import choose_alpha, vector_weights

    rng = np.random.default_rng(0)
    vectors, shifts = rng.normal(size=(15, 6)), rng.normal(size=(15, 4))
    _, errors = choose_alpha(vectors, shifts, alphas=(0.7,))
    refit = []
    for i in range(15):
        keep = np.arange(15) != i
        # the same absolute penalty as the closed form: alpha times the mean diagonal of all 15 centred vectors
        centred = vectors - vectors.mean(0)
        lam = 0.7 * np.mean(np.sum(centred**2, 1))
        k = vectors[keep] - vectors[keep].mean(0)
        w = np.linalg.solve(k @ k.T + lam * np.eye(14), shifts[keep] - shifts[keep].mean(0))
        pred = shifts[keep].mean(0) + (vectors[i] - vectors[keep].mean(0)) @ k.T @ w
        refit.append(np.sum((shifts[i] - pred) ** 2))
    assert errors[0] == pytest.approx(np.mean(refit))
    chosen = [
        choose_alpha(r.normal(size=(12, 5)), r.normal(size=(12, 30)) + 2)[0]
        for r in map(np.random.default_rng, range(10))
    ]
    assert all(np.isinf(c) for c in chosen)
    weights = vector_weights(rng.normal(size=(12, 5)), rng.normal(size=(2, 5)), alpha=np.inf)
    np.testing.assert_allclose(weights, 1 / 12)


def test_fit_combination_scale_and_vectors_in_the_additive_mode():
    from scflowlm.data import fit_combination_scale

    conds = [{"ct": "A", "p": p} for p in ["ctrl", "P", "Q", "R", "P+Q", "P+R", "Z", "Q+Z"]]
    table, _ = ConditionTable.from_obs(
        pd.DataFrame(conds), ["ct", "p"], perturbation_key="p", control_value="ctrl"
    )
    effect = {"P": [1.0, 0, 0], "Q": [0, 1.0, 0], "R": [0, 0, 2.0]}
    means = np.zeros((len(table), 3))
    for c in conds:
        parts = table.perturbations(c)
        if all(s in effect for s in parts):
            means[table.row_of(c)] = (
                0.5 * sum((np.asarray(effect[s]) for s in parts), np.zeros(3)) * (1 if len(parts) > 1 else 2)
            )
    measured = np.array([table.condition(i)["p"] not in ("Z", "Q+Z") for i in range(len(table))])
    assert fit_combination_scale(table, measured, means) == pytest.approx(0.5)
    vectors = pd.DataFrame(np.eye(3), index=["P", "Q", "Z"])
    [est] = estimate_shifts(
        table,
        measured,
        [{"ct": "A", "p": "Q+Z"}],
        mode="additive",
        similarity_means=means,
        vectors=vectors,
        alpha=np.inf,
        combination_scale=0.5,
    )
    assert est.parts == ("Q", "Z")
    assert est.summed
    mean_single = np.mean([effect[s] for s in ("P", "Q")], axis=0)  # Z from the singles with vectors: P and Q
    np.testing.assert_allclose(est.apply(means), 0.5 * (np.asarray(effect["Q"]) + mean_single))
