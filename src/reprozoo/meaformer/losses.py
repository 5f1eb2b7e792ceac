"""MEAformer's training losses (paper Sec. 3.4; reference ``MEAformer_loss.py``).

- :func:`icl_loss`: symmetric in-batch InfoNCE. For a batch of seed pairs ``(l_i, r_i)`` and normalised
  embeddings, the logits of ``l_i`` are its similarities to every right-side batch entity and to every other
  left-side batch entity (itself masked), divided by ``tau``; cross-entropy on its partner ``r_i``; the same
  from the right side; the two directions weighted ``alpha`` and ``1 - alpha`` (0.5 each). Several embeddings
  of the same batch (the joint one, each modality's) are scored in one batched call.
- :class:`MultiTaskLoss`: Kendall et al.'s uncertainty weighting ``sum_k exp(-s_k) L_k + s_k`` with learnable
  ``s_k`` (reference ``CustomMultiLossLayer``).

All logits of one embedding are the blocks of one Gram matrix: with ``Z = [z_l; z_r]`` (2B rows),
``G = Z Z^T / tau`` holds ``[l.l  l.r; r.l  r.r]``, so the left row ``i`` and the right row ``B + i`` of ``G``,
diagonal masked, are exactly the two directions' logit rows, and the loss is

    L = sum_i w_i [ alpha lse(G_i) + (1 - alpha) lse(G_{B+i}) - z_l,i . z_r,i / tau ] / sum_i w_i

:class:`_GramLogSumExp` computes the row log-sum-exps of K such matrices with one ``bmm``, an in-place softmax
and, backward, ``dZ = (P + P^T) Z / tau`` (P the softmax scaled by the incoming gradient; one more ``bmm``).

Absent modalities (ours): ``present_left/right`` drop a pair whose either side lacks the modality (``w_i = 0``)
and mask the absent entities out of every other row's negatives, so an absent modality contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["icl_loss", "MultiTaskLoss"]

_NEG = -1e9  # reference LARGE_NUM: masked logits
_TILE = 512  # tile of the in-place transpose-add (fits the L2 cache)


def _symmetrise_(p: torch.Tensor, tile: int = _TILE) -> torch.Tensor:
    """``p <- p + p^T`` over the last two dims, in place, tile pair by tile pair.

    A plain ``p + p.mT`` reads one operand column-wise and is several times slower on CPU for large matrices,
    and needs a second n x n buffer; a tile pair at a time stays in cache. O(n^2) time, O(tile^2) extra memory.
    """
    n = p.shape[-1]
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            a, b = p[..., i:i + tile, j:j + tile], p[..., j:j + tile, i:i + tile]
            s = a + b.mT
            a.copy_(s)
            b.copy_(s.mT)
    return p


class _GramLogSumExp(torch.autograd.Function):
    """Row log-sum-exps of ``G_k = Z_k Z_k^T / tau`` (diagonal and absent columns masked), batched over k.

    Inputs ``z`` (K, n, d), ``col_ok`` (K, n) bool or None (absent entities are no candidates), ``tau``,
    ``partner`` (n,) long (the positive column of each row, for the hardest-negative search) and ``hardest``.
    Returns ``lse`` (K, n) and, when ``hardest``, the max logit and its column over each row's negatives
    (positive excluded), else empty tensors. Saves the softmax (K, n, n) for backward, computed in place in the
    Gram buffer (one n x n buffer per k, no other). O(K n^2 d) time.
    """

    @staticmethod
    def forward(ctx, z, col_ok, tau, partner, hardest):
        g = torch.bmm(z * (1.0 / tau), z.mT)
        g.diagonal(dim1=1, dim2=2).fill_(_NEG)
        if col_ok is not None:
            g.masked_fill_(~col_ok[:, None, :], _NEG)
        hard_val = hard_idx = z.new_empty(0)
        if hardest:
            idx = partner.expand(g.shape[0], -1)[..., None]
            pos = g.gather(2, idx)
            g.scatter_(2, idx, 2 * _NEG)
            hard_val, hard_idx = g.max(2)
            g.scatter_(2, idx, pos)
        m = g.amax(2, keepdim=True)
        s = g.sub_(m).exp_().sum(2, keepdim=True)
        g.div_(s)  # the softmax, what backward needs
        ctx.p, ctx.tau = g, tau
        ctx.save_for_backward(z)
        ctx.mark_non_differentiable(hard_val, hard_idx)
        return (m + s.log()).squeeze(2), hard_val, hard_idx

    @staticmethod
    def backward(ctx, grad_lse, *_):
        (z,) = ctx.saved_tensors
        p = ctx.p
        del ctx.p  # the buffer becomes the gradient of G
        p.mul_(grad_lse[..., None])  # dL/dG = softmax * dL/dlse
        grad_z = torch.bmm(_symmetrise_(p), z).mul_(1.0 / ctx.tau)  # G = Z Z^T / tau: dZ = (dG + dG^T) Z / tau
        return grad_z, None, None, None, None


def icl_loss(left: torch.Tensor, right: torch.Tensor, tau: float = 0.1, *, alpha: float = 0.5,
             present_left: torch.Tensor | None = None, present_right: torch.Tensor | None = None,
             neg_left: torch.Tensor | None = None, neg_right: torch.Tensor | None = None,
             return_hardest: bool = False):
    """Symmetric in-batch InfoNCE of the pairs ``(left[..., i, :], right[..., i, :])``, for K embeddings at once.

    Parameters
    ----------
    left, right : Tensor, shape (B, d) or (K, B, d)
        Embeddings of the batch's left and right entities (normalised here); K embeddings of the same pairs
        (e.g. one per modality) give K losses.
    tau : float
        Temperature.
    alpha : float
        Weight of the left-to-right direction (``1 - alpha`` for right-to-left).
    present_left, present_right : Tensor, bool, shape (B,) or (K, B), optional
        Which entities have the modality (default: all).
    neg_left, neg_right : Tensor, shape (E, d) or (K, E, d), optional
        Extra negatives for the left rows (same graph as ``left``, hard-entity replay) and right rows.
    return_hardest : bool
        Also return, per row, the column index of its hardest negative (positive excluded) in the candidate
        list ``[left batch..., right batch..., extra negatives of that side...]`` (for replay).

    Returns
    -------
    loss : Tensor, scalar (2-D inputs) or shape (K,) (and ``(hardest_left, hardest_right)``, each (B,) or
    (K, B), when ``return_hardest``).

    Notes
    -----
    O(K B^2 d) time (one ``bmm`` forward, one backward) and O(K B^2) memory (the softmax of each embedding).
    """
    single = left.ndim == 2
    if single:
        left, right = left[None], right[None]
        present_left = None if present_left is None else present_left[None]
        present_right = None if present_right is None else present_right[None]
        neg_left = None if neg_left is None else neg_left[None]
        neg_right = None if neg_right is None else neg_right[None]
    if left.ndim != 3 or left.shape != right.shape:
        raise ValueError(f"left and right should both have shape (B, d) or (K, B, d), got {tuple(left.shape)} "
                         f"and {tuple(right.shape)}")
    K, B, _ = left.shape
    zl, zr = F.normalize(left, dim=-1), F.normalize(right, dim=-1)
    ones = torch.ones(K, B, dtype=torch.bool, device=left.device)
    pl = ones if present_left is None else present_left.expand(K, B)
    pr = ones if present_right is None else present_right.expand(K, B)
    col_ok = None if present_left is None and present_right is None else torch.cat([pl, pr], 1)
    idx = torch.arange(B, device=left.device)
    partner = torch.cat([idx + B, idx])
    lse, hard_val, hard_idx = _GramLogSumExp.apply(torch.cat([zl, zr], 1), col_ok, tau, partner, return_hardest)
    lse_a, lse_b = lse[:, :B], lse[:, B:]
    for side, neg in ((0, neg_left), (1, neg_right)):  # replay: extra columns of one side's rows
        if neg is None:
            continue
        z = zl if side == 0 else zr
        extra = torch.matmul(z, F.normalize(neg, dim=-1).mT) / tau  # (K, B, E)
        rows = slice(0, B) if side == 0 else slice(B, 2 * B)
        if side == 0:
            lse_a = torch.logaddexp(lse_a, torch.logsumexp(extra, 2))
        else:
            lse_b = torch.logaddexp(lse_b, torch.logsumexp(extra, 2))
        if return_hardest and extra.shape[2]:
            val, col = extra.detach().max(2)
            better = val > hard_val[:, rows]
            hard_idx[:, rows] = torch.where(better, col + 2 * B, hard_idx[:, rows])
    pos = (zl * zr).sum(-1) / tau
    weight = (pl & pr).to(left.dtype)
    per_pair = alpha * lse_a + (1 - alpha) * lse_b - pos
    loss = (weight * per_pair).sum(1) / weight.sum(1).clamp_min(1.0)
    if single:
        loss = loss[0]
    if not return_hardest:
        return loss
    hard_a, hard_b = hard_idx[:, :B], hard_idx[:, B:]
    return loss, ((hard_a[0], hard_b[0]) if single else (hard_a, hard_b))


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
