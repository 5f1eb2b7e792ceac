"""Metrics used by more than one method.

Clustering: ACC (best one-to-one matching of clusters to classes, Hungarian algorithm),
NMI (scikit-learn's arithmetic-mean normalisation), NMImax (normalised by the larger
entropy, as the UDBGL authors' ``NMImax.m``), ARI and PUR (purity).
Ranking: Hits@k and MRR from the rank of the true item. Classification: top-1 accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix, mutual_info_score

from reprozoo.core.checks import check_labels

__all__ = [
    "clustering_accuracy",
    "nmi",
    "nmi_max",
    "ari",
    "purity",
    "clustering_scores",
    "accuracy",
    "hits_at_k",
    "mrr",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred", n_samples=y_true.shape[0])
    if y_true.size == 0:
        raise ValueError("y_true is empty")
    return y_true, y_pred


def clustering_accuracy(y_true, y_pred) -> float:
    """ACC: fraction of samples correct under the best one-to-one cluster-to-class map.

    The map maximises matches over the contingency table (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``); clusters beyond the number of classes
    count as wrong. O(n + k^3) for k clusters/classes.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    table = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / y_true.size)


def nmi(y_true, y_pred) -> float:
    """NMI with arithmetic-mean normalisation (scikit-learn's default)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))


def nmi_max(y_true, y_pred) -> float:
    """NMI normalised by max(H(true), H(pred)), as the UDBGL reference code's ``NMImax.m``.

    When both partitions are a single cluster (both entropies zero) it returns 1.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    mi = mutual_info_score(y_true, y_pred)
    h = max(_entropy(y_true), _entropy(y_pred))
    if h == 0.0:
        return 1.0
    return float(mi / h)


def _entropy(y: np.ndarray) -> float:
    p = np.bincount(np.unique(y, return_inverse=True)[1]) / y.size
    return float(-(p * np.log(p)).sum())


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index (scikit-learn)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def purity(y_true, y_pred) -> float:
    """PUR: each cluster votes for its majority class; fraction of samples in that class."""
    y_true, y_pred = _pair(y_true, y_pred)
    table = contingency_matrix(y_true, y_pred)
    return float(table.max(axis=0).sum() / y_true.size)


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """All clustering metrics at once: ``{"ACC", "NMI", "NMImax", "ARI", "PUR"}``."""
    return {
        "ACC": clustering_accuracy(y_true, y_pred),
        "NMI": nmi(y_true, y_pred),
        "NMImax": nmi_max(y_true, y_pred),
        "ARI": ari(y_true, y_pred),
        "PUR": purity(y_true, y_pred),
    }


def accuracy(y_true, y_pred) -> float:
    """Top-1 accuracy: fraction of equal entries (labels of the same length)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def _ranks(ranks) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks should be a non-empty 1-D array, got shape {r.shape}")
    if np.any(r < 1):
        raise ValueError("ranks should be 1-based (the true item at position 1 has rank 1)")
    return r


def hits_at_k(ranks, k: int) -> float:
    """Hits@k: fraction of queries whose true item has 1-based rank <= k."""
    return float(np.mean(_ranks(ranks) <= k))


def mrr(ranks) -> float:
    """Mean reciprocal rank of the true items (1-based ranks)."""
    return float(np.mean(1.0 / _ranks(ranks)))
