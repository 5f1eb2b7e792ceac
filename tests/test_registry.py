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
    module = registry.load(name)
    assert issubclass(module.Config, ExperimentConfig)
    for preset in (*spec.presets, "smoke"):
        cfg = module.Config.from_preset(preset)
        assert cfg.preset == preset
        json.dumps(cfg.to_dict())


@pytest.mark.parametrize("name", registry.names())
def test_smoke_preset_writes_schema(name, tmp_path):
    spec = registry.get(name)
    module = registry.load(name)
    result = module.run(module.Config.from_preset("smoke"), tmp_path)
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


@pytest.mark.parametrize("name", registry.names())
def test_registry_presets_match_the_config(name):
    """`run all --preset P` trusts the registry's presets: they must be exactly the Config's presets."""
    spec = registry.get(name)
    config = registry.load(name).Config
    assert sorted(spec.presets) == sorted(config.preset_names())
    assert "quick" in spec.presets and "smoke" in spec.presets
