"""Long-tailed subsets of balanced classification data and the usual many / medium / few-shot split.

The profile is the exponential one of the CIFAR-LT protocol (Cui et al., CVPR 2019; Cao et al., LDAM,
NeurIPS 2019): class c (0-based, in ``class_order``) keeps n_c = ⌊n_max · ρ^(−c/(C−1))⌋ samples, so the head
class has n_max and the tail class n_max/ρ. The shot split follows the long-tail literature (Liu et al.,
OLTR, CVPR 2019): many-shot n > 100, medium-shot 20 ≤ n ≤ 100, few-shot n < 20 training samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprozoo.core.checks import check_choice, check_float, check_int, check_labels
from reprozoo.core.seed import check_random_state

__all__ = [
    "longtail_counts",
    "make_longtail",
    "shot_split",
    "shot_accuracies",
    "split_groups_by_frequency",
]


def longtail_counts(n_max: int, n_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Per-class sizes n_c = ⌊n_max · ρ^(−c/(C−1))⌋, c = 0..C−1 (int64, shape (C,)), head first.

    Raises ``ValueError`` for n_max < 1, n_classes < 2 or imbalance_ratio < 1.

    >>> longtail_counts(1000, 10, 100).tolist()
    [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    """
    n_max = check_int(n_max, "n_max", low=1)
    n_classes = check_int(n_classes, "n_classes", low=2)
    rho = check_float(imbalance_ratio, "imbalance_ratio", low=1.0)
    c = np.arange(n_classes, dtype=np.float64)
    # the tiny offset keeps exact powers (e.g. 1000 * 0.01**(1/2) = 100) from flooring one below
    counts = np.floor(n_max * rho ** (-c / (n_classes - 1)) + 1e-9).astype(np.int64)
    return np.maximum(counts, 1)


