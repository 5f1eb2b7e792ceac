"""GCN, GAT and GIN node classifiers of any depth on PyG convolutions, dense or as untrained tickets.

The dense models (``GCN``, ``GAT``, ``GIN``) are the baselines with trainable weights. The UGT
models (``UGTGCN``, ``UGTGAT``, ``UGTGIN``) are the same architectures converted by
:func:`~reprozoo.ugt.sparse.sparsify_`: weights frozen at a random init (Kaiming-uniform by
default), every linear map (and GAT's attention vectors) masked by learned scores under one
global threshold (UGT paper Sec. 3; reference ``models/networks/GCN.py``, ``GAT.py``).

Architecture (reference ``GCN.forward``): ``num_layers`` convolutions without bias, ReLU between
them, no normalisation; dropout between layers only in the dense baselines (the UGT reference has
its dropout lines commented out). All models take ``forward(x, edge_index)`` with ``x`` of shape
(N, in_channels) (dense, or sparse CSR/COO for bag-of-words features) and ``edge_index`` either a
(2, E) int64 tensor of directed pairs (source, target) or a torch sparse (N, N) adjacency
``adj_t`` (rows = targets), and return logits of shape (N, out_channels).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv

from reprozoo.core.checks import check_float, check_int
from reprozoo.ugt.sparse import derived_constant, linear_forward, reset_ticket_, sparsify_

__all__ = ["GCN", "GAT", "GIN", "UGTGCN", "UGTGAT", "UGTGIN", "DenseLinear", "check_graph", "build_model", "ARCHS"]

ARCHS = ("GCN", "GAT", "GIN")


class DenseLinear(nn.Linear):
    """``torch.nn.Linear`` that also accepts a sparse 2-D input (``torch.sparse.mm``); same init and result.

    ``glorot=True`` re-initialises with Glorot-uniform in :meth:`reset_parameters` (the init of PyG's
    ``GCNConv`` / ``GATConv`` linear maps that it replaces), else with ``nn.Linear``'s default.
    """

    glorot = False

    def reset_parameters(self) -> None:
        if not self.glorot:
            return super().reset_parameters()
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return linear_forward(x, self.weight, self.bias)


def _as_dense_linear(lin: nn.Module) -> DenseLinear:
    """Copy a PyG/torch ``Linear`` (weights included) into a :class:`DenseLinear`."""
    out_f, in_f = lin.weight.shape
    new = DenseLinear(int(in_f), int(out_f), bias=lin.bias is not None)
    new.glorot = getattr(lin, "weight_initializer", None) == "glorot"
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def check_graph(x: Tensor, edge_index: Tensor, in_channels: int | None = None) -> None:
    """Validate a node-feature matrix and its graph; raise ``TypeError``/``ValueError`` naming the argument.

    ``x``: float tensor (N, F), dense or sparse, finite, N >= 1, F == ``in_channels`` when given.
    ``edge_index``: int64 (2, E) with every id in [0, N), or a sparse (N, N) adjacency; E = 0 (no edges) is
    accepted, as in PyG (each node then sees itself only). Cost O(N·F + E) for dense ``x`` (finiteness check).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x should be a torch.Tensor of shape (num_nodes, in_channels), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x should be 2-D (num_nodes, in_channels), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x should be a floating-point tensor, got dtype {x.dtype}")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("x is empty (0 nodes)")
    if in_channels is not None and int(x.shape[1]) != in_channels:
        raise ValueError(f"x has {int(x.shape[1])} features per node but the model expects in_channels={in_channels}")
    vals = x.values() if x.layout in (torch.sparse_csr, torch.sparse_coo) else x
    if not bool(torch.isfinite(vals).all()):
        raise ValueError("x contains NaN or infinite values; clean the features first")
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index should be a torch.Tensor of shape (2, num_edges), got {type(edge_index).__name__}")
    if edge_index.layout in (torch.sparse_csr, torch.sparse_coo, torch.sparse_csc):
        if tuple(edge_index.shape) != (n, n):
            raise ValueError(f"the sparse adjacency should have shape ({n}, {n}) for x with {n} nodes, "
                             f"got {tuple(edge_index.shape)}")
        return
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index should have shape (2, num_edges), got {tuple(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index should hold int64 node ids, got dtype {edge_index.dtype}")
    if edge_index.shape[1] == 0:
        return
    lo, hi = int(edge_index.min()), int(edge_index.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"edge_index holds node ids in [{lo}, {hi}] but x has {n} nodes (valid ids: 0..{n - 1})")


def _check_dims(in_channels, hidden_channels, out_channels, num_layers, dropout):
    for name, v in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                    ("out_channels", out_channels), ("num_layers", num_layers)):
        check_int(v, name, low=1)
    check_float(dropout, "dropout", low=0.0, high=1.0, high_inclusive=False)


class _GNN(nn.Module):
    """Stack of ``num_layers`` convolutions, ReLU (and dropout) between them; subclasses build ``convs``."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check_dims(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden_channels, out_channels
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.convs = nn.ModuleList()

    def _dims(self) -> list[tuple[int, int]]:
        sizes = [self.in_channels] + [self.hidden_channels] * (self.num_layers - 1) + [self.out_channels]
        return list(zip(sizes[:-1], sizes[1:], strict=True))

    supports_edge_weight = False

    def _conv(self, conv: nn.Module, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
        return conv(x, edge_index)

    def reset_parameters(self) -> None:
        """Re-draw every parameter (PyG convention) and drop cached normalised adjacencies."""
        for conv in self.convs:
            conv.reset_parameters()  # GCNConv's also clears its cache

    def forward_features(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> list[Tensor]:
        """Node representations after every layer: a list of ``num_layers`` tensors (last = logits)."""
        outs = []
        for i, conv in enumerate(self.convs):
            x = self._conv(conv, x, edge_index, edge_weight)
            if i < self.num_layers - 1:
                x = F.relu(x)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
            outs.append(x)
        return outs

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """Logits (N, out_channels) for features ``x`` (N, in_channels), ``edge_index`` (2, E) or adj_t and
        optional ``edge_weight`` (E,) (GCN only; PyG's ``forward(x, edge_index, edge_weight=None)``)."""
        check_graph(x, edge_index, self.in_channels)
        if edge_weight is not None:
            if not self.supports_edge_weight:
                raise ValueError(f"edge_weight is not supported by {type(self).__name__} (its convolution takes no "
                                 "edge weights); use a GCN or pass edge_weight=None")
            if not isinstance(edge_weight, Tensor) or edge_index.layout != torch.strided or \
                    tuple(edge_weight.shape) != (edge_index.shape[1],):
                raise ValueError("edge_weight should be a tensor of shape (num_edges,) matching a (2, num_edges) "
                                 f"edge_index, got {getattr(edge_weight, 'shape', type(edge_weight).__name__)}")
        p = next(self.parameters(), None)
        if p is not None and x.dtype != p.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {p.dtype}; pass x with dtype "
                            f"{p.dtype} (x.to({p.dtype})) or convert the model with model.to({x.dtype})")
        if edge_index.layout != torch.strided and edge_index.dtype != x.dtype:
            edge_index = edge_index.to(x.dtype)  # a sparse adj_t built in another dtype
        return self.forward_features(x, edge_index, edge_weight)[-1]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, {self.out_channels}, num_layers={self.num_layers}"


class GCN(_GNN):
    """Dense GCN (Kipf & Welling, ICLR 2017) of any depth on ``torch_geometric.nn.GCNConv``.

    ``H^{l+1} = Â H^l W^l`` with ``Â = D^{-1/2}(A + I)D^{-1/2}`` (self-loops added, no bias), ReLU
    between layers. Parameters: in/hidden/out channels, ``num_layers`` (>= 1), ``dropout`` between
    layers, ``bias`` (default False, as the reference), ``cached`` (PyG's transductive cache of Â:
    only for a model that always sees the same graph, as the reference sets for Planetoid).
    Cost per forward O(L·(E·h + N·h²)).
    """

    supports_edge_weight = True

    def _conv(self, conv: nn.Module, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
        return conv(x, edge_index, edge_weight)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0, bias: bool = False, cached: bool = False) -> None:
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        for fin, fout in self._dims():
            conv = GCNConv(fin, fout, bias=bias, cached=cached)
            conv.lin = _as_dense_linear(conv.lin)
            self.convs.append(conv)


class GAT(_GNN):
    """Dense GAT (Veličković et al., ICLR 2018) on ``torch_geometric.nn.GATConv``.

    Hidden layers use ``heads`` concatenated heads of ``hidden_channels`` each; the output layer one
    head. No bias, no attention dropout (reference UGT GAT). Cost O(L·(E·h·heads + N·h²·heads)).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0, heads: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        check_int(heads, "heads", low=1)
        self.heads = heads
        for i, (fin, fout) in enumerate(self._dims()):
            fin = fin if i == 0 else fin * heads
            last = i == self.num_layers - 1
            conv = GATConv(fin, fout, heads=1 if last else heads, concat=not last, bias=bias)
            conv.lin = _as_dense_linear(conv.lin)
            self.convs.append(conv)


class GIN(_GNN):
    """Dense GIN (Xu et al., ICLR 2019) on ``torch_geometric.nn.GINConv`` with 2-layer MLPs (no BN, no bias).

    ``h_v' = MLP((1 + ε) h_v + Σ_u h_u)`` with ε = 0 fixed. The reference uses DGL's GIN; this port
    uses PyG (a deviation). Sparse ``x`` (bag-of-words features) stays sparse: the first layer's MLP input
    ``(1 + ε) x + Σ_u x_u = (A + (1 + ε) I) x`` is a constant of a fit (features and graph never change), built
    once as CSR (:func:`gin_sparse_input`) and multiplied sparse-dense by the first linear map, O(nnz · h) per
    forward instead of O(N · F · h) on densified features; the same numbers as ``GINConv`` up to float rounding.
    Cost per forward then O(nnz · h + L · (E · h + N · h²)).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        for fin, fout in self._dims():
            mlp = nn.Sequential(DenseLinear(fin, hidden_channels, bias=bias), nn.ReLU(),
                                DenseLinear(hidden_channels, fout, bias=bias))
            self.convs.append(GINConv(mlp, eps=0.0, train_eps=False))

    def _conv(self, conv: nn.Module, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
        if x.layout == torch.strided:
            return conv(x, edge_index)
        if conv.eps.requires_grad:  # a trainable ε needs its gradient through (1 + ε) x: the dense path
            return conv(x.to_dense(), edge_index)
        h = derived_constant("gin_input", (x, edge_index, conv.eps),
                             lambda: gin_sparse_input(x, edge_index, conv.eps))
        return conv.nn(h)


def gin_sparse_input(x: Tensor, edge_index: Tensor, eps: Tensor) -> Tensor:
    """GIN's aggregated input ``(1 + ε) x_v + Σ_{u→v} x_u`` for sparse ``x`` (N, F), as a CSR (N, F) tensor.

    ``edge_index``: (2, E) pairs (source, target) or a sparse adjacency ``adj_t`` (rows = targets; its values
    weight the sum, as PyG's ``spmm``); ``eps``: GINConv's ε (a 1-element tensor). One sparse-sparse product
    ``(A + (1 + ε) I) x``: cost O(E · f̄ + nnz(result)) for f̄ non-zeros per feature row; no (N, F) dense copy.
    """
    n = int(x.shape[0])
    if edge_index.layout == torch.strided:
        rows, cols = edge_index[1], edge_index[0]
        vals = torch.ones(edge_index.shape[1], dtype=x.dtype, device=x.device)
    else:
        a = edge_index.to_sparse_coo().coalesce()
        (rows, cols), vals = a.indices(), a.values().to(x.dtype)
    diag = torch.arange(n, device=x.device)
    m = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, diag]), torch.cat([cols, diag])]),
                                torch.cat([vals, (1 + eps.detach()).to(x.dtype).expand(n)]), (n, n)).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse.mm(m.to_sparse_csr(), x.to_sparse_csr())


