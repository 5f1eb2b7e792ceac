"""Baselines of the MEAformer experiment, on the same encoders, epochs, split and selection as MEAformer.

- ``KG-fusion``: one learned weight per modality for the whole graph (EVA / MCLEA-style KG-level fusion;
  Liu et al., AAAI 2021; Lin et al., COLING 2022): MEAformer with ``fusion="global"``.
- ``Uniform``: equal weights, no transformer (the paper's "w/o MMH" ablation): ``fusion="uniform"``.
- ``GCN-Align`` (Wang et al., EMNLP 2018): structure only, a 2-layer GCN on learned entity embeddings, trained
  with the same contrastive loss as the others (GCN-Align's margin loss is not used; see the card).
- ``NameNN``: no training; CSLS nearest neighbour on the surface vectors (name and char bigrams, each
  L2-normalised and concatenated).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from reprozoo.meaformer.evaluate import csls_ranks, ranking_metrics
from reprozoo.meaformer.features import ModalityData
from reprozoo.meaformer.trainer import MEAformerTrainer

__all__ = ["BASELINES", "make_trainer", "name_nn"]

#: baseline names, as recorded in result.json
BASELINES = ("KG-fusion", "Uniform", "GCN-Align", "NameNN")


def make_trainer(method: str, **kwargs: Any) -> MEAformerTrainer:
    """The trainer of ``method`` (``"MEAformer"`` or a trained baseline) with the shared ``kwargs``."""
    if method == "MEAformer":
        return MEAformerTrainer(**kwargs)
    if method == "KG-fusion":
        return MEAformerTrainer(**{**kwargs, "fusion": "global"})
    if method == "Uniform":
        return MEAformerTrainer(**{**kwargs, "fusion": "uniform"})
    if method == "GCN-Align":
        return MEAformerTrainer(**{**kwargs, "modalities": ("structure",), "structure_encoder": "gcn",
                                   "fusion": "uniform"})
    raise ValueError(f"method={method!r} is not a trained method; choose MEAformer, KG-fusion, Uniform or "
                     "GCN-Align")


def name_nn(data: ModalityData, links: np.ndarray, *, csls_k: int = 3) -> dict[str, float]:
    """Rank ``links`` by CSLS on the surface vectors of ``data`` (``name`` and/or ``char``), no training."""
    parts = []
    for m in ("name", "char"):
        if m in data.features:
            x = data.features[m]
            rows = np.unique(links.ravel())
            dense = np.zeros((data.n_entities, x.shape[1]), dtype=np.float32)
            dense[rows] = x[rows].toarray() if sp.issparse(x) else x[rows]
            parts.append(dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12))
    if not parts:
        raise ValueError("NameNN needs the name or char modality in data")
    emb = torch.from_numpy(np.concatenate(parts, axis=1))
    l2r, r2l = csls_ranks(emb[links[:, 0]], emb[links[:, 1]], k=csls_k)
    return {**ranking_metrics(l2r), **ranking_metrics(r2l, "r2l_")}
