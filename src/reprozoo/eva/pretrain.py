"""EVA pretraining: masked prediction of a frozen image-text aligned teacher's patch features.

Fang et al., CVPR 2023 (arXiv:2211.07636), Sec. 2.2, in the order of one step:

1. draw a BEiT block mask M over the patch grid (40 % of the patches, :class:`BlockMaskGenerator`);
2. target t = teacher(x): the frozen teacher's per-patch features, (B, N, D) (CLIP ViT-L/14 patch tokens
   after ``ln_post`` and the projection in the paper; any :class:`PatchTeacher` here);
3. student tokens h = ViT(x with the embeddings of masked patches replaced by ``mask_token``);
4. prediction p_i = Linear(LayerNorm(h_i)): the student's final ``norm``, then ``lm_head`` to width D;
5. loss L = 1 − mean_{i ∈ M} cos(p_i, t_i) (the paper's negative cosine similarity, shifted by 1 so a
   perfect prediction reads 0); the teacher gets no gradient.

With ``masking=False`` the same module is feature distillation without masking (the loss over every patch,
no mask token): the baseline that isolates what masking adds.

Cost of one step: one teacher forward (no gradient) + one student forward/backward; the head runs on all N
tokens and the loss weights the masked ones, so nothing syncs with the host.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.checks import check_float
from reprozoo.eva.masking import BlockMaskGenerator
from reprozoo.eva.vit import Eva

__all__ = ["PatchTeacher", "EVAPretrainer", "masked_cosine_loss"]


@runtime_checkable
class PatchTeacher(Protocol):
    """What EVA needs of a teacher: images (B, C, H, W) -> per-patch features (B, N, D), N = the student's
    patch count. A CLIP vision tower returning its patch tokens after ``ln_post`` and ``proj`` fits as is."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def masked_cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 − mean over masked positions of cos(pred_i, target_i) (Sec. 2.2).

    ``pred``, ``target``: (B, N, D); ``mask``: (B, N) bool, None for every position. Computed in fp32.

    >>> t = torch.randn(2, 4, 3)
    >>> round(float(masked_cosine_loss(t, t)), 6)
    0.0
    """
    cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)  # (B, N)
    if mask is None:
        return 1.0 - cos.mean()
    w = mask.to(cos.dtype)
    return 1.0 - (cos * w).sum() / w.sum().clamp_min(1.0)


class EVAPretrainer(nn.Module):
    """The EVA masked-feature-modelling objective around a student ViT and a frozen teacher.

    Parameters
    ----------
    student : Eva
        Built with ``mask_token=True`` (unless ``masking=False``) and a final ``norm`` (``global_pool='token'``
        or ``''``), e.g. ``create_eva("eva_tiny_patch4_32", mask_token=True, global_pool="token", num_classes=0)``.
    teacher : nn.Module meeting :class:`PatchTeacher`
        Frozen here: gradients off, kept in eval mode (``train()`` on this module does not switch it back).
    mask_ratio : float in (0, 1)
        Fraction of patches masked (EVA: 105 / 256 ≈ 0.41).
    min_block : int
        Fewest patches in a mask block (EVA: 16 on 16x16; 4 suits 8x8).
    masking : bool
        False: feature distillation without masking (baseline).
    seed : int
        Seed of the mask generator.

    Examples
    --------
    >>> from reprozoo.eva.vit import create_eva
    >>> student = create_eva("eva_tiny_patch4_32", mask_token=True, global_pool="token", num_classes=0)
    >>> class Teacher(nn.Module):   # any module images -> (B, 64, D)
    ...     def forward(self, x):
    ...         return nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)
    >>> eva = EVAPretrainer(student, Teacher(), mask_ratio=0.4, min_block=4)
    >>> loss = eva(torch.rand(2, 3, 32, 32))
    >>> loss.backward()
    """

    def __init__(self, student: Eva, teacher: nn.Module, mask_ratio: float = 0.4, min_block: int = 16,
                 masking: bool = True, seed: int = 0):
        super().__init__()
        if not isinstance(student, Eva):
            raise TypeError(f"student should be an reprozoo.eva.Eva, got {type(student).__name__}")
        if not isinstance(teacher, nn.Module) or not isinstance(teacher, PatchTeacher):
            raise TypeError(f"teacher should be an nn.Module mapping images to (B, N, D), got {type(teacher).__name__}")
        if masking and student.mask_token is None:
            raise ValueError("student has no mask_token; build it with create_eva(..., mask_token=True)")
        if isinstance(student.norm, nn.Identity):
            raise ValueError("student has no final norm (global_pool='avg' puts it in fc_norm); build it with "
                             "global_pool='token' for pretraining")
        self.mask_ratio = check_float(mask_ratio, "mask_ratio", low=0.0, high=1.0, low_inclusive=False,
                                      high_inclusive=False)
        self.masking = bool(masking)
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        pe = student.patch_embed
        self.num_patches = pe.num_patches
        with torch.no_grad():  # the teacher's width, and a check that its grid is the student's
            param = next(teacher.parameters(), None)
            probe = torch.zeros(1, pe.in_chans, pe.img_size, pe.img_size,
                                device=param.device if param is not None else None)
            out = teacher(probe)
        if out.ndim != 3 or out.shape[1] != self.num_patches:
            raise ValueError(f"teacher should return (B, N={self.num_patches}, D) patch features for the student's "
                             f"{pe.grid_size[0]}x{pe.grid_size[1]} grid, got shape {tuple(out.shape)}")
        self.teacher_dim = int(out.shape[2])
        self.lm_head = nn.Linear(student.embed_dim, self.teacher_dim)  # Sec. 2.2: LayerNorm -> Linear
        nn.init.trunc_normal_(self.lm_head.weight, std=0.02)
        nn.init.zeros_(self.lm_head.bias)
        num_masked = max(1, int(round(self.mask_ratio * self.num_patches)))
        self.masks = BlockMaskGenerator(pe.grid_size, min(num_masked, self.num_patches - 1),
                                        min(min_block, num_masked), seed=seed)

    def train(self, mode: bool = True) -> EVAPretrainer:
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout / batch-norm updates in the teacher, ever
        return self

    def draw_masks(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(batch, N) bool block masks from the seeded generator."""
        return torch.from_numpy(self.masks.batch(batch)).to(device)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one batch (scalar). ``mask`` (B, N) bool: drawn here when None (and masking is on)."""
        if self.masking and mask is None:
            mask = self.draw_masks(images.shape[0], images.device)                    # step 1
        with torch.no_grad():
            target = self.teacher(images)                                           # step 2
        tokens = self.student.forward_features(images, mask=mask if self.masking else None)  # step 3
        pred = self.lm_head(tokens[:, self.student.num_prefix_tokens:])             # step 4
        return masked_cosine_loss(pred, target, mask if self.masking else None)     # step 5

    @torch.no_grad()
    def patch_cosine(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Mean cosine between the student's unmasked predictions and the teacher's features, per image (B,)."""
        was = self.training
        self.eval()
        try:
            out = []
            for i in range(0, images.shape[0], batch_size):
                xb = images[i:i + batch_size]
                pred = self.lm_head(self.student.forward_features(xb)[:, self.student.num_prefix_tokens:])
                out.append(F.cosine_similarity(pred.float(), self.teacher(xb).float(), dim=-1).mean(1))
            return torch.cat(out)
        finally:
            self.train(was)

    def mim_state_dict(self) -> dict[str, torch.Tensor]:
        """The student in the official EVA pretraining-checkpoint layout: its keys plus ``mask_token``,
        ``norm.*`` and ``lm_head.*`` (what :func:`load_eva_checkpoint` filters for fine-tuning)."""
        sd = dict(self.student.state_dict())
        sd.update({f"lm_head.{k}": v for k, v in self.lm_head.state_dict().items()})
        return sd
