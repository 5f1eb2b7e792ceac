"""Backbones used by more than one method. Every model takes ``norm_layer`` where it has norms, so a
new normalisation (e.g. compound batch norm) plugs in, and offers ``forward_features``,
``forward_head(x, pre_logits=False)`` and ``reset_classifier(num_classes)``.
"""

from reprozoo.models.cnn import SmallCNN, small_cnn
from reprozoo.models.mixer import MlpMixer, mixer_tiny
from reprozoo.models.resnet import CifarResNet, resnet8, resnet20, resnet32
from reprozoo.models.vgg import CifarVGG, vgg11, vgg_tiny
from reprozoo.models.vit import VisionTransformer, vit_small, vit_tiny

__all__ = [
    "CifarResNet",
    "CifarVGG",
    "MlpMixer",
    "SmallCNN",
    "VisionTransformer",
    "mixer_tiny",
    "resnet8",
    "resnet20",
    "resnet32",
    "small_cnn",
    "vgg11",
    "vgg_tiny",
    "vit_small",
    "vit_tiny",
]
