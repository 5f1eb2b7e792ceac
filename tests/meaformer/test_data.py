"""DBP15K / OpenEA loaders: counts against PROVENANCE.md, the id-leak guard, the split, bad input."""

import pickle

import numpy as np
import pytest

from reprozoo.datasets import load_dbp15k, read_openea, split_links

# data/dbp15k/PROVENANCE.md: entities (ent_ids_1 + ent_ids_2), triples_1 + triples_2, translated names
COUNTS = {"ZH-EN": (19388, 19572, 70414 + 95142, 38960), "JA-EN": (19814, 19780, 77214 + 93484, 39594),
          "FR-EN": (19661, 19993, 105998 + 115722, 39654)}


@pytest.fixture(scope="module")
def zh():
    return load_dbp15k("ZH-EN")


@pytest.mark.parametrize("pair", list(COUNTS))
def test_counts_match_provenance(pair):
    kg = load_dbp15k(pair)
    n1, n2, n_triples, n_named = COUNTS[pair]
    assert (len(kg.left), len(kg.right), kg.n_entities) == (n1, n2, n1 + n2)
    assert len(kg.triples) == n_triples and len(kg.links) == 15000
    assert sum(1 for t in kg.names if t) >= n_named - 5  # a handful of names tokenise to nothing
    assert set(kg.links[:, 0]) <= set(kg.left) and set(kg.links[:, 1]) <= set(kg.right)


def test_raw_ids_leak_and_remap_removes_it(zh):
    leaky = load_dbp15k("ZH-EN", remap_seed=None)
    # file order: most source entities i are aligned with i + 10,500 (compacted ids keep a fixed offset)
    offsets = leaky.links[:, 1] - leaky.links[:, 0]
    assert np.mean(offsets == np.bincount(np.abs(offsets)).argmax()) > 0.5
    # after the seeded remap a model that sees only ids is at chance: predict partner = nearest id
    test = split_links(zh.links, seed=0).test
    right = np.sort(test[:, 1])
    pred = right[np.clip(np.searchsorted(right, test[:, 0] + np.median(zh.links[:, 1] - zh.links[:, 0])), 0,
                         len(right) - 1)]
    hits1 = np.mean(pred == test[:, 1])
    assert hits1 < 5 / len(test) * 10  # chance is 1/len(test)
    # and the same id-only predictor on the leaky ids is far above chance (the guard is what stops it)
    lt = split_links(leaky.links, seed=0).test
    r = np.sort(lt[:, 1])
    off = np.bincount(np.abs(leaky.links[:, 1] - leaky.links[:, 0])).argmax()
    pred = r[np.clip(np.searchsorted(r, lt[:, 0] + off), 0, len(r) - 1)]
    assert np.mean(pred == lt[:, 1]) > 0.5


def test_split_is_seeded_and_test_sealed(zh):
    a, b = split_links(zh.links, seed=42), split_links(zh.links, seed=42)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.valid, b.valid)
    assert (len(a.train), len(a.valid), a.n_test) == (4050, 450, 10500)
    assert a.test_reads == 0
    t = a.test
    assert a.test_reads == 1 and len(t) == 10500
    all_links = np.concatenate([a.train, a.valid, t])
    assert len(np.unique(all_links[:, 0])) == 15000
    c = split_links(zh.links, seed=42, n_train=4500)
    assert len(c.train) + len(c.valid) == 4500 and c.n_test == 10500


def test_subset_keeps_links_consistent(zh):
    sub = zh.subset(300, seed=1, hops=1)
    assert len(sub.links) >= 300
    assert sub.triples[:, [0, 2]].max() < sub.n_entities
    assert set(sub.links[:, 0]) <= set(sub.left) and set(sub.links[:, 1]) <= set(sub.right)
    with pytest.raises(ValueError, match="n_links"):
        zh.subset(0)


def _write_pair(folder, *, links="0\t2\n1\t3\n", triples1="0\t0\t1\n", ents2="2\tb:x\n3\tb:y\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ent_ids_1").write_text("0\ta:x\n1\ta:y\n")
    (folder / "ent_ids_2").write_text(ents2)
    (folder / "triples_1").write_text(triples1)
    (folder / "triples_2").write_text("2\t1\t3\n")
    (folder / "ill_ent_ids").write_text(links)
    (folder / "translated_ent_name.json").write_text('[[0, ["x"]], [1, ["y"]], [2, ["x"]], [3, ["y"]]]')
    return folder


