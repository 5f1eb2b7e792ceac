"""Baselines for firm-to-industry assignment, with the estimator's face: ``fit(texts, codes, times)``,
``predict_proba(texts, time, level=None)``, ``predict``, ``predict_topk`` (``time`` is accepted and unused:
none of them knows time).

- :class:`TfidfLR`: flat TF-IDF (sublinear, sparse) + multinomial logistic regression over the leaves.
- :class:`EmbeddingLR`: logistic regression over the leaves on the text encoder's embeddings (the same encoder
  as the method: LSA-reduced TF-IDF or MiniLM).
- :class:`NearestDefinition`: zero-shot, no assignments: cosine between a firm's and each node's text.
- :class:`HierarchicalLR`: a top-down hierarchical classifier without expert knowledge: one TF-IDF logistic
  regression per parent node over its children (local classifier per parent node), path probability = product.

The paper's baselines are unknown (only the abstract is public); these are ours. Training rows labelled at an
upper node are dropped by the flat baselines (they predict leaves) and used down to their level by
:class:`HierarchicalLR`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from reprozoo.core.checks import check_int
from reprozoo.datasets.industry import ICS
from reprozoo.text import check_texts, make_encoder

__all__ = ["TfidfLR", "EmbeddingLR", "NearestDefinition", "HierarchicalLR", "leaf_to_level"]


def leaf_to_level(ics: ICS, proba: np.ndarray, level: int | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sum leaf probabilities (n, n_leaves) up to the nodes of ``level`` (None: the leaves themselves)."""
    if level is None:
        return proba, ics.leaves
    check_int(level, "level", low=1, high=ics.n_levels)
    nodes = ics.codes_at(level)
    pos = {c: i for i, c in enumerate(nodes)}
    member = np.zeros((len(ics.leaves), len(nodes)))
    for j, leaf in enumerate(ics.leaves):
        a = ics.ancestor_at(leaf, level)
        if a is not None:
            member[j, pos[a]] = 1.0
    return proba @ member, nodes


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1, dtype=np.float32)


class _LeafModel(BaseEstimator):
    """Shared face: leaf probabilities from ``_leaf_proba``; levels by summing leaves."""

    def _check_fit(self, texts: Any, codes: Any) -> tuple[list[str], list[str]]:
        texts = check_texts(texts)
        if isinstance(codes, str) or not hasattr(codes, "__len__") or len(codes) != len(texts):
            raise ValueError(f"codes should hold one code per text ({len(texts)})")
        return texts, self.ics.check_codes(list(codes), "codes")

    def predict_proba(self, texts: Any, time: Any = None, level: int | None = None) -> np.ndarray:
        check_is_fitted(self)
        return leaf_to_level(self.ics, self._leaf_proba(check_texts(texts)), level)[0]

    def predict(self, texts: Any, time: Any = None) -> np.ndarray:
        p = self.predict_proba(texts, time)
        return np.asarray(self.ics.leaves, dtype=object)[p.argmax(1)]

    def predict_topk(self, texts: Any, time: Any = None, k: int = 5, level: int | None = None) -> np.ndarray:
        p, nodes = leaf_to_level(self.ics, self.predict_proba(texts, time), level)
        top = np.argsort(-p, axis=1, kind="stable")[:, : min(k, p.shape[1])]
        return np.asarray(nodes, dtype=object)[top]

    def _flat_fit(self, X: Any, codes: list[str]) -> None:
        keep = [i for i, c in enumerate(codes) if c in self._leaf_pos]
        y = np.array([self._leaf_pos[codes[i]] for i in keep])
        self.lr_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X[keep], y)

    def _flat_proba(self, X: Any) -> np.ndarray:
        out = np.zeros((X.shape[0], len(self.ics.leaves)))
        out[:, self.lr_.classes_] = self.lr_.predict_proba(X)
        return out

    @property
    def _leaf_pos(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.ics.leaves)}


class TfidfLR(_LeafModel):
    """Flat TF-IDF + logistic regression over the leaves (L2, ``C``, lbfgs multinomial)."""

    def __init__(self, ics: ICS, C: float = 10.0, max_iter: int = 500) -> None:
        self.ics = ics
        self.C = C
        self.max_iter = max_iter

    def fit(self, texts: Any, codes: Any, times: Any = None) -> TfidfLR:
        texts, codes = self._check_fit(texts, codes)
        self.vectorizer_ = _tfidf()
        self._flat_fit(self.vectorizer_.fit_transform(texts), codes)
        return self

    def _leaf_proba(self, texts: list[str]) -> np.ndarray:
        return self._flat_proba(self.vectorizer_.transform(texts))


