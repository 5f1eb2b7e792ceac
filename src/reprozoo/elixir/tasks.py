"""The experiment's per-rank work: ``fn(rank, world, spec) -> list of records`` (rank 0's are kept).

Each function runs on every rank of a process group (a :class:`~reprozoo.elixir.launch.WorkerPool`, ``torchrun``,
or a single process when ``world == 1`` and torch.distributed is not initialised). A record is
``(method, role, metric, value, setting)``. ``spec`` is a dict of the experiment config's fields.

Ranks get different batches (seeded by step and rank); the reference is plain PyTorch at world 1 and DDP
(gloo) at world 2, trained on the same batches from the same initial weights.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist
from torch import nn

from reprozoo.elixir.memory import CudaDevice
from reprozoo.elixir.model import GPT, gpt_step, random_tokens
from reprozoo.elixir.moe import MoE
from reprozoo.elixir.plans import ExpertParallel
from reprozoo.elixir.search import profile_model
from reprozoo.elixir.wrap import wrap

__all__ = ["build_gpt", "equality_task", "budget_task", "throughput_task", "moe_task", "moe_equivalence_task",
           "param_bytes"]


def build_gpt(spec: dict, seed: int, moe: bool = False, dense_like_moe: bool = False) -> GPT:
    """The experiment's GPT (``spec``: vocab, seq_len, d_model, n_head, n_layer, d_hidden, moe_experts)."""
    torch.manual_seed(seed)
    d_hidden = spec["d_hidden"] * (spec["moe_experts"] if dense_like_moe else 1)
    return GPT(vocab_size=spec["vocab"], seq_len=spec["seq_len"], d_model=spec["d_model"], n_head=spec["n_head"],
               n_layer=spec["n_layer"], d_hidden=d_hidden, moe_experts=spec["moe_experts"] if moe else 0,
               moe_top_k=spec.get("moe_top_k", 1), capacity_factor=spec.get("capacity_factor", 1.25))


def param_bytes(model: nn.Module) -> int:
    """fp32 bytes of the model's (distinct) parameters."""
    return 4 * sum(p.numel() for p in model.parameters())


def _batch(spec: dict, step: int, rank: int, seed: int) -> torch.Tensor:
    return random_tokens(spec["batch"], spec["seq_len"] + 1, spec["vocab"], seed=seed * 100003 + step * 101 + rank,
                         device=spec.get("device", "cpu"))


def _on_device(model: nn.Module, spec: dict) -> nn.Module:
    """A baseline's model on the run's device (Elixir's models stay on CPU: wrap moves chunks itself)."""
    return model.to(spec.get("device", "cpu"))


def _fast_device(spec: dict, budget: int | None):
    """None (wrap's CPU accounting device) on CPU; the CUDA device with ``budget`` otherwise."""
    device = str(spec.get("device", "cpu"))
    return CudaDevice(device, budget) if device.startswith("cuda") else None


def _opt(params, spec: dict) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=spec["lr"])


def _world1() -> bool:
    return not dist.is_initialized()


