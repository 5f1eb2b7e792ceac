"""reprozoo.run / run_all from Python: the same run folder as the CLI; device, threads and units."""

import json
import os
import sys
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

import reprozoo
from reprozoo.cli import app
from reprozoo.core import registry
from reprozoo.core.checks import ConfigError, check_tensor
from reprozoo.core.experiment import ExperimentConfig, TorchExperimentConfig
from reprozoo.core.report import fmt_metric, markdown_tables, metric_unit, primary_comparison
from reprozoo.core.results import Result

runner = CliRunner()


@dataclass
class _Cfg(ExperimentConfig):
    datasets: tuple[str, ...] = ("D",)


@dataclass
class _TorchCfg(TorchExperimentConfig):
    datasets: tuple[str, ...] = ("D",)


def _run(config, out_dir):
    r = Result(name=config.__class__.__name__, preset=config.preset, config=config.to_dict())
    for s in config.seeds:
        r.add("D", "M", "method", "ACC", 0.9, seed=s)
        r.add("D", "B", "baseline", "ACC", 0.5, seed=s)
    return r


def _threads_seen(config, out_dir):
    import torch
    from threadpoolctl import threadpool_info

    r = _run(config, out_dir)
    r.add("D", "M", "method", "torch_threads", torch.get_num_threads())
    r.add("D", "M", "method", "blas_threads", max((p["num_threads"] for p in threadpool_info()), default=1))
    r.notes.append(f"device seen by run: {config.device}")
    return r


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setattr(registry, "MODULES", {})
    monkeypatch.setattr(registry, "_SPECS", {})
    for name, cfg, run in (("plain", _Cfg, _run), ("torchy", _TorchCfg, _threads_seen)):
        registry.register(registry.ExperimentSpec(name=name, title=name, field="test", paper="none", config=cfg,
                                                  run=run, primary_metric="ACC", threads=1))


def _records(folder):
    return json.loads((folder / "result.json").read_text())["records"]


