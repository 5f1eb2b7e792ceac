"""Baselines of the EVA experiment: MAE pixel MIM (the paper's pixel-target anchor), and the recipes shared by
every arm (from-scratch training and feature distillation reuse :class:`~reprozoo.eva.EVAPretrainer` and the
fine-tuning loop; the teacher's linear probe reuses :func:`~reprozoo.eva.train.linear_probe`).

MAE (He et al., CVPR 2022, Sec. 3): 75 % of the patches are dropped uniformly at random per image; the encoder
(the same student ViT) sees the visible ones only; a light decoder of the same blocks fills the masked
positions with a shared mask token, adds its own position embedding and predicts each masked patch's pixels,
normalised by the patch's own mean and variance; the loss is the MSE on masked patches only.
"""

from __future__ import annotations

import torch
from torch import nn

from reprozoo.core.checks import check_float
from reprozoo.eva.vit import Eva, EvaBlock, LayerNorm

__all__ = ["MAEPretrainer", "patchify"]


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p·p·C) patches in the ViT's row-major token order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


class MAEPretrainer(nn.Module):
    """MAE around a student :class:`Eva` (built with a final ``norm``, e.g. ``global_pool='token'``).

    Parameters
    ----------
    student : Eva
    mask_ratio : float in (0, 1)
        Fraction of patches hidden from the encoder (MAE: 0.75).
    decoder_dim, decoder_depth, decoder_heads : int
        The decoder (MAE: 512, 8, 16 for ViT-L; tiny here).
    norm_pix_loss : bool
        Targets are per-patch normalised pixels (MAE's default for its best results).
    seed : int
        Seed of the random masks.
    """

    def __init__(self, student: Eva, mask_ratio: float = 0.75, decoder_dim: int = 96, decoder_depth: int = 1,
                 decoder_heads: int = 3, norm_pix_loss: bool = True, seed: int = 0):
        super().__init__()
        if not isinstance(student, Eva):
            raise TypeError(f"student should be an reprozoo.eva.Eva, got {type(student).__name__}")
        self.mask_ratio = check_float(mask_ratio, "mask_ratio", low=0.0, high=1.0, low_inclusive=False,
                                      high_inclusive=False)
        self.student, self.norm_pix_loss = student, norm_pix_loss
        pe = student.patch_embed
        self.patch_size, self.num_patches = pe.patch_size, pe.num_patches
        self.num_keep = max(1, int(round(self.num_patches * (1 - self.mask_ratio))))
        self.decoder_embed = nn.Linear(student.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList([EvaBlock(decoder_dim, decoder_heads, 4.0) for _ in range(decoder_depth)])
        self.decoder_norm = LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, pe.patch_size ** 2 * pe.in_chans)
        for p in (self.mask_token, self.decoder_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in (self.decoder_embed, self.decoder_pred):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        self.gen = torch.Generator().manual_seed(seed)

    def random_keep(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image random permutation (MAE's argsort of uniform noise): kept indices (B, K) and the
        inverse permutation (B, N)."""
        noise = torch.rand(batch, self.num_patches, generator=self.gen).to(device)
        shuffle = noise.argsort(dim=1)
        return shuffle[:, :self.num_keep], shuffle.argsort(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        keep, restore = self.random_keep(b, images.device)
        latent = self.student.forward_features(images, keep=keep)          # encoder on visible patches only
        x = self.decoder_embed(latent)
        fill = self.mask_token.expand(b, self.num_patches - self.num_keep, -1)
        patches = torch.cat([x[:, 1:], fill], dim=1).gather(1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed  # back in image order
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]              # (B, N, p·p·C)
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        masked = torch.ones(b, self.num_patches, device=images.device)
        masked.scatter_(1, keep, 0.0)                                       # 1 = hidden from the encoder
        loss = ((pred.float() - target.float()) ** 2).mean(-1)
        return (loss * masked).sum() / masked.sum()

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder for fine-tuning, as MAE hands it over: without its final ``norm`` (MAE's fine-tuning
        with global pooling replaces it by a new ``fc_norm``)."""
        return {k: v for k, v in self.student.state_dict().items() if not k.startswith("norm.")}
