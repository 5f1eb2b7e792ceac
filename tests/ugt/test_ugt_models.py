"""GNN models (dense and UGT) on PyG convolutions: shapes, naive reference, bad input."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from reprozoo.ugt import GAT, GCN, GIN, UGTGAT, UGTGCN, UGTGIN, build_model, current_sparsity  # noqa: E402
from reprozoo.ugt.train import prepare_inputs  # noqa: E402


def _graph(n=12, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g)
    src = torch.arange(n)
    dst = (src + 1) % n
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    return x, ei


def _naive_gcn(model, x, ei):
    """Â X W layer by layer with dense matrices: Â = D^-1/2 (A + I) D^-1/2."""
    n = x.shape[0]
    a = torch.zeros(n, n)
    a[ei[1], ei[0]] = 1.0
    a = a + torch.eye(n)
    d = a.sum(1).pow(-0.5)
    a_hat = d[:, None] * a * d[None, :]
    h = x
    for i, conv in enumerate(model.convs):
        lin = conv.lin
        w = lin.weight * lin.mask if hasattr(lin, "mask") else lin.weight
        h = a_hat @ h @ w.T
        if i < len(model.convs) - 1:
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_gcn_matches_naive_dense_reference(depth):
    torch.manual_seed(0)
    x, ei = _graph()
    for model in (GCN(6, 8, 3, depth), UGTGCN(6, 8, 3, depth, sparsity=0.5)):
        model.eval()
        expected = _naive_gcn(model, x, ei)
        assert torch.allclose(model(x, ei), expected, atol=1e-5)
        xs, adj = prepare_inputs(x, ei, sparse_features=True)  # sparse features + CSR adjacency: same numbers
        assert torch.allclose(model(xs, adj), expected, atol=1e-5)


@pytest.mark.parametrize("cls", [GCN, GAT, GIN, UGTGCN, UGTGAT, UGTGIN])
def test_shapes_and_repr(cls):
    torch.manual_seed(0)
    x, ei = _graph()
    model = cls(6, 8, 3, 3)
    assert model(x, ei).shape == (12, 3)
    assert len(model.forward_features(x, ei)) == 3
    assert "6, 8, 3, num_layers=3" in repr(model)
    if cls.__name__.startswith("UGT"):
        assert current_sparsity(model) == pytest.approx(0.9, abs=0.01)
        assert all(not p.requires_grad for n, p in model.named_parameters() if not n.endswith("score"))


def test_build_model_dense_and_sparse():
    assert isinstance(build_model("GCN", 6, 8, 3, 2), GCN)
    m = build_model("GAT", 6, 8, 3, 2, sparsity=0.5, mode="layerwise", heads=2)
    assert m.heads == 2 and m._ugt_state.mode == "layerwise"
    with pytest.raises(ValueError, match="arch"):
        build_model("MLP", 6, 8, 3, 2)


def test_bad_graph_input_raises_clear_errors():
    x, ei = _graph()
    model = UGTGCN(6, 8, 3, 2, sparsity=0.5)
    with pytest.raises(ValueError, match="node ids"):
        model(x, torch.tensor([[0, 1], [1, 12]]))
    with pytest.raises(ValueError, match="node ids"):
        model(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match=r"shape \(2, num_edges\)"):
        model(x, torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="in_channels=6"):
        model(torch.rand(12, 5), ei)
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((12, 6), float("nan")), ei)
    with pytest.raises(TypeError, match="int64"):
        model(x, ei.float())
    with pytest.raises(TypeError, match="x should be a torch.Tensor"):
        model(x.numpy(), ei)
    with pytest.raises(ValueError, match="2-D"):
        model(x[0], ei)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"in_channels": 0}, ValueError, "in_channels=0 should be >= 1"), ({"num_layers": 0}, ValueError, "num_layers"),
    ({"hidden_channels": 2.5}, TypeError, "hidden_channels should be an int"),
    ({"dropout": 1.0}, ValueError, "dropout=1.0 should be < 1"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    args = {"in_channels": 6, "hidden_channels": 8, "out_channels": 3, "num_layers": 2} | kwargs
    with pytest.raises(error, match=match):
        GCN(**args)
    with pytest.raises(ValueError, match="sparsity"):
        UGTGCN(6, 8, 3, 2, sparsity=1.0)


@pytest.mark.parametrize("cls", [GCN, GAT, GIN, UGTGCN, UGTGAT, UGTGIN])
def test_empty_edge_index_is_accepted_like_pyg(cls):
    """PyG convolutions accept a graph without edges (each node sees itself); it was rejected."""
    x, _ = _graph()
    empty = torch.empty(2, 0, dtype=torch.long)
    kw = {"sparsity": 0.5} if cls.__name__.startswith("UGT") else {}
    model = cls(6, 8, 3, 2, **kw).eval()
    out = model(x, empty)
    assert out.shape == (12, 3) and bool(torch.isfinite(out).all())
    xs, adj = prepare_inputs(x, empty)
    assert torch.allclose(model(xs, adj), out, atol=1e-5)


def test_forward_takes_edge_weight_as_pyg():
    """forward(x, edge_index, edge_weight=None): GCN weights each edge (GCNConv's normalisation); the others say
    they take none."""
    x, ei = _graph()
    model = UGTGCN(6, 8, 3, 2, sparsity=0.5).eval()
    ones = torch.ones(ei.shape[1])
    assert torch.allclose(model(x, ei, ones), model(x, ei), atol=1e-6)
    w = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(model(x, ei, w), model(x, ei))
    with pytest.raises(ValueError, match="edge_weight should be a tensor of shape"):
        model(x, ei, torch.ones(3))
    with pytest.raises(ValueError, match="edge_weight is not supported by UGTGIN"):
        UGTGIN(6, 8, 3, 2, sparsity=0.5)(x, ei, ones)


@pytest.mark.parametrize("cls", [GCN, GAT, GIN, UGTGCN, UGTGAT, UGTGIN])
def test_reset_parameters_redraws_everything(cls):
    """PyG convention: model.reset_parameters() re-draws the weights (and, for tickets, the scores)."""
    x, ei = _graph()
    kw = {"sparsity": 0.5} if cls.__name__.startswith("UGT") else {}
    torch.manual_seed(0)
    model = cls(6, 8, 3, 2, **kw).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x, ei)
    model.reset_parameters()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if before[k].numel() > 1)
    assert not torch.allclose(model(x, ei), out)
    if kw:
        assert current_sparsity(model) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("cls", [GIN, UGTGIN])
def test_gin_keeps_sparse_features_sparse(cls):
    """GIN on sparse features aggregates (A + (1 + ε) I) x as a sparse product once per fit and feeds it sparse to
    the first linear map (it densified x, an (N, F) copy per forward): same logits and gradients as on dense x."""
    x, ei = _graph(n=30, f=40)
    x = x * (x > 0.9)  # ~10 % non-zero, a bag-of-words-like matrix
    ei = torch.cat([ei, torch.tensor([[0, 3, 7], [5, 5, 20]])], dim=1)  # uneven degrees
    kw = {"sparsity": 0.5} if cls is UGTGIN else {}
    torch.manual_seed(0)
    model = cls(40, 8, 3, 2, **kw).eval()
    seen = []
    model.convs[0].nn[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].layout))
    expected = model(x, ei)
    expected.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    xs, adj = prepare_inputs(x, ei, sparse_features=True)
    for edges in (adj, ei):  # a CSR adj_t or a (2, E) edge_index
        out = model(xs, edges)
        assert torch.allclose(out, expected, atol=1e-5)
        out.square().sum().backward()
        assert all(torch.allclose(p.grad, grads[k], atol=1e-4) for k, p in model.named_parameters() if k in grads)
        model.zero_grad()
    assert seen == [torch.strided, torch.sparse_csr, torch.sparse_csr]