def test_python_run_writes_the_same_folder_as_the_cli(tmp_path, fakes):
    result = reprozoo.run("plain", preset="quick", out=tmp_path / "py", seeds=[0, 1], quiet=True)
    res = runner.invoke(app, ["run", "plain", "--seed", "0", "--seed", "1", "--out", str(tmp_path / "cli"),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert _records(tmp_path / "py") == _records(tmp_path / "cli")
    assert sorted(p.name for p in (tmp_path / "py").iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert isinstance(result, Result) and {r.seed for r in result.records} == {0, 1}
    assert Result.load(tmp_path / "py" / "result.json").records == result.records


@dataclass
class _RangeCfg(ExperimentConfig):
    datasets: tuple[str, ...] = ("D",)
    low: int = 0
    high: int = 1

    def validate(self) -> None:
        super().validate()
        if self.low >= self.high:
            raise ConfigError(f"low={self.low} should be below high={self.high}")


def test_typed_and_string_overrides_are_validated_together(monkeypatch, fakes):
    from reprozoo.core.run import build_config

    registry.register(registry.ExperimentSpec(name="ranged", title="r", field="test", paper="none",
                                              config=_RangeCfg, run=_run, primary_metric="ACC"))
    # low=5 alone breaks low < high; with high="10" (a --set string) applied in the same step it holds
    _, cfg = build_config("ranged", overrides={"low": 5, "high": "10"})
    assert (cfg.low, cfg.high) == (5, 10)
    with pytest.raises(ConfigError, match="low=5 should be below high=3"):
        build_config("ranged", overrides={"low": 5, "high": "3"})


def test_python_run_on_a_real_method(tmp_path):
    result = reprozoo.run("udbgl", preset="smoke", out=tmp_path / "r", overrides={"alpha": 0.01}, quiet=True)
    d = json.loads((tmp_path / "r" / "result.json").read_text())
    assert d["config"]["alpha"] == 0.01 and d["environment"]["device"] == "cpu"
    assert d["environment"]["threads"] == 1
    assert 0 <= d["environment"]["cpu_seconds"] < 60  # user + system CPU of the run, recorded beside seconds
    assert (tmp_path / "r" / "report.md").is_file() and result.records


def test_overrides_accept_values_and_strings(tmp_path, fakes):
    reprozoo.run("plain", out=tmp_path / "a", overrides={"seeds": "3,4"}, quiet=True)
    assert {r["seed"] for r in _records(tmp_path / "a")} == {3, 4}
    with pytest.raises(ConfigError, match="valid keys"):
        reprozoo.run("plain", out=tmp_path / "b", overrides={"nope": 1})
    with pytest.raises(ConfigError, match="given twice"):
        reprozoo.run("plain", out=tmp_path / "c", seeds=[1], overrides={"seeds": (2,)})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_unusable_out_is_a_config_error_before_running(tmp_path, fakes):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("k")
    with pytest.raises(ConfigError, match="not a previous run"):
        reprozoo.run("plain", out=tmp_path / "x")


def test_device_is_resolved_recorded_and_passed_to_the_run(tmp_path, fakes):
    result = reprozoo.run("torchy", out=tmp_path / "r", device="auto", quiet=True)
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert result.environment["device"].startswith(expected)
    assert any(n.endswith(expected) or expected in n for n in result.notes)
    assert result.config["device"].startswith(expected)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_on_a_cpu_machine_is_a_usage_error(tmp_path, fakes):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        reprozoo.run("torchy", out=tmp_path / "r", device="cuda")
    res = runner.invoke(app, ["run", "torchy", "--device", "cuda", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "CUDA is not available" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu"])
def test_bad_device_string_exits_2(tmp_path, fakes, bad):
    res = runner.invoke(app, ["run", "torchy", "--device", bad, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "auto, cpu, cuda or cuda:N" in res.output


def test_device_on_a_numpy_method_exits_2(tmp_path, fakes):
    res = runner.invoke(app, ["run", "plain", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no device setting" in res.output


def test_threads_are_applied_during_the_run_recorded_and_restored(tmp_path, fakes):
    import torch

    before = torch.get_num_threads()
    result = reprozoo.run("torchy", out=tmp_path / "r", threads=1, quiet=True)
    seen = {r.metric: r.value for r in result.records if r.metric.endswith("threads")}
    assert seen == {"torch_threads": 1, "blas_threads": 1}
    assert result.environment["threads"] == 1
    assert torch.get_num_threads() == before
    res = runner.invoke(app, ["run", "torchy", "--threads", "0", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "threads" in res.output


def test_threads_over_the_cpu_count_are_capped_with_a_warning(tmp_path, fakes):
    cpus = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=f"threads={cpus + 7} is more than this machine's {cpus} CPUs"):
        result = reprozoo.run("torchy", out=tmp_path / "r", threads=cpus + 7, quiet=True)
    assert result.environment["threads"] == cpus


def test_run_all_from_python(tmp_path, fakes):
    entries = reprozoo.run_all("quick", tmp_path / "all", seeds=[0], quiet=True)
    assert [e["status"] for e in entries] == ["ok", "ok"]
    assert (tmp_path / "all" / "summary.md").is_file() and (tmp_path / "all" / "plain" / "result.json").is_file()
    header = (tmp_path / "all" / "summary.md").read_text().splitlines()[2]
    assert header.startswith("preset `quick`; seeds 0; 1 method(s) at a time on ") and " at git " in header


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_run_all_with_jobs_lets_idle_openmp_threads_sleep(tmp_path, fakes, monkeypatch, user_value):
    if user_value is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user_value)
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh `reprozoo run all` process
    reprozoo.run_all("quick", tmp_path / "all", seeds=[0], quiet=True, jobs=2)
    assert os.environ["OMP_WAIT_POLICY"] == (user_value or "PASSIVE")


# -- units and formats -----------------------------------------------------------------------------
def test_units_and_integer_formatting():
    assert metric_unit("train_flops") == ("GFLOPs", 1e-9) and metric_unit("comm_bytes") == ("MB", 1e-6)
    assert fmt_metric("best_epoch", [26.0]) == "26"
    assert fmt_metric("best_epoch", [26.0, 27.0]) == "26.5 ± 0.7"
    assert fmt_metric("train_flops", [2.5e9, 3.5e9]) == "3.000 ± 0.707"
    r = Result(name="x", preset="quick", config={})
    r.add("D", "M", "method", "best_epoch", 26, seed=0)
    r.add("D", "M", "method", "comm_bytes", 12_000_000, seed=0)
    md = markdown_tables(r)
    assert "over 1 seed\n" in md and "comm_bytes (MB)" in md and "| 26 | 12.000 |" in md


def test_summary_names_only_qualifying_baselines():
    r = Result(name="x", preset="quick", config={"budget": 10})
    for method, role, thr, res in (("M", "method", 5.0, 9.0), ("Cheap", "baseline", 4.0, 10.0),
                                   ("Spender", "baseline", 9.0, 27.0)):
        r.add("D", method, role, "throughput", thr)
        r.add("D", method, role, "resource", res)
    assert primary_comparison(r, "throughput")[0][3] == "Spender"
    keeps = primary_comparison(r, "throughput", qualifies=lambda cfg, st: st["resource"][0] <= cfg["budget"])
    assert keeps[0][3] == "Cheap"
    r.add("D2", "M", "method", "throughput", 5.0)  # a block where the method overspends: named as such
    r.add("D2", "M", "method", "resource", 12.0)
    r.add("D2", "Cheap", "baseline", "throughput", 4.0)
    r.add("D2", "Cheap", "baseline", "resource", 10.0)
    rows = primary_comparison(r, "throughput", qualifies=lambda cfg, st: st["resource"][0] <= cfg["budget"])
    assert rows[1][:2] == ("D2", "M (does not qualify)")


def test_summary_compares_the_headline_method_not_its_best_ablation():
    r = Result(name="x", preset="quick", config={})
    for method, role, acc in (("M", "method", 0.7), ("M-ablation", "method", 0.9), ("B", "baseline", 0.8)):
        r.add("D", method, role, "ACC", acc)
    assert primary_comparison(r, "ACC") == [("D", "M-ablation", 0.9, "B", 0.8)]
    assert primary_comparison(r, "ACC", headline=("M",)) == [("D", "M", 0.7, "B", 0.8)]
    assert registry.get("industry").headline == ("ExpertKnowledgeAssigner",)


def test_rsd4_summary_filter_is_declared():
    spec = registry.get("rsd4")
    assert spec.qualifies is not None
    assert spec.qualifies({}, {"budget_violation": (0.0, 0.0, 1)}) and not spec.qualifies(
        {}, {"budget_violation": (1.7, 0.0, 1)})


# -- tensor checks ----------------------------------------------------------------------------------
def test_check_tensor():
    import torch

    x = torch.zeros(2, 3, 4, 4)
    assert check_tensor(x, "images", ndim=4, shape=(None, 3, 4, 4), floating=True) is x
    with pytest.raises(ValueError, match="images should have shape"):
        check_tensor(x, "images", shape=(None, 1, 4, 4))
    with pytest.raises(TypeError, match="labels should be an integer tensor"):
        check_tensor(x, "labels", floating=False)
    with pytest.raises(ValueError, match="NaN"):
        check_tensor(torch.tensor([1.0, float("nan")]), "x")
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_tensor([1.0], "x")


def test_one_dataset_string_and_numpy_seeds_are_taken_as_given(tmp_path, fakes):
    import numpy as np

    result = reprozoo.run("plain", out=tmp_path / "r", datasets="D", seeds=[np.int64(3)], quiet=True)
    assert result.config["datasets"] == ["D"] and {r.seed for r in result.records} == {3}
    result = reprozoo.run("plain", out=tmp_path / "s", seeds=np.int32(4), quiet=True)
    assert {r.seed for r in result.records} == {4}
    with pytest.raises(ConfigError, match="jobs='2' should be an int"):
        reprozoo.run_all("quick", tmp_path / "all", jobs="2")
