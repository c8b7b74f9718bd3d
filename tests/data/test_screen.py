"""The simulated screen: reproducible, its truth recovered by an oracle at the noise floor, doubles as specified."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm import tl
from scflowlm.data import simulate_screen

KW = {
    "condition_keys": ["cell_type", "condition"],
    "perturbation_key": "condition",
    "control_value": "control",
}


@pytest.fixture(scope="module")
def controls():
    rng = np.random.default_rng(0)
    programs = rng.normal(size=(6, 40))
    x = 2.0 + rng.normal(size=(200, 6)) @ programs * 0.5 + rng.normal(scale=0.3, size=(200, 40))
    return ad.AnnData(x.astype(np.float32), var=pd.DataFrame(index=[f"g{i}" for i in range(40)]))


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(1)
    return pd.DataFrame(rng.normal(size=(80, 8)), index=[f"P{i}" for i in range(80)])


def test_the_same_seed_gives_the_same_screen(controls, vectors):
    a = simulate_screen(controls, vectors=vectors, n_singles=20, n_doubles=5, n_pcs=5, seed=3)
    b = simulate_screen(controls, vectors=vectors, n_singles=20, n_doubles=5, n_pcs=5, seed=3)
    c = simulate_screen(controls, vectors=vectors, n_singles=20, n_doubles=5, n_pcs=5, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    assert a.n_obs == 100 + 25 * 40  # half the controls, then 40 cells per condition
    assert set(a.obs["condition"]) == {
        "control",
        *a.uns["simulation"]["singles"],
        *a.uns["simulation"]["doubles"],
    }


def test_doubles_are_the_scaled_sum_of_their_singles_without_interaction(controls, vectors):
    screen = simulate_screen(
        controls,
        vectors=vectors,
        n_singles=20,
        n_doubles=5,
        additivity=0.8,
        interaction=0.0,
        n_pcs=None,
        seed=0,
    )
    effects = screen.uns["simulation"]["effects"]
    for double in screen.uns["simulation"]["doubles"]:
        a, b = double.split("+")
        np.testing.assert_allclose(
            effects.loc[double], 0.8 * (effects.loc[a] + effects.loc[b]), rtol=1e-6, atol=1e-9
        )
    predictable = screen.uns["simulation"]["predictable"]
    shares = [
        (predictable.loc[s] ** 2).sum() / (effects.loc[s] ** 2).sum()
        for s in screen.uns["simulation"]["singles"]
    ]
    assert (
        0.5 < np.mean(shares) < 1.0
    )  # the predictable part holds most of a single's effect (0.8 by construction)


def test_the_oracle_of_the_truth_scores_at_the_noise_floor(controls, vectors):
    """Control cells plus the true effect are as good as real cells (the real-vs-real floor)."""
    screen = simulate_screen(
        controls, vectors=vectors, n_singles=12, n_doubles=0, n_cells=60, n_pcs=10, seed=0
    )
    held = [{"cell_type": "k562", "condition": s} for s in screen.uns["simulation"]["singles"][:6]]
    effects = screen.uns["simulation"]["effects"]
    ctrl = (screen.obs["condition"] == "control").to_numpy()
    parts = []
    for cond in held:
        x = np.asarray(screen.X[ctrl]) + effects.loc[cond["condition"]].to_numpy()
        obs = pd.DataFrame(
            {"cell_type": "k562", "condition": cond["condition"]},
            index=[f"{cond['condition']}-{i}" for i in range(len(x))],
        )
        parts.append(ad.AnnData(x.astype(np.float32), obs=obs, var=screen.var[[]].copy()))
    oracle = ad.concat(parts)
    metrics = ["pearson_delta", "mse"]
    scores = tl.evaluate(screen, oracle, conditions=held, metrics=metrics, key_added=None, **KW)
    ref, half = tl.baseline_real_vs_real(screen, conditions=held, condition_keys=KW["condition_keys"])
    floor = tl.evaluate(ref, half, conditions=held, metrics=metrics, key_added=None, **KW)
    assert scores["pearson_delta"].mean() >= floor["pearson_delta"].mean() - 0.01
    assert scores["mse"].mean() <= floor["mse"].mean() * 1.1
    mean = tl.baseline_mean_shift(screen, conditions=held, **KW)
    worse = tl.evaluate(screen, mean, conditions=held, metrics=metrics, key_added=None, **KW)
    assert worse["pearson_delta"].mean() < scores["pearson_delta"].mean() - 0.2


def test_arguments_that_cannot_work_name_the_fix(controls, vectors):
    with pytest.raises(ValueError, match="n_singles must be between 2 and the 80 genes"):
        simulate_screen(controls, vectors=vectors, n_singles=500)
    with pytest.raises(ValueError, match="predictable must be in"):
        simulate_screen(controls, vectors=vectors, predictable=1.5)
    with pytest.raises(ValueError, match="at least 40 control cells"):
        simulate_screen(controls[:10], vectors=vectors)
