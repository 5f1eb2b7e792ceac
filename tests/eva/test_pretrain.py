"""Masking, the EVA loss, the frozen teacher, MAE, layer decay, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from reprozoo.eva import BlockMaskGenerator, EVAPretrainer, MAEPretrainer, create_eva, masked_cosine_loss
from reprozoo.eva.baselines import patchify
from reprozoo.eva.train import cosine_schedule, param_groups_layer_decay, train_loop

TINY = dict(img_size=16, patch_size=4, embed_dim=8, depth=2, num_heads=2, mlp_ratio=2.0)


class PoolTeacher(nn.Module):
    """Images -> (B, (H/4)(W/4), D): 4x4 average pooling then a small frozen conv (a PatchTeacher)."""

    def __init__(self, d=5, stride=4):
        super().__init__()
        self.conv = nn.Conv2d(3, d, stride, stride=stride)
        self.bn = nn.BatchNorm2d(d)  # has running statistics: it must not move while frozen

    def forward(self, x):
        return self.bn(self.conv(x)).flatten(2).transpose(1, 2)


def student(mask_token=True):
    return create_eva(TINY, mask_token=mask_token, global_pool="token", num_classes=0)


# -- mask generator ------------------------------------------------------------------------------
@pytest.mark.parametrize("grid,num,min_block", [(8, 26, 4), (14, 75, 16), (16, 105, 16), ((6, 9), 20, 3)])
def test_block_masks_count_blocks_and_seed(grid, num, min_block):
    gen = BlockMaskGenerator(grid, num, min_block, seed=3)
    lo, hi = gen.aspect
    for _ in range(30):
        m = gen()
        assert m.sum() == num
        labels, k = ndimage.label(m)  # 4-connected regions
        assert min(np.bincount(labels.ravel())[1:]) >= min_block
        for _, _, h, w in gen.last_blocks:
            assert h * w >= min_block and lo <= h / w <= hi
    a = BlockMaskGenerator(grid, num, min_block, seed=7).batch(5)
    b = BlockMaskGenerator(grid, num, min_block, seed=7).batch(5)
    c = BlockMaskGenerator(grid, num, min_block, seed=8).batch(5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_mask_generator_bad_input():
    with pytest.raises(ValueError, match="num_masked"):
        BlockMaskGenerator(8, 64)
    with pytest.raises(ValueError, match="min_block"):
        BlockMaskGenerator(8, 10, min_block=11)
    with pytest.raises(ValueError, match="aspect"):
        BlockMaskGenerator(8, 10, 4, aspect=(0.0, 2.0))


# -- loss ------------------------------------------------------------------------------------------
def test_loss_is_one_minus_cosine_on_masked_positions():
    torch.manual_seed(0)
    p, t = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    naive = np.mean([1 - F.cosine_similarity(p[b, i], t[b, i], dim=0).item()
                     for b in range(2) for i in range(6) if mask[b, i]])
    assert float(masked_cosine_loss(p, t, mask)) == pytest.approx(naive, abs=1e-6)
    assert float(masked_cosine_loss(t, t, mask)) == pytest.approx(0.0, abs=1e-6)
    p2 = p.clone()
    p2[~mask] = torch.randn(int((~mask).sum()), 4)  # unmasked positions do not change it
    assert float(masked_cosine_loss(p2, t, mask)) == pytest.approx(float(masked_cosine_loss(p, t, mask)))
    assert float(masked_cosine_loss(3 * t, t)) == pytest.approx(0.0, abs=1e-6)  # scale-invariant


def test_pretrainer_loss_uses_teacher_targets_at_masked_positions():
    torch.manual_seed(0)
    eva = EVAPretrainer(student(), PoolTeacher(), mask_ratio=0.5, min_block=2, seed=0).eval()
    x = torch.randn(3, 3, 16, 16)
    mask = eva.draw_masks(3)
    assert mask.shape == (3, 16) and int(mask.sum()) == 3 * 8
    tokens = eva.student.forward_features(x, mask=mask)[:, 1:]
    ref = masked_cosine_loss(eva.lm_head(tokens), eva.teacher(x), mask)
    torch.testing.assert_close(eva(x, mask), ref)


def test_frozen_teacher_gets_no_gradient_and_does_not_change():
    teacher = PoolTeacher()
    eva = EVAPretrainer(student(), teacher, mask_ratio=0.4, min_block=2, seed=0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    eva.train()
    assert not teacher.training  # a parent's train() does not switch the teacher back
    opt = torch.optim.AdamW([p for p in eva.parameters() if p.requires_grad], lr=0.1)
    loss = eva(torch.randn(4, 3, 16, 16))
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert eva.student.blocks[0].attn.qkv.weight.grad is not None


def test_distillation_without_masking_uses_every_patch():
    eva = EVAPretrainer(student(False), PoolTeacher(), masking=False, min_block=2).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = masked_cosine_loss(eva.lm_head(eva.student.forward_features(x)[:, 1:]), eva.teacher(x))
    torch.testing.assert_close(eva(x), ref)


def test_mim_state_dict_is_the_official_layout():
    eva = EVAPretrainer(student(), PoolTeacher(), min_block=2)
    sd = eva.mim_state_dict()
    assert {"mask_token", "norm.weight", "lm_head.weight", "lm_head.bias"} <= set(sd)
    assert not any(k.startswith(("student.", "teacher.")) for k in sd)


def test_pretrainer_bad_input():
    with pytest.raises(ValueError, match="mask_ratio"):
        EVAPretrainer(student(), PoolTeacher(), mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        EVAPretrainer(student(), PoolTeacher(), mask_ratio=0.0)
    with pytest.raises(ValueError, match="teacher should return"):  # 2x2 grid instead of 4x4
        EVAPretrainer(student(), PoolTeacher(stride=8), min_block=2)
    with pytest.raises(ValueError, match="mask_token"):
        EVAPretrainer(student(False), PoolTeacher(), min_block=2)
    with pytest.raises(ValueError, match="global_pool"):
        EVAPretrainer(create_eva(TINY, mask_token=True), PoolTeacher(), min_block=2)
    with pytest.raises(TypeError, match="teacher"):
        EVAPretrainer(student(), lambda x: x, min_block=2)
    eva = EVAPretrainer(student(), PoolTeacher(), min_block=2)
    bad = torch.randn(8, 3, 16, 16)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images contains 1 NaN"):
        train_loop(eva, (bad,), lambda m, xb: m(xb), epochs=1, batch_size=4, lr=1e-3)


# -- MAE -------------------------------------------------------------------------------------------
def test_mae_loss_on_hidden_patches_of_normalised_pixels():
    torch.manual_seed(0)
    mae = MAEPretrainer(student(False), mask_ratio=0.75, decoder_dim=8, decoder_heads=2, seed=0)
    x = torch.randn(2, 3, 16, 16)
    loss = mae(x)
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    assert mae.student.blocks[0].attn.qkv.weight.grad is not None
    keep, restore = MAEPretrainer(student(False), seed=0).random_keep(2, torch.device("cpu"))
    assert keep.shape == (2, 4) and torch.equal(restore.argsort(1)[:, :4], keep)
    p = patchify(x, 4)
    assert p.shape == (2, 16, 48)
    torch.testing.assert_close(p[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


# -- fine-tuning helpers ------------------------------------------------------------------------
def test_layer_decay_scales():
    model = create_eva(TINY, num_classes=3)  # L = 2 blocks
    d = 0.75
    groups = param_groups_layer_decay(model, 0.05, d)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(d ** 3)
    assert by_name["cls_token"]["lr_scale"] == pytest.approx(d ** 3)
    assert by_name["blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(d ** 2)
    assert by_name["blocks.1.mlp.fc1.weight"]["lr_scale"] == pytest.approx(d ** 1)
    assert by_name["head.weight"]["lr_scale"] == pytest.approx(1.0)
    assert by_name["fc_norm.weight"]["lr_scale"] == pytest.approx(1.0)
    assert by_name["blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["pos_embed"]["weight_decay"] == 0.0
    assert by_name["blocks.0.attn.q_bias"]["weight_decay"] == 0.0
    assert by_name["blocks.0.mlp.fc1.weight"]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_cosine_schedule_endpoints():
    s = cosine_schedule(1e-3, 1e-5, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    assert len(s) == 40 and s[0] == 0.0 and s[10] == pytest.approx(1e-3) and s[-1] == pytest.approx(1e-5)


def test_train_loop_is_seeded_and_resumes(tmp_path):
    x = torch.randn(32, 3, 16, 16)

    def fit(ckpt=None, epochs=2):
        torch.manual_seed(0)
        eva = EVAPretrainer(student(), PoolTeacher(), min_block=2, seed=0)
        hist = train_loop(eva, (x,), lambda m, xb: m(xb), epochs=epochs, batch_size=8, lr=1e-3, seed=0,
                          checkpoint=ckpt, params=eva)
        return eva, hist

    a, ha = fit()
    b, hb = fit()
    assert ha == hb and len(ha) == 2
    assert hb[1] < hb[0] + 0.1
    c, hc = fit(tmp_path / "ck.pt", epochs=1)
    d, hd = fit(tmp_path / "ck.pt", epochs=2)  # resumes after epoch 1
    assert len(hd) == 2 and hd[0] == hc[0]
