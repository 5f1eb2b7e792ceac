"""Progressive pruning (FedTiny Sec. 3, "progressive pruning") and the adaptive BN selection (ABNS) choice.

Client side: :func:`topk_pruned_gradient` keeps a top-K buffer of gradients at pruned positions (O(K)).
Server side: :func:`aggregate_topk` sums the clients' sparse buffers, :func:`topk_grow_drop` grows the K
pruned positions of largest aggregated |g| (at zero weight) and drops the K smallest-|w| active weights
(not the ones just grown), so nnz is unchanged.  :func:`cosine_alpha` is the reference code's ``f_decay``.
No Flower import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from reprozoo.core.checks import check_choice, check_float, check_int
from reprozoo.sparsity import topk_keep

__all__ = [
    "cosine_alpha",
    "is_adjust_round",
    "adjust_count",
    "adjust_layers",
    "topk_pruned_gradient",
    "aggregate_topk",
    "topk_grow_drop",
    "select_candidate",
    "LAYER_ORDERS",
]

LAYER_ORDERS = ("output_to_input", "input_to_output")


def cosine_alpha(t: int, alpha: float, t_end: int) -> float:
    """Cosine-decayed adjustment fraction α_t = (α/2)(1 + cos(π t / T_end)) for t <= T_end, else 0.

    Parameters
    ----------
    t : int >= 0 (round)
    alpha : float in (0, 1] (``adjust_alpha``, 0.2 in the reference code)
    t_end : int >= 1 (last round that may adjust the mask)
    """
    t = check_int(t, "t", low=0)
    alpha = check_float(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False)
    t_end = check_int(t_end, "t_end", low=1)
    if t > t_end:
        return 0.0
    return 0.5 * alpha * (1.0 + math.cos(math.pi * t / t_end))


def is_adjust_round(t: int, delta_t: int, t_end: int) -> bool:
    """True when round ``t`` (1-based) adjusts the mask: ``t % ΔT == 0`` and ``t <= T_end``."""
    return t >= 1 and t % delta_t == 0 and t <= t_end


def adjust_count(n_active: int, alpha_t: float) -> int:
    """K = ⌊α_t · n_active⌋ (0 when the layer is too sparse: then no grow/drop happens)."""
    return int(math.floor(alpha_t * n_active))


def adjust_layers(t: int, delta_t: int, names: Sequence[str], order: str = "output_to_input",
                  whole_model: bool = False) -> list[str]:
    """The layer(s) adjusted in adjustment round ``t``.

    FedTiny adjusts one layer per adjustment round, cycling through ``names`` (given input to output) in
    ``order``; ``whole_model=True`` (the FedDST-style baseline) adjusts every layer.
    """
    check_choice(order, "order", LAYER_ORDERS)
    if whole_model:
        return list(names)
    seq = list(names)[::-1] if order == "output_to_input" else list(names)
    j = t // delta_t - 1
    return [seq[j % len(seq)]]


def topk_pruned_gradient(grad: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Client top-K buffer: the ``k`` pruned positions of largest |grad|.

    Parameters
    ----------
    grad : float tensor, the dense gradient of one layer's weight (transient)
    mask : bool tensor, same shape (True = active)
    k : int >= 0

    Returns
    -------
    (indices, values): int64 (k',) flat indices into the weight (ascending), float32 (k',) gradient values,
    with k' = min(k, number of pruned positions); ties in |grad| follow :func:`reprozoo.sparsity.topk_keep`.
    Only these 2k' numbers are kept and sent: O(K) memory.
    """
    if grad.shape != mask.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but mask has {tuple(mask.shape)}")
    k = check_int(k, "k", low=0)
    g = grad.detach().reshape(-1)
    pruned = ~mask.reshape(-1).to(g.device)
    k = min(k, int(pruned.sum()))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    score = torch.where(pruned, g.abs(), torch.full_like(g, -1.0))  # active positions rank below every pruned one
    idx = torch.nonzero(topk_keep(score, k)).flatten()  # ascending flat indices
    return idx.cpu().numpy().astype(np.int64), g[idx].cpu().numpy().astype(np.float32)


