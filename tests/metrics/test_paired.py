from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scflowlm import metrics, tl


def _data(keep: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(500, 6)) * np.array([3, 2, 2, 1, 1, 1])
    shift = np.array([4.0, 0, 0, 0, 0, 0])
    noise = rng.normal(size=src.shape) * np.array([3, 2, 2, 1, 1, 1])
    pred = keep * src + np.sqrt(1 - keep**2) * noise + shift
    return src, pred


def test_paired_identity_dims():
    src, pred = _data(1.0)
    res = metrics.paired_identity(src, pred, fraction=5 / 6)
    assert res.summary["mean_corr"] == pytest.approx(1.0)
    assert res.summary["n_dims"] == 5
    assert not res.per_dim.loc[0, "unmoved"]  # the shifted axis is excluded
    assert abs(res.summary["mean_corr_shuffled"]) < 0.1
    src, pred = _data(0.6)
    res = metrics.paired_identity(src, pred, fraction=5 / 6)
    assert res.summary["mean_corr"] == pytest.approx(0.6, abs=0.06)
    src, pred = _data(0.0)
    assert abs(metrics.paired_identity(src, pred).summary["mean_corr"]) < 0.1


def test_paired_identity_orthogonal_and_anndata():
    src, pred = _data(0.8, seed=1)
    res = metrics.paired_identity(src, pred, mode="orthogonal")
    assert res.summary["n_dims"] == 5
    assert res.summary["mean_corr"] == pytest.approx(0.8, abs=0.06)
    a = ad.AnnData(np.zeros((500, 2)))
    a.obsm["X_source"], a.obsm["X_pca"] = src, pred
    res2 = tl.paired_identity(a, mode="orthogonal")  # the AnnData-level wrapper reads the two obsm entries
    assert res2.summary == res.summary
    with pytest.raises(KeyError, match="only a control-source prediction has source cells"):
        tl.paired_identity(ad.AnnData(np.zeros((5, 2))))
