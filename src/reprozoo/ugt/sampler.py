"""Mini-batches of sampled neighbourhoods (GraphSAGE-style) for graphs too large for full-batch training.

:func:`neighbor_loader` returns PyG's :class:`~torch_geometric.loader.NeighborLoader`. PyG's own sampler
runs on the compiled ``pyg-lib`` or ``torch-sparse`` extensions; where neither is installed (they ship no
wheels for every torch release), the loader is given :class:`TorchNeighborSampler`, a pure-torch sampler
with the same semantics as PyG's default (``subgraph_type="directional"``, uniform sampling without
replacement, ``-1`` = every neighbour, each node expanded once, seed nodes first in ``n_id``).

Sampling one hop for a frontier of ``F`` nodes (vectorised, no Python loop over nodes):

1. the candidate edges of each frontier node are its CSC slice ``colptr[v] : colptr[v + 1]`` (incoming edges:
   messages flow source → target, as in PyG);
2. every candidate gets a random key; one sort by ``(frontier position, key)`` shuffles each node's slice;
3. the first ``min(deg(v), k)`` entries of each shuffled slice are kept: a uniform ``k``-subset.

Cost per hop O(D log D) for the ``D`` candidate edges of the frontier (one sort), memory O(D); the sampler
holds the CSC graph (O(N + E)) and one (N,) buffer mapping global to local ids, reset after each batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_geometric.typing as pyg_typing
from torch import Tensor
from torch_geometric.loader import NeighborLoader
from torch_geometric.sampler import BaseSampler, SamplerOutput
from torch_geometric.sampler.utils import to_csc

from reprozoo.core.checks import check_int

__all__ = ["TorchNeighborSampler", "neighbor_loader", "has_compiled_sampler"]


def has_compiled_sampler() -> bool:
    """True when PyG's own neighbour sampler can run (``pyg-lib`` or ``torch-sparse`` is installed)."""
    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def _check_fanouts(num_neighbors: Sequence[int]) -> list[int]:
    if isinstance(num_neighbors, (int, str)) or not isinstance(num_neighbors, Sequence) or not num_neighbors:
        raise TypeError(f"num_neighbors should be a non-empty list of ints (one per hop, -1 = all), got "
                        f"{num_neighbors!r}")
    return [check_int(k, f"num_neighbors[{i}]", low=-1) for i, k in enumerate(num_neighbors)]


