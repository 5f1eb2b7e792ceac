"""Unit tests of FedTiny's Flower-free core against hand-computed or property-based expectations."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from reprozoo.fedtiny import (
    CostModel,
    Mask,
    adjust_layers,
    aggregate_topk,
    candidate_pool,
    client_bn_stats,
    cosine_alpha,
    dirichlet_split,
    is_adjust_round,
    layer_counts,
    layer_densities,
    make_mask,
    masked_fedavg,
    merge_bn_stats,
    pack_state,
    random_mask,
    select_candidate,
    snip_mask,
    synflow_mask,
    topk_grow_drop,
    topk_pruned_gradient,
    unpack_state,
)
from reprozoo.fedtiny.client import build_model, local_train, state_of
from reprozoo.fedtiny.sparse import prunable_names

SHAPES = {"c1": (8, 1, 3, 3), "c2": (16, 8, 3, 3), "c3": (32, 16, 3, 3), "fc": (10, 32)}


def _model(seed=0):
    return build_model("cnn16", 10, 1, seed)


# -- allocation and masks ----------------------------------------------------------------------------
@pytest.mark.parametrize("allocation", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.01, 0.05, 0.3, 0.9, 1.0])
def test_layer_counts_hit_global_density_exactly(allocation, density):
    counts = layer_counts(SHAPES, density, allocation)
    numel = {n: math.prod(s) for n, s in SHAPES.items()}
    n_total = sum(numel.values())
    assert sum(counts.values()) == max(len(SHAPES), round(density * n_total))
    assert all(1 <= counts[n] <= numel[n] for n in SHAPES)
    dens = layer_densities(SHAPES, density, allocation)
    assert sum(dens[n] * numel[n] for n in SHAPES) == pytest.approx(density * n_total, rel=1e-9)


def test_erk_caps_small_layers_at_one_and_rescales_the_rest():
    dens = layer_densities(SHAPES, 0.5, "erk")
    assert dens["c1"] == 1.0  # the 72-weight first conv would exceed 1 under ERK at d = 0.5
    assert all(0 < d <= 1 for d in dens.values())
    # raw ERK ratio preserved among uncapped layers
    raw = {n: sum(s) / math.prod(s) for n, s in SHAPES.items()}
    free = [n for n in SHAPES if dens[n] < 1]
    ratios = {dens[n] / raw[n] for n in free}
    assert max(ratios) == pytest.approx(min(ratios))


@pytest.mark.parametrize("allocation", ["uniform", "er", "erk"])
@pytest.mark.parametrize("floor", [0.0, 0.1, 0.2, 0.5])
def test_min_layer_density_floors_every_layer_and_keeps_the_total(allocation, floor):
    """The per-layer floor: each layer keeps >= min(ceil(floor * numel), budget // layers), the total stays
    exact, and floor 0 is the allocation itself; the ER classifier of cnn16 (58 of 640 at d = 0.05)
    gets 128 at floor 0.2."""
    from reprozoo.fedtiny.sparse import _shapes

    shapes = _shapes(_model())
    numel = {n: math.prod(s) for n, s in shapes.items()}
    budget = round(0.05 * sum(numel.values()))
    counts = layer_counts(shapes, 0.05, allocation, min_density=floor)
    assert sum(counts.values()) == budget
    assert all(counts[n] >= min(math.ceil(floor * numel[n]), budget // len(shapes)) for n in shapes)
    if floor == 0.0:
        assert counts == layer_counts(shapes, 0.05, allocation)
    assert layer_counts(shapes, 0.05, "er")["fc.weight"] == 58
    assert layer_counts(shapes, 0.05, "er", min_density=0.2)["fc.weight"] == 128
    with pytest.raises(ValueError, match="min_density"):
        layer_counts(shapes, 0.05, allocation, min_density=1.0)


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_make_mask_density_and_magnitude_criterion(criterion):
    model = _model()
    mask = make_mask(model, 0.05, "erk", criterion, torch.Generator().manual_seed(0))
    n_total = mask.numel()
    assert mask.nnz() == round(0.05 * n_total)
    if criterion == "magnitude":
        w = dict(model.named_parameters())["features.4.weight"].detach().abs()
        m = mask.masks["features.4.weight"]
        assert w[m].min() >= w[~m].max()


def test_candidate_pool_same_nnz_different_masks():
    pool = candidate_pool(_model(), 0.05, ("erk-magnitude", "uniform-random", "er-magnitude"),
                          torch.Generator().manual_seed(1))
    assert len({m.nnz() for _, m in pool}) == 1
    assert not torch.equal(pool[0][1].masks["fc.weight"], pool[1][1].masks["fc.weight"])


def test_mask_keeps_pruned_weights_zero_through_local_sgd():
    model = _model()
    mask = random_mask(model, 0.1, torch.Generator().manual_seed(0))
    mask.apply(model)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    local_train(model, mask, x, y, epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=1e-3,
                gen=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    for n, m in mask.masks.items():
        assert torch.all(params[n][~m] == 0)
        assert torch.any(params[n][m] != 0)


def test_local_train_is_plain_masked_sgd_bit_for_bit():
    """``local_train`` (foreach SGD, the mask hooks) gives the weights of the textbook loop: SGD stepped tensor
    by tensor, gradients masked before and weights after each step, same batches."""
    from torch.nn import functional as F

    models = [_model(), _model()]
    mask = random_mask(models[0], 0.1, torch.Generator().manual_seed(0))
    x, y = torch.randn(70, 1, 28, 28), torch.randint(0, 10, (70,))
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    for m in models:
        mask.apply(m)
    local_train(models[0], mask, x, y, epochs=1, batch_size=16, gen=torch.Generator().manual_seed(0), **kw)
    model = models[1].train()
    opt = torch.optim.SGD(model.parameters(), foreach=False, **kw)
    order = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    for i in range(0, 70, 16):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[order[i:i + 16]]), y[order[i:i + 16]]).backward()
        mask.mask_grads(model)
        opt.step()
        mask.apply(model)
    a, b = models[0].state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- BN statistics --------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), seed=st.integers(0, 10_000))
def test_merged_bn_stats_equal_pooled_data(sizes, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(rng.normal(0, 3), rng.uniform(0.1, 5), size=(n, 4)) for n in sizes]
    stats = [(p.mean(0), p.var(0), len(p)) for p in parts]
    mu, var, n = merge_bn_stats(stats)
    pooled = np.concatenate(parts)
    assert n == len(pooled)
    np.testing.assert_allclose(mu, pooled.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(var, pooled.var(0), rtol=1e-9, atol=1e-9)


def test_client_bn_stats_first_layer_matches_hand_computation_and_leaves_model_unchanged():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(50, 1, 28, 28)
    stats = client_bn_stats(model, [x[:20], x[20:]])
    conv_out = model.features[0](x).detach().double()  # the first BN input
    mean = conv_out.mean(dim=(0, 2, 3)).numpy()
    var = conv_out.var(dim=(0, 2, 3), unbiased=False).numpy()
    m1, v1, n1 = stats["features.1"]
    assert n1 == 50 * 28 * 28
    np.testing.assert_allclose(m1, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, var, rtol=1e-5, atol=1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_merge_bn_stats_bad_input():
    with pytest.raises(ValueError, match="empty"):
        merge_bn_stats([])
    with pytest.raises(ValueError, match="n=0"):
        merge_bn_stats([(np.zeros(3), np.ones(3), 0)])
    with pytest.raises(ValueError, match="channels"):
        merge_bn_stats([(np.zeros(3), np.ones(3), 5), (np.zeros(4), np.ones(4), 5)])
    with pytest.raises(ValueError, match="NaN"):
        merge_bn_stats([(np.array([np.nan]), np.ones(1), 5)])


# -- candidate selection ---------------------------------------------------------------------------------
def test_select_candidate_picks_known_best_and_uses_weights():
    losses = np.array([[2.0, 2.0, 2.0], [1.0, 3.0, 1.5], [0.5, 0.4, 0.6]])
    assert select_candidate(losses, np.array([10, 10, 10])) == 2
    # weighting: candidate 1 is best on the heavy client 0 only
    losses = np.array([[1.0, 0.1], [0.2, 2.0]])
    assert select_candidate(losses, np.array([100.0, 1.0])) == 1
    assert select_candidate(losses, np.array([1.0, 100.0])) == 0
    with pytest.raises(ValueError, match="weights should have shape"):
        select_candidate(losses, np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        select_candidate(np.array([[np.nan, 1.0]]), np.ones(2))


# -- progressive pruning ---------------------------------------------------------------------------------
def test_cosine_schedule_formula_and_stop_after_t_end():
    for t in range(0, 31):
        assert cosine_alpha(t, 0.2, 30) == pytest.approx(0.1 * (1 + math.cos(math.pi * t / 30)))
    assert cosine_alpha(31, 0.2, 30) == 0.0
    assert [t for t in range(1, 40) if is_adjust_round(t, 10, 30)] == [10, 20, 30]
    with pytest.raises(ValueError, match="alpha"):
        cosine_alpha(1, 0.0, 10)


def test_adjust_layers_cycles_from_output_to_input():
    names = ["a", "b", "c"]
    got = [adjust_layers(t, 2, names)[0] for t in (2, 4, 6, 8)]
    assert got == ["c", "b", "a", "c"]
    assert adjust_layers(2, 2, names, "input_to_output") == ["a"]
    assert adjust_layers(2, 2, names, whole_model=True) == names


def test_topk_buffer_never_exceeds_k_and_holds_largest_pruned_gradients():
    g = torch.tensor([[5.0, -9.0, 1.0], [0.5, -3.0, 7.0]])
    m = torch.tensor([[True, False, False], [False, False, True]])
    idx, val = topk_pruned_gradient(g, m, 2)
    assert len(idx) == len(val) == 2
    assert set(idx.tolist()) == {1, 4}  # -9 and -3 (positions 0 and 5 are active)
    np.testing.assert_allclose(sorted(val.tolist()), [-9.0, -3.0])
    idx, _ = topk_pruned_gradient(g, m, 100)
    assert len(idx) == 4  # capped at the number of pruned positions
    with pytest.raises(ValueError, match="shape"):
        topk_pruned_gradient(g, m[:1], 1)


def test_aggregate_topk_is_weighted_sum_of_sparse_buffers():
    agg = aggregate_topk([(np.array([0, 3]), np.array([1.0, 2.0])), (np.array([3, 4]), np.array([4.0, -1.0]))],
                         [1.0, 3.0], 6)
    np.testing.assert_allclose(agg, [0.25, 0, 0, 0.25 * 2 + 0.75 * 4, -0.75, 0])
    with pytest.raises(ValueError, match="indices should lie"):
        aggregate_topk([(np.array([9]), np.array([1.0]))], [1.0], 6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(0, 12))
def test_grow_drop_keeps_nnz_grows_at_zero_drops_smallest(seed, k):
    rng = np.random.default_rng(seed)
    mask = rng.random((6, 8)) < 0.3
    mask[0, 0] = True
    mask[0, 1] = True
    w = rng.normal(size=(6, 8)) * mask
    g = rng.normal(size=48) * (rng.random(48) < 0.7)
    new_w, new_m = topk_grow_drop(w, mask, g, k)
    assert new_m.sum() == mask.sum()
    assert np.all(new_w[~new_m] == 0)
    grown = new_m & ~mask
    dropped = mask & ~new_m
    assert grown.sum() == dropped.sum() <= k
    assert np.all(new_w[grown] == 0)
    if dropped.any():
        kept_old = mask & new_m
        assert np.abs(w[dropped]).max() <= np.abs(w[kept_old]).min() + 1e-12
        cand = (~mask).reshape(-1) & (g != 0)
        not_grown = cand & ~grown.reshape(-1)
        if not_grown.any():
            assert np.abs(g[grown.reshape(-1)]).min() >= np.abs(g[not_grown]).max()


# -- aggregation and wire format --------------------------------------------------------------------------
def test_masked_fedavg_matches_hand_computed_weighted_mean():
    # prepare
    a = {"w": np.array([1.0, 2.0, 0.0]), "b": np.array([1.0])}
    b = {"w": np.array([3.0, 6.0, 0.0]), "b": np.array([5.0])}
    mask = {"w": np.array([True, True, False])}
    # execute
    out = masked_fedavg([a, b], [1, 3], mask)
    # assert: (1*a + 3*b) / 4
    np.testing.assert_allclose(out["w"], [2.5, 5.0, 0.0])
    np.testing.assert_allclose(out["b"], [4.0])
    with pytest.raises(ValueError, match="weights"):
        masked_fedavg([a, b], [0, 0])
    with pytest.raises(ValueError, match="mask"):
        masked_fedavg([a], [1], {"w": np.ones(2, bool)})
    with pytest.raises(ValueError, match="empty"):
        masked_fedavg([], [])


def test_pack_unpack_roundtrip_and_size():
    model = _model()
    mask = random_mask(model, 0.05, torch.Generator().manual_seed(0))
    mask.apply(model)
    state = state_of(model)
    np_mask = {n: m.numpy() for n, m in mask.masks.items()}
    packet = pack_state(state, np_mask)
    shapes = {k: v.shape for k, v in state.items()}
    back, masks = unpack_state(packet, shapes)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])
    assert sum(v.nbytes for v in packet.values()) < 0.2 * sum(v.nbytes for v in state.values())
    up = pack_state(state, np_mask, send_mask=False)
    back2, _ = unpack_state(up, shapes, masks)
    np.testing.assert_array_equal(back2["fc.weight"], state["fc.weight"])
    up["fc.weight"] = up["fc.weight"][:-1]
    with pytest.raises(ValueError, match="values but the mask keeps"):
        unpack_state(up, shapes, masks)


# -- baselines, cost model, data split ---------------------------------------------------------------------
def test_snip_and_synflow_masks_have_exact_density():
    model = _model()
    n_total = sum(p.numel() for n, p in model.named_parameters() if n in prunable_names(model))
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    assert snip_mask(model, 0.05, x, y).nnz() == round(0.05 * n_total)
    assert synflow_mask(model, 0.05, (1, 28, 28), n_iter=5).nnz() == round(0.05 * n_total)
    with pytest.raises(ValueError, match="B >= 2"):
        snip_mask(model, 0.05, x[:1], y[:1])


def test_cost_model_flops_scale_with_density_and_memory_counts_buffer():
    model = _model()
    cost = CostModel.from_model(model, (1, 28, 28))
    dense = cost.forward_flops(None)
    half = cost.forward_flops({n: v // 2 for n, v in cost.numel.items()})
    assert half == pytest.approx(dense / 2, rel=0.01)
    # conv 1: 16 filters of 1x3x3 on 28x28 outputs
    assert cost.positions["features.0.weight"] == 28 * 28
    nnz = {n: max(1, v // 20) for n, v in cost.numel.items()}
    m0 = cost.memory_bytes(nnz, 32)
    m1 = cost.memory_bytes(nnz, 32, {"fc.weight": 10})
    assert m1["total"] - m0["total"] == 8 * 10 + 4 * cost.numel["fc.weight"]
    assert cost.memory_bytes(None, 32)["params"] > m0["params"]


def test_dirichlet_split_partitions_and_rejects_bad_input():
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_split(labels, 10, 0.5, np.random.default_rng(0))
    allidx = np.concatenate(parts)
    assert len(allidx) == 500 and len(np.unique(allidx)) == 500
    assert min(len(p) for p in parts) >= 2
    with pytest.raises(ValueError, match="needs at least"):
        dirichlet_split(labels[:10], 20, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_split(labels, 5, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_outside_unit_interval_raises(density):
    with pytest.raises(ValueError, match="density"):
        make_mask(_model(), density)


def test_mask_shape_mismatch_raises():
    model = _model()
    bad = Mask({"fc.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        bad.check_model(model)
    with pytest.raises(ValueError, match="not a parameter"):
        Mask({"nope": torch.ones(2, dtype=torch.bool)}).check_model(model)
    with pytest.raises(ValueError, match="allocation"):
        layer_densities(SHAPES, 0.1, "magic")
    with pytest.raises(ValueError, match="allocation-criterion"):
        candidate_pool(model, 0.1, ("erk",))
    with pytest.raises(ValueError, match="no Conv2d"):
        prunable_names(nn.ReLU())


def test_channels_last_layout_computes_the_same_function():
    """``on_device`` (the clients' working model and the server's evaluation model) changes the memory layout
    only: the outputs agree with the NCHW model's up to float rounding; ``channels_last=False`` keeps NCHW
    (the ``channels_last`` config field reaches the clients in their config record)."""
    from reprozoo.fedtiny.client import build_model, on_device
    from reprozoo.fedtiny.experiment import Config
    from reprozoo.fedtiny.protocol import Keys, client_config

    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    nchw = build_model("cnn16", 10, 1, seed=0).eval()
    nhwc = on_device(build_model("cnn16", 10, 1, seed=0), "cpu").eval()
    assert nhwc.features[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc.features[4].weight.is_contiguous()
    assert on_device(build_model("cnn16", 10, 1, seed=0), "cpu", channels_last=False).features[4].weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-4, atol=1e-5)
    assert client_config(Config.from_preset("smoke", channels_last=False), "MNIST", 0)[Keys.CHANNELS_LAST] is False


@pytest.mark.parametrize("channels_last", [False, True])
def test_pool_before_relu_is_bitwise_the_same_network(channels_last):
    """``on_device`` moves each ReLU after its max-pool: outputs, and the weights after SGD steps (so every
    gradient), equal the original order's bit for bit, in either layout; names unchanged, idempotent."""
    from torch.nn import functional as F

    from reprozoo.fedtiny.client import build_model, pool_before_relu

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(53, 1, 28, 28, generator=g), torch.randint(0, 10, (53,), generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    models = [build_model("cnn16", 10, 1, seed=0).to(memory_format=fmt) for _ in range(2)]
    pool_before_relu(pool_before_relu(models[1]))
    assert [type(m).__name__ for m in models[1].features][:4] == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]
    assert list(models[0].state_dict()) == list(models[1].state_dict())
    for model in models:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        for i in range(0, 53, 16):  # the last batch has 5 samples
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + 16]), y[i:i + 16]).backward()
            opt.step()
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(models[0].eval()(x), models[1].eval()(x))
