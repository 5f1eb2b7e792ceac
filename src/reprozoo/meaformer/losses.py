"""MEAformer's training losses (paper Sec. 3.4; reference ``MEAformer_loss.py``).

- :func:`icl_loss`: symmetric in-batch InfoNCE. For a batch of seed pairs ``(l_i, r_i)`` and normalised
  embeddings, the logits of ``l_i`` are its similarities to every right-side batch entity and to every other
  left-side batch entity (itself masked), divided by ``tau``; cross-entropy on its partner ``r_i``; the same
  from the right side; the two directions weighted ``alpha`` and ``1 - alpha`` (0.5 each).
- :class:`MultiTaskLoss`: Kendall et al.'s uncertainty weighting ``sum_k exp(-s_k) L_k + s_k`` with learnable
  ``s_k`` (reference ``CustomMultiLossLayer``).

Absent modalities (ours): ``present_left/right`` drop a pair whose either side lacks the modality and mask the
absent entities out of every other row's negatives, so an absent modality contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["icl_loss", "MultiTaskLoss"]

_NEG = -1e9  # reference LARGE_NUM: masked logits


def icl_loss(left: torch.Tensor, right: torch.Tensor, tau: float = 0.1, *, alpha: float = 0.5,
             present_left: torch.Tensor | None = None, present_right: torch.Tensor | None = None,
             neg_left: torch.Tensor | None = None, neg_right: torch.Tensor | None = None,
             return_hardest: bool = False):
    """Symmetric in-batch InfoNCE of the pairs ``(left[i], right[i])``.

    Parameters
    ----------
    left, right : Tensor, shape (B, d)
        Embeddings of the batch's left and right entities (normalised here).
    tau : float
        Temperature.
    alpha : float
        Weight of the left-to-right direction (``1 - alpha`` for right-to-left).
    present_left, present_right : Tensor, bool, shape (B,), optional
        Which entities have the modality (default: all).
    neg_left, neg_right : Tensor, shape (K, d), optional
        Extra negatives for the left rows (same graph as ``left``, hard-entity replay) and right rows.
    return_hardest : bool
        Also return, per row, the column index of its hardest negative (positive excluded) in the row's
        candidate list ``[partners' side..., own side..., extra negatives...]`` (for replay).

    Returns
    -------
    loss : Tensor, scalar (and ``(hardest_a, hardest_b)`` when ``return_hardest``).

    Notes
    -----
    O(B^2 d) time and O(B^2) memory per call.
    """
    B = left.shape[0]
    zl = F.normalize(left, dim=1)
    zr = F.normalize(right, dim=1)
    eye = torch.eye(B, dtype=torch.bool, device=left.device)
    ab = zl @ zr.t() / tau
    aa = (zl @ zl.t() / tau).masked_fill(eye, _NEG)
    bb = (zr @ zr.t() / tau).masked_fill(eye, _NEG)
    ba = ab.t()
    if present_left is not None or present_right is not None:
        pl = present_left if present_left is not None else torch.ones(B, dtype=torch.bool, device=left.device)
        pr = present_right if present_right is not None else torch.ones(B, dtype=torch.bool, device=left.device)
        ab = ab.masked_fill(~pr[None, :], _NEG)  # an absent entity is no candidate
        aa = aa.masked_fill(~pl[None, :], _NEG)
        ba = ba.masked_fill(~pl[None, :], _NEG)
        bb = bb.masked_fill(~pr[None, :], _NEG)
        weight = (pl & pr).to(left.dtype)
    else:
        weight = torch.ones(B, dtype=left.dtype, device=left.device)
    parts_a, parts_b = [ab, aa], [ba, bb]
    if neg_left is not None:
        parts_a.append(zl @ F.normalize(neg_left, dim=1).t() / tau)
    if neg_right is not None:
        parts_b.append(zr @ F.normalize(neg_right, dim=1).t() / tau)
    logits_a = torch.cat(parts_a, dim=1)
    logits_b = torch.cat(parts_b, dim=1)
    target = torch.arange(B, device=left.device)
    denom = weight.sum().clamp_min(1.0)
    loss_a = (F.cross_entropy(logits_a, target, reduction="none") * weight).sum() / denom
    loss_b = (F.cross_entropy(logits_b, target, reduction="none") * weight).sum() / denom
    loss = alpha * loss_a + (1 - alpha) * loss_b
    if not return_hardest:
        return loss
    with torch.no_grad():
        hard_a = logits_a.scatter(1, target[:, None], _NEG * 2).argmax(1)
        hard_b = logits_b.scatter(1, target[:, None], _NEG * 2).argmax(1)
    return loss, (hard_a, hard_b)


class MultiTaskLoss(nn.Module):
    """``sum_k exp(-s_k) * L_k + s_k`` with learnable log-variances ``s_k`` (initialised to 0).

    >>> m = MultiTaskLoss(2)
    >>> float(m(torch.tensor([1.0, 3.0])))
    4.0
    """

    def __init__(self, n_losses: int) -> None:
        super().__init__()
        self.n_losses = n_losses
        self.log_vars = nn.Parameter(torch.zeros(n_losses))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        if losses.shape != (self.n_losses,):
            raise ValueError(f"losses should have shape ({self.n_losses},), got {tuple(losses.shape)}")
        return (torch.exp(-self.log_vars) * losses + self.log_vars).sum()

    def extra_repr(self) -> str:
        return str(self.n_losses)
