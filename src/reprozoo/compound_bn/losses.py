"""Long-tail losses that compound BN is plugged into: CE, CE-DRW and LDAM-DRW.

* DRW, deferred re-weighting (Cao et al., LDAM, NeurIPS 2019, Sec. 3.3): plain training first, then
  class-balanced weights w_c ∝ (1 − β) / (1 − β^{n_c}) (Cui et al., CVPR 2019, Eq. 4), β = 0.9999,
  normalised to sum to C.
* LDAM (Cao et al., Eq. 13): the true-class logit is lowered by Δ_y = C / n_y^{1/4}, with C set so that
  max Δ = ``max_margin`` (0.5), and the logits are scaled by s = 30 before the cross-entropy; the network
  ends in a cosine classifier (:class:`NormedLinear`), as in the LDAM reference setup.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.checks import check_choice, check_float, check_int

__all__ = ["LOSSES", "LDAMLoss", "LongTailLoss", "NormedLinear", "TrainingDiverged", "as_labels",
           "check_logits_target",
           "class_balanced_weights"]

LOSSES = ("CE", "CE-DRW", "LDAM-DRW")


def _counts(class_counts: Any) -> np.ndarray:
    """``class_counts`` (C,) as int64: samples per class, C >= 2, each an integer >= 1."""
    want = "class_counts should hold >= 2 counts (training samples per class), each an integer >= 1"
    if isinstance(class_counts, torch.Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    arr = np.asarray(class_counts) if not isinstance(class_counts, (str, bytes)) else np.asarray([class_counts])
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{want}; got values of dtype {arr.dtype}")
    if arr.dtype == np.bool_:
        raise TypeError(f"{want}; got booleans {arr.tolist()}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{want}; got an array of shape {arr.shape} (should be 1-D)")
    if arr.size < 2:
        raise ValueError(f"{want}; got {arr.size} count(s): {arr.tolist()}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{want}; got NaN or infinite values: {arr.tolist()}")
    if not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"{want}; got non-integer counts: {arr.tolist()}")
    if (arr < 1).any():
        raise ValueError(f"{want}; got counts below 1: {arr.tolist()}")
    return arr.astype(np.int64)


def as_labels(y: Any, name: str = "y") -> torch.Tensor:
    """Class labels as int64: any integer tensor is cast (uint8 would otherwise index as a boolean mask,
    int32 fails inside torch's losses); a non-tensor, float, complex or bool tensor raises ``TypeError``
    naming ``name``. O(N) for a cast, free for int64."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor of integer class labels (N,), got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} should hold integer class labels (an integer tensor (N,), e.g. int64), "
                        f"got dtype {y.dtype}")
    return y.long()


def check_logits_target(logits: Any, target: Any, n_classes: int) -> None:
    """Validate a loss's inputs: ``logits`` a finite float tensor (N, n_classes), ``target`` an integer
    tensor (N,) with values in [0, n_classes). Cost O(N·C) for the finiteness check, O(N) for the labels.

    Raises ``TypeError`` (not a tensor, wrong dtype) or ``ValueError`` (shape, range, NaN/inf) naming
    the argument, the expected and the received shape or values.
    """
    for name, t in (("logits", logits), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} should be a torch.Tensor, got {type(t).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits should be a floating-point tensor (N, C), got dtype {logits.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target should hold integer class labels (LongTensor (N,)), got dtype {target.dtype}")
    if logits.dim() != 2 or logits.shape[1] != n_classes:
        raise ValueError(f"logits should have shape (N, C) = (N, {n_classes}) (C = len(class_counts)), "
                         f"got {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target should have shape (N,) = ({logits.shape[0]},) (one label per row of "
                         f"logits), got {tuple(target.shape)}")
    if target.numel() == 0:
        raise ValueError("logits and target are empty (N = 0)")
    if not on_host(target, logits):  # value checks would stall an accelerator at every step; its own
        return  # kernels reject out-of-range labels there
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"target should lie in [0, {n_classes}) (C = len(class_counts)), got values in "
                         f"[{lo}, {hi}]")
    if not bool(torch.isfinite(logits.detach()).all()):
        raise TrainingDiverged("logits contain NaN or infinite values (did training diverge? try a lower lr)")


def on_host(*tensors: torch.Tensor) -> bool:
    """True when every tensor is on the CPU, where checking its values costs no device synchronisation.

    The per-batch value checks of this package (label ranges, finiteness) run only there: on a GPU each
    would wait for the device at every training step. Shapes and dtypes are checked on every device.
    """
    return all(t.device.type == "cpu" for t in tensors)


def class_balanced_weights(class_counts: Any, beta: float = 0.9999) -> torch.Tensor:
    """Effective-number class weights (1 − β) / (1 − β^{n_c}), normalised to sum to C (float32, (C,))."""
    counts = _counts(class_counts)
    beta = check_float(beta, "beta", low=0.0, high=1.0, high_inclusive=False)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts.astype(np.float64)))
    return torch.as_tensor(w / w.sum() * counts.size, dtype=torch.float32)


