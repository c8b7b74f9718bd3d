"""Leiden-cluster classifier metrics of the paper: Leiden KL divergence and inception score."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from torch import nn

from .._utils import dense, random_state, subsample_idx


@dataclass
class LeidenClassifier:
    """Leiden clusters of reference cells and a 2-layer ReLU MLP that predicts them.

    Attributes
    ----------
    labels
        Leiden cluster of each reference cell used for the fit, shape (n,).
    n_clusters
        Number of Leiden clusters.
    accuracy
        Accuracy of the MLP on the held-out fraction of the reference cells (NaN without a held-out part).
    mean, scale
        Standardisation of the inputs, shape (d,).
    net
        The torch MLP (``Linear(d, hidden) - ReLU - Linear(hidden, n_clusters)``).
    """

    labels: np.ndarray
    n_clusters: int
    accuracy: float
    mean: np.ndarray
    scale: np.ndarray
    net: nn.Module = field(repr=False)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Cluster probabilities p(y | x), shape (cells, n_clusters)."""
        xa = (dense(x) - self.mean) / self.scale  # (n, d)
        with torch.no_grad():
            logits = self.net(torch.as_tensor(xa, dtype=torch.float32))  # (n, K)
            return torch.softmax(logits, dim=1).double().numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most likely cluster of each cell, shape (cells,)."""
        return self.predict_proba(x).argmax(1)


def fit_leiden_classifier(
    x: np.ndarray,
    *,
    resolution: float = 0.3,
    n_neighbors: int = 15,
    hidden: int = 128,
    n_epochs: int = 300,
    lr: float = 1e-2,
    test_fraction: float = 0.2,
    max_cells: int | None = 20000,
    seed: int = 0,
) -> LeidenClassifier:
    """Leiden-cluster reference cells and train an MLP classifier of the clusters (paper, appendix A.1.1).

    Leiden (``sc.tl.leiden``, igraph flavour, ``resolution`` 0.3 as in the paper) runs on a k-NN graph of
    the reference cells in the given space. A 2-layer ReLU MLP is trained full batch with Adam on the
    standardised coordinates of a ``1 - test_fraction`` part of the cells; its accuracy on the rest is stored.

    Parameters
    ----------
    x
        Reference (real) cells, cells x features.
    resolution
        Leiden resolution.
    n_neighbors
        Neighbours of the k-NN graph.
    hidden
        Width of the hidden layer.
    n_epochs, lr
        Full-batch Adam steps and learning rate.
    test_fraction
        Part of the cells held out to measure the accuracy.
    max_cells
        The reference is subsampled to at most this many cells (``seed``).
    seed
        Seed of the subsampling, Leiden, the split and the MLP initialisation.

    Returns
    -------
    The fitted :class:`LeidenClassifier`.
    """
    rng = random_state(seed)
    xa = dense(x)
    xa = xa[subsample_idx(len(xa), max_cells, rng)]  # (n, d)
    tmp = AnnData(xa.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(tmp, n_neighbors=int(min(n_neighbors, len(xa) - 1)), use_rep="X", random_state=seed)
        sc.tl.leiden(
            tmp, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False
        )
    labels = tmp.obs["leiden"].astype(int).to_numpy()  # (n,)
    n_clusters = int(labels.max()) + 1

    mean = xa.mean(0)
    scale = xa.std(0) + 1e-8
    z = torch.as_tensor((xa - mean) / scale, dtype=torch.float32)  # (n, d)
    t = torch.as_tensor(labels, dtype=torch.long)
    perm = rng.permutation(len(xa))
    n_test = int(round(test_fraction * len(xa))) if len(xa) >= 10 else 0
    test, train = perm[:n_test], perm[n_test:]

    # a tiny full-batch MLP: one thread is faster than several (and than a busy shared CPU)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, acc = _train_mlp(z, t, train, test, hidden, n_clusters, n_epochs, lr, seed)
    finally:
        torch.set_num_threads(n_threads)
    return LeidenClassifier(
        labels=labels, n_clusters=n_clusters, accuracy=acc, mean=mean, scale=scale, net=net
    )


def _train_mlp(
    z: torch.Tensor,
    t: torch.Tensor,
    train: np.ndarray,
    test: np.ndarray,
    hidden: int,
    n_clusters: int,
    n_epochs: int,
    lr: float,
    seed: int,
) -> tuple[nn.Module, float]:
    """Full-batch Adam on cells ``train`` of z (n, d) -> labels t (n,); accuracy on ``test``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(z.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_clusters))
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()
        ztr, ttr = z[train], t[train]
        for _ in range(n_epochs):
            opt.zero_grad()
            loss = loss_fn(net(ztr), ttr)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(z[test]).argmax(1) == t[test]).float().mean()) if len(test) else float("nan")
    return net, acc


