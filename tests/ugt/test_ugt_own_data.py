"""A user's own graph: ``load_graph`` (.npz / .pt) and ``--dataset <file>`` of ``reprozoo run ugt``."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import reprozoo
from reprozoo.cli import app
from reprozoo.core.checks import ConfigError
from reprozoo.datasets import load_graph, load_planetoid
from reprozoo.ugt.experiment import UGTConfig

KEYS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("Cora")


def _arrays(g):
    return {k: getattr(g, k).numpy() for k in KEYS}


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_load_graph_round_trips_cora(cora, tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npz":
        np.savez(path, **_arrays(cora))
    else:
        torch.save({k: getattr(cora, k) for k in KEYS}, path)
    g = load_graph(path)
    assert g.name == "mine" and g.num_classes == cora.num_classes
    for k in KEYS:
        assert torch.equal(getattr(g, k), getattr(cora, k)), k
    assert g.x.dtype == torch.float32 and g.y.dtype == torch.int64


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("val_mask"), "should hold"),
    (lambda a: a.update(train_mask=a["train_mask"].astype(np.int64)), "train_mask should be a bool array"),
    (lambda a: a.update(test_mask=np.zeros_like(a["test_mask"])), "test_mask selects no node"),
    (lambda a: a.update(edge_index=a["edge_index"] + 10_000), "node ids in"),
    (lambda a: a.update(y=a["y"][:-1]), "y should be an int array"),
    (lambda a: a.update(x=np.full_like(a["x"], np.nan)), "NaN"),
])
def test_load_graph_names_what_is_wrong(cora, tmp_path, change, match):
    arrays = _arrays(cora)
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_graph(path)


def test_load_graph_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "missing.npz")
    (tmp_path / "g.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=".npz or .pt"):
        load_graph(tmp_path / "g.csv")


def test_config_accepts_a_graph_file_and_rejects_a_missing_one(cora, tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays(cora))
    assert UGTConfig.from_preset("smoke", datasets=(str(path),)).datasets == (str(path),)
    with pytest.raises(ConfigError, match="no such file"):
        UGTConfig.from_preset("smoke", datasets=(str(tmp_path / "nope.npz"),))
    with pytest.raises(ConfigError, match="graph file"):
        UGTConfig.from_preset("smoke", datasets=("Karate",))


def test_run_on_a_graph_file_from_python_and_the_cli(cora, tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays(cora))
    small = {"epochs": 3, "hidden": 8, "edge_popup": False}
    result = reprozoo.run("ugt", preset="smoke", out=tmp_path / "py", datasets=[str(path)], overrides=small,
                          device="cpu", quiet=True)
    assert {r.dataset for r in result.records} == {str(path)}
    assert any(r.role == "method" and r.metric == "top1" for r in result.records)
    res = CliRunner().invoke(app, ["run", "ugt", "--preset", "smoke", "--dataset", str(path), "--set", "epochs=3",
                                   "--set", "hidden=8", "--set", "edge_popup=false", "--device", "cpu", "--quiet",
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "result.json").is_file()


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_corrupt_graph_file_is_a_usage_error_before_running(tmp_path, content):
    """A file that is not a graph archive exits 2 before anything runs (it was a failed run, exit 1)."""
    from typer.testing import CliRunner

    from reprozoo.cli import app

    bad = tmp_path / "c.npz"
    bad.write_bytes(content)
    res = CliRunner().invoke(app, ["run", "ugt", "--preset", "smoke", "--dataset", str(bad),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "cannot be read" in text and "allow_pickle" not in text
    assert not (tmp_path / "r").exists()


def test_graph_file_with_equal_masks_is_a_usage_error_before_running(cora, tmp_path):
    """Identical validation and test masks exit 2 before anything runs (it failed inside the run, exit 1)."""
    from typer.testing import CliRunner

    from reprozoo.cli import app

    arrays = _arrays(cora)
    arrays["test_mask"] = arrays["val_mask"]
    path = tmp_path / "same.npz"
    np.savez(path, **arrays)
    res = CliRunner().invoke(app, ["run", "ugt", "--preset", "smoke", "--dataset", str(path),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "val_mask and test_mask select the same nodes" in " ".join(res.output.split())
    assert not (tmp_path / "r").exists()
