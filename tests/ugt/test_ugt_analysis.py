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
    s = ood_split(y, tr, va, te, frac_left_out=0.4, classes="last")  # our former protocol, kept as an option
    assert s.ood_classes == [3, 4] and s.num_id_classes == 3
    assert not bool((s.train_mask & (y >= 3)).any()) and bool((s.ood_test_mask == (te & (y >= 3))).all())
    logits = torch.zeros(20, 3)
    logits[s.id_test_mask, 0] = 10.0  # confident on ID nodes, uniform on OOD nodes
    assert ood_auroc(logits, s.id_test_mask, s.ood_test_mask) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        ood_auroc(logits, s.id_test_mask, torch.zeros(20, dtype=torch.bool))


def test_ood_split_reference_draws_floor_of_the_fraction_at_random():
    """Reference get_ood_split: floor(0.4 * C) classes, drawn at random (the former split took the last
    round(0.4 * C): 3 of Cora's 7 classes, always 4, 5, 6)."""
    y = torch.arange(70) % 7
    m = torch.ones(70, dtype=torch.bool)
    drawn = set()
    for seed in range(8):
        s = ood_split(y, m, m, m, frac_left_out=0.4, generator=torch.Generator().manual_seed(seed))
        assert len(s.ood_classes) == 2 and s.num_id_classes == 5  # floor(2.8) = 2
        is_ood = torch.isin(y, torch.tensor(s.ood_classes))
        assert bool((s.y[is_ood] == -1).all()) and sorted(set(s.y[~is_ood].tolist())) == [0, 1, 2, 3, 4]
        assert not bool((s.train_mask & is_ood).any())
        drawn.add(tuple(s.ood_classes))
    assert len(drawn) > 1


def test_feature_noise_reference_spares_training_nodes():
    """Reference perturb_features (bernoulli_0.5, perturb_train_indices=False): int(frac * |set|) nodes of the
    validation, test and unlabelled sets get Bernoulli(0.5) words; training nodes are never touched."""
    gen = torch.Generator().manual_seed(0)
    n, f = 100, 40
    x = torch.zeros(n, f)
    x[torch.arange(n), torch.arange(n) % f] = 1.0
    tr, va, te = torch.arange(n) < 20, (torch.arange(n) >= 20) & (torch.arange(n) < 40), torch.arange(n) >= 60
    xp = perturb_features(x, 0.5, gen, train_mask=tr, val_mask=va, test_mask=te)
    changed = (xp != x).any(dim=1)
    assert not bool(changed[tr].any())
    assert int(changed[va].sum()) == 10 and int(changed[te].sum()) == 20 and int(changed[~(tr | va | te)].sum()) == 10
    assert 0.3 < float((xp[changed] > 0).float().mean()) < 0.7  # Bernoulli(0.5), not the data's 1/40 density
    with pytest.raises(ValueError, match="train_mask"):
        perturb_features(x, 0.5, gen)


def test_perturbations():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(50, 30)
    x[torch.arange(50), torch.arange(50) % 30] = 1.0
    xp = perturb_features(x, 0.2, gen, model="density")
    changed = (xp != x).any(dim=1)
    assert int(changed.sum()) <= 10 and int(changed.sum()) >= 5
    rows = xp.sum(1)
    assert bool((((rows - 1).abs() < 1e-6) | (rows == 0)).all())
    assert torch.equal(perturb_features(x, 0.0, gen, model="density"), x)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    ep = perturb_edges(ei, 10, 1.0, gen)
    assert ep.shape[1] == 8  # 2 undirected edges -> 2 more, both directions
    pairs = set(map(tuple, ep.T.tolist()))
    assert all((v, u) in pairs for u, v in pairs) and all(u != v for u, v in pairs)
    with pytest.raises(ValueError, match="frac_nodes"):
        perturb_features(x, 1.5, gen, model="density")
    with pytest.raises(ValueError, match="budget"):
        perturb_edges(ei, 10, -1.0, gen)


def test_ece():
    logits = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 0])) == pytest.approx(0.0, abs=1e-3)
    assert expected_calibration_error(logits, torch.tensor([1, 1])) == pytest.approx(1.0, abs=1e-3)