def test_user_folder_attrs_and_images(tmp_path):
    f = _write_pair(tmp_path / "zz_en")
    (f / "training_attrs_1").write_text("a:x\tbirth\tname\na:y\tname\n")
    (f / "training_attrs_2").write_text("b:x\tbirth\n")
    with open(f / "img.pkl", "wb") as fh:
        pickle.dump({0: np.ones(4), 2: np.ones(4) * 3}, fh)
    kg = load_dbp15k(root=f, attrs=(f / "training_attrs_1", f / "training_attrs_2"), images=f / "img.pkl",
                     remap_seed=3)
    assert kg.n_entities == 4 and len(kg.links) == 2
    assert sorted(map(sorted, kg.attrs)) == [[], ["birth"], ["birth", "name"], ["name"]]
    assert kg.image_mask.sum() == 2 and np.allclose(kg.images[~kg.image_mask], 0)
    ref = load_dbp15k(root=f, images=f / "img.pkl", missing_images="reference")
    assert ref.image_mask.all()  # the reference rule: N(mean, std) of the known vectors for the others


def test_openea_folder(tmp_path):
    f = tmp_path / "D_W_15K"
    (f / "721_5fold" / "1").mkdir(parents=True)
    (f / "rel_triples_1").write_text("a:x\tr\ta:y\na:y\tr\ta:z\n")
    (f / "rel_triples_2").write_text("b:x\ts\tb:y\nb:z\ts\tb:x\n")
    (f / "ent_links").write_text("a:x\tb:x\na:y\tb:y\na:z\tb:z\n")
    (f / "721_5fold" / "1" / "train_links").write_text("a:x\tb:x\n")
    (f / "721_5fold" / "1" / "valid_links").write_text("a:y\tb:y\n")
    (f / "721_5fold" / "1" / "test_links").write_text("a:z\tb:z\n")
    (f / "attr_triples_1").write_text("a:x\tage\t3\n")
    (f / "attr_triples_2").write_text("b:x\tage\t3\n")
    kg = read_openea(f, attrs=True)
    assert kg.n_entities == 6 and len(kg.triples) == 4 and len(kg.links) == 3
    assert {k: len(v) for k, v in kg.folds.items()} == {"train": 1, "valid": 1, "test": 1}
    assert sum(bool(a) for a in kg.attrs) == 2
    (f / "ent_links").write_text("a:x\tb:x\na:q\tb:y\n")
    with pytest.raises(ValueError, match=r"ent_links, line 2"):
        read_openea(f)


@pytest.mark.parametrize("kwargs, match", [
    ({"links": "0\t2\n1\t2\n"}, r"ill_ent_ids, lines 1 and 2: right entity 2 is linked twice"),
    ({"links": "0\t2\n1\t7\n"}, r"ill_ent_ids, line 2: link \(1, 7\) names an entity not in the second"),
    ({"links": "0\t2\n2\t3\n"}, r"line 2: link \(2, 3\) names an entity not in the first graph"),
    ({"triples1": "0\t0\t9\n"}, r"triples_1, line 1: entity id 9 is out of range"),
    ({"triples1": ""}, r"triples_1 holds no triples"),
    ({"triples1": "0\t0\n"}, r"triples_1, line 1: expected 3 tab-separated fields"),
    ({"ents2": "1\tb:x\n3\tb:y\n"}, r"ent_ids_2: id 1 is also in ent_ids_1"),
])
def test_bad_files_name_file_and_line(tmp_path, kwargs, match):
    f = _write_pair(tmp_path / "p", **kwargs)
    with pytest.raises(ValueError, match=match):
        load_dbp15k(root=f)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="pair='DE-EN' is not a DBP15K language pair"):
        load_dbp15k("DE-EN")
    f = _write_pair(tmp_path / "p")
    with open(f / "img.pkl", "wb") as fh:
        pickle.dump({0: np.ones(4), 2: np.ones(5)}, fh)
    with pytest.raises(ValueError, match=r"img.pkl: the vector of entity 2 has dimension 5, expected 4"):
        load_dbp15k(root=f, images=f / "img.pkl")
    with pytest.raises(ValueError, match=r"expected 8"):
        load_dbp15k(root=f, images=f / "img.pkl", image_dim=8)
    with pytest.raises(ValueError, match="missing_images"):
        load_dbp15k(root=f, missing_images="zeros")
    with pytest.raises(ValueError, match="train_ratio"):
        split_links(np.zeros((10, 2)), train_ratio=1.5)
