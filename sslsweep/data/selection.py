"""Which images to label: TypiClust's *typical* subset, chosen from self-supervised features alone.

The random strategy is :func:`sslsweep.data.splits.label_subset` (class-balanced, nested: it reads
the class of every train image to balance). :func:`typical_subset` takes features and a count and
nothing else, so it cannot read a label: the labels of the rows it returns are read afterwards,
by whoever trains on them. No torch here.
"""

from __future__ import annotations

import numpy as np

from sslsweep.schema import SELECTIONS

__all__ = ["SELECTIONS", "typical_subset", "typicality"]
K_NN = 20  # neighbours of the typicality estimate
MAX_CLUSTERS = 500  # k-means never makes more clusters than this, whatever the budget
MIN_CLUSTER_SIZE = 5  # clusters of at most this many points are left for last
_FULL_KMEANS_MAX_K = 50  # above this many clusters, mini-batch k-means (as the authors' code)


def typical_subset(features: np.ndarray, n: int, *, seed: int, k_nn: int = K_NN,
                   max_clusters: int = MAX_CLUSTERS, min_cluster_size: int = MIN_CLUSTER_SIZE) -> np.ndarray:
    """Rows of ``features`` to label: the most typical point of each of ``n`` k-means clusters.

    TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit
    High and Low Budgets", ICML 2022), its first round (nothing labelled yet):

    1. the features are L2-normalised (as the authors' code does) and clustered by k-means into
       ``k = min(n, max_clusters)`` clusters;
    2. the clusters are visited largest first, round after round, leaving clusters of at most
       ``min_cluster_size`` points out while a larger one has points left (the paper's rule for
       large budgets: a capped number of clusters, taking from the largest uncovered ones);
    3. from the cluster visited, the point of highest typicality among its points not yet
       taken is labelled, typicality(x) = 1 / mean Euclidean distance from x to its K nearest
       neighbours in the cluster, K = min(``k_nn``, size // 2) (at least 1).

    With ``n <= max_clusters`` every cluster gives its single most typical point, so an outlier
    is never picked before the dense points it sits apart from. Subsets of different ``n`` are
    not nested: k-means makes other clusters for another ``n``.

    Args:
        features: (N, D) features of the unlabelled pool, one row per image.
        n: how many rows to return, 1 <= n <= N (n = N returns every row).
        seed: seeds k-means.
        k_nn: K of the typicality estimate (20 in the paper).
        max_clusters: the cap on k (500 in the authors' code).
        min_cluster_size: clusters this small are visited last (5 in the authors' code).

    Returns:
        (n,) sorted row indices into ``features``.

    Example::

        rows = typical_subset(feats["train"], 10, seed=0)   # 10 images to send to the annotator
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features has shape {x.shape}: must be (N, D) with N >= 1")
    if not (isinstance(n, (int, np.integer)) and 1 <= n <= len(x)):
        raise ValueError(f"n = {n}: must be an integer in [1, {len(x)}] (the rows of features)")
    if n == len(x):
        return np.arange(len(x))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    clusters = _kmeans(x, min(n, max_clusters), seed)
    members = [np.flatnonzero(clusters == c) for c in range(int(clusters.max()) + 1)]
    taken: list[int] = []
    for c in _visits(members, n, min_cluster_size):
        left = members[c]
        best = int(np.argmax(typicality(x[left], k_nn)))
        taken.append(int(left[best]))
        members[c] = np.delete(left, best)  # the next visit looks among the points still untaken
    return np.sort(np.asarray(taken, dtype=np.int64))


def _visits(members: list[np.ndarray], n: int, min_cluster_size: int) -> list[int]:
    """The cluster of each of the ``n`` picks: largest first, round-robin; small clusters last."""
    sizes = [len(m) for m in members]
    order = sorted((c for c in range(len(members)) if sizes[c]), key=lambda c: (-sizes[c], c))
    left = list(sizes)
    visits: list[int] = []
    for tier in ([c for c in order if sizes[c] > min_cluster_size], order):
        while len(visits) < n and any(left[c] for c in tier):
            for c in tier:
                if left[c] and len(visits) < n:
                    visits.append(c)
                    left[c] -= 1
    return visits


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster index of every row: k-means for k <= 50, mini-batch k-means above (as the authors)."""
    # imported here: importing scikit-learn takes ~1.4 s (measured), and sslsweep.data is
    # imported by the command line's config checks, which never select
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    if k <= _FULL_KMEANS_MAX_K:
        km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=5000, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def typicality(x: np.ndarray, k_nn: int = K_NN, chunk: int = 1024) -> np.ndarray:
    """(N,) typicality of each row of ``x`` (N, D) among the others: 1 / mean Euclidean distance to
    its K = min(``k_nn``, N // 2) nearest neighbours (at least 1); a single row gets 1.

    Computed ``chunk`` rows at a time, so memory stays at chunk x N distances."""
    m = len(x)
    if m == 1:
        return np.ones(1)
    k = max(1, min(k_nn, m // 2))
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(m)
    for i in range(0, m, chunk):
        d2 = sq[i:i + chunk, None] + sq[None, :] - 2.0 * x[i:i + chunk] @ x.T  # (chunk, N) squared
        rows = np.arange(min(chunk, m - i))
        d2[rows, i + rows] = np.inf  # a point is not its own neighbour
        near = np.partition(d2, k - 1, axis=1)[:, :k]
        out[i:i + chunk] = 1.0 / (np.sqrt(np.maximum(near, 0.0)).mean(axis=1) + 1e-12)
    return out
