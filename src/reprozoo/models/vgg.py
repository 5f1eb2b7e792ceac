"""VGG-style plain convolutional nets for 32×32 inputs (Simonyan & Zisserman, ICLR 2015).

Stacks of 3×3 conv → norm → ReLU with 2×2 max-pooling between stages, then a *flattening*
classifier (two fully connected layers with dropout), as VGG has, instead of global pooling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reprozoo.models._head import LinearClassifierMixin

__all__ = ["CifarVGG", "vgg_tiny", "vgg11"]

NormLayer = Callable[[int], nn.Module]

#: Stage widths; ``"M"`` is a 2×2 max-pool. ``vgg11`` follows configuration A of the paper.
CFGS: dict[str, tuple[int | str, ...]] = {
    "tiny": (16, "M", 32, "M", 64, 64, "M"),
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
}


class CifarVGG(LinearClassifierMixin, nn.Module):
    """VGG feature stack plus a flatten → FC → ReLU → dropout → FC classifier.

    Parameters
    ----------
    cfg : sequence of int or "M"
        Output channels of each 3×3 conv, ``"M"`` for a 2×2 max-pool.
    num_classes : int
    in_chans : int
    hidden : int
        Width of the hidden fully connected layer (default 128).
    dropout : float
        Dropout before the last layer (default 0.3).
    norm_layer : callable ``(num_features) -> nn.Module`` or None
        ``nn.BatchNorm2d`` by default; None for the original, norm-free VGG.
    img_size : int
        Input side, needed to size the flattening classifier (default 32).

    Shapes
    ------
    input (N, in_chans, img_size, img_size) float; output (N, num_classes) logits.
    """

    def __init__(self, cfg: Sequence[int | str] = CFGS["tiny"], num_classes: int = 10, in_chans: int = 3,
                 hidden: int = 128, dropout: float = 0.3, norm_layer: NormLayer | None = nn.BatchNorm2d,
                 img_size: int = 32):
        super().__init__()
        n_pool = sum(1 for c in cfg if c == "M")
        if not cfg or img_size % (2 ** n_pool) != 0:
            raise ValueError(f"cfg={tuple(cfg)} with {n_pool} pools needs img_size divisible by {2 ** n_pool}, "
                             f"got img_size={img_size}")
        layers: list[nn.Module] = []
        c_in = in_chans
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(c_in, int(c), 3, padding=1, bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer(int(c)))
            layers.append(nn.ReLU(inplace=True))
            c_in = int(c)
        self.features = nn.Sequential(*layers)
        side = img_size // (2 ** n_pool)
        self.num_features = hidden
        self.num_classes = num_classes
        self.pre_logits = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout))
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, hidden) features after the first fully connected layer."""
        return self.pre_logits(self.features(x))



def vgg_tiny(num_classes: int = 10, **kwargs) -> CifarVGG:
    return CifarVGG(CFGS["tiny"], num_classes, **kwargs)


def vgg11(num_classes: int = 10, **kwargs) -> CifarVGG:
    return CifarVGG(CFGS["vgg11"], num_classes, hidden=512, **kwargs)
