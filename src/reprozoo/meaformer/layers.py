"""Structure encoders over the joint graph, by sparse message passing only (no N x N dense tensor).

- :class:`DiagGAT`: the MEAformer reference's graph attention network (Velickovic et al., ICLR 2018, in the
  sparse form of the reference ``MultiHeadGraphAttention`` with ``diag=True``): per head ``h = x * w`` (a
  diagonal weight, initialised to ones), edge scores ``e_ij = exp(-LeakyReLU(a^T [h_i || h_j]))`` normalised over
  the neighbours ``j`` of ``i`` (self-loop included), heads averaged, ELU between layers. Aggregation is one CSR
  sparse-dense product per head (:class:`EdgeSpmm`), whose backward uses the transposed CSR for the features and
  a sampled product (``torch.sparse.sampled_addmm``) for the attention values, so memory is O(E + N·d), never
  O(E·d) per head as a gather/scatter layer (PyG's ``GATConv``) needs, nor the dense N x N gradient the
  reference's ``SpecialSpmm`` builds.
- :class:`GCN`: PyTorch Geometric's ``GCNConv`` on a sparse adjacency (GCN-Align, Wang et al., EMNLP 2018).
- :class:`PyGGAT`: the same depth and heads with PyTorch Geometric's ``GATConv`` (gather/scatter), offered for
  comparison (``structure_encoder="gatconv"``); slower and heavier on a 39k-entity graph (see the card).

Shapes: input ``x`` (N, d), a :class:`SparseGraph` of E edges; output (N, d).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SparseGraph", "EdgeSpmm", "edge_spmm", "DiagGATLayer", "DiagGAT", "GCN", "PyGGAT", "csr_tensor"]


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` without its "beta" / invariant-check UserWarnings (raised on every call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


class SparseGraph:
    """A directed graph in CSR form (rows = targets) and its transpose, on one device.

    Parameters
    ----------
    edges : ndarray or Tensor, int64, shape (2, E)
        ``(source, target)`` rows; need not be sorted.
    n_nodes : int
        Nodes (sources and, unless ``n_targets`` is given, targets).
    n_targets : int, optional
        Number of target rows when it differs from ``n_nodes`` (a rectangular ``n_targets x n_nodes`` matrix,
        as the head-stacked graph of :meth:`stacked`).
    """

    def __init__(self, edges, n_nodes: int, device: torch.device | str = "cpu", *,
                 n_targets: int | None = None) -> None:
        e = torch.as_tensor(np.asarray(edges) if not isinstance(edges, torch.Tensor) else edges, dtype=torch.long)
        if e.ndim != 2 or e.shape[0] != 2:
            raise ValueError(f"edges should have shape (2, E), got {tuple(e.shape)}")
        n_t = n_nodes if n_targets is None else n_targets
        if e.numel() and (int(e.min()) < 0 or int(e[0].max()) >= n_nodes or int(e[1].max()) >= n_t):
            raise ValueError(f"edges hold node ids outside [0, {n_nodes})")
        order = torch.argsort(e[1] * n_nodes + e[0])
        self.n, self.n_targets = int(n_nodes), int(n_t)
        self.src = e[0, order].to(device)
        self.dst = e[1, order].to(device)
        self.crow = _crow(self.dst, self.n_targets)
        self.perm_t = torch.argsort(self.src * self.n_targets + self.dst)  # edge order of the transposed CSR
        self.crow_t = _crow(self.src[self.perm_t], self.n)
        self.col_t = self.dst[self.perm_t]
        self._stacked: dict[int, SparseGraph] = {}

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """The (n_targets, N) sparse CSR matrix ``A[dst, src] = values`` (values in edge order)."""
        return csr_tensor(self.crow, self.src, values, (self.n_targets, self.n))

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose ``A^T`` as CSR (values in edge order)."""
        return csr_tensor(self.crow_t, self.col_t, values[self.perm_t], (self.n, self.n_targets))

    def stacked(self, copies: int) -> SparseGraph:
        """The ``(copies * N) x N`` graph of ``copies`` stacked copies (copy k's targets are ``k * N + dst``);
        its edge order is copy-major, each copy in this graph's edge order (cached)."""
        if copies not in self._stacked:
            k = torch.arange(copies, device=self.src.device).repeat_interleave(self.n_edges)
            edges = torch.stack([self.src.repeat(copies), self.dst.repeat(copies) + k * self.n_targets])
            self._stacked[copies] = SparseGraph(edges, self.n, self.src.device, n_targets=copies * self.n_targets)
        return self._stacked[copies]

    def __repr__(self) -> str:
        return f"SparseGraph(n_nodes={self.n}, n_edges={self.n_edges})"


