"""Multi-view data sets stored as MATLAB files (v5 via SciPy, v7.3/HDF5 via h5py).

Conventions handled (those of the public multi-view clustering collections):
the views are a cell array ``X`` (1 × V or V × 1) of n × d_v matrices, dense or sparse,
possibly stored transposed (d_v × n: detected from the number of labels); labels are
a vector under one of ``y, Y, gt, gnd, truth, label, labels`` with any integer coding
(remapped to 0..c-1). In v7.3 files arrays come back transposed and cells are object
references; both are resolved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from reprozoo.datasets._paths import data_roots, find_data_file

__all__ = ["MultiViewDataset", "load_multiview", "list_multiview", "name_user_files", "cell_views", "VIEW_KEYS",
           "LABEL_KEYS"]

VIEW_KEYS = ("X", "x", "data", "views", "fea")
LABEL_KEYS = ("y", "Y", "gt", "gnd", "truth", "label", "labels", "Label", "Labels", "GT")
SOURCE = ("the multi-view data collections listed in data/multiview/PROVENANCE.md "
          "(e.g. github.com/weilyshmtu/Multi-view-DataSets)")

@dataclass(frozen=True)
class MultiViewDataset:
    """A multi-view data set.

    Attributes
    ----------
    name : str
        Data set name (the file stem without a ``data_`` prefix).
    views : list of ndarray, float64, shape (n_samples, d_v)
        One matrix per view, samples as rows.
    labels : ndarray, int64, shape (n_samples,)
        Ground-truth classes, 0-based and contiguous.
    path : Path
        The file it was read from.
    """

    name: str
    views: list[np.ndarray]
    labels: np.ndarray
    path: Path

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_views(self) -> int:
        return len(self.views)

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def view_dims(self) -> list[int]:
        return [v.shape[1] for v in self.views]

    def __repr__(self) -> str:
        return (f"MultiViewDataset(name={self.name!r}, n_samples={self.n_samples}, n_views={self.n_views}, "
                f"view_dims={self.view_dims}, n_clusters={self.n_clusters})")

def list_multiview() -> list[str]:
    """Names of the multi-view data sets found in the data roots (sorted)."""
    found = set()
    for root in data_roots():
        folder = root / "multiview"
        if folder.is_dir():
            found.update(_name_of(p) for p in folder.glob("*.mat"))
    return sorted(found, key=str.lower)

def _name_of(path: Path) -> str:
    stem = path.stem
    return stem[5:] if stem.startswith("data_") else stem

def name_user_files(paths: list[str | os.PathLike], reserved: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Distinct display names for distinct user ``.mat`` files (one per path, same order).

    Each file is named by its stem; files whose stems collide are named by the shortest suffix of
    their resolved paths (``a/m``, ``t/m``, ...) that tells them apart; a name equal to one in
    ``reserved`` (e.g. the shipped data sets' names) gets `` (file)`` appended, and any remaining
    tie a counter. The paths should already be distinct files (dedupe them by resolved path first).
    Cost O(P² · depth) for P paths.

    Raises ``ValueError`` if two paths resolve to the same file.
    """
    resolved = [Path(p).expanduser().resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"paths should be distinct files, got {[str(p) for p in paths]} (resolved: "
                         f"{[str(r) for r in resolved]})")
    bare = [r.with_suffix("") for r in resolved]
    names = [b.name for b in bare]
    for stem in {n for n in names if names.count(n) > 1}:
        group = [i for i, n in enumerate(names) if n == stem]
        for k in range(2, max(len(bare[i].parts) for i in group) + 1):
            cand = {i: str(Path(*bare[i].parts[-k:])) for i in group}
            if len(set(cand.values())) == len(group):
                break
        for i in group:
            names[i] = cand[i]
    taken = set(reserved)
    out: list[str] = []
    for n in names:
        name = f"{n} (file)" if n in taken else n
        base, j = name, 2
        while name in taken:
            name, j = f"{base} ({j})", j + 1
        taken.add(name)
        out.append(name)
    return out


