"""MAD, OOD split/AUROC, perturbations, ECE."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from reprozoo.ugt import (  # noqa: E402
    expected_calibration_error,
    mean_average_distance,
    ood_auroc,
    ood_split,
    perturb_edges,
    perturb_features,
)


def test_mad_hand_computed():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # cosine distances: d01 = 1, d02 = d12 = 1 - 1/sqrt(2)
    c = 1 - 2**-0.5
    expected = ((1 + c) / 2 + (1 + c) / 2 + (c + c) / 2) / 3
    assert mean_average_distance(h) == pytest.approx(expected)
    assert mean_average_distance(torch.ones(5, 3)) == 0.0  # fully over-smoothed
    assert mean_average_distance(torch.zeros(5, 3)) == 0.0  # dead network: nothing to tell nodes apart
    h0 = torch.cat([h, torch.zeros(1, 2)])  # a zero row adds no distance and is not counted
    assert mean_average_distance(h0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="2-D"):
        mean_average_distance(torch.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        mean_average_distance(torch.full((3, 2), float("nan")))


def test_ood_split_and_auroc():
    y = torch.arange(20) % 5
    tr = torch.arange(20) < 10
    va = (torch.arange(20) >= 10) & (torch.arange(20) < 15)
    te = torch.arange(20) >= 15
    s = ood_split(y, tr, va, te, frac_left_out=0.4)
    assert s.ood_classes == [3, 4] and s.num_id_classes == 3
    assert not bool((s.train_mask & (y >= 3)).any()) and bool((s.ood_test_mask == (te & (y >= 3))).all())
    logits = torch.zeros(20, 3)
    logits[s.id_test_mask, 0] = 10.0  # confident on ID nodes, uniform on OOD nodes
    assert ood_auroc(logits, s.id_test_mask, s.ood_test_mask) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        ood_auroc(logits, s.id_test_mask, torch.zeros(20, dtype=torch.bool))


def test_perturbations():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(50, 30)
    x[torch.arange(50), torch.arange(50) % 30] = 1.0
    xp = perturb_features(x, 0.2, gen)
    changed = (xp != x).any(dim=1)
    assert int(changed.sum()) <= 10 and int(changed.sum()) >= 5
    rows = xp.sum(1)
    assert bool((((rows - 1).abs() < 1e-6) | (rows == 0)).all())
    assert torch.equal(perturb_features(x, 0.0, gen), x)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    ep = perturb_edges(ei, 10, 1.0, gen)
    assert ep.shape[1] == 8  # 2 undirected edges -> 2 more, both directions
    pairs = set(map(tuple, ep.T.tolist()))
    assert all((v, u) in pairs for u, v in pairs) and all(u != v for u, v in pairs)
    with pytest.raises(ValueError, match="frac_nodes"):
        perturb_features(x, 1.5, gen)
    with pytest.raises(ValueError, match="budget"):
        perturb_edges(ei, 10, -1.0, gen)


def test_ece():
    logits = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 0])) == pytest.approx(0.0, abs=1e-3)
    assert expected_calibration_error(logits, torch.tensor([1, 1])) == pytest.approx(1.0, abs=1e-3)
