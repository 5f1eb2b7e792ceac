"""Training helpers several methods share: batched prediction, top-1 evaluation, random crop + flip.

Device-agnostic: data stay on the device they are on; no host sync inside the loops (one at the end of
:func:`top1`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["predict", "predict_logits", "top1", "random_crop_flip"]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, C) of ``x`` in eval mode, in batches of ``batch_size``; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i: i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes (N,) of ``x`` in eval mode, in batches; the model's mode is restored.

    >>> net = nn.Linear(3, 2)
    >>> predict(net, torch.zeros(5, 3)).shape
    torch.Size([5])
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i: i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in percent (the project's unit for accuracies)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("x is empty; top-1 accuracy needs at least one sample")
    correct = (predict(model, x, batch_size) == y.to(x.device)).sum()
    return 100.0 * float(correct) / x.shape[0]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of the zero-padded batch (``pad`` pixels each side) and, when ``flip``, a horizontal flip
    with probability ½, drawn per image and vectorised over the batch. ``x``: (N, C, H, W).

    Random numbers are drawn on the generator's device in the order crop rows, crop columns, flips, so a
    seeded generator gives the same batch on any device.
    """
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    out = xp.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    out = out.gather(3, cols)
    if flip:
        mask = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device)
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(3), out)
    return out
