"""Entity-alignment data: DBP15K in the GCN-Align id format, OpenEA-style folders, attribute and image files.

DBP15K (Sun et al., ISWC 2017) pairs a Chinese, Japanese or French DBpedia with the English one; each pair has
15,000 gold links. Files (one folder per pair, ``data/dbp15k/{zh_en,ja_en,fr_en}/``, see its PROVENANCE.md):
``ent_ids_1/2`` (``id<TAB>URI``), ``triples_1/2`` (``head<TAB>relation<TAB>tail`` ids), ``ref_ent_ids`` (or
``ill_ent_ids``; ``id1<TAB>id2``) and ``translated_ent_name.json`` (``[[id, [token, ...]], ...]``).

The id leak. In the shipped files source entity ``i`` is aligned with ``i + 10500`` for most gold pairs, so a
model that sees raw ids can "align" without learning. Every reader here therefore remaps ids by a seeded random
permutation of ``0 .. N-1`` (``remap_seed``) before returning anything; ``remap_seed=None`` keeps the file order
(compacted to ``0 .. N-1``) and exists only to show the leak in tests.

Optional modalities a user may supply: attribute files (``training_attrs_1/2``: ``URI<TAB>attr<TAB>attr...``,
the reference code's format) and an image-feature pickle (``{entity id: vector}`` in the file ids). An entity
without an image is marked absent (``image_mask``); ``missing_images="reference"`` instead draws its vector
from N(mean, std) of the known vectors, as the MEAformer reference code does.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reprozoo.datasets._paths import find_data_file, verify_checksum

__all__ = [
    "DBP15K_PAIRS",
    "KGPair",
    "AlignmentSplit",
    "load_dbp15k",
    "read_openea",
    "split_links",
]

#: ``{pair name: folder}`` of the shipped DBP15K pairs
DBP15K_PAIRS = {"ZH-EN": "zh_en", "JA-EN": "ja_en", "FR-EN": "fr_en"}
SOURCE = ("github.com/MaoXinn/SEU (KGs/dbp_<pair>, translated_ent_name/dbp_<pair>.json) or "
          "github.com/1049451037/GCN-Align (data/<pair>); see data/dbp15k/PROVENANCE.md")


@dataclass
class KGPair:
    """Two knowledge graphs over one joint id space ``0 .. n_entities-1`` and their gold alignment.

    Attributes
    ----------
    name : str
        ``"ZH-EN"``, ... or the folder name.
    n_entities : int
        Entities of both graphs together.
    left, right : ndarray, int64
        Ids of the first (source-language) and second graph's entities.
    triples : ndarray, int64, shape (T, 3)
        ``(head, relation, tail)`` of both graphs (relation ids of the two graphs are disjoint).
    links : ndarray, int64, shape (P, 2)
        Gold pairs ``(left id, right id)``.
    names : list of list of str
        Translated name tokens per entity id (``[]`` when the entity has none).
    uris : list of str
        URI per entity id.
    attrs : list of list of str, or None
        Attribute names per entity id, when attribute files were given.
    images : ndarray, float32, shape (N, d), or None
        Image features per entity id (zeros where ``image_mask`` is False), when a pickle was given.
    image_mask : ndarray, bool, shape (N,), or None
        Which entities have an image.
    folds : dict or None
        ``{"train", "valid", "test"}`` link arrays read from an OpenEA fold folder.
    """

    name: str
    n_entities: int
    left: np.ndarray
    right: np.ndarray
    triples: np.ndarray
    links: np.ndarray
    names: list[list[str]]
    uris: list[str]
    attrs: list[list[str]] | None = None
    images: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    folds: dict[str, np.ndarray] | None = None

    @property
    def n_relations(self) -> int:
        return int(self.triples[:, 1].max()) + 1 if len(self.triples) else 0

    def subset(self, n_links: int, *, seed: int = 0, hops: int = 0) -> KGPair:
        """A smaller pair: ``n_links`` random gold links, their entities and their ``hops``-hop neighbours.

        Ids are compacted to ``0 .. n-1`` (keeping the random order, so no leak comes back), triples are those
        among the kept entities, and links are all gold links with both ends kept. Used for small benchmarks.
        """
        if not 1 <= int(n_links) <= len(self.links):
            raise ValueError(f"n_links={n_links} should be in [1, {len(self.links)}]")
        rng = np.random.default_rng(seed)
        chosen = self.links[rng.permutation(len(self.links))[: int(n_links)]]
        keep = np.zeros(self.n_entities, dtype=bool)
        keep[chosen.ravel()] = True
        for _ in range(int(hops)):
            h, t = self.triples[:, 0], self.triples[:, 2]
            touch = keep[h] | keep[t]
            keep[h[touch]] = True
            keep[t[touch]] = True
        new = np.full(self.n_entities, -1, dtype=np.int64)
        old = np.flatnonzero(keep)
        new[old] = np.arange(len(old))
        tri = self.triples[keep[self.triples[:, 0]] & keep[self.triples[:, 2]]].copy()
        tri[:, 0], tri[:, 2] = new[tri[:, 0]], new[tri[:, 2]]
        _, tri[:, 1] = np.unique(tri[:, 1], return_inverse=True)
        links = self.links[keep[self.links[:, 0]] & keep[self.links[:, 1]]]
        return KGPair(
            name=self.name, n_entities=len(old), left=np.sort(new[self.left[keep[self.left]]]),
            right=np.sort(new[self.right[keep[self.right]]]), triples=tri, links=new[links],
            names=[self.names[i] for i in old], uris=[self.uris[i] for i in old],
            attrs=None if self.attrs is None else [self.attrs[i] for i in old],
            images=None if self.images is None else self.images[old],
            image_mask=None if self.image_mask is None else self.image_mask[old], folds=None)

    def __repr__(self) -> str:
        return (f"KGPair({self.name!r}, entities={self.n_entities} ({len(self.left)} + {len(self.right)}), "
                f"triples={len(self.triples)}, links={len(self.links)})")


class AlignmentSplit:
    """Train / validation / test links; the test links are sealed.

    Reading :attr:`test` increments :attr:`test_reads`, so a test can assert that training and model selection
    never looked at them (only the final evaluation does).
    """

    def __init__(self, train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> None:
        self.train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
        self.valid = np.asarray(valid, dtype=np.int64).reshape(-1, 2)
        self._test = np.asarray(test, dtype=np.int64).reshape(-1, 2)
        self.test_reads = 0

    @property
    def test(self) -> np.ndarray:
        self.test_reads += 1
        return self._test

    @property
    def n_test(self) -> int:
        """Number of test links (does not count as a read)."""
        return len(self._test)

    def __repr__(self) -> str:
        return f"AlignmentSplit(train={len(self.train)}, valid={len(self.valid)}, test={len(self._test)})"


def split_links(links: np.ndarray, *, train_ratio: float = 0.3, valid_ratio: float = 0.1, seed: int = 42,
                n_train: int | None = None) -> AlignmentSplit:
    """Seeded shuffle of the gold links, then ``train_ratio`` for training, the rest for testing.

    The validation links are carved from the training part (``valid_ratio`` of it), OpenEA style, so model
    selection never reads test links. ``n_train`` (optional) fixes the size of the training part instead of
    ``train_ratio`` (e.g. 4,500 of 15,000).

    >>> s = split_links(np.stack([np.arange(100), np.arange(100, 200)], 1), seed=0)
    >>> len(s.train), len(s.valid), s.n_test
    (27, 3, 70)
    """
    links = np.asarray(links, dtype=np.int64)
    if links.ndim != 2 or links.shape[1] != 2 or len(links) < 3:
        raise ValueError(f"links should have shape (P >= 3, 2), got {links.shape}")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio={train_ratio!r} should be in (0, 1)")
    if not 0.0 <= valid_ratio < 1.0:
        raise ValueError(f"valid_ratio={valid_ratio!r} should be in [0, 1)")
    order = np.random.default_rng(seed).permutation(len(links))
    shuffled = links[order]
    n_fit = int(n_train) if n_train is not None else int(round(train_ratio * len(links)))
    if not 1 <= n_fit < len(links):
        raise ValueError(f"n_train={n_fit} should be in [1, {len(links) - 1}] for {len(links)} links")
    n_valid = int(round(valid_ratio * n_fit))
    return AlignmentSplit(shuffled[n_valid:n_fit], shuffled[:n_valid], shuffled[n_fit:])


# -- readers -------------------------------------------------------------------------------------------------------
def _rows(path: Path, n_cols: int, *, min_cols: int | None = None) -> list[list[str]]:
    """Tab-separated rows of ``path``; a row with the wrong column count raises naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line:
                continue
            parts = line.split("\t")
            lo = n_cols if min_cols is None else min_cols
            if len(parts) < lo or (min_cols is None and len(parts) != n_cols):
                raise ValueError(f"{path}, line {lineno}: expected {n_cols} tab-separated fields, got "
                                 f"{len(parts)}: {line[:80]!r}")
            out.append(parts)
    return out


