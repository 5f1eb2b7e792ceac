"""Masked layers, global threshold, straight-through gradient and the converter."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("torch_geometric")

from torch_geometric.nn import GATConv, GCNConv, GINConv  # noqa: E402

from reprozoo.ugt import (  # noqa: E402
    ScoreMask,
    SparseLinear,
    current_sparsity,
    global_threshold,
    init_weight_,
    layer_sparsities,
    masked_modules,
    refresh_masks,
    score_parameters,
    set_sparsity,
    sparsify_,
)


class _Two(nn.Module):
    def __init__(self, a=13, b=7, c=5):
        super().__init__()
        self.l1 = nn.Linear(a, b, bias=False)
        self.l2 = nn.Linear(b, c, bias=False)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


@settings(max_examples=40, deadline=None)
@given(sparsity=st.floats(0.0, 0.999), a=st.integers(1, 20), b=st.integers(1, 20), c=st.integers(1, 9))
def test_global_threshold_gives_exact_density(sparsity, a, b, c):
    torch.manual_seed(0)
    model = sparsify_(_Two(a, b, c), sparsity)
    n = a * b + b * c
    removed = sum(int((m.mask == 0).sum()) for _, m in masked_modules(model))
    assert removed == round(sparsity * n)
    assert current_sparsity(model) == pytest.approx(round(sparsity * n) / n)


def test_mask_is_scores_above_threshold():
    torch.manual_seed(1)
    model = sparsify_(_Two(), 0.6)
    tau = global_threshold(model, 0.6)
    for _, m in masked_modules(model):
        assert torch.equal(m.mask.bool(), m.score.detach() > tau)
    # the global threshold is one value for all layers, so per-layer sparsities differ
    per_layer = layer_sparsities(model)
    assert set(per_layer) == {"l1", "l2"}


def test_ties_are_broken_deterministically_and_exactly():
    model = sparsify_(_Two(4, 3, 2), 0.5)
    with torch.no_grad():
        for p in score_parameters(model):
            p.fill_(0.25)  # every score tied
    refresh_masks(model, force=True)
    masks = [m.mask.clone() for _, m in masked_modules(model)]
    assert sum(int((mk == 0).sum()) for mk in masks) == round(0.5 * 18)
    flat = torch.cat([mk.flatten() for mk in masks])
    assert torch.equal(flat, (torch.arange(18) >= 9).float())  # lowest flat indices removed first
    refresh_masks(model, force=True)
    assert all(torch.equal(a, m.mask) for a, (_, m) in zip(masks, masked_modules(model), strict=True))


def test_layerwise_mode_prunes_each_tensor_exactly():
    torch.manual_seed(2)
    model = sparsify_(_Two(10, 10, 10), 0.7, mode="layerwise")
    for _, m in masked_modules(model):
        assert int((m.mask == 0).sum()) == 70


def test_straight_through_gradient_equals_analytic_value():
    torch.manual_seed(3)
    layer = SparseLinear(6, 4)
    model = nn.Sequential(layer)
    sparsify_(model, 0.5)
    x = torch.randn(5, 6)
    g_out = torch.randn(5, 4)
    (model(x) * g_out).sum().backward()
    # analytic: dL/dW_eff = g_out^T x ; dL/dS = dL/dW_eff * W  (mask treated as identity)
    expected = (g_out.T @ x) * layer.weight
    assert torch.allclose(layer.score.grad, expected, atol=1e-6)
    assert layer.weight.grad is None  # frozen weights receive nothing
    # forward uses W * m exactly
    assert torch.allclose(model(x), x @ (layer.weight * layer.mask).T)


def test_converted_model_at_zero_sparsity_matches_original():
    torch.manual_seed(4)
    x = torch.randn(9, 8)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 0], [1, 2, 3, 4, 5, 6, 7, 8, 0, 5]])
    for conv in (GCNConv(8, 6), GATConv(8, 6, heads=2), GINConv(nn.Sequential(nn.Linear(8, 6), nn.ReLU(),
                                                                             nn.Linear(6, 6)))):
        before = conv(x, ei).detach()
        sparsify_(conv, 0.0)
        assert torch.allclose(conv(x, ei), before, atol=1e-6), type(conv).__name__
        assert all(not p.requires_grad for n, p in conv.named_parameters() if not n.endswith("score"))
        set_sparsity(conv, 0.5)
        assert not torch.allclose(conv(x, ei), before, atol=1e-6)
        assert current_sparsity(conv) == pytest.approx(0.5, abs=0.02)


def test_gat_attention_vectors_are_masked():
    conv = sparsify_(GATConv(8, 4, heads=2), 0.5)
    names = [n for n, _ in masked_modules(conv)]
    assert any("att_src" in n for n in names) and any("att_dst" in n for n in names)


def test_init_modes():
    w = torch.empty(64, 100)
    init_weight_(w, "signed_constant")
    assert torch.allclose(w.abs(), torch.full_like(w, (2 / 100) ** 0.5))
    init_weight_(w, "kaiming_uniform")
    assert w.abs().max() <= (6 / 100) ** 0.5 + 1e-7
    with pytest.raises(ValueError, match="mode"):
        init_weight_(w, "xavier")
    with pytest.raises(ValueError, match="2 dimensions"):
        init_weight_(torch.empty(3), "kaiming_uniform")


def test_sparse_linear_repr_and_shapes():
    layer = SparseLinear(5, 3, weight_init="signed_constant")
    assert "5, 3" in repr(layer) and "signed_constant" in repr(layer)
    assert layer(torch.randn(2, 5)).shape == (2, 3)
    assert layer(torch.randn(4, 5).to_sparse_csr()).shape == (4, 3)
    assert isinstance(layer, ScoreMask)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        sparsify_(_Two(), bad)
    model = sparsify_(_Two(), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        set_sparsity(model, bad)
    with pytest.raises(ValueError, match="sparsity"):
        global_threshold(model, bad)


def test_bad_converter_input():
    with pytest.raises(TypeError, match="model"):
        sparsify_("not a model", 0.5)
    with pytest.raises(TypeError, match="sparsity"):
        sparsify_(_Two(), "0.5")
    with pytest.raises(ValueError, match="mode"):
        sparsify_(_Two(), 0.5, mode="local")
    with pytest.raises(ValueError, match="no Linear"):
        sparsify_(nn.ReLU(), 0.5)
    with pytest.raises(ValueError, match="already sparsified"):
        sparsify_(sparsify_(_Two(), 0.5), 0.5)
    with pytest.raises(ValueError, match="not converted"):
        set_sparsity(_Two(), 0.5)
    with pytest.raises(ValueError, match="in_features"):
        SparseLinear(0, 3)


def test_converter_on_a_pyg_basic_gnn():
    from torch_geometric.nn import GCN as PygGCN

    torch.manual_seed(5)
    net = PygGCN(12, 8, 2, 3)
    x = torch.rand(6, 12)
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    before = net(x, ei).detach()
    sparsify_(net, 0.0)
    assert torch.allclose(net(x, ei), before, atol=1e-6)
    set_sparsity(net, 0.5)
    assert current_sparsity(net) == pytest.approx(0.5, abs=0.01)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["convs.0.lin.score", "convs.1.lin.score"]


def test_sparsity_that_empties_a_tensor_warns():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"keeps no weight in layer\(s\) \['l2'\]"):
        model = sparsify_(_Two(4, 1, 1), 0.6, mode="layerwise")  # l2 holds one weight: round(0.6) removes it
    assert layer_sparsities(model) == {"l1": 0.5, "l2": 1.0}
    with pytest.warns(UserWarning, match="keeps no weight"):
        set_sparsity(model, 0.7)


def test_edge_popup_ranks_absolute_scores():
    """Edge-Popup (Ramanujan et al. 2020) keeps the top-k of |score| and its straight-through gradient passes
    through |.| (times sign(score)); the former version ranked the raw scores and dropped large negative ones."""
    net = sparsify_(_Two(4, 2, 2), 0.5, mode="layerwise", weight_init="kaiming_uniform")
    l1, l2 = net.l1, net.l2
    with torch.no_grad():
        l1.score.copy_(torch.tensor([[-5.0, 0.1, 0.2, -0.3], [4.0, -0.05, 0.0, 0.01]]))
    refresh_masks(net, force=True)
    assert l1.mask.tolist() == [[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]  # |s|: 5, 4, 0.3, 0.2
    x = torch.randn(3, 4)
    net(x).sum().backward()
    w1 = (l1.weight * l1.mask).detach().requires_grad_(True)  # the same forward with W ⊙ m as a leaf
    (torch.relu(x @ w1.T) @ (l2.weight * l2.mask).T).sum().backward()
    assert torch.allclose(l1.score.grad, w1.grad * l1.weight * l1.score.sign())
    raw = sparsify_(_Two(4, 2, 2), 0.5, mode="layerwise", rank="raw")  # the former variant, still available
    with torch.no_grad():
        raw.l1.score.copy_(l1.score)
    refresh_masks(raw, force=True)
    assert raw.l1.mask.tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]  # the -5.0 score was dropped
    assert sparsify_(_Two(4, 2, 2), 0.5).l1.rank == "raw"  # UGT ranks the raw scores, as the authors' code
    with pytest.raises(ValueError, match="rank"):
        sparsify_(_Two(), 0.5, rank="square")


def test_masks_follow_a_fused_optimizer_step():
    """Fused optimizers bump no version counter; the forward pre-hook must still see the new scores."""
    torch.manual_seed(3)
    model = sparsify_(_Two(), 0.5)
    x = torch.randn(4, 13)
    model(x)
    opt = torch.optim.Adam(score_parameters(model), lr=1.0, fused=True)
    model(x).square().sum().backward()
    opt.step()
    model(x)  # the pre-hook refreshes the masks
    tau = global_threshold(model, 0.5)
    for _, m in masked_modules(model):
        assert torch.equal(m.mask.bool(), m.score.detach() > tau)
