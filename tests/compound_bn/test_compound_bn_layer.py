"""Compound BN layer: BN equivalence at K = 1, EM recovery, responsibilities, gradients, buffers, bad input."""

import io

import pytest
import torch
from torch import nn

from reprozoo.compound_bn import (
    CompoundBatchNorm1d,
    CompoundBatchNorm2d,
    compound_batch_norm,
    convert_bn_to_cbn,
    group_assignment,
    mixture_responsibilities,
)
from reprozoo.compound_bn.functional import soft_compound_bn
from reprozoo.models import resnet8

D = torch.float64


def _pair(bn_cls, cbn_cls, c, **kw):
    bn = bn_cls(c, **kw).to(D)
    cbn = cbn_cls(c, 1, **kw).to(D)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        cbn.weight.copy_(bn.weight)
        cbn.bias.copy_(bn.bias)
    return bn, cbn


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kind", ["2d", "1d", "1d3"])
def test_k1_equals_batchnorm_train_and_eval(kind, momentum):
    torch.manual_seed(0)
    c = 5
    bn_cls, cbn_cls, shape = {"2d": (nn.BatchNorm2d, CompoundBatchNorm2d, (6, c, 3, 4)),
                              "1d": (nn.BatchNorm1d, CompoundBatchNorm1d, (7, c)),
                              "1d3": (nn.BatchNorm1d, CompoundBatchNorm1d, (6, c, 5))}[kind]
    bn, cbn = _pair(bn_cls, cbn_cls, c, momentum=momentum)
    for _ in range(4):
        x = torch.randn(shape, dtype=D) * 3 + 1
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = bn(x1), cbn(x2)
        g = torch.randn_like(y1)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        torch.testing.assert_close(y2, y1)
        torch.testing.assert_close(x2.grad, x1.grad)
        torch.testing.assert_close(cbn.weight.grad, bn.weight.grad)
        torch.testing.assert_close(cbn.bias.grad, bn.bias.grad)
        torch.testing.assert_close(cbn.running_mean[0], bn.running_mean)
        torch.testing.assert_close(cbn.running_var[0], bn.running_var)
        assert int(cbn.num_batches_tracked) == int(bn.num_batches_tracked)
    bn.eval()
    cbn.eval()
    x = torch.randn(shape, dtype=D)
    torch.testing.assert_close(cbn(x), bn(x))


def test_k1_per_component_affine_equals_batchnorm():
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3).to(D)
    cbn = CompoundBatchNorm2d(3, 1, per_component_affine=True).to(D)
    x = torch.randn(4, 3, 5, 5, dtype=D)
    torch.testing.assert_close(cbn(x), bn(x))
    torch.testing.assert_close(cbn.running_var[0], bn.running_var)


def test_em_recovers_two_gaussians():
    torch.manual_seed(0)
    layer = CompoundBatchNorm1d(1, 2).to(D)
    for _ in range(150):
        comp = torch.rand(4096) < 0.3
        x = torch.where(comp, torch.randn(4096) * 0.5 - 2.0, torch.randn(4096) * 1.0 + 3.0).to(D)
        layer(x[:, None])
    order = layer.running_mean[:, 0].argsort()
    mu, var, pi = (t[order, 0] for t in (layer.running_mean, layer.running_var, layer.running_pi))
    torch.testing.assert_close(mu, torch.tensor([-2.0, 3.0], dtype=D), atol=0.08, rtol=0)
    torch.testing.assert_close(var, torch.tensor([0.25, 1.0], dtype=D), atol=0, rtol=0.12)
    torch.testing.assert_close(pi, torch.tensor([0.3, 0.7], dtype=D), atol=0.03, rtol=0)
    assert layer.num_reinit[:, 0].tolist() == [1, 1]  # only the first batch's seeding of the identical start


