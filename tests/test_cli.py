"""The CLI as a user calls it (typer's CliRunner, in process)."""

import json
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from reprozoo.cli import app
from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig
from reprozoo.core.results import Result

runner = CliRunner()


def _flat(res) -> str:
    """The output with rich's line wrapping undone (long paths wrap messages at 160 columns)."""
    return " ".join(res.output.split())


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
    datasets: tuple[str, ...] = ("D",)


def _fake_registry(monkeypatch, methods):
    """Replace the registry by ``{name: (Config, run)}`` for one test."""
    monkeypatch.setattr(registry, "MODULES", {})
    monkeypatch.setattr(registry, "_SPECS", {})
    for name, (config, run) in methods.items():
        registry.register(registry.ExperimentSpec(name=name, title=name, field="test", paper="none", config=config,
                                                  run=run, primary_metric="ACC"))


def _fake_module(fail: bool):
    def run(config, out_dir):
        if fail:
            raise RuntimeError("deliberate failure")
        r = Result(name="ok", preset=config.preset, config=config.to_dict())
        for s in config.seeds:
            r.add("D", "M", "method", "ACC", 0.9, seed=s)
            r.add("D", "B", "baseline", "ACC", 0.5, seed=s)
        return r

    return types.SimpleNamespace(run=run)


def test_run_all_reports_failures_and_continues(tmp_path, monkeypatch):
    _fake_registry(monkeypatch, {n: (_Cfg, _fake_module(fail=(n == "bad")).run) for n in ("bad", "good")})
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
    def run(config, out_dir):
        (out_dir / "figures").mkdir()
        (out_dir / "figures" / "half.png").write_bytes(b"")
        behaviour()

    _fake_registry(monkeypatch, {"fake": (_Cfg, run)})


