"""CIFAR-style ResNets (He et al., CVPR 2016, Sec. 4.2): 3 stages of n basic blocks,
widths (w, 2w, 4w), 6n+2 layers; ResNet-32 is n = 5, w = 16.

Shortcuts: option A of the paper (identity with zero-padded channels, stride-2 subsampling),
as in the CIFAR-LT reference code (LDAM-DRW) that long-tail papers build on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.checks import check_int
from reprozoo.models._head import LinearClassifierMixin

__all__ = ["BasicBlock", "CifarResNet", "resnet8", "resnet20", "resnet32"]

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """Two 3×3 conv-norm layers with a parameter-free (option A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(LinearClassifierMixin, nn.Module):
    """ResNet-(6n+2) for 32×32 inputs.

    Parameters
    ----------
    depth : int
        6n + 2 (8, 20, 32, 44, 56, 110).
    num_classes : int
    width : int
        Channels of the first stage (16 in the paper; 8 for the narrow variant).
    in_chans : int
        Input channels (3 for CIFAR, 1 for MNIST).
    norm_layer : callable ``(num_features) -> nn.Module``
        Normalisation after each convolution (``nn.BatchNorm2d`` by default).

    Shapes
    ------
    input (N, in_chans, H, W) float; output (N, num_classes) logits.
    """

    def __init__(self, depth: int = 32, num_classes: int = 10, width: int = 16, in_chans: int = 3,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth={depth} should be 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110)")
        check_int(width, "width", low=1)
        check_int(num_classes, "num_classes", low=1)
        n = (depth - 2) // 6
        self.depth, self.width, self.num_classes = depth, width, num_classes
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(width)
        stages, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if (j == 0 and i > 0) else 1, norm_layer))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = in_planes
        self.fc = nn.Linear(in_planes, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 4·width) pooled features."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)



def resnet8(num_classes: int = 10, **kwargs) -> CifarResNet:
    return CifarResNet(8, num_classes, **kwargs)


def resnet20(num_classes: int = 10, **kwargs) -> CifarResNet:
    return CifarResNet(20, num_classes, **kwargs)


def resnet32(num_classes: int = 10, **kwargs) -> CifarResNet:
    return CifarResNet(32, num_classes, **kwargs)