def make_longtail(labels: Any, imbalance_ratio: float, *, n_max: int | None = None,
                  class_order: Any = None, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Indices of a long-tailed subset of a (roughly balanced) labelled set.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Class of each sample, values 0..C−1 (C ≥ 2, every class present).
    imbalance_ratio : float
        ρ = n_max / n_min ≥ 1 (CIFAR-LT uses 100, 50, 10).
    n_max : int, optional
        Head-class size; default the size of the smallest class (so every class can supply it).
    class_order : array-like of int, shape (C,), optional
        Classes from head to tail; default 0, 1, ..., C−1 (the CIFAR-LT convention).
    seed : int, Generator or None
        Which samples of each class are kept (random without replacement).

    Returns
    -------
    ndarray of int64, sorted indices into ``labels``; class ``class_order[c]`` appears
    ``longtail_counts(n_max, C, ρ)[c]`` times. Cost O(n).

    Raises
    ------
    ValueError
        Bad labels, ρ < 1, n_max larger than a class holds, or a class_order that is not a permutation.
    """
    y = check_labels(labels, "labels")
    if y.size == 0:
        raise ValueError("labels is empty")
    if y.min() < 0:
        raise ValueError(f"labels should be >= 0, got min {y.min()}")
    n_classes = int(y.max()) + 1
    have = np.bincount(y, minlength=n_classes)
    if n_classes < 2 or (have == 0).any():
        raise ValueError(f"labels should cover classes 0..C-1 with C >= 2, got counts {have.tolist()}")
    order = np.arange(n_classes) if class_order is None else check_labels(class_order, "class_order")
    if sorted(order.tolist()) != list(range(n_classes)):
        raise ValueError(f"class_order should be a permutation of 0..{n_classes - 1}, got {order.tolist()}")
    if n_max is None:
        n_max = int(have.min())
    n_max = check_int(n_max, "n_max", low=1)
    counts = longtail_counts(n_max, n_classes, imbalance_ratio)
    short = [int(c) for c, n in zip(order, counts, strict=True) if have[c] < n]
    if short:
        raise ValueError(f"n_max={n_max} is more than class(es) {short} hold ({have[short].tolist()}); "
                         f"lower n_max to at most {int(have.min())}")
    rng = check_random_state(seed)
    keep = [rng.choice(np.flatnonzero(y == c), size=int(n), replace=False) for c, n in zip(order, counts,
                                                                                         strict=True)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def _counts(class_counts: Any) -> np.ndarray:
    counts = check_labels(class_counts, "class_counts")
    if counts.size == 0 or (counts < 0).any():
        raise ValueError(f"class_counts should be a non-empty array of counts >= 0, got {counts.tolist()}")
    return counts


def shot_split(class_counts: Any, many: int = 100, few: int = 20) -> dict[str, np.ndarray]:
    """Classes by training-set size: ``many`` (n > many), ``medium`` (few ≤ n ≤ many), ``few`` (n < few).

    Returns ``{"many": idx, "medium": idx, "few": idx}`` (int64 class indices, possibly empty).

    >>> {k: v.tolist() for k, v in shot_split([500, 50, 5]).items()}
    {'many': [0], 'medium': [1], 'few': [2]}
    """
    counts = _counts(class_counts)
    check_int(many, "many", low=1)
    check_int(few, "few", low=1, high=many)
    return {"many": np.flatnonzero(counts > many), "medium": np.flatnonzero((counts >= few) & (counts <= many)),
            "few": np.flatnonzero(counts < few)}


def shot_accuracies(y_true: Any, y_pred: Any, class_counts: Any, many: int = 100,
                    few: int = 20) -> dict[str, Any]:
    """Top-1 and many / medium / few-shot accuracy (in %) on a test set.

    The shot accuracies are means of the per-class accuracies of each group (the long-tail convention,
    equal to the sample mean on a balanced test set); a group without classes gives NaN.

    Returns ``{"top1", "many", "medium", "few": float, "per_class": ndarray (C,)}``.
    Raises ``ValueError`` for mismatched lengths or labels outside 0..C−1 (C = len(class_counts)).
    """
    counts = _counts(class_counts)
    yt = check_labels(y_true, "y_true")
    yp = check_labels(y_pred, "y_pred", n_samples=yt.shape[0])
    if yt.size == 0:
        raise ValueError("y_true is empty")
    c = counts.size
    if yt.min() < 0 or yt.max() >= c:
        raise ValueError(f"y_true should lie in [0, {c}) (len(class_counts)), got [{yt.min()}, {yt.max()}]")
    correct = (yt == yp).astype(np.float64)
    n_test = np.bincount(yt, minlength=c)
    per_class = np.full(c, np.nan)
    seen = n_test > 0
    per_class[seen] = np.bincount(yt, weights=correct, minlength=c)[seen] / n_test[seen] * 100
    out: dict[str, Any] = {"top1": float(correct.mean() * 100)}
    for name, idx in shot_split(counts, many, few).items():
        vals = per_class[idx]
        vals = vals[~np.isnan(vals)]
        out[name] = float(vals.mean()) if vals.size else float("nan")
    out["per_class"] = per_class
    return out


def split_groups_by_frequency(class_counts: Any, num_groups: int, by: str = "classes") -> np.ndarray:
    """Class → group (0 = most frequent) after sorting the classes by training frequency.

    Parameters
    ----------
    class_counts : array-like of int, shape (C,)
    num_groups : int
        K, 1 ≤ K ≤ C.
    by : {"classes", "samples"}
        "classes": K contiguous groups with (as near as possible) equal numbers of classes;
        "samples": contiguous groups holding about 1/K of the training samples each (at least one class
        per group).

    Returns ndarray int64 (C,). Ties in frequency keep the class order (stable sort).

    >>> split_groups_by_frequency([10, 1000, 100, 1], 2).tolist()
    [1, 0, 0, 1]
    """
    counts = _counts(class_counts)
    k = check_int(num_groups, "num_groups", low=1, high=counts.size)
    check_choice(by, "by", ("classes", "samples"))
    order = np.argsort(-counts, kind="stable")
    group = np.empty(counts.size, dtype=np.int64)
    if by == "classes":
        for g, part in enumerate(np.array_split(order, k)):
            group[part] = g
        return group
    share = np.cumsum(counts[order]) / max(counts.sum(), 1)
    ranks = np.minimum((share * k - 1e-9).astype(np.int64), k - 1)
    # keep groups non-empty and contiguous: rank i may not exceed i nor fall below k - (C - i)
    pos = np.arange(counts.size)
    ranks = np.maximum.accumulate(np.clip(ranks, k - (counts.size - pos), pos))
    group[order] = ranks
    return group
