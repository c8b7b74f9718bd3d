"""tl.compare: paired bootstrap CIs that cover a known difference, the share of the gap closed, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scflowlm import pl, tl


def _scores(rng, n_conditions=12, n_seeds=3, effect=0.05, noise=0.05, seed_noise=0.02):
    """Conditions with their own level; model = baseline + effect (noisy per condition and seed); floor above."""
    rows = []
    for c in range(n_conditions):
        level = rng.normal(0.7, 0.1)
        rows.append({"condition": f"c{c}", "model": "baseline", "seed": 0, "r2": level})
        rows.append({"condition": f"c{c}", "model": "floor", "seed": 0, "r2": level + 0.2})
        shift = effect + rng.normal(scale=noise)
        for s in range(n_seeds):
            value = level + shift + rng.normal(scale=seed_noise)
            rows.append({"condition": f"c{c}", "model": "model", "seed": s, "r2": value})
    return pd.DataFrame(rows)


def test_the_bootstrap_interval_covers_a_known_difference():
    """Over 200 simulated benchmarks the 95% interval holds the true difference (0.05) about 95% of the time."""
    rng = np.random.default_rng(0)
    hits = []
    for i in range(200):
        out = tl.compare(_scores(rng), reference="baseline", floor="floor", n_boot=500, seed=i)
        row = out.set_index("predictor").loc["model"]
        hits.append(row["ci_low"] <= 0.05 <= row["ci_high"])
    assert 0.91 <= np.mean(hits) <= 0.99


def test_difference_gap_and_verdicts_against_a_hand_computation():
    rng = np.random.default_rng(1)
    scores = _scores(rng, effect=0.1, noise=0.01, seed_noise=0.001)
    out = tl.compare(scores, reference="baseline", floor="floor", n_boot=300).set_index("predictor")
    means = scores.groupby(["model", "condition"])["r2"].mean().unstack(0)
    difference = (means["model"] - means["baseline"]).mean()
    assert out.loc["model", "difference"] == pytest.approx(difference)
    assert out.loc["model", "gap_closed"] == pytest.approx(difference / 0.2)
    assert out.loc["model", "verdict"] == "better"
    assert out.loc["model", "gap_ci_low"] < out.loc["model", "gap_closed"] < out.loc["model", "gap_ci_high"]
    # E-distance: lower is better, so a higher value is worse
    scores["edistance"] = -scores["r2"]
    out = tl.compare(scores, reference="baseline", floor="floor", metrics=["edistance"], n_boot=300)
    assert out.loc[0, "difference"] < 0
    assert out.loc[0, "verdict"] == "better"
    assert out.loc[0, "gap_closed"] == pytest.approx(difference / 0.2)


def test_no_difference_is_a_tie():
    rng = np.random.default_rng(2)
    out = tl.compare(_scores(rng, effect=0.0, noise=0.05), reference="baseline", n_boot=500)
    assert out.set_index("predictor").loc["model", "verdict"] == "tie"
    assert (
        out.set_index("predictor").loc["floor", "verdict"] == "better"
    )  # without floor=, a predictor like any


def test_verdicts_of_a_lower_is_better_metric():
    """MSE and E-distance: a CI that holds 0 is a tie, one wholly above 0 is worse, wholly below is better."""
    rng = np.random.default_rng(5)
    for effect, noise, expected in ((0.0, 0.05, "tie"), (0.1, 0.01, "worse"), (-0.1, 0.01, "better")):
        scores = _scores(rng, effect=effect, noise=noise).rename(columns={"r2": "mse"})
        out = tl.compare(scores, reference="baseline", metrics=["mse"], n_boot=500)
        row = out.set_index("predictor").loc["model"]
        assert row["verdict"] == expected, (effect, row["ci_low"], row["ci_high"])


def test_bad_arguments_name_the_fix():
    scores = _scores(np.random.default_rng(3))
    with pytest.raises(ValueError, match="reference='nope' is not a predictor"):
        tl.compare(scores, reference="nope")
    with pytest.raises(KeyError, match="no column 'method'"):
        tl.compare(scores, reference="baseline", predictor_key="method")


def test_the_forest_plot_draws_one_row_per_predictor():
    rng = np.random.default_rng(4)
    scores = _scores(rng)
    scores.loc[scores["model"] == "model", "model"] = ["a", "b", "a"] * (
        len(scores[scores["model"] == "model"]) // 3
    )
    table = tl.compare(scores, reference="baseline", floor="floor", n_boot=200)
    ax = pl.compare(table, show=False)
    assert len(ax.get_yticklabels()) == 2
    assert "gap closed" in ax.get_yticklabels()[0].get_text()