def _int_rows(path: Path, n_cols: int) -> np.ndarray:
    rows = _rows(path, n_cols)
    try:
        return np.asarray(rows, dtype=np.int64).reshape(-1, n_cols)
    except ValueError:
        for lineno, r in enumerate(rows, 1):
            if not all(p.strip().lstrip("-").isdigit() for p in r):
                raise ValueError(f"{path}, line {lineno}: expected integer ids, got {r}") from None
        raise


def _check_links(links: np.ndarray, left: set, right: set, path: Path) -> None:
    for lineno, (a, b) in enumerate(links, 1):
        if a not in left or b not in right:
            side = "first" if a not in left else "second"
            raise ValueError(f"{path}, line {lineno}: link ({a}, {b}) names an entity not in the {side} graph's "
                             "entity file (mismatched pair files?)")
    for col, what in ((0, "left"), (1, "right")):
        _, first, counts = np.unique(links[:, col], return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = int(links[first[counts > 1][0], col])
            lines = np.flatnonzero(links[:, col] == dup)[:2] + 1
            raise ValueError(f"{path}, lines {lines[0]} and {lines[1]}: {what} entity {dup} is linked twice "
                             "(duplicate links)")


@dataclass
class _Raw:
    ids1: np.ndarray
    ids2: np.ndarray
    uris: dict[int, str]
    triples: np.ndarray
    links: np.ndarray
    names: dict[int, list[str]] = field(default_factory=dict)
    attrs: dict[int, list[str]] | None = None
    images: dict[int, np.ndarray] | None = None
    folds: dict[str, np.ndarray] | None = None


def _remap(raw: _Raw, name: str, remap_seed: int | None, missing_images: str) -> KGPair:
    """Compact the file ids to ``0..N-1`` and permute them with ``remap_seed`` (the id-leak guard)."""
    old = np.concatenate([raw.ids1, raw.ids2])
    n = len(old)
    order = np.random.default_rng(remap_seed).permutation(n) if remap_seed is not None else np.arange(n)
    lookup = {int(o): int(order[i]) for i, o in enumerate(old)}
    m = np.vectorize(lookup.__getitem__, otypes=[np.int64])
    triples = raw.triples.copy()
    if len(triples):
        triples[:, 0] = m(triples[:, 0])
        triples[:, 2] = m(triples[:, 2])
    links = m(raw.links) if len(raw.links) else raw.links.reshape(0, 2)
    names: list[list[str]] = [[] for _ in range(n)]
    uris = [""] * n
    for o, new in lookup.items():
        names[new] = raw.names.get(o, [])
        uris[new] = raw.uris.get(o, "")
    attrs = None
    if raw.attrs is not None:
        attrs = [[] for _ in range(n)]
        for o, a in raw.attrs.items():
            attrs[lookup[o]] = a
    images = mask = None
    if raw.images is not None:
        known = np.stack(list(raw.images.values())).astype(np.float32)
        images = np.zeros((n, known.shape[1]), dtype=np.float32)
        mask = np.zeros(n, dtype=bool)
        for o, v in raw.images.items():
            if o in lookup:
                images[lookup[o]] = v
                mask[lookup[o]] = True
        if missing_images == "reference":  # the reference code: N(mean, std) of the known vectors
            rng = np.random.default_rng(remap_seed)
            fill = rng.normal(known.mean(0), known.std(0), size=((~mask).sum(), known.shape[1]))
            images[~mask] = fill.astype(np.float32)
            mask[:] = True
    folds = None if raw.folds is None else {k: m(v) for k, v in raw.folds.items()}
    return KGPair(name=name, n_entities=n, left=np.sort(order[: len(raw.ids1)]),
                  right=np.sort(order[len(raw.ids1):]), triples=triples, links=np.asarray(links, np.int64),
                  names=names, uris=uris, attrs=attrs, images=images, image_mask=mask, folds=folds)


def _read_ids(path: Path) -> tuple[np.ndarray, dict[int, str]]:
    rows = _rows(path, 2)
    if not rows:
        raise ValueError(f"{path} is empty: expected 'id<TAB>URI' lines")
    ids = []
    uris = {}
    for lineno, (i, uri) in enumerate(rows, 1):
        if not i.strip().isdigit():
            raise ValueError(f"{path}, line {lineno}: expected an integer id, got {i!r}")
        ids.append(int(i))
        uris[int(i)] = uri
    arr = np.asarray(ids, dtype=np.int64)
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{path}: an entity id is listed twice")
    return arr, uris


def _read_triples(path: Path, known: set) -> np.ndarray:
    t = _int_rows(path, 3)
    if len(t) == 0:
        raise ValueError(f"{path} holds no triples: expected 'head<TAB>relation<TAB>tail' lines")
    for col in (0, 2):
        bad = ~np.isin(t[:, col], np.fromiter(known, np.int64))
        if bad.any():
            lineno = int(np.flatnonzero(bad)[0]) + 1
            raise ValueError(f"{path}, line {lineno}: entity id {t[lineno - 1, col]} is out of range (not in the "
                             "entity files)")
    return t


def _read_attrs(paths: tuple[str | Path, str | Path], uri2id: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in paths:
        p = Path(p)
        for parts in _rows(p, 2, min_cols=1):
            if parts[0] in uri2id:
                out[uri2id[parts[0]]] = parts[1:]
    return out


def _read_images(path: str | Path, known: set, dim: int | None) -> dict[int, np.ndarray]:
    path = Path(path)
    with open(path, "rb") as f:
        d = pickle.load(f)  # noqa: S301 (a file the user supplies, as the reference code reads it)
    if not isinstance(d, dict) or not d:
        raise ValueError(f"{path} should hold a non-empty dict {{entity id: vector}}, got {type(d).__name__}")
    out = {}
    want = dim
    for k, v in d.items():
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if want is None:
            want = v.shape[0]
        if v.shape[0] != want:
            raise ValueError(f"{path}: the vector of entity {k} has dimension {v.shape[0]}, expected {want}")
        if int(k) not in known:
            raise ValueError(f"{path}: entity id {k} is out of range (not in the entity files)")
        out[int(k)] = v
    return out


def _pair_folder(pair: str) -> str:
    key = pair.upper().replace("_", "-")
    if key not in DBP15K_PAIRS:
        raise ValueError(f"pair={pair!r} is not a DBP15K language pair; valid pairs: {', '.join(DBP15K_PAIRS)}")
    return DBP15K_PAIRS[key]


def load_dbp15k(pair: str = "ZH-EN", *, root: str | Path | None = None, remap_seed: int | None = 0,
                attrs: tuple[str | Path, str | Path] | None = None, images: str | Path | None = None,
                image_dim: int | None = None, missing_images: str = "absent") -> KGPair:
    """Read one DBP15K pair (GCN-Align id format) with ids remapped by a seeded permutation.

    Parameters
    ----------
    pair : {"ZH-EN", "JA-EN", "FR-EN"}
        Language pair (``"zh_en"`` also accepted).
    root : path, optional
        A folder holding the pair's files directly; default: ``dbp15k/<pair>/`` under the data roots.
    remap_seed : int or None, default 0
        Seed of the id permutation (``None`` keeps the leaky file order; only for tests).
    attrs : (path, path), optional
        ``training_attrs_1`` and ``training_attrs_2`` (``URI<TAB>attr...``) when the user has them.
    images : path, optional
        A pickle ``{entity id: vector}`` (file ids); ``image_dim`` checks the vector size.
    missing_images : {"absent", "reference"}
        Entities without an image: marked absent in ``image_mask`` (default), or filled from N(mean, std) of
        the known vectors as the reference code does.

    Examples
    --------
    >>> kg = load_dbp15k("ZH-EN")
    >>> kg.n_entities, len(kg.links), len(kg.triples)
    (38960, 15000, 165556)
    """
    if missing_images not in ("absent", "reference"):
        raise ValueError(f"missing_images={missing_images!r} should be 'absent' or 'reference'")
    if root is not None:
        folder = Path(root).expanduser()
        name = folder.name.upper().replace("_", "-")
        if not folder.is_dir():
            raise ValueError(f"root={str(root)!r} is not a folder")
        link_name = "ref_ent_ids" if (folder / "ref_ent_ids").is_file() else "ill_ent_ids"

        def f(fn: str) -> Path:
            p = folder / fn
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found (expected the GCN-Align layout: ent_ids_1/2, triples_1/2, "
                                        "ref_ent_ids or ill_ent_ids, translated_ent_name.json)")
            verify_checksum(p)
            return p
    else:
        sub = _pair_folder(pair)
        name = pair.upper().replace("_", "-")
        link_name = "ref_ent_ids"

        def f(fn: str) -> Path:
            cands = [f"dbp15k/{sub}/{fn}"]
            if fn == "ref_ent_ids":
                cands.append(f"dbp15k/{sub}/ill_ent_ids")
            return find_data_file(cands, source=SOURCE)

    ids1, uris1 = _read_ids(f("ent_ids_1"))
    ids2, uris2 = _read_ids(f("ent_ids_2"))
    overlap = np.intersect1d(ids1, ids2)
    if len(overlap):
        raise ValueError(f"{f('ent_ids_2')}: id {overlap[0]} is also in ent_ids_1 (the ids should be global)")
    known = set(ids1.tolist()) | set(ids2.tolist())
    t1 = _read_triples(f("triples_1"), known)
    t2 = _read_triples(f("triples_2"), known)
    links_path = f(link_name)
    links = _int_rows(links_path, 2)
    if len(links) == 0:
        raise ValueError(f"{links_path} holds no links")
    _check_links(links, set(ids1.tolist()), set(ids2.tolist()), links_path)
    uris = {**uris1, **uris2}
    names: dict[int, list[str]] = {}
    name_path = f("translated_ent_name.json")
    try:
        for item in json.loads(name_path.read_text(encoding="utf-8")):
            names[int(item[0])] = [str(t) for t in item[1]]
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"{name_path}: expected a JSON list of [id, [token, ...]]: {exc}") from None
    # relation ids: keep those of the files (GCN-Align ids are already disjoint across the two graphs), compacted
    triples = np.concatenate([t1, t2])
    _, triples[:, 1] = np.unique(triples[:, 1], return_inverse=True)
    raw = _Raw(ids1, ids2, uris, triples, links, names)
    if attrs is not None:
        if len(attrs) != 2:
            raise ValueError(f"attrs should be two paths (training_attrs_1, training_attrs_2), got {attrs!r}")
        raw.attrs = _read_attrs(tuple(attrs), {u: i for i, u in uris.items()})
    if images is not None:
        raw.images = _read_images(images, known, image_dim)
    return _remap(raw, name, remap_seed, missing_images)


def read_openea(folder: str | Path, *, fold: int = 1, remap_seed: int | None = 0,
                attrs: bool = False) -> KGPair:
    """Read an OpenEA-style folder: ``rel_triples_1/2`` (URIs), ``ent_links``, ``721_5fold/<fold>/{train,valid,
    test}_links``; ``attr_triples_1/2`` (``URI<TAB>attribute<TAB>value``) when ``attrs``.

    Entities are the URIs seen in the triple and link files; ids are assigned in order of appearance and then
    permuted with ``remap_seed``. The fold's links are returned in :attr:`KGPair.folds`.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a folder")
    uri2id: list[dict[str, int]] = [{}, {}]
    nxt = 0
    rel2id: dict[str, int] = {}
    trip = []

    def ent(side: int, uri: str) -> int:
        nonlocal nxt
        if uri not in uri2id[side]:
            uri2id[side][uri] = nxt
            nxt += 1
        return uri2id[side][uri]

    for side in (0, 1):
        p = folder / f"rel_triples_{side + 1}"
        rows = _rows(p, 3)
        if not rows:
            raise ValueError(f"{p} holds no triples")
        for h, r, t in rows:
            trip.append((ent(side, h), rel2id.setdefault(f"{side}:{r}", len(rel2id)), ent(side, t)))

    def links_of(p: Path) -> np.ndarray:
        rows = _rows(p, 2)
        out = []
        for lineno, (a, b) in enumerate(rows, 1):
            if a not in uri2id[0] or b not in uri2id[1]:
                raise ValueError(f"{p}, line {lineno}: link ({a}, {b}) names an entity absent from the "
                                 "rel_triples files (mismatched pair files?)")
            out.append((uri2id[0][a], uri2id[1][b]))
        arr = np.asarray(out, dtype=np.int64).reshape(-1, 2)
        _check_links(arr, set(uri2id[0].values()), set(uri2id[1].values()), p)
        return arr

    links = links_of(folder / "ent_links")
    fold_dir = folder / "721_5fold" / str(fold)
    folds = None
    if fold_dir.is_dir():
        folds = {k: links_of(fold_dir / f"{k}_links") for k in ("train", "valid", "test")}
    ids1 = np.asarray(sorted(uri2id[0].values()), dtype=np.int64)
    ids2 = np.asarray(sorted(uri2id[1].values()), dtype=np.int64)
    uris = {i: u for side in uri2id for u, i in side.items()}
    raw = _Raw(ids1, ids2, uris, np.asarray(trip, dtype=np.int64), links, {}, folds=folds)
    if attrs:
        raw.attrs = {}
        for side in (0, 1):
            for parts in _rows(folder / f"attr_triples_{side + 1}", 3, min_cols=2):
                if parts[0] in uri2id[side]:
                    raw.attrs.setdefault(uri2id[side][parts[0]], []).append(parts[1])
    return _remap(raw, folder.name, remap_seed, "absent")
