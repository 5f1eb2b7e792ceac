"""Pruning-at-initialisation baselines computed on the server: random ERK, SNIP, SynFlow.

Each returns a :class:`~reprozoo.fedtiny.sparse.Mask` with exactly ``round(density * N)`` kept prunable
weights; FedAvg then trains under that fixed mask.  The FedDST-style baseline (whole-model prune and
grow) and dense FedAvg are modes of :class:`~reprozoo.fedtiny.strategy.FedTinyStrategy`.  No Flower import.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from reprozoo.core.checks import check_int
from reprozoo.fedtiny.sparse import Mask, make_mask, prunable_names
from reprozoo.sparsity import check_density, global_topk_keep, warn_empty_layers

__all__ = ["ROLES", "random_mask", "snip_mask", "synflow_mask"]

#: every method the fedtiny experiment runs, with its role in result.json: FedTiny itself, dense FedAvg as
#: the reference, and the baselines at the same density (fixed masks of random ERK, SNIP and SynFlow, and
#: FedDST-style whole-model prune-and-grow)
ROLES = {"FedTiny": "method", "FedAvg-dense": "reference", "Random": "baseline", "SNIP": "baseline",
         "SynFlow": "baseline", "FedDST": "baseline"}


def random_mask(model: nn.Module, density: float, generator: torch.Generator | None = None) -> Mask:
    """Uniformly random positions with ERK layer densities (the fixed random ERK mask baseline)."""
    return make_mask(model, density, "erk", "random", generator)


def snip_mask(model: nn.Module, density: float, x: torch.Tensor, y: torch.Tensor) -> Mask:
    """SNIP (Lee et al., ICLR 2019, Eq. 3): keep the largest connection sensitivities |∂L/∂w ⊙ w|,
    computed on one public batch ``(x, y)`` at the dense initialisation, ranked globally.

    Parameters
    ----------
    model : nn.Module (not modified)
    density : float in (0, 1]
    x : float tensor (B, C, H, W), y : int64 tensor (B,), B >= 2
    """
    density = check_density(density)
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x should be (B, C, H, W) and y (B,) with B >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    net = copy.deepcopy(model).train()
    names = prunable_names(net)
    params = dict(net.named_parameters())
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    scores = {n: (params[n].grad * params[n]).abs().detach() for n in names}
    total = sum(s.numel() for s in scores.values())
    keep = global_topk_keep(scores, max(1, round(density * total)))  # ranked over all layers together
    warn_empty_layers(keep, "SNIP")
    return Mask(keep)


def synflow_mask(model: nn.Module, density: float, input_shape: tuple[int, ...], n_iter: int = 100) -> Mask:
    """SynFlow (Tanaka et al., NeurIPS 2020, Alg. 1): data-free iterative pruning by synaptic flow
    |∂R/∂w ⊙ w| with R = 1ᵀ f(1; |θ|), on an exponential schedule density^(i/n_iter), i = 1..n_iter.

    BN layers are put in eval mode (running statistics at their initial 0/1), as in the authors' code
    for BN networks; float64 avoids overflow.  ``model`` is not modified.
    """
    density = check_density(density)
    n_iter = check_int(n_iter, "n_iter", low=1)
    net = copy.deepcopy(model).double().eval()
    names = prunable_names(net)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    total = sum(params[n].numel() for n in names)
    keep = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    ones = torch.ones(1, *input_shape, dtype=torch.float64)
    original = {n: params[n].detach().clone() for n in names}
    for i in range(1, n_iter + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(original[n] * keep[n])
        net.zero_grad()
        net(ones).sum().backward()
        scores = {n: torch.where(keep[n], (params[n].grad * params[n]).abs(), torch.full_like(params[n], -1.0))
                  for n in names}
        k = max(1, round(density ** (i / n_iter) * total))
        keep = global_topk_keep(scores, k)
    warn_empty_layers(keep, "SynFlow")
    return Mask(keep)
