"""Dual-path learning for compound BN (Cheng et al., ACM MM 2022; step 7 of :mod:`reprozoo.compound_bn.layers`).

EM alone tends to pull every component onto the head classes. The auxiliary path runs the *same* network
with every compound BN layer in hard mode: sample b is normalised only by component g_b, the
class-frequency group of its label (classes sorted by training frequency, K contiguous groups), and only
that component's running statistics are updated. The main path is the soft mixture. Training minimises

    L = L_cls(main) + w_aux · L_cls(aux) + λ_c · L_cons(main, aux),

where L_cons is a consistency term with a stop-gradient on one side (its form and weight are unverified:
``consistency`` and ``consistency_weight`` are options). Inference uses the main path only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.compound_bn.layers import compound_layers, group_assignment
from reprozoo.compound_bn.losses import as_labels, on_host
from reprozoo.core.checks import check_choice, check_float, check_labels

__all__ = ["DualPathLoss", "DualPathOutput", "consistency_loss", "dual_path_loss"]

CONSISTENCY = ("kl", "mse", "none")


def consistency_loss(main: torch.Tensor, aux: torch.Tensor, kind: str = "kl", stop_gradient: str = "aux",
                     logit_scale: float = 1.0) -> torch.Tensor:
    """Consistency between the main and auxiliary logits (N, C) (unverified form; step 7).

    ``kind``: "kl" = KL(p_target ‖ p_other) of the softmaxes of ``logit_scale``·logits, averaged over the
    batch; "mse" = mean squared difference of the softmaxes; "none" = 0. ``stop_gradient``: which side is
    the detached target ("aux": the label-driven path teaches the main path; "main": the reverse).
    """
    check_choice(kind, "consistency", CONSISTENCY)
    check_choice(stop_gradient, "stop_gradient", ("aux", "main"))
    if kind == "none":
        return main.new_zeros(())
    target, other = (aux, main) if stop_gradient == "aux" else (main, aux)
    target = target.detach() * logit_scale
    other = other * logit_scale
    if kind == "kl":
        return F.kl_div(F.log_softmax(other, 1), F.log_softmax(target, 1), reduction="batchmean", log_target=True)
    return F.mse_loss(F.softmax(other, 1), F.softmax(target, 1))


@dataclass
class DualPathOutput:
    """What one dual-path step computed: the total ``loss`` (backpropagate it) and its parts."""

    loss: torch.Tensor
    main_loss: torch.Tensor
    aux_loss: torch.Tensor
    consistency: torch.Tensor
    main_logits: torch.Tensor
    aux_logits: torch.Tensor


def dual_path_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, class_to_group: torch.Tensor,
                   criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, *,
                   aux_weight: float = 1.0, consistency: str = "kl", consistency_weight: float = 1.0,
                   stop_gradient: str = "aux", logit_scale: float = 1.0) -> DualPathOutput:
    """One dual-path forward: soft main path, then hard auxiliary path; returns the combined loss.

    Parameters
    ----------
    model : nn.Module holding :class:`CompoundBatchNorm2d`/``1d`` layers (in training mode)
    x : Tensor (N, ...) inputs; y : integer tensor (N,) labels in [0, C) (any integer dtype; cast to int64)
    class_to_group : LongTensor (C,)
        Group (= component) of each class, e.g. from :func:`reprozoo.datasets.split_groups_by_frequency`;
        values in [0, K).
    criterion : callable (logits, y) -> scalar
        The classification loss of both paths (CE, CE-DRW, LDAM-DRW ...).
    aux_weight, consistency, consistency_weight, stop_gradient, logit_scale
        See the module docstring and :func:`consistency_loss`.

    Raises
    ------
    TypeError
        ``x``/``y``/``class_to_group`` not tensors; ``y`` or ``class_to_group`` not integer.
    ValueError
        Empty batch; ``y`` not of shape (N,) or outside [0, C); the model's logits not (N, C) with
        C = len(class_to_group).

    Cost: two forward passes (and, after ``loss.backward()``, two backward passes) of the model; the
    checks are O(N).
    """
    if not isinstance(class_to_group, torch.Tensor):
        raise TypeError(f"class_to_group should be a LongTensor (C,), got {type(class_to_group).__name__}")
    if class_to_group.is_floating_point() or class_to_group.is_complex() or class_to_group.dtype == torch.bool:
        raise TypeError(f"class_to_group should be an integer tensor (C,), got dtype {class_to_group.dtype}")
    if class_to_group.dim() != 1 or class_to_group.numel() == 0:
        raise ValueError(f"class_to_group should have shape (C,) with C >= 1, got {tuple(class_to_group.shape)}")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} should be a torch.Tensor, got {type(t).__name__}")
    y = as_labels(y, "y")  # any integer dtype is cast to int64 (uint8 would index as a boolean mask)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x should be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y should have shape (N,) = ({x.shape[0]},), got {tuple(y.shape)}")
    n_classes = class_to_group.shape[0]
    lo, hi = (int(y.min()), int(y.max())) if on_host(y) else (0, 0)  # values checked on the CPU only
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"y should lie in [0, {n_classes}) (len(class_to_group)), got [{lo}, {hi}]")
    main = model(x)
    if not isinstance(main, torch.Tensor) or main.dim() != 2 or main.shape[1] != n_classes:
        shape = tuple(main.shape) if isinstance(main, torch.Tensor) else type(main).__name__
        raise ValueError(f"the model outputs logits of shape {shape} but class_to_group (class_counts) has "
                         f"{n_classes} classes; expected logits (N, {n_classes}): give one class count per "
                         "output of the model")
    with group_assignment(model, class_to_group.to(y.device)[y]):
        aux = model(x)
    main_loss = criterion(main, y)
    aux_loss = criterion(aux, y)
    cons = consistency_loss(main, aux, consistency, stop_gradient, logit_scale)
    loss = main_loss + aux_weight * aux_loss + consistency_weight * cons
    return DualPathOutput(loss, main_loss, aux_loss, cons, main, aux)


class DualPathLoss(nn.Module):
    """Loss object for a user's training loop: ``out = DualPathLoss(class_counts, K)(model, x, y)``.

    Parameters
    ----------
    class_counts : array-like of int (C,)
        Training-set size of each class; classes are split into K frequency groups.
    num_groups : int
        K, the number of components of the model's compound BN layers.
    criterion : callable, default cross-entropy
    group_by : {"classes", "samples"}, default "classes"
        How the sorted classes are split (see ``split_groups_by_frequency``; unverified).
    aux_weight : float, default 1.0
    consistency : {"kl", "mse", "none"}, default "kl"
    consistency_weight : float, default 1.0 (λ_c; unverified)
    stop_gradient : {"aux", "main"}, default "aux"
    logit_scale : float, default 1.0 (30 for LDAM's cosine logits)

    Calling it raises as :func:`dual_path_loss` does (integer labels in [0, C), logits (N, C) with
    C = len(class_counts)), and ``ValueError`` if the model's compound BN layers do not have K = num_groups.

    Examples
    --------
    >>> # loss_fn = DualPathLoss(counts, num_groups=2)
    >>> # out = loss_fn(model, x, y); out.loss.backward(); optimizer.step()
    """

    def __init__(self, class_counts: Any, num_groups: int,
                 criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, *,
                 group_by: str = "classes", aux_weight: float = 1.0, consistency: str = "kl",
                 consistency_weight: float = 1.0, stop_gradient: str = "aux", logit_scale: float = 1.0):
        super().__init__()
        from reprozoo.datasets.longtail import split_groups_by_frequency

        counts = check_labels(class_counts, "class_counts")
        groups = split_groups_by_frequency(counts, num_groups, by=group_by)
        self.register_buffer("class_to_group", torch.as_tensor(groups, dtype=torch.long))
        self.num_groups = num_groups
        self.criterion = criterion
        self.aux_weight = check_float(aux_weight, "aux_weight", low=0.0)
        self.consistency = check_choice(consistency, "consistency", CONSISTENCY)
        self.consistency_weight = check_float(consistency_weight, "consistency_weight", low=0.0)
        self.stop_gradient = check_choice(stop_gradient, "stop_gradient", ("aux", "main"))
        self.logit_scale = check_float(logit_scale, "logit_scale", low=0.0, low_inclusive=False)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DualPathOutput:
        ks = {m.num_components for m in compound_layers(model)}
        if ks != {self.num_groups}:
            raise ValueError(f"the model's compound BN layers have K in {sorted(ks)} but num_groups="
                             f"{self.num_groups}; they must match (one component per group)")
        return dual_path_loss(model, x, y, self.class_to_group, self.criterion, aux_weight=self.aux_weight,
                              consistency=self.consistency, consistency_weight=self.consistency_weight,
                              stop_gradient=self.stop_gradient, logit_scale=self.logit_scale)
