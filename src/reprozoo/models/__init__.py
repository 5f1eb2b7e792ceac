"""Backbones used by more than one method. Every model takes ``norm_layer`` so a new
normalisation (e.g. compound batch norm) plugs in, and offers ``forward_features``,
``forward_head(x, pre_logits=False)`` and ``reset_classifier(num_classes)``.
"""

from reprozoo.models.cnn import SmallCNN, small_cnn
from reprozoo.models.resnet import CifarResNet, resnet8, resnet20, resnet32

__all__ = ["CifarResNet", "SmallCNN", "resnet8", "resnet20", "resnet32", "small_cnn"]
