"""Over-smoothing, out-of-distribution and perturbation tools for the UGT experiments (paper Sec. 5).

* :func:`mean_average_distance` (MAD, Chen et al., AAAI 2020): how far apart node representations
  stay; deep trained GCNs over-smooth (MAD -> 0).
* :func:`ood_split` / :func:`ood_auroc`: hold out a fraction of the classes (reference
  ``get_ood_split(ood_frac_left_out_classes=0.4)``) and score OOD test nodes by maximum softmax.
* :func:`perturb_features` / :func:`perturb_edges`: random feature noise on a fraction of nodes and
  random edge insertions with a budget relative to the number of edges (reference ``ood.py`` /
  ``attack_eps``; the reference defaults, with our former variants as options, see the method card).
* :func:`expected_calibration_error` (ECE, 15 equal-width bins).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from reprozoo.core.checks import check_float, check_int

__all__ = [
    "OODSplit",
    "expected_calibration_error",
    "mean_average_distance",
    "ood_auroc",
    "n_ood_classes",
    "ood_split",
    "perturb_edges",
    "perturb_features",
]


def mean_average_distance(h: Tensor, mask: Tensor | None = None) -> float:
    """MAD of node representations ``h`` (N, d): mean over nodes of the mean cosine distance to others.

    ``D_ij = 1 − cos(h_i, h_j)``; ``d_i = Σ_j D_ij M_ij / #{j: D_ij M_ij > 0}``;
    ``MAD = Σ_i d_i / #{i: d_i > 0}`` (Chen et al. 2020, Eq. 1–4), global MAD when ``mask`` is None
    (``M`` = all pairs). All-zero rows (a dead ReLU stack outputs zeros) are at distance 0 from
    every row, so a network whose outputs all vanish or coincide has MAD 0.0. O(N²·d) time, O(N²) memory.
    Raises ``ValueError`` for a non-2-D or non-finite ``h`` or a mask of the wrong shape.
    """
    if not isinstance(h, Tensor) or h.dim() != 2 or h.shape[0] < 2:
        raise ValueError(f"h should be a 2-D tensor (num_nodes >= 2, dim), got {getattr(h, 'shape', type(h))}")
    h = h.detach().double()
    if not bool(torch.isfinite(h).all()):
        raise ValueError("h contains NaN or infinite values")
    norm = h.norm(dim=1, keepdim=True)
    hn = h / norm.clamp_min(1e-12)
    d = (1.0 - hn @ hn.T).clamp_min(0.0)
    alive = (norm.squeeze(1) > 1e-12).to(d.dtype)  # all-zero rows (dead ReLU stacks) carry no information:
    d = d * alive[:, None] * alive[None, :]  # they count as identical to everything (distance 0)
    d[d < 1e-12] = 0.0  # exact duplicates (and the diagonal) count as zero distance
    if mask is not None:
        if tuple(mask.shape) != tuple(d.shape):
            raise ValueError(f"mask should have shape {tuple(d.shape)}, got {tuple(mask.shape)}")
        d = d * mask.to(d.dtype)
    nz = (d > 0).sum(dim=1)
    row = torch.where(nz > 0, d.sum(dim=1) / nz.clamp_min(1), torch.zeros_like(nz, dtype=d.dtype))
    k = int((row > 0).sum())
    return float(row.sum() / k) if k else 0.0


class OODSplit:
    """In-distribution / OOD partition of a node-classification graph by held-out classes.

    Attributes: ``y`` (N,) labels remapped so that ID classes are ``0..C_id-1`` (OOD nodes get -1),
    ``num_id_classes``, ``ood_classes`` (original ids), ``train_mask`` / ``val_mask`` (ID nodes only),
    ``id_test_mask`` / ``ood_test_mask`` (test nodes of ID / OOD classes).
    """

    def __init__(self, y, train_mask, val_mask, id_test_mask, ood_test_mask, num_id_classes, ood_classes):
        self.y, self.train_mask, self.val_mask = y, train_mask, val_mask
        self.id_test_mask, self.ood_test_mask = id_test_mask, ood_test_mask
        self.num_id_classes, self.ood_classes = num_id_classes, ood_classes


OOD_CLASS_CHOICES = ("random", "last")


def n_ood_classes(frac_left_out: float, num_classes: int, classes: str = "random") -> int:
    """Classes :func:`ood_split` holds out: ``floor(frac · C)`` (reference ``get_ood_split``) for
    ``classes="random"``, ``round(frac · C)`` (our former protocol) for ``"last"``."""
    return math.floor(frac_left_out * num_classes) if classes == "random" else round(frac_left_out * num_classes)


def ood_split(
    y: Tensor, train_mask: Tensor, val_mask: Tensor, test_mask: Tensor, *, frac_left_out: float = 0.4,
    classes: str = "random", generator: torch.Generator | None = None,
) -> OODSplit:
    """Hold out some classes (at least 1, at most C − 2) as OOD.

    ``classes="random"`` (reference ``get_ood_split``, its default ``ood_leave_out_last_classes=False``):
    ``floor(frac · C)`` classes drawn at random with ``generator``; ``"last"`` (our former protocol): the last
    ``round(frac · C)`` classes. ID classes keep their order and are relabelled ``0..C_id-1``. Training and
    validation keep only ID nodes; the test mask is split into ID and OOD parts.
    """
    frac = check_float(frac_left_out, "frac_left_out", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    if classes not in OOD_CLASS_CHOICES:
        raise ValueError(f"classes={classes!r} is not valid; choose one of {list(OOD_CLASS_CHOICES)}")
    c = int(y.max()) + 1
    if c < 3:
        raise ValueError(f"need at least 3 classes to hold some out, got {c}")
    n_ood = min(max(1, n_ood_classes(frac, c, classes)), c - 2)
    if classes == "random":
        ood_classes = sorted(torch.randperm(c, generator=generator)[:n_ood].tolist())
    else:
        ood_classes = list(range(c - n_ood, c))
    is_ood = torch.zeros(c, dtype=torch.bool)
    is_ood[ood_classes] = True
    new_label = torch.cumsum(~is_ood, 0) - 1  # ID classes in order -> 0..C_id-1
    is_ood, new_label = is_ood.to(y.device)[y], new_label.to(y.device)[y]
    y_id = torch.where(is_ood, torch.full_like(y, -1), new_label)
    return OODSplit(
        y=y_id, train_mask=train_mask & ~is_ood, val_mask=val_mask & ~is_ood,
        id_test_mask=test_mask & ~is_ood, ood_test_mask=test_mask & is_ood,
        num_id_classes=c - n_ood, ood_classes=ood_classes,
    )


def ood_auroc(logits: Tensor, id_mask: Tensor, ood_mask: Tensor) -> float:
    """AUROC of detecting OOD nodes (positives) by the score ``−max softmax`` (Hendrycks & Gimpel 2017)."""
    from sklearn.metrics import roc_auc_score

    if not bool(id_mask.any()) or not bool(ood_mask.any()):
        raise ValueError("id_mask and ood_mask should each select at least one node")
    conf = torch.softmax(logits.detach().double(), dim=1).max(dim=1).values
    scores = torch.cat([-conf[id_mask], -conf[ood_mask]]).cpu().numpy()
    labels = np.r_[np.zeros(int(id_mask.sum())), np.ones(int(ood_mask.sum()))]
    return float(roc_auc_score(labels, scores))


NOISE_MODELS = ("reference", "density")


def perturb_features(x: Tensor, frac_nodes: float, generator: torch.Generator, *, model: str = "reference",
                     train_mask: Tensor | None = None, val_mask: Tensor | None = None,
                     test_mask: Tensor | None = None) -> Tensor:
    """Replace the features of a random ``frac_nodes`` of the nodes by Bernoulli noise, rows L1-normalised.

    ``model="reference"`` (reference ``perturb_features``, ``ood_perturbation_type='bernoulli_0.5'``,
    ``perturb_train_indices=False``): ``int(frac · |set|)`` nodes drawn in each of the validation, test and
    remaining (unlabelled) sets, training nodes untouched (the masks are required); every feature is on with
    probability 0.5. ``model="density"`` (our former protocol): ``round(frac · N)`` of all nodes, each feature on
    with the data's mean non-zero rate (as many words as a typical row). Rows then sum to one like the
    ``NormalizeFeatures`` input. Returns a new dense tensor; ``x`` is not modified. O(k · F) for k noisy rows.
    """
    frac = check_float(frac_nodes, "frac_nodes", low=0.0, high=1.0)
    if model not in NOISE_MODELS:
        raise ValueError(f"model={model!r} is not valid; choose one of {list(NOISE_MODELS)}")
    x = x.to_dense() if x.layout != torch.strided else x.clone()
    n = x.shape[0]
    if model == "reference":
        if train_mask is None or val_mask is None or test_mask is None:
            raise ValueError("model='reference' perturbs validation, test and unlabelled nodes: give train_mask, "
                             "val_mask and test_mask")
        rest = ~(train_mask | val_mask | test_mask)
        parts = []
        for m in (val_mask, test_mask, rest):
            ids = m.nonzero().flatten().cpu()
            parts.append(ids[torch.randperm(ids.numel(), generator=generator)[:int(ids.numel() * frac)]])
        idx = torch.cat(parts)
        rate = 0.5
    else:
        idx = torch.randperm(n, generator=generator)[:round(frac * n)]
        rate = float((x != 0).float().mean())
    k = idx.numel()
    if k == 0:
        return x
    noise = torch.bernoulli(torch.full((k, x.shape[1]), rate), generator=generator)
    noise = noise / noise.sum(dim=1, keepdim=True).clamp_min(1.0)
    x[idx] = noise.to(x.dtype)
    return x


def perturb_edges(edge_index: Tensor, num_nodes: int, budget: float, generator: torch.Generator) -> Tensor:
    """Add ``round(budget · E/2)`` random undirected edges (both directions) not already present.

    ``budget`` is relative to the number of undirected edges ``E/2`` (DeepRobust's random attack,
    the reference's ``attack_eps``). Returns a new (2, E') int64 tensor, coalesced.
    """
    b = check_float(budget, "budget", low=0.0)
    num_nodes = check_int(num_nodes, "num_nodes", low=2)
    from torch_geometric.utils import coalesce

    n_add = round(b * edge_index.shape[1] / 2)
    if n_add == 0:
        return edge_index.clone()
    existing = set((edge_index[0] * num_nodes + edge_index[1]).tolist())
    new: list[tuple[int, int]] = []
    while len(new) < n_add:  # rejection sampling; the graphs are very sparse, so few rejections
        cand = torch.randint(0, num_nodes, (2, 2 * (n_add - len(new))), generator=generator)
        for u, v in cand.T.tolist():
            if u != v and u * num_nodes + v not in existing:
                existing.add(u * num_nodes + v)
                existing.add(v * num_nodes + u)
                new.append((u, v))
                if len(new) == n_add:
                    break
    add = torch.tensor(new, dtype=torch.long).T
    out = torch.cat([edge_index, add, add.flip(0)], dim=1)
    return coalesce(out, num_nodes=num_nodes)


def expected_calibration_error(logits: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE: Σ_b |B_b|/n · |acc(B_b) − conf(B_b)| over ``n_bins`` equal-width confidence bins (Guo et al. 2017)."""
    n_bins = check_int(n_bins, "n_bins", low=1)
    prob = torch.softmax(logits.detach().double(), dim=1)
    conf, pred = prob.max(dim=1)
    correct = (pred == y).double()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    acc = torch.bincount(bins, weights=correct, minlength=n_bins)
    cf = torch.bincount(bins, weights=conf, minlength=n_bins)
    nz = count > 0
    return float(((acc[nz] - cf[nz]).abs()).sum() / y.numel())
