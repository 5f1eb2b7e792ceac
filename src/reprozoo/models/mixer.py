"""MLP-Mixer for 32×32 inputs (Tolstikhin et al., NeurIPS 2021).

Patches → linear embedding, then ``depth`` blocks that alternate a token-mixing MLP (across
patches, per channel) and a channel-mixing MLP (per patch), each pre-normed with a residual;
global average pooling over tokens and a linear head. No convolutions beyond the patch
embedding and no attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reprozoo.models._head import LinearClassifierMixin

__all__ = ["MixerBlock", "MlpMixer", "mixer_tiny"]

NormLayer = Callable[[int], nn.Module]


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MixerBlock(nn.Module):
    """x + TokenMLP(norm(x))ᵀ, then x + ChannelMLP(norm(x)); x is (N, tokens, dim)."""

    def __init__(self, n_tokens: int, dim: int, token_hidden: int, channel_hidden: int,
                 norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.token_mlp = _mlp(n_tokens, token_hidden)
        self.norm2 = norm_layer(dim)
        self.channel_mlp = _mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MlpMixer(LinearClassifierMixin, nn.Module):
    """MLP-Mixer.

    Parameters
    ----------
    img_size, patch_size : int
        Input side and patch side (defaults 32 and 4: 64 tokens); img_size divisible by patch_size.
    num_classes, in_chans : int
    embed_dim : int
        Channel width (default 96).
    depth : int
        Number of mixer blocks (default 4).
    token_hidden, channel_hidden : int
        Hidden widths of the token- and channel-mixing MLPs (defaults 64 and 192).
    norm_layer : callable ``(dim) -> nn.Module``
        ``nn.LayerNorm`` by default.

    Shapes
    ------
    input (N, in_chans, img_size, img_size) float; output (N, num_classes) logits.
    """

    classifier_attr = "head"

    def __init__(self, img_size: int = 32, patch_size: int = 4, num_classes: int = 10, in_chans: int = 3,
                 embed_dim: int = 96, depth: int = 4, token_hidden: int = 64, channel_hidden: int = 192,
                 norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"img_size={img_size} should be divisible by patch_size={patch_size}")
        n_tokens = (img_size // patch_size) ** 2
        self.num_classes, self.num_features = num_classes, embed_dim
        self.stem = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*[MixerBlock(n_tokens, embed_dim, token_hidden, channel_hidden, norm_layer)
                                      for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, embed_dim) token-averaged features."""
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.norm(self.blocks(x)).mean(dim=1)



def mixer_tiny(num_classes: int = 10, **kwargs) -> MlpMixer:
    return MlpMixer(num_classes=num_classes, **kwargs)
