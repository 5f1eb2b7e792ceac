"""Elixir: train a model larger than the fast device with chunks, an rCache, and operator-level parallel plans.

Huang, Fang, Liu, Li, You, "Elixir: Train a Large Language Model on a Small GPU Cluster", arXiv:2212.05339.
``model, optim = wrap(model, optim, memory_budget=..., example_input=batch, step_fn=...)`` on torch.distributed
(gloo on CPU, NCCL on GPU), launched by ``torchrun`` (see the card, README.md).
"""

from reprozoo.elixir.chunks import LEGAL_TRANSITIONS, Chunk, IllegalTransition, TensorState, chunk_waste, pack
from reprozoo.elixir.memory import AccountingDevice, BudgetExceeded, CostModel, CudaDevice, FastDevice, HostDevice
from reprozoo.elixir.model import GPT, gpt_step, random_tokens
from reprozoo.elixir.module import ElixirModule
from reprozoo.elixir.moe import MoE
from reprozoo.elixir.optimizer import ElixirOptimizer
from reprozoo.elixir.plans import ChunkedDataParallel, ExpertParallel, ParallelPattern
from reprozoo.elixir.runtime import ChunkRuntime
from reprozoo.elixir.search import (
    Profile,
    SearchResult,
    minimum_waste_search,
    optimal_search,
    place,
    profile_model,
    simulate,
)
from reprozoo.elixir.wrap import wrap

__all__ = [
    "wrap", "ElixirModule", "ElixirOptimizer", "profile_model", "optimal_search", "minimum_waste_search", "place",
    "simulate", "Profile", "SearchResult", "ChunkRuntime", "Chunk", "TensorState", "LEGAL_TRANSITIONS",
    "IllegalTransition", "pack", "chunk_waste", "FastDevice", "AccountingDevice", "CudaDevice", "HostDevice",
    "BudgetExceeded", "CostModel", "ParallelPattern", "ChunkedDataParallel", "ExpertParallel", "MoE", "GPT",
    "gpt_step", "random_tokens",
]
