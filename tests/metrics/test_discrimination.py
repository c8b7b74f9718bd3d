"""Discrimination, DE overlap, variance R^2 and signal: hand computations, and the predictions they must catch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scflowlm import metrics


def test_discrimination_against_a_hand_computation():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    pred = np.array([[0.9, 0.1], [0.0, 1.2]])  # nearest to real 1; between real 0 (1.2) and real 2 (1.8)
    got = metrics.discrimination(pred, real, own=[1, 2])
    # pred 0: L1 to real 1 = 0.2, others 1.0 and 3.8 -> 0 closer -> 0 / 2
    # pred 1: L1 to real 2 = 1.8, to real 0 = 1.2 (closer), to real 1 = 2.2 -> 1 closer -> 1 / 2
    np.testing.assert_allclose(got, [0.0, 0.5])
    # leaving out gene 1 for pred 1: distances 0, 1, 0 -> a tie with real 0 counts half
    got = metrics.discrimination(pred, real, own=[1, 2], exclude=[[], [1]])
    np.testing.assert_allclose(got, [0.0, 0.25])


def test_collapsed_predictions_get_the_worst_discrimination():
    """Predictions that are all alike (mode collapse) rank their own condition at chance; right ones at 0."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 50))
    good = real + rng.normal(scale=0.3, size=real.shape)
    collapsed = np.repeat(real.mean(0, keepdims=True), 20, axis=0) + rng.normal(scale=0.01, size=real.shape)
    own = np.arange(20)
    assert metrics.discrimination(good, real, own).mean() == 0.0
    assert metrics.discrimination(collapsed, real, own).mean() > 0.3
    # a per-condition correlation does not see it: the collapsed ones still correlate with each condition
    assert np.mean([stats.pearsonr(c, r)[0] for c, r in zip(collapsed, real, strict=True)]) > 0.1


def test_de_overlap_is_truncated_to_the_real_count():
    assert metrics.de_overlap([1, 2, 3, 4], [2, 9, 4, 1, 3]) == pytest.approx(3 / 4)  # 3 of pred's top 4
    assert metrics.de_overlap([1, 2], [7, 8, 1, 2]) == 0.0  # right genes, ranked below wrong ones
    assert np.isnan(metrics.de_overlap([], [1, 2]))


def test_variance_r2_against_a_hand_computation_and_a_wrong_spread():
    rng = np.random.default_rng(1)
    sd = np.linspace(0.2, 3.0, 40)
    real = rng.normal(size=(300, 40)) * sd
    same = rng.normal(size=(300, 40)) * sd
    va, vb = real.var(0, ddof=1), same.var(0, ddof=1)
    assert metrics.variance_r2(real, same) == pytest.approx(stats.pearsonr(va, vb)[0] ** 2)
    assert metrics.variance_r2(real, same) > 0.9
    wrong = rng.normal(size=(300, 40)) * rng.permutation(sd) + real.mean(
        0
    )  # right mean, spread on other genes
    assert metrics.variance_r2(real, wrong) < 0.2
    reversed_ = (
        rng.normal(size=(300, 40)) * sd[::-1]
    )  # anti-correlated spread: a squared r would call it good
    assert metrics.variance_r2(real, reversed_) == 0.0
    collapsed = np.repeat(real.mean(0, keepdims=True), 300, axis=0)
    assert metrics.variance_r2(real, collapsed) == 0.0
    genes = [0, 5, 10, 39]
    assert metrics.variance_r2(real, same, genes=genes) == pytest.approx(
        stats.pearsonr(va[genes], vb[genes])[0] ** 2
    )


def test_mse_of_the_means():
    real = np.array([[1.0, 2.0], [3.0, 4.0]])
    pred = np.array([[2.0, 2.0], [2.0, 6.0]])  # means (2, 3) vs (2, 4)
    assert metrics.mean_correlations(real, pred)["mse"] == pytest.approx(0.5)


def test_signal_to_noise_sees_an_effect_above_the_noise_of_its_cells():
    rng = np.random.default_rng(2)
    control = rng.normal(size=(200, 30))
    strong = rng.normal(size=(100, 30)) + 1.0
    none = rng.normal(size=(100, 30))
    change, noise = metrics.signal_to_noise(strong, control)
    assert change == pytest.approx(np.linalg.norm(strong.mean(0) - control.mean(0)))
    assert change / noise > 5
    change, noise = metrics.signal_to_noise(none, control)
    assert change / noise < 2