class TorchNeighborSampler(BaseSampler):
    """Uniform neighbour sampling without replacement in pure torch, a ``BaseSampler`` for ``NeighborLoader``.

    Parameters
    ----------
    data : torch_geometric.data.Data
        A homogeneous graph with ``edge_index`` (2, E) (source, target) and ``num_nodes``.
    num_neighbors : list of int
        Neighbours sampled per node at each hop (``-1``: all of them), as ``NeighborLoader``'s argument.
    generator : torch.Generator, optional
        CPU generator of the random keys (default: torch's global generator, seeded by
        :func:`reprozoo.core.seed.seed_everything`).

    Returns per batch a :class:`~torch_geometric.sampler.SamplerOutput`: ``node`` (global ids, the seeds
    first), ``row``/``col`` (local source/target ids of the sampled edges), ``edge`` (positions in the
    sampler's CSC order; :attr:`edge_permutation` maps them to ``edge_index`` columns, so the loader's
    ``e_id`` are the original edge ids), ``num_sampled_nodes`` / ``num_sampled_edges`` per hop.
    """

    def __init__(self, data, num_neighbors: Sequence[int], *, generator: torch.Generator | None = None) -> None:
        if getattr(data, "edge_index", None) is None:
            raise ValueError("data should hold an edge_index of shape (2, num_edges)")
        self.num_neighbors = _check_fanouts(num_neighbors)
        self.num_nodes = int(data.num_nodes)
        self.colptr, self.row, self.perm = to_csc(data, device=torch.device("cpu"))
        self.generator = generator
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)  # global -> local id, -1 = unseen

    @property
    def edge_permutation(self) -> Tensor | None:
        """CSC position -> column of the original ``edge_index`` (None when no permutation was applied)."""
        return self.perm

    def _sample_hop(self, frontier: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """CSC positions of the sampled incoming edges of ``frontier`` and, for each, its target's position in
        ``frontier``. Steps 1-3 of the module docstring."""
        start = self.colptr[frontier]
        deg = self.colptr[frontier + 1] - start
        seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)  # frontier position of each candidate
        first = torch.cumsum(deg, 0) - deg  # where each node's candidates start
        offset = torch.arange(seg.numel()) - first[seg]  # rank of the candidate inside its node's slice
        pos = start[seg] + offset
        if k < 0 or seg.numel() == 0:
            return pos, seg
        # one sort by (node, random key): a uniform shuffle of every slice, the slices staying in place
        keys = seg * 2**31 + torch.randint(0, 2**31, (seg.numel(),), generator=self.generator)
        order = torch.sort(keys).indices
        keep = order[offset < deg.clamp(max=k)[seg]]  # the first min(deg, k) of each shuffled slice
        return pos[keep], seg[keep]

    def sample_from_nodes(self, index, **kwargs):
        """Sample the ``len(num_neighbors)``-hop neighbourhood of ``index.node`` (unique node ids)."""
        seeds = index.node.to(torch.long)
        local = self._local
        nodes, rows, cols, edges = [seeds], [], [], []
        local[seeds] = torch.arange(seeds.numel())
        n = seeds.numel()
        frontier, frontier_local = seeds, torch.arange(n)
        sampled_nodes, sampled_edges = [n], []
        for k in self.num_neighbors:
            pos, tgt = self._sample_hop(frontier, k)
            src = self.row[pos]
            new = torch.unique(src[local[src] < 0])  # nodes met for the first time are expanded at the next hop
            local[new] = torch.arange(n, n + new.numel())
            n += new.numel()
            rows.append(local[src])
            cols.append(frontier_local[tgt])
            edges.append(pos)
            nodes.append(new)
            sampled_nodes.append(new.numel())
            sampled_edges.append(pos.numel())
            frontier, frontier_local = new, local[new]
        node = torch.cat(nodes)
        local[node] = -1  # the buffer is clean for the next batch
        return SamplerOutput(node=node, row=torch.cat(rows), col=torch.cat(cols), edge=torch.cat(edges),
                             batch=None, num_sampled_nodes=sampled_nodes, num_sampled_edges=sampled_edges,
                             metadata=(index.input_id, index.time))  # what NodeLoader reads back

    def sample_from_edges(self, index, neg_sampling=None):
        raise NotImplementedError("TorchNeighborSampler samples around nodes only (NeighborLoader); link-level "
                                  "loaders need pyg-lib or torch-sparse")


def neighbor_loader(data, num_neighbors: Sequence[int], *, input_nodes: Tensor | None = None,
                    batch_size: int = 512, shuffle: bool = False, generator: torch.Generator | None = None,
                    sampler: str = "auto", **kwargs):
    """PyG's ``NeighborLoader`` over ``data``: mini-batches of ``batch_size`` seed nodes from ``input_nodes``
    (a bool mask or ids; default all) with their sampled ``len(num_neighbors)``-hop neighbourhoods.

    ``sampler``: ``"auto"`` (PyG's compiled sampler when ``pyg-lib``/``torch-sparse`` is installed, else
    :class:`TorchNeighborSampler`), ``"torch"`` or ``"pyg"``. ``generator`` seeds the shuffling and (torch
    sampler) the neighbour draws. Each batch is a ``Data`` whose first ``batch.batch_size`` nodes are the
    seeds; ``batch.n_id`` / ``batch.e_id`` are the global node / edge ids. Other keyword arguments go to
    ``torch.utils.data.DataLoader``.
    """
    fanouts = _check_fanouts(num_neighbors)
    check_int(batch_size, "batch_size", low=1)
    if sampler not in ("auto", "torch", "pyg"):
        raise ValueError(f"sampler={sampler!r} is not valid; choose 'auto', 'torch' or 'pyg'")
    if sampler == "pyg" and not has_compiled_sampler():
        raise ValueError("sampler='pyg' needs pyg-lib or torch-sparse, neither is installed; use 'auto' or 'torch'")
    use_torch = sampler == "torch" or (sampler == "auto" and not has_compiled_sampler())
    custom = TorchNeighborSampler(data, fanouts, generator=generator) if use_torch else None
    return NeighborLoader(data, num_neighbors=fanouts, input_nodes=input_nodes, batch_size=batch_size,
                          shuffle=shuffle, generator=generator, neighbor_sampler=custom, **kwargs)
