"""Planetoid loader: a corrupt processed cache is detected, named, and rebuilt once from the raw files."""

import warnings

import pytest

pytest.importorskip("torch_geometric")

import reprozoo.datasets.planetoid as planetoid_mod  # noqa: E402
from reprozoo.datasets import load_planetoid  # noqa: E402
from reprozoo.datasets.planetoid import PlanetoidCacheError  # noqa: E402


def _processed_file(cache):
    (path,) = cache.glob("*/Cora/processed/data.pt")
    return path


def test_truncated_processed_cache_is_rebuilt_with_a_warning(tmp_path):
    good = load_planetoid("Cora", cache_dir=tmp_path)
    data_pt = _processed_file(tmp_path)
    data_pt.write_bytes(data_pt.read_bytes()[:100])  # what an interrupted copy leaves behind
    with pytest.warns(RuntimeWarning, match=r"processed/data\.pt could not be loaded.*rebuilding") as rec:
        again = load_planetoid("Cora", cache_dir=tmp_path)
    assert str(data_pt) in str(rec[0].message)  # the message names the file
    assert bool((again.x == good.x).all()) and bool((again.y == good.y).all())
    assert bool((again.edge_index == good.edge_index).all())
    assert _processed_file(tmp_path).stat().st_size > 10_000  # rebuilt in place
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache loads silently
        load_planetoid("Cora", cache_dir=tmp_path)


def test_failed_rebuild_raises_an_error_naming_the_file(tmp_path, monkeypatch):
    load_planetoid("Cora", cache_dir=tmp_path)
    data_pt = _processed_file(tmp_path)
    calls = []

    def always_corrupt(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("PytorchStreamReader failed reading zip archive")

    monkeypatch.setattr(planetoid_mod, "_open_processed", always_corrupt)
    with pytest.warns(RuntimeWarning, match="rebuilding"), pytest.raises(PlanetoidCacheError) as err:
        load_planetoid("Cora", cache_dir=tmp_path)
    assert str(data_pt) in str(err.value) and "even after rebuilding" in str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert len(calls) == 2  # one load, one rebuild, no loop


def test_another_data_sets_processed_cache_is_rebuilt_with_a_warning(tmp_path):
    cora = load_planetoid("Cora", cache_dir=tmp_path)
    load_planetoid("CiteSeer", cache_dir=tmp_path)
    (cite_pt,) = tmp_path.glob("*/CiteSeer/processed/data.pt")
    data_pt = _processed_file(tmp_path)
    data_pt.write_bytes(cite_pt.read_bytes())  # CiteSeer's processed file copied over Cora's: it loads
    with pytest.warns(RuntimeWarning, match=r"3327 nodes x 3703 features, 6 classes.*Cora has 2708 x 1433") as rec:
        again = load_planetoid("Cora", cache_dir=tmp_path)
    assert str(data_pt) in str(rec[0].message) and "rebuilding" in str(rec[0].message)
    assert (again.num_nodes, again.num_features, again.num_classes) == (2708, 1433, 7)
    assert bool((again.x == cora.x).all()) and bool((again.y == cora.y).all())


def test_known_sizes_match_the_shipped_graphs(tmp_path):
    from reprozoo.datasets.planetoid import PLANETOID_SIZES

    for name in ("Cora", "CiteSeer"):
        g = load_planetoid(name, cache_dir=tmp_path)
        assert (g.num_nodes, g.num_features, g.num_classes) == PLANETOID_SIZES[name]
