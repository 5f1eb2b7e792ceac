"""Planetoid citation graphs (Cora, CiteSeer, PubMed) read from local raw files through PyG.

The raw ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` files (Yang et al., ICML 2016,
github.com/kimiyoung/planetoid) are looked up like every other data file (explicit folder,
``$REPROZOO_DATA``, the repository's ``data/planetoid/``, ``~/.cache/reprozoo/planetoid/``) and
checked against ``SHA256SUMS``. They are then linked into a private cache folder laid out as
:class:`torch_geometric.datasets.Planetoid` expects (``<root>/<Name>/raw/``), so PyG parses
them (public split, ``NormalizeFeatures``) and writes its ``processed/`` files there, never
into ``data/``. All eight raw files must be present, so PyG never tries to download: a
missing file raises :class:`~reprozoo.datasets.DataNotFoundError` naming it and its source.

``torch_geometric`` is imported only when a loader is called (it is the ``graph`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprozoo.core.io import cache_dir as _cache_root
from reprozoo.datasets._paths import DataNotFoundError, find_data_file

__all__ = ["PLANETOID_NAMES", "PLANETOID_SIZES", "PlanetoidCacheError", "PlanetoidGraph", "load_graph",
           "load_planetoid", "planetoid_raw_files"]

#: Canonical names (as PyG spells them) -> the lower-case stem of the raw files.
PLANETOID_NAMES = {"Cora": "cora", "CiteSeer": "citeseer", "PubMed": "pubmed"}
#: Known sizes ``(nodes, features, classes)`` of each graph as PyG builds it (Yang et al. 2016, Table 1;
#: CiteSeer's 3327 includes the 15 isolated test nodes PyG pads). A processed cache that loads with other
#: sizes is another data set's file (e.g. CiteSeer's ``data.pt`` copied over Cora's) and is rebuilt.
PLANETOID_SIZES = {"Cora": (2708, 1433, 7), "CiteSeer": (3327, 3703, 6), "PubMed": (19717, 500, 3)}
_RAW_KEYS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_SOURCE = (
    "https://github.com/kimiyoung/planetoid/tree/master/data (file {file}; the same blob is in "
    "TianjinYellow/UGTs-LoG under UGTs_GNN/models/data/<Name>/<Name>/raw/); put it in "
    "data/planetoid/ or in $REPROZOO_DATA/planetoid/ beside the other ind.{stem}.* files"
)


@dataclass(frozen=True)
class PlanetoidGraph:
    """One transductive citation graph with its public split.

    Attributes
    ----------
    name : str
        ``"Cora"``, ``"CiteSeer"`` or ``"PubMed"``.
    x : torch.Tensor, float32, shape (N, F)
        Bag-of-words features, rows L1-normalised (``NormalizeFeatures``; all-zero rows stay 0).
    edge_index : torch.Tensor, int64, shape (2, E)
        Undirected graph as directed pairs (both directions present), no self-loops.
    y : torch.Tensor, int64, shape (N,)
        Class of each node in ``[0, num_classes)``.
    train_mask, val_mask, test_mask : torch.Tensor, bool, shape (N,)
        Public Planetoid split (Cora: 140 / 500 / 1000 nodes).
    num_classes : int
    """

    name: str
    x: Any
    edge_index: Any
    y: Any
    train_mask: Any
    val_mask: Any
    test_mask: Any
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    def to(self, device) -> PlanetoidGraph:
        """The graph with every tensor on ``device`` (``self`` when they are there already), like ``Data.to``."""
        import dataclasses

        import torch

        device = torch.device(device)
        if self.x.device == device:
            return self
        names = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in names})

    def to_data(self):
        """The graph as a :class:`torch_geometric.data.Data` (same tensors, not copied)."""
        from torch_geometric.data import Data

        return Data(
            x=self.x, edge_index=self.edge_index, y=self.y, train_mask=self.train_mask,
            val_mask=self.val_mask, test_mask=self.test_mask,
        )


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name should be a str, got {type(name).__name__}")
    for canon in PLANETOID_NAMES:
        if name.lower() == canon.lower():
            return canon
    raise ValueError(f"name={name!r} is not a Planetoid data set; choose one of {list(PLANETOID_NAMES)}")


def planetoid_raw_files(name: str, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Locate (and checksum) the eight raw files of ``name``; ``{key: path}``.

    ``root`` (optional) is a folder holding the ``ind.<name>.*`` files directly; otherwise the
    standard data roots are searched under ``planetoid/``. Raises
    :class:`~reprozoo.datasets.DataNotFoundError` naming the first missing file and where to get it.
    """
    canon = _canonical(name)
    stem = PLANETOID_NAMES[canon]
    out: dict[str, Path] = {}
    for key in _RAW_KEYS:
        fname = f"ind.{stem}.{key}"
        source = _SOURCE.format(file=fname, stem=stem)
        if root is not None:
            p = Path(root).expanduser() / fname
            if not p.is_file():
                raise DataNotFoundError(
                    f"{canon} needs the raw file {fname!r}, which is not in root={str(root)!r}. "
                    f"Obtain it from: {source}"
                )
            from reprozoo.datasets._paths import verify_checksum

            verify_checksum(p)
            out[key] = p
        else:
            try:
                out[key] = find_data_file([f"planetoid/{fname}"], source=source)
            except DataNotFoundError as exc:
                raise DataNotFoundError(f"{canon} needs the raw file {fname!r}: {exc}") from None
    return out


