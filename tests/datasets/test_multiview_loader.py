import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from reprozoo.datasets import DataNotFoundError, list_multiview, load_multiview

SHIPPED = {  # name: (n, views, classes)
    "MSRC-v1": (210, 5, 7), "HW": (2000, 6, 10), "3Sources": (169, 3, 6), "BBCSport": (544, 2, 5),
    "ORL_4views": (400, 4, 40), "Texas": (187, 2, 5), "Cornell": (195, 2, 5), "Washington": (230, 2, 5),
    "WebKB-Texas": (187, 2, 5), "synthetic3d": (600, 3, 3),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_set_loads(name):
    d = load_multiview(name)
    n, v, c = SHIPPED[name]
    assert (d.n_samples, d.n_views, d.n_clusters) == (n, v, c)
    assert all(x.shape[0] == n and x.dtype == np.float64 for x in d.views)
    assert d.labels.min() == 0 and set(np.unique(d.labels)) == set(range(c))


def test_list_contains_all_shipped():
    assert set(SHIPPED) <= set(list_multiview())


def test_orl_is_transposed_to_samples_by_features():
    assert load_multiview("ORL_4views").view_dims == [512, 59, 864, 254]


def test_webkb_v73_roundtrip_matches_known_dims():
    d = load_multiview("WebKB-Texas")
    assert d.view_dims == [187, 1703]
    assert d.path.name == "data_WebKB-Texas.mat"


def _cell(views, orientation):
    cell = np.empty((1, len(views)) if orientation == "row" else (len(views), 1), dtype=object)
    for i, v in enumerate(views):
        cell.flat[i] = v
    return cell


@pytest.mark.parametrize("orientation", ["row", "col"])
@pytest.mark.parametrize("label_key", ["y", "Y", "gt", "truth", "labels"])
def test_user_v5_file_conventions(tmp_path, orientation, label_key):
    rng = np.random.default_rng(0)
    n = 12
    a, b = rng.random((n, 3)), rng.random((4, n))  # second view stored d x n
    c = sp.csr_matrix(rng.random((n, 5)) > 0.5, dtype=float)
    labels = np.repeat([3, 5, 9], 4).reshape(-1, 1)  # arbitrary codes -> 0..2
    path = tmp_path / "mine.mat"
    scipy.io.savemat(path, {"X": _cell([a, b, c], orientation), label_key: labels})
    d = load_multiview(path)
    assert d.name == "mine" and d.view_dims == [3, 4, 5]
    np.testing.assert_allclose(d.views[1], b.T)
    np.testing.assert_allclose(d.views[2], c.toarray())
    np.testing.assert_array_equal(d.labels, np.repeat([0, 1, 2], 4))


def test_user_v73_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 10
    views = [rng.random((n, 3)), rng.random((n, 6))]
    path = tmp_path / "data_v73.mat"
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ref_list = []
        for i, v in enumerate(views):
            ds = refs.create_dataset(f"v{i}", data=v.T)  # HDF5 holds MATLAB's column-major arrays transposed
            ref_list.append(ds.ref)
        x = f.create_dataset("X", (len(views), 1), dtype=h5py.ref_dtype)
        for i, r in enumerate(ref_list):
            x[i, 0] = r
        f.create_dataset("Y", data=(np.arange(n) % 2 + 1).reshape(1, n).astype(float))
    d = load_multiview(path)
    assert d.name == "v73" and d.view_dims == [3, 6]
    np.testing.assert_allclose(d.views[0], views[0])
    np.testing.assert_array_equal(d.labels, np.arange(n) % 2)


def test_unknown_name_lists_known_sets():
    with pytest.raises(DataNotFoundError, match="Known data sets: .*MSRC-v1"):
        load_multiview("NoSuchSet")


def test_corrupt_file(tmp_path):
    p = tmp_path / "broken.mat"
    p.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        load_multiview(p)


def test_missing_path_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="name_or_path"):
        load_multiview(tmp_path / "absent.mat")
    with pytest.raises(TypeError, match="name_or_path"):
        load_multiview(3)


def test_file_without_labels_or_views(tmp_path):
    p = tmp_path / "nolabels.mat"
    scipy.io.savemat(p, {"X": _cell([np.ones((3, 2))], "row")})
    with pytest.raises(ValueError, match="no labels"):
        load_multiview(p)
    p2 = tmp_path / "noviews.mat"
    scipy.io.savemat(p2, {"y": np.arange(3)})
    with pytest.raises(ValueError, match="no views"):
        load_multiview(p2)


def test_view_with_wrong_number_of_rows(tmp_path):
    p = tmp_path / "mismatch.mat"
    scipy.io.savemat(p, {"X": _cell([np.ones((4, 2)), np.ones((5, 2))], "row"), "y": np.arange(4)})
    with pytest.raises(ValueError, match="view 1 has shape"):
        load_multiview(p)


def test_data_root_env_takes_precedence(tmp_path, monkeypatch):
    (tmp_path / "multiview").mkdir()
    scipy.io.savemat(tmp_path / "multiview" / "MSRC-v1.mat",
                     {"X": _cell([np.ones((4, 2))], "row"), "y": np.arange(4)})
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path))
    assert load_multiview("MSRC-v1").n_samples == 4


def test_checksum_mismatch_is_reported(tmp_path, monkeypatch):
    import hashlib

    from reprozoo.datasets import ChecksumError

    folder = tmp_path / "multiview"
    folder.mkdir()
    path = folder / "tiny.mat"
    scipy.io.savemat(path, {"X": _cell([np.ones((4, 2))], "row"), "y": np.arange(4)})
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(b'other').hexdigest()}  tiny.mat\n")
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path))
    with pytest.raises(ChecksumError, match="tiny.mat"):
        load_multiview("tiny")


@pytest.mark.parametrize("labels, match", [(np.array([1, 2, np.nan, 1.0]), "NaN"),
                                           (np.array([1.5, 2.5, 1.5, 2.5]), "integer"),
                                           (np.ones(4), "single class")])
def test_bad_labels_are_rejected(tmp_path, labels, match):
    p = tmp_path / "badlabels.mat"
    scipy.io.savemat(p, {"X": _cell([np.ones((4, 2))], "row"), "y": labels})
    with pytest.raises(ValueError, match=match):
        load_multiview(p)


def test_a_view_with_nan_is_rejected_naming_the_file_and_view(tmp_path):
    p = tmp_path / "nanview.mat"
    view = np.ones((4, 2))
    view[1, 1] = np.nan
    scipy.io.savemat(p, {"X": _cell([np.ones((4, 3)), view], "row"), "y": np.arange(4)})
    with pytest.raises(ValueError, match=r"nanview\.mat: view 1 holds 1 NaN"):
        load_multiview(p)


def test_folder_and_shipped_name_hint(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        load_multiview(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass the name 'HW'"):
        load_multiview("HW.mat")
