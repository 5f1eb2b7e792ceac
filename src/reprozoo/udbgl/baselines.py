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

All return int64 labels of shape (n_samples,); views are validated as in :class:`UDBGL`.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering

from reprozoo.core.checks import check_int, check_views
from reprozoo.udbgl.udbgl import knn_anchor_graph, minmax_scale_views

__all__ = ["kmeans_concat", "spectral_concat", "kmeans_single", "anchor_graph_concat"]


def _prep(views, n_clusters: int) -> tuple[list[np.ndarray], int]:
    X = check_views(list(views) if isinstance(views, tuple) else views, "views")
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
    ev, vec = np.linalg.eigh(Zn.T @ Zn)
    top = np.argsort(ev)[::-1][:c]
    sig = np.sqrt(np.maximum(ev[top], 0.0))
    U = (Zn @ vec[:, top]) / np.where(sig > 1e-12, sig, 1.0)[None, :]
    return _kmeans(U, c, seed, n_init)