def load_multiview(name_or_path: str | os.PathLike) -> MultiViewDataset:
    """Load a multi-view data set by name (``"MSRC-v1"``, ``"HW"``, ...) or by path to a ``.mat`` file.

    Parameters
    ----------
    name_or_path : str or path-like
        A shipped name (see :func:`list_multiview`), looked up as ``multiview/<name>.mat``
        or ``multiview/data_<name>.mat`` in ``$REPROZOO_DATA``, the repository's ``data/``,
        then ``~/.cache/reprozoo/``; or a path to any ``.mat`` file in the same conventions.

    Returns
    -------
    MultiViewDataset
        Views as float64 arrays (n × d_v), labels int64 0-based.

    Raises
    ------
    DataNotFoundError
        No such file (the message lists where it looked and where to get it).
    ValueError
        The file is not a readable MATLAB file, or holds no view cell array / no label
        vector, or a view's shape matches neither n × d nor d × n.
    ChecksumError
        A shipped file does not match its SHA256SUMS.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path should be a str or path, got {type(name_or_path).__name__}")
    p = Path(name_or_path)
    if p.is_dir():
        raise ValueError(f"name_or_path={str(p)!r} is a folder; pass a .mat file or a data set name")
    if p.suffix.lower() == ".mat" or p.is_file():
        if not p.is_file():
            hint = f" (for the shipped set, pass the name {_name_of(p)!r})" if _name_of(p) in list_multiview() else ""
            raise FileNotFoundError(f"name_or_path: no such file {str(p)!r}{hint}")
        path = p
    else:
        name = str(name_or_path)
        try:
            path = find_data_file([f"multiview/{name}.mat", f"multiview/data_{name}.mat"], source=SOURCE)
        except FileNotFoundError as exc:
            known = list_multiview()
            raise type(exc)(f"{exc}. Known data sets: {', '.join(known) or '(none found)'}") from None
    views, labels = _read_mat(path)
    return MultiViewDataset(name=_name_of(path), views=views, labels=labels, path=path)

# -- reading ----------------------------------------------------------------------------
def _read_mat(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        return _read_hdf5(path)
    except Exception as exc:
        if _is_hdf5(path):
            return _read_hdf5(path)
        raise ValueError(f"{path} is not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    raw_views = _pick(mat, VIEW_KEYS, "views", path)
    raw_labels = _pick(mat, LABEL_KEYS, "labels", path)
    cells = _cells(raw_views, path)
    return _finish([_dense(c) for c in cells], np.asarray(_dense(raw_labels)), path)

def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    return b"\x89HDF\r\n\x1a\n" in head

def _read_hdf5(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable MATLAB .mat file ({exc})") from exc
    with f:
        keys = [k for k in f.keys() if not k.startswith("#")]
        vkey = next((k for k in VIEW_KEYS if k in keys), None)
        lkey = next((k for k in LABEL_KEYS if k in keys), None)
        if vkey is None:
            raise ValueError(f"{path}: no views found; expected a cell array under one of {VIEW_KEYS}, got {keys}")
        if lkey is None:
            raise ValueError(f"{path}: no labels found; expected one of {LABEL_KEYS}, got {keys}")
        node = f[vkey]
        if isinstance(node, h5py.Dataset) and node.dtype == h5py.ref_dtype:
            views = [_h5_array(f, f[ref]) for ref in np.asarray(node).reshape(-1)]
        else:
            views = [_h5_array(f, node)]
        labels = _h5_array(f, f[lkey])
    return _finish(views, labels, path)

def _h5_array(f, node) -> np.ndarray:
    import h5py

    if isinstance(node, h5py.Group) and {"data", "ir", "jc"} <= set(node.keys()):
        # MATLAB sparse (column-compressed); MATLAB's (rows, cols) = attrs MATLAB_sparse rows.
        n_rows = int(node.attrs.get("MATLAB_sparse", 0))
        jc = np.asarray(node["jc"])
        mat = sp.csc_matrix((np.asarray(node["data"]), np.asarray(node["ir"]), jc),
                            shape=(n_rows, jc.size - 1))
        return mat.toarray()  # (rows, cols) as MATLAB sees them
    # HDF5 stores MATLAB's column-major arrays: transpose back to MATLAB's orientation.
    return np.asarray(node).T

def _pick(mat: dict, keys: tuple[str, ...], what: str, path: Path):
    for k in keys:
        if k in mat:
            return mat[k]
    raise ValueError(f"{path}: no {what} found; expected one of {keys}, got variables {sorted(mat)}")

def cell_views(views):
    """``views`` as a list of views: a MATLAB cell array flattened, anything else as given.

    A cell array (``scipy.io.loadmat(f)["X"]``: an object ndarray of shape (V, 1), (1, V) or (V,))
    becomes the list of its V cells, in order, sparse cells made dense; a tuple becomes a list;
    any other value is returned unchanged for the caller's validation.

    >>> import numpy as np
    >>> cells = np.empty((2, 1), dtype=object); cells[0, 0] = np.zeros((3, 2)); cells[1, 0] = np.ones((3, 4))
    >>> [v.shape for v in cell_views(cells)]
    [(3, 2), (3, 4)]
    """
    if isinstance(views, np.ndarray) and views.dtype == object:
        return [_dense(c) for c in views.reshape(-1)]
    if isinstance(views, tuple):
        return list(views)
    return views


def _cells(raw, path: Path) -> list:
    if isinstance(raw, np.ndarray) and raw.dtype == object:
        return cell_views(raw)
    return [raw]  # a single matrix: one view

def _dense(a) -> np.ndarray:
    if sp.issparse(a):
        return a.toarray()
    return np.asarray(a)

def _finish(views: list[np.ndarray], labels: np.ndarray, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    labels = np.asarray(labels)
    if labels.ndim > 2 or (labels.ndim == 2 and min(labels.shape) != 1):
        raise ValueError(f"{path}: labels should be a vector, got shape {labels.shape}")
    labels = labels.reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{path}: the label vector is empty")
    if not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"{path}: labels should be numeric, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise ValueError(f"{path}: labels contain NaN or infinite values")
    if np.issubdtype(labels.dtype, np.complexfloating) or np.any(np.mod(labels, 1) != 0):
        raise ValueError(f"{path}: labels should be integer class codes, got non-integer values")
    n = labels.size
    classes, labels = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{path}: the labels hold a single class ({classes[0]!r}); clustering needs at least 2")
    out = []
    for i, v in enumerate(views):
        v = np.asarray(v)
        if v.dtype == object or not np.issubdtype(v.dtype, np.number):
            raise ValueError(f"{path}: view {i} is not numeric (dtype {v.dtype})")
        if v.ndim != 2:
            raise ValueError(f"{path}: view {i} should be 2-D, got shape {v.shape}")
        if v.shape[0] != n and v.shape[1] == n:
            v = v.T  # stored d × n
        elif v.shape[0] != n:
            raise ValueError(f"{path}: view {i} has shape {v.shape}, but there are {n} labels")
        v = np.ascontiguousarray(v, dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"{path}: view {i} holds {int((~np.isfinite(v)).sum())} NaN or infinite values")
        out.append(v)
    if not out:
        raise ValueError(f"{path}: the view cell array is empty")
    return out, labels.astype(np.int64)