class EmbeddingLR(_LeafModel):
    """Logistic regression over the leaves on sentence embeddings (:func:`reprozoo.text.make_encoder`)."""

    def __init__(self, ics: ICS, encoder: str = "tfidf", encoder_dim: int = 512, C: float = 10.0,
                 max_iter: int = 500, random_state: int = 0) -> None:
        self.ics = ics
        self.encoder = encoder
        self.encoder_dim = encoder_dim
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, texts: Any, codes: Any, times: Any = None) -> EmbeddingLR:
        texts, codes = self._check_fit(texts, codes)
        kw = {"dim": self.encoder_dim, "random_state": self.random_state} if self.encoder == "tfidf" else {}
        self.encoder_ = make_encoder(self.encoder, **kw).fit(texts)
        self._flat_fit(self.encoder_.transform(texts), codes)
        return self

    def _leaf_proba(self, texts: list[str]) -> np.ndarray:
        return self._flat_proba(self.encoder_.transform(texts))


class NearestDefinition(_LeafModel):
    """Zero-shot: the node whose text (title + definition) is closest (cosine) to the firm's text.

    Per level, probabilities are ``softmax(cos / temperature)`` over that level's nodes (each level scored on
    its own). ``fit`` only fits the encoder's vocabulary on the firm texts and the node texts; it reads no label.
    """

    def __init__(self, ics: ICS, encoder: str = "tfidf", encoder_dim: int | None = None, temperature: float = 0.05,
                 random_state: int = 0) -> None:
        self.ics = ics
        self.encoder = encoder
        self.encoder_dim = encoder_dim
        self.temperature = temperature
        self.random_state = random_state

    def fit(self, texts: Any, codes: Any = None, times: Any = None) -> NearestDefinition:
        from reprozoo.industry.assigner import node_texts

        texts = check_texts(texts)
        kw = {"dim": self.encoder_dim, "random_state": self.random_state} if self.encoder == "tfidf" else {}
        nodes = node_texts(self.ics)
        self.encoder_ = make_encoder(self.encoder, **kw).fit(texts + nodes)
        self.node_emb_ = self.encoder_.transform(nodes)
        return self

    def predict_proba(self, texts: Any, time: Any = None, level: int | None = None) -> np.ndarray:
        check_is_fitted(self)
        F = self.encoder_.transform(check_texts(texts))
        nodes = self.ics.leaves if level is None else self.ics.codes_at(check_int(level, "level", low=1,
                                                                                   high=self.ics.n_levels))
        idx = [self.ics.codes.index(c) for c in nodes]
        s = F @ self.node_emb_[idx].T / self.temperature
        s = np.exp(s - s.max(1, keepdims=True))
        return s / s.sum(1, keepdims=True)

    def predict_topk(self, texts: Any, time: Any = None, k: int = 5, level: int | None = None) -> np.ndarray:
        p = self.predict_proba(texts, time, level)
        nodes = self.ics.leaves if level is None else self.ics.codes_at(level)
        return np.asarray(nodes, dtype=object)[np.argsort(-p, axis=1, kind="stable")[:, : min(k, p.shape[1])]]


class HierarchicalLR(_LeafModel):
    """Top-down hierarchical classifier without expert knowledge: a TF-IDF logistic regression per parent node.

    p(leaf) = product over its path of p(child | parent); a parent with one child seen in training gives it
    probability 1; children never seen get 0.
    """

    def __init__(self, ics: ICS, C: float = 10.0, max_iter: int = 500) -> None:
        self.ics = ics
        self.C = C
        self.max_iter = max_iter

    def fit(self, texts: Any, codes: Any, times: Any = None) -> HierarchicalLR:
        texts, codes = self._check_fit(texts, codes)
        self.vectorizer_ = _tfidf()
        X = self.vectorizer_.fit_transform(texts)
        paths = [self.ics.path(c) for c in codes]
        self.local_: dict[str | None, Any] = {}
        for parent, kids in self.ics.children.items():
            if not kids:
                continue
            depth = 0 if parent is None else self.ics.level[parent]
            rows = [i for i, p in enumerate(paths) if len(p) > depth and (depth == 0 or p[depth - 1] == parent)]
            y = [paths[i][depth] for i in rows]
            seen = sorted(set(y))
            if len(seen) == 1:
                self.local_[parent] = seen[0]
            elif seen:
                self.local_[parent] = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(X[rows], y)
        return self

    def _leaf_proba(self, texts: list[str]) -> np.ndarray:
        X = self.vectorizer_.transform(texts)
        n = X.shape[0]
        prob = {None: np.ones(n)}
        for c in self.ics.codes:  # parents first
            prob.setdefault(c, np.zeros(n))
        for parent in (None, *self.ics.codes):  # top-down: a parent's probability is final before its children
            if parent not in self.local_:
                continue
            model, base = self.local_[parent], prob[parent]
            if isinstance(model, str):
                prob[model] = prob[model] + base
                continue
            p = model.predict_proba(X)
            for j, child in enumerate(model.classes_):
                prob[child] = prob[child] + base * p[:, j]
        return np.stack([prob[c] for c in self.ics.leaves], axis=1)
