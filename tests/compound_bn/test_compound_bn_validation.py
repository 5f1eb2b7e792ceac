"""Bad input is rejected up front with errors that name the argument: the experiment config (every field,
before any training), the losses, the dual-path loss, the layer's K alias and convert_bn_to_cbn."""

import warnings

import pytest
import torch
from torch import nn

from reprozoo.compound_bn import (
    CompoundBatchNorm2d,
    DualPathLoss,
    LDAMLoss,
    LongTailLoss,
    convert_bn_to_cbn,
    dual_path_loss,
)
from reprozoo.compound_bn.experiment import Config
from reprozoo.core.experiment import ConfigError
from reprozoo.models import small_cnn


@pytest.fixture(scope="module")
def smoke():
    return Config.from_preset("smoke")


# -- item 1/2: every out-of-domain --set value is a ConfigError naming the field and its range -----------
@pytest.mark.parametrize("key,value,match", [
    ("min_weight", "0.9", r"min_weight=0\.9 .*\[0, 1/K\) = \[0, 0\.5\)"),
    ("min_weight", "-0.1", r"min_weight=-0\.1 should be >= 0"),
    ("weight_decay", "-1", r"weight_decay=-1\.0 .*>= 0"),
    ("momentum", "2", r"momentum=2\.0 should be < 1"),
    ("momentum", "-0.5", r"momentum=-0\.5 should be >= 0"),
    ("cbn_momentum", "0", r"cbn_momentum=0\.0 should be > 0"),
    ("cbn_momentum", "1.5", r"cbn_momentum=1\.5 should be <= 1"),
    ("lr", "0", r"lr=0\.0 .*> 0"),
    ("lr", "-0.1", r"lr=-0\.1 .*> 0"),
    ("epochs", "0", r"epochs=0 .*>= 1"),
    ("width", "0", r"width=0 .*>= 1"),
    ("batch_size", "1", r"batch_size=1 .*>= 2"),
    ("n_max", "-5", r"n_max=-5 .*>= 0"),
    ("n_max", "100000", r"n_max=100000 is out of range for CIFAR-10-LT.*1000 training images.*\[0, 1000\]"),
    ("n_max", "1001", r"n_max=1001 is out of range for CIFAR-10-LT"),
    ("data_seed", "-1", r"data_seed=-1 should be >= 0"),
    ("data_seed", str(2**32), r"data_seed=4294967296 should be < 4294967296"),
    ("warmup_epochs", "-1", r"warmup_epochs=-1 should be >= 0"),
    ("warmup_epochs", "4", r"warmup_epochs=4 .*\[0, epochs\] = \[0, 3\]"),
    ("decay_at", "0.5,160", r"decay_at\[1\]=160\.0 should be <= 1"),
    ("drw_at", "1.5", r"drw_at=1\.5 should be <= 1"),
    ("n_components", "0", r"n_components=0 .*>= 1"),
    ("n_components", "11", r"n_components=11 .*<= the 10 classes of CIFAR-10-LT"),
    ("aux_weight", "-1", r"aux_weight=-1\.0 .*>= 0"),
    ("consistency_weight", "-1", r"consistency_weight=-1\.0 .*>= 0"),
    ("many_threshold", "0", r"many_threshold=0 .*>= 1"),
    ("few_threshold", "0", r"few_threshold=0 should be >= 1"),
    ("few_threshold", "61", r"few_threshold=61 .*\[1, many_threshold\] = \[1, 60\]"),
    ("eval_batch_size", "0", r"eval_batch_size=0 .*>= 1"),
    ("num_threads", "-1", r"num_threads=-1 .*>= 0"),
    ("imbalance_ratios", "0.5", r"imbalance_ratios\[0\]=0\.5 should be >= 1"),
    ("losses", "focal", r"losses='focal' is not valid; choose one of \['CE', 'CE-DRW', 'LDAM-DRW'\]"),
    ("ablations", "K=9", r"ablations='K=9' is not valid; choose one of \['no-dual'"),
    ("consistency", "cosine", r"consistency='cosine' is not valid; choose one of \['kl', 'mse', 'none'\]"),
    ("group_by", "size", r"group_by='size' is not valid; choose one of \['classes', 'samples'\]"),
    ("depth", "10", r"depth=10 should be 6n\+2"),
    ("depth", "2", r"depth=2 should be >= 8"),
])
def test_config_rejects_out_of_domain_values_up_front(smoke, key, value, match):
    with pytest.raises(ConfigError, match=match):
        smoke.with_strings({key: value})


