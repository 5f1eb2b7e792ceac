"""A small BN-equipped CNN for 28×28 / 32×32 inputs (MNIST, CIFAR): conv-norm-ReLU-pool blocks + linear head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reprozoo.models._head import LinearClassifierMixin

__all__ = ["SmallCNN", "small_cnn"]


class SmallCNN(LinearClassifierMixin, nn.Module):
    """``len(channels)`` blocks of 3×3 conv → norm → ReLU → 2×2 max-pool, then global average pool and a linear head.

    Parameters
    ----------
    num_classes : int
    in_chans : int
    channels : sequence of int
        Output channels of each block (default (32, 64, 128)).
    norm_layer : callable ``(num_features) -> nn.Module`` or None
        ``nn.BatchNorm2d`` by default; None for no normalisation.

    Shapes
    ------
    input (N, in_chans, H, W), H and W >= 2**len(channels); output (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, channels: Sequence[int] = (32, 64, 128),
                 norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d):
        super().__init__()
        if not channels:
            raise ValueError("channels should be a non-empty sequence of ints")
        layers: list[nn.Module] = []
        c_in = in_chans
        for c in channels:
            layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer(c))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.num_classes = num_classes
        self.fc = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))



def small_cnn(num_classes: int = 10, in_chans: int = 3, **kwargs) -> SmallCNN:
    return SmallCNN(num_classes, in_chans, **kwargs)