def _default_cache() -> Path:
    return _cache_root("planetoid_pyg")


def _prepared_root(canon: str, files: dict[str, Path], cache_dir: Path) -> Path:
    """A PyG root ``<cache>/<digest>/`` holding ``<Name>/raw/`` (links) and ``<Name>/processed/``.

    The digest covers the raw files' paths, sizes and mtimes, so edited data gets a fresh folder.
    The folder is built (and processed by PyG) under a temporary name and renamed into place, so
    concurrent callers never see a half-written cache.
    """
    from torch_geometric.datasets import Planetoid

    h = hashlib.sha256(canon.encode())
    for key in _RAW_KEYS:
        st = files[key].stat()
        h.update(f"{files[key].resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    root = cache_dir / h.hexdigest()[:16]
    if (root / canon / "processed").is_dir():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        raw = tmp / canon / "raw"
        raw.mkdir(parents=True)
        for p in files.values():
            try:
                (raw / p.name).symlink_to(p.resolve())
            except OSError:  # file systems without symlinks
                shutil.copy2(p, raw / p.name)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            Planetoid(str(tmp), canon, split="public")  # parses raw/ and writes processed/ (quietly)
        try:
            os.replace(tmp, root)
        except OSError:  # another process won the race: use its folder
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


class PlanetoidCacheError(RuntimeError):
    """PyG's processed Planetoid cache could not be read, even after one rebuild from the raw files."""


def _open_processed(canon: str, pyg_root: Path, transform):
    from torch_geometric.datasets import Planetoid

    ds = Planetoid(str(pyg_root), canon, split="public", transform=transform)
    data = ds[0]
    _check_sizes(canon, data, int(ds.num_classes))
    return ds, data


def _check_sizes(canon: str, data, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``data`` has the known (nodes, features, classes) of ``canon``."""
    got = (int(data.x.shape[0]), int(data.x.shape[1]), int(num_classes))
    want = PLANETOID_SIZES[canon]
    if got != want:
        raise ValueError(
            f"it holds {got[0]} nodes x {got[1]} features, {got[2]} classes, but {canon} has "
            f"{want[0]} x {want[1]}, {want[2]} classes (another data set's file?)"
        )


def _load_cached(canon: str, files: dict[str, Path], cache: Path, transform):
    """``(dataset, data)`` from the processed cache; a cache that fails to load is rebuilt once.

    A truncated or otherwise corrupt ``processed/data.pt`` (e.g. "PytorchStreamReader failed
    reading zip archive"), or one that loads with sizes other than :data:`PLANETOID_SIZES` (another
    data set's file copied over it), is reported with a ``RuntimeWarning`` naming the file; its cache folder
    (``<cache>/<digest>/``: only links to the raw files and PyG's ``processed/``) is deleted and
    rebuilt from the raw files. If loading still fails, :class:`PlanetoidCacheError` names the
    file. ``PermissionError`` is passed through (the caller falls back to a temporary folder).
    """
    pyg_root = _prepared_root(canon, files, cache)
    processed = pyg_root / canon / "processed"
    try:
        return _open_processed(canon, pyg_root, transform)
    except PermissionError:
        raise
    except Exception as exc:  # torch.load / pickle errors of a corrupt file: RuntimeError, EOFError, ...
        warnings.warn(
            f"the processed Planetoid cache {processed / 'data.pt'} could not be loaded "
            f"({type(exc).__name__}: {exc}); deleting its cache folder {pyg_root} (links to the raw files and "
            "processed/) and rebuilding it from the raw files",
            RuntimeWarning,
            stacklevel=3,
        )
    shutil.rmtree(pyg_root, ignore_errors=True)  # processed/ and the raw links: rebuilt atomically below
    try:
        pyg_root = _prepared_root(canon, files, cache)
        return _open_processed(canon, pyg_root, transform)
    except PermissionError:
        raise
    except Exception as exc:
        raise PlanetoidCacheError(
            f"the processed Planetoid cache {processed / 'data.pt'} could not be loaded even after rebuilding it "
            f"from the raw files ({type(exc).__name__}: {exc}); delete {pyg_root} by hand, or pass "
            f"cache_dir= (or set $REPROZOO_CACHE) to another folder"
        ) from exc


def load_planetoid(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    normalize_features: bool = True,
) -> PlanetoidGraph:
    """Load a Planetoid citation graph with its public split, offline.

    Parameters
    ----------
    name : {"Cora", "CiteSeer", "PubMed"}
        Case-insensitive.
    root : path, optional
        Folder holding the raw ``ind.<name>.*`` files; default: the data roots' ``planetoid/``.
    cache_dir : path, optional
        Where PyG's ``<Name>/raw`` + ``<Name>/processed`` layout is built (default
        ``$REPROZOO_CACHE/planetoid_pyg`` or ``~/.cache/reprozoo/planetoid_pyg``); falls back
        to a temporary folder when it cannot be written.
    normalize_features : bool, default True
        Apply ``torch_geometric.transforms.NormalizeFeatures`` (row sums to one), as the paper does.

    Returns
    -------
    PlanetoidGraph

    Raises
    ------
    DataNotFoundError
        A raw file is missing (e.g. ``ind.pubmed.allx``, which the repository does not ship);
        the message names the file, where it was looked for and where to obtain it.
    ValueError, TypeError
        Unknown ``name``.
    PlanetoidCacheError
        (a ``RuntimeError``) PyG's processed cache file cannot be read even after it was deleted
        and rebuilt once from the raw files; the message names the file. A first load failure
        (e.g. a truncated ``processed/data.pt``) only issues a ``RuntimeWarning`` naming the file
        and rebuilds the cache.

    Notes
    -----
    Cora: 2708 nodes, 1433 features, 7 classes; CiteSeer: 3327 nodes (15 isolated test nodes
    are padded with zero features by PyG), 3703 features, 6 classes. First call parses the
    pickles (about 1 s), later calls read PyG's processed file.
    """
    canon = _canonical(name)
    files = planetoid_raw_files(canon, root)
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid

    transform = T.NormalizeFeatures() if normalize_features else None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache()
    try:
        ds, data = _load_cached(canon, files, cache, transform)
    except PermissionError:
        with tempfile.TemporaryDirectory(prefix="reprozoo-planetoid-") as tmp:
            pyg_root = _prepared_root(canon, files, Path(tmp))
            ds = Planetoid(str(pyg_root), canon, split="public", transform=transform)
            data = ds[0]
    return PlanetoidGraph(
        name=canon,
        x=data.x.float().contiguous(),
        edge_index=data.edge_index.long().contiguous(),
        y=data.y.long().contiguous(),
        train_mask=data.train_mask.bool(),
        val_mask=data.val_mask.bool(),
        test_mask=data.test_mask.bool(),
        num_classes=int(ds.num_classes),
    )


GRAPH_KEYS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")


def load_graph(path: str | os.PathLike) -> PlanetoidGraph:
    """A user's node-classification graph from ``path``, in the container of the Planetoid graphs.

    The file is a NumPy ``.npz`` (``np.savez``) or a torch ``.pt`` dict (``torch.save({...})``, read with
    ``weights_only=True``) holding, as arrays or tensors: ``x`` (N, F) float features, ``edge_index``
    (2, E) int node pairs (source, target; list both directions of an undirected edge), ``y`` (N,) int
    classes 0..C-1, and ``train_mask``, ``val_mask``, ``test_mask`` (N,) bool, each selecting at least one
    node. Features are cast to float32 and labels to int64; the name is the file's stem.

    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> m = np.array([1, 1, 0, 0], bool)
    >>> np.savez(f, x=np.eye(4), edge_index=[[0, 1, 2, 3], [1, 0, 3, 2]], y=[0, 1, 0, 1], train_mask=m,
    ...          val_mask=~m, test_mask=~m)
    >>> g = load_graph(f)
    >>> g.name, g.num_nodes, g.num_features, g.num_classes, tuple(g.edge_index.shape)
    ('toy', 4, 4, 2, (2, 4))

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the array for a
    wrong suffix, a missing key, a bad shape or dtype, labels out of range, edges to missing nodes, NaN/inf
    features or an empty mask.
    """
    import numpy as np
    import torch

    p = Path(path).expanduser()
    if p.suffix.lower() not in (".npz", ".pt"):
        raise ValueError(f"graph file {str(p)!r} should be a .npz or .pt file holding {', '.join(GRAPH_KEYS)}")
    if not p.is_file():
        raise FileNotFoundError(f"no such graph file: {str(p)!r}")
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as f:
                raw = {k: f[k] for k in f.files}
        else:
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a graph file"
        why = ("it is not a NumPy .npz archive of plain arrays (pickled objects are never loaded)"
               if p.suffix.lower() == ".npz" else f"{type(exc).__name__}: {exc}")
        raise ValueError(f"graph file {str(p)!r} cannot be read: {why}") from None
    if not isinstance(raw, dict) or not set(GRAPH_KEYS) <= set(raw):
        have = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"graph file {str(p)!r} should hold {', '.join(GRAPH_KEYS)}; it holds {have}")
    a = {k: torch.as_tensor(np.asarray(raw[k]) if not isinstance(raw[k], torch.Tensor) else raw[k])
         for k in GRAPH_KEYS}

    def bad(key: str, want: str) -> ValueError:
        t = a[key]
        return ValueError(f"graph file {str(p)!r}: {key} should be {want}, got dtype {t.dtype} shape {tuple(t.shape)}")

    x = a["x"]
    if x.dim() != 2 or x.shape[0] < 2 or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise bad("x", "a (N, F) float array with N >= 2")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"graph file {str(p)!r}: x holds NaN or infinite values")
    n = x.shape[0]
    y = a["y"]
    if y.dim() != 1 or y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
        raise bad("y", f"an int array of shape ({n},)")
    y = y.long()
    if int(y.min()) < 0:
        raise ValueError(f"graph file {str(p)!r}: y should hold classes 0..C-1, got min {int(y.min())}")
    ei = a["edge_index"]
    if ei.dim() != 2 or ei.shape[0] != 2 or ei.is_floating_point() or ei.dtype == torch.bool:
        raise bad("edge_index", "an int array of shape (2, E)")
    ei = ei.long()
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ValueError(f"graph file {str(p)!r}: edge_index should hold node ids in [0, {n}), got "
                         f"[{int(ei.min())}, {int(ei.max())}]")
    masks = {}
    for k in ("train_mask", "val_mask", "test_mask"):
        m = a[k]
        if m.dtype != torch.bool or tuple(m.shape) != (n,):
            raise bad(k, f"a bool array of shape ({n},)")
        if not bool(m.any()):
            raise ValueError(f"graph file {str(p)!r}: {k} selects no node")
        masks[k] = m
    return PlanetoidGraph(name=p.stem, x=x.contiguous(), edge_index=ei.contiguous(), y=y,
                          num_classes=int(y.max()) + 1, **masks)
