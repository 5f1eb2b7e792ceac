"""Alignment evaluation: CSLS ranks in row blocks, Hits@k, MR, MRR (paper Sec. 4.1; reference ``main._test``).

The reference ranks the test right entities for each test left entity by ``1 - CSLS(1 - d)`` with ``d`` the
squared L2 distance of normalised joint embeddings. For unit vectors ``1 - d = 2 cos - 1``, an increasing affine
map of the cosine, so CSLS on it ranks exactly as CSLS on the cosine (Conneau et al., ICLR 2018):

    CSLS(i, j) = 2 cos(i, j) - r_L(i) - r_R(j),   r_L(i) = mean of the k largest cos(i, .) over right entities

which is what :func:`csls_ranks` computes, in row blocks: one pass for ``r_L`` and ``r_R`` (column top-k merged
block by block), one pass for the ranks of both directions. The second pass reuses the first pass's blocks
when they fit ``keep_bytes`` (default 512 MiB: 10,500 test links take 441 MB in float32), else recomputes
them; memory O(block * n) beyond that; never a float64 n x n matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reprozoo.core.metrics import hits_at_k, mrr

__all__ = ["csls_ranks", "csls_dense", "ranking_metrics"]


def _topk_mean(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    return x.topk(min(k, x.shape[dim]), dim=dim).values.mean(dim)


@torch.no_grad()
def csls_ranks(left: torch.Tensor, right: torch.Tensor, k: int = 3, block: int = 2048,
               keep_bytes: int = 2 ** 29) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the true partners under CSLS(k) (cosine when ``k = 0``), both directions.

    Parameters
    ----------
    left, right : Tensor, shape (n, d)
        Embeddings of aligned pairs: ``left[i]`` is aligned with ``right[i]``; the candidates of a left entity
        are all ``right`` rows, and vice versa.
    k : int
        CSLS neighbourhood (0: plain cosine).
    block : int
        Rows per block.
    keep_bytes : int
        The first pass's similarity blocks are kept for the second pass when all of them (4 n^2 bytes) fit
        this budget; otherwise they are recomputed (twice the multiply-adds, O(block * n) memory).

    Returns
    -------
    ranks_l2r, ranks_r2l : ndarray, int64, shape (n,)
        Rank of ``right[i]`` among the candidates of ``left[i]`` (ties count in the entity's favour), and of
        ``left[i]`` among the candidates of ``right[i]``.

    Notes
    -----
    ``n^2 d`` multiply-adds (``2 n^2 d`` when the blocks are not kept) and O(n^2) comparisons; memory
    O(block * n + n * k), plus ``4 n^2`` bytes when the blocks are kept.
    """
    if left.ndim != 2 or left.shape != right.shape:
        raise ValueError(f"left and right should both have shape (n, d), got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    L = F.normalize(left.float(), dim=1)
    R = F.normalize(right.float(), dim=1)
    n = L.shape[0]
    keep = 4 * n * n <= keep_bytes
    kept: list[torch.Tensor | None] = []
    r_left = torch.zeros(n, device=L.device)
    r_right = torch.zeros(n, device=L.device)
    diag = torch.empty(n, device=L.device)  # cos(i, i) from the same products as pass 2 (same rounding)
    kk = min(k, n)
    col_top = torch.full((kk, n), -torch.inf, device=L.device)
    for s in range(0, n, block):
        S = L[s:s + block] @ R.t()
        rows = torch.arange(S.shape[0], device=L.device)
        diag[s:s + block] = S[rows, rows + s]
        if k > 0:
            r_left[s:s + block] = _topk_mean(S, kk, 1)
            col_top = torch.cat([col_top, S.topk(min(kk, S.shape[0]), dim=0).values]).topk(kk, dim=0).values
        if keep:
            kept.append(S)
    if k > 0:
        r_right = col_top.mean(0)
    # CSLS(i, j) = 2 cos(i, j) - r_L(i) - r_R(j) beats the true pair's score of row i (l2r) or column j (r2l)
    true = 2 * diag - r_left - r_right
    rank_l2r = torch.empty(n, dtype=torch.long, device=L.device)
    beat_r2l = torch.zeros(n, dtype=torch.long, device=L.device)
    for b, s in enumerate(range(0, n, block)):
        C = kept[b] if keep else L[s:s + block] @ R.t()
        C.mul_(2).sub_(r_left[s:s + block, None]).sub_(r_right[None, :])  # in place: no block-sized temporaries
        rank_l2r[s:s + block] = (C > true[s:s + block, None]).sum(1) + 1
        beat_r2l += (C > true[None, :]).sum(0)
        if keep:
            kept[b] = None  # free as we go
    return rank_l2r.cpu().numpy(), (beat_r2l + 1).cpu().numpy()


def csls_dense(left: torch.Tensor, right: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The full (n, n) CSLS matrix (reference ``csls_sim`` on cosines); for tests on small inputs only."""
    S = F.normalize(left.double(), dim=1) @ F.normalize(right.double(), dim=1).t()
    if k == 0:
        return S
    return 2 * S - _topk_mean(S, k, 1)[:, None] - _topk_mean(S, k, 0)[None, :]


def ranking_metrics(ranks: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Hits@1/10/50 (percent), MR and MRR (fraction) from 1-based ranks (:mod:`reprozoo.core.metrics`).

    >>> {k: round(v, 3) for k, v in ranking_metrics(np.array([1, 2, 20])).items()}
    {'Hits@1': 33.333, 'Hits@10': 66.667, 'Hits@50': 100.0, 'MR': 7.667, 'MRR': 0.517}
    """
    return {
        f"{prefix}Hits@1": 100.0 * hits_at_k(ranks, 1),
        f"{prefix}Hits@10": 100.0 * hits_at_k(ranks, 10),
        f"{prefix}Hits@50": 100.0 * hits_at_k(ranks, 50),
        f"{prefix}MR": float(np.mean(ranks)),
        f"{prefix}MRR": mrr(ranks),
    }
