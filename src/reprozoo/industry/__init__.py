"""industry: assigning firms to industries with expert knowledge (Zhao et al., arXiv:2209.05943).

A reconstruction from the paper's abstract: industry definitions, the hierarchy of the classification and
dated expert assignments build time-specific industry representations; firms are assigned top-down.
"""

from reprozoo.datasets.industry import ICS
from reprozoo.industry.assigner import ExpertKnowledgeAssigner, KnowledgeNet, node_texts
from reprozoo.industry.hierarchy import (
    TreeIndex,
    beam_decode,
    conditional_log_probs,
    greedy_decode,
    path_log_probs,
)

__all__ = [
    "ICS",
    "ExpertKnowledgeAssigner",
    "KnowledgeNet",
    "node_texts",
    "TreeIndex",
    "conditional_log_probs",
    "path_log_probs",
    "greedy_decode",
    "beam_decode",
]
