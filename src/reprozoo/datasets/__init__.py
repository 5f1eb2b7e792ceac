"""Loaders for the real data sets; each reads local files only and returns a typed container.

Lookup order: explicit path, ``$REPROZOO_DATA``, the repository's ``data/``, ``~/.cache/reprozoo/``.
Heavy libraries (torch_geometric for Planetoid) are imported only when a loader needs them.
"""

from reprozoo.datasets._paths import ChecksumError, DataNotFoundError, data_roots, find_data_file
from reprozoo.datasets.cifar import load_cifar10, load_cifar100
from reprozoo.datasets.dbp15k import DBP15K_PAIRS, AlignmentSplit, KGPair, load_dbp15k, read_openea, split_links
from reprozoo.datasets.images import ImageDataset, load_cifar10_subset, load_images, load_mnist
from reprozoo.datasets.industry import (
    ICS,
    FirmSet,
    SpellSet,
    load_crosswalk,
    load_firms_2020,
    load_sp500_spells,
)
from reprozoo.datasets.longtail import (
    longtail_counts,
    make_longtail,
    shot_accuracies,
    shot_split,
    split_groups_by_frequency,
)
from reprozoo.datasets.multiview import MultiViewDataset, list_multiview, load_multiview
from reprozoo.datasets.planetoid import (
    PLANETOID_NAMES,
    PlanetoidCacheError,
    PlanetoidGraph,
    load_graph,
    load_planetoid,
    planetoid_raw_files,
)
from reprozoo.datasets.traces import (
    CELLULAR_TRACES,
    CellularTrace,
    bin_trace,
    load_cellular_trace,
    quantise_capacity,
)

__all__ = [
    # files and checksums
    "ChecksumError",
    "DataNotFoundError",
    "data_roots",
    "find_data_file",
    # multi-view clustering (udbgl)
    "MultiViewDataset",
    "list_multiview",
    "load_multiview",
    # images (compound_bn, multianda, fedtiny)
    "ImageDataset",
    "load_cifar10",
    "load_cifar100",
    "load_cifar10_subset",
    "load_images",
    "load_mnist",
    # long-tailed subsets and shot splits (compound_bn)
    "longtail_counts",
    "make_longtail",
    "shot_accuracies",
    "shot_split",
    "split_groups_by_frequency",
    # citation graphs (ugt)
    "PLANETOID_NAMES",
    "PlanetoidGraph",
    "load_graph",
    "load_planetoid",
    "PlanetoidCacheError",
    "planetoid_raw_files",
    # entity alignment (meaformer)
    "DBP15K_PAIRS",
    "KGPair",
    "AlignmentSplit",
    "load_dbp15k",
    "read_openea",
    "split_links",
    # industry classification systems and labelled firms (industry)
    "ICS",
    "FirmSet",
    "SpellSet",
    "load_crosswalk",
    "load_firms_2020",
    "load_sp500_spells",
    # cellular traces (rsd4)
    "CELLULAR_TRACES",
    "CellularTrace",
    "bin_trace",
    "load_cellular_trace",
    "quantise_capacity",
]
