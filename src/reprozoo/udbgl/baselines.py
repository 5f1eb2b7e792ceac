"""Baselines of the UDBGL experiment (library calls where a library has them).

Every baseline takes the raw views and applies the same preprocessing as UDBGL (per-view
min-max scaling, :func:`~reprozoo.udbgl.udbgl.minmax_scale_views`), and gets no tuning: the
same budget as UDBGL, which runs at the demo's alpha and beta.

- ``KMeans-concat``: k-means (scikit-learn, 10 restarts) on the concatenated views.
- ``Spectral-concat``: spectral clustering (scikit-learn) on the concatenated views, with a
  symmetric k-nearest-neighbour affinity (an RBF affinity at the default width is degenerate
  on high-dimensional min-max scaled data, and a dense n x n kernel would not scale).
- ``KMeans-single``: k-means on each view alone (the experiment reports the mean over views,
  and the best view as an oracle, since choosing it needs the labels).
- ``AnchorGraph-concat``: anchor-graph spectral clustering (Liu, He, Chang, ICML 2010) on the
  concatenated views with UDBGL's anchors and its initial kNN graph construction: the top-c
  left singular vectors of ``Z D_c^{-1/2}`` then k-means. It isolates what UDBGL's learned
  fusion and rank constraint add over a plain, fixed anchor graph.
- ``LMVSC``: Large-scale Multi-view Subspace Clustering in linear time (Kang, Zhou, Zhao, Shao,
  Han, Xu, AAAI 2020, arXiv:1911.09290), one of the anchor-based methods UDBGL's paper compares
  with: per-view anchors by k-means, per-view anchor graphs by the paper's Eq. (4) (a ridge
  reconstruction on the simplex), the graphs stacked, and k-means on the top-c singular vectors
  (the paper's Theorem 1: spectral clustering of the implied n x n graph at O(n) cost).

All return int64 labels of shape (n_samples,); views are validated as in :class:`UDBGL`.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering

from reprozoo.core.checks import check_float, check_int, check_views
from reprozoo.datasets.multiview import cell_views
from reprozoo.udbgl.udbgl import knn_anchor_graph, minmax_scale_views, solve_simplex_qp

__all__ = ["kmeans_concat", "spectral_concat", "kmeans_single", "anchor_graph_concat", "lmvsc"]


def _prep(views, n_clusters: int) -> tuple[list[np.ndarray], int]:
    X = check_views(cell_views(views), "views")
    c = check_int(n_clusters, "n_clusters", low=2, high=X[0].shape[0])
    return minmax_scale_views(X), c


def _kmeans(x: np.ndarray, c: int, seed: int, n_init: int) -> np.ndarray:
    return KMeans(n_clusters=c, n_init=n_init, random_state=seed).fit_predict(x).astype(np.int64)


def kmeans_concat(views, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means on the horizontally concatenated, min-max scaled views. O(n d c) per iteration."""
    X, c = _prep(views, n_clusters)
    return _kmeans(np.hstack(X), c, seed, n_init)


def spectral_concat(views, n_clusters: int, *, seed: int = 0, n_neighbors: int = 10) -> np.ndarray:
    """Spectral clustering (kNN affinity, ``n_neighbors``) on the concatenated, scaled views.

    scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")``; the kNN graph costs
    O(n^2 d) and the eigensolver is superlinear in n: the scaling foil of the benchmark.
    """
    X, c = _prep(views, n_clusters)
    n = X[0].shape[0]
    k = check_int(n_neighbors, "n_neighbors", low=1)
    model = SpectralClustering(
        n_clusters=c, affinity="nearest_neighbors", n_neighbors=min(k, n - 1),
        assign_labels="kmeans", random_state=seed,
    )
    return model.fit_predict(np.hstack(X)).astype(np.int64)


