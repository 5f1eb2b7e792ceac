"""Compound BN's C kernel (reprozoo.compound_bn.native) against the torch path: evaluation (K = 2..4) and
the K = 2 training step (outputs, batch statistics, gradients), the fallbacks and the switches."""

import warnings

import pytest
import torch

from reprozoo.compound_bn import CompoundBatchNorm2d, native, soft_compound_bn

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C kernel unavailable: {native.reason()}")


def _layer(k, c, backend, seed=0, **kw):
    """A layer with a non-trivial running mixture and affine (channel means away from 0)."""
    g = torch.Generator().manual_seed(seed)
    layer = CompoundBatchNorm2d(c, k, backend=backend, **kw)
    with torch.no_grad():
        layer.running_pi.copy_(torch.softmax(torch.randn(k, c, generator=g), 0))
        layer.running_mean.copy_(torch.randn(k, c, generator=g) * 1.5 + 0.7)
        layer.running_var.copy_(torch.rand(k, c, generator=g) + 0.3)
        layer.weight.copy_(torch.rand(c, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(c, generator=g))
    return layer


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("shape", [(6, 5, 8, 8), (3, 4, 13, 7)])
def test_eval_kernel_equals_the_torch_path(k, shape):
    torch.manual_seed(k)
    x = torch.randn(shape) * 2 + 0.5
    ref = _layer(k, shape[1], "torch").eval()
    nat = _layer(k, shape[1], "native").eval()
    with torch.no_grad():
        y_ref, y_nat = ref(x), nat(x)
    torch.testing.assert_close(y_nat, y_ref, rtol=1e-5, atol=1e-5)
    # the float64 mixture written out agrees as well (the kernel is not just matching the same rounding)
    y64 = _layer(k, shape[1], "torch").double().eval()(x.double())
    torch.testing.assert_close(y_nat.double(), y64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 4])
def test_eval_kernel_rejects_non_finite_input(k):
    layer = _layer(k, 3, "native").eval()
    x = torch.randn(2, 3, 8, 8)
    x[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(x)


def _train_step(backend, x, g, detach, affine, k=2):
    pi = torch.tensor([[0.3, 0.6, 0.5], [0.7, 0.4, 0.5]])
    mu = torch.tensor([[-0.8, 0.2, 1.0], [1.1, 0.9, 2.5]])
    var = torch.tensor([[0.6, 1.2, 0.5], [0.9, 0.4, 1.5]])
    w = torch.tensor([1.3, 0.7, 1.1], dtype=x.dtype, requires_grad=True) if affine else None
    b = torch.tensor([0.1, -0.4, 0.2], dtype=x.dtype, requires_grad=True) if affine else None
    xx = x.clone().requires_grad_()
    y, nk, mu_hat, v = soft_compound_bn(xx, pi.to(x.dtype), mu.to(x.dtype), var.to(x.dtype), 1e-5, detach, w, b,
                                        backend=backend)
    (y * g).sum().backward()
    grads = [xx.grad] + ([w.grad, b.grad] if affine else [])
    return [y, nk, mu_hat, v, *grads]


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_training_kernel_equals_the_torch_path(detach, affine):
    """Forward values, batch statistics and the gradients w.r.t. x, γ, β: the kernel (float32) against the
    torch step in float64 (itself checked against autograd and gradcheck in the other test files)."""
    torch.manual_seed(0)
    x = torch.randn(7, 3, 9, 5) * 1.5 + 0.6
    x = x.reshape(7, 3, 45)
    g = torch.randn_like(x)
    nat = _train_step("native", x, g, detach, affine)
    ref = _train_step("torch", x.double(), g.double(), detach, affine)
    for a, r in zip(nat, ref, strict=True):
        scale = float(r.detach().abs().max())
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=2e-5 * max(scale, 1.0))


def test_layer_training_uses_the_kernel_and_matches_torch():
    """A few training steps of a layer (running-statistics updates included) give the same state."""
    torch.manual_seed(1)
    layers = {b: _layer(2, 4, b, seed=3) for b in ("native", "torch")}
    for _ in range(3):
        x = torch.randn(8, 4, 6, 6) * 1.3 + 0.4
        g = torch.randn_like(x)
        outs = {}
        for name, layer in layers.items():
            layer.train()
            xx = x.clone().requires_grad_()
            y = layer(xx)
            (y * g).sum().backward()
            outs[name] = (y, xx.grad)
        for a, r in zip(outs["native"], outs["torch"], strict=True):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    for name in ("running_pi", "running_mean", "running_var"):
        torch.testing.assert_close(getattr(layers["native"], name), getattr(layers["torch"], name),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layers["native"].weight.grad, layers["torch"].weight.grad, rtol=1e-4, atol=1e-3)


def test_inputs_the_kernel_does_not_take_fall_back():
    x = torch.randn(4, 3, 16)
    assert native.usable("auto", x)
    assert not native.usable("torch", x)
    assert not native.usable("auto", x.double())  # float64
    assert not native.usable("auto", x.transpose(0, 1).contiguous().transpose(0, 1))  # not contiguous
    assert not native.usable("auto", x[:, :, :4].contiguous())  # H·W < MIN_INNER
    with pytest.raises(ValueError, match="backend"):
        native.usable("cuda", x)
    with pytest.raises(ValueError, match="backend"):
        CompoundBatchNorm2d(3, backend="fast")


def test_environment_switch_and_missing_compiler(monkeypatch):
    x = torch.randn(4, 3, 16)
    monkeypatch.setenv("REPROZOO_CBN_BACKEND", "torch")
    assert not native.usable("auto", x)
    assert native.usable("native", x)  # an explicit choice wins over the environment
    monkeypatch.delenv("REPROZOO_CBN_BACKEND")
    # no compiler: "native" raises, "auto" warns once and computes the same values through torch
    monkeypatch.setattr(native, "_STATE", {"lib": None, "reason": "no C compiler found"})
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.usable("native", x)
    layer = _layer(2, 3, "auto").eval()
    x4 = torch.randn(2, 3, 4, 4)
    with pytest.warns(RuntimeWarning, match="C kernel is unavailable"), torch.no_grad():
        y = layer(x4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        with torch.no_grad():
            layer(x4)
    torch.testing.assert_close(y, _layer(2, 3, "torch").eval()(x4).detach())


def test_the_library_is_built_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROZOO_CACHE", str(tmp_path))
    cc = native._compiler()
    first = native._build(cc)
    assert first.is_file() and first.parent == tmp_path / "kernels"
    stamp = first.stat().st_mtime_ns
    assert native._build(cc) == first and first.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_results_do_not_depend_on_the_thread_count():
    """The loops split rows (eval, ∂L/∂x) or channels (the sums) over OpenMP threads: same values."""
    x = torch.randn(16, 8, 16, 16)
    g = torch.randn_like(x)
    before = torch.get_num_threads()
    out = {}
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            layer = _layer(2, 8, "native", seed=5)
            xx = x.clone().requires_grad_()
            (layer(xx) * g).sum().backward()
            with torch.no_grad():
                out[nt] = (xx.grad, layer.eval()(x), _layer(4, 8, "native").eval()(x))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(out[1], out[2], strict=True):
        torch.testing.assert_close(a, b)
