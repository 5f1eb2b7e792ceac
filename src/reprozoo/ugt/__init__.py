"""UGT: untrained GNN tickets (Huang et al., LoG 2022, arXiv:2211.15335).

Sparse subnetworks of randomly initialised, never-trained GNNs, found by learning one score per
weight under a global threshold with a gradual sparsity ramp. Needs the ``graph`` extra
(torch-geometric). See ``README.md`` in this folder for the method card.

>>> from reprozoo.ugt import UGTGCN, current_sparsity
>>> model = UGTGCN(1433, 256, 7, num_layers=2, sparsity=0.9)
>>> round(current_sparsity(model), 3)
0.9
"""

from reprozoo.ugt.analysis import (
    OODSplit,
    expected_calibration_error,
    mean_average_distance,
    ood_auroc,
    ood_split,
    perturb_edges,
    perturb_features,
)
from reprozoo.ugt.baselines import dense_baseline, edge_popup_baseline, ugt_method
from reprozoo.ugt.models import ARCHS, GAT, GCN, GIN, UGTGAT, UGTGCN, UGTGIN, DenseLinear, build_model, check_graph
from reprozoo.ugt.sampler import TorchNeighborSampler, has_compiled_sampler, neighbor_loader
from reprozoo.ugt.schedule import (
    ConstantSparsitySchedule,
    LinearSparsitySchedule,
    PolynomialSparsitySchedule,
    make_schedule,
)
from reprozoo.ugt.sparse import (
    ScoreMask,
    SparseLinear,
    current_sparsity,
    global_threshold,
    init_weight_,
    layer_sparsities,
    masked_modules,
    refresh_masks,
    reset_ticket_,
    score_parameters,
    set_sparsity,
    sparsify_,
)
from reprozoo.ugt.train import (
    FitResult,
    check_model_dtype,
    evaluate_accuracy,
    fit_node_classifier,
    fit_node_classifier_minibatch,
    is_ugt_model,
    prepare_inputs,
)

__all__ = [
    "ARCHS", "GAT", "GCN", "GIN", "UGTGAT", "UGTGCN", "UGTGIN", "DenseLinear", "build_model", "check_graph",
    "ScoreMask", "SparseLinear", "current_sparsity", "global_threshold", "init_weight_", "layer_sparsities",
    "masked_modules", "refresh_masks", "reset_ticket_", "score_parameters", "set_sparsity", "sparsify_",
    "ConstantSparsitySchedule", "LinearSparsitySchedule", "PolynomialSparsitySchedule", "make_schedule",
    "FitResult", "check_model_dtype", "evaluate_accuracy", "fit_node_classifier", "is_ugt_model", "prepare_inputs",
    "fit_node_classifier_minibatch", "TorchNeighborSampler", "neighbor_loader", "has_compiled_sampler",
    "dense_baseline", "edge_popup_baseline", "ugt_method",
    "OODSplit", "expected_calibration_error", "mean_average_distance", "ood_auroc", "ood_split",
    "perturb_edges", "perturb_features",
]
