"""Input handling of ANDA/MultiANDA: float rounding around [0, 1], out-of-range reports, shapes the model
cannot take; and the per-batch random streams of the experiment."""

import pytest
import torch
from torch import nn

from reprozoo.multianda import ANDA, MultiANDA
from reprozoo.multianda.experiment import Config, _attack, batch_seed

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


def _images():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[0, 0, 0, 0], x[1, 2, 0, 0] = 0.0, 1.0
    return x, torch.tensor([1, 2])


@pytest.mark.parametrize("cls", [ANDA, MultiANDA])
def test_rounding_just_outside_the_range_is_clamped(cls):
    x, y = _images()
    atk = cls(_net(), eps=8 / 255, steps=2, n_ens=4, seed=0)
    noisy = x.clone()
    noisy[0, 0, 0, 0] = -2.98e-8  # what a normalise / un-normalise round trip leaves in float32
    noisy[1, 2, 0, 0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    adv = atk(noisy, y)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(adv, atk(x, y))  # the same as the clamped input


def _normalised_below_zero():
    """Normalised images whose un-normalisation x·std + mean lands a hair below 0 (float32 rounding)."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x, _ = _images()
    xn = (x - mean) / std
    zero = (0 - mean) / std  # normalised black
    for _ in range(8):  # step down ulps until the inverse leaves [0, 1] (one or two suffice)
        zero = torch.nextafter(zero, torch.full_like(zero, -10.0))
        if float((zero * std + mean).min()) < 0:
            break
    xn[0, :, 0, 0] = zero.flatten()
    return xn


@pytest.mark.parametrize("cls", [ANDA, MultiANDA])
def test_normalised_images_with_set_normalization_used_are_accepted(cls):
    xn = _normalised_below_zero()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = xn * std + mean
    assert float(raw.min()) < 0.0 and float(raw.min()) > -1e-6  # a rounding-sized excursion
    atk = cls(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval(), eps=8 / 255, steps=2, n_ens=4, seed=0)
    atk.set_normalization_used(MEAN, STD)
    adv = atk(xn, torch.tensor([1, 2]))
    back = adv * std + mean
    assert float(back.min()) >= -1e-6 and float(back.max()) <= 1 + 1e-6


@pytest.mark.parametrize("value, shown", [(1.00001, "1.00001"), (-1e-5, "-1e-05"), (1.0000101, "1.0000101")])
def test_truly_out_of_range_is_rejected_with_enough_digits(value, shown):
    x, y = _images()
    x[0, 0, 1, 1] = value
    with pytest.raises(ValueError, match=r"images should be pixels in \[0, 1\]") as info:
        ANDA(_net(), steps=1, n_ens=1)(x, y)
    assert shown in str(info.value)


@pytest.mark.parametrize("shape, match", [((2, 1, 8, 8), "first convolution takes 3 channels"),
                                          ((2, 3, 9, 9), "do not fit the model")])
@pytest.mark.parametrize("cls", [ANDA, MultiANDA])
def test_images_the_model_cannot_take_are_named(cls, shape, match):
    x = torch.rand(*shape)
    with pytest.raises(ValueError, match=match) as info:
        cls(_net(), steps=1, n_ens=1)(x, torch.tensor([1, 2]))
    assert str(info.value).startswith(f"images of shape {shape}")


def test_batch_seed_is_distinct_per_batch_and_repeatable():
    seeds = [batch_seed(s, b) for s in range(3) for b in range(4)]
    assert len(set(seeds)) == len(seeds)
    assert batch_seed(5, 2) == batch_seed(5, 2)


@pytest.mark.parametrize("attack, method", [("MultiANDA", "MultiANDA"), ("ANDA", "ANDA-sample")])
def test_each_batch_draws_its_own_random_stream(attack, method):
    """Two attack batches holding the same images get different noise / draws (the reference draws
    fresh noise for every batch), and the whole run is repeatable for its seed."""
    x, y = _images()
    xx, yy = torch.cat([x, x]), torch.cat([y, y])
    cfg = Config.from_preset("smoke").replace(attack_batch=2, steps=2, n_ens=4, sample_counts=(2,), chain_noise=0.3,
                                              attacks=tuple(dict.fromkeys((attack, method))), device="cpu")
    out = _attack(attack, _net(), 16 / 255, xx, yy, cfg, seed=0, want_samples=True)
    adv, samples = out[attack]
    assert samples is not None
    assert not torch.equal(samples[:, :2], samples[:, 2:])
    if attack == "MultiANDA":
        assert not torch.equal(adv[:2], adv[2:])
    again = _attack(attack, _net(), 16 / 255, xx, yy, cfg, seed=0, want_samples=True)
    assert torch.equal(out[method][0], again[method][0])
