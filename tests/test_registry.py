"""Every registered method: its experiment module imports, its presets build, and its smoke preset
runs end to end on shipped data and returns records in the result.json schema."""

import json

import pytest

from reprozoo.core import registry
from reprozoo.core.experiment import ExperimentConfig
from reprozoo.core.report import write_run
from reprozoo.core.results import RECORD_KEYS, ROLES


def test_importing_cli_imports_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, reprozoo.cli; heavy = [m for m in ('torch', 'torch_geometric', 'flwr', 'gymnasium', "
            "'stable_baselines3', 'torchattacks') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", registry.names())
def test_presets_build(name):
    spec = registry.get(name)
    assert spec.name == name
    assert issubclass(spec.config, ExperimentConfig)
    assert "quick" in spec.presets and "smoke" in spec.presets
    for preset in spec.presets:
        cfg = spec.config.from_preset(preset)
        assert cfg.preset == preset
        json.dumps(cfg.to_dict())


@pytest.mark.parametrize("name", registry.names())
def test_smoke_preset_writes_schema(name, tmp_path):
    spec = registry.get(name)
    result = spec.run(spec.config.from_preset("smoke"), tmp_path)
    write_run(result, tmp_path)
    d = json.loads((tmp_path / "result.json").read_text())
    assert d["name"] == name and d["preset"] == "smoke"
    assert d["records"], "no records"
    for rec in d["records"]:
        assert set(rec) == set(RECORD_KEYS)
        assert rec["role"] in ROLES
    roles = {r["role"] for r in d["records"]}
    assert "method" in roles and "baseline" in roles
    assert any(r["metric"] == spec.primary_metric for r in d["records"])
    for fig in d["figures"]:
        assert (tmp_path / fig).is_file()


def test_every_method_package_is_discovered_without_a_core_edit():
    """A method is found by its experiment.py alone: the registry lists every package that has one."""
    from pathlib import Path

    import reprozoo

    root = Path(reprozoo.__file__).parent
    packages = sorted(p.parent.name for p in root.glob("*/experiment.py") if p.parent.name != "core")
    assert packages and set(packages) <= set(registry.names())


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid methods"):
        registry.get("nosuch")


def test_missing_dependency_names_the_extra(monkeypatch):
    import importlib

    def fail(name):
        raise ModuleNotFoundError("No module named 'torch_geometric'", name="torch_geometric")

    monkeypatch.setattr(registry, "_SPECS", {})
    monkeypatch.setattr(importlib, "import_module", fail)
    name = registry.names()[0]
    with pytest.raises(ModuleNotFoundError, match=r"reprozoo\[graph\]"):
        registry.get(name)