def test_config_min_weight_range_uses_the_largest_k_trained(smoke):
    assert smoke.with_strings({"min_weight": "0.4"}).min_weight == 0.4  # K = 2: [0, 0.5)
    with pytest.raises(ConfigError, match=r"min_weight=0\.4 .*\[0, 0\.3333\) for K = 3 \(the K=3 ablation\)"):
        smoke.with_strings({"min_weight": "0.4", "ablations": "K=3"})
    with pytest.raises(ConfigError, match=r"min_weight=0\.3 .*\[0, 0\.25\) for K = 4"):
        smoke.with_strings({"min_weight": "0.3", "n_components": "4"})


@pytest.mark.parametrize("key", ["imbalance_ratios", "losses"])
def test_config_rejects_empty_tuples(smoke, key):
    with pytest.raises(ConfigError, match=f"{key} is empty"):
        smoke.with_strings({key: ""})


@pytest.mark.parametrize("key,value", [("imbalance_ratios", "10,10"), ("losses", "CE,CE"),
                                       ("ablations", "no-dual,no-dual")])
def test_config_rejects_repeated_items(smoke, key, value):
    with pytest.raises(ConfigError, match=f"{key}=.*repeats "):
        smoke.with_strings({key: value})


@pytest.mark.parametrize("key,value,match", [
    ("epochs", 2.5, "epochs should be an int, got float"),
    ("augment", 1, "augment should be a bool, got int"),
    ("lr", float("nan"), "lr=nan should be finite"),
    ("imbalance_ratios", (float("inf"),), r"imbalance_ratios\[0\]=inf should be finite"),
    ("losses", "CE", "losses='CE' should be a tuple"),
    ("consistency", 0, "consistency should be a string"),
    ("cbn_momentum", "0.1", "cbn_momentum should be a real number, got str"),
])
def test_config_rejects_wrong_types(smoke, key, value, match):
    with pytest.raises(ConfigError, match=match):
        smoke.replace(**{key: value})


def test_config_accepts_valid_edge_values(smoke):
    for name in ("smoke", "quick", "standard", "full"):
        Config.from_preset(name)
    cfg = smoke.with_strings({"cbn_momentum": "none", "decay_at": "", "ablations": "", "momentum": "0",
                              "weight_decay": "0", "min_weight": "0", "warmup_epochs": "3", "n_components": "10"})
    assert cfg.cbn_momentum is None and cfg.decay_at == () and cfg.ablations == () and cfg.n_components == 10
    # without the dual path there are no groups, so K may exceed the number of classes
    assert smoke.with_strings({"dual_path": "false", "n_components": "12", "min_weight": "0"}).n_components == 12


# -- item 3: LongTailLoss / LDAMLoss / DualPathLoss validate their inputs --------------------------------
COUNTS = [50, 20, 5]


@pytest.mark.parametrize("name", ["CE", "CE-DRW", "LDAM-DRW"])
def test_longtail_loss_bad_inputs_raise_named_errors(name):
    loss = LongTailLoss(name, COUNTS, drw_epoch=0)
    loss.set_epoch(0)
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    assert torch.isfinite(loss(logits, y))
    with pytest.raises(ValueError, match=r"target should lie in \[0, 3\).*\[0, 5\]"):
        loss(logits, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match=r"target should lie in \[0, 3\).*\[-1, 2\]"):
        loss(logits, torch.tensor([0, -1, 2, 1]))
    with pytest.raises(ValueError, match=r"logits should have shape \(N, C\) = \(N, 3\).*\(4, 5\)"):
        loss(torch.randn(4, 5), y)
    with pytest.raises(ValueError, match=r"logits should have shape .*\(12,\)"):
        loss(torch.randn(12), y)
    bad = logits.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="logits contain NaN"):
        loss(bad, y)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="logits contain NaN or infinite"):
        loss(bad, y)
    with pytest.raises(ValueError, match=r"target should have shape \(N,\) = \(4,\).*\(3,\)"):
        loss(logits, y[:3])
    with pytest.raises(TypeError, match="target should hold integer class labels.*float32"):
        loss(logits, y.float())
    with pytest.raises(TypeError, match="logits should be a floating-point tensor"):
        loss(logits.long(), y)
    with pytest.raises(TypeError, match="logits should be a torch.Tensor"):
        loss(logits.tolist(), y)


