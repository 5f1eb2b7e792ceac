"""The collapse of the mixture into plain BN (auxiliary statistics, near-collapse re-seeding), label dtypes,
the class-group split, the LR schedule, BN-aware tools and host synchronisation."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from reprozoo.compound_bn import (
    CompoundBatchNorm1d,
    CompoundBatchNorm2d,
    DualPathLoss,
    LongTailLoss,
    compound_layers,
    convert_sync_batchnorm,
    native,
    split_groups_by_frequency,
)
from reprozoo.compound_bn.experiment import Config, _lr_at, load_longtail, train_and_evaluate
from reprozoo.models import resnet8

#: the components of a trained CBN layer must lie further apart than this fraction of the channel's SD
#: (median over channels, mean over layers). Measured after 3 epochs below: about 0.1 with the defect
#: (the auxiliary path writing into the mixture), about 1 without it.
MIN_SEPARATION = 0.35


def separation(model: nn.Module) -> float:
    """Mean over CBN layers of the median over channels of |μ_1 − μ_0| / σ (σ: the mixture's channel SD)."""
    vals = []
    for m in compound_layers(model):
        pi, mu, var = m.running_pi, m.running_mean, m.running_var
        mean = (pi * mu).sum(0)
        sd = ((pi * (var + mu * mu)).sum(0) - mean * mean).clamp_min(1e-12).sqrt()
        vals.append(float(((mu[1] - mu[0]).abs() / sd).median()))
    return float(np.mean(vals))


@pytest.fixture(scope="module")
def lt_data():
    data = load_longtail("CIFAR-10-LT", 10.0, n_max=120, data_seed=0)
    return dataclasses.replace(data, x_test=data.x_test[::50], y_test=data.y_test[::50])


@pytest.mark.parametrize("aux_stats", ["separate", "none", "shared"])
def test_dual_path_training_keeps_the_components_apart(lt_data, aux_stats):
    cfg = Config.from_preset("smoke").replace(epochs=3, width=4, aux_stats=aux_stats, figures=False)
    model, _ = train_and_evaluate(cfg, lt_data, "CBN", "CE", seed=0)
    sep = separation(model)
    if aux_stats == "shared":  # the defect: both paths write the channel's Gaussian into every component
        assert sep < MIN_SEPARATION, sep
    else:
        assert sep > MIN_SEPARATION, sep


def test_auxiliary_path_writes_only_its_own_statistics():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4, 4) * 2 + 1
    g = torch.tensor([0, 1] * 6)
    for aux_stats in ("separate", "none", "shared"):
        layer = CompoundBatchNorm2d(3, 2, aux_stats=aux_stats)
        layer(torch.randn(16, 3, 4, 4))
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        layer(x, group_ids=g)
        mixture_same = all(torch.equal(layer.state_dict()[k], before[k])
                           for k in ("running_pi", "running_mean", "running_var", "num_batches_tracked"))
        assert mixture_same == (aux_stats != "shared"), aux_stats
        if aux_stats == "separate":
            assert not torch.equal(layer.running_mean_aux, before["running_mean_aux"])
            layer.eval()  # the auxiliary path reads its own statistics in eval
            ref = (x - layer.running_mean_aux[g][:, :, None, None]) / torch.sqrt(
                layer.running_var_aux[g][:, :, None, None] + layer.eps)
            torch.testing.assert_close(layer(x, group_ids=g), ref)
        else:
            assert layer.running_mean_aux is None and "running_mean_aux" not in layer.state_dict()
    with pytest.raises(ValueError, match="aux_stats"):
        CompoundBatchNorm2d(3, 2, aux_stats="both")