def test_momentum_follows_formula():
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(3, 2, momentum=0.25).to(D)
    layer(torch.randn(8, 3, 4, 4, dtype=D))  # seeds the mixture from the first batch
    pi0, mu0, var0 = (t.clone() for t in (layer.running_pi, layer.running_mean, layer.running_var))
    x = torch.randn(8, 3, 4, 4, dtype=D) * 2 + 0.5
    _, nk, mu_hat, var_hat = compound_batch_norm(x.reshape(8, 3, -1), pi0, mu0, var0, layer.eps)
    layer(x)
    m = 0.25
    torch.testing.assert_close(layer.running_pi, (1 - m) * pi0 + m * nk / (8 * 16))
    torch.testing.assert_close(layer.running_mean, (1 - m) * mu0 + m * mu_hat)
    torch.testing.assert_close(layer.running_var, (1 - m) * var0 + m * var_hat * nk / (nk - 1))
    torch.testing.assert_close(layer.running_pi.sum(0), torch.ones(3, dtype=D))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_responsibilities_sum_to_one_and_finite(dtype):
    x = torch.tensor([-1e4, -60.0, -1.0, 0.0, 1.0, 60.0, 1e4]).to(dtype)
    x = x.reshape(1, 1, -1).expand(2, 3, -1).contiguous()
    pi = torch.tensor([[0.2] * 3, [0.8] * 3])
    mean = torch.tensor([[-1.0] * 3, [2.0] * 3])
    var = torch.tensor([[0.01] * 3, [4.0] * 3])
    r = mixture_responsibilities(x, pi, mean, var)
    assert r.dtype == torch.float32
    assert torch.isfinite(r).all()
    torch.testing.assert_close(r.sum(0), torch.ones_like(r[0]))
    layer = CompoundBatchNorm1d(3, 2)
    layer.train()
    out = layer(x)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    layer.eval()
    out = layer(x)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    rr = layer.responsibilities(x)
    torch.testing.assert_close(rr.sum(0), torch.ones_like(rr[0]))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("detach", [False, True])
def test_fused_function_matches_autograd_reference(k, detach):
    torch.manual_seed(k)
    x = (torch.randn(4, 3, 6, dtype=D) * 2 + 0.5).requires_grad_()
    pi = torch.softmax(torch.randn(k, 3, dtype=D), 0)
    mu, var = torch.randn(k, 3, dtype=D), torch.rand(k, 3, dtype=D) + 0.5
    y1, n1, m1, v1 = soft_compound_bn(x, pi, mu, var, 1e-5, detach)
    y2, n2, m2, v2 = compound_batch_norm(x, pi, mu, var, 1e-5, detach_responsibilities=detach)
    g = torch.randn_like(y1)
    gx1, = torch.autograd.grad((y1 * g).sum(), x)
    gx2, = torch.autograd.grad((y2 * g).sum(), x)
    for a, b in ((y1, y2), (gx1, gx2), (n1, n2), (m1, m2), (v1, v2)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k", [2, 3])
def test_gradcheck_float64(k):
    torch.manual_seed(0)
    x = (torch.randn(3, 2, 4, dtype=D) * 1.5).requires_grad_()
    pi = torch.softmax(torch.randn(k, 2, dtype=D), 0)
    mu, var = torch.randn(k, 2, dtype=D), torch.rand(k, 2, dtype=D) + 0.5
    assert torch.autograd.gradcheck(lambda t: soft_compound_bn(t, pi, mu, var, 1e-5)[0], (x,))
    # (detached responsibilities give a surrogate gradient that finite differences do not see; it is checked
    # against the autograd reference in test_fused_function_matches_autograd_reference)
    layer = CompoundBatchNorm2d(2, k, per_component_affine=True).to(D)
    layer.train()
    x4 = x.detach().reshape(3, 2, 2, 2).requires_grad_()
    layer(x4.detach())  # seed the mixture

    def f(t):
        before = [b.clone() for b in layer.buffers()]
        out = layer(t)
        for b, v in zip(layer.buffers(), before, strict=True):  # keep the buffers fixed across evaluations
            b.copy_(v)
        return out

    assert torch.autograd.gradcheck(f, (x4,))
    layer.eval()
    assert torch.autograd.gradcheck(layer, (x4,))


def test_hard_path_uses_one_component_and_updates_only_it():
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(3, 3, affine=False).to(D)
    layer(torch.randn(16, 3, 4, 4, dtype=D))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(10, 3, 4, 4, dtype=D) * 2 + 1
    g = torch.tensor([0, 2, 0, 2, 2, 0, 0, 2, 0, 2])
    y = layer(x, group_ids=g)
    for comp in (0, 2):  # each sample normalised by its group's batch statistics only
        xs = x[g == comp]
        ref = (xs - xs.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
            xs.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + layer.eps)
        torch.testing.assert_close(y[g == comp], ref)
    # the auxiliary statistics of the groups present move; the mixture's are not touched
    for key in ("running_pi", "running_mean", "running_var"):
        torch.testing.assert_close(layer.state_dict()[key], before[key])
    torch.testing.assert_close(layer.running_mean_aux[1], before["running_mean_aux"][1])
    assert not torch.allclose(layer.running_mean_aux[0], before["running_mean_aux"][0])
    assert not torch.allclose(layer.running_mean_aux[2], before["running_mean_aux"][2])
    layer.eval()
    y = layer(x, group_ids=g)
    rm, rv = layer.running_mean_aux, layer.running_var_aux
    ref = (x - rm[g][:, :, None, None]) / torch.sqrt(rv[g][:, :, None, None] + layer.eps)
    torch.testing.assert_close(y, ref)
    with group_assignment(layer, g):
        torch.testing.assert_close(layer(x), ref)
    assert layer.group_ids is None


def test_collapse_guard_reinitialises_without_nan():
    layer = CompoundBatchNorm1d(2, 2, min_weight=0.01).to(D)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([[0.0, 0.0], [1e3, 1e3]], dtype=D))  # component 1 far away
        layer.running_var.fill_(1.0)
        layer.running_pi.fill_(0.5)
        layer.num_batches_tracked.fill_(10)
    x = torch.randn(64, 2, dtype=D)
    y = layer(x)
    assert torch.isfinite(y).all()
    assert layer.num_reinit[1].tolist() == [1, 1] and layer.num_reinit[0].tolist() == [0, 0]
    assert torch.isfinite(layer.running_mean).all() and (layer.running_var > 0).all()
    assert layer.running_mean[1].abs().max() < 1.0  # moved next to the data
    torch.testing.assert_close(layer.running_pi.sum(0), torch.ones(2, dtype=D))
    y.sum().backward()  # the graph is intact
    assert torch.isfinite(layer.weight.grad).all()