def test_ldam_loss_checks_its_inputs():
    loss = LDAMLoss(COUNTS)
    with pytest.raises(ValueError, match=r"target should lie in \[0, 3\)"):
        loss(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"logits should have shape \(N, C\) = \(N, 3\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.fixture(scope="module")
def cbn_model():
    torch.manual_seed(0)
    return small_cnn(3, 1, channels=(4, 8, 8), norm_layer=lambda c: CompoundBatchNorm2d(c, 2))


def test_dual_path_loss_rejects_float_labels_and_class_count_mismatch(cbn_model):
    x, y = torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.isfinite(DualPathLoss(COUNTS, 2)(cbn_model, x, y).loss)
    with pytest.raises(TypeError, match="y should hold integer class labels.*float32"):
        DualPathLoss(COUNTS, 2)(cbn_model, x, y.float())
    with pytest.raises(ValueError, match=r"logits of shape \(6, 3\).*class_counts\) has 5 classes"):
        DualPathLoss([50, 20, 10, 5, 5], 2)(cbn_model, x, y)
    with pytest.raises(ValueError, match=r"logits of shape \(6, 3\).*has 2 classes"):
        DualPathLoss([50, 20], 2)(cbn_model, x, y % 2)
    with pytest.raises(ValueError, match="x should be a non-empty batch"):
        DualPathLoss(COUNTS, 2)(cbn_model, x[:0], y[:0])
    with pytest.raises(TypeError, match="class_to_group should be an integer tensor"):
        dual_path_loss(cbn_model, x, y, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"class_to_group should have shape \(C,\)"):
        dual_path_loss(cbn_model, x, y, torch.zeros(3, 1, dtype=torch.long))


# -- item 4: the K alias and convert_bn_to_cbn on a model without BatchNorm ------------------------------
def test_cbn_num_components_alias_conflict_raises():
    with pytest.raises(TypeError, match=r"num_components=2 and n_components=3 disagree.*alias"):
        CompoundBatchNorm2d(8, num_components=2, n_components=3)
    with pytest.raises(TypeError, match="disagree"):
        CompoundBatchNorm2d(8, 2, n_components=3)
    assert CompoundBatchNorm2d(8, num_components=3, n_components=3).num_components == 3
    assert CompoundBatchNorm2d(8, n_components=3).num_components == 3
    assert CompoundBatchNorm2d(8, 3).num_components == 3
    assert CompoundBatchNorm2d(8).num_components == 2


def test_convert_bn_to_cbn_warns_when_there_is_no_batchnorm():
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="no BatchNorm layers found"):
        assert convert_bn_to_cbn(plain, 2) is plain
    with pytest.warns(UserWarning, match="unsupported BatchNorm types present: BatchNorm3d"):
        convert_bn_to_cbn(nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2)), 2)
    converted = convert_bn_to_cbn(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), 2)
    with pytest.warns(UserWarning, match="already holds 1 compound BN layer"):
        convert_bn_to_cbn(converted, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with BatchNorm converts without a warning
        convert_bn_to_cbn(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), 2)


def test_n_max_bound_follows_the_chosen_data_sets(smoke):
    assert smoke.replace(n_max=1000).n_max == 1000  # the CIFAR-10 subset's full class is allowed
    assert smoke.replace(datasets=("MNIST-LT",), n_max=5421).n_max == 5421
    with pytest.raises(ConfigError, match=r"n_max=5422 is out of range for MNIST-LT.*\[0, 5421\]"):
        smoke.replace(datasets=("MNIST-LT",), n_max=5422)
    with pytest.raises(ConfigError, match=r"n_max=2000 is out of range for CIFAR-10-LT"):
        smoke.replace(datasets=("MNIST-LT", "CIFAR-10-LT"), n_max=2000)


def test_n_max_bound_matches_the_shipped_cifar_subset():
    """The constant is the data's real smallest class: make_longtail accepts it and rejects one more."""
    import numpy as np

    from reprozoo.compound_bn.experiment import _TRAIN_PER_CLASS
    from reprozoo.datasets import load_cifar10_subset
    from reprozoo.datasets.longtail import make_longtail

    y = load_cifar10_subset().y_train
    assert int(np.bincount(y).min()) == _TRAIN_PER_CLASS["CIFAR-10-LT"]
    make_longtail(y, 100.0, n_max=_TRAIN_PER_CLASS["CIFAR-10-LT"])
    with pytest.raises(ValueError, match="n_max"):
        make_longtail(y, 100.0, n_max=_TRAIN_PER_CLASS["CIFAR-10-LT"] + 1)
