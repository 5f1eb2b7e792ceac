"""EVA-01 Vision Transformer, a timm-style family file: blocks, model, checkpoint filter, configs, factories.

Fang et al., "EVA: Exploring the Limits of Masked Visual Representation Learning at Scale", CVPR 2023
(arXiv:2211.07636), Sec. 2.1: a plain BEiT-style ViT (pre-norm blocks, absolute position embedding, q and v
biases but no k bias, no relative position bias, no layer scale for EVA-g). Modules and state-dict keys are
those of timm's ``timm/models/eva.py`` (``Eva``/``EvaBlock``/``EvaAttention``), so an EVA checkpoint loaded
with timm's filter rules lands here key for key and a state dict saved here loads into timm's ``Eva``:

``cls_token``, ``pos_embed``, ``patch_embed.proj.{weight,bias}``,
``blocks.{i}.norm1.*``, ``blocks.{i}.attn.{q_bias,v_bias,qkv.weight,proj.*}``, ``blocks.{i}.norm2.*``,
``blocks.{i}.mlp.{fc1,fc2}.*``, optional ``blocks.{i}.gamma_{1,2}``, ``norm.*`` (cls pooling) or
``fc_norm.*`` (average pooling), ``head.*``; ``mask_token`` only on a model built for masked pretraining.

Cost of one forward pass: O(B · depth · (N d² + N² d)) for N = (img_size / patch_size)² + 1 tokens of width d.

Shapes: input (B, in_chans, img_size, img_size) float; ``forward_features`` -> (B, N, embed_dim) tokens;
``forward_head`` -> (B, num_classes) logits.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EvaAttention",
    "EvaBlock",
    "Eva",
    "EVA_CONFIGS",
    "checkpoint_filter_fn",
    "load_eva_checkpoint",
    "resample_abs_pos_embed",
    "resample_patch_embed",
    "create_eva",
    "eva_giant_patch14_224",
    "eva_giant_patch14_336",
    "eva_giant_patch14_560",
    "eva_tiny_patch4_32",
    "eva_small_patch4_32",
]

#: LayerNorm of EVA and timm (eps 1e-6; under autocast PyTorch computes layer norm in fp32).
LayerNorm = partial(nn.LayerNorm, eps=1e-6)
Layer = Callable[..., nn.Module]


# -- blocks ---------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth (per sample): zero a residual branch with probability ``drop_prob`` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``embed_dim`` tokens by a strided convolution (key ``proj``)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} should be divisible by patch_size={patch_size}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x should have shape (B, {self.in_chans}, {self.img_size}, {self.img_size}) "
                             f"(in_chans={self.in_chans}), got {tuple(x.shape)}")
        if tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise ValueError(f"x should be {self.img_size}x{self.img_size} images (this model's img_size), got "
                             f"{tuple(x.shape[2:])}; resize the images or build the model with img_size="
                             f"{x.shape[2]} (load_eva_checkpoint resamples the position embedding)")
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> activation -> fc2 (timm's ``Mlp`` keys)."""

    def __init__(self, dim: int, hidden: int, act_layer: Layer = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class EvaAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, learned q and v biases and a fixed zero
    k bias (BEiT/EVA; the k bias is a non-persistent buffer, so it is in no state dict).

    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels where
    the backend has them). Shapes: (B, N, dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} should be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class EvaBlock(nn.Module):
    """Pre-norm block: x + γ₁·Attn(norm1(x)), then x + γ₂·MLP(norm2(x)) (γ only with ``init_values``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: float | None = None, act_layer: Layer = nn.GELU, norm_layer: Layer = LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = EvaAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer, proj_drop)
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.drop_path1(self.attn(self.norm1(x)))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        x = x + self.drop_path1(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path2(self.gamma_2 * self.mlp(self.norm2(x)))


# -- model ----------------------------------------------------------------------------------------
class Eva(nn.Module):
    """EVA-01 ViT (timm's ``Eva`` with absolute position embedding and a class token).

    Parameters
    ----------
    img_size, patch_size, in_chans : int
        Square input side (fixed: another size raises ``ValueError``), patch side, input channels.
    num_classes : int
        Classes of the linear ``head`` (0: no head, ``forward`` returns the pooled features).
    global_pool : {'avg', 'token', ''}
        'avg' (EVA fine-tuning): mean of the patch tokens, then ``fc_norm``; 'token': the class token after
        the final ``norm``; '': no pooling (``forward_head`` returns every token).
    embed_dim, depth, num_heads : int
    mlp_ratio : float
        MLP hidden width / embed_dim (6144 / 1408 for EVA-g).
    qkv_bias : bool
        Learned q and v biases (k bias fixed at zero).
    drop_rate, attn_drop_rate, drop_path_rate : float
        Dropout before the head, attention dropout, stochastic depth (linearly increasing over blocks).
    norm_layer, act_layer : callable
        ``norm_layer(dim)`` (LayerNorm, eps 1e-6) and ``act_layer()`` (GELU).
    init_values : float or None
        Layer scale γ initial value; None (EVA-g) has no ``gamma_1``/``gamma_2``.
    use_fc_norm : bool or None
        None: ``fc_norm`` iff ``global_pool == 'avg'`` (and then no final ``norm``), as timm.
    head_init_scale : float
        The head's initial weights and bias are multiplied by it (0.001, BEiT/EVA fine-tuning).
    mask_token : bool
        Add the learned ``mask_token`` used by masked image modelling (Sec. 2.2): ``forward_features(x, mask)``
        then replaces the embeddings of masked patches by it.

    Examples
    --------
    >>> m = create_eva("eva_tiny_patch4_32", num_classes=10)
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> m.forward_features(torch.zeros(2, 3, 32, 32)).shape   # class token + 8x8 patches
    torch.Size([2, 65, 96])
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_layer: Layer = LayerNorm,
                 act_layer: Layer = nn.GELU, init_values: float | None = None, use_fc_norm: bool | None = None,
                 head_init_scale: float = 0.001, mask_token: bool = False):
        super().__init__()
        if global_pool not in ("avg", "token", ""):
            raise ValueError(f"global_pool={global_pool!r} should be 'avg', 'token' or ''")
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} should be >= 0")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        fc_norm = global_pool == "avg" if use_fc_norm is None else use_fc_norm

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear stochastic-depth rule
        self.blocks = nn.ModuleList([
            EvaBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, 0.0, attn_drop_rate, dpr[i], init_values,
                     act_layer, norm_layer) for i in range(depth)])
        self.norm = nn.Identity() if fc_norm else norm_layer(embed_dim)
        self.fc_norm = norm_layer(embed_dim) if fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_init_scale = head_init_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BEiT/EVA initialisation: truncated normal (std 0.02) for every Linear, position embedding, class
        and mask tokens; zero biases; the output projections of block i divided by sqrt(2 i) ("fix_init_weight");
        the head scaled by ``head_init_scale``."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.pos_embed, self.cls_token, self.mask_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            if isinstance(self.head, nn.Linear):
                self.head.weight.mul_(self.head_init_scale)
                self.head.bias.mul_(self.head_init_scale)

    def no_weight_decay(self) -> set[str]:
        """Parameters excluded from weight decay besides biases and norms (timm's convention)."""
        return {"pos_embed", "cls_token", "mask_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``head`` for ``num_classes`` (0: none), optionally another ``global_pool``."""
        if global_pool is not None:
            if global_pool not in ("avg", "token", ""):
                raise ValueError(f"global_pool={global_pool!r} should be 'avg', 'token' or ''")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                         keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + N, D) tokens after the blocks and ``norm``.

        ``mask`` (B, N) bool: patches whose embedding is replaced by ``mask_token`` before the position
        embedding is added (BEiT/EVA masked image modelling). ``keep`` (B, K) long: indices of the only
        patch tokens passed to the blocks, after the position embedding (MAE's encoder on visible patches,
        timm's patch dropout); the output then has 1 + K tokens.
        """
        x = self.patch_embed(x)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("mask was given but this model has no mask_token; build it with mask_token=True")
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask should have shape (B, N) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        if keep is not None:
            patches = x[:, 1:].gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (mean of patch tokens or the class token), ``fc_norm``, dropout, then ``head`` unless
        ``pre_logits``."""
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -- checkpoint filter ----------------------------------------------------------------------------
def resample_abs_pos_embed(pos_embed: torch.Tensor, new_size: tuple[int, int], num_prefix_tokens: int = 1,
                           interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """(1, P + h·w, D) -> (1, P + H·W, D): the grid part resized (bicubic, antialiased), prefix kept."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = int(math.isqrt(grid.shape[1]))
    if old * old != grid.shape[1]:
        raise ValueError(f"pos_embed holds {grid.shape[1]} patch positions, not a square grid")
    if (old, old) == tuple(new_size):
        return pos_embed
    g = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=new_size, mode=interpolation, antialias=antialias, align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, g], dim=1)


def resample_patch_embed(weight: torch.Tensor, new_size: tuple[int, int], interpolation: str = "bicubic",
                         antialias: bool = True) -> torch.Tensor:
    """Patch-embedding kernels (O, C, h, w) -> (O, C, H, W) by FlexiViT's pseudo-inverse resize (timm's rule):
    ``<resize(x), w_new> = <x, w>`` for every patch x when upsampling, the least-squares fit otherwise."""
    old_size = tuple(weight.shape[-2:])
    if old_size == tuple(new_size):
        return weight
    n_old = old_size[0] * old_size[1]
    basis = torch.eye(n_old, dtype=torch.float32).reshape(n_old, 1, *old_size)
    resized = F.interpolate(basis, size=new_size, mode=interpolation, antialias=antialias, align_corners=False)
    resize_mat = resized.reshape(n_old, -1).T  # (H·W, h·w): vec(resize(x)) = resize_mat @ vec(x)
    pinv = torch.linalg.pinv(resize_mat.T)  # (H·W, h·w)
    flat = weight.float().reshape(-1, n_old)
    return (flat @ pinv.T).reshape(*weight.shape[:2], *new_size).to(weight.dtype)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: Eva) -> dict[str, torch.Tensor]:
    """timm's ``checkpoint_filter_fn`` rules for EVA-01 checkpoints, applied to ``state_dict`` for ``model``.

    1. unwrap ``model_ema``, then ``model``, ``module``, ``state_dict`` (official checkpoint layouts);
    2. a masked-image-modelling checkpoint (it has ``mask_token``; here also one with ``lm_head``, e.g. feature
       distillation without masking): drop ``mask_token`` and ``lm_head.*``, and
       rename the pretraining head's ``norm.*`` to ``fc_norm.*`` (a better start than a fresh norm);
    3. resample ``patch_embed.proj.weight`` to the model's patch size and ``pos_embed`` to its grid;
    4. a classifier ``head.*`` whose shape differs from the model's is dropped (the model keeps its new head).
    """
    for key in ("model_ema", "model", "module", "state_dict"):
        inner = state_dict.get(key) if isinstance(state_dict, Mapping) else None
        if isinstance(inner, Mapping):
            state_dict = inner
    mim = ("mask_token" in state_dict or "lm_head.weight" in state_dict) and getattr(model, "mask_token", None) is None
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if mim and k in ("mask_token", "lm_head.weight", "lm_head.bias"):
            continue
        if mim and k in ("norm.weight", "norm.bias") and "fc_norm.weight" in own:
            k = k.replace("norm", "fc_norm")
        if k == "patch_embed.proj.weight":
            v = resample_patch_embed(v, tuple(model.patch_embed.proj.weight.shape[-2:]))
        elif k == "pos_embed" and v.shape[1] != model.pos_embed.shape[1]:
            v = resample_abs_pos_embed(v, model.patch_embed.grid_size, model.num_prefix_tokens)
        elif k.startswith("head.") and k in own and own[k].shape != v.shape:
            continue
        out[k] = v
    return out


LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


def load_eva_checkpoint(checkpoint: str | Path | Mapping[str, torch.Tensor], model: Eva) -> LoadResult:
    """Load an EVA checkpoint (a file path or a state dict) into ``model`` with :func:`checkpoint_filter_fn`.

    Strict except for the layers on top of the features: a checkpoint without a usable ``head`` (a pretraining
    checkpoint, or another number of classes) or without ``fc_norm`` (an MAE encoder) leaves the model's freshly
    initialised ones in place, and their keys are returned in ``missing_keys``. Any other missing key, any
    unexpected key, or a shape mismatch raises a ``ValueError`` that lists them. Files are read with
    ``torch.load(weights_only=True)``.
    """
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"checkpoint={str(checkpoint)!r}: no such file")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint should be a path or a state dict, got {type(checkpoint).__name__}")
    sd = checkpoint_filter_fn(checkpoint, model)
    own = model.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd)
    bad_missing = [k for k in missing if not k.startswith(("head.", "fc_norm."))]
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in sd if k in own and sd[k].shape != own[k].shape)
    if unexpected or bad_missing or shapes:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                 for name, keys in (("unexpected keys", unexpected), ("missing keys", bad_missing),
                                    ("shape mismatches", shapes)) if keys]
        raise ValueError("checkpoint does not fit the model; " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)
    return LoadResult(missing, unexpected)


# -- configs and factories ------------------------------------------------------------------------
#: Architectures by timm's names (EVA-g, Sec. 2.1 and Table 1 of the paper) and two CPU-sized ones for 32x32.
EVA_CONFIGS: dict[str, dict[str, Any]] = {
    "eva_giant_patch14_224": dict(img_size=224, patch_size=14, embed_dim=1408, depth=40, num_heads=16,
                                  mlp_ratio=6144 / 1408),
    "eva_giant_patch14_336": dict(img_size=336, patch_size=14, embed_dim=1408, depth=40, num_heads=16,
                                  mlp_ratio=6144 / 1408),
    "eva_giant_patch14_560": dict(img_size=560, patch_size=14, embed_dim=1408, depth=40, num_heads=16,
                                  mlp_ratio=6144 / 1408),
    "eva_small_patch4_32": dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0,
                                num_classes=10),
    "eva_tiny_patch4_32": dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0,
                               num_classes=10),
}


def create_eva(name: str | Mapping[str, Any], **overrides: Any) -> Eva:
    """Build an :class:`Eva` from a config name of :data:`EVA_CONFIGS` (or a dict of constructor arguments),
    with ``overrides`` applied. Build under ``torch.device('meta')`` to get the shapes without memory.

    >>> with torch.device("meta"):
    ...     g = create_eva("eva_giant_patch14_224")
    >>> round(sum(p.numel() for p in g.parameters()) / 1e9, 2)
    1.01
    """
    if isinstance(name, Mapping):
        cfg = dict(name)
    elif isinstance(name, str):
        if name not in EVA_CONFIGS:
            raise ValueError(f"unknown EVA config {name!r}; valid names: {', '.join(EVA_CONFIGS)}")
        cfg = dict(EVA_CONFIGS[name])
    else:
        raise TypeError(f"name should be a config name or a dict, got {type(name).__name__}")
    cfg.update(overrides)
    return Eva(**cfg)


def eva_giant_patch14_224(**kwargs: Any) -> Eva:
    """EVA-g/14 at 224 px (about 1.0 B parameters)."""
    return create_eva("eva_giant_patch14_224", **kwargs)


def eva_giant_patch14_336(**kwargs: Any) -> Eva:
    """EVA-g/14 at 336 px (IN-1K fine-tuning resolution)."""
    return create_eva("eva_giant_patch14_336", **kwargs)


def eva_giant_patch14_560(**kwargs: Any) -> Eva:
    """EVA-g/14 at 560 px."""
    return create_eva("eva_giant_patch14_560", **kwargs)


def eva_small_patch4_32(**kwargs: Any) -> Eva:
    """ViT-Tiny's width for 32x32 images: 6 blocks of width 192, 3 heads, 8x8 patches of 4 px (2.7 M parameters)."""
    return create_eva("eva_small_patch4_32", **kwargs)


def eva_tiny_patch4_32(**kwargs: Any) -> Eva:
    """The CPU model of the quick preset: 4 blocks of width 96, 3 heads, 8x8 patches of 4 px (0.45 M parameters)."""
    return create_eva("eva_tiny_patch4_32", **kwargs)
