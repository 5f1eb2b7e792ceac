"""Sparse-network helpers several methods share (ugt, fedtiny): top-k keep masks, density checks, density reports.

Terms
-----
*density* ``d``: the fraction of weights kept, in (0, 1]; *sparsity* ``s = 1 - d``: the fraction removed, in
[0, 1). A *keep mask* is a boolean tensor of a weight's shape, True where the weight is kept.

Tie rule (the one used everywhere in the project)
-------------------------------------------------
:func:`topk_keep` keeps exactly ``k`` entries: every entry whose score is above the threshold ``τ`` (the
``k``-th largest score) and, when several entries are tied at ``τ``, **the tied entries with the highest flat
(row-major) index**. Equivalently, the ``n - k`` removed entries are the smallest scores, ties removed from
the lowest flat index up. The rule is deterministic and the same on every device; ``torch.topk`` leaves ties
to the implementation (its choice changes with the tensor's size), so it is not used here.

Scores must be free of NaN (a NaN compares as neither kept nor removed).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from reprozoo.core.checks import check_float, check_int

__all__ = [
    "topk_keep",
    "topk_threshold",
    "global_topk_keep",
    "check_density",
    "check_sparsity",
    "DensityReport",
    "density_report",
    "warn_empty_layers",
]

_Masks = TypeVar("_Masks", Mapping[str, Tensor], Sequence[Tensor])


def topk_threshold(scores: Tensor, k: int) -> float:
    """``τ`` of :func:`topk_keep`: the ``(n - k)``-th smallest score (``-inf`` when ``k = n``, all kept).

    O(n) (``kthvalue``). Entries above ``τ`` are kept; ties at ``τ`` follow the module's tie rule.

    >>> topk_threshold(torch.tensor([0.3, 0.1, 0.2, 0.4]), 2)
    0.20000000298023224
    """
    flat = scores.reshape(-1)
    k = check_int(k, "k", low=0, high=flat.numel())
    if k == flat.numel():
        return float("-inf")
    return float(flat.kthvalue(flat.numel() - k).values)


def topk_keep(scores: Tensor, k: int) -> Tensor:
    """Boolean keep mask (same shape as ``scores``) of the ``k`` largest scores, ties kept from the highest flat
    index down (the module's tie rule).

    O(n) (``kthvalue``, a comparison and a cumulative sum), on the device of ``scores``, with no host sync.

    >>> topk_keep(torch.tensor([[0.0, 5.0], [0.0, 0.0]]), 2)
    tensor([[False,  True],
            [False,  True]])
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    k = check_int(k, "k", low=0, high=n)
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    tau = flat.kthvalue(n - k).values  # the (n - k)-th smallest score: entries above it are kept
    above = flat > tau
    tied = flat == tau
    excess = k - above.sum()  # entries tied at τ that are kept as well (a 0-d tensor: no host sync)
    # tied entries at or before each flat index (int32 halves the memory traffic of the cumulative sum)
    upto = tied.cumsum(0, dtype=torch.int32 if n < 2**31 else torch.int64)
    from_end = upto[-1] - upto + tied  # tied entries at this flat index or after it
    return (above | (tied & (from_end <= excess))).view_as(scores)


def global_topk_keep(scores: _Masks, k: int) -> _Masks:
    """Keep masks of the ``k`` largest scores over several tensors ranked together (one global threshold).

    ``scores``: a mapping name -> tensor (returns a dict with the same keys) or a sequence of tensors (returns a
    list), all on one device. The tie rule is :func:`topk_keep`'s over the concatenation of the flattened
    tensors in the given order. O(n) for n scores in all.

    >>> m = global_topk_keep({"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([3.0, 2.0])}, 2)
    >>> {n: v.tolist() for n, v in m.items()}
    {'a': [False, True], 'b': [True, False]}
    """
    tensors = list(scores.values()) if isinstance(scores, Mapping) else list(scores)
    if not tensors:
        raise ValueError("scores is empty; give at least one score tensor")
    keep = topk_keep(torch.cat([s.reshape(-1) for s in tensors]), k)
    parts = [p.view(s.shape) for p, s in zip(torch.split(keep, [s.numel() for s in tensors]), tensors, strict=True)]
    return dict(zip(scores, parts, strict=True)) if isinstance(scores, Mapping) else parts


def check_density(density: Any, name: str = "density") -> float:
    """``density`` (the fraction of weights kept) as a float in (0, 1]; ``TypeError`` / ``ValueError`` otherwise.

    >>> check_density(0.05)
    0.05
    """
    return check_float(density, name, low=0.0, high=1.0, low_inclusive=False)


def check_sparsity(sparsity: Any, name: str = "sparsity") -> float:
    """``sparsity`` (the fraction of weights removed) as a float in [0, 1); ``TypeError`` / ``ValueError``
    otherwise (1 would remove every weight)."""
    return check_float(sparsity, name, low=0.0, high=1.0, high_inclusive=False)


@dataclass(frozen=True)
class DensityReport:
    """Kept and total weights per layer of a set of keep masks; densities and sparsities derived exactly.

    Attributes: ``kept`` and ``total`` (dict layer -> int). Properties: ``density`` / ``sparsity`` over all
    layers (kept / total, removed / total), ``layer_density`` / ``layer_sparsity`` (dict layer -> float) and
    ``empty_layers`` (layers with no weight kept).
    """

    kept: dict[str, int]
    total: dict[str, int]

    @property
    def density(self) -> float:
        return sum(self.kept.values()) / sum(self.total.values())

    @property
    def sparsity(self) -> float:
        return sum(self.total[n] - self.kept[n] for n in self.total) / sum(self.total.values())

    @property
    def layer_density(self) -> dict[str, float]:
        return {n: self.kept[n] / self.total[n] for n in self.total}

    @property
    def layer_sparsity(self) -> dict[str, float]:
        return {n: (self.total[n] - self.kept[n]) / self.total[n] for n in self.total}

    @property
    def empty_layers(self) -> list[str]:
        return [n for n in self.total if self.kept[n] == 0]


def density_report(masks: Mapping[str, Tensor] | Sequence[Tensor]) -> DensityReport:
    """Per-layer and global density of keep masks (bool, or 0/1 float): a mapping name -> mask or a sequence
    (layers named ``"0"``, ``"1"``, ...). One host sync for all layers together.

    >>> r = density_report({"a": torch.tensor([True, False]), "b": torch.tensor([False, False])})
    >>> r.density, r.layer_density, r.empty_layers
    (0.25, {'a': 0.5, 'b': 0.0}, ['b'])
    """
    named = dict(masks) if isinstance(masks, Mapping) else {str(i): m for i, m in enumerate(masks)}
    if not named:
        raise ValueError("masks is empty; give at least one keep mask")
    dev = next(iter(named.values())).device
    kept = torch.stack([(m != 0).sum().to(dev) for m in named.values()]).tolist()
    return DensityReport(dict(zip(named, kept, strict=True)), {n: m.numel() for n, m in named.items()})


def warn_empty_layers(masks: Mapping[str, Tensor] | Sequence[Tensor], what: str = "the mask") -> list[str]:
    """Warn (``UserWarning``) when a keep mask leaves a layer with no weight (layer collapse: the network's
    output no longer depends on its input); returns the empty layers' names."""
    empty = density_report(masks).empty_layers
    if empty:
        warnings.warn(f"{what} keeps no weight in layer(s) {empty}: the network is disconnected there "
                      "(layer collapse); lower the sparsity or use a layer-wise allocation", stacklevel=2)
    return empty
