"""Public-boundary behaviour found by a fresh-user review: normalisation semantics, labels, dtypes, states."""

import warnings

import pytest
import torch
from torch import nn

from reprozoo.multianda import ANDA, MultiANDA, OnlineGaussian, make_baseline, translation_grid, translation_thetas
from reprozoo.multianda.zoo import CIFAR_MEAN, CIFAR_STD

EPS = 8 / 255


def tiny_net(dtype=torch.float32, seed=0, n_classes=5):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 8 * 8, n_classes))
    return net.to(dtype).eval()


def data(b=4, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g, dtype=dtype), torch.arange(b) % 5


MAKERS = {
    "ANDA": lambda m, **kw: ANDA(m, eps=EPS, steps=3, n_ens=4, seed=0, **kw),
    "MultiANDA": lambda m, **kw: MultiANDA(m, eps=EPS, steps=3, n_ens=4, n_chains=2, seed=0, **kw),
}


# -- 1. normalisation: torchattacks semantics --------------------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
def test_declared_normalisation_takes_and_returns_normalised_images(name):
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(1, 3, 1, 1).double()
    std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(1, 3, 1, 1).double()  # as torchattacks stores them
    x, y = data(dtype=torch.float64)
    xn = (x - mean) / std  # what the user passes after set_normalization_used
    atk = MAKERS[name](tiny_net(torch.float64))
    atk.set_normalization_used(CIFAR_MEAN, CIFAR_STD)
    tol = 1e-12
    for out in (atk(xn, y), atk.sample(xn, y, 3).flatten(0, 1)):
        pixels = out.view(-1, *x.shape) * std + mean  # un-normalise the (normalised) output
        assert float((pixels - x).abs().max()) <= EPS + tol
        assert float(pixels.min()) >= -tol and float(pixels.max()) <= 1 + tol
        assert float(out.min()) < 0.0  # it really is in normalised units, not pixels
    assert float((atk(xn, y) * std + mean - x).abs().max()) > EPS / 2  # and it moved
    # distribution / finish follow the same convention as the call
    state = atk.distribution(xn, y)
    torch.testing.assert_close(atk.finish(xn, state), atk(xn, y), rtol=0, atol=1e-12)


def test_pixels_passed_after_set_normalization_used_are_flagged():
    x, y = data()
    atk = MAKERS["ANDA"](tiny_net())
    atk.set_normalization_used(CIFAR_MEAN, CIFAR_STD)
    # x * std + mean stays inside [0, 1] for CIFAR statistics: not an error, but warned about
    with pytest.warns(UserWarning, match="normalised"):
        atk(x, y)
    with pytest.warns(UserWarning, match="normalised"):
        atk.sample(x, y, 2)
    # a genuinely normalised batch is not flagged
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atk((x - mean) / std, y)


