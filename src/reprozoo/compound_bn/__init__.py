"""Compound batch normalization (Cheng et al., ACM MM 2022, arXiv:2212.01007): Gaussian-mixture BN with
dual-path learning for long-tailed classification. See README.md (the method card)."""

from reprozoo.compound_bn.compiled import compiled_soft_compound_bn
from reprozoo.compound_bn.dual_path import DualPathLoss, DualPathOutput, consistency_loss, dual_path_loss
from reprozoo.compound_bn.functional import soft_compound_bn
from reprozoo.compound_bn.layers import (
    CompoundBatchNorm1d,
    CompoundBatchNorm2d,
    compound_batch_norm,
    compound_layers,
    convert_bn_to_cbn,
    convert_sync_batchnorm,
    group_assignment,
    mixture_responsibilities,
)
from reprozoo.compound_bn.losses import LDAMLoss, LongTailLoss, NormedLinear, class_balanced_weights
from reprozoo.datasets.longtail import make_longtail, shot_accuracies, split_groups_by_frequency

__all__ = [
    "CompoundBatchNorm1d",
    "CompoundBatchNorm2d",
    "DualPathLoss",
    "DualPathOutput",
    "LDAMLoss",
    "LongTailLoss",
    "NormedLinear",
    "class_balanced_weights",
    "compiled_soft_compound_bn",
    "compound_batch_norm",
    "compound_layers",
    "consistency_loss",
    "convert_bn_to_cbn",
    "convert_sync_batchnorm",
    "dual_path_loss",
    "group_assignment",
    "make_longtail",
    "mixture_responsibilities",
    "shot_accuracies",
    "soft_compound_bn",
    "split_groups_by_frequency",
]
