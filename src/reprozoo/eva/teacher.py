"""The shipped teacher: a small CLIP-style image tower aligned with a frozen text encoder over class captions.

EVA's teacher is OpenAI CLIP ViT-L/14 (Radford et al., ICML 2021); no CLIP weights can be loaded here, so the
experiment trains a stand-in on labelled CIFAR images (shard 0). Its parts follow CLIP's:

- image tower: a CIFAR ResNet (CLIP ships ResNet towers too); its last feature map is the patch grid (8x8 for
  32 px images, one cell per 4x4 student patch);
- ``ln_post`` (LayerNorm) and ``proj`` (Linear, no bias) map every cell into the text space, so the per-patch
  features are what EVA's modified ``encode_image`` returns (all patch tokens after ``ln_post`` and ``proj``);
- text side: class-name captions ("a photo of a {class}.", several templates averaged, as CLIP's zero-shot
  classifier) embedded by a frozen text encoder, L2-normalised.

Training is CLIP's image-to-text contrastive loss with a learned temperature. Because the text tower is frozen
and every caption is a class name, the batch's captions collapse to the K class captions, so the loss is a
cross-entropy over cos(image, caption_k) / τ. The teacher therefore saw the labels of shard 0, and a student
that regresses its features partly distils those labels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.eva.vit import LayerNorm
from reprozoo.models import CifarResNet

__all__ = ["ClipStyleTeacher", "caption_embeddings", "TEMPLATES"]

#: Caption templates (a few of CLIP's CIFAR-10 prompts).
TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a low contrast photo of a {}.",
             "a photo of the small {}.", "a pixelated photo of a {}.")


def caption_embeddings(classes: tuple[str, ...] | list[str], encoder: str = "tfidf") -> tuple[np.ndarray, str]:
    """(K, D) float32 caption embeddings of ``classes`` (mean over :data:`TEMPLATES`, rows L2-normalised) and
    the name of the encoder used.

    ``encoder``: 'tfidf' or 'minilm' from the shared :mod:`reprozoo.text`; 'minilm' falls back to TF-IDF when
    its package (``reprozoo[text]``) is not installed.
    """
    from reprozoo.text import make_encoder

    if encoder not in ("tfidf", "minilm"):
        raise ValueError(f"encoder={encoder!r} should be 'tfidf' or 'minilm'")
    texts = [t.format(c) for c in classes for t in TEMPLATES]
    try:
        enc, used = make_encoder(encoder), encoder
    except ImportError:
        enc, used = make_encoder("tfidf"), "tfidf"
    emb = np.asarray(enc.fit(texts).transform(texts), dtype=np.float32)
    emb = emb.reshape(len(classes), len(TEMPLATES), -1).mean(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    return emb.astype(np.float32), used


class ClipStyleTeacher(nn.Module):
    """CLIP-style image tower whose per-patch features live in a frozen text encoder's space.

    Parameters
    ----------
    text_embeddings : tensor (K, D)
        L2-normalised caption embeddings of the K classes (:func:`caption_embeddings`); kept as a buffer.
    depth, width : int
        Of the CIFAR ResNet tower (depth 6n+2; its last map is (img / 4) x (img / 4)).

    Shapes: ``forward`` (B, 3, H, W) -> (B, (H/4)·(W/4), D) patch features; ``encode_image`` -> (B, D) unit
    vectors; ``logits`` -> (B, K).
    """

    def __init__(self, text_embeddings: torch.Tensor, depth: int = 8, width: int = 16):
        super().__init__()
        self.tower = CifarResNet(depth, num_classes=1, width=width)
        channels = self.tower.num_features
        self.ln_post = LayerNorm(channels)
        self.proj = nn.Linear(channels, text_embeddings.shape[1], bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        self.register_buffer("text", F.normalize(text_embeddings.float(), dim=1))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H/4, W/4): the tower's last stage, before its pooling."""
        t = self.tower
        return t.layer3(t.layer2(t.layer1(F.relu(t.bn1(t.conv1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.feature_map(x).flatten(2).transpose(1, 2)
        return self.proj(self.ln_post(tokens))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.ln_post(self.feature_map(x).mean((2, 3)))), dim=-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits against the class captions: exp(s) · cos(image, caption_k)."""
        return self.logit_scale.exp().clamp(max=100.0) * self.encode_image(x) @ self.text.t()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled tower features (what a linear probe of the teacher reads)."""
        return self.feature_map(x).mean((2, 3))
