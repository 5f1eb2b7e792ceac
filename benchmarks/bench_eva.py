"""Benchmark of the EVA ViT and EVA pretraining, with baselines measured in the same run (ratios).

1. Forward + backward images/s of our :class:`~reprozoo.eva.Eva` against a plain PyTorch ViT of the same shape
   (patch conv, class token, position embedding, ``nn.TransformerEncoder`` of pre-norm
   ``nn.TransformerEncoderLayer``s with GELU, final LayerNorm, mean pooling and a linear head), at two sizes:
   the quick preset's ``eva_tiny_patch4_32`` and ``eva_small_patch4_32`` (ViT-Tiny width), batch 128 at 32 px.
   Ratio = ours / plain (goal >= 1.0).
2. EVA pretraining images/s (teacher forward + student forward/backward) against the same step without the
   teacher (feature distillation's student step with a fixed random target): the teacher's share of a step.

Both models are timed in turn within each repeat (best of the repeats), so load from other jobs affects both
alike; CPU seconds of the process are reported beside wall seconds.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eva.py [--threads 1] [--repeats 5] [--batch 128]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.eva import ClipStyleTeacher, EVAPretrainer, create_eva, masked_cosine_loss


class PlainViT(nn.Module):
    """The same ViT shape built from ``nn.TransformerEncoderLayer`` (PyTorch's fused fast path in eval)."""

    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, num_classes=10, **_):
        super().__init__()
        self.patch = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        n = (img_size // patch_size) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, int(embed_dim * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True, layer_norm_eps=1e-6)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x)[:, 1:].mean(1)))


def _step(model, opt, x, y):
    def run():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def _bench(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()  # warm-up
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            dc, dw = time.process_time() - c, time.perf_counter() - w
            best[k] = (min(best[k][0], dc), min(best[k][1], dw))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b = a.batch
    x, y = torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,))
    print(f"threads={a.threads}, batch={b}, best of {a.repeats} (CPU seconds and wall seconds of one step)")
    print("\n1. forward+backward+AdamW step, images/s")
    print(f"{'model':<22}{'ours cpu':>10}{'plain cpu':>11}{'ratio':>8}{'ours wall':>11}{'plain wall':>12}{'ratio':>8}")
    from reprozoo.eva.vit import EVA_CONFIGS

    for name in ("eva_tiny_patch4_32", "eva_small_patch4_32"):
        ours = create_eva(name)
        plain = PlainViT(**EVA_CONFIGS[name])
        fns = {m: _step(net, torch.optim.AdamW(net.parameters()), x, y) for m, net in (("ours", ours),
                                                                                      ("plain", plain))}
        t = _bench(fns, a.repeats)
        oc, pc, ow, pw = b / t["ours"][0], b / t["plain"][0], b / t["ours"][1], b / t["plain"][1]
        print(f"{name:<22}{oc:>10.0f}{pc:>11.0f}{oc / pc:>8.2f}{ow:>11.0f}{pw:>12.0f}{ow / pw:>8.2f}")

    print("\n2. EVA pretraining step (quick preset model and teacher), images/s")
    teacher = ClipStyleTeacher(F.normalize(torch.randn(10, 16), dim=1))
    student = create_eva("eva_tiny_patch4_32", mask_token=True, global_pool="token", num_classes=0)
    eva = EVAPretrainer(student, teacher, mask_ratio=0.4, min_block=4).train()
    opt = torch.optim.AdamW([q for q in eva.parameters() if q.requires_grad])
    target = torch.randn(b, 64, 16)
    mask = eva.draw_masks(b)

    def with_teacher():
        loss = eva(x, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def without_teacher():
        tokens = eva.student.forward_features(x, mask=mask)[:, 1:]
        loss = masked_cosine_loss(eva.lm_head(tokens), target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def masks_only():
        eva.draw_masks(b)

    t = _bench({"with": with_teacher, "without": without_teacher, "masks": masks_only}, a.repeats)
    w, wo, mk = b / t["with"][0], b / t["without"][0], b / t["masks"][0]
    print(f"with teacher {w:.0f}, without teacher {wo:.0f} (CPU img/s): ratio {w / wo:.2f}; "
          f"block-mask generation alone {mk:.0f} masks/s")


if __name__ == "__main__":
    main()
