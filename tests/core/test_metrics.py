import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprozoo.core import metrics


def test_acc_uses_best_matching():
    y = [0, 0, 1, 1, 2, 2]
    pred = [2, 2, 0, 0, 1, 0]  # permuted labels, one mistake
    assert metrics.clustering_accuracy(y, pred) == pytest.approx(5 / 6)


def test_acc_extra_clusters_count_as_wrong():
    # 4 clusters for 2 classes: only 2 clusters can be matched
    assert metrics.clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)


def test_purity_hand_computed():
    # cluster 0 = {0,0,1} votes 0 (2), cluster 1 = {1,1,2} votes 1 (2) -> 4/6
    assert metrics.purity([0, 0, 1, 1, 1, 2], [0, 0, 0, 1, 1, 1]) == pytest.approx(4 / 6)


def test_nmi_max_hand_computed():
    # y = [0,0,1,1], pred = [0,0,0,1]: MI = H(pred) - H(pred|y)
    y, p = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
    h_y = np.log(2)
    h_p = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    h_p_given_y = 0.5 * 0 + 0.5 * np.log(2)
    mi = h_p - h_p_given_y
    assert metrics.nmi_max(y, p) == pytest.approx(mi / max(h_y, h_p))
    assert metrics.nmi(y, p) == pytest.approx(mi / ((h_y + h_p) / 2))


def test_perfect_and_permuted_scores_are_one():
    y = np.repeat(np.arange(4), 5)
    pred = (y + 1) % 4
    s = metrics.clustering_scores(y, pred)
    assert set(s) == {"ACC", "NMI", "NMImax", "ARI", "PUR"}
    for v in s.values():
        assert v == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=40), st.integers(0, 10_000))
def test_scores_in_range_and_nmimax_below_nmi(labels, seed):
    y = np.array(labels)
    pred = np.random.default_rng(seed).integers(0, 4, size=y.size)
    s = metrics.clustering_scores(y, pred)
    for k in ("ACC", "NMI", "NMImax", "PUR"):
        assert -1e-12 <= s[k] <= 1 + 1e-12
    assert s["NMImax"] <= s["NMI"] + 1e-12  # max >= arithmetic mean of the entropies
    assert s["ACC"] <= s["PUR"] + 1e-12


def test_ranking_metrics():
    ranks = np.array([1, 2, 10, 1])
    assert metrics.hits_at_k(ranks, 1) == 0.5
    assert metrics.hits_at_k(ranks, 10) == 1.0
    assert metrics.mrr(ranks) == pytest.approx((1 + 0.5 + 0.1 + 1) / 4)
    with pytest.raises(ValueError, match="1-based"):
        metrics.mrr([0, 1])


def test_bad_input_names_argument():
    with pytest.raises(ValueError, match="y_pred"):
        metrics.clustering_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_true"):
        metrics.nmi([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.ari([0, np.nan], [0, 1])
    assert metrics.accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
