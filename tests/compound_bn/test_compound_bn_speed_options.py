"""Compound BN: fresh outputs, the separate auxiliary affine, and the opt-in compiled step."""

import io
import warnings

import pytest
import torch
from torch import nn

import reprozoo.compound_bn.compiled as cmod
from reprozoo.compound_bn import (
    CompoundBatchNorm2d,
    DualPathLoss,
    compound_batch_norm,
    convert_bn_to_cbn,
    group_assignment,
)
from reprozoo.compound_bn.functional import soft_compound_bn
from reprozoo.models import resnet8

D = torch.float64


def _mixture(k, c, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(k, c, generator=g, dtype=dtype), 0)
    return pi, torch.randn(k, c, generator=g, dtype=dtype), torch.rand(k, c, generator=g, dtype=dtype) + 0.5


def _reference_eval(layer, x):
    """Evaluation written out (float64): r_k = softmax_k(log π_k N(x | μ_k, σ²_k + ε)), y = Σ_k r_k γ (x − μ_k)
    / √(σ²_k + ε) + β, one component at a time."""
    pi, mu, var = (t.double() for t in (layer.running_pi, layer.running_mean, layer.running_var))
    x = x.double().reshape(x.shape[0], x.shape[1], -1)
    logp = torch.stack([torch.distributions.Normal(mu[k][None, :, None], (var[k] + layer.eps).sqrt()[None, :, None])
                        .log_prob(x) + pi[k].log()[None, :, None] for k in range(len(pi))])
    r = torch.softmax(logp, 0)
    w = layer.weight.double().expand_as(mu) if layer.affine else torch.ones_like(mu)
    b = layer.bias.double().expand_as(mu) if layer.affine else torch.zeros_like(mu)
    y = sum(r[k] * ((x - mu[k][None, :, None]) / (var[k] + layer.eps).sqrt()[None, :, None] * w[k][None, :, None]
                    + b[k][None, :, None]) for k in range(len(pi)))
    return y


# -- evaluation: the fused eager pass against the written-out mixture ---------------------------
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_component_affine", [False, True])
def test_eval_matches_the_written_out_mixture(k, dtype, per_component_affine):
    torch.manual_seed(k)
    layer = CompoundBatchNorm2d(5, k, per_component_affine=per_component_affine, check_finite=False).to(dtype)
    with torch.no_grad():
        pi, mu, var = _mixture(k, 5, dtype, seed=k)
        layer.running_pi.copy_(pi)
        layer.running_mean.copy_(mu * 2 + 1)  # channel means away from 0
        layer.running_var.copy_(var)
        layer.weight.normal_()
        layer.bias.normal_()
    layer.eval()
    x = torch.randn(6, 5, 7, 3, dtype=dtype) * 2 + 1
    with torch.no_grad():
        y = layer(x)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(y.double(), _reference_eval(layer, x).reshape(x.shape), **tol)
    # the autograd path (input needs a gradient) computes the same
    torch.testing.assert_close(layer(x.clone().requires_grad_()), y, **tol)


def test_eval_coefficients_follow_the_running_statistics_and_parameters():
    """The evaluation caches its per-channel coefficients: a training step, an optimiser step and
    load_state_dict must each be seen by the next evaluation."""
    torch.manual_seed(0)
    layer = CompoundBatchNorm2d(3, 2, check_finite=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(8, 3, 4, 4) * 1.5 + 0.5

    def check():
        layer.eval()
        with torch.no_grad():
            ref = _reference_eval(layer, x).reshape(x.shape)
            torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))

    check()
    layer.train()
    (layer(x) * torch.randn_like(x)).sum().backward()  # running statistics move
    check()
    opt.step()  # γ, β move
    check()
    other = CompoundBatchNorm2d(3, 2)
    with torch.no_grad():
        other.running_mean.normal_()
        other.weight.uniform_(0.5, 2)
    layer.load_state_dict(other.state_dict())
    check()


