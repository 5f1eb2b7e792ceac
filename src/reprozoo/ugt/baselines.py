"""The baselines UGT is compared with in the same runs (paper Sec. 4–5).

* **Dense**: the same architecture with every weight trained (Adam, lr 0.01, weight decay 5e-4,
  dropout 0.5 between layers: the Kipf & Welling recipe), best-validation epoch kept.
* **Edge-Popup** (Ramanujan et al., CVPR 2020): the same frozen random weights and scores as
  UGT, but each layer keeps its own top-k of ``|score|`` (``mode="layerwise"``, ``rank="abs"`` as
  Ramanujan et al.'s ``GetSubnet.apply(scores.abs(), k)``) and the target sparsity holds from the
  first epoch (no ramp). Same optimiser and budget as UGT.

Each builder returns ``(model, schedule)`` ready for :func:`~reprozoo.ugt.train.fit_node_classifier`.
"""

from __future__ import annotations

from torch import nn

from reprozoo.ugt.models import build_model
from reprozoo.ugt.schedule import ConstantSparsitySchedule, _Schedule, make_schedule

__all__ = ["dense_baseline", "edge_popup_baseline", "ugt_method"]


def dense_baseline(arch: str, in_channels: int, hidden: int, out_channels: int, num_layers: int, *,
                   dropout: float = 0.5, heads: int = 1, cached: bool = False) -> tuple[nn.Module, None]:
    """Trainable dense model of ``arch`` (weights: PyG's default Glorot init)."""
    return build_model(arch, in_channels, hidden, out_channels, num_layers, dropout=dropout, heads=heads,
                       cached=cached), None


def edge_popup_baseline(arch: str, in_channels: int, hidden: int, out_channels: int, num_layers: int, *,
                        sparsity: float, epochs: int, weight_init: str = "kaiming_uniform", heads: int = 1,
                        cached: bool = False, rank: str = "abs") -> tuple[nn.Module, _Schedule]:
    """Edge-Popup: per-layer top-k masks of ``|score|`` (``rank="raw"``: the raw scores, our former variant)
    over frozen random weights, constant sparsity."""
    model = build_model(arch, in_channels, hidden, out_channels, num_layers, sparsity=sparsity, mode="layerwise",
                        weight_init=weight_init, heads=heads, cached=cached, rank=rank)
    return model, ConstantSparsitySchedule(sparsity, epochs)


def ugt_method(arch: str, in_channels: int, hidden: int, out_channels: int, num_layers: int, *, sparsity: float,
               epochs: int, ramp: str = "linear", ramp_fraction: float = 0.5, weight_init: str = "kaiming_uniform",
               heads: int = 1, cached: bool = False) -> tuple[nn.Module, _Schedule]:
    """UGT: one global threshold, sparsity ramped from 0 (linear over the first half by default)."""
    model = build_model(arch, in_channels, hidden, out_channels, num_layers, sparsity=sparsity, mode="global",
                        weight_init=weight_init, heads=heads, cached=cached)
    return model, make_schedule(ramp, sparsity, epochs, ramp_fraction)
