"""Config checks from the tester's reports: repeated tuple entries (duplicate records) and data sizes above
what the shipped sets hold (a result that recorded a size it never used)."""

import inspect

import pytest

from reprozoo.core.experiment import ConfigError
from reprozoo.fedtiny.client import federated_data
from reprozoo.fedtiny.experiment import _N_PUBLIC, DATA_SIZES, Config, _effective_sizes, run


@pytest.mark.parametrize(("key", "value"), [
    ("densities", "0.05,0.05"),
    ("densities", "0.05,0.1,0.050"),  # equal as numbers
    ("candidates", "erk-magnitude,erk-magnitude"),
    ("methods", "FedTiny,Random,FedTiny"),
])
def test_repeated_tuple_entries_are_rejected_naming_the_field(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}=.* repeats "):
        Config.from_preset("smoke").with_strings({key: value})


def test_repeated_seeds_and_datasets_collapse_to_one_each():
    """The shared ExperimentConfig already drops repeats of these two (first occurrence kept)."""
    cfg = Config.from_preset("smoke", datasets=("MNIST", "MNIST")).with_strings({"seeds": "0,1,0"})
    assert cfg.seeds == (0, 1) and cfg.datasets == ("MNIST",)


def test_distinct_tuple_entries_still_pass():
    cfg = Config.from_preset("smoke").with_strings({"densities": "0.05,0.1", "seeds": "0,1",
                                                    "candidates": "erk-magnitude,uniform-random"})
    assert cfg.densities == (0.05, 0.1) and cfg.seeds == (0, 1)


@pytest.mark.parametrize(("key", "value", "most"), [
    ("n_test", "100000000", 10000), ("n_test", "10001", 10000),
    ("n_train", "100000000", 60000), ("n_train", "60001", 60000),
])
def test_sizes_above_the_dataset_are_rejected_up_front(key, value, most):
    with pytest.raises(ConfigError, match=rf"^{key}={value} is more than .*MNIST {most}.*at most {most}"):
        Config.from_preset("smoke").with_strings({key: value})


def test_sizes_up_to_the_dataset_pass_and_all_presets_validate():
    cfg = Config.from_preset("smoke").with_strings({"n_test": "10000", "n_train": "60000"})
    assert (cfg.n_test, cfg.n_train) == (10000, 60000)
    for name in Config.PRESETS:
        Config.from_preset(name)
    # CIFAR-10-subset alone is smaller: 10000 training and 5000 test images
    with pytest.raises(ConfigError, match="n_test=6000 is more than .*CIFAR-10-subset 5000"):
        Config.from_preset("smoke", datasets=("CIFAR-10-subset",), n_test=6000)


def test_data_sizes_match_the_shipped_data():
    from reprozoo.datasets import load_cifar10_subset, load_mnist
    from reprozoo.fedtiny.client import DATASET_INFO

    for name, load in (("MNIST", load_mnist), ("CIFAR-10-subset", load_cifar10_subset)):
        ds = load()
        assert DATA_SIZES[name] == (len(ds.tensors("train")[1]), len(ds.tensors("test")[1]))
        assert DATASET_INFO[name] == (ds.n_classes, tuple(ds.shape))  # what a server without data builds from
    assert inspect.signature(federated_data).parameters["n_public"].default == _N_PUBLIC


def test_effective_sizes():
    both = Config.from_preset("smoke", datasets=("MNIST", "CIFAR-10-subset"), n_train=20000, n_test=8000)
    assert _effective_sizes(both, "MNIST") == (20000, 8000)
    assert _effective_sizes(both, "CIFAR-10-subset") == (10000 - _N_PUBLIC, 5000)
    whole = Config.from_preset("smoke", n_test=0)
    assert _effective_sizes(whole, "MNIST") == (300, 10000)


def test_a_size_above_a_smaller_dataset_is_noted_with_the_value_used(tmp_path):
    cfg = Config.from_preset("smoke", methods=("FedAvg-dense",), datasets=("MNIST", "CIFAR-10-subset"),
                             n_test=6000, rounds=1, t_end=1)
    result = run(cfg, tmp_path)
    notes = [n for n in result.notes if "n_test" in n]
    assert notes == ["CIFAR-10-subset: n_test=6000 is more than its test set; used all 5000 images"]
    assert {r.dataset for r in result.records} == {"MNIST", "CIFAR-10-subset"}
