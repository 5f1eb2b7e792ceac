"""The shipped CIFAR-10 subset as the EVA experiment reads it (counts from data/cifar10_jpeg_subset/PROVENANCE.md)."""

import numpy as np
import pytest
import torch

from reprozoo.datasets import load_cifar10_subset
from reprozoo.eva.experiment import CIFAR_MEAN, EVAConfig, balanced_subset, cifar_tensors


@pytest.fixture(scope="module")
def data():
    return cifar_tensors("cpu")


def test_counts_match_provenance(data):
    assert data.x0.shape == (5000, 3, 32, 32) and data.x1.shape == (5000, 3, 32, 32)
    assert data.x_test.shape == (5000, 3, 32, 32)
    assert torch.equal(torch.bincount(data.y0), torch.full((10,), 500))
    assert torch.equal(torch.bincount(data.y_test), torch.full((10,), 500))
    assert data.classes[0] == "airplane" and len(data.classes) == 10


def test_shards_are_disjoint_and_ordered():
    s0, s1 = load_cifar10_subset((0,)), load_cifar10_subset((1,))
    both = load_cifar10_subset((0, 1))
    assert np.array_equal(both.x_train[:5000], s0.x_train) and np.array_equal(both.x_train[5000:], s1.x_train)
    h0 = {x.tobytes() for x in s0.x_train[:500]}
    assert not any(x.tobytes() in h0 for x in s1.x_train[:500])  # class 0 of the two shards share no image


def test_normalisation_and_subsets(data):
    assert abs(float(data.x1[:, 0].mean())) < 0.2  # roughly centred by the CIFAR-10 mean
    assert CIFAR_MEAN[0] == pytest.approx(0.4914)
    idx = balanced_subset(data.y0, 1000, seed=0)
    assert idx.shape == (1000,) and torch.equal(torch.bincount(data.y0[idx]), torch.full((10,), 100))
    assert not torch.equal(idx, balanced_subset(data.y0, 1000, seed=1))
    small = cifar_tensors("cpu", n_test=200)
    assert torch.equal(torch.bincount(small.y_test), torch.full((10,), 20))


def test_config_bad_values():
    from reprozoo.core.experiment import ConfigError

    with pytest.raises(ConfigError, match="mask_ratio"):
        EVAConfig().replace(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="label_counts"):
        EVAConfig().replace(label_counts=(105,))
    with pytest.raises(ConfigError, match="min_block"):
        EVAConfig().replace(min_block=40)
    with pytest.raises(ConfigError, match="teacher_depth"):
        EVAConfig().replace(teacher_depth=10)
    with pytest.raises(ConfigError, match="model"):
        EVAConfig().replace(model="eva_giant_patch14_224")
