"""FedTiny: adaptive-BN candidate selection plus progressive pruning in federated learning.

Huang et al., "Distributed Pruning Towards Tiny Neural Networks in Federated Learning", ICDCS 2023,
arXiv:2212.01977.  The core (masks, BN merge, grow/drop, cost model, client steps, the wire protocol's
keys) imports no Flower.  On Flower (extra ``fl``): :mod:`~reprozoo.fedtiny.strategy` (the server's
``Strategy``), :mod:`~reprozoo.fedtiny.server` (one run of a method as a server job),
:mod:`~reprozoo.fedtiny.simulation` (Flower's simulation engine or an in-process grid) and
:mod:`~reprozoo.fedtiny.deployment` (``client_app`` and ``server_app`` for ``flwr run``).
"""

from reprozoo.fedtiny.baselines import random_mask, snip_mask, synflow_mask
from reprozoo.fedtiny.bn import client_bn_stats, merge_bn_stats, set_bn_stats
from reprozoo.fedtiny.client import dirichlet_split, federated_data, handle
from reprozoo.fedtiny.cost import CostModel
from reprozoo.fedtiny.pruning import (
    adjust_layers,
    aggregate_topk,
    cosine_alpha,
    is_adjust_round,
    select_candidate,
    topk_grow_drop,
    topk_pruned_gradient,
)
from reprozoo.fedtiny.sparse import (
    Mask,
    candidate_pool,
    erk_densities,
    layer_counts,
    layer_densities,
    make_mask,
    masked_fedavg,
    pack_state,
    unpack_state,
)

__all__ = [
    "CostModel",
    "Mask",
    "adjust_layers",
    "aggregate_topk",
    "candidate_pool",
    "client_bn_stats",
    "cosine_alpha",
    "dirichlet_split",
    "erk_densities",
    "federated_data",
    "handle",
    "is_adjust_round",
    "layer_counts",
    "layer_densities",
    "make_mask",
    "masked_fedavg",
    "merge_bn_stats",
    "pack_state",
    "random_mask",
    "select_candidate",
    "set_bn_stats",
    "snip_mask",
    "synflow_mask",
    "topk_grow_drop",
    "topk_pruned_gradient",
    "unpack_state",
]
