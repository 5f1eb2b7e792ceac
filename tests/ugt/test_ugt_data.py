"""Planetoid loader: offline, public split, PubMed's missing file named."""

import pytest

pytest.importorskip("torch_geometric")

from reprozoo.datasets import DataNotFoundError, load_planetoid, planetoid_raw_files  # noqa: E402


def test_cora_public_split(tmp_path):
    g = load_planetoid("cora", cache_dir=tmp_path)
    assert g.name == "Cora" and g.x.shape == (2708, 1433) and g.num_classes == 7
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (140, 500, 1000)
    assert g.edge_index.shape == (2, 10556) and int(g.edge_index.max()) < 2708
    rows = g.x.sum(1)
    assert bool(((rows - 1).abs() < 1e-5).all())  # NormalizeFeatures
    assert not (tmp_path / "Cora").exists() and any(tmp_path.iterdir())  # cache, not data/
    again = load_planetoid("Cora", cache_dir=tmp_path)  # reads the processed cache
    assert bool((again.x == g.x).all())
    assert g.to_data().num_nodes == 2708


def test_citeseer_pads_isolated_test_nodes(tmp_path):
    g = load_planetoid("CiteSeer", cache_dir=tmp_path)
    assert g.num_nodes == 3327 and g.num_features == 3703 and g.num_classes == 6


def test_pubmed_names_missing_file_without_network():
    with pytest.raises(DataNotFoundError, match=r"ind\.pubmed\.allx.*kimiyoung/planetoid"):
        load_planetoid("PubMed")


def test_bad_names_and_roots(tmp_path):
    with pytest.raises(ValueError, match="Planetoid"):
        load_planetoid("Amazon")
    with pytest.raises(TypeError, match="name"):
        load_planetoid(3)
    with pytest.raises(DataNotFoundError, match=r"ind\.cora\.x"):
        planetoid_raw_files("Cora", root=tmp_path)
