"""UDBGL: multi-view clustering by unified and discrete bipartite graph learning (Fang et al., TNNLS 2023)."""

from reprozoo.udbgl.udbgl import (
    UDBGL,
    RankConstraintWarning,
    bipartite_components,
    compute_anchors,
    delta_step,
    knn_anchor_graph,
    minmax_scale_views,
    project_simplex,
    solve_simplex_qp,
    solve_view_weights,
    structured_bipartite_graph,
    udbgl_objective,
    z_step,
)

__all__ = [
    "UDBGL",
    "RankConstraintWarning",
    "bipartite_components",
    "compute_anchors",
    "knn_anchor_graph",
    "minmax_scale_views",
    "project_simplex",
    "solve_simplex_qp",
    "solve_view_weights",
    "structured_bipartite_graph",
    "udbgl_objective",
    "z_step",
    "delta_step",
]
