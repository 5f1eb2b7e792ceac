"""ExperimentConfig parsing and validation, and the run environment recorded in result.json."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from dataclasses import dataclass
from typing import ClassVar

import pytest

from reprozoo.core.experiment import ConfigError, ExperimentConfig
from reprozoo.core.results import environment, git_commit


@dataclass
class Cfg(ExperimentConfig):
    datasets: tuple[str, ...] = ("A",)
    grid: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    pair: tuple[int, int] = (1, 2)
    budget: int | None = None
    PRESETS: ClassVar[dict] = {"quick": {}}
    KNOWN_DATASETS: ClassVar[tuple] = ("A", "B", "C.v2")


def test_set_on_an_empty_tuple_uses_the_annotated_element_type():
    c = Cfg.from_preset("quick").with_strings({"grid": "5,20", "counts": "3, 4", "names": "x,y"})
    assert c.grid == (5.0, 20.0) and all(type(v) is float for v in c.grid)
    assert c.counts == (3, 4) and all(type(v) is int for v in c.counts)
    assert c.names == ("x", "y")
    with pytest.raises(ConfigError, match="expected an int"):
        Cfg.from_preset("quick").with_strings({"counts": "1.5"})


def test_set_fixed_length_tuple_and_optional_scalar():
    c = Cfg.from_preset("quick")
    assert c.with_strings({"pair": "7,8"}).pair == (7, 8)
    with pytest.raises(ConfigError, match="2 comma-separated items"):
        c.with_strings({"pair": "7"})
    assert c.with_strings({"budget": "12"}).budget == 12
    assert c.with_strings({"budget": "none"}).budget is None
    with pytest.raises(ConfigError, match="expected an int"):
        c.with_strings({"budget": "lots"})


def test_set_falls_back_to_the_current_values_type_without_annotations(monkeypatch):
    monkeypatch.setattr(Cfg, "field_types", classmethod(lambda cls: {}))
    c = Cfg.from_preset("quick").replace(counts=(1,))
    assert c.with_strings({"counts": "5,6"}).counts == (5, 6)
    assert c.with_strings({"grid": "5"}).grid == ("5",)  # nothing to go by: strings, as documented


def test_empty_datasets_or_seeds_are_rejected():
    c = Cfg.from_preset("quick")
    assert c.with_strings({"grid": ""}).grid == ()  # other empty tuples are the method's to judge
    with pytest.raises(ConfigError, match="datasets is empty"):
        c.with_strings({"datasets": ""})
    with pytest.raises(ConfigError, match="seeds is empty"):
        c.with_strings({"seeds": " "})


def test_repeated_seeds_and_datasets_are_dropped_keeping_order():
    c = Cfg.from_preset("quick").replace(seeds=[3, 1, 3, 1], datasets=("B", "A", "B"))
    assert c.seeds == (3, 1) and c.datasets == ("B", "A")
    assert Cfg.from_preset("quick").with_strings({"seeds": "0,0"}).seeds == (0,)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40, True, 1.0])
def test_out_of_range_seeds_are_rejected(seed):
    with pytest.raises(ConfigError, match=r"seeds should be ints in \[0, 2\*\*32\)"):
        Cfg.from_preset("quick").replace(seeds=(seed,))


def test_largest_seed_is_accepted():
    assert Cfg.from_preset("quick").replace(seeds=(0, 2**32 - 1)).seeds == (0, 2**32 - 1)


@pytest.mark.parametrize("name", ["/nonexistent/data.mat", "data/x.csv", "x.npz", "sub/dir"])
def test_missing_dataset_path_says_no_such_file(name):
    with pytest.raises(ConfigError, match="no such file") as info:
        Cfg.from_preset("quick").replace(datasets=(name,))
    assert "valid datasets: A, B, C.v2" in str(info.value)


@pytest.mark.parametrize("name", ["Nope", "D-1"])
def test_unknown_dataset_name_is_still_unknown(name):
    with pytest.raises(ConfigError, match="unknown dataset"):
        Cfg.from_preset("quick").replace(datasets=(name,))


def test_known_dataset_with_a_dot_is_accepted():
    assert Cfg.from_preset("quick").replace(datasets=("C.v2",)).datasets == ("C.v2",)


def test_environment_has_the_schema_keys_and_torch_whatever_was_imported():
    env = environment("cpu")
    assert list(env) == ["python", "torch", "reprozoo", "git", "device"]
    try:
        expected = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        expected = "not installed"
    assert env["torch"] == expected


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_marks_uncommitted_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a repo above tmp_path
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    git_commit.cache_clear()
    assert git_commit(str(repo)) == head
    (repo / "a.txt").write_text("changed")
    git_commit.cache_clear()
    assert git_commit(str(repo)) == head + "-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    git_commit.cache_clear()
    assert git_commit(str(outside)) == "unknown"
    git_commit.cache_clear()