# -- fresh outputs (no buffer pool) -----------------------------------------------------------
def test_outputs_are_never_shared_between_calls():
    pi, mu, var = _mixture(2, 3)
    x = torch.randn(4, 3, 50)
    y1 = soft_compound_bn(x, pi, mu, var)[0]
    keep = y1.clone()
    y2 = soft_compound_bn(x * 2, pi, mu, var)[0]  # y1 is alive: y2 must not share its storage
    assert y1.untyped_storage().data_ptr() != y2.untyped_storage().data_ptr()
    torch.testing.assert_close(y1, keep)


def test_retained_graph_and_inplace_output_give_the_reference_gradient():
    torch.manual_seed(0)
    pi, mu, var = _mixture(2, 3, D)
    x = torch.randn(4, 3, 7, dtype=D, requires_grad=True)
    g = torch.randn(4, 3, 7, dtype=D)
    y = soft_compound_bn(x, pi, mu, var)[0]
    out = torch.relu_(y)  # in place on the output, as nn.ReLU(inplace=True) does
    ga, = torch.autograd.grad((out * g).sum(), x, retain_graph=True)
    soft_compound_bn(x * 3, pi, mu, var)[0].sum().backward()  # other calls in between must not clobber it
    gb, = torch.autograd.grad((out * g).sum(), x)  # second backward through the retained graph
    ref = torch.relu(compound_batch_norm(x, pi, mu, var)[0])
    gr, = torch.autograd.grad((ref * g).sum(), x)
    torch.testing.assert_close(ga, gr)
    torch.testing.assert_close(gb, gr)


# -- separate auxiliary affine --------------------------------------------------------------
@pytest.mark.parametrize("per_component_affine", [False, True])
def test_aux_affine_state_dict_round_trip(per_component_affine):
    torch.manual_seed(0)
    a = CompoundBatchNorm2d(4, 2, per_component_affine=per_component_affine, aux_affine=True)
    with torch.no_grad():
        a.weight_aux.uniform_(0.5, 1.5)
        a.bias_aux.normal_()
    gids = torch.tensor([0, 1, 1, 0, 1, 0])
    for _ in range(3):
        a(torch.randn(6, 4, 3, 3))
        a(torch.randn(6, 4, 3, 3), group_ids=gids)
    assert {"weight_aux", "bias_aux"} <= set(a.state_dict())
    assert a.weight_aux.shape == a.weight.shape
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = CompoundBatchNorm2d(4, 2, per_component_affine=per_component_affine, aux_affine=True)
    b.load_state_dict(torch.load(buf))
    a.eval()
    b.eval()
    x = torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(a(x, group_ids=gids), b(x, group_ids=gids))
    torch.testing.assert_close(a(x), b(x))
    # the default (shared) layer has no such parameters, so its state dict is unchanged
    assert "weight_aux" not in CompoundBatchNorm2d(4, 2).state_dict()
    with pytest.raises(ValueError, match="aux_affine"):
        CompoundBatchNorm2d(4, 2, affine=False, aux_affine=True)
    assert "aux_affine=True" in repr(a)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_aux_affine_decides_which_parameters_the_aux_loss_trains(k, train):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 4, 4)
    gids = torch.arange(8) % k
    for aux_affine in (False, True):
        layer = CompoundBatchNorm2d(3, k, aux_affine=aux_affine)
        layer(x)  # seed the mixture
        layer.train(train)
        with torch.no_grad():
            layer.weight.fill_(1.3)
            if aux_affine:
                layer.weight_aux.fill_(0.7)
        (layer(x, group_ids=gids) ** 2).mean().backward()  # an auxiliary-path loss
        main_grad = layer.weight.grad
        if aux_affine:
            assert main_grad is None and layer.bias.grad is None
            assert layer.weight_aux.grad is not None and layer.weight_aux.grad.abs().sum() > 0
            layer.zero_grad()
            (layer(x) ** 2).mean().backward()  # the main path does not train the aux affine
            assert layer.weight_aux.grad is None and layer.weight.grad.abs().sum() > 0
        else:
            assert main_grad is not None and main_grad.abs().sum() > 0
            assert layer.weight_aux is None