def _reference(spec: dict, seed: int, rank: int, world: int, steps: int):
    """Plain PyTorch (world 1) or DDP (world 2): per-step losses and the final state dict."""
    model = _on_device(build_gpt(spec, seed), spec)
    ref = model if world == 1 else nn.parallel.DistributedDataParallel(model)
    opt = _opt(ref.parameters(), spec)
    losses = []
    for t in range(steps):
        loss = gpt_step(ref, _batch(spec, t, rank, seed))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    return torch.stack(losses).cpu(), {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _elixir(spec: dict, seed: int, rank: int, budget: int | None, search: str = "optimal", prefetch: bool = True,
            model: nn.Module | None = None, plan=None, dtype=torch.float32):
    model = model if model is not None else build_gpt(spec, seed)
    return wrap(model, _opt(model.parameters(), spec), memory_budget=budget, plan=plan, search=search,
                prefetch=prefetch, dtype=dtype, step_fn=gpt_step, example_input=_batch(spec, 0, rank, seed),
                min_chunk_bytes=spec["min_chunk_bytes"], fast_device=_fast_device(spec, budget))


def _budget(spec: dict, seed: int) -> int:
    """1/model_to_budget of the model's fp32 bytes (+ 1.25 x the predicted activations when
    ``budget_plus_activations``: at GPU batch sizes activations outweigh a quarter of the model)."""
    budget = int(param_bytes(build_gpt(spec, seed)) / spec["model_to_budget"])
    if spec.get("budget_plus_activations"):
        b = random_tokens(spec["batch"], spec["seq_len"] + 1, spec["vocab"])
        budget += int(1.25 * profile_model(build_gpt(spec, seed), gpt_step, b).activation_bytes)
    return budget


def equality_task(rank: int, world: int, spec: dict, seed: int) -> list:
    """``max_abs_diff`` of losses and parameters after ``k`` steps, Elixir vs PyTorch (world 1) / DDP (world 2),
    for each search and prefetch on/off, under the budget (chunks evicted and re-gathered)."""
    steps = spec["equality_steps"]
    ref_losses, ref_state = _reference(spec, seed, rank, world, steps)
    base = "PyTorch" if world == 1 else "DDP"
    out = []
    for search in spec["searches"]:
        for prefetch in spec.get("prefetch", (True, False)):
            model, optim = _elixir(spec, seed, rank, _budget(spec, seed), search, prefetch)
            losses = []
            for t in range(steps):
                loss = gpt_step(model, _batch(spec, t, rank, seed))
                optim.backward(loss)
                optim.step()
                optim.zero_grad()
                losses.append(loss.detach())
            state = model.state_dict()
            diff = max(float((torch.stack(losses).cpu() - ref_losses).abs().max()),
                       max(float((state[k] - v).abs().max()) for k, v in ref_state.items()))
            setting = f"world={world},search={search},prefetch={'on' if prefetch else 'off'}"
            out.append(("Elixir", "method", "max_abs_diff", diff, setting))
    out.append((base, "baseline", "max_abs_diff", 0.0, f"world={world}"))
    return out


def _tokens_per_s(runners: dict, spec: dict, seed: int, rank: int) -> dict[str, float]:
    """Tokens/s (all ranks) of each ``name: (model, optim_step)``: one warm-up step each, then
    ``spec['repeats']`` rounds in which the runners take ``spec['timed_steps']`` steps in turn; the best round
    counts (load from other jobs on a shared machine then hits every runner alike)."""
    n = spec["timed_steps"]
    batches = [_batch(spec, t, rank, seed) for t in range(n)]
    best = dict.fromkeys(runners, float("inf"))
    for r in range(spec.get("repeats", 3) + 1):
        for name, (model, optim_step) in runners.items():
            if dist.is_initialized():
                dist.barrier()
            t0 = time.perf_counter()
            for b in batches[:1] if r == 0 else batches:
                optim_step(gpt_step(model, b))
            if r:
                best[name] = min(best[name], time.perf_counter() - t0)
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {name: n * spec["batch"] * spec["seq_len"] * world / t for name, t in best.items()}


def _plain_step(opt):
    def step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad()
    return step


def _elixir_step(optim):
    def step(loss):
        optim.backward(loss)
        optim.step()
        optim.zero_grad()
    return step


def budget_task(rank: int, world: int, spec: dict, seed: int) -> list:
    """A model ``model_to_budget`` x the fast-device budget: peak of the ledger, predicted and measured moves,
    bytes moved, chunk size, throughput; FIFO beside prefetch."""
    out = []
    budget = _budget(spec, seed)
    setting = f"world={world},budget=1/{spec['model_to_budget']:g}"
    runs = {name: _elixir(spec, seed, rank, budget, "optimal", prefetch)
            for name, prefetch in (("Elixir", True), ("Elixir-FIFO", False))}
    tps = _tokens_per_s({n: (m, _elixir_step(o)) for n, (m, o) in runs.items()}, spec, seed, rank)
    for name, (model, optim) in runs.items():
        model.reset_stats()
        _elixir_step(optim)(gpt_step(model, _batch(spec, 99, rank, seed)))  # one measured iteration
        s = model.stats()
        out += [(name, "method", "peak_bytes", s["peak_bytes"], setting),
                (name, "method", "budget_bytes", budget, setting),
                (name, "method", "model_bytes", param_bytes(build_gpt(spec, seed)), setting),
                (name, "method", "moves_predicted", model.plan.moves, setting),
                (name, "method", "moves_measured", s["moves"], setting),
                (name, "method", "bytes_moved_predicted", model.plan.bytes_moved, setting),
                (name, "method", "bytes_moved", s["bytes_moved"], setting),
                (name, "method", "chunk_size", s["chunk_size"], setting),
                (name, "method", "n_chunks", s["n_chunks"], setting),
                (name, "method", "n_blocks", s["n_blocks"], setting),
                (name, "method", "tokens_per_s", tps[name], setting)]
    return out


def _fsdp2(spec: dict, seed: int):
    from torch.distributed.fsdp import fully_shard

    model = _on_device(build_gpt(spec, seed), spec)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model, _opt(model.parameters(), spec)


def throughput_task(rank: int, world: int, spec: dict, seed: int) -> list:
    """Tokens/s of plain PyTorch (world 1) or DDP and FSDP2 (world 2), Elixir with everything cached and Elixir
    under the budget, on the same model and batches."""
    setting = f"world={world}"
    runners, roles = {}, {}
    if world == 1:
        model = _on_device(build_gpt(spec, seed), spec)
        runners["PyTorch"] = (model, _plain_step(_opt(model.parameters(), spec)))
    else:
        model = nn.parallel.DistributedDataParallel(_on_device(build_gpt(spec, seed), spec))
        runners["DDP"] = (model, _plain_step(_opt(model.parameters(), spec)))
        try:
            model, opt = _fsdp2(spec, seed)
            runners["FSDP2"] = (model, _plain_step(opt))
        except Exception:  # FSDP2 on gloo/CPU is best-effort; recorded as absent
            pass
    roles = dict.fromkeys(runners, "baseline")
    quarter = _budget({**spec, "budget_plus_activations": True}, seed)
    for name, budget in (("Elixir", None), ("Elixir-budget", quarter)):
        model, optim = _elixir(spec, seed, rank, budget)
        runners[name] = (model, _elixir_step(optim))
        roles[name] = "method"
    tps = _tokens_per_s(runners, spec, seed, rank)
    return [(name, roles[name], "tokens_per_s", v, setting) for name, v in tps.items()]


def moe_task(rank: int, world: int, spec: dict, seed: int) -> list:
    """MoE GPT (expert parallel) vs the dense GPT of the same parameter count, both under Elixir with the same
    budget: tokens/s of each and their ratio ``moe_speedup``."""
    setting = f"world={world},experts={spec['moe_experts']}"
    dense = build_gpt(spec, seed, dense_like_moe=True)
    moe = build_gpt(spec, seed, moe=True)
    # one budget for both: 1/model_to_budget of the dense model for chunks, plus what the MoE keeps on the fast
    # device outside chunks (this rank's experts with gradient and two Adam states) and the predicted activations
    experts = sum(p.numel() for n, p in moe.named_parameters() if ".experts." in n) // world
    acts = max(profile_model(m, gpt_step, _batch(spec, 0, rank, seed)).activation_bytes for m in (dense, moe))
    budget = int(param_bytes(dense) / spec["model_to_budget"]) + 16 * experts + int(1.25 * acts)
    runs = {name: _elixir(spec, seed, rank, budget, model=model, plan=plan)
            for name, model, plan in (("Elixir-dense", dense, None), ("Elixir-MoE", moe, {MoE: ExpertParallel()}))}
    tps = _tokens_per_s({n: (m, _elixir_step(o)) for n, (m, o) in runs.items()}, spec, seed, rank)
    out = []
    for name in runs:
        out.append((name, "method", "tokens_per_s", tps[name], setting))
        n_params = param_bytes(build_gpt(spec, seed, moe=name.endswith("MoE"), dense_like_moe=name.endswith("dense")))
        out.append((name, "method", "params", n_params // 4, setting))
    out.append(("Elixir-MoE", "method", "moe_speedup", tps["Elixir-MoE"] / tps["Elixir-dense"], setting))
    return out


def moe_equivalence_task(rank: int, world: int, spec: dict, seed: int) -> list:
    """Expert-parallel MoE against the same MoE on one rank: max |output diff| and max |gradient diff|.

    Every rank holds the full layer (same seed); the reference runs it locally on this rank's tokens; the
    expert-parallel copy keeps this rank's experts and exchanges tokens. Expert gradients are compared with the
    mean over ranks of the local gradients (the data-parallel mean loss), gathered from all ranks.
    """
    torch.manual_seed(seed)
    d, e = spec["d_model"], spec["moe_experts"]
    ref = MoE(d, spec["d_hidden"], e, top_k=spec.get("moe_top_k", 2), capacity_factor=spec.get("capacity_factor", 2.0))
    ep = copy.deepcopy(ref)
    managed = ExpertParallel().apply(ep, None)
    x = torch.randn(spec["batch"], spec["seq_len"], d, generator=torch.Generator().manual_seed(seed * 7 + rank))
    y_ref, y_ep = ref(x), ep(x)
    y_ref.square().mean().backward()
    y_ep.square().mean().backward()
    ExpertParallel().finish_grads(managed, None)
    out_diff = float((y_ref - y_ep).detach().abs().max())
    grads = torch.cat([p.grad.reshape(-1) for p in ref.experts.parameters()])
    if world > 1:
        dist.all_reduce(grads)
        grads /= world
    local = len(ep.experts)
    per = grads.numel() // e
    mine = grads[rank * local * per:(rank + 1) * local * per]
    grad_diff = float((mine - torch.cat([p.grad.reshape(-1) for p in managed])).abs().max())
    return [("Elixir-MoE", "method", "max_abs_diff", max(out_diff, grad_diff), f"world={world},moe")]
