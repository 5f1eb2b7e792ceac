"""Loaders for the real data sets; each reads local files only and returns a typed container.

Lookup order: explicit path, ``$REPROZOO_DATA``, the repository's ``data/``, ``~/.cache/reprozoo/``.
"""

from reprozoo.datasets._paths import ChecksumError, DataNotFoundError, data_roots, find_data_file
from reprozoo.datasets.images import ImageDataset, load_cifar10_subset, load_mnist
from reprozoo.datasets.multiview import MultiViewDataset, list_multiview, load_multiview

__all__ = [
    "ChecksumError",
    "DataNotFoundError",
    "ImageDataset",
    "MultiViewDataset",
    "data_roots",
    "find_data_file",
    "list_multiview",
    "load_cifar10_subset",
    "load_mnist",
    "load_multiview",
]
