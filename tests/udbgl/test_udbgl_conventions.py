"""UDBGL: the authors' rank schedule as an option, scikit-learn conventions, MATLAB cell arrays, data-set
paths checked before a run, and the LMVSC baseline."""

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from typer.testing import CliRunner

import reprozoo.udbgl.udbgl as udbgl_mod
from reprozoo.cli import app
from reprozoo.core.experiment import ConfigError
from reprozoo.core.metrics import clustering_scores
from reprozoo.datasets import load_multiview
from reprozoo.udbgl import UDBGL, RankConstraintWarning
from reprozoo.udbgl.baselines import lmvsc
from reprozoo.udbgl.experiment import Config

DATA = Path(__file__).resolve().parents[2] / "data" / "multiview"


def blobs(n_per=40, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n_per)
    centers = rng.normal(scale=4.0, size=(c, 5))
    v1 = centers[y] + rng.normal(size=(y.size, 5))
    v2 = centers[y] @ rng.normal(size=(5, 3)) + rng.normal(size=(y.size, 3))
    return [v1, v2], y


@pytest.fixture(scope="module")
def msrc():
    return load_multiview("MSRC-v1")


# -- rank_search: the authors' schedule, and what the further search adds ---------------------------------
def test_rank_search_reference_runs_only_the_authors_schedule(msrc, monkeypatch):
    real = udbgl_mod.structured_bipartite_graph
    extra_used = []

    def spy(B, c, **kw):
        out = real(B, c, **kw)
        extra_used.append(out["extra_iter"])
        return out

    monkeypatch.setattr(udbgl_mod, "structured_bipartite_graph", spy)
    assert UDBGL(n_clusters=7).rank_search == "extended"  # the default is unchanged
    # MSRC-v1 seed 1: the authors' schedule ends with fewer than 7 components (measured)
    with pytest.warns(RankConstraintWarning, match="rank_search='reference'"):
        ref = UDBGL(n_clusters=7, rank_search="reference", random_state=1).fit(msrc.views)
    assert extra_used and max(extra_used) == 0  # no P-step went beyond the 50 reference updates
    assert ref.n_components_found_ != 7 and ref.label_path_ == "kmeans_fallback"
    assert np.unique(ref.labels_).size == 7
    extra_used.clear()
    ext = UDBGL(n_clusters=7, random_state=1).fit(msrc.views)
    assert max(extra_used) > 0 and ext.label_path_ == "lambda_search"
    assert not np.array_equal(ref.view_weights_, ext.view_weights_)  # the trajectories differ


def test_reference_schedule_reaching_c_labels_the_components():
    views, _ = blobs(seed=1)
    model = UDBGL(n_clusters=3, rank_search="reference", random_state=0).fit(views)
    assert (model.label_path_ == "components") == (model.n_components_found_ == 3)
    assert model.label_path_ in ("components", "kmeans_fallback")


# -- scikit-learn conventions ------------------------------------------------------------------------------
def test_fitted_attributes_before_fit_raise_not_fitted_error():
    model = UDBGL(n_clusters=3)
    for name in ("labels_", "view_weights_", "bipartite_graph_", "n_components_found_", "label_path_"):
        with pytest.raises(NotFittedError, match=f"not fitted yet.*{name}"):
            getattr(model, name)
    assert not hasattr(model, "labels_")  # NotFittedError is an AttributeError
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        model.nonsense  # noqa: B018
    # pickled unfitted and fitted
    with pytest.raises(NotFittedError):
        pickle.loads(pickle.dumps(model)).labels_  # noqa: B018
    views, _ = blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankConstraintWarning)
        model.fit(views)
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back.labels_, model.labels_)
    assert back.get_params() == model.get_params()


def test_parameter_constraints_are_one_table_covering_every_parameter():
    model = UDBGL(n_clusters=3)
    assert set(UDBGL._parameter_constraints) == set(model.get_params())
    views, _ = blobs()
    with pytest.raises(ValueError, match="'rank_search' parameter of UDBGL must be a str among"):
        UDBGL(n_clusters=3, rank_search="more").fit(views)
    with pytest.raises(ValueError, match=r"'beta' parameter of UDBGL must be a float in the range \[0.0, inf\)"):
        UDBGL(n_clusters=3, beta=float("inf")).fit(views)