def _crow(rows: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow


class EdgeSpmm(torch.autograd.Function):
    """``out[i] = sum_{e: dst_e = i} values_e * h[src_e]``, differentiable in ``values`` and ``h``.

    Forward: CSR x dense. Backward: ``grad_h = A^T grad`` (transposed CSR), ``grad_values_e =
    <grad[dst_e], h[src_e]>`` by ``sampled_addmm`` (only at the E edges). O(E·d) time, O(E + N·d) memory.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, h: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
        ctx.graph = graph
        ctx.save_for_backward(values, h)
        return torch.sparse.mm(graph.csr(values), h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        values, h = ctx.saved_tensors
        g: SparseGraph = ctx.graph
        grad_values = grad_h = None
        if ctx.needs_input_grad[1]:
            grad_h = torch.sparse.mm(g.csr_t(values), grad)
        if ctx.needs_input_grad[0]:
            pattern = g.csr(torch.zeros_like(values))
            grad_values = torch.sparse.sampled_addmm(pattern, grad.contiguous(), h.t().contiguous()).values()
        return grad_values, grad_h, None


def edge_spmm(values: torch.Tensor, h: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
    """Functional form of :class:`EdgeSpmm`."""
    return EdgeSpmm.apply(values, h, graph)


class DiagGATLayer(nn.Module):
    """One multi-head graph-attention layer with diagonal weights; heads are averaged.

    Parameters
    ----------
    dim : int
        Feature size (input = output, as the reference's ``diag=True``).
    heads : int, default 2
    attn_dropout : float, default 0.0
        Dropout on the edge weights.
    """

    def __init__(self, dim: int, heads: int = 2, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.heads, self.attn_dropout = dim, heads, attn_dropout
        self.w = nn.Parameter(torch.empty(heads, dim))
        self.a_self = nn.Parameter(torch.empty(heads, dim))  # multiplies h_i (the aggregating entity)
        self.a_nbr = nn.Parameter(torch.empty(heads, dim))  # multiplies h_j (its neighbour)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.w)  # reference: nn.init.ones_ for the diagonal weights
        bound = 1.0 / math.sqrt(2 * self.dim)  # reference: U(-1/sqrt(2d), 1/sqrt(2d)) for a
        nn.init.uniform_(self.a_self, -bound, bound)
        nn.init.uniform_(self.a_nbr, -bound, bound)

    def forward(self, x: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
        from torch_geometric.utils import softmax

        H, n = self.heads, graph.n
        # a^T [h_i || h_j] with h = x * w_k is x_i . (w_k * a_self_k) + x_j . (w_k * a_nbr_k): all heads, one matmul
        proj = x @ torch.cat([self.w * self.a_self, self.w * self.a_nbr]).t()  # (N, 2H)
        score = proj[graph.dst, :H] + proj[graph.src, H:]  # (E, H)
        # exp(-LeakyReLU(.)) normalised over the neighbours of each target = softmax of -LeakyReLU(.)
        alpha = softmax(-F.leaky_relu(score, 0.2), graph.dst, num_nodes=n)
        alpha = F.dropout(alpha, self.attn_dropout, training=self.training)
        # A_k (x * w_k) = (A_k x) * w_k (diagonal weights commute): one product with the heads' A_k stacked
        agg = edge_spmm(alpha.t().reshape(-1), x, graph.stacked(H)).view(H, n, -1)
        return (agg * self.w[:, None, :]).mean(0)

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.heads}"


class DiagGAT(nn.Module):
    """Stack of :class:`DiagGATLayer` with ELU between layers (reference ``GAT`` with ``diag=True``).

    >>> g = SparseGraph(np.array([[0, 1, 0, 1, 2], [1, 0, 0, 1, 2]]), 3)
    >>> DiagGAT(4, layers=2)(torch.ones(3, 4), g).shape
    torch.Size([3, 4])
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 2, attn_dropout: float = 0.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.layers = nn.ModuleList(DiagGATLayer(dim, heads, attn_dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            last = i + 1 == len(self.layers)
            if not last:
                x = F.dropout(x, self.dropout, training=self.training)
            x = layer(x, graph)
            if not last:
                x = F.elu(x)
        return x


class GCN(nn.Module):
    """GCN-Align's structure encoder: ``GCNConv`` layers (symmetric normalisation, self-loops) with ReLU
    between them, on the sparse adjacency (PyTorch Geometric, fused sparse product)."""

    def __init__(self, dim: int, layers: int = 2) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.layers = nn.ModuleList(GCNConv(dim, dim, normalize=False) for _ in range(layers))
        self._adj: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
        if self._adj is None or self._adj.shape[0] != graph.n:
            from torch_geometric.nn.conv.gcn_conv import gcn_norm

            # D^-1/2 (A + I) D^-1/2 once (the graph already holds the self-loops), as a CSR adj_t
            _, w = gcn_norm(torch.stack([graph.src, graph.dst]), None, graph.n, add_self_loops=False)
            self._adj = graph.csr(w)
        for i, conv in enumerate(self.layers):
            x = conv(x, self._adj)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


class PyGGAT(nn.Module):
    """The structure encoder with PyTorch Geometric's ``GATConv`` (heads averaged, ELU between layers)."""

    def __init__(self, dim: int, layers: int = 2, heads: int = 2, attn_dropout: float = 0.0) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        self.layers = nn.ModuleList(GATConv(dim, dim, heads=heads, concat=False, dropout=attn_dropout,
                                            add_self_loops=False) for _ in range(layers))

    def forward(self, x: torch.Tensor, graph: SparseGraph) -> torch.Tensor:
        ei = torch.stack([graph.src, graph.dst])
        for i, conv in enumerate(self.layers):
            x = conv(x, ei)
            if i + 1 < len(self.layers):
                x = F.elu(x)
        return x