def test_failure_inside_a_run_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    def boom():
        raise ValueError("views[0] is constant")

    _single_fake(monkeypatch, boom)
    res = runner.invoke(app, ["run", "fake", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "fake failed: ValueError: views[0] is constant" in res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor a partial one


def _previous_run(folder, files=("result.json",)):
    """Make ``folder`` look like a previous run: ``files`` among result.json, report.md, figures/."""
    folder.mkdir(exist_ok=True)
    if "result.json" in files:
        (folder / "result.json").write_text(json.dumps({"name": "old", "preset": "quick", "records": []}))
    if "report.md" in files:
        (folder / "report.md").write_text("# old (quick)\n")
    if "figures" in files:
        (folder / "figures").mkdir()
        (folder / "figures" / "a.png").write_bytes(b"")
    return folder


def test_interrupted_run_leaves_previous_run_intact(tmp_path, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    out = _previous_run(tmp_path / "r")
    _single_fake(monkeypatch, interrupt)
    res = runner.invoke(app, ["run", "fake", "--out", str(out)])
    assert res.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]
    assert json.loads((out / "result.json").read_text())["name"] == "old"


def test_out_pointing_at_a_file_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["run", "udbgl", "--preset", "smoke", "--out", str(f)])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_set_non_finite_float_exits_2(tmp_path):
    res = runner.invoke(app, ["run", "udbgl", "--set", "alpha=nan", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "finite float" in res.output


# -- defects found by a fresh-user tester ------------------------------------------------
def _recording_fake(monkeypatch):
    """A one-method registry whose run records the config it got; returns that list."""
    calls = []

    def run(config, out_dir):
        calls.append(config)
        r = Result(name="fake", preset=config.preset, config=config.to_dict())
        for s in config.seeds:
            r.add("D", "M", "method", "ACC", 0.9, seed=s)
        return r

    _fake_registry(monkeypatch, {"fake": (_Cfg, run)})
    return calls


def test_out_folder_holding_other_files_is_refused_before_running(tmp_path, monkeypatch):
    calls = _recording_fake(monkeypatch)
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    res = runner.invoke(app, ["run", "fake", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "not a previous run" in res.output and "result.json" in res.output
    assert calls == []
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("before", [[], ["result.json"], ["result.json", "report.md", "figures"]])
def test_out_empty_folder_or_previous_run_is_replaced(tmp_path, monkeypatch, before):
    calls = _recording_fake(monkeypatch)
    out = _previous_run(tmp_path / "r", before)
    res = runner.invoke(app, ["run", "fake", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    assert json.loads((out / "result.json").read_text())["name"] == "fake"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("out", [".", "", "/", "{tmp}", "{tmp}/work/file/sub", "file", "/proc/reprozoo-x"])
def test_unusable_out_is_refused_before_running(tmp_path, monkeypatch, out):
    calls = _recording_fake(monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    (work / "file").write_text("x")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["run", "fake", "--out", out.format(tmp=tmp_path)])
    assert res.exit_code == 2, res.output
    assert "--out" in res.output
    assert calls == []
    assert sorted(p.name for p in work.iterdir()) == ["file", "keep.txt"]


def test_run_all_unknown_preset_exits_2_and_creates_nothing(tmp_path):
    out = tmp_path / "x"
    res = runner.invoke(app, ["run", "all", "--preset", "bogus", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "valid presets" in res.output and "quick" in res.output and "smoke" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_run_all_summary_lists_skipped_methods(tmp_path, monkeypatch):
    @dataclass
    class CfgFull(_Cfg):
        PRESETS: ClassVar[dict] = {"quick": {}, "full": {}}

    run = _fake_module(fail=False).run
    _fake_registry(monkeypatch, {"a": (CfgFull, run), "b": (_Cfg, run)})  # b has no "full": skipped, last
    res = runner.invoke(app, ["run", "all", "--preset", "full", "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    summary = (tmp_path / "all" / "summary.md").read_text()
    assert "| a | ok |" in summary and "| b | skipped |" in summary
    assert "skipped: no preset 'full'" in summary and "FAILED" not in summary
    assert "| b | skipped | — |" in summary  # a skipped method has no run time (was "0.0")
    assert (tmp_path / "all" / "a" / "result.json").is_file() and not (tmp_path / "all" / "b").exists()


def test_run_all_refuses_a_folder_of_other_files(tmp_path, monkeypatch):
    _recording_fake(monkeypatch)
    (tmp_path / "notes.txt").write_text("x")
    res = runner.invoke(app, ["run", "all", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not empty" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_all_refuses_a_previous_run_all_folder_before_running(tmp_path, monkeypatch):
    """Defect 2: a second ``run all`` into the same folder merged into (and overwrote the summary of) the first."""
    calls = _recording_fake(monkeypatch)
    root = tmp_path / "all"
    res = runner.invoke(app, ["run", "all", "--out", str(root), "--quiet"])
    assert res.exit_code == 0, res.output
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert len(calls) == 1 and (root / "summary.md").is_file()
    res = runner.invoke(app, ["run", "all", "--out", str(root), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "not empty" in _flat(res) and "new folder" in _flat(res)
    assert len(calls) == 1  # nothing ran
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all"]


@pytest.mark.parametrize(
    "args, seeds, warned",
    [
        (["--seed", "0", "--seed", "0", "--seed", "2"], (0, 2), "--seed 0"),
        (["--set", "seeds=1,1"], (1,), "--set seeds= 1"),
        (["--seed", "3"], (3,), None),
    ],
)
def test_repeated_seeds_run_once_with_a_warning(tmp_path, monkeypatch, args, seeds, warned):
    calls = _recording_fake(monkeypatch)
    res = runner.invoke(app, ["run", "fake", *args, "--out", str(tmp_path / "r"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert calls[0].seeds == seeds
    if warned:
        assert f"warning: {warned} given more than once" in res.output
    else:
        assert "warning" not in res.output


def test_a_setting_given_twice_warns_and_the_last_one_wins(tmp_path, monkeypatch):
    calls = _recording_fake(monkeypatch)
    res = runner.invoke(app, ["run", "fake", "--set", "seeds=1", "--set", "seeds=2", "--out", str(tmp_path / "r"),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert calls[0].seeds == (2,) and "--set seeds= given more than once ('1', '2'); the last one is used" \
        in _flat(res)


def test_repeated_dataset_runs_once(tmp_path, monkeypatch):
    calls = _recording_fake(monkeypatch)
    res = runner.invoke(app, ["run", "fake", "--dataset", "D", "--dataset", "D", "--out", str(tmp_path / "r"),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert calls[0].datasets == ("D",) and "--dataset D given more than once" in res.output


@pytest.mark.parametrize(
    "args, names",
    [
        (["--seed", "5", "--set", "seeds=1"], ("--seed", "--set seeds")),
        (["--dataset", "HW", "--set", "datasets=MSRC-v1"], ("--dataset", "--set datasets")),
    ],
)
def test_conflicting_options_exit_2(tmp_path, monkeypatch, args, names):
    calls = _recording_fake(monkeypatch)
    res = runner.invoke(app, ["run", "fake", *args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert all(n in res.output for n in names)
    assert calls == [] and not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_out_of_range_seed_exits_2(tmp_path, monkeypatch, seed):
    calls = _recording_fake(monkeypatch)
    for name in ("fake", "all"):
        res = runner.invoke(app, ["run", name, "--seed", seed, "--out", str(tmp_path / "r")])
        assert res.exit_code == 2, res.output
        assert "seeds" in res.output and "2**32" in res.output
    assert calls == [] and not (tmp_path / "r").exists()


def test_missing_dataset_path_says_no_such_file(tmp_path):
    missing = tmp_path / "nonexistent.mat"
    res = runner.invoke(app, ["run", "udbgl", "--preset", "smoke", "--dataset", str(missing),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "no such file" in res.output and "unknown dataset" not in res.output


_SLOW_RUN = """
import sys, time, types
from dataclasses import dataclass
from reprozoo import cli
from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig

@dataclass
class C(ExperimentConfig):
    datasets: tuple = ("D",)

def run(config, out_dir):
    (out_dir / "started").write_text("")
    time.sleep(60)

registry.MODULES.clear()
registry.register(registry.ExperimentSpec(name="slow", title="slow", field="test", paper="none", config=C, run=run,
                                          primary_metric="ACC"))
sys.argv = ["reprozoo", "run", "slow", "--quiet", "--out", sys.argv[1]]
cli.main()
"""


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    out.mkdir()
    _previous_run(out)  # a previous run: must survive
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".r.partial-*/started")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "terminated" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no hidden partial folder left
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]


# -- defects found by a second tester ----------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        # the tester's case: a result.json that is not a run, beside the user's files
        lambda f: ((f / "result.json").write_text('{"x": 1}'), (f / "notes.txt").write_text("keep"),
                   (f / "data").mkdir()),
        lambda f: (f / "result.json").write_text('{"x": 1}'),  # valid JSON without the run schema
        lambda f: (f / "result.json").write_text("not json {"),
        lambda f: (f / "result.json").write_text('{"name": "a", "preset": "q", "records": {}}'),
        lambda f: (f / "result.json").mkdir(),
        lambda f: (_previous_run(f), (f / "notes.txt").write_text("keep")),  # a real run plus a user file
        lambda f: (_previous_run(f), (f / "data").mkdir()),
        lambda f: (_previous_run(f, ("result.json", "figures")), (f / "figures" / "notes.txt").write_text("k")),
        lambda f: (_previous_run(f, ("result.json", "figures")), (f / "figures" / "sub").mkdir()),
        lambda f: (_previous_run(f), (f / "report.md").mkdir()),
    ],
)
def test_out_folder_that_only_looks_like_a_run_is_refused_and_kept(tmp_path, monkeypatch, make):
    """Defect 1: a folder holding something named result.json was replaced whole, user files included."""
    calls = _recording_fake(monkeypatch)
    out = tmp_path / "f"
    out.mkdir()
    make(out)
    before = sorted((str(p.relative_to(out)), p.is_dir() or p.read_bytes()) for p in out.rglob("*"))
    res = runner.invoke(app, ["run", "fake", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "not a previous run" in _flat(res) and "new folder" in _flat(res)
    assert calls == []
    assert sorted((str(p.relative_to(out)), p.is_dir() or p.read_bytes()) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, "terminated"])
def test_interrupt_while_printing_reports_the_complete_run_and_exits_0(tmp_path, monkeypatch, interrupt):
    """Defect 3: an interrupt after the folder was in place said 'no new run folder was written'."""
    from reprozoo import cli

    calls = _recording_fake(monkeypatch)
    exc = cli.Terminated if interrupt == "terminated" else KeyboardInterrupt

    def print_result(result):
        raise exc

    monkeypatch.setattr(cli, "_print_result", print_result)
    out = _previous_run(tmp_path / "r", ("result.json", "report.md"))
    res = runner.invoke(app, ["run", "fake", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "run complete and written to" in _flat(res) and "no new run folder" not in _flat(res)
    assert len(calls) == 1
    assert json.loads((out / "result.json").read_text())["name"] == "fake"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_run_all_interrupted_while_printing_lists_that_method_as_ok_and_stops(tmp_path, monkeypatch):
    from reprozoo import cli

    ran = []

    def run(config, out_dir):
        ran.append(config)
        return _fake_module(fail=False).run(config, out_dir)

    _fake_registry(monkeypatch, {"a": (_Cfg, run), "b": (_Cfg, run)})

    def print_result(result):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_result", print_result)
    root = tmp_path / "all"
    res = runner.invoke(app, ["run", "all", "--out", str(root)])
    assert res.exit_code == 130, res.output
    assert len(ran) == 1 and "after a was complete and written" in _flat(res)
    summary = (root / "summary.md").read_text()
    assert "| a | ok |" in summary and "| D | M | 0.900 | B | 0.500 |" in summary and "| b |" not in summary
    assert (root / "a" / "result.json").is_file() and not (root / "b").exists()


_PRINT_SLOWLY = """
import sys, time, types
from dataclasses import dataclass
from pathlib import Path
from reprozoo import cli
from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig
from reprozoo.core.results import Result

@dataclass
class C(ExperimentConfig):
    datasets: tuple = ("D",)

def run(config, out_dir):
    r = Result(name="fast", preset=config.preset, config=config.to_dict())
    r.add("D", "M", "method", "ACC", 0.9, seed=0)
    return r

MARKER = Path(sys.argv[2])

def print_slowly(result):
    MARKER.write_text("")
    time.sleep(60)

registry.MODULES.clear()
registry.register(registry.ExperimentSpec(name="fast", title="fast", field="test", paper="none", config=C, run=run,
                                          primary_metric="ACC"))
cli._print_result = print_slowly
sys.argv = ["reprozoo", "run", "fast", "--out", sys.argv[1]]
cli.main()
"""


def test_sigterm_while_printing_exits_0_and_says_the_run_is_written(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    marker = tmp_path / "printing"
    proc = subprocess.Popen([sys.executable, "-c", _PRINT_SLOWLY, str(out), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached printing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    stderr = " ".join(stderr.split())
    assert "run complete and written to" in stderr and "no new run folder" not in stderr
    assert json.loads((out / "result.json").read_text())["name"] == "fast"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["printing", "r"]


@pytest.mark.parametrize("value, shown", [("0", False), ("", False), ("false", False), ("No", False),
                                          ("off", False), ("1", True), ("yes", True)])
def test_reprozoo_debug_off_values_hide_the_traceback(tmp_path, monkeypatch, value, shown):
    def boom():
        raise ValueError("deliberate")

    _single_fake(monkeypatch, boom)
    monkeypatch.setenv("REPROZOO_DEBUG", value)
    res = runner.invoke(app, ["run", "fake", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert ("Traceback" in res.output) == shown


# -- run all --jobs N: methods at once, each in a process of its own --------------------------
def _waits_for_the_other(marker_dir, me, other):
    """A run that only finishes if ``other`` has started meanwhile: proves the two ran at the same time."""
    def run(config, out_dir):
        import os
        import time

        (marker_dir / f"{me}.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 30
        while not (marker_dir / f"{other}.started").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{other} never started while {me} ran")
            time.sleep(0.02)
        return _fake_module(fail=False).run(config, out_dir)

    return run


def test_run_all_jobs_runs_methods_at_once_in_their_own_processes(tmp_path, monkeypatch):
    import os

    marks = tmp_path / "marks"
    marks.mkdir()
    _fake_registry(monkeypatch, {"a": (_Cfg, _waits_for_the_other(marks, "a", "b")),
                                 "b": (_Cfg, _waits_for_the_other(marks, "b", "a")),
                                 "bad": (_Cfg, _fake_module(fail=True).run)})
    root = tmp_path / "all"
    res = runner.invoke(app, ["run", "all", "--out", str(root), "--jobs", "2", "--seed", "0"])
    assert res.exit_code == 1, res.output  # bad failed; the others ran
    pids = {(marks / f"{n}.started").read_text() for n in ("a", "b")}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    summary = (root / "summary.md").read_text()
    rows = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ") and " ok " in line
            or line.startswith("| bad |")]
    assert rows == ["a", "b", "bad"]  # registry order, whatever order they finished in
    assert "FAILED: RuntimeError: deliberate failure" in summary
    assert (root / "a" / "result.json").is_file() and (root / "b" / "result.json").is_file()
    assert "a (quick) done in" in _flat(res) and not list(root.glob(".*partial*"))


@pytest.mark.parametrize("args, message", [(["all", "--jobs", "0"], "should be an int >= 1"),
                                           (["fake", "--jobs", "2"], "applies to run all")])
def test_jobs_errors_exit_2(tmp_path, monkeypatch, args, message):
    _recording_fake(monkeypatch)
    res = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and message in _flat(res), res.output
    assert not (tmp_path / "x").exists()


_SLOW_PAIR = """
import sys, time
from dataclasses import dataclass
from pathlib import Path
from reprozoo import cli
from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig

@dataclass
class C(ExperimentConfig):
    datasets: tuple = ("D",)

MARKS = Path(sys.argv[2])

def run(config, out_dir):
    (out_dir / "half-written.txt").write_text("x")
    (MARKS / out_dir.name.split(".")[1]).write_text("")  # ".a.partial-PID" -> "a"
    try:
        time.sleep(60)
    finally:
        time.sleep(1)  # a slow clean-up: the test's second signal arrives while the parent waits for it

registry.MODULES.clear()
for name in ("a", "b", "c"):
    registry.register(registry.ExperimentSpec(name=name, title=name, field="test", paper="none", config=C, run=run,
                                              primary_metric="ACC"))
sys.argv = ["reprozoo", "run", "all", "--jobs", "2", "--quiet", "--out", sys.argv[1]]
cli.main()
"""


def test_sigterm_during_run_all_jobs_stops_every_child_and_keeps_no_partial_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    root, marks = tmp_path / "all", tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PAIR, str(root), str(marks)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the two children never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # an impatient second interrupt must not cut the clean-up short
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "terminated during a, b" in " ".join(stderr.split())
    summary = (root / "summary.md").read_text()
    assert "| a | terminated |" in summary and "| b | terminated |" in summary
    assert "| c | not started |" in summary and "not started: run all was terminated" in summary
    assert sorted(p.name for p in root.iterdir()) == ["summary.md"]  # no partial folders, c never started


def test_run_all_jobs_a_child_killed_outright_is_named_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    def killed(config, out_dir):
        import os
        import signal

        (out_dir / "half-written.txt").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would

    _fake_registry(monkeypatch, {"doomed": (_Cfg, killed), "fine": (_Cfg, _fake_module(fail=False).run)})
    root = tmp_path / "all"
    res = runner.invoke(app, ["run", "all", "--out", str(root), "--jobs", "2", "--quiet"])
    assert res.exit_code == 1, res.output
    summary = (root / "summary.md").read_text()
    assert "| doomed | failed |" in summary and "its process ended (killed by signal 9) before reporting" in summary
    assert "| fine | ok |" in summary and "doomed" in _flat(res)
    assert sorted(p.name for p in root.iterdir()) == ["fine", "summary.md"]