@pytest.mark.parametrize("tol", [0.05, 0.0])
def test_near_collapsed_state_is_repaired(tol):
    torch.manual_seed(0)
    layer = CompoundBatchNorm1d(4, 2, collapse_tol=tol)
    with torch.no_grad():  # a collapsed state: both components the channel's Gaussian, 0.01 SD apart
        layer.running_mean.copy_(torch.tensor([[0.0] * 4, [0.01] * 4]))
        layer.running_var.fill_(1.0)
        layer.running_pi.fill_(0.5)
        layer.num_batches_tracked.fill_(100)
    x = torch.randn(512, 4)
    layer(x)
    gap = (layer.running_mean[1] - layer.running_mean[0]).abs()
    if tol == 0:  # the guard is off: EM keeps the two components together
        assert (gap < 0.05).all() and int(layer.num_reinit.sum()) == 0
        return
    # re-seeded at the channel's ±0.674 SD (the quartiles of a Gaussian), weights 1/2, counted
    assert (gap > 1.0).all(), gap
    assert layer.num_reinit.tolist() == [[1] * 4, [1] * 4]
    torch.testing.assert_close(layer.running_pi, torch.full((2, 4), 0.5))
    torch.testing.assert_close(layer.running_var, x.var(0, unbiased=False).expand(2, 4) / 4, rtol=0.05, atol=0)
    layer(torch.randn(512, 4))  # separated components are left alone
    assert layer.num_reinit.tolist() == [[1] * 4, [1] * 4]


# -- labels of any integer dtype ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_labels_of_every_dtype_give_the_int64_loss(dtype):
    torch.manual_seed(0)
    counts = [100, 60, 40, 30, 20, 10, 8, 6, 4, 2]
    y = torch.arange(10).flip(0)  # a batch as long as the class count: uint8 used to be taken as a mask
    logits = torch.randn(10, 10)
    for name in ("CE", "LDAM-DRW"):
        loss = LongTailLoss(name, counts)
        torch.testing.assert_close(loss(logits, y.to(dtype)), loss(logits, y))
    model = resnet8(10, width=2, norm_layer=CompoundBatchNorm2d)
    model2 = resnet8(10, width=2, norm_layer=CompoundBatchNorm2d)
    model2.load_state_dict(model.state_dict())
    x = torch.randn(10, 3, 8, 8)
    fn = DualPathLoss(counts, 2)
    torch.testing.assert_close(fn(model2, x, y.to(dtype)).loss, fn(model, x, y).loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_labels_raise_a_type_error_naming_the_argument(dtype):
    counts = [10, 5]
    y = torch.tensor([0, 1]).to(dtype)
    with pytest.raises(TypeError, match="target should hold integer class labels"):
        LongTailLoss("CE", counts)(torch.randn(2, 2), y)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), CompoundBatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(TypeError, match="y should hold integer class labels"):
        DualPathLoss(counts, 2)(model, torch.randn(2, 4), y)


# -- the class-group split and the LR schedule ----------------------------------------------------
@pytest.mark.parametrize("group_by", ["classes", "samples"])
def test_group_by_both_ways(lt_data, group_by):
    counts = lt_data.class_counts
    groups = DualPathLoss(counts, 2, group_by=group_by).class_to_group.numpy()
    np.testing.assert_array_equal(groups, split_groups_by_frequency(counts, 2, by=group_by))
    head = counts[groups == 0].sum() / counts.sum()
    if group_by == "classes":  # 5 / 5 classes: the head group holds most samples
        assert (groups == 0).sum() == 5 and head > 0.7
    else:  # about half the samples per group: fewer head classes
        assert (groups == 0).sum() < 5 and 0.35 < head < 0.75
    cfg = Config.from_preset("smoke").replace(epochs=1, width=2, group_by=(group_by,), figures=False)
    _, acc = train_and_evaluate(cfg, lt_data, "CBN", "CE", seed=0)
    assert np.isfinite(acc["top1"])


def test_lr_schedule_follows_the_ldam_drw_recipe():
    cfg = Config.from_preset("full")
    assert (cfg.epochs, cfg.warmup_epochs, cfg.lr) == (200, 5, 0.1)
    assert _lr_at(cfg, 100) == pytest.approx(0.1)
    assert _lr_at(cfg, 170) == pytest.approx(0.1 * 0.01)  # ×0.01 after epoch 160
    assert _lr_at(cfg, 190) == pytest.approx(0.1 * 1e-4)  # ×0.0001 after epoch 180
    quick = Config.from_preset("quick")  # the same recipe at 60 epochs: ×0.01 at 48, ×0.0001 at 54
    assert _lr_at(quick, 0.85 * quick.epochs) == pytest.approx(quick.lr * 0.01)
    assert _lr_at(quick, 0.95 * quick.epochs) == pytest.approx(quick.lr * 1e-4)


