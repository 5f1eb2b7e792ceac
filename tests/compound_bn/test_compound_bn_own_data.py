"""A user's own images: ``load_images`` (.npz) and ``--dataset <file>`` of ``reprozoo run compound_bn``."""

import numpy as np
import pytest
from typer.testing import CliRunner

import reprozoo
from reprozoo.cli import app
from reprozoo.compound_bn.experiment import CompoundBNConfig, load_longtail
from reprozoo.core.checks import ConfigError
from reprozoo.datasets import load_cifar10_subset, load_images


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory):
    """200 training images per class and 50 test images per class of the shipped CIFAR-10 subset, as a file."""
    ds = load_cifar10_subset((0,))
    keep = np.concatenate([np.flatnonzero(ds.y_train == c)[:200] for c in range(10)])
    test = np.concatenate([np.flatnonzero(ds.y_test == c)[:50] for c in range(10)])
    path = tmp_path_factory.mktemp("own") / "mine.npz"
    np.savez(path, x_train=ds.x_train[keep], y_train=ds.y_train[keep], x_test=ds.x_test[test],
             y_test=ds.y_test[test], classes=np.array(ds.classes))
    return path


def test_load_images_and_longtail_from_a_file(images_npz):
    ds = load_images(images_npz)
    assert ds.name == "mine" and ds.shape == (3, 32, 32) and ds.n_classes == 10 and len(ds.y_train) == 2000
    data = load_longtail(str(images_npz), 10.0, n_max=100, data_seed=0)
    assert data.class_counts.max() == 100 and data.class_counts.min() == 10 and data.flip
    assert data.x_test.shape == (500, 3, 32, 32)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("y_test"), "lacks y_test"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "x_train should be uint8"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train should be int classes"),
    (lambda a: a.update(x_test=a["x_test"][:, :16]), "same"),
    (lambda a: a.update(y_train=a["y_train"] - 1), "labels should be classes"),
])
def test_load_images_names_what_is_wrong(images_npz, tmp_path, change, match):
    with np.load(images_npz) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_images(path)


def test_config_accepts_an_image_file_and_rejects_others(images_npz, tmp_path):
    cfg = CompoundBNConfig.from_preset("smoke", datasets=(str(images_npz),))
    assert cfg.datasets == (str(images_npz),)
    with pytest.raises(ConfigError, match="no such file"):
        CompoundBNConfig.from_preset("smoke", datasets=(str(tmp_path / "nope.npz"),))
    with pytest.raises(ConfigError, match=".npz of images"):
        CompoundBNConfig.from_preset("smoke", datasets=("SVHN-LT",))


def test_run_on_an_image_file_from_python_and_the_cli(images_npz, tmp_path):
    small = {"epochs": 1, "n_max": 60, "many_threshold": 40, "few_threshold": 15}
    result = reprozoo.run("compound_bn", preset="smoke", out=tmp_path / "py", datasets=[str(images_npz)],
                          overrides=small, device="cpu", quiet=True)
    assert {r.dataset for r in result.records} == {str(images_npz)}
    assert {r.method for r in result.records if r.metric == "top1"} == {"BN+CE", "CBN+CE"}
    args = ["run", "compound_bn", "--preset", "smoke", "--dataset", str(images_npz), "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "cli")] + [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "result.json").is_file()
