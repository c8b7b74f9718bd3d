"""Baselines of the field: the additive sum with a learned scale, ridge (GenePert) and k nearest neighbours."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm import tl

KW = {
    "condition_keys": ["cell_type", "condition"],
    "perturbation_key": "condition",
    "control_value": "control",
}
G = 30


def _screen(effects: dict[str, np.ndarray], n=40, seed=0):
    rng = np.random.default_rng(seed)
    blocks, obs = [rng.normal(scale=0.3, size=(n, G))], [("a", "control")] * n
    for p, effect in effects.items():
        blocks.append(effect + rng.normal(scale=0.3, size=(n, G)))
        obs += [("a", p)] * n
    adata = ad.AnnData(
        np.concatenate(blocks).astype(np.float32), obs=pd.DataFrame(obs, columns=KW["condition_keys"])
    )
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    return adata


def _change(pred, adata):
    ctrl = (adata.obs["condition"] == "control").to_numpy()
    return np.asarray(pred.X).mean(0) - np.asarray(adata.X[ctrl]).mean(0)


def test_the_learned_scale_recovers_sub_additive_doubles():
    """Doubles at 0.8x the sum of their singles: scale='fit' learns 0.8 on the training doubles."""
    rng = np.random.default_rng(1)
    singles = {f"S{i}": rng.normal(size=G) for i in range(6)}
    doubles = {
        f"S{i}+S{j}": 0.8 * (singles[f"S{i}"] + singles[f"S{j}"]) for i in range(6) for j in range(i + 1, 6)
    }
    adata = _screen(singles | doubles)
    held = {"cell_type": "a", "condition": "S0+S1"}
    train = adata[(adata.obs["condition"] != "S0+S1").to_numpy()].copy()
    plain = tl.baseline_additive(train, conditions=held, **KW)
    scaled = tl.baseline_additive(train, conditions=held, scale="fit", **KW)
    truth = doubles["S0+S1"]
    assert float(scaled.obs["source_context"].iloc[0].split("*")[-1]) == pytest.approx(0.8, abs=0.02)
    assert np.abs(_change(scaled, train) - truth).mean() < 0.5 * np.abs(_change(plain, train) - truth).mean()
    assert set(scaled.obs["baseline"]) == {"additive_scaled"}


def test_ridge_falls_back_to_the_mean_shift_when_vectors_are_noise():
    """Vectors unrelated to the effects: leave-one-out picks the infinite penalty, the mean training shift."""
    rng = np.random.default_rng(2)
    effects = {f"S{i}": rng.normal(size=G) + 2.0 for i in range(12)}
    adata = _screen(effects)
    vectors = pd.DataFrame(rng.normal(size=(13, 5)), index=[*effects, "Z"])
    held = {"cell_type": "a", "condition": "Z"}
    ridge = tl.baseline_ridge(adata, conditions=held, perturbation_embeddings=vectors, **KW)
    mean = tl.baseline_mean_shift(adata, conditions=held, **KW)
    np.testing.assert_allclose(_change(ridge, adata), _change(mean, adata), atol=1e-5)


def test_ridge_and_knn_follow_informative_vectors():
    rng = np.random.default_rng(3)
    M = rng.normal(size=(G, 4))
    vectors = pd.DataFrame(rng.normal(size=(21, 4)), index=[*(f"S{i}" for i in range(20)), "Z"])
    effects = {s: M @ vectors.loc[s].to_numpy() for s in vectors.index[:-1]}
    adata = _screen(effects)
    held = {"cell_type": "a", "condition": "Z"}
    truth = M @ vectors.loc["Z"].to_numpy()
    ridge = _change(tl.baseline_ridge(adata, conditions=held, perturbation_embeddings=vectors, **KW), adata)
    knn = _change(
        tl.baseline_knn(adata, conditions=held, perturbation_embeddings=vectors, n_neighbors=1, **KW), adata
    )
    mean = _change(tl.baseline_mean_shift(adata, conditions=held, **KW), adata)
    assert np.corrcoef(ridge, truth)[0, 1] > 0.95
    nearest = vectors.index[:-1][
        np.argmax(
            vectors.iloc[:-1].to_numpy()
            @ vectors.loc["Z"].to_numpy()
            / np.linalg.norm(vectors.iloc[:-1].to_numpy(), axis=1)
        )
    ]
    np.testing.assert_allclose(
        knn, _change(adata[(adata.obs.condition == nearest).to_numpy()], adata), atol=1e-4
    )
    assert np.corrcoef(mean, truth)[0, 1] < np.corrcoef(ridge, truth)[0, 1]


def test_a_measured_single_keeps_its_own_shift_and_a_combination_sums():
    rng = np.random.default_rng(4)
    effects = {f"S{i}": rng.normal(size=G) for i in range(8)}
    adata = _screen(effects)
    vectors = pd.DataFrame(rng.normal(size=(9, 3)), index=[*effects, "Z"])
    train = adata[(adata.obs["condition"] != "S0").to_numpy()].copy()
    pair = {"cell_type": "a", "condition": "S1+Z"}
    got = _change(tl.baseline_ridge(train, conditions=pair, perturbation_embeddings=vectors, **KW), train)
    z = _change(
        tl.baseline_ridge(
            train, conditions={"cell_type": "a", "condition": "Z"}, perturbation_embeddings=vectors, **KW
        ),
        train,
    )
    s1 = _change(train[(train.obs.condition == "S1").to_numpy()], train)
    np.testing.assert_allclose(got, s1 + z, atol=1e-4)
    with pytest.raises(ValueError, match="finite numbers"):
        tl.baseline_knn(train, conditions=pair, perturbation_embeddings=vectors * np.nan, **KW)