# -- BN-aware tools, host synchronisation ----------------------------------------------------------
def test_bn_aware_tools_treat_the_layer_as_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), CompoundBatchNorm2d(4))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 2  # isinstance checks (BN freezing, no-weight-decay rules) see the CBN layer
    model.train()
    for m in bns:  # the usual BN freezing
        m.eval()
        m.weight.requires_grad_(False)
    before = model[3].running_mean.clone()
    model(torch.randn(2, 3, 8, 8))
    torch.testing.assert_close(model[3].running_mean, before)
    model[3].reset_running_stats()
    assert (model[3].running_pi == 0.5).all()
    converted = convert_sync_batchnorm(model)
    assert type(converted[1]) is nn.SyncBatchNorm and type(converted[3]) is CompoundBatchNorm2d


def test_forward_has_no_host_synchronisation():
    """On the meta device any read-back (bool, item, float of a tensor) raises: every path must run."""
    for k in (1, 2, 3):
        layer = CompoundBatchNorm2d(4, k).to("meta")
        x = torch.empty(8, 4, 5, 5, device="meta", requires_grad=True)
        layer(x).sum().backward()
        layer(x, group_ids=torch.zeros(8, dtype=torch.long, device="meta"))
        layer.eval()
        with torch.no_grad():
            layer(x)
        layer(x)


# -- a component absent from a whole batch (the CBN+LDAM-DRW divergence of the quick rerun) -------------
@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_component_absent_from_the_batch_gives_finite_gradients(backend, dtype):
    """Channel 1's component 0 sits 6 (float64: 30) SDs away with a tiny variance, so r_0 underflows to exactly 0 at
    every value of the batch (n_0 = 0): the layer is then plain BN on that channel, in its output and in
    its gradients. The hand-derived backward used to divide by n_0 (s_0 / n_0 = inf, times zero sums:
    NaN), which diverged CBN+LDAM-DRW (group_by="samples", seed 2) in the quick preset's third epoch."""
    if backend == "native" and (dtype != torch.float32 or not native.available()):
        pytest.skip("the C kernel takes float32 only")
    far = -6.0 if dtype == torch.float32 else -30.0  # r_0 underflows to 0 (a sigmoid saturated at 1)
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(2, 2, backend=backend, collapse_tol=0.0).to(dtype)
    with torch.no_grad():
        layer.running_pi.fill_(0.5)
        layer.running_mean.copy_(torch.tensor([[0.0, far], [0.3, 0.0]]))
        layer.running_var.copy_(torch.tensor([[1.0, 0.008], [1.2, 1.0]]))
        layer.weight.copy_(torch.tensor([1.3, 0.8]))
        layer.bias.copy_(torch.tensor([0.1, -0.2]))
    x = torch.randn(8, 2, 6, 6, dtype=dtype, requires_grad=True)
    g = torch.randn(8, 2, 6, 6, dtype=dtype)
    assert float(layer.responsibilities(x.detach())[0, :, 1].max()) == 0.0  # the set-up: n_0 = 0 exactly
    y = layer.train()(x)
    (y * g).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    # channel 1 is BN's: output and input gradient (float32 kernel: rounding of its float32 sums)
    xb = x.detach()[:, 1:].clone().requires_grad_()
    yb = torch.nn.functional.batch_norm(xb, None, None, layer.weight.detach()[1:], layer.bias.detach()[1:], True)
    (yb * g[:, 1:]).sum().backward()
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(y.detach()[:, 1:], yb.detach(), **tol)
    torch.testing.assert_close(x.grad[:, 1:], xb.grad, **tol)
