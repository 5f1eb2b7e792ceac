"""reprozoo.sparsity: one top-k keep mask with one tie rule, density checks and density reports."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprozoo.sparsity import (
    check_density,
    check_sparsity,
    density_report,
    global_topk_keep,
    topk_keep,
    topk_threshold,
    warn_empty_layers,
)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), levels=st.integers(1, 5), data=st.data())
def test_topk_keep_exact_count_and_tie_rule(n, levels, data):
    k = data.draw(st.integers(0, n))
    g = torch.Generator().manual_seed(n * 7 + levels)
    scores = torch.randint(0, levels, (n,), generator=g).float()  # few levels: many ties
    keep = topk_keep(scores, k)
    assert keep.dtype == torch.bool and int(keep.sum()) == k
    if 0 < k < n:  # every kept score >= every removed score
        assert scores[keep].min() >= scores[~keep].max()
    # the rule: a stable ascending sort removes the first n - k; ties removed from the lowest index up
    removed = torch.sort(scores, stable=True).indices[: n - k]
    expected = torch.ones(n, dtype=torch.bool)
    expected[removed] = False
    assert torch.equal(keep, expected)


def test_topk_keep_keeps_shape_and_highest_index_on_ties():
    keep = topk_keep(torch.zeros(2, 3), 2)
    assert keep.shape == (2, 3)
    assert keep.flatten().tolist() == [False, False, False, False, True, True]
    with pytest.raises(ValueError, match="k=7"):
        topk_keep(torch.zeros(2, 3), 7)
    with pytest.raises(TypeError, match="k should be an int"):
        topk_keep(torch.zeros(3), 1.0)


def test_threshold_separates_kept_entries():
    scores = torch.randn(50, generator=torch.Generator().manual_seed(0))
    tau = topk_threshold(scores, 10)
    assert torch.equal(topk_keep(scores, 10), scores > tau)
    assert topk_threshold(scores, 50) == float("-inf")


def test_global_topk_keep_ranks_all_tensors_together():
    a, b = torch.tensor([[0.1, 0.9], [0.5, 0.0]]), torch.tensor([0.8, 0.2, 0.7])
    by_name = global_topk_keep({"a": a, "b": b}, 3)
    assert by_name["a"].tolist() == [[False, True], [False, False]] and by_name["b"].tolist() == [True, False, True]
    as_list = global_topk_keep([a, b], 3)
    assert all(torch.equal(x, y) for x, y in zip(as_list, by_name.values(), strict=True))
    flat = topk_keep(torch.cat([a.flatten(), b]), 3)
    assert torch.equal(torch.cat([m.flatten() for m in as_list]), flat)
    with pytest.raises(ValueError, match="empty"):
        global_topk_keep([], 1)


def test_density_and_sparsity_checks():
    assert check_density(1.0) == 1.0 and check_sparsity(0.0) == 0.0
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density"):
            check_density(bad)
    with pytest.raises(ValueError, match="sparsity=1.0"):
        check_sparsity(1.0)
    with pytest.raises(TypeError, match="sparsity"):
        check_sparsity(True)


def test_density_report_and_empty_layer_warning():
    masks = {"a": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "b": torch.zeros(3, dtype=torch.bool)}
    r = density_report(masks)
    assert r.kept == {"a": 3, "b": 0} and r.total == {"a": 4, "b": 3}
    assert r.density == 3 / 7 and r.sparsity == 4 / 7
    assert r.layer_density == {"a": 0.75, "b": 0.0} and r.layer_sparsity == {"a": 0.25, "b": 1.0}
    with pytest.warns(UserWarning, match=r"SNIP keeps no weight in layer\(s\) \['b'\]"):
        assert warn_empty_layers(masks, "SNIP") == ["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_empty_layers([torch.ones(2)]) == []
    with pytest.raises(ValueError, match="empty"):
        density_report({})
