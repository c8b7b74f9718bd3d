from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from scflowlm import metrics


def test_mean_correlations_against_scipy():
    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, size=(80, 50))
    pred = real[:60] * 0.9 + rng.normal(scale=0.3, size=(60, 50))
    ctrl = rng.gamma(2.0, size=(40, 50))
    mr, mp, mc = real.mean(0), pred.mean(0), ctrl.mean(0)
    out = metrics.mean_correlations(real, pred, control=ctrl)
    r = stats.pearsonr(mr, mp)[0]
    assert out["pearson"] == pytest.approx(r, rel=1e-10)
    assert out["r2"] == pytest.approx(r**2, rel=1e-10)
    assert out["spearman"] == pytest.approx(stats.spearmanr(mr, mp)[0], rel=1e-10)
    assert out["pearson_delta"] == pytest.approx(stats.pearsonr(mr - mc, mp - mc)[0], rel=1e-10)
    from sklearn.metrics import r2_score

    assert out["r2_score"] == pytest.approx(r2_score(mr, mp), rel=1e-10)
    genes = [3, 7, 11, 20, 40]
    sub = metrics.mean_correlations(sp.csr_matrix(real), pred, control=mc, genes=genes)
    assert sub["pearson"] == pytest.approx(stats.pearsonr(mr[genes], mp[genes])[0], rel=1e-10)
    assert sub["pearson_delta"] == pytest.approx(
        stats.pearsonr(mr[genes] - mc[genes], mp[genes] - mc[genes])[0], rel=1e-10
    )


def test_pearson_delta_undefined_for_no_change():
    rng = np.random.default_rng(1)
    ctrl = rng.normal(size=(20, 10))
    out = metrics.mean_correlations(rng.normal(size=(20, 10)), ctrl, control=ctrl)
    assert np.isnan(out["pearson_delta"])


def test_interaction_score_against_a_hand_computation():
    """r of (prediction - reference) with (real - reference), on the chosen genes; NaN for the reference itself."""
    real = np.array([[1.0, 2.0, 0.0, 5.0], [3.0, 2.0, 2.0, 3.0]])  # mean [2, 2, 1, 4]
    pred = np.array([2.5, 1.0, 1.0, 5.0])
    additive = np.array([1.0, 1.0, 1.0, 3.0])
    out = metrics.mean_correlations(real, pred, reference=additive)
    a, b = np.array([1.0, 1.0, 0.0, 1.0]), np.array([1.5, 0.0, 0.0, 2.0])  # real - ref, pred - ref
    expected = ((a - a.mean()) @ (b - b.mean())) / np.sqrt(
        ((a - a.mean()) ** 2).sum() * ((b - b.mean()) ** 2).sum()
    )
    assert out["pearson_interaction"] == pytest.approx(expected, rel=1e-12)
    genes = [0, 2, 3]
    sub = metrics.mean_correlations(real, pred, reference=additive, genes=genes)
    assert sub["pearson_interaction"] == pytest.approx(stats.pearsonr(a[genes], b[genes])[0], rel=1e-12)
    assert np.isnan(
        metrics.mean_correlations(real, additive.astype(np.float32), reference=additive)[
            "pearson_interaction"
        ]
    )