def _cluster_distribution(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Fraction of cells per cluster, shape (n_clusters,)."""
    return np.bincount(labels, minlength=n_clusters).astype(np.float64) / max(len(labels), 1)


def _kl(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    """KL(p || q) with ``eps`` added to q (then renormalised) so that it stays finite."""
    q = (q + eps) / (q + eps).sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def leiden_kl(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classifier: LeidenClassifier | None = None,
    real_labels: np.ndarray | None = None,
    eps: float = 1e-6,
    seed: int = 0,
    **fit_kwargs,
) -> float:
    """KL divergence between the Leiden-cluster distributions of real and generated cells.

    ``KL(p_real || p_gen)``, where ``p_real`` is the fraction of real cells per Leiden cluster and ``p_gen``
    the fraction of generated cells that the MLP assigns to each cluster (paper, appendix A.1.1). Without a
    ``classifier`` one is fitted on ``x`` (:func:`fit_leiden_classifier`) and ``p_real`` uses the Leiden labels
    themselves; with one, ``p_real`` uses its predictions on ``x``. A cluster that the generated cells miss
    would make the KL infinite: ``eps`` is added to ``p_gen`` (then renormalised), so a missed cluster of
    weight ``w`` costs about ``w * log(w / eps)``.

    Parameters
    ----------
    x
        Real cells, cells x features.
    y
        Generated cells, in the same space.
    classifier
        A fitted :class:`LeidenClassifier`; fitted on ``x`` if None.
    real_labels
        The clusters of the real cells ``x`` when they are already known (e.g. the Leiden labels of the cells the
        classifier was fitted on); default: the classifier's predictions (or, fitting here, its Leiden labels).
    eps
        Pseudo-frequency added to ``p_gen``.
    seed
        Seed of the classifier fit.
    **fit_kwargs
        Passed to :func:`fit_leiden_classifier`.

    Returns
    -------
    KL divergence in nats (float).
    """
    if classifier is None:
        classifier = fit_leiden_classifier(x, seed=seed, max_cells=None, **fit_kwargs)
        real_labels = classifier.labels if real_labels is None else real_labels
    elif real_labels is None:
        real_labels = classifier.predict(x)
    p = _cluster_distribution(real_labels, classifier.n_clusters)
    q = _cluster_distribution(classifier.predict(y), classifier.n_clusters)
    return _kl(p, q, eps)


def inception_score(
    x: np.ndarray,
    *,
    classifier: LeidenClassifier,
) -> float:
    """Inception score of generated cells under a Leiden classifier (paper, appendix A.1.1).

    ``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)`` the MLP's cluster probabilities and ``p(y)`` their
    mean over the cells of ``x``. It ranges from 1 (every cell looks the same to the classifier) to the
    number of clusters (confident and evenly spread predictions).

    Parameters
    ----------
    x
        Generated cells, cells x features.
    classifier
        A fitted :class:`LeidenClassifier` (for example fitted on the real cells).

    Returns
    -------
    Inception score (float).
    """
    pyx = np.clip(classifier.predict_proba(x), 1e-12, 1.0)  # (n, K)
    py = pyx.mean(0, keepdims=True)  # (1, K)
    return float(np.exp(np.mean(np.sum(pyx * (np.log(pyx) - np.log(py)), axis=1))))
