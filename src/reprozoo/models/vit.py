"""A small Vision Transformer for 32×32 inputs (Dosovitskiy et al., ICLR 2021).

Non-overlapping p×p patches → linear embedding, a class token and learned position
embeddings, ``depth`` pre-norm blocks (multi-head self-attention, then a GELU MLP), a final
norm and a linear head on the class token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reprozoo.models._head import LinearClassifierMixin

__all__ = ["Block", "VisionTransformer", "vit_tiny", "vit_small"]

NormLayer = Callable[[int], nn.Module]


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(LinearClassifierMixin, nn.Module):
    """ViT with a class token.

    Parameters
    ----------
    img_size : int
        Input side (default 32); must be divisible by ``patch_size``.
    patch_size : int
        Side of the square patches (default 4: 64 tokens at 32×32).
    num_classes, in_chans : int
    embed_dim : int
        Token width (default 64); must be divisible by ``num_heads``.
    depth : int
        Number of blocks (default 4).
    num_heads : int
    mlp_ratio : float
        Hidden width of the MLP as a multiple of ``embed_dim``.
    norm_layer : callable ``(dim) -> nn.Module``
        ``nn.LayerNorm`` by default.

    Shapes
    ------
    input (N, in_chans, img_size, img_size) float; output (N, num_classes) logits.
    """

    classifier_attr = "head"

    def __init__(self, img_size: int = 32, patch_size: int = 4, num_classes: int = 10, in_chans: int = 3,
                 embed_dim: int = 64, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
                 norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"img_size={img_size} should be divisible by patch_size={patch_size}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} should be divisible by num_heads={num_heads}")
        self.num_classes, self.num_features = num_classes, embed_dim
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        n_tokens = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, norm_layer) for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, embed_dim) normalised class token."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]



def vit_tiny(num_classes: int = 10, **kwargs) -> VisionTransformer:
    return VisionTransformer(num_classes=num_classes, **{"embed_dim": 64, "depth": 4, "num_heads": 4, **kwargs})


def vit_small(num_classes: int = 10, **kwargs) -> VisionTransformer:
    return VisionTransformer(num_classes=num_classes, **{"embed_dim": 192, "depth": 6, "num_heads": 6, **kwargs})