def test_state_dict_round_trip_and_repr():
    torch.manual_seed(0)
    a = CompoundBatchNorm2d(4, 2, per_component_affine=True)
    for _ in range(3):
        a(torch.randn(8, 4, 3, 3))
    keys = set(a.state_dict())
    assert keys == {"weight", "bias", "running_pi", "running_mean", "running_var", "num_batches_tracked",
                    "running_mean_aux", "running_var_aux"}
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = CompoundBatchNorm2d(4, 2, per_component_affine=True)
    b.load_state_dict(torch.load(buf))
    a.eval()
    b.eval()
    x = torch.randn(5, 4, 3, 3)
    torch.testing.assert_close(a(x), b(x))
    assert repr(CompoundBatchNorm2d(64, 2)) == "CompoundBatchNorm2d(64, K=2, eps=1e-05, momentum=0.1)"
    assert CompoundBatchNorm2d(8, n_components=3).num_components == 3
    assert a.running_mean.shape == (2, 4) and a.weight.shape == (2, 4)


def test_convert_keeps_structure_and_eval_outputs():
    torch.manual_seed(0)
    model = resnet8(10, width=4)
    model.train()
    for _ in range(2):
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    names = [n for n, _ in model.named_modules()]
    converted = convert_bn_to_cbn(model, 2)
    assert [n for n, _ in converted.named_modules()] == names
    bns = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    cbns = [m for m in converted.modules() if isinstance(m, CompoundBatchNorm2d)]
    assert not bns and len(cbns) == 7
    torch.testing.assert_close(converted(x), ref)  # identical components: same function as the BN model
    root = convert_bn_to_cbn(nn.BatchNorm1d(3), 2)
    assert isinstance(root, CompoundBatchNorm1d)
    converted.train()
    converted(torch.randn(8, 3, 32, 32))  # re-seeded, trainable
    assert all(not torch.equal(m.running_mean[0], m.running_mean[1]) for m in cbns)