def _ugt(cls):
    """Build the UGT twin of a dense model class: same constructor plus sparsity / mask arguments."""

    class UGT(cls):
        def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                     sparsity: float = 0.9, *, mode: str = "global", weight_init: str = "kaiming_uniform",
                     score_init: str = "kaiming_uniform", rank: str | None = None, **kwargs) -> None:
            super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout=0.0, **kwargs)
            sparsify_(self, sparsity, mode=mode, weight_init=weight_init, score_init=score_init, rank=rank)

        def reset_parameters(self) -> None:
            """Re-draw the frozen weights and the scores (PyG convention); masks refreshed at the target."""
            reset_ticket_(self)

    UGT.__name__ = UGT.__qualname__ = f"UGT{cls.__name__}"
    UGT.__doc__ = (
        f"Untrained-ticket {cls.__name__}: :class:`{cls.__name__}` with frozen random weights and score masks.\n\n"
        "Parameters as the dense model, plus ``sparsity`` (fraction of all masked weights removed, in\n"
        "[0, 1)), ``mode`` (\"global\" = UGT, \"layerwise\" = Edge-Popup), ``weight_init``\n"
        "(\"kaiming_uniform\" default, \"signed_constant\" option), ``score_init`` and ``rank`` (what the\n"
        "masks rank: None = raw scores for UGT, ``|score|`` for Edge-Popup). Only the scores\n"
        "are trainable (``reprozoo.ugt.score_parameters``); change the target with ``set_sparsity``.\n"
        "Huang et al., LoG 2022, Sec. 3."
    )
    return UGT


UGTGCN = _ugt(GCN)
UGTGAT = _ugt(GAT)
UGTGIN = _ugt(GIN)


def build_model(arch: str, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2, *,
                sparsity: float | None = None, mode: str = "global", weight_init: str = "kaiming_uniform",
                dropout: float = 0.0, heads: int = 1, cached: bool = False, rank: str | None = None) -> _GNN:
    """A dense (``sparsity=None``) or UGT model of architecture ``arch`` in ``ARCHS``.

    ``heads`` applies to GAT, ``cached`` to GCN (see :class:`GCN`).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not valid; choose one of {list(ARCHS)}")
    extra = {"heads": heads} if arch == "GAT" else {"cached": cached} if arch == "GCN" else {}
    if sparsity is None:
        cls = {"GCN": GCN, "GAT": GAT, "GIN": GIN}[arch]
        return cls(in_channels, hidden_channels, out_channels, num_layers, dropout=dropout, **extra)
    cls = {"GCN": UGTGCN, "GAT": UGTGAT, "GIN": UGTGIN}[arch]
    return cls(in_channels, hidden_channels, out_channels, num_layers, sparsity, mode=mode,
               weight_init=weight_init, rank=rank, **extra)
