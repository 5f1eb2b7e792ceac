"""The experiment: config validation, determinism of one training run, the smoke preset end to end."""

import dataclasses
import json

import numpy as np
import pytest

from reprozoo.compound_bn.experiment import (
    Config,
    class_responsibilities,
    load_longtail,
    run,
    train_and_evaluate,
)
from reprozoo.core.experiment import ConfigError


def test_config_presets_and_validation():
    for name in ("smoke", "quick", "standard", "full"):
        Config.from_preset(name)
    quick = Config.from_preset("quick")
    assert quick.datasets == ("CIFAR-10-LT",) and quick.seeds == (0, 1, 2)
    assert quick.imbalance_ratios == (100.0,)
    with pytest.raises(ConfigError, match="losses='focal' is not valid"):
        quick.replace(losses=("focal",))
    with pytest.raises(ConfigError, match="ablations='K=9' is not valid"):
        quick.replace(ablations=("K=9",))
    with pytest.raises(ConfigError, match="depth=10"):
        quick.replace(depth=10)
    with pytest.raises(ConfigError, match="valid datasets"):
        quick.replace(datasets=("ImageNet-LT",))
    with pytest.raises(ConfigError, match="consistency"):
        quick.with_strings({"consistency": "cosine"})
    assert quick.with_strings({"losses": "CE,CE-DRW"}).losses == ("CE", "CE-DRW")


@pytest.fixture(scope="module")
def tiny_data():
    return load_longtail("CIFAR-10-LT", 10.0, n_max=40, data_seed=0)


def test_load_longtail_counts(tiny_data):
    assert tiny_data.class_counts.tolist() == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    assert tiny_data.x_train.shape == (159, 3, 32, 32) and tiny_data.x_test.shape == (5000, 3, 32, 32)
    assert abs(float(tiny_data.x_train.mean())) < 1e-3


def test_training_is_deterministic_and_responsibilities_valid(tiny_data):
    cfg = Config.from_preset("smoke").replace(epochs=1, width=2, batch_size=32)
    data = dataclasses.replace(tiny_data, x_test=tiny_data.x_test[::17], y_test=tiny_data.y_test[::17])
    m1, a1 = train_and_evaluate(cfg, data, "CBN", "LDAM-DRW", seed=3)
    _, a2 = train_and_evaluate(cfg, data, "CBN", "LDAM-DRW", seed=3)
    np.testing.assert_array_equal(a1["per_class"], a2["per_class"])
    assert a1["top1"] == a2["top1"]
    r = class_responsibilities(m1, data.x_test, data.y_test, 10)
    assert r.shape == (10, 2)
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=1e-5)


def test_smoke_preset_end_to_end(tmp_path):
    cfg = Config.from_preset("smoke")
    result = run(cfg, tmp_path)
    methods = {r.method for r in result.records}
    assert methods == {"BN+CE", "CBN+CE"}
    roles = {r.method: r.role for r in result.records}
    assert roles["CBN+CE"] == "method" and roles["BN+CE"] == "baseline"
    for r in result.records:
        if r.metric in ("top1", "many", "medium", "few"):
            assert 0.0 <= r.value <= 100.0
    top1 = [r.value for r in result.records if r.metric == "top1"]
    assert all(t > 10.0 for t in top1)  # better than chance on 10 balanced test classes
    assert {r.metric for r in result.records} >= {"top1", "many", "medium", "few"}
    assert len(result.figures) == 2
    for f in result.figures:
        assert (tmp_path / f).is_file()
    json.dumps(result.to_dict())


def test_a_diverged_training_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    from reprozoo.compound_bn import experiment
    from reprozoo.compound_bn.losses import TrainingDiverged

    def diverging(cfg, data, norm, loss_name, seed, **kw):
        if norm == "CBN":  # as CBN+LDAM-DRW with group_by=samples did at one seed of the quick preset
            raise TrainingDiverged("logits contain NaN or infinite values")
        return train_and_evaluate(cfg, data, norm, loss_name, seed, **kw)

    monkeypatch.setattr(experiment, "train_and_evaluate", diverging)
    cfg = dataclasses.replace(Config.from_preset("smoke"), figures=False)
    result = run(cfg, tmp_path)
    cbn = {r.metric: r.value for r in result.records if r.method == "CBN+CE"}
    assert cbn == {"diverged": 1}
    assert any(r.method == "BN+CE" and r.metric == "top1" for r in result.records)
    assert any("CBN+CE group_by=classes seed 0 diverged" in n for n in result.notes)


def test_trainings_in_processes_give_the_records_of_one_process(tmp_path):
    cfg = Config.from_preset("smoke").replace(seeds=(0, 1), epochs=1, group_by=("classes", "samples"))
    one, two = (run(cfg.replace(n_jobs=n), tmp_path / str(n)) for n in (1, 2))
    timing = ("seconds", "train_cpu_seconds")
    assert [(r.method, r.setting, r.seed, r.metric, r.value) for r in one.records if r.metric not in timing] == \
        [(r.method, r.setting, r.seed, r.metric, r.value) for r in two.records if r.metric not in timing]
    assert len(one.figures) == len(two.figures) == 4  # per-class accuracy and responsibilities, per group_by


@pytest.mark.slow
def test_mnist_lt_cbn_not_worse_than_bn_on_tail():
    """End to end: MNIST-LT (rho = 100), BN vs CBN + dual path over 3 seeds; loose margin."""
    cfg = Config.from_preset("smoke").replace(epochs=6, width=4, batch_size=64, lr=0.05,
                                              many_threshold=100, few_threshold=20)
    data = load_longtail("MNIST-LT", 100.0, n_max=1000, data_seed=0)
    data = dataclasses.replace(data, x_test=data.x_test[::5], y_test=data.y_test[::5])
    few = {"BN": [], "CBN": []}
    for seed in (0, 1, 2):
        for norm in few:
            _, acc = train_and_evaluate(cfg, data, norm, "CE", seed)
            assert acc["top1"] > 30.0
            few[norm].append(acc["few"])
    assert np.mean(few["CBN"]) >= np.mean(few["BN"]) - 10.0, few


@pytest.mark.xfail(strict=True, reason="claim not reproduced at the smoke budget (see the card): top-1 CBN+CE "
                   "16.64 / 17.88 vs BN+CE 20.76 / 19.20 (seeds 0 / 1), mean margin -2.72 pp; the quick "
                   "rerun (60 epochs, 3 seeds) has CBN below BN in every setting")
def test_cbn_raises_top1_over_bn():
    """Paper (abstract, CIFAR-LT tables): CBN with dual-path learning in place of BN raises top-1, by about
    1-2 pp. Asserted at the smoke budget (CIFAR-10-LT rho = 10, n_max 200, ResNet-8 width 4, 3 epochs, CE,
    group_by="classes", seeds 0 and 1): mean top-1 of CBN >= BN's + 1 pp.

    Strict xfail: if a change makes the claim hold, this test fails until the card and the marker are updated.
    """
    cfg = Config.from_preset("smoke").replace(figures=False)
    data = load_longtail("CIFAR-10-LT", cfg.imbalance_ratios[0], cfg.n_max, cfg.data_seed)
    top1 = {norm: [train_and_evaluate(cfg, data, norm, "CE", seed)[1]["top1"] for seed in (0, 1)]
            for norm in ("BN", "CBN")}
    assert np.mean(top1["CBN"]) >= np.mean(top1["BN"]) + 1.0, top1
