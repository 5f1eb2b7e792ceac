"""Modality inputs of MEAformer, built from a :class:`~reprozoo.datasets.KGPair` (paper Sec. 3.2).

Modalities, in the one fixed order used everywhere (:data:`MODALITIES`; packing, weights and reports):

- ``structure``: the joint graph (both KGs), symmetric, with self-loops; the model learns entity embeddings
  and runs a GAT over it (no input features here, only the graph in CSR form).
- ``relation``: counts of the 1,000 most frequent relations, as head or tail (reference ``load_relation``).
- ``attribute``: multi-hot of the 1,000 most frequent attribute names (reference ``load_attr``), when given.
- ``image``: L2-normalised image features, when given.
- ``name``: a text vector of the translated name tokens (TF-IDF + LSA to 300 dims, the stand-in for the
  paper's averaged GloVe; or MiniLM), from :func:`reprozoo.text.make_encoder`.
- ``char``: bag of character bigrams of the lower-cased name tokens, L2-normalised (reference
  ``load_word_char_features``).

A modality an entity lacks (no name token, no image, no relation in the top 1,000, ...) is marked absent in
``present``; the model masks it out (no random stand-in vectors, unlike the reference code). Sparse inputs stay
sparse (CSR), so nothing here is O(N^2) or O(N * vocabulary) dense.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from reprozoo.datasets.dbp15k import KGPair

__all__ = [
    "MODALITIES",
    "ModalityData",
    "build_modalities",
    "joint_edges",
    "relation_bag",
    "attribute_bag",
    "char_bigrams",
    "name_vectors",
    "corrupt_modality",
]

#: the one order of modality tokens, weights and per-modality losses
MODALITIES = ("structure", "relation", "attribute", "image", "name", "char")


@dataclass
class ModalityData:
    """Everything the model reads about the entities (host arrays; the trainer moves them once).

    Attributes
    ----------
    n_entities : int
    edges : ndarray, int64, shape (2, E)
        Joint undirected graph with self-loops, sorted by target then source (CSR order).
    features : dict of str to scipy.sparse.csr_matrix or ndarray (float32, N x d)
        Input vectors of the feature modalities (not ``structure``).
    present : dict of str to ndarray (bool, N)
        Which entities have each modality.
    modalities : tuple of str
        The modalities in use, in :data:`MODALITIES` order.
    """

    n_entities: int
    edges: np.ndarray
    features: dict[str, sp.csr_matrix | np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.present)

    def select(self, modalities) -> ModalityData:
        """The same data restricted to ``modalities`` (those it does not hold are ignored)."""
        keep = set(modalities)
        return ModalityData(self.n_entities, self.edges,
                            {m: x for m, x in self.features.items() if m in keep},
                            {m: p for m, p in self.present.items() if m in keep})

    def dims(self) -> dict[str, int]:
        """Input dimension of each feature modality."""
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def present_matrix(self) -> np.ndarray:
        """(N, M) bool, columns in :attr:`modalities` order."""
        return np.stack([self.present[m] for m in self.modalities], axis=1)


def joint_edges(triples: np.ndarray, n_entities: int) -> np.ndarray:
    """Undirected edges of the triples plus one self-loop per entity, duplicates removed, in CSR order.

    As the reference ``get_adjr``: a triple (h, r, t) with h != t links h and t both ways; every entity gets a
    self-loop. O(T log T).

    >>> joint_edges(np.array([[0, 5, 1], [1, 2, 1]]), 3).tolist()
    [[0, 1, 0, 1, 2], [0, 0, 1, 1, 2]]
    """
    h, t = triples[:, 0], triples[:, 2]
    keep = h != t
    src = np.concatenate([h[keep], t[keep], np.arange(n_entities)])
    dst = np.concatenate([t[keep], h[keep], np.arange(n_entities)])
    key = np.unique(dst.astype(np.int64) * n_entities + src)
    return np.stack([key % n_entities, key // n_entities]).astype(np.int64)  # rows: source, target


def relation_bag(triples: np.ndarray, n_entities: int, top: int = 1000) -> sp.csr_matrix:
    """(N, min(top, R)) counts of the ``top`` most frequent relations per entity, as head or as tail."""
    counts = Counter(triples[:, 1].tolist())
    ranked = [r for r, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    col = np.full(int(triples[:, 1].max()) + 1, -1, dtype=np.int64)
    col[ranked] = np.arange(len(ranked))
    c = col[triples[:, 1]]
    keep = c >= 0
    rows = np.concatenate([triples[keep, 0], triples[keep, 2]])
    cols = np.concatenate([c[keep], c[keep]])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_entities, len(ranked)))
    m.sum_duplicates()
    return m


def attribute_bag(attrs: list[list[str]], top: int = 1000) -> sp.csr_matrix:
    """(N, min(top, A)) multi-hot of the ``top`` most frequent attribute names."""
    counts = Counter(a for row in attrs for a in row)
    ranked = {a: i for i, (a, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top])}
    rows, cols = [], []
    for i, row in enumerate(attrs):
        for a in set(row):
            if a in ranked:
                rows.append(i)
                cols.append(ranked[a])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(attrs), len(ranked)))


def char_bigrams(names: list[list[str]]) -> sp.csr_matrix:
    """(N, V) L2-normalised counts of the character bigrams of each entity's lower-cased name tokens.

    The vocabulary is every bigram seen (reference ``load_char_bigram``); an entity without a bigram gets an
    all-zero row (absent), not the reference's random vector.

    >>> char_bigrams([["ab", "b"], []]).toarray().tolist()
    [[1.0], [0.0]]
    """
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, toks in enumerate(names):
        for w in toks:
            w = w.lower()
            for k in range(len(w) - 1):
                rows.append(i)
                cols.append(vocab.setdefault(w[k:k + 2], len(vocab)))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(names), max(len(vocab), 1)))
    m.sum_duplicates()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m)


def name_vectors(names: list[list[str]], encoder: str = "tfidf", dim: int = 300) -> np.ndarray:
    """(N, d) unit-norm text vectors of the joined name tokens (zero rows for entities with no usable word).

    ``encoder="tfidf"``: TF-IDF reduced to ``dim`` dimensions by LSA (our stand-in for averaged GloVe);
    ``"minilm"``: all-MiniLM-L6-v2 (384 dims). Both from :func:`reprozoo.text.make_encoder`.
    """
    from reprozoo.text import make_encoder

    texts = [" ".join(t) if t else "" for t in names]
    kwargs = {"dim": dim} if encoder == "tfidf" else {}
    return make_encoder(encoder, **kwargs).fit_transform(texts).astype(np.float32)


def _rows_present(x: sp.csr_matrix | np.ndarray) -> np.ndarray:
    if sp.issparse(x):
        return np.diff(x.indptr) > 0
    return np.abs(x).sum(1) > 0


def build_modalities(kg: KGPair, *, structure: bool = True, relation: bool = True, attribute: bool = True,
                     image: bool = True, name: bool = False, char: bool = False, text_encoder: str = "tfidf",
                     top_relations: int = 1000, top_attributes: int = 1000) -> ModalityData:
    """The modality inputs of ``kg``: the switches select modalities; one whose data is absent is skipped.

    ``name`` and ``char`` are the surface modalities (off by default: on DBP15K translated names make alignment
    nearly trivial, so the paper's main table is without them).
    """
    n = kg.n_entities
    data = ModalityData(n_entities=n, edges=joint_edges(kg.triples, n))
    if structure:
        data.present["structure"] = np.ones(n, dtype=bool)
    feats: dict[str, sp.csr_matrix | np.ndarray] = {}
    if relation and len(kg.triples):
        feats["relation"] = relation_bag(kg.triples, n, top_relations)
    if attribute and kg.attrs is not None:
        feats["attribute"] = attribute_bag(kg.attrs, top_attributes)
    if image and kg.images is not None:
        img = kg.images / np.maximum(np.linalg.norm(kg.images, axis=1, keepdims=True), 1e-12)
        feats["image"] = img.astype(np.float32)
    if name:
        feats["name"] = name_vectors(kg.names, text_encoder)
    if char:
        feats["char"] = char_bigrams(kg.names)
    for m in MODALITIES:
        if m in feats:
            data.features[m] = feats[m]
            pres = _rows_present(feats[m])
            if m == "image" and kg.image_mask is not None:
                pres &= kg.image_mask
            data.present[m] = pres
    if not data.modalities:
        raise ValueError("no modality is switched on with data: enable structure or a feature modality")
    return data


def corrupt_modality(data: ModalityData, modality: str, fraction: float, *, mode: str = "noise",
                     seed: int = 0) -> tuple[ModalityData, np.ndarray]:
    """A copy of ``data`` with ``modality`` corrupted for a random ``fraction`` of the entities that have it.

    ``mode="noise"``: their vectors are replaced by Gaussian noise with the same per-row norm as a typical row
    (dense rows, same sparsity budget does not matter for a linear encoder); ``mode="drop"``: the modality is
    marked absent for them. Returns the new data and the (N,) bool mask of corrupted entities.
    Synthetic robustness test of the paper's claim (Sec. 4.4): entity-level weights should move away from a
    modality where it is corrupted.
    """
    if modality not in data.features:
        raise ValueError(f"modality={modality!r} is not a feature modality in use; choose from "
                         f"{', '.join(data.features)}")
    if mode not in ("noise", "drop"):
        raise ValueError(f"mode={mode!r} should be 'noise' or 'drop'")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} should be in [0, 1]")
    rng = np.random.default_rng(seed)
    n = data.n_entities
    has = np.flatnonzero(data.present[modality])
    hit = np.zeros(n, dtype=bool)
    hit[rng.permutation(has)[: int(round(fraction * len(has)))]] = True
    feats = dict(data.features)
    present = dict(data.present)
    if mode == "drop":
        present[modality] = present[modality] & ~hit
    elif hit.any():
        x = feats[modality]
        rows = np.flatnonzero(hit)
        if sp.issparse(x):
            scale = float(np.sqrt(x.multiply(x).sum() / max(x.shape[0], 1)))
            noise = rng.normal(0.0, scale / np.sqrt(x.shape[1]), size=(len(rows), x.shape[1])).astype(np.float32)
            keep = sp.diags((~hit).astype(np.float32)) @ x
            x = sp.csr_matrix(keep + sp.csr_matrix((noise.ravel(), (np.repeat(rows, x.shape[1]),
                                                                   np.tile(np.arange(x.shape[1]), len(rows)))),
                                                   shape=x.shape))
        else:
            x = x.copy()
            scale = float(np.sqrt((x ** 2).sum() / max(x.shape[0], 1)))
            x[rows] = rng.normal(0.0, scale / np.sqrt(x.shape[1]), size=(len(rows), x.shape[1]))
        feats[modality] = x
    return ModalityData(n, data.edges, feats, present), hit