def kmeans_single(views, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> list[np.ndarray]:
    """k-means on each scaled view alone; one label vector per view."""
    X, c = _prep(views, n_clusters)
    return [_kmeans(x, c, seed, n_init) for x in X]


def anchor_graph_concat(
    views, n_clusters: int, anchors: list[np.ndarray], *, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """Anchor-graph spectral clustering on the concatenated views with given per-view anchors.

    Parameters
    ----------
    views : list of array-like, shape (n, d_v)
    n_clusters : int
    anchors : list of ndarray, shape (m, d_v)
        One anchor matrix per view (e.g. ``UDBGL.anchors_``), in the scaled feature space.

    Z is the Gaussian 5-nearest-anchor graph of the concatenated data (as UDBGL's
    initialisation); the embedding is the top-c left singular vectors of ``Z D_c^{-1/2}``
    (from the m x m eigenproblem), clustered by k-means. O(n m (m + d)): linear in n.
    """
    X, c = _prep(views, n_clusters)
    if not isinstance(anchors, (list, tuple)) or len(anchors) != len(X):
        raise ValueError(f"anchors should be a list of {len(X)} arrays (one per view), got {type(anchors).__name__}")
    A = []
    for v, (x, a) in enumerate(zip(X, anchors, strict=True)):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != x.shape[1]:
            raise ValueError(f"anchors[{v}] should have shape (m, {x.shape[1]}), got {a.shape}")
        A.append(a)
    if len({a.shape[0] for a in A}) != 1:
        raise ValueError(f"anchors should all have the same number of rows m, got {[a.shape[0] for a in A]}")
    Z = knn_anchor_graph(np.hstack(X), np.hstack(A))
    col = Z.sum(axis=0)
    Zn = Z * np.where(col > 0, 1.0 / np.sqrt(np.maximum(col, 1e-300)), 0.0)[None, :]
    return _kmeans(_top_left_singular(Zn, c), c, seed, n_init)


def _top_left_singular(Z: np.ndarray, c: int) -> np.ndarray:
    """Top-c left singular vectors of a tall n x k matrix via the k x k eigenproblem. O(n k^2)."""
    ev, vec = np.linalg.eigh(Z.T @ Z)
    top = np.argsort(ev)[::-1][:c]
    sig = np.sqrt(np.maximum(ev[top], 0.0))
    return (Z @ vec[:, top]) / np.where(sig > 1e-12, sig, 1.0)[None, :]


def lmvsc(
    views, n_clusters: int, n_anchors: int, *, alpha: float = 1e-3, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """LMVSC (Kang et al., AAAI 2020): anchor graphs per view, stacked, then spectral embedding + k-means.

    Steps as the paper's Algorithm 1 and its authors' MATLAB code:

    1. anchors A_v: k-means with ``n_anchors`` centres on each view separately (the authors' code:
       ``litekmeans``, 100 iterations, 10 restarts; here scikit-learn ``KMeans`` with the same budget);
    2. anchor graph Z_v (n x m) of each view, the paper's Eq. (4):
       ``min_z ||x_j - A_v^T z||^2 + alpha ||z||^2  s.t. z >= 0, 1^T z = 1`` per sample, solved
       exactly (the authors use ``quadprog``; here :func:`~reprozoo.udbgl.udbgl.solve_simplex_qp`,
       all samples at once);
    3. Z_bar = [Z_1, ..., Z_V] (n x mV); its top-c left singular vectors are the spectral embedding
       of the graph Z_bar Z_bar^T (the paper's Theorem 1);
    4. k-means (``n_init`` restarts, 100 iterations) on that embedding.

    Parameters
    ----------
    views : list of array-like, shape (n, d_v)
    n_clusters : int, c
    n_anchors : int, m per view (c <= m <= n)
    alpha : float, the ridge weight of Eq. (4) (>= 0); no tuning here, as for UDBGL
    seed, n_init : k-means seed and restarts

    Complexity O(n m (d + m V) + n (mV)^2): linear in n. Returns int64 labels, shape (n,).
    """
    X, c = _prep(views, n_clusters)
    n = X[0].shape[0]
    m = check_int(n_anchors, "n_anchors", low=c, high=n)
    alpha = check_float(alpha, "alpha", low=0.0)
    graphs = []
    for v, x in enumerate(X):
        # 1. per-view anchors
        A = KMeans(n_clusters=m, n_init=n_init, max_iter=100, random_state=seed + v).fit(x).cluster_centers_
        # 2. Eq. (4): 0.5 z^T H z + f^T z with H = 2 (A A^T + alpha I), f = -2 A x_j
        H = 2.0 * (A @ A.T + alpha * np.eye(m))
        graphs.append(solve_simplex_qp(H, -2.0 * x @ A.T)[0])
    # 3. spectral embedding of the stacked graphs, 4. k-means
    U = _top_left_singular(np.hstack(graphs), c)
    return KMeans(n_clusters=c, n_init=n_init, max_iter=100, random_state=seed).fit_predict(U).astype(np.int64)
