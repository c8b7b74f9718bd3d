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
