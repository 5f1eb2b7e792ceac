import json
import math

import pytest

from reprozoo.core import io
from reprozoo.core.experiment import ConfigError, ExperimentConfig
from reprozoo.core.report import markdown_tables, primary_comparison, write_run, write_summary
from reprozoo.core.results import RECORD_KEYS, Result


def _result():
    r = Result(name="demo", preset="quick", config={"a": 1})
    for seed, (m, b) in enumerate([(0.8, 0.6), (0.9, 0.7)]):
        r.add("D1", "M", "method", "ACC", m, seed=seed)
        r.add("D1", "B", "baseline", "ACC", b, seed=seed)
    return r


def test_summary_mean_std():
    s = _result().summary()
    mean, std, n = s[("D1", "default", "M", "method")]["ACC"]
    assert (mean, n) == (pytest.approx(0.85), 2)
    assert std == pytest.approx(math.sqrt(2 * 0.05**2))


def test_record_validation():
    r = Result(name="x", preset="quick", config={})
    with pytest.raises(ValueError, match="role"):
        r.add("D", "M", "teacher", "ACC", 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        r.add("D", "M", "method", "ACC", float("nan"))


def test_json_roundtrip_and_schema(tmp_path):
    r = _result()
    write_run(r, tmp_path)
    d = json.loads((tmp_path / "result.json").read_text())
    assert set(d) >= {"name", "preset", "config", "started", "seconds", "environment", "records", "figures"}
    assert all(tuple(sorted(rec)) == tuple(sorted(RECORD_KEYS)) for rec in d["records"])
    assert Result.load(tmp_path / "result.json").records == r.records
    md = (tmp_path / "report.md").read_text()
    assert "0.850 ± 0.071" in md and "| B | baseline |" in md
    assert "### D1" in markdown_tables(r)


def test_primary_comparison_and_summary(tmp_path):
    rows = primary_comparison(_result(), "ACC")
    assert rows == [("D1", "M", pytest.approx(0.85), "B", pytest.approx(0.65))]
    path = write_summary([{"name": "demo", "status": "ok", "seconds": 1.0, "metric": "ACC", "rows": rows},
                          {"name": "bad", "status": "failed", "error": "boom"}], tmp_path / "summary.md")
    text = path.read_text()
    assert "| D1 | M | 0.850 | B | 0.650 |" in text and "FAILED: boom" in text


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "f.json"
    io.atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        io.atomic_write_json(target, {"a": float("nan")})  # NaN is refused before anything is replaced
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert target.stat().st_mode & 0o044 == 0o044 & ~io._UMASK  # readable by others under umask 022


def test_config_presets_and_set_parsing():
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass
    class C(ExperimentConfig):
        lr: float = 0.1
        steps: int = 3
        flag: bool = False
        eps: tuple[float, ...] = (8 / 255,)
        name: str = "x"
        datasets: tuple[str, ...] = ("A",)
        PRESETS: ClassVar[dict] = {"quick": {"steps": 5}, "full": {"steps": 50}}
        KNOWN_DATASETS: ClassVar[tuple] = ("A", "B")

    c = C.from_preset("quick")
    assert c.steps == 5 and c.preset == "quick"
    c2 = c.with_strings({"lr": "1e-3", "flag": "true", "eps": "8/255,16/255", "steps": "7", "name": "y"})
    assert (c2.lr, c2.flag, c2.steps, c2.name) == (1e-3, True, 7, "y")
    assert c2.eps == pytest.approx((8 / 255, 16 / 255))
    with pytest.raises(ConfigError, match="valid presets: quick, full"):
        C.from_preset("huge")
    with pytest.raises(ConfigError, match="valid keys"):
        c.with_strings({"nope": "1"})
    with pytest.raises(ConfigError, match="expected an int"):
        c.with_strings({"steps": "many"})
    for bad in ("nan", "inf", "1/0"):
        with pytest.raises(ConfigError, match="finite float"):
            c.with_strings({"lr": bad})
    with pytest.raises(ConfigError, match="use --preset"):
        c.with_strings({"preset": "full"})
    with pytest.raises(ConfigError, match="valid datasets: A, B"):
        c.replace(datasets=("C",))
    with pytest.raises(ConfigError, match="seeds"):
        c.replace(seeds=())
    assert c.to_dict()["eps"] == [8 / 255]


def test_progress_bars_and_log_lines_leave_stdout_alone(monkeypatch, capsys):
    from reprozoo.core import progress

    monkeypatch.setattr(progress, "is_quiet", lambda: False)  # pytest itself silences them
    assert list(progress.track(range(3), "work")) == [0, 1, 2]
    progress.log("a status line")
    out = capsys.readouterr()
    assert out.out == "" and "a status line" in out.err
