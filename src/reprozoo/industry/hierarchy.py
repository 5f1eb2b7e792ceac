"""The ICS tree as tensors, and top-down assignment on it (Sec. 3 step 6 of our reconstruction).

Each node's score is turned into a probability *among its siblings* (softmax over the children of one parent);
a path's probability is the product of these conditionals from the top level down, so path probabilities sum
to one over the leaves. :func:`greedy_decode` follows the most probable child at each level;
:func:`beam_decode` keeps the ``B`` most probable partial paths (``B = 1`` is greedy; ``B >= n_leaves`` finds the
most probable leaf exactly).

Complexity: for ``n`` firms and ``K`` nodes of depth ``L``, :func:`path_log_probs` is O(n·K·L); greedy O(n·K·L);
beam O(n·B·K·L).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprozoo.datasets.industry import ICS

__all__ = ["TreeIndex", "conditional_log_probs", "path_log_probs", "greedy_decode", "beam_decode"]


@dataclass(frozen=True)
class TreeIndex:
    """Index tensors of an :class:`ICS` (nodes in ``ics.codes`` order, parents first).

    ``parent``: (K,) parent index, -1 at the top level. ``group``: (K,) softmax group = parent index + 1
    (0 = the top level). ``level``: (K,) 1-based. ``is_leaf``: (K,) bool. ``leaves``: (n_leaves,) node indices.
    ``ancestors``: (K, L) node index of each node's ancestor at each level (itself at its own level, -1 below).
    ``edge_index``: (2, E) parent<->child and sibling<->sibling edges for the spatial aggregation.
    """

    codes: tuple[str, ...]
    parent: torch.Tensor
    group: torch.Tensor
    level: torch.Tensor
    is_leaf: torch.Tensor
    leaves: torch.Tensor
    ancestors: torch.Tensor
    edge_index: torch.Tensor

    @classmethod
    def from_ics(cls, ics: ICS) -> TreeIndex:
        pos = {c: i for i, c in enumerate(ics.codes)}
        parent = torch.tensor([pos[ics.parent[c]] if ics.parent[c] is not None else -1 for c in ics.codes])
        level = torch.tensor([ics.level[c] for c in ics.codes])
        is_leaf = torch.tensor([not ics.children[c] for c in ics.codes])
        depth = ics.n_levels
        anc = torch.full((len(ics.codes), depth), -1, dtype=torch.long)
        for i, c in enumerate(ics.codes):
            for lv, a in enumerate(ics.path(c)):
                anc[i, lv] = pos[a]
        src, dst = [], []
        for p, kids in ics.children.items():
            ids = [pos[k] for k in kids]
            if p is not None:  # parent <-> child
                src += [pos[p]] * len(ids) + ids
                dst += ids + [pos[p]] * len(ids)
            for a in ids:  # siblings (the top level's nodes are siblings too)
                for b in ids:
                    if a != b:
                        src.append(a)
                        dst.append(b)
        return cls(codes=tuple(ics.codes), parent=parent, group=parent + 1, level=level, is_leaf=is_leaf,
                   leaves=torch.nonzero(is_leaf).flatten(), ancestors=anc,
                   edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1))

    def to(self, device: torch.device | str) -> TreeIndex:
        return TreeIndex(self.codes, *(getattr(self, f).to(device) for f in
                                       ("parent", "group", "level", "is_leaf", "leaves", "ancestors", "edge_index")))

    @property
    def n_nodes(self) -> int:
        return len(self.codes)


def conditional_log_probs(scores: torch.Tensor, tree: TreeIndex) -> torch.Tensor:
    """``log p(node | parent)``: log-softmax of ``scores`` (n, K) within each sibling group.

    A numerically stable grouped log-sum-exp (scatter max, then scatter sum), vectorised over firms.
    """
    n, k = scores.shape
    g = tree.group.expand(n, k)
    n_groups = int(tree.group.max()) + 1
    gmax = torch.full((n, n_groups), float("-inf"), device=scores.device, dtype=scores.dtype)
    gmax = gmax.scatter_reduce(1, g, scores, reduce="amax", include_self=True)
    shifted = scores - gmax.gather(1, g)
    gsum = torch.zeros((n, n_groups), device=scores.device, dtype=scores.dtype).scatter_add(1, g, shifted.exp())
    return shifted - gsum.gather(1, g).log()


def path_log_probs(cond: torch.Tensor, tree: TreeIndex) -> torch.Tensor:
    """``log p(path to node)`` (n, K): the sum of the conditionals of the node and its ancestors."""
    anc = tree.ancestors  # (K, L)
    gathered = cond[:, anc.clamp(min=0)]  # (n, K, L)
    return gathered.masked_fill(anc < 0, 0.0).sum(-1)


def greedy_decode(cond: torch.Tensor, tree: TreeIndex) -> torch.Tensor:
    """Leaf index (into ``tree.codes``) reached by taking the most probable child at each level: (n,)."""
    n = cond.shape[0]
    cur = torch.full((n,), -1, dtype=torch.long, device=cond.device)  # -1: the virtual root
    for _ in range(tree.ancestors.shape[1]):
        is_child = tree.parent.unsqueeze(0) == cur.unsqueeze(1)  # (n, K)
        done = ~is_child.any(1)  # already at a leaf
        nxt = cond.masked_fill(~is_child, float("-inf")).argmax(1)
        cur = torch.where(done, cur, nxt)
    return cur


def beam_decode(cond: torch.Tensor, tree: TreeIndex, beam_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over the tree: the ``beam_width`` best leaves (n, B) and their path log-probabilities.

    A finished path (at a leaf) stays in the beam with its score; width 1 is greedy decoding.
    """
    n, k = cond.shape
    dev = cond.device
    neg = float("-inf")
    beams = torch.full((n, 1), -1, dtype=torch.long, device=dev)
    scores = torch.zeros((n, 1), dtype=cond.dtype, device=dev)
    node_ids = torch.arange(k, device=dev)
    for _ in range(tree.ancestors.shape[1]):
        b = beams.shape[1]
        is_child = tree.parent.view(1, 1, k) == beams.unsqueeze(2)  # (n, b, K)
        at_leaf = ~is_child.any(2) & (beams >= 0)  # finished paths
        cand = torch.where(is_child, scores.unsqueeze(2) + cond.unsqueeze(1), torch.full_like(is_child, neg,
                                                                                             dtype=cond.dtype))
        stay = at_leaf.unsqueeze(2) & (node_ids.view(1, 1, k) == beams.unsqueeze(2))
        cand = torch.where(stay, scores.unsqueeze(2).expand(n, b, k), cand)
        width = min(beam_width, int((cand > neg).sum(dim=(1, 2)).min()))
        top, flat = cand.reshape(n, b * k).topk(width, dim=1)
        beams, scores = flat % k, top
    return beams, scores