class TrainingDiverged(ValueError):
    """Non-finite logits reached a loss: the training diverged (the experiment records it and goes on)."""


class NormedLinear(nn.Module):
    """Cosine classifier: logits_c = ⟨x/‖x‖, w_c/‖w_c‖⟩ ∈ [−1, 1] (the LDAM head).

    Shapes: input (N, in_features) -> (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", low=1)
        self.out_features = check_int(out_features, "out_features", low=1)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss (Cao et al., 2019, Eq. 13).

    L = CE(s · (z − Δ_y e_y), y; weight), Δ_c = m / n_c^{1/4}, m such that max_c Δ_c = ``max_margin``.

    Parameters
    ----------
    class_counts : array-like of int (C,)
    max_margin : float, default 0.5
    scale : float, default 30
    weight : Tensor (C,), optional
        Per-class weights (set by DRW).
    """

    def __init__(self, class_counts: Any, max_margin: float = 0.5, scale: float = 30.0,
                 weight: torch.Tensor | None = None):
        super().__init__()
        counts = _counts(class_counts)
        check_float(max_margin, "max_margin", low=0.0)
        self.scale = check_float(scale, "scale", low=0.0, low_inclusive=False)
        margins = 1.0 / np.power(counts.astype(np.float64), 0.25)
        margins = margins * (max_margin / margins.max())
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (N, C) float and ``target`` (N,) int in [0, C); raises as
        :func:`check_logits_target`."""
        target = as_labels(target, "target")
        check_logits_target(logits, target, self.margins.shape[0])
        return self._loss(logits, target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        shifted = logits - F.one_hot(target, logits.shape[1]).to(logits.dtype) * self.margins.to(logits.dtype)
        return F.cross_entropy(self.scale * shifted, target, weight=self.weight)


class LongTailLoss(nn.Module):
    """CE, CE-DRW or LDAM-DRW with the DRW switch driven by :meth:`set_epoch`.

    Parameters
    ----------
    name : {"CE", "CE-DRW", "LDAM-DRW"}
    class_counts : array-like of int (C,)
        Training-set size of each class.
    drw_epoch : int, default 160
        First epoch (0-based) with class-balanced weights (160 of 200 in the LDAM protocol).
    beta : float, default 0.9999
        Effective-number β of the DRW weights.
    max_margin, scale : float
        LDAM margin and logit scale.

    ``logit_scale`` is the factor that turns the model's logits into the logits the loss feeds to softmax
    (``scale`` for LDAM, whose model outputs cosines; 1 otherwise); the dual-path consistency term uses it.
    """

    def __init__(self, name: str, class_counts: Any, drw_epoch: int = 160, beta: float = 0.9999,
                 max_margin: float = 0.5, scale: float = 30.0):
        super().__init__()
        self.name = check_choice(name, "loss", LOSSES)
        counts = _counts(class_counts)
        self.drw_epoch = check_int(drw_epoch, "drw_epoch", low=0)
        self.register_buffer("cb_weight", class_balanced_weights(counts, beta))
        self.ldam = LDAMLoss(counts, max_margin, scale) if name == "LDAM-DRW" else None
        self.logit_scale = float(scale) if self.ldam is not None else 1.0
        self.active_weight: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        """Turn the class-balanced weights on from ``drw_epoch`` (DRW losses only)."""
        drw = self.name.endswith("DRW") and epoch >= self.drw_epoch
        self.active_weight = self.cb_weight if drw else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``logits`` (N, C) float and ``target`` (N,) int in [0, C), C = len(class_counts).

        Raises ``TypeError``/``ValueError`` (see :func:`check_logits_target`) for a non-tensor, a wrong
        dtype or shape, labels out of range or NaN/inf logits. Cost O(N·C).
        """
        target = as_labels(target, "target")  # any integer dtype (cast to int64)
        check_logits_target(logits, target, self.cb_weight.shape[0])
        w = None if self.active_weight is None else self.active_weight.to(logits.device, logits.dtype)
        if self.ldam is not None:
            self.ldam.weight = w
            return self.ldam._loss(logits, target)
        return F.cross_entropy(logits, target, weight=w)
