from __future__ import annotations

import numpy as np
import pytest

from scflowlm import metrics


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 6
    labels = np.repeat(np.arange(4), 150)
    x = centers[labels] + rng.normal(size=(600, 8))
    perm = rng.permutation(600)
    return x[perm], labels[perm]


def test_classifier_recovers_blobs(blobs):
    x, truth = blobs
    clf = metrics.fit_leiden_classifier(x, seed=0)
    assert clf.n_clusters == 4
    assert clf.accuracy > 0.95
    # clusters match the planted blobs (up to relabelling)
    table = np.zeros((4, 4))
    np.add.at(table, (clf.labels, truth), 1)
    assert (table.max(1).sum() / len(truth)) > 0.97
    # deterministic with a seed
    again = metrics.fit_leiden_classifier(x, seed=0)
    np.testing.assert_array_equal(again.labels, clf.labels)
    np.testing.assert_allclose(again.predict_proba(x), clf.predict_proba(x))


def test_leiden_kl_split_vs_dropped_cluster(blobs):
    x, truth = blobs
    a, b = x[:300], x[300:]  # disjoint halves of the same data
    clf = metrics.fit_leiden_classifier(a, seed=0)
    near = metrics.leiden_kl(a, b, classifier=clf)
    assert near < 0.02
    assert metrics.leiden_kl(a, b, seed=0) < 0.02  # fits its own classifier on a
    dropped = b[truth[300:] != 0]
    far = metrics.leiden_kl(a, dropped, classifier=clf)
    assert far > 2.0  # a quarter of the mass lost: about 0.25 * log(0.25 / 1e-6)
    # KL of the cluster fractions computed by hand
    p = np.bincount(clf.predict(a), minlength=4) / len(a)
    q = np.bincount(clf.predict(dropped), minlength=4) / len(dropped)
    q = (q + 1e-6) / (q + 1e-6).sum()
    assert far == pytest.approx(np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0])), rel=1e-9)


def test_inception_score_range(blobs):
    x, truth = blobs
    clf = metrics.fit_leiden_classifier(x, seed=0)
    full = metrics.inception_score(x, classifier=clf)
    one = metrics.inception_score(x[truth == 1], classifier=clf)
    assert 3.5 < full <= 4.0 + 1e-9  # confident and even over 4 clusters
    assert 1.0 - 1e-9 <= one < 1.2  # a single cluster
    # by hand: exp(E_x KL(p(y|x) || p(y)))
    p = np.clip(clf.predict_proba(x), 1e-12, 1)
    py = p.mean(0)
    assert full == pytest.approx(np.exp(np.mean(np.sum(p * np.log(p / py), 1))), rel=1e-9)