def test_eval_without_running_stats_uses_batch():
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(3, 2, track_running_stats=False).eval()
    y = layer(torch.randn(8, 3, 4, 4) * 5 + 2)
    assert torch.isfinite(y).all()
    assert abs(float(y.detach().mean())) < 0.3


@pytest.mark.parametrize("layer_cls,shape,match", [
    (CompoundBatchNorm2d, (4, 3, 5), "4-D"),
    (CompoundBatchNorm1d, (4, 3, 5, 5), "2 or 3-D"),
    (CompoundBatchNorm2d, (4, 5, 5, 5), "num_features=3"),
    (CompoundBatchNorm2d, (0, 3, 5, 5), "empty"),
])
def test_bad_input_shapes(layer_cls, shape, match):
    with pytest.raises(ValueError, match=match):
        layer_cls(3, 2)(torch.randn(shape))


def test_bad_input_values_and_args():
    layer = CompoundBatchNorm2d(3, 2)
    x = torch.randn(4, 3, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x)
    with pytest.raises(ValueError, match="NaN"):
        CompoundBatchNorm2d(3, 1)(x)
    with pytest.raises(ValueError, match="NaN"):
        layer.eval()(x)
    with pytest.raises(ValueError, match="num_components=0"):
        CompoundBatchNorm2d(3, 0)
    with pytest.raises(TypeError, match="num_components"):
        CompoundBatchNorm2d(3, 2.0)
    with pytest.raises(ValueError, match="momentum"):
        CompoundBatchNorm2d(3, 2, momentum=1.5)
    with pytest.raises(ValueError, match="min_weight"):
        CompoundBatchNorm2d(3, 2, min_weight=0.6)
    with pytest.raises(TypeError, match="integer"):
        CompoundBatchNorm2d(3, 2)(torch.randn(4, 3, 2, 2), group_ids=torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        CompoundBatchNorm2d(3, 2)(torch.randn(4, 3, 2, 2), group_ids=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="shape"):
        CompoundBatchNorm2d(3, 2)(torch.randn(4, 3, 2, 2), group_ids=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="floating"):
        CompoundBatchNorm2d(3, 2)(torch.ones(4, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="more than 1 value"):
        CompoundBatchNorm1d(3, 2)(torch.randn(1, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        convert_bn_to_cbn("model", 2)
    with pytest.raises(ValueError, match="num_components"):
        convert_bn_to_cbn(nn.BatchNorm2d(3), 0)
    with pytest.raises(ValueError, match="no CompoundBatchNorm"):
        with group_assignment(nn.Linear(2, 2), torch.zeros(2, dtype=torch.long)):
            pass


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("per_component_affine", [False, True])
def test_eval_fast_path_equals_autograd_path(per_component_affine, k):
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(3, k, per_component_affine=per_component_affine)
    for _ in range(3):
        layer(torch.randn(8, 3, 4, 4) * 2 + 5)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    layer.eval()
    x = torch.randn(6, 3, 4, 4) * 2 + 5
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x.clone().requires_grad_())  # autograd path
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)
    x3 = x.reshape(6, 3, -1)
    r = layer.responsibilities(x)
    gam = layer.weight if per_component_affine else layer.weight.expand(k, 3)
    bet = layer.bias if per_component_affine else layer.bias.expand(k, 3)
    xhat = (x3[None] - layer.running_mean[:, None, :, None]) / torch.sqrt(
        layer.running_var[:, None, :, None] + layer.eps)
    ref = (r * (gam[:, None, :, None] * xhat + bet[:, None, :, None])).sum(0)
    torch.testing.assert_close(fast, ref.reshape(x.shape).detach(), rtol=1e-5, atol=1e-5)


def test_eval_cache_sees_a_fused_optimizer_step():
    """BN freezing: the layer in eval mode, its affine fine-tuned by a fused optimizer, which bumps no
    version counter; the cached evaluation coefficients must not outlive the step."""
    import copy

    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(4, num_components=2)
    layer.train()
    layer(torch.randn(8, 4, 5, 5))  # running mixture away from its initial state
    layer.eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():  # inference: the cached coefficients
        before = layer(x)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, fused=True)
    layer(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        after = layer(x)
        fresh = copy.deepcopy(layer)(x)  # the copy's parameters live in new storage: a new cache
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh)
