"""MEAformer: multi-modal entity alignment with per-entity modality weights (Chen et al., ACM MM 2023)."""

from reprozoo.meaformer.evaluate import csls_dense, csls_ranks, ranking_metrics
from reprozoo.meaformer.features import (
    MODALITIES,
    ModalityData,
    build_modalities,
    char_bigrams,
    corrupt_modality,
    joint_edges,
    name_vectors,
    relation_bag,
)
from reprozoo.meaformer.layers import GCN, DiagGAT, DiagGATLayer, PyGGAT, SparseGraph, edge_spmm
from reprozoo.meaformer.losses import MultiTaskLoss, icl_loss
from reprozoo.meaformer.model import MEAformer, MEAformerOutput, MetaModalityHybrid
from reprozoo.meaformer.trainer import MEAformerTrainer, surface_seeds

__all__ = [
    "MEAformer",
    "MEAformerTrainer",
    "MEAformerOutput",
    "MetaModalityHybrid",
    "MODALITIES",
    "ModalityData",
    "build_modalities",
    "corrupt_modality",
    "joint_edges",
    "relation_bag",
    "char_bigrams",
    "name_vectors",
    "SparseGraph",
    "DiagGAT",
    "DiagGATLayer",
    "GCN",
    "PyGGAT",
    "edge_spmm",
    "icl_loss",
    "MultiTaskLoss",
    "csls_ranks",
    "csls_dense",
    "ranking_metrics",
    "surface_seeds",
]
