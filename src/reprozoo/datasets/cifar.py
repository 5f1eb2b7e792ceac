"""Full CIFAR-10 / CIFAR-100 from the official python-pickle archives, supplied by the user.

Nothing is downloaded. Extract ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html into one of the data roots (``$REPROZOO_DATA``, the repository's
``data/`` or ``~/.cache/reprozoo/``), giving ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` and
``cifar-100-python/{train,test}``. The files are Python pickles: load only archives from that source.
"""

from __future__ import annotations

import pickle

import numpy as np

from reprozoo.datasets._paths import find_data_file
from reprozoo.datasets.images import CIFAR10_CLASSES, ImageDataset

__all__ = ["load_cifar10", "load_cifar100"]

SOURCE = ("https://www.cs.toronto.edu/~kriz/cifar.html (python version; extract the archive into a data root, "
          "e.g. data/ or $REPROZOO_DATA)")


def _read(rel: str) -> dict:
    path = find_data_file([rel], source=SOURCE)
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")  # noqa: S301 -- the official archive's format
    if b"data" not in d:
        raise ValueError(f"{path}: not a CIFAR python batch (no 'data' key)")
    return d


def _images(d: dict) -> np.ndarray:
    x = np.asarray(d[b"data"], dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError(f"CIFAR batch data should have shape (n, 3072), got {x.shape}")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def load_cifar10() -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test images, uint8 (n, 32, 32, 3), 10 classes.

    Raises :class:`~reprozoo.datasets.DataNotFoundError` naming the missing file and where to get it.
    """
    parts = [_read(f"cifar-10-batches-py/data_batch_{i}") for i in range(1, 6)]
    test = _read("cifar-10-batches-py/test_batch")
    x = np.concatenate([_images(p) for p in parts])
    y = np.concatenate([np.asarray(p[b"labels"], dtype=np.int64) for p in parts])
    return ImageDataset("CIFAR-10", x, y, _images(test), np.asarray(test[b"labels"], dtype=np.int64),
                        CIFAR10_CLASSES)


def load_cifar100() -> ImageDataset:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test images, uint8 (n, 32, 32, 3), 100 classes."""
    train, test = _read("cifar-100-python/train"), _read("cifar-100-python/test")
    classes = tuple(str(i) for i in range(100))
    return ImageDataset("CIFAR-100", _images(train), np.asarray(train[b"fine_labels"], dtype=np.int64),
                        _images(test), np.asarray(test[b"fine_labels"], dtype=np.int64), classes)
