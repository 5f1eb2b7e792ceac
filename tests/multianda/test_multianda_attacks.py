"""Unit tests of ANDA / MultiANDA against naive reference implementations and invariants."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.multianda import ANDA, MultiANDA, OnlineGaussian, translation_thetas


def tiny_net(dtype=torch.float32, seed=0, c=3, side=8):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(6 * side * side, 5))
    return net.to(dtype).eval()


def data(b=4, dtype=torch.float32, seed=1, c=3, side=8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, side, side, generator=g, dtype=dtype), torch.arange(b) % 5


ATTACKS = [
    ("ANDA", lambda m, **kw: ANDA(m, eps=8 / 255, steps=4, n_ens=4, seed=0, **kw)),
    ("ANDA-sample", lambda m, **kw: ANDA(m, eps=8 / 255, steps=4, n_ens=4, seed=0, sample=True, **kw)),
    ("MultiANDA", lambda m, **kw: MultiANDA(m, eps=8 / 255, steps=4, n_ens=4, n_chains=3, seed=0, **kw)),
    ("MultiANDA-mix", lambda m, **kw: MultiANDA(m, eps=8 / 255, steps=4, n_ens=4, n_chains=3, seed=0,
                                                  combine="mixture", sample=True, **kw)),
    ("ANDA-CT", lambda m, **kw: ANDA(m, eps=8 / 255, steps=4, n_ens=4, seed=0, si_scales=2, di_prob=0.5,
                                     ti_kernel=3, **kw)),
    ("MultiANDA-CT", lambda m, **kw: MultiANDA(m, eps=8 / 255, steps=4, n_ens=4, n_chains=2, seed=0, si_scales=2,
                                               di_prob=1.0, ti_kernel=3, sample=True, **kw)),
]
MODES = ["default", "label", "random", "least_likely"]


def set_mode(atk, mode):
    if mode == "label":
        atk.set_mode_targeted_by_label(quiet=True)
    elif mode == "random":
        atk.set_mode_targeted_random(quiet=True)
    elif mode == "least_likely":
        atk.set_mode_targeted_least_likely(quiet=True)


# -- bounds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,make", ATTACKS)
@pytest.mark.parametrize("mode", MODES)
def test_linf_bound_and_range_exact(name, make, mode):
    net = tiny_net()
    x, y = data()
    x[0, 0, :2] = 0.0  # pixels at the borders of [0, 1]
    x[1, 1, :2] = 1.0
    atk = make(net)
    set_mode(atk, mode)
    eps = torch.tensor(atk.eps, dtype=x.dtype)
    adv = atk(x, y)
    samples = atk.sample(x, y, 6)
    assert adv.shape == x.shape and samples.shape == (6, *x.shape)
    for out in (adv, samples.flatten(0, 1)):
        d = (out.view(-1, *x.shape) - x).abs()
        assert bool((d <= eps).all()), f"max |delta| {float(d.max())} > eps {float(eps)}"
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert (adv - x).abs().max() > 0  # it does move


def test_projection_holds_where_float_rounding_would_break_it():
    atk = ANDA(tiny_net(), eps=0.1, steps=1, n_ens=1)
    x = torch.full((1, 1, 1, 3), 0.7)
    out = atk._project(x, x + 1.0)
    assert bool(((out - x).abs() <= torch.tensor(0.1)).all())


# -- determinism ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,make", ATTACKS)
def test_bit_identical_per_seed(name, make):
    net = tiny_net()
    x, y = data()
    a, b = make(net), make(net)
    assert torch.equal(a(x, y), b(x, y))
    assert torch.equal(a.sample(x, y, 3), b.sample(x, y, 3))


def test_different_seeds_give_different_samples():
    net = tiny_net()
    x, y = data()
    s0 = ANDA(net, eps=8 / 255, steps=3, n_ens=4, seed=0).sample(x, y, 4)
    s1 = ANDA(net, eps=8 / 255, steps=3, n_ens=4, seed=1).sample(x, y, 4)
    assert not torch.equal(s0, s1)
    assert not torch.equal(s0[0], s0[1])  # draws differ from each other


# -- naive reference: every gradient kept ---------------------------------------------------------
def naive_anda(net, x, y, eps, steps, n_ens, aug_max, scales=1):
    """Loops over images, steps and copies; keeps every gradient (reference utils.ANDA semantics)."""
    side = math.isqrt(n_ens)
    r = torch.linspace(-aug_max, aug_max, side)
    thetas = [torch.tensor([[1.0, 0.0, float(i)], [0.0, 1.0, float(j)]], dtype=x.dtype) for i in r for j in r]
    alpha = eps / steps
    outs, means, devs, n_grads = [], [], [], []
    for b in range(x.shape[0]):
        xb, xt = x[b:b + 1], x[b:b + 1].clone()
        all_g, rows = [], []
        mu = torch.zeros_like(xb)
        for _ in range(steps):
            gs = []
            for th in thetas:
                c = xt.clone().requires_grad_(True)
                grid = F.affine_grid(th[None], list(c.shape), align_corners=False)
                moved = F.grid_sample(c, grid, align_corners=False)
                loss = sum(F.cross_entropy(net(moved / 2 ** i), y[b:b + 1], reduction="sum") for i in range(scales))
                gs.append(torch.autograd.grad(loss, c)[0])
            all_g += gs
            mu = torch.stack(all_g).mean(0)  # arithmetic mean of every gradient seen
            rows += [(g - mu).flatten() for g in gs]
            xt = torch.clamp(xt + alpha * mu.sign(), 0, 1)
            xt = torch.min(torch.max(xt, xb - eps), xb + eps)
        outs.append(xt)
        means.append(mu.flatten())
        devs.append(torch.stack(rows))
        n_grads.append(len(all_g))
    return torch.cat(outs), torch.stack(means), torch.stack(devs), n_grads


def test_running_mean_and_deviations_match_naive_implementation():
    net = tiny_net(torch.float64)
    x, y = data(3, torch.float64)
    atk = ANDA(net, eps=8 / 255, steps=3, n_ens=4, aug_max=0.3)
    state = atk.distribution(x, y)
    x_ref, mu_ref, d_ref, n_grads = naive_anda(net, x, y, atk.eps, 3, 4, 0.3)
    assert n_grads == [12, 12, 12] and state.gaussian.n_seen == 12
    torch.testing.assert_close(state.gaussian.mean, mu_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(state.gaussian.cov_factor, d_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(state.x_last, x_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(atk(x, y), x_ref, rtol=0, atol=1e-12)


def test_scale_copies_match_naive_implementation():
    net = tiny_net(torch.float64)
    x, y = data(2, torch.float64)
    atk = ANDA(net, eps=8 / 255, steps=2, n_ens=4, si_scales=3)
    state = atk.distribution(x, y)
    x_ref, mu_ref, d_ref, _ = naive_anda(net, x, y, atk.eps, 2, 4, 0.3, scales=3)
    torch.testing.assert_close(state.gaussian.mean, mu_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(state.x_last, x_ref, rtol=0, atol=1e-12)


def test_ti_smoothing():
    net = tiny_net(torch.float64)
    x, y = data(3, torch.float64)
    plain = ANDA(net, eps=8 / 255, steps=3, n_ens=4)
    assert torch.equal(ANDA(net, eps=8 / 255, steps=3, n_ens=4, ti_kernel=1)(x, y), plain(x, y))
    ti = ANDA(net, eps=8 / 255, steps=3, n_ens=4, ti_kernel=3)
    assert not torch.equal(ti(x, y), plain(x, y))
    const = torch.ones(2, 3, 8, 8, dtype=torch.float64)
    sm = ti._smooth(const)
    torch.testing.assert_close(sm[..., 1:-1, 1:-1], const[..., 1:-1, 1:-1])  # interior unchanged
    assert bool((sm[..., 0, 0] < 1).all())  # zero padding at the borders


def test_di_changes_inputs_only_when_drawn():
    net = tiny_net(torch.float64)
    x, y = data(2, torch.float64)
    base = ANDA(net, eps=8 / 255, steps=3, n_ens=4, seed=0)
    assert torch.equal(ANDA(net, eps=8 / 255, steps=3, n_ens=4, seed=0, di_prob=0.0)(x, y), base(x, y))
    di = ANDA(net, eps=8 / 255, steps=3, n_ens=4, seed=0, di_prob=1.0, di_scale=0.5)
    assert not torch.equal(di(x, y), base(x, y))
    moved = di._diversity(torch.ones(1, 3, 8, 8), torch.Generator().manual_seed(0))
    assert moved.shape == (1, 3, 8, 8) and float(moved.min()) == 0.0


def test_batch_equals_per_image():
    net = tiny_net(torch.float64)
    x, y = data(4, torch.float64)
    atk = ANDA(net, eps=8 / 255, steps=3, n_ens=4)
    one_by_one = torch.cat([atk(x[i:i + 1], y[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(atk(x, y), one_by_one, rtol=0, atol=1e-12)


def test_one_augmentation_is_cumulative_mean_ifgsm():
    net = tiny_net(torch.float64)
    x, y = data(3, torch.float64)
    eps, steps = 8 / 255, 5
    adv = ANDA(net, eps=eps, steps=steps, n_ens=1, aug_max=0.0)(x, y)
    xt, gsum = x.clone(), torch.zeros_like(x)
    for t in range(steps):
        xr = xt.clone().requires_grad_(True)
        gsum += torch.autograd.grad(F.cross_entropy(net(xr), y, reduction="sum"), xr)[0]
        xt = torch.min(torch.max(torch.clamp(xt + eps / steps * (gsum / (t + 1)).sign(), 0, 1), x - eps), x + eps)
    torch.testing.assert_close(adv, xt, rtol=0, atol=1e-9)


# -- deviation matrix: rank and cap -----------------------------------------------------------------
@pytest.mark.parametrize("max_rank,expected_rows", [(None, 20), (7, 7), (4, 4), (50, 20)])
def test_rank_bound_and_cap(max_rank, expected_rows):
    net = tiny_net(torch.float64)
    x, y = data(2, torch.float64)
    atk = ANDA(net, eps=8 / 255, steps=5, n_ens=4, max_rank=max_rank)
    d_mat = atk.distribution(x, y).gaussian.cov_factor
    assert d_mat.shape == (2, expected_rows, 3 * 8 * 8)
    for b in range(2):
        assert int(torch.linalg.matrix_rank(d_mat[b])) <= min(4 * 5 - 1, expected_rows)


def test_cap_keeps_the_most_recent_rows():
    g = OnlineGaussian(1, 2, max_rank=3)
    full = OnlineGaussian(1, 2, max_rank=8)
    for t in range(4):
        batch = torch.tensor([[[t, 1.0], [2.0 * t, -1.0]]])
        g.update(batch)
        full.update(batch)
    torch.testing.assert_close(g.mean, full.mean)
    kept = {tuple(r.tolist()) for r in g.cov_factor[0]}
    assert kept == {tuple(r.tolist()) for r in full.cov_factor[0, -3:]}


def test_sample_mean_and_covariance_match_tracked_ones():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    torch.manual_seed(0)
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 2])
    state = ANDA(net, eps=0.1, steps=3, n_ens=4, aug_max=0.5).distribution(x, y)
    gauss = state.gaussian
    draws = gauss.sample(200_000, torch.Generator().manual_seed(0))  # (n, B, d)
    d_mat = gauss.cov_factor
    for b in range(2):
        cov = d_mat[b].T @ d_mat[b] / (d_mat.shape[1] - 1)
        scale = float(cov.diagonal().max().sqrt())
        torch.testing.assert_close(draws[:, b].mean(0), gauss.mean[b], rtol=0, atol=0.02 * scale)
        torch.testing.assert_close(torch.cov(draws[:, b].T), cov, rtol=0, atol=0.02 * scale ** 2)


# -- MultiANDA -----------------------------------------------------------------------------------
def test_multianda_one_chain_no_noise_equals_anda():
    net = tiny_net()
    x, y = data()
    kw = {"eps": 8 / 255, "steps": 4, "n_ens": 4, "seed": 3}
    assert torch.equal(MultiANDA(net, n_chains=1, noise=0.0, **kw)(x, y), ANDA(net, **kw)(x, y))
    assert torch.equal(MultiANDA(net, n_chains=1, noise=0.0, sample=True, **kw)(x, y),
                       ANDA(net, sample=True, **kw)(x, y))


def test_multianda_chains_differ_only_by_noise_and_average():
    net = tiny_net(torch.float64)
    x, y = data(2, torch.float64)
    m = MultiANDA(net, eps=8 / 255, steps=3, n_ens=4, n_chains=3, seed=0)
    state = m.distribution(x, y)
    means = state.gaussian.mean.view(3, 2, -1)
    assert not torch.equal(means[0], means[1])  # per-copy noise makes chains differ
    start = state.x_prev.view(3, *x.shape).mean(0)
    expected = m._project(x, start + m.alpha * means.mean(0).view_as(x).sign())
    torch.testing.assert_close(m.finish(x, state, combine="average"), expected, rtol=0, atol=0)
    # mixture: each output is one chain's own final step
    mix = m.finish(x, state, combine="mixture", generator=torch.Generator().manual_seed(0))
    per_chain = m._project(x.repeat(3, 1, 1, 1), state.x_prev + m.alpha * state.gaussian.mean.view_as(
        state.x_prev).sign()).view(3, *x.shape)
    for i in range(2):
        assert any(torch.equal(mix[i], per_chain[c, i]) for c in range(3))


# -- targeted mode ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ANDA, MultiANDA])
def test_targeted_mode_lowers_target_loss(cls):
    # small translations: on 8×8 toys a 0.3 shift is over a pixel and the attack then optimises the
    # translation-averaged loss rather than the loss of the image itself
    net = tiny_net()
    x, _ = data(6)
    target = torch.tensor([4, 3, 2, 1, 0, 4])
    atk = cls(net, eps=16 / 255, steps=5, n_ens=4, aug_max=0.1, seed=0)
    untargeted = atk(x, target)
    atk.set_mode_targeted_by_label(quiet=True)
    adv = atk(x, target)
    with torch.no_grad():
        before = F.cross_entropy(net(x), target, reduction="none")
        after = F.cross_entropy(net(adv), target, reduction="none")
        after_untargeted = F.cross_entropy(net(untargeted), target, reduction="none")
    assert bool((after < before).all())
    # regression (TransferAttack's port ignored targeted mode): the result must not be the untargeted one
    assert bool((after_untargeted > before).all())
    assert not torch.equal(adv, untargeted)


# -- normalisation declared through torchattacks ---------------------------------------------------
def test_declared_normalisation_equals_normalisation_inside_model():
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    net = tiny_net(torch.float64)
    m_t = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s_t = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    inside = nn.Sequential()
    inside.forward = lambda z: net((z - m_t) / s_t)  # normalisation inside the model
    inside.parameters = net.parameters
    x, y = data(2, torch.float64)
    ref = ANDA(inside, eps=8 / 255, steps=3, n_ens=4)(x, y)
    atk = ANDA(net, eps=8 / 255, steps=3, n_ens=4)
    atk.set_normalization_used(mean, std)
    out = atk((x - m_t) / s_t, y) * s_t + m_t
    # torchattacks stores mean/std in float32: agreement to float32 rounding
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    samples = atk.sample((x - m_t) / s_t, y, 2) * s_t + m_t
    assert samples.shape == (2, *x.shape)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,err,match", [
    ({"n_ens": 8}, ValueError, "perfect square"),
    ({"eps": -0.1}, ValueError, "eps"),
    ({"steps": 0}, ValueError, "steps"),
    ({"aug_max": float("nan")}, ValueError, "aug_max"),
    ({"max_rank": 1}, ValueError, "max_rank"),
    ({"n_samples": 0}, ValueError, "n_samples"),
    ({"sample": 1}, TypeError, "sample"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"ti_kernel": 4}, ValueError, "ti_kernel"),
    ({"di_prob": 1.5}, ValueError, "di_prob"),
    ({"si_scales": 0}, ValueError, "si_scales"),
])
def test_bad_constructor_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        ANDA(tiny_net(), **kwargs)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"n_chains": 0}, ValueError, "n_chains"),
    ({"combine": "max"}, ValueError, "combine"),
    ({"noise": -1.0}, ValueError, "noise"),
])
def test_bad_multianda_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        MultiANDA(tiny_net(), **kwargs)


def _bad_inputs():
    x, y = data(2)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        ("outside [0,1]", x * 2 - 0.5, y, ValueError, r"\[0, 1\]"),
        ("wrong rank", x[0], y, ValueError, "4-D"),
        ("empty", x[:0], y[:0], ValueError, "empty"),
        ("nan", nan, y, ValueError, "NaN"),
        ("labels length", x, torch.tensor([0, 1, 2]), ValueError, "labels should have shape"),
        ("labels dtype", x, y.float(), TypeError, "integer"),
        ("labels 2-D", x, y[:, None], ValueError, "labels should have shape"),
        ("negative label", x, torch.tensor([-1, 0]), ValueError, ">= 0"),
        ("images not tensor", x.numpy(), y, TypeError, "images"),
        ("int images", (x * 255).to(torch.uint8), y, TypeError, "float"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
@pytest.mark.parametrize("cls", [ANDA, MultiANDA])
def test_bad_call_inputs(case, cls):
    _, x, y, err, match = case
    atk = cls(tiny_net(), eps=8 / 255, steps=2, n_ens=4)
    with pytest.raises(err, match=match):
        atk(x, y)
    with pytest.raises(err, match=match):
        atk.sample(x, y, 2)


def test_bad_sample_count():
    x, y = data(2)
    with pytest.raises(ValueError, match="n="):
        ANDA(tiny_net(), steps=2, n_ens=4).sample(x, y, 0)


def test_translation_grid_is_row_major_over_tx_ty():
    th = translation_thetas(9, 0.3)
    assert th.shape == (9, 2, 3)
    torch.testing.assert_close(th[1, :, 2], torch.tensor([-0.3, 0.0]))
    torch.testing.assert_close(th[3, :, 2], torch.tensor([0.0, -0.3]))


def test_repr_and_torchattacks_tooling():
    atk = MultiANDA(tiny_net(), eps=8 / 255, steps=2, n_ens=4, n_chains=2)
    text = repr(atk)
    assert text.startswith("MultiANDA(") and "n_chains=2" in text and "combine=average" in text
    assert atk.get_mode() == "default"
    atk.set_mode_targeted_by_function(lambda im, lab: (lab + 1) % 5, quiet=True)
    x, y = data(2)
    assert atk(x, y).shape == x.shape


def test_docstring_examples_run():
    import doctest

    import reprozoo.multianda.anda as mod

    failures, tried = doctest.testmod(mod, verbose=False, report=False)
    assert tried >= 4 and failures == 0