def test_range_errors_state_the_torchattacks_semantics():
    x, y = data()
    atk = MAKERS["ANDA"](tiny_net())
    with pytest.raises(ValueError, match="pass normalised images AND call set_normalization_used"):
        atk(x * 3 - 1, y)
    atk.set_normalization_used([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"set_normalization_used\(mean, std\) was called, so images should be "
                                         "normalised"):
        atk(x * 4, y)  # x * 4 * 0.5 + 0.5 leaves [0, 1]
    with pytest.raises(ValueError, match="C=3 channels"):
        atk(x[:, :2], y)


@pytest.mark.parametrize("doc", [ANDA.__doc__, MultiANDA.__doc__, make_baseline.__doc__])
def test_docstrings_describe_normalised_inputs_and_outputs(doc):
    text = " ".join(doc.replace("*", "").split())
    assert "already-normalised" in text or "already normalised" in text
    assert "normalised adversarial images" in text


# -- 3. public-boundary errors -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
def test_labels_beyond_the_models_classes(name):
    x, _ = data()
    atk = MAKERS[name](tiny_net())
    bad = torch.tensor([0, 1, 2, 7])
    for call in (lambda: atk(x, bad), lambda: atk.sample(x, bad, 2), lambda: atk.distribution(x, bad)):
        with pytest.raises(ValueError, match=r"labels should be class indices in \[0, 4\] \(the model returns 5"):
            call()
    atk.set_mode_targeted_by_label(quiet=True)
    with pytest.raises(ValueError, match="labels"):
        atk(x, bad)
    atk.set_mode_targeted_by_function(lambda im, lab: lab + 5, quiet=True)
    with pytest.raises(ValueError, match="target labels of the targeted"):
        atk(x, torch.tensor([0, 1, 2, 3]))


def test_model_output_that_is_not_logits():
    atk = ANDA(nn.Conv2d(3, 2, 1), eps=EPS, steps=2, n_ens=4)
    x, y = data()
    with pytest.raises(ValueError, match=r"model should return logits of shape \(N, n_classes\)"):
        atk(x, y)


@pytest.mark.parametrize("name", list(MAKERS))
def test_images_in_another_float_dtype_than_the_model(name):
    net = tiny_net(torch.float32)
    x64, y = data(dtype=torch.float64)
    atk = MAKERS[name](net)
    adv = atk(x64, y)
    samples = atk.sample(x64, y, 2)
    for out in (adv, samples):
        assert out.dtype == torch.float64
        assert bool(((out - x64).abs() <= EPS).all())  # exactly, in float64
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # same attack as on the float32 images, up to the float32 rounding of the inputs
    ref = MAKERS[name](net)(x64.float(), y)
    assert float((adv - ref.double()).abs().max()) < 1e-6


@pytest.mark.parametrize("name", list(MAKERS))
def test_finish_checks_the_state_against_the_images(name):
    x, y = data()
    atk = MAKERS[name](tiny_net())
    state = atk.distribution(x, y)
    with pytest.raises(ValueError, match="state does not match images: images has batch B=2"):
        atk.finish(x[:2], state)
    with pytest.raises(ValueError, match="state does not match images: images has batch B=2"):
        atk.finish(x[:2], state, n=2)
    other = (x + 0.2).clamp(0, 1)
    with pytest.raises(ValueError, match="more than eps"):
        atk.finish(other, state)
    with pytest.raises(TypeError, match="state should be the ANDAState"):
        atk.finish(x, (state.x_last, state.x_prev))
    with pytest.raises(TypeError, match="generator"):
        atk.finish(x, state, n=2, generator=0)
    lean = atk.distribution(x, y, keep_cov=False)
    with pytest.raises(ValueError, match="keep_cov=False"):
        atk.finish(x, lean, n=2)
    assert atk.finish(x, lean).shape == x.shape  # x_T-style finish needs no covariance


def test_multianda_state_of_another_chain_count():
    x, y = data()
    state = MultiANDA(tiny_net(), eps=EPS, steps=2, n_ens=4, n_chains=3, seed=0).distribution(x, y)
    with pytest.raises(ValueError, match="2 chains × B = 8 rows"):
        MultiANDA(tiny_net(), eps=EPS, steps=2, n_ens=4, n_chains=2, seed=0).finish(x, state)
    with pytest.raises(TypeError, match="combine"):
        MultiANDA(tiny_net(), eps=EPS, steps=2, n_ens=4, n_chains=3).finish(x, state, combine=1)


@pytest.mark.parametrize("make", [
    lambda m: ANDA(m), lambda m: MultiANDA(m), lambda m: make_baseline("MI-FGSM", m, EPS, 3),
], ids=["ANDA", "MultiANDA", "make_baseline"])
def test_model_must_be_a_module(make):
    with pytest.raises(TypeError, match="model should be a torch.nn.Module"):
        make("not a model")


@pytest.mark.parametrize("call,err,match", [
    (lambda: OnlineGaussian(0, 4, 3), ValueError, "n_rows"),
    (lambda: OnlineGaussian(2, 4, 0), ValueError, "max_rank"),
    (lambda: OnlineGaussian(2, 4.0, 3), TypeError, "dim"),
    (lambda: OnlineGaussian(2, 4, 3).update(torch.zeros(3, 1, 4)), ValueError, "g should be a tensor of shape"),
    (lambda: OnlineGaussian(2, 4, 3).sample(2), ValueError, "at least 2 deviation rows"),
    (lambda: translation_thetas(8, 0.3), ValueError, "perfect square"),
    (lambda: translation_thetas(4, -0.1), ValueError, "aug_max"),
    (lambda: translation_grid(4, 0.3, (3, 8)), ValueError, "shape"),
    (lambda: ANDA(tiny_net(), aug_max=2.0), ValueError, "aug_max"),
    (lambda: ANDA(tiny_net()).distribution(*data(), keep_cov=1), TypeError, "keep_cov"),
])
def test_other_public_pieces_reject_bad_arguments(call, err, match):
    with pytest.raises(err, match=match):
        call()
