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

# Planetoid citation graphs (Cora, CiteSeer, PubMed) through torch_geometric, imported lazily (ugt).
from reprozoo.datasets.planetoid import PLANETOID_NAMES, PlanetoidGraph, load_planetoid, planetoid_raw_files  # noqa: E402

__all__ += ["PLANETOID_NAMES", "PlanetoidGraph", "load_planetoid", "planetoid_raw_files"]
from reprozoo.datasets.traces import (  # noqa: E402  (rsd4: cellular traces)
    CELLULAR_TRACES,
    CellularTrace,
    bin_trace,
    load_cellular_trace,
    quantise_capacity,
)

__all__ += ["CELLULAR_TRACES", "CellularTrace", "bin_trace", "load_cellular_trace", "quantise_capacity"]

# long-tailed subsets and shot splits (compound_bn)
from reprozoo.datasets.longtail import (  # noqa: E402
    longtail_counts,
    make_longtail,
    shot_accuracies,
    shot_split,
    split_groups_by_frequency,
)

__all__ += ["longtail_counts", "make_longtail", "shot_accuracies", "shot_split", "split_groups_by_frequency"]

# full CIFAR-10/100 from user-supplied python batches (compound_bn "full" preset)
from reprozoo.datasets.cifar import load_cifar10, load_cifar100  # noqa: E402

__all__ += ["load_cifar10", "load_cifar100"]
