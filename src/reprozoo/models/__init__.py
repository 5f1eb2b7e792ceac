"""Backbones used by more than one method. Every model takes ``norm_layer`` so a new
normalisation (e.g. compound batch norm) plugs in, and offers ``forward_features``,
``forward_head(x, pre_logits=False)`` and ``reset_classifier(num_classes)``.
"""

from reprozoo.models.cnn import SmallCNN, small_cnn
from reprozoo.models.resnet import CifarResNet, resnet8, resnet20, resnet32

__all__ = ["CifarResNet", "SmallCNN", "resnet8", "resnet20", "resnet32", "small_cnn"]

# Added for multianda's model zoo (VGG, ViT, MLP-Mixer families).
from reprozoo.models.mixer import MlpMixer, mixer_tiny  # noqa: E402
from reprozoo.models.vgg import CifarVGG, vgg11, vgg_tiny  # noqa: E402
from reprozoo.models.vit import VisionTransformer, vit_small, vit_tiny  # noqa: E402

__all__ += ["CifarVGG", "MlpMixer", "VisionTransformer", "mixer_tiny", "vgg11", "vgg_tiny", "vit_small", "vit_tiny"]
