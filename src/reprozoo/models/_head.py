"""The classifier face shared by every backbone in :mod:`reprozoo.models` (timm's convention)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearClassifierMixin"]


class LinearClassifierMixin:
    """``forward = forward_head(forward_features(x))`` with a linear classifier.

    The subclass defines ``forward_features`` (N, ...) -> (N, num_features), sets ``num_features``
    and ``num_classes``, and holds its ``nn.Linear`` classifier under the attribute named by
    ``classifier_attr`` (``"fc"`` by default; ``"head"`` for the transformer-style models).
    """

    classifier_attr = "fc"

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, num_features) -> (N, num_classes) logits, or the features unchanged with ``pre_logits``."""
        return x if pre_logits else getattr(self, self.classifier_attr)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new ``nn.Linear(num_features, num_classes)``."""
        self.num_classes = num_classes
        setattr(self, self.classifier_attr, nn.Linear(self.num_features, num_classes))