def aggregate_topk(buffers: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float],
                   numel: int) -> np.ndarray:
    """Server: weighted sum of the clients' sparse top-K buffers into one dense vector (the sparse union).

    Parameters
    ----------
    buffers : sequence of (indices int (k_i,), values float (k_i,)) per client
    weights : sequence of float >= 0 (sample counts), normalised here
    numel : int, size of the layer's weight

    Returns float64 (numel,): Σ_i w_i g_i / Σ w_i, zero outside the union.  O(Σ k_i + numel).
    """
    if len(buffers) != len(weights):
        raise ValueError(f"{len(buffers)} buffers but {len(weights)} weights")
    if len(buffers) == 0:
        raise ValueError("buffers is empty: no client sent gradients")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights should be >= 0 and not all zero, got {w.tolist()}")
    w = w / w.sum()
    out = np.zeros(int(numel), dtype=np.float64)
    for (idx, val), wi in zip(buffers, w, strict=True):
        idx = np.asarray(idx, dtype=np.int64)
        val = np.asarray(val, dtype=np.float64)
        if idx.shape != val.shape:
            raise ValueError(f"a buffer has {idx.shape} indices but {val.shape} values")
        if idx.size and (idx.min() < 0 or idx.max() >= numel):
            raise ValueError(f"buffer indices should lie in [0, {numel}), got [{idx.min()}, {idx.max()}]")
        np.add.at(out, idx, wi * val)
    return out


def topk_grow_drop(weight: np.ndarray, mask: np.ndarray, agg_grad: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Server grow-and-drop on one layer, keeping nnz exactly.

    Parameters
    ----------
    weight : float ndarray, shape S (the aggregated weight)
    mask : bool ndarray, shape S
    agg_grad : float ndarray, numel(S) or shape S (from :func:`aggregate_topk`)
    k : int >= 0, number of positions to grow and to drop

    Returns
    -------
    (new_weight, new_mask): grown positions are the ``k`` pruned positions of largest |agg_grad| among
    those with a non-zero aggregated gradient (fewer if fewer were reported), and start at weight 0;
    the same number of previously active weights with the smallest |w| are dropped (set to 0).  Ties
    follow :func:`reprozoo.sparsity.topk_keep` (grow: highest index first; drop: lowest index first).
    O(numel).
    """
    weight = np.asarray(weight)
    mask = np.asarray(mask, dtype=bool)
    if weight.shape != mask.shape:
        raise ValueError(f"weight has shape {weight.shape} but mask has {mask.shape}")
    g = np.asarray(agg_grad, dtype=np.float64).reshape(-1)
    if g.size != mask.size:
        raise ValueError(f"agg_grad has {g.size} entries but the layer has {mask.size}")
    k = check_int(k, "k", low=0)
    m = mask.reshape(-1).copy()
    w = weight.reshape(-1).astype(np.float32).copy()
    cand = np.flatnonzero(~m & (g != 0))
    k = min(k, cand.size, int(m.sum()) - 1 if m.sum() > 1 else 0)
    if k == 0:
        return weight.astype(np.float32).copy(), mask.copy()
    grow = cand[topk_keep(torch.from_numpy(np.abs(g[cand])), k).numpy()]
    active = np.flatnonzero(m)
    drop = active[~topk_keep(torch.from_numpy(np.abs(w[active])), active.size - k).numpy()]  # k smallest |w|
    m[drop] = False
    w[drop] = 0.0
    m[grow] = True
    w[grow] = 0.0
    return w.reshape(weight.shape), m.reshape(mask.shape)


def select_candidate(losses: np.ndarray, weights: np.ndarray) -> int:
    """ABNS choice: the candidate of lowest sample-weighted mean loss over clients (argmin).

    Parameters
    ----------
    losses : float array (C, K): mean loss of candidate c on client k
    weights : float array (K,): client weights (sample counts), >= 0, not all zero

    Returns the index in [0, C).  Ties go to the lowest index.
    """
    losses = np.asarray(losses, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] == 0 or losses.shape[1] == 0:
        raise ValueError(f"losses should be a non-empty (n_candidates, n_clients) array, got shape {losses.shape}")
    if weights.shape != (losses.shape[1],):
        raise ValueError(f"weights should have shape ({losses.shape[1]},), got {weights.shape}")
    if np.any(weights < 0) or weights.sum() <= 0 or not np.all(np.isfinite(weights)):
        raise ValueError(f"weights should be finite, >= 0 and not all zero, got {weights.tolist()}")
    if not np.all(np.isfinite(losses)):
        raise ValueError("losses contain NaN or inf")
    return int(np.argmin(losses @ (weights / weights.sum())))
