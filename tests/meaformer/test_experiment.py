"""The MEAformer experiment: smoke preset end to end, config checks, the CLI on a small slice."""

import json

import pytest
from typer.testing import CliRunner

from reprozoo.cli import app
from reprozoo.core.experiment import ConfigError
from reprozoo.core.report import write_run
from reprozoo.meaformer.experiment import Config, run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    result = run(Config.from_preset("smoke", device="cpu"), out)
    write_run(result, out)
    return out, json.loads((out / "result.json").read_text())


def test_smoke_records_names_and_figures(smoke):
    out, d = smoke
    recs = d["records"]
    methods = {(r["method"], r["role"]) for r in recs}
    assert methods == {("MEAformer", "method"), ("KG-fusion", "baseline"), ("Uniform", "baseline"),
                       ("GCN-Align", "baseline"), ("NameNN", "baseline")}
    assert {r["setting"] for r in recs} == {"no-surface", "surface", "no-surface noise=0.4"}
    assert {r["dataset"] for r in recs} == {"ZH-EN"}
    for r in recs:
        if r["metric"].startswith("Hits@"):
            assert 0 <= r["value"] <= 100
        if r["metric"] == "MRR":
            assert 0 < r["value"] <= 1
    # the noise run records the corrupted modality's weight for corrupted and clean entities
    noisy = {r["metric"] for r in recs if r["setting"] == "no-surface noise=0.4" and r["method"] == "MEAformer"}
    assert {"weight_corrupted[relation]", "weight_clean[relation]", "weight_std[structure]"} <= noisy
    # names make alignment easy: with surface, NameNN and MEAformer are far above the no-surface runs
    h1 = {(r["method"], r["setting"]): r["value"] for r in recs if r["metric"] == "Hits@1"}
    assert h1[("NameNN", "surface")] > 50 and h1[("MEAformer", "surface")] > h1[("MEAformer", "no-surface")] + 20
    assert len(d["figures"]) == 4 and all((out / f).is_file() for f in d["figures"])


@pytest.mark.parametrize("changes, match", [
    ({"settings": ("no-surface",), "baselines": ("NameNN",)}, "NameNN baseline needs a surface setting"),
    ({"noise_setting": "surface", "settings": ("no-surface",)}, "noise_setting='surface' should be one of"),
    ({"select": "valid", "valid_ratio": 0.0}, "needs valid_ratio > 0"),
    ({"settings": ("everything",)}, "settings"),
    ({"noise_levels": (1.5,)}, "noise_levels"),
    ({"corrupt_modality": "name", "noise_setting": "no-surface"}, "is not in the noise_setting"),
])
def test_config_rejects_bad_combinations(changes, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_preset("quick", **changes)


def test_presets_build():
    for p in ("quick", "smoke", "parity", "parity_char", "standard"):
        cfg = Config.from_preset(p)
        assert cfg.preset == p
    par = Config.from_preset("parity")
    assert (par.subset_links, par.n_train, par.epochs, par.batch_size, par.select) == (0, 4500, 15, 3500, "last")
    # every preset runs the authors' fusion layer; token_norm (ours) is opt-in
    assert not any(Config.from_preset(p).token_norm for p in ("quick", "parity", "parity_char", "standard"))


def test_cli_end_to_end_on_a_small_slice(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "meaformer", "--preset", "smoke", "--device", "cpu", "--out", str(out),
                                   "--quiet", "--set", "subset_links=150", "--set", "settings=no-surface",
                                   "--set", "baselines=GCN-Align", "--set", "noise_levels="])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert {r["method"] for r in d["records"]} == {"MEAformer", "GCN-Align"}
    assert (out / "report.md").is_file()
    bad = CliRunner().invoke(app, ["run", "meaformer", "--preset", "smoke", "--dataset", "DE-EN",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "valid datasets" in bad.output


def test_iterative_and_unsupervised_variants_are_recorded(tmp_path):
    cfg = Config.from_preset("smoke", device="cpu", subset_links=150, epochs=2, settings=("char",), baselines=(),
                             noise_levels=(), iterative=True, unsupervised=True)
    result = run(cfg, tmp_path)
    roles = {(r.method, r.role) for r in result.records}
    assert roles == {("MEAformer", "method"), ("MEAformer-IL", "method"), ("MEAformer-unsup", "method")}
    best = [r.value for r in result.records if r.method == "MEAformer-IL" and r.metric == "best_epoch"]
    assert len(best) == 1 and 1 <= best[0] <= 4  # 2 plain + 2 iterative epochs, selected on validation