def test_aux_affine_output_uses_its_own_gamma_beta_and_convert_copies_bn():
    torch.manual_seed(2)
    x = torch.randn(8, 3, 4, 4)
    gids = torch.tensor([0, 1] * 4)
    shared = CompoundBatchNorm2d(3, 2)
    sep = CompoundBatchNorm2d(3, 2, aux_affine=True)
    sep.load_state_dict(shared.state_dict(), strict=False)
    with torch.no_grad():
        sep.weight_aux.fill_(2.0)
        sep.bias_aux.fill_(0.5)
        shared.weight.fill_(2.0)
        shared.bias.fill_(0.5)
    torch.testing.assert_close(sep(x, group_ids=gids), shared(x, group_ids=gids))
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    cbn = convert_bn_to_cbn(nn.Sequential(bn), 2, aux_affine=True)[0]
    torch.testing.assert_close(cbn.weight_aux, bn.weight)
    torch.testing.assert_close(cbn.bias_aux, bn.bias)


def test_dual_path_with_aux_affine_trains_both_affines():
    torch.manual_seed(3)
    model = convert_bn_to_cbn(resnet8(4, width=4), 2, aux_affine=True)
    loss_fn = DualPathLoss([40, 20, 6, 2], num_groups=2)
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss_fn(model, x, y).loss.backward()
    layer = next(m for m in model.modules() if isinstance(m, CompoundBatchNorm2d))
    assert layer.weight.grad.abs().sum() > 0 and layer.weight_aux.grad.abs().sum() > 0
    with group_assignment(model, torch.zeros(8, dtype=torch.long)):
        assert torch.isfinite(model.eval()(x)).all()


# -- compiled step --------------------------------------------------------------------------
def test_compiled_falls_back_to_eager_with_a_warning(monkeypatch):
    pi, mu, var = _mixture(2, 3, D)
    x = torch.randn(4, 3, 6, dtype=D, requires_grad=True)

    def broken(name, fn):
        raise RuntimeError("no C++ compiler (simulated)")

    monkeypatch.setattr(cmod, "_compiled", broken)  # as if inductor failed
    monkeypatch.setitem(cmod._STATE, "failed", False)
    with pytest.warns(RuntimeWarning, match="falling back"):
        y = cmod.compiled_soft_compound_bn(x, pi, mu, var)[0]
    assert not cmod.compiled_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        y2 = cmod.compiled_soft_compound_bn(x, pi, mu, var)[0]
    ref = soft_compound_bn(x, pi, mu, var)[0]
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(y2, ref)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3])
def test_compiled_matches_eager_outputs_and_gradients(k):
    cmod._STATE["failed"] = False
    torch.manual_seed(k)
    for dtype, tol in ((D, {}), (torch.float32, {"rtol": 1e-4, "atol": 1e-4})):
        for detach in (False, True):
            pi, mu, var = _mixture(k, 3, dtype, seed=k)
            x = (torch.randn(5, 3, 12, dtype=dtype) * 2 + 0.5).requires_grad_()
            w = torch.rand(3, dtype=dtype, requires_grad=True)
            b = torch.randn(3, dtype=dtype, requires_grad=True)
            got = cmod.compiled_soft_compound_bn(x, pi, mu, var, 1e-5, detach, w, b)
            ref = soft_compound_bn(x, pi, mu, var, 1e-5, detach, w, b)
            g = torch.randn_like(ref[0])
            g1 = torch.autograd.grad((got[0] * g).sum(), (x, w, b))
            g2 = torch.autograd.grad((ref[0] * g).sum(), (x, w, b))
            for u, v in zip((*got, *g1), (*ref, *g2), strict=True):
                torch.testing.assert_close(u, v, **tol)
    assert cmod.compiled_available(), cmod._STATE["reason"]
    # the layer option: same training step and running statistics as the eager layer
    torch.manual_seed(0)
    eager, comp = CompoundBatchNorm2d(3, k), CompoundBatchNorm2d(3, k, compiled=True)
    for _ in range(3):
        x = torch.randn(6, 3, 4, 4, requires_grad=True)
        ye, yc = eager(x), comp(x)
        torch.testing.assert_close(yc, ye, rtol=1e-4, atol=1e-4)
        ge, = torch.autograd.grad(ye.square().sum(), x)
        gc, = torch.autograd.grad(yc.square().sum(), x)
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-4)
    for name, buf in eager.named_buffers():
        torch.testing.assert_close(dict(comp.named_buffers())[name], buf)
