"""Masks of a sparse network: layer-wise density allocation, pruning criteria, the candidate pool,
masked FedAvg and the sparse wire format.  No Flower import.

Terms
-----
*prunable layer*: the ``weight`` of every ``nn.Conv2d`` / ``nn.Linear`` (in module order, input to output).
Biases and BatchNorm parameters and buffers stay dense (FedTiny's candidate pool).  The *density* ``d`` is
``sum(nnz_l) / sum(numel_l)`` over the prunable layers only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from reprozoo.core.checks import check_choice, check_float
from reprozoo.sparsity import check_density, density_report, topk_keep

__all__ = [
    "ALLOCATIONS",
    "CRITERIA",
    "Mask",
    "prunable_names",
    "layer_densities",
    "erk_densities",
    "layer_counts",
    "make_mask",
    "candidate_pool",
    "masked_fedavg",
    "pack_state",
    "unpack_state",
]

ALLOCATIONS = ("uniform", "er", "erk")
CRITERIA = ("magnitude", "random")


def prunable_names(model: nn.Module) -> list[str]:
    """Names (``state_dict`` keys) of the prunable weights: every Conv2d / Linear ``weight``, in module order."""
    names = [f"{m}.weight" if m else "weight" for m, mod in model.named_modules()
             if isinstance(mod, (nn.Conv2d, nn.Linear))]
    if not names:
        raise ValueError(f"model {type(model).__name__} has no Conv2d/Linear layer to prune")
    return names


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    params = dict(model.named_parameters())
    return {n: tuple(params[n].shape) for n in prunable_names(model)}


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, allocation: str = "erk") -> dict[str, float]:
    """Layer-wise densities whose parameter-weighted mean is ``density``.

    Parameters
    ----------
    shapes : mapping name -> weight shape ((out, in, kh, kw) for a conv, (out, in) for a linear)
    density : float in (0, 1]
    allocation : {"uniform", "er", "erk"}
        ``uniform``: every layer at ``density``.  ``er`` (Erdős–Rényi, Mocanu et al. 2018): density of
        layer l proportional to (n_in + n_out) / (n_in n_out).  ``erk`` (ER-Kernel, Evci et al. 2020,
        RigL §3): proportional to (n_in + n_out + kh + kw) / (n_in n_out kh kw).  Layers whose share would
        exceed 1 are capped at 1 and the scale is recomputed over the others (RigL's iterative rule).

    Returns
    -------
    dict name -> density in (0, 1].  Exact integer counts: :func:`layer_counts`.  O(L^2) for L layers.
    """
    density = check_density(density)
    check_choice(allocation, "allocation", ALLOCATIONS)
    if not shapes:
        raise ValueError("shapes is empty: the model has no prunable layer")
    numel = {n: math.prod(s) for n, s in shapes.items()}
    if allocation == "uniform" or density == 1.0:
        return {n: density for n in shapes}
    if allocation == "er":
        raw = {n: (s[0] + s[1]) / (s[0] * s[1]) for n, s in shapes.items()}
    else:
        raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    total = sum(numel.values())
    dense: set[str] = set()
    while True:
        budget = density * total - sum(numel[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        eps = budget / sum(raw[n] * numel[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        dense.update(over)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def erk_densities(model: nn.Module, density: float) -> dict[str, float]:
    """ERK layer densities of ``model`` at global ``density`` (see :func:`layer_densities`)."""
    return layer_densities(_shapes(model), density, "erk")


def layer_counts(shapes: Mapping[str, Sequence[int]], density: float, allocation: str = "erk",
                 min_density: float = 0.0) -> dict[str, int]:
    """Integer nnz per layer, summing exactly to ``round(density * N)`` (N = prunable weights).

    Rounding: floor of each layer's share, then the remaining units go to the layers with the largest
    fractional parts that are below their cap (largest-remainder rule).  Every layer keeps >= 1 weight.

    ``min_density`` (an addition of ours, 0 = off): every layer keeps at least
    ``min(ceil(min_density * numel_l), floor(B / L))`` weights (B = the global budget, L = layers; the cap
    at an equal share of the budget keeps every floor affordable), paid for by the layers above their
    floor in proportion to their share; e.g. at d = 0.05 with ``min_density=0.2`` the 640-weight classifier
    of ``cnn16`` keeps >= 128 weights where the ER allocation gives it 58.  O(L^2) for L layers.
    """
    dens = layer_densities(shapes, density, allocation)
    min_density = check_float(min_density, "min_density", low=0.0, high=1.0, high_inclusive=False)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    target = max(len(shapes), round(density * sum(numel.values())))
    exact = {n: dens[n] * numel[n] for n in shapes}
    if min_density > 0:
        floor = {n: min(numel[n], math.ceil(min_density * numel[n]), target // len(shapes)) for n in shapes}
        fixed: dict[str, float] = {}
        while True:  # fix the layers below their floor, rescale the rest to the remaining budget
            free = [n for n in shapes if n not in fixed]
            scale = (target - sum(fixed.values())) / sum(exact[n] for n in free) if free else 1.0
            under = [n for n in free if exact[n] * scale < floor[n]]
            if not under:
                break
            fixed.update({n: float(floor[n]) for n in under})
        exact = {n: fixed.get(n, min(float(numel[n]), exact[n] * scale)) for n in shapes}
    counts = {n: min(numel[n], max(1, math.floor(exact[n]))) for n in shapes}
    rest = target - sum(counts.values())
    order = sorted(shapes, key=lambda n: exact[n] - math.floor(exact[n]), reverse=True)
    lowest = {n: max(1, math.floor(exact[n])) if min_density > 0 and n in fixed else 1 for n in shapes}
    while rest != 0:
        moved = False
        for n in order if rest > 0 else order[::-1]:
            if rest > 0 and counts[n] < numel[n]:
                counts[n] += 1
                rest -= 1
                moved = True
            elif rest < 0 and counts[n] > lowest[n]:
                counts[n] -= 1
                rest += 1
                moved = True
            if rest == 0:
                break
        if not moved:  # pragma: no cover - only when density * N < number of layers
            break
    return counts


class Mask:
    """Binary masks of the prunable weights of one model, applied in place.

    Parameters
    ----------
    masks : mapping name -> bool tensor
        One entry per prunable weight (``state_dict`` key), same shape as the weight.

    Notes
    -----
    :meth:`attach` hooks an optimizer so that after each ``step`` the pruned weights are zeroed again and
    before each step their gradients are zeroed (so momentum never accumulates at pruned positions).
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        if not masks:
            raise ValueError("masks is empty; give one boolean tensor per prunable weight")
        self.masks = {n: torch.as_tensor(m).bool() for n, m in masks.items()}

    # -- queries ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.masks)

    def nnz(self) -> int:
        return sum(density_report(self.masks).kept.values())

    def numel(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    @property
    def density(self) -> float:
        """Fraction of kept prunable weights."""
        return density_report(self.masks).density

    def layer_density(self) -> dict[str, float]:
        """Fraction of kept weights per layer (exact: kept / numel)."""
        return density_report(self.masks).layer_density

    def copy(self) -> Mask:
        return Mask({n: m.clone() for n, m in self.masks.items()})

    def check_model(self, model: nn.Module, name: str = "model") -> None:
        """``ValueError`` unless every mask matches a parameter of ``model`` in name and shape."""
        params = dict(model.named_parameters())
        for n, m in self.masks.items():
            if n not in params:
                raise ValueError(f"mask entry {n!r} is not a parameter of {name}; parameters: {list(params)[:8]}...")
            if tuple(params[n].shape) != tuple(m.shape):
                raise ValueError(f"mask {n!r} has shape {tuple(m.shape)} but {name}.{n} has {tuple(params[n].shape)}")

    # -- application ----------------------------------------------------------------------
    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place; returns ``model``."""
        params = dict(model.named_parameters())
        for n, m in self.masks.items():
            params[n].mul_(m.to(params[n].device, params[n].dtype))
        return model

    def mask_grads(self, model: nn.Module) -> None:
        """Zero the gradients at pruned positions (in place)."""
        params = dict(model.named_parameters())
        for n, m in self.masks.items():
            g = params[n].grad
            if g is not None:
                g.mul_(m.to(g.device, g.dtype))

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        """Keep ``model`` masked through ``optimizer``: grads masked before and weights after every step.

        The masks are converted once, here, to each weight's dtype, device and memory layout (they must not
        change while attached), so a step costs one in-place multiply per layer and no copy.  Returns the two
        hook handles (call ``.remove()`` on them to detach).
        """
        self.check_model(model)
        params = dict(model.named_parameters())
        pairs = [(params[n], torch.empty_like(params[n]).copy_(m)) for n, m in self.masks.items()]

        def mask_grads(*_) -> None:
            for w, keep in pairs:
                if w.grad is not None:
                    w.grad.mul_(keep)

        @torch.no_grad()
        def mask_weights(*_) -> None:
            for w, keep in pairs:
                w.mul_(keep)

        return optimizer.register_step_pre_hook(mask_grads), optimizer.register_step_post_hook(mask_weights)

    def __repr__(self) -> str:
        return f"Mask(layers={len(self.masks)}, density={self.density:.4f})"


def make_mask(model: nn.Module, density: float, allocation: str = "erk", criterion: str = "magnitude",
              generator: torch.Generator | None = None, min_density: float = 0.0) -> Mask:
    """A mask of ``model`` at exactly ``round(density * N)`` kept weights.

    Parameters
    ----------
    model : nn.Module
    density : float in (0, 1]
    allocation : {"uniform", "er", "erk"} (see :func:`layer_densities`)
    criterion : {"magnitude", "random"}
        Keep the largest |w| of each layer (ties: :func:`reprozoo.sparsity.topk_keep`'s rule), or a uniformly
        random subset of it.
    generator : torch.Generator, optional  (used by ``random``)
    min_density : float in [0, 1), per-layer floor (see :func:`layer_counts`; 0 = off)

    Complexity O(N log N) for N prunable weights.
    """
    check_choice(criterion, "criterion", CRITERIA)
    shapes = _shapes(model)
    counts = layer_counts(shapes, density, allocation, min_density)
    params = dict(model.named_parameters())
    masks = {}
    for n, k in counts.items():
        w = params[n].detach()
        if criterion == "magnitude":
            score = w.abs()
        else:
            score = torch.rand(w.shape, generator=generator)
        masks[n] = topk_keep(score.cpu(), k)
    return Mask(masks)


def candidate_pool(model: nn.Module, density: float, candidates: Sequence[str],
                   generator: torch.Generator | None = None, min_density: float = 0.0) -> list[tuple[str, Mask]]:
    """The coarsely pruned candidates of FedTiny's adaptive BN selection (ABNS), all at exactly the same nnz.

    Parameters
    ----------
    candidates : sequence of "allocation-criterion" strings, e.g. ``("erk-magnitude", "uniform-random")``.
    min_density : per-layer floor of every candidate (an addition of ours, see :func:`layer_counts`; 0 = off)

    Returns a list of ``(name, Mask)``; the weights are the shared dense initial model's (the candidates
    differ by mask only, not by initialisation seed: the reference code's bug is not reproduced).
    """
    if len(candidates) == 0:
        raise ValueError("candidates is empty; give e.g. ('erk-magnitude', 'er-magnitude', 'uniform-random')")
    out = []
    for c in candidates:
        parts = str(c).split("-")
        if len(parts) != 2:
            raise ValueError(f"candidate {c!r} should read 'allocation-criterion', allocation in {ALLOCATIONS}, "
                             f"criterion in {CRITERIA}")
        out.append((str(c), make_mask(model, density, parts[0], parts[1], generator, min_density)))
    return out


def masked_fedavg(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float],
                  mask: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Weighted mean of client states, then re-masked (FedAvg, McMahan et al. 2017, Alg. 1).

    Parameters
    ----------
    states : sequence of dicts name -> float ndarray, same keys and shapes
    weights : sequence of float >= 0 (e.g. sample counts n_k), not all zero
    mask : dict name -> bool ndarray, optional; entries listed are multiplied by the mask after averaging

    Returns
    -------
    dict name -> float32 ndarray: sum_k w_k x_k / sum_k w_k, zero wherever ``mask`` is False.
    O(K P) for K clients and P numbers.
    """
    if len(states) == 0:
        raise ValueError("states is empty: no client update to aggregate")
    if len(weights) != len(states):
        raise ValueError(f"weights has {len(weights)} entries but states has {len(states)}")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights should be finite, >= 0 and not all zero, got {w.tolist()}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys:
            raise ValueError(f"states[{i}] has keys {list(s)[:5]}... but states[0] has {keys[:5]}...")
    w = w / w.sum()
    out = {}
    for key in keys:
        stack = np.stack([np.asarray(s[key], dtype=np.float64) for s in states])
        if not np.all(np.isfinite(stack)):
            raise ValueError(f"client update {key!r} contains NaN or inf")
        avg = np.tensordot(w, stack, axes=1)
        if mask is not None and key in mask:
            if mask[key].shape != avg.shape:
                raise ValueError(f"mask[{key!r}] has shape {mask[key].shape} but the weight has {avg.shape}")
            avg = avg * mask[key]
        out[key] = avg.astype(np.float32)
    return out


def pack_state(state: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray] | None,
               send_mask: bool = True) -> dict[str, np.ndarray]:
    """Sparse wire format: masked weights as their kept values, plus the packed bit mask.

    ``name`` -> ``w[mask]`` (1-D float32) and ``name + "::mask"`` -> ``np.packbits(mask)`` (uint8,
    ceil(numel / 8) bytes) when ``send_mask``; other entries are sent dense.  ``mask=None``: all dense.
    """
    out = {}
    for k, v in state.items():
        v = np.asarray(v)
        if mask is not None and k in mask:
            out[k] = np.ascontiguousarray(v[mask[k]], dtype=np.float32)
            if send_mask:
                out[k + "::mask"] = np.packbits(mask[k].reshape(-1))
        else:
            out[k] = np.ascontiguousarray(v)
    return out


def unpack_state(packed: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                 mask: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of :func:`pack_state`: ``(dense state, masks)``.

    ``mask`` gives the masks when the packet carries none (an upload).  Raises ``ValueError`` when a
    value vector's length differs from the mask's nnz or an entry is missing.
    """
    masks = dict(mask) if mask is not None else {}
    for k in packed:
        if k.endswith("::mask"):
            name = k[: -len("::mask")]
            n = math.prod(shapes[name])
            masks[name] = np.unpackbits(packed[k], count=n).astype(bool).reshape(shapes[name])
    state = {}
    for name, shape in shapes.items():
        if name not in packed:
            raise ValueError(f"packet lacks entry {name!r}")
        v = np.asarray(packed[name])
        if name in masks:
            m = masks[name]
            if v.size != int(m.sum()):
                raise ValueError(f"{name!r}: {v.size} values but the mask keeps {int(m.sum())}")
            dense = np.zeros(shape, dtype=np.float32)
            dense[m] = v
            state[name] = dense
        else:
            state[name] = v.reshape(shape)
    return state, masks
