from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import linalg

from scflowlm import metrics


def _w2_gaussians(m1, c1, m2, c2):
    """Closed-form W2 between N(m1, c1) and N(m2, c2)."""
    s1 = linalg.sqrtm(c1)
    cross = linalg.sqrtm(s1 @ c2 @ s1).real
    return np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross))


def test_wasserstein_equals_brute_force_permutation():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
        best = min(np.mean(np.sum((x - y[list(p)]) ** 2, axis=1)) for p in itertools.permutations(range(6)))
        assert metrics.wasserstein(x, y) == pytest.approx(np.sqrt(best), rel=1e-9)


def test_wasserstein_gaussian_closed_form():
    rng = np.random.default_rng(1)
    d = 2
    m1, m2 = np.zeros(d), np.array([3.0, -1.0])
    c1 = np.array([[1.0, 0.3], [0.3, 0.5]])
    c2 = np.array([[2.0, -0.4], [-0.4, 1.0]])
    n = 1500
    x = rng.multivariate_normal(m1, c1, size=n)
    y = rng.multivariate_normal(m2, c2, size=n)
    truth = _w2_gaussians(m1, c1, m2, c2)
    est = metrics.wasserstein(x, y)
    # empirical W2 is biased upwards by the sampling noise (of order n^(-1/d)); 2-D, n = 1500: a few percent
    assert est == pytest.approx(truth, rel=0.05)
    assert est >= truth * 0.99
    xs, ys = x[:300], y[:300]
    exact = metrics.wasserstein(xs, ys)
    sk = metrics.wasserstein(xs, ys, method="sinkhorn", reg=0.01)
    assert exact <= sk <= exact * 1.05


def test_mmd_identical_near_zero_and_grows_with_shift():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 2))
    y = rng.normal(size=(1000, 2))
    shifts = (0.0, 0.5, 1.0, 2.0)
    values = [metrics.mmd(x, y + np.array([s, 0.0])) for s in shifts]
    assert abs(values[0]) < 0.01
    assert all(b > a for a, b in itertools.pairwise(values))
    # closed form for N(0, I) vs N(mu, I) in 2-D with k = exp(-|a - b|^2): 2/5 (1 - exp(-|mu|^2 / 5))
    for s, v in zip(shifts, values, strict=True):
        assert v == pytest.approx(0.4 * (1 - np.exp(-(s**2) / 5)), abs=0.02)
    # same multiset: unbiased estimator is ~0 (slightly negative)
    assert abs(metrics.mmd(x, x)) < 0.01


def test_mmd_matches_explicit_formula_and_multi_gamma():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4)) + 0.3

    def explicit(g):
        k = lambda a, b: np.exp(-g * np.sum((a[:, None] - b[None]) ** 2, -1))  # noqa: E731
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        n, m = len(x), len(y)
        return (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )

    assert metrics.mmd(x, y) == pytest.approx(explicit(1.0), rel=1e-10)
    gs = [0.1, 0.5, 2.0]
    assert metrics.mmd(x, y, gamma=gs) == pytest.approx(np.mean([explicit(g) for g in gs]), rel=1e-10)
    assert np.isfinite(metrics.mmd(x, y, gamma="median"))
    assert np.isfinite(metrics.mmd(x, y, gamma="cellflow"))


def test_adaptive_mmd_near_zero_and_grows():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    same = metrics.adaptive_mmd(x, y)
    shifted = metrics.adaptive_mmd(x, y + 1.5)
    assert abs(same) < 0.02
    assert shifted > 10 * abs(same) + 0.05
    # scale-free: rescaling both sets leaves it unchanged
    assert metrics.adaptive_mmd(3 * x, 3 * (y + 1.5)) == pytest.approx(shifted, rel=1e-8)


def test_edistance_conventions():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) * 2 + 1
    # squared-Euclidean V-statistic convention reduces to 2 ||mean difference||^2
    e = metrics.edistance(x, y)
    assert e == pytest.approx(2 * np.sum((x.mean(0) - y.mean(0)) ** 2), rel=1e-9)
    from scipy.spatial.distance import cdist

    ee = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert metrics.edistance(x, y, metric="euclidean") == pytest.approx(ee, rel=1e-9)


def test_joint_spaces():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(60, 80)), rng.normal(size=(50, 80)) + 0.5
    xe, ye = metrics.joint_embedding(x, y, space="pca", n_pcs=5)
    assert xe.shape == (60, 5)
    assert ye.shape == (50, 5)
    with pytest.raises(ValueError, match="different numbers of features"):
        metrics.mmd(x, y[:, :4])
    with pytest.raises(ValueError, match="space"):
        metrics.joint_embedding(x, y, space="tsne")


def test_umap_space_separates_shifted_sets():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 20))
    y_same = rng.normal(size=(150, 20))
    y_far = rng.normal(size=(150, 20)) + 3
    xe, ye = metrics.joint_embedding(x, y_far, space="umap", n_components=10)
    assert xe.shape == (150, 10)
    assert ye.shape == (150, 10)
    near = metrics.mmd(*metrics.joint_embedding(x, y_same, space="umap"))  # the paper: a joint 10-D UMAP
    far = metrics.mmd(xe, ye)
    assert far > near + 0.05
