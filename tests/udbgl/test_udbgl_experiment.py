"""The UDBGL experiment end to end (smoke preset), its config, and the baselines' inputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reprozoo.core.experiment import ConfigError
from reprozoo.core.report import write_run
from reprozoo.datasets import load_multiview
from reprozoo.datasets.multiview import name_user_files
from reprozoo.udbgl.baselines import anchor_graph_concat, kmeans_concat, kmeans_single, spectral_concat
from reprozoo.udbgl.experiment import BASELINES, Config, dataset_names, run


def test_smoke_run_is_real(tmp_path):
    result = run(Config.from_preset("smoke"), tmp_path)
    write_run(result, tmp_path)
    d = json.loads((tmp_path / "result.json").read_text())
    methods = {r["method"] for r in d["records"]}
    assert methods == {"UDBGL", "KMeans-concat", "Spectral-concat", "KMeans-single(mean)",
                       "KMeans-single(best, oracle)", "AnchorGraph-concat", "LMVSC"}
    assert {r["role"] for r in d["records"] if r["method"] == "UDBGL"} == {"method"}
    assert {r["setting"] for r in d["records"]} == {"m=c"}
    for r in d["records"]:
        if r["metric"] == "seconds":
            assert 0 < r["value"] < 60
        else:
            assert -0.5 <= r["value"] <= 1.0
    nmi = {r["method"]: r["value"] for r in d["records"] if r["metric"] == "NMImax"}
    assert nmi["UDBGL"] > 0.55  # MSRC-v1, seed 0 (Octave reference 0.70); chance is near 0.05
    assert len(d["figures"]) == 7
    for fig in d["figures"]:
        assert (tmp_path / fig).stat().st_size > 1000
    assert any("label path" in n for n in result.notes)


def test_two_anchor_settings(tmp_path):
    cfg = Config.from_preset("smoke").replace(anchor_factors=(1, 2), baselines=("AnchorGraph-concat",))
    result = run(cfg, tmp_path)
    settings = {(r.method, r.setting) for r in result.records}
    assert settings == {("UDBGL", "m=c"), ("UDBGL", "m=2c"), ("AnchorGraph-concat", "m=c"),
                        ("AnchorGraph-concat", "m=2c")}


def test_presets():
    quick, full = Config.from_preset("quick"), Config.from_preset("full")
    assert "MSRC-v1" in quick.datasets and "HW" in quick.datasets and len(quick.seeds) == 5
    assert len(full.seeds) == 10 and full.anchor_factors == (1, 2)
    assert set(full.datasets) >= set(quick.datasets)
    assert quick.baselines == BASELINES and quick.alpha == 1e-3 and quick.beta == 1e-5


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"datasets": ("Nope",)}, "unknown dataset"),
        ({"baselines": ("SVM",)}, r"baselines='SVM' is not valid; choose one of \['KMeans-concat'"),
        ({"anchor_factors": (0,)}, r"anchor_factors\[0\]=0 should be >= 1"),
        ({"anchor_factors": ()}, "anchor_factors is empty"),
        ({"alpha": -1.0}, r"alpha=-1.0 should be >= 0"),
        ({"max_iter": 0}, r"max_iter=0 should be >= 1"),
        ({"alpha": float("nan")}, r"alpha=nan should be finite"),
        ({"beta": float("inf")}, r"beta=inf should be finite"),
        ({"tol": -1e-9}, r"tol=-1e-09 should be >= 0"),
        ({"kmeans_n_init": 0}, r"kmeans_n_init=0 should be >= 1"),
        ({"spectral_neighbors": -3}, r"spectral_neighbors=-3 should be >= 1"),
        ({"max_iter": 2.5}, r"max_iter should be an int, got float \(2.5\)"),
        ({"anchor_factors": 1}, r"anchor_factors=1 should be a tuple"),
        ({"anchor_factors": (1, 1)}, r"anchor_factors=\(1, 1\) repeats 1; give each once"),
        ({"anchor_factors": (1, 2, 2)}, r"anchor_factors=.* repeats 2"),
        ({"baselines": ("KMeans-concat", "KMeans-concat")}, r"baselines=.* repeats KMeans-concat"),
    ],
)
def test_config_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_preset("quick").replace(**changes)


def test_set_strings_parse():
    cfg = Config.from_preset("quick").with_strings({"anchor_factors": "1,2", "alpha": "0.01"})
    assert cfg.anchor_factors == (1, 2) and cfg.alpha == 0.01


def test_baselines_shapes_and_bad_input():
    d = load_multiview("synthetic3d")
    c = d.n_clusters
    for lab in (kmeans_concat(d.views, c, n_init=2), spectral_concat(d.views, c)):
        assert lab.shape == (d.n_samples,) and np.unique(lab).size == c
    assert len(kmeans_single(d.views, c, n_init=2)) == d.n_views
    anchors = [np.random.default_rng(0).random((c, x.shape[1])) for x in d.views]
    assert anchor_graph_concat(d.views, c, anchors, n_init=2).shape == (d.n_samples,)
    with pytest.raises(ValueError, match="anchors"):
        anchor_graph_concat(d.views, c, anchors[:1])
    with pytest.raises(ValueError, match=r"anchors\[0\]"):
        anchor_graph_concat(d.views, c, [np.ones((c, 99))] + anchors[1:])
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_concat(d.views, 1)
    with pytest.raises(ValueError, match="views"):
        kmeans_concat([d.views[0], d.views[1][:10]], c)


def test_card_describes_when_the_rank_constraint_warning_is_issued():
    """The method card must match the code: only the k-means fallback warns (lambda_search is silent)."""
    import inspect
    import re
    from pathlib import Path

    import reprozoo.udbgl as pkg
    from reprozoo.udbgl import udbgl as mod

    card = " ".join((Path(pkg.__file__).parent / "README.md").read_text().split())
    assert "whenever the path is not `components`" not in card
    sentence = re.search(r"A `RankConstraintWarning`[^.]*\.", card)
    assert sentence is not None and "only when the path is `kmeans_fallback`" in sentence.group(0)
    src = inspect.getsource(mod.UDBGL.fit)
    assert 'if self.label_path_ == "kmeans_fallback":' in src  # the condition the card describes


# -- user .mat files: distinct names, one run per file; no run that records nothing ------------------------
DATA = Path(__file__).resolve().parents[2] / "data" / "multiview"


def _fast(datasets):
    return Config.from_preset("smoke").replace(datasets=tuple(datasets), baselines=("KMeans-concat",),
                                               max_iter=3, kmeans_n_init=1)


def test_user_files_sharing_a_stem_are_recorded_apart(tmp_path):
    (tmp_path / "t" / "a").mkdir(parents=True)
    first, second = tmp_path / "t" / "m.mat", tmp_path / "t" / "a" / "m.mat"
    shutil.copy(DATA / "Texas.mat", first)
    shutil.copy(DATA / "Cornell.mat", second)
    cfg = _fast([str(first), str(second)])
    assert [n for _, n in dataset_names(cfg.datasets)] == ["t/m", "a/m"]
    result = run(cfg, tmp_path / "out")
    names = {r.dataset for r in result.records}
    assert names == {"t/m", "a/m"}  # not both "m", which would average two data sets together
    n_texas = load_multiview(DATA / "Texas.mat").n_samples
    n_cornell = load_multiview(DATA / "Cornell.mat").n_samples
    assert n_texas != n_cornell
    per = {n: sorted(r.value for r in result.records if r.dataset == n and r.metric == "ACC") for n in names}
    assert per["t/m"] != per["a/m"]
    assert any("recorded as 't/m'" in note for note in result.notes)


def test_the_same_file_twice_runs_once(tmp_path, monkeypatch):
    shutil.copy(DATA / "Texas.mat", tmp_path / "m.mat")
    (tmp_path / "link.mat").symlink_to(tmp_path / "m.mat")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="names the same file"):
        cfg = _fast([str(tmp_path / "m.mat"), "./m.mat", "m.mat", "link.mat"])
    assert cfg.datasets == (str(tmp_path / "m.mat"),)
    result = run(cfg, tmp_path / "out")
    assert {r.dataset for r in result.records} == {"m"}
    assert len([r for r in result.records if r.method == "UDBGL" and r.metric == "ACC"]) == 1  # one seed


def test_a_user_file_never_takes_a_shipped_name(tmp_path):
    shutil.copy(DATA / "Cornell.mat", tmp_path / "Texas.mat")  # other data under a shipped set's name
    user = str(tmp_path / "Texas.mat")
    assert dataset_names(("Texas", user)) == [("Texas", "Texas"), (user, "Texas (file)")]
    assert dataset_names((user,)) == [(user, "Texas (file)")]
    # a path to the shipped file itself is the shipped set: run once
    with pytest.warns(UserWarning, match="names the same file as 'Texas'"):
        assert _fast(["Texas", str(DATA / "Texas.mat")]).datasets == ("Texas",)


def test_name_user_files_rules():
    assert name_user_files(["/x/a/m.mat", "/x/b/m.mat", "/y/z.mat"]) == ["a/m", "b/m", "z"]
    assert name_user_files(["/p/x/m.mat", "/q/y/x/m.mat"]) == ["p/x/m", "y/x/m"]  # shortest telling suffix
    assert name_user_files(["/x/m.mat", "/y/x/m.mat"]) == ["/x/m", "y/x/m"]
    assert name_user_files(["/d/HW.mat"], reserved=("HW",)) == ["HW (file)"]
    with pytest.raises(ValueError, match="distinct files"):
        name_user_files(["/d/m.mat", "/d/./m.mat"])


def test_anchor_factors_that_skip_every_setting_are_an_error(tmp_path):
    n = load_multiview("Texas").n_samples
    c = load_multiview("Texas").n_clusters
    cfg = _fast(["Texas"]).replace(anchor_factors=(1000,))
    with pytest.raises(ConfigError, match=rf"anchor_factors=\(1000,\).*Texas \(n={n} samples, c={c} clusters\)"
                                          rf".*factors in \[1, {n // c}\]"):
        run(cfg, tmp_path)
    assert not (tmp_path / "figures").exists()  # refused before any fit
    result = run(cfg.replace(anchor_factors=(1, 1000)), tmp_path)  # one setting left: it runs, with a note
    assert {r.setting for r in result.records} == {"m=c"}
    assert any("m=1000c skipped" in note for note in result.notes)
