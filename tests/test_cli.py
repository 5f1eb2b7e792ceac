"""The CLI as a user calls it (typer's CliRunner, in process)."""

import json
import types
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from reprozoo.cli import app
from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig
from reprozoo.core.results import Result

runner = CliRunner()


def test_list_shows_every_method():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in registry.names():
        assert name in res.output


def test_unknown_method_exits_2_listing_valid():
    res = runner.invoke(app, ["run", "nosuch"])
    assert res.exit_code == 2
    assert "valid methods" in res.output and "udbgl" in res.output


def test_info_unknown_exits_2():
    assert runner.invoke(app, ["info", "nosuch"]).exit_code == 2


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--preset", "huge"], "valid presets"),
        (["--dataset", "NoSuchSet"], "valid datasets"),
        (["--set", "nosuchkey=1"], "valid keys"),
        (["--set", "novalue"], "key=value"),
    ],
)
def test_udbgl_usage_errors_exit_2(args, expected, tmp_path):
    res = runner.invoke(app, ["run", "udbgl", *args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert not (tmp_path / "r" / "result.json").exists()


def test_udbgl_end_to_end_on_a_shipped_set(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "udbgl", "--preset", "smoke", "--dataset", "MSRC-v1", "--seed", "3",
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert d["name"] == "udbgl" and d["preset"] == "smoke"
    recs = d["records"]
    assert {r["dataset"] for r in recs} == {"MSRC-v1"} and {r["seed"] for r in recs} == {3}
    udbgl_nmi = [r["value"] for r in recs if r["method"] == "UDBGL" and r["metric"] == "NMImax"]
    assert udbgl_nmi and 0.3 < udbgl_nmi[0] <= 1.0
    assert {r["role"] for r in recs} == {"method", "baseline"}
    assert (out / "report.md").read_text().startswith("# udbgl (smoke)")
    for fig in d["figures"]:
        assert (out / fig).is_file() and fig.endswith(".png")


# -- run all: a failing method is reported and does not stop the others -----------------
@dataclass
class _Cfg(ExperimentConfig):
    pass


def _fake_module(fail: bool):
    def run(config, out_dir):
        if fail:
            raise RuntimeError("deliberate failure")
        r = Result(name="ok", preset=config.preset, config=config.to_dict())
        for s in config.seeds:
            r.add("D", "M", "method", "ACC", 0.9, seed=s)
            r.add("D", "B", "baseline", "ACC", 0.5, seed=s)
        return r

    return types.SimpleNamespace(Config=_Cfg, run=run)


def test_run_all_reports_failures_and_continues(tmp_path, monkeypatch):
    specs = {
        n: registry.ExperimentSpec(n, n, "test", "none", ("D",), ("quick",), "ACC") for n in ("bad", "good")
    }
    monkeypatch.setattr(registry, "REGISTRY", specs)
    monkeypatch.setattr(registry, "load", lambda name: _fake_module(fail=(name == "bad")))
    res = runner.invoke(app, ["run", "all", "--out", str(tmp_path), "--quiet", "--seed", "0", "--seed", "1"])
    assert res.exit_code == 1
    summary = (tmp_path / "summary.md").read_text()
    assert "FAILED: RuntimeError: deliberate failure" in summary
    assert "| D | M | 0.900 | B | 0.500 |" in summary
    assert (tmp_path / "good" / "result.json").is_file()
    assert not (tmp_path / "bad" / "result.json").exists()


def test_run_all_rejects_set(tmp_path):
    res = runner.invoke(app, ["run", "all", "--set", "a=1", "--out", str(tmp_path)])
    assert res.exit_code == 2


def test_udbgl_runs_on_a_users_mat_file(tmp_path):
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(0)
    y = np.repeat([1, 2, 3], 20)
    centres = rng.normal(size=(3, 4)) * 5
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0] = centres[y - 1] + rng.normal(size=(60, 4))
    cell[0, 1] = (centres[y - 1] @ rng.normal(size=(4, 6)) + rng.normal(size=(60, 6))).T  # stored d x n
    path = tmp_path / "blobs.mat"
    scipy.io.savemat(path, {"X": cell, "Y": y})
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "udbgl", "--preset", "smoke", "--dataset", str(path), "--out", str(out),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    recs = json.loads((out / "result.json").read_text())["records"]
    assert {r["dataset"] for r in recs} == {"blobs"}
    acc = [r["value"] for r in recs if r["method"] == "UDBGL" and r["metric"] == "ACC"]
    assert acc[0] > 0.9  # well-separated blobs


def _single_fake(monkeypatch, behaviour):
    spec = registry.ExperimentSpec("fake", "fake", "test", "none", ("D",), ("quick",), "ACC")
    monkeypatch.setattr(registry, "REGISTRY", {"fake": spec})

    def run(config, out_dir):
        (out_dir / "figures").mkdir()
        (out_dir / "figures" / "half.png").write_bytes(b"")
        behaviour()

    monkeypatch.setattr(registry, "load", lambda name: types.SimpleNamespace(Config=_Cfg, run=run))


def test_failure_inside_a_run_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    def boom():
        raise ValueError("views[0] is constant")

    _single_fake(monkeypatch, boom)
    res = runner.invoke(app, ["run", "fake", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "fake failed: ValueError: views[0] is constant" in res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor a partial one


def test_interrupted_run_leaves_previous_run_intact(tmp_path, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    out = tmp_path / "r"
    out.mkdir()
    (out / "result.json").write_text("{}")
    _single_fake(monkeypatch, interrupt)
    res = runner.invoke(app, ["run", "fake", "--out", str(out)])
    assert res.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]


def test_out_pointing_at_a_file_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["run", "udbgl", "--preset", "smoke", "--out", str(f)])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_set_non_finite_float_exits_2(tmp_path):
    res = runner.invoke(app, ["run", "udbgl", "--set", "alpha=nan", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "finite float" in res.output