def test_views_side_by_side_work_in_pipeline_and_grid_search():
    views, y = blobs()
    X = np.hstack(views)
    dims = [v.shape[1] for v in views]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankConstraintWarning)
        direct = UDBGL(n_clusters=3, random_state=0).fit(views).labels_
        side = UDBGL(n_clusters=3, view_dims=dims, random_state=0).fit(X).labels_
        np.testing.assert_array_equal(side, direct)
        pipe = Pipeline([("scale", MinMaxScaler()), ("udbgl", UDBGL(n_clusters=3, view_dims=dims, random_state=0))])
        assert clustering_scores(y, pipe.fit_predict(X))["ACC"] > 0.95
        everything = np.arange(y.size)  # transductive: fit and score on the same samples
        search = GridSearchCV(UDBGL(n_clusters=3, view_dims=dims, random_state=0), {"alpha": [1e-3, 1e-1]},
                              scoring=lambda est, X_, y_: adjusted_rand_score(y_, est.labels_),
                              cv=[(everything, everything)]).fit(X, y)
    assert search.best_params_["alpha"] in (1e-3, 1e-1) and search.best_score_ > 0.9
    with pytest.raises(ValueError, match=r"view_dims=\(5, 2\) sums to 7, but views has 8 columns"):
        UDBGL(n_clusters=3, view_dims=(5, 2)).fit(X)
    with pytest.raises(TypeError, match="view_dims"):
        UDBGL(n_clusters=3).fit(X)


# -- MATLAB cell arrays ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 1), (1, 2)])
def test_matlab_cell_arrays_are_accepted(tmp_path, shape):
    views, _ = blobs()
    cells = np.empty(shape, dtype=object)
    for i, v in enumerate(views):
        cells.flat[i] = v
    scipy.io.savemat(tmp_path / "v.mat", {"X": cells})
    loaded = scipy.io.loadmat(tmp_path / "v.mat")["X"]  # (V, 1) or (1, V), dtype object
    assert loaded.dtype == object and loaded.shape == shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankConstraintWarning)
        a = UDBGL(n_clusters=3, random_state=0).fit(loaded).labels_
        b = UDBGL(n_clusters=3, random_state=0).fit(views).labels_
    np.testing.assert_array_equal(a, b)
    assert lmvsc(loaded, 3, 3, n_init=2).shape == (120,)


# -- data-set paths: checked before anything runs; two spellings of one file merged with a warning ---------
def test_a_corrupt_mat_file_is_a_usage_error_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes((DATA / "Texas.mat").read_bytes()[:300])  # truncated
    with pytest.raises(ConfigError, match="bad.mat.*not a usable multi-view .mat file"):
        Config.from_preset("smoke").replace(datasets=(str(bad),))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "udbgl", "--preset", "smoke", "--dataset", str(bad), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("problem, match", [("nan", "view 0 holds 1 NaN"), ("one class", "single class")])
def test_a_mat_file_with_nan_or_one_class_is_a_usage_error(tmp_path, problem, match):
    view, y = np.random.default_rng(0).random((12, 3)), np.arange(12) % 3
    if problem == "nan":
        view[2, 1] = np.nan
    else:
        y[:] = 1
    path = tmp_path / "mine.mat"
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = view, view
    scipy.io.savemat(path, {"X": cells, "Y": y})
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "udbgl", "--preset", "smoke", "--dataset", str(path), "--out", str(out)])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "mine.mat" in text and match in text, text
    assert not out.exists()


def test_two_spellings_of_one_file_are_merged_with_a_warning(tmp_path, monkeypatch):
    shutil.copy(DATA / "Texas.mat", tmp_path / "a.mat")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"'\./a\.mat' names the same file as 'a\.mat'; it runs once"):
        cfg = Config.from_preset("smoke").replace(datasets=("a.mat", "./a.mat"))
    assert cfg.datasets == ("a.mat",)


# -- LMVSC (Kang et al., AAAI 2020) --------------------------------------------------------------------------
def test_lmvsc_on_msrc_and_its_anchor_graphs(msrc, monkeypatch):
    lab = lmvsc(msrc.views, 7, 7, seed=0)
    assert lab.shape == (msrc.n_samples,) and np.unique(lab).size == 7
    # measured 0.684 (seed 0); chance is about 0.05
    assert clustering_scores(msrc.labels, lab)["NMImax"] > 0.55
    # Eq. (4): every per-view graph row is on the simplex (the stacked matrix has V ones per row)
    import reprozoo.udbgl.baselines as bl

    seen = []
    real = bl._top_left_singular
    monkeypatch.setattr(bl, "_top_left_singular", lambda Z, c: seen.append(Z) or real(Z, c))
    lmvsc(msrc.views, 7, 14, seed=0, n_init=2)
    Z = seen[0]
    assert Z.shape == (msrc.n_samples, 14 * msrc.n_views) and Z.min() >= 0
    np.testing.assert_allclose(Z.sum(axis=1), msrc.n_views, atol=1e-9)
    with pytest.raises(ValueError, match="n_anchors"):
        lmvsc(msrc.views, 7, 3)
    with pytest.raises(ValueError, match="alpha"):
        lmvsc(msrc.views, 7, 7, alpha=-1.0)
