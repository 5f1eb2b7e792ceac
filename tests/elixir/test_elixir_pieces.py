"""Elixir's pieces on one process: chunks, states, the simulator against brute force, the ledger, the searches,
equality with plain PyTorch, clipping, overflow skipping, checkpoints, MoE gating and bad input."""

import copy
import functools
import itertools
import random

import pytest
import torch

from reprozoo.elixir import (
    GPT,
    AccountingDevice,
    BudgetExceeded,
    Chunk,
    ExpertParallel,
    IllegalTransition,
    MoE,
    TensorState,
    gpt_step,
    optimal_search,
    pack,
    profile_model,
    random_tokens,
    simulate,
    wrap,
)
from reprozoo.elixir.search import Profile, SearchResult

V, T = 64, 16


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(vocab_size=V, seq_len=T, d_model=32, n_head=2, n_layer=3, **kw)


def batch(seed=0):
    return random_tokens(2, T + 1, V, seed=seed)


def elixir(model, budget=None, lr=1e-2, **kw):
    return wrap(model, torch.optim.Adam(model.parameters(), lr=lr), memory_budget=budget, step_fn=gpt_step,
                example_input=batch(), min_chunk_bytes=4096, **kw)


def train(model, optim, steps=3, elixir_=True):
    losses = []
    for t in range(steps):
        loss = gpt_step(model, batch(t))
        if elixir_:
            optim.backward(loss)
        else:
            loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.detach())
    return torch.stack(losses)


def plain_state(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


# -- chunks and states ---------------------------------------------------------------------------
def test_pack_next_fit_and_oversized():
    assert pack([3, 4, 2, 5], 7) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="chunk_size=4"):
        pack([5], 4)


def test_chunk_round_trip_and_world_divisibility():
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    values = [p.detach().clone() for p in params]
    c = Chunk(0, [6, 4], 12, rank=0, world=1, dtype=torch.float32)
    dev = AccountingDevice(None)
    c.materialize(params, torch.device("cpu"), dev.alloc, dev.alloc)
    assert params[0].untyped_storage().size() == 0           # zero storage while scattered
    dev.grow(c.block)
    c.block.copy_(c.shard)
    for p, v in zip(params, values, strict=True):
        assert torch.equal(p, v)
    assert torch.equal(c.shard[10:], torch.zeros(2))           # padding
    with pytest.raises(ValueError, match="multiple of the world size 5"):
        Chunk(0, [6], 12, rank=0, world=5, dtype=torch.float32)


def test_state_machine_rejects_illegal_transitions():
    c = Chunk(0, [4], 4, rank=0, world=1, dtype=torch.float32)
    with pytest.raises(IllegalTransition, match="FREE -> COMPUTE"):
        c.set_state(0, TensorState.COMPUTE)
    for s in (TensorState.HOLD, TensorState.COMPUTE, TensorState.HOLD_AFTER_BWD, TensorState.READY_FOR_REDUCE,
              TensorState.FREE):
        c.set_state(0, s)
    with pytest.raises(IllegalTransition):
        c.set_state(0, TensorState.READY_FOR_REDUCE)


# -- simulator -----------------------------------------------------------------------------------
def _synthetic(trace, n_chunks):
    events = [e for op in trace for e in (("pre", op, False), ("post", op, False))]
    prof = Profile(params=[None] * n_chunks, numels=[8] * n_chunks, requires_grad=[True] * n_chunks,
                   op_params=[[k] for k in range(n_chunks)], steps=[(op, False) for op in trace], grad_order=[],
                   first_use=list(range(n_chunks)), private=[], activation_bytes=0, buffer_bytes=0, events=events)
    res = SearchResult(8, [[k] for k in range(n_chunks)], [], 0, 0, torch.float32, 1, "optimal")
    return prof, res


def _brute_force(trace, n_blocks):
    """Fewest misses over every eviction choice (exhaustive search with memo)."""

    @functools.cache
    def best(t, cache):
        if t == len(trace):
            return 0
        c = trace[t]
        if c in cache:
            return best(t + 1, cache)
        if len(cache) < n_blocks:
            return 1 + best(t + 1, cache | {c})
        return 1 + min(best(t + 1, (cache - {v}) | {c}) for v in cache)

    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(6))
def test_belady_moves_equal_brute_force_optimum(seed):
    rng = random.Random(seed)
    n_chunks, n_blocks = rng.randint(3, 5), rng.randint(1, 3)
    trace = [rng.randrange(n_chunks) for _ in range(rng.randint(6, 11))]
    prof, res = _synthetic(trace, n_chunks)
    belady = simulate(prof, res, scheduler="prefetch", n_blocks=n_blocks).moves
    fifo = simulate(prof, res, scheduler="fifo", n_blocks=n_blocks).moves
    assert belady == _brute_force(tuple(trace), n_blocks) <= fifo


def test_search_terminates_when_no_block_fits():
    """The reference search loops forever when n_blocks <= 0; ours skips the size and raises."""
    prof = profile_model(tiny(), gpt_step, batch())
    with pytest.raises(ValueError, match="memory_budget=1000 bytes is too small"):
        optimal_search(prof, world_size=1, budget_bytes=1000, min_chunk_bytes=4096)


# -- equality with PyTorch ------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["optimal", "minimum_waste"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_equal_to_pytorch_under_budget(search, prefetch):
    ref = tiny()
    ref_losses = train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2), elixir_=False)
    model, optim = elixir(tiny(), budget=400_000, search=search, prefetch=prefetch)
    assert model.plan.n_blocks < len(model.plan.layout)       # chunks are evicted and re-gathered
    losses = train(model, optim)
    assert torch.equal(losses, ref_losses)
    sd = model.state_dict()
    for k, v in plain_state(ref).items():
        assert torch.equal(sd[k], v), k


def test_budget_peak_and_predicted_moves():
    budget = 400_000
    model, optim = elixir(tiny(), budget=budget)
    train(model, optim, steps=1)
    model.reset_stats()
    train(model, optim, steps=1)
    s = model.stats()
    assert s["peak_bytes"] <= budget
    assert s["moves"] == model.plan.moves
    assert model.fast.by_tag["rcache"] == 0                   # every block released after the step


def test_ledger_refuses_to_pass_the_budget():
    dev = AccountingDevice(100)
    dev.alloc(20, torch.float32)
    with pytest.raises(BudgetExceeded):
        dev.alloc(10, torch.float32)
    assert dev.peak_bytes == 80


def test_clipping_equals_clip_grad_norm():
    ref = tiny()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    gpt_step(ref, batch()).backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
    opt.step()
    g = tiny()
    model, optim = wrap(g, torch.optim.SGD(g.parameters(), lr=0.1), step_fn=gpt_step, example_input=batch(),
                        min_chunk_bytes=4096, max_norm=0.05)
    optim.backward(gpt_step(model, batch()))
    optim.step()
    sd = model.state_dict()
    assert max(float((sd[k] - v).abs().max()) for k, v in plain_state(ref).items()) < 1e-6


def test_overflow_skips_step_and_lowers_scale():
    model, optim = elixir(tiny(), dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scale = optim.scale
    optim.backward(gpt_step(model, batch()) * float("inf"))
    assert optim.step() is False
    assert optim.scale == scale / 2 and optim.skipped_steps == 1
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    optim.backward(gpt_step(model, batch()))                  # a finite step goes through in bf16
    assert optim.step() is True


def test_state_dict_loads_into_unwrapped_model():
    model, optim = elixir(tiny(), budget=400_000)
    train(model, optim, steps=2)
    plain = tiny(seed=1)
    plain.load_state_dict(model.state_dict(), strict=True)
    b = batch(5)
    with torch.no_grad():
        assert torch.allclose(plain(b[:, :-1]), model(b[:, :-1]), atol=1e-6)
    other, _ = elixir(tiny(seed=2))
    other.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(other(b[:, :-1]), plain(b[:, :-1]), atol=1e-6)


def test_checkpoint_of_model_and_optimizer_resumes_exactly():
    full, full_opt = elixir(tiny(), budget=400_000)
    losses = train(full, full_opt, steps=3)
    first, first_opt = elixir(tiny(), budget=400_000)
    train(first, first_opt, steps=2)
    saved = copy.deepcopy((first.state_dict(), first_opt.state_dict()))
    resumed, resumed_opt = elixir(tiny(seed=3), budget=400_000)      # other weights: all comes from the checkpoint
    resumed.load_state_dict(saved[0])
    resumed_opt.load_state_dict(saved[1])
    loss = gpt_step(resumed, batch(2))
    resumed_opt.backward(loss)
    resumed_opt.step()
    assert torch.equal(loss.detach(), losses[2])              # Adam's moments and step count came back too
    bad = dict(saved[1], rank=1, world=2)
    with pytest.raises(ValueError, match="saved by rank 1 of world 2"):
        resumed_opt.load_state_dict(bad)


def test_adamw_settings_reach_the_shard_optimizer():
    ref = tiny()
    ref_losses = train(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1), elixir_=False)
    g = tiny()
    model, optim = wrap(g, torch.optim.AdamW(g.parameters(), lr=1e-2, weight_decay=0.1), step_fn=gpt_step,
                        example_input=batch(), min_chunk_bytes=4096)  # its groups hold decoupled_weight_decay too
    assert torch.equal(train(model, optim), ref_losses)


def test_a_wrapped_model_refuses_copy_and_pickle_with_advice():
    import pickle

    model, _ = elixir(tiny())
    with pytest.raises(TypeError, match="copy model.state_dict"):
        copy.deepcopy(model)
    with pytest.raises(TypeError, match="save model.state_dict"):
        pickle.dumps(model)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_initial_scale_must_be_positive(scale):
    with pytest.raises(ValueError, match="initial_scale="):
        elixir(tiny(), initial_scale=scale)


@pytest.mark.parametrize("tokens, match", [
    (torch.zeros(2, T + 1, dtype=torch.long), f"idx has {T + 1} tokens per sequence; the model takes 1 to seq_len={T}"),
    (torch.full((2, 4), V), f"ids in \\[{V}, {V}\\]; the model takes ids in \\[0, vocab_size={V}\\)"),
    (torch.full((2, 4), -1), "ids in \\[-1, -1\\]"),
    (torch.zeros(2, 4), "integer token ids, got torch.float32"),
    (torch.zeros(8, dtype=torch.long), "a \\(B, T\\) tensor"),
])
def test_gpt_names_bad_token_input(tokens, match):
    with pytest.raises(ValueError, match=match):
        tiny()(tokens)


def test_gpt_step_and_random_tokens_check_their_input():
    with pytest.raises(ValueError, match="T >= 2"):
        gpt_step(tiny(), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        random_tokens(1, 9, 0)
    with pytest.raises(ValueError, match="batch"):
        random_tokens(-1, 9, 32)


def test_a_too_long_example_input_is_named_not_blamed_on_the_budget():
    model = tiny()
    with pytest.raises(ValueError, match=f"idx has {T + 8} tokens"):
        wrap(model, torch.optim.Adam(model.parameters()), memory_budget=10**6, step_fn=gpt_step,
             example_input=random_tokens(2, T + 9, V), min_chunk_bytes=4096)


def test_frozen_parameters_get_advice_and_stay_unchanged_when_passed():
    model = tiny()
    model.wpe.weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(ValueError, match="1 of them frozen, requires_grad=False"):
        wrap(model, torch.optim.Adam(trainable), step_fn=gpt_step, example_input=batch(), min_chunk_bytes=4096)
    frozen_before = model.wpe.weight.detach().clone()
    model, optim = elixir(model)  # the optimizer over every parameter, as the message says
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, optim)
    after = model.state_dict()
    assert torch.equal(after["wpe.weight"], frozen_before)
    assert not torch.equal(after["wte.weight"], before["wte.weight"])  # the others trained


# -- MoE -----------------------------------------------------------------------------------------
def test_moe_top2_matches_a_per_token_loop():
    torch.manual_seed(0)
    moe = MoE(8, 16, n_experts=4, top_k=2, capacity_factor=4.0)   # capacity large enough: no token dropped
    x = torch.randn(10, 8)
    y = moe(x)
    probs = torch.softmax(moe.gate(x), -1)
    expect = torch.zeros_like(x)
    for s in range(10):
        g, idx = probs[s].topk(2)
        g = g / g.sum()
        for j in range(2):
            expect[s] += g[j] * moe.experts[int(idx[j])](x[s:s + 1])[0]
    assert torch.allclose(y, expect, atol=1e-6)


def test_moe_drops_tokens_beyond_capacity():
    moe = MoE(4, 8, n_experts=2, top_k=1, capacity_factor=0.5)
    with torch.no_grad():
        moe.gate.weight.zero_()                                 # every token picks expert 0
    x = torch.randn(8, 4)
    y = moe(x)
    assert moe.capacity(8) == 2
    assert int((y.abs().sum(-1) > 0).sum()) == 2


def test_expert_parallel_plan_at_world_one_trains():
    torch.manual_seed(0)
    g = GPT(vocab_size=V, seq_len=T, d_model=32, n_head=2, n_layer=2, moe_experts=2)
    ref = copy.deepcopy(g)
    model, optim = wrap(g, torch.optim.Adam(g.parameters(), lr=1e-2), plan={MoE: ExpertParallel()},
                        step_fn=gpt_step, example_input=batch(), min_chunk_bytes=4096)
    assert len(model.managed_params) == 2 * 2 * 4           # layers x experts x (2 weights + 2 biases)
    losses = train(model, optim, steps=2)
    ref_losses = train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2), steps=2, elixir_=False)
    assert torch.allclose(losses, ref_losses, atol=1e-6)
    assert set(model.state_dict()) == set(ref.state_dict())


# -- bad input, before any step ------------------------------------------------------------------
def test_budget_below_one_block_plus_largest_parameter():
    with pytest.raises(ValueError, match="memory_budget"):
        elixir(tiny(), budget=50_000)


def test_inplace_op_on_a_hooked_parameter_is_refused():
    def step(model, b):
        with torch.no_grad():
            model.ln_f.weight.mul_(1.0)
        return gpt_step(model, b)

    g = tiny()
    with pytest.raises(ValueError, match="ln_f.weight.*in place"):
        wrap(g, torch.optim.Adam(g.parameters()), step_fn=step, example_input=batch(), min_chunk_bytes=4096)


def test_optimizer_the_placement_cannot_serve():
    g = tiny()
    with pytest.raises(ValueError, match="optimizer LBFGS"):
        wrap(g, torch.optim.LBFGS(g.parameters()), example_input=batch(), step_fn=gpt_step)
    groups = [{"params": list(g.blocks.parameters()), "lr": 1e-3},
              {"params": [p for n, p in g.named_parameters() if not n.startswith("blocks")], "lr": 1e-2}]
    with pytest.raises(ValueError, match="different settings"):
        wrap(g, torch.optim.Adam(groups), example_input=batch(), step_fn=gpt_step)
    with pytest.raises(ValueError, match="does not hold"):
        wrap(g, torch.optim.Adam(g.blocks.parameters()), example_input=batch(), step_fn=gpt_step)


def test_plan_naming_no_module():
    g = tiny()
    with pytest.raises(ValueError, match="plan entry 'decoder.\\*' names no module"):
        wrap(g, torch.optim.Adam(g.parameters()), plan={"decoder.*": ExpertParallel()}, example_input=batch(),
             step_fn=gpt_step)


@pytest.mark.parametrize("kw, match", [
    ({"search": "greedy"}, "search='greedy'"),
    ({"memory_budget": -5}, "memory_budget=-5"),
    ({"dtype": torch.int8}, "dtype=torch.int8"),
    ({"example_input": None}, "example_input is required"),
])
def test_bad_arguments(kw, match):
    g = tiny()
    args = {"step_fn": gpt_step, "example_input": batch(), **kw}
    with pytest.raises(ValueError, match=match):
        wrap(g, torch.optim.Adam(g.parameters()), **args)


def test_fifo_and_prefetch_give_identical_numbers():
    runs = []
    for prefetch in (True, False):
        model, optim = elixir(tiny(), budget=400_000, prefetch=prefetch)
        runs.append(train(model, optim))
    assert torch.equal(*runs)
    assert list(itertools.chain(runs[0])) == list(runs[1])


def test_bf16_paired_chunks_track_fp32():
    """bf16 parameter chunks with fp32 masters: losses within bf16 rounding of the fp32 run, masters stay fp32."""
    ref_model, ref_opt = elixir(tiny())
    ref = train(ref_model, ref_opt)
    model, optim = elixir(tiny(), dtype=torch.bfloat16)
    losses = train(model, optim)
    assert all(c.master.dtype == torch.float32 and c.shard.dtype == torch.bfloat16 for c in model.chunks)
    assert optim.scale == 2.0**16 and optim.skipped_steps == 0
    assert float((losses - ref).abs().max()) < 0.05


def test_tied_weights_live_in_a_private_chunk():
    model, optim = elixir(tiny(), budget=400_000)
    private = [c for c in model.chunks if c.private]
    assert len(private) == 1 and model.module.wte.weight is model.module.lm_head.weight
    assert private[0].params == [model.module.wte.weight]
    train(model, optim, steps=1)
    sd = model.state_dict()
    assert torch.equal(sd["wte.weight"], sd["lm_head.weight"])


def test_experiment_config_rejects_bad_settings():
    from reprozoo.core.experiment import ConfigError
    from reprozoo.elixir.experiment import ElixirConfig

    with pytest.raises(ConfigError, match="n_head=3 should divide d_model=64"):
        ElixirConfig.from_preset("smoke", n_head=3)
    with pytest.raises(ConfigError, match="moe_experts=3"):
        ElixirConfig.from_preset("quick", moe_experts=3)
    with pytest.raises(ConfigError, match="tasks"):
        ElixirConfig.from_preset("smoke", tasks=("speed",))


def test_evaluation_forward_between_steps_keeps_the_numbers():
    ref = tiny()
    ropt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    model, optim = elixir(tiny(), budget=400_000)
    for t in range(2):
        for m, o, ours in ((model, optim, True), (ref, ropt, False)):
            with torch.no_grad():
                m(batch(9)[:, :-1])                      # chunks gathered without a backward
            loss = gpt_step(m, batch(t))
            o.backward(loss) if ours else loss.backward()
            o.step()
            o.zero_grad()
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in plain_state(ref).items())


def test_meta_profile_predicts_the_saved_activation_bytes():
    """The activation bytes predicted on the meta device match those autograd saves in a real CPU forward: from
    above, within 5 % (measured +4.9 %: the meta device takes another attention kernel, saving more)."""
    model = tiny()
    prof = profile_model(model, gpt_step, batch())
    params = {id(p) for p in model.parameters()}
    saved = [0]

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in params and id(t) not in params:
            saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gpt_step(model, batch())
    assert 0 < saved[0] <= prof.activation_bytes <= 1.05 * saved[0]
    assert prof.first_use[0] == 0 and prof.private == [0]      # wte first; tied with lm_head


def test_cost_model_refits():
    from reprozoo.elixir import CostModel

    cm = CostModel()
    assert cm.h2d_gbps(2) == pytest.approx(16.3 * 2 + 8.7)
    cm.fit("h2d", [1, 2, 4], [12.0, 22.0, 42.0])
    assert cm.h2d == pytest.approx((10.0, 2.0))
    with pytest.raises(ValueError, match="name='pcie'"):
        cm.fit("pcie", [1, 2], [1.0, 2.0])


def test_budget_given_twice_and_a_model_without_parameters():
    g = tiny()
    with pytest.raises(ValueError, match="disagrees with fast_device.budget_bytes=100"):
        wrap(g, torch.optim.Adam(g.parameters()), memory_budget=200, fast_device=AccountingDevice(100),
             step_fn=gpt_step, example_input=batch())
    with pytest.raises(ValueError, match="no parameters"):
        wrap(torch.nn.ReLU(), torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]), example_input=batch())


class _CheckpointedGPT(GPT):
    """Blocks under activation checkpointing: their forward runs again inside the backward."""

    def forward(self, idx):
        from torch.utils.checkpoint import checkpoint

        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False)
        return self.lm_head(self.ln_f(x))


def test_activation_checkpointing_keeps_numbers_and_predicted_moves():
    torch.manual_seed(0)
    g = _CheckpointedGPT(vocab_size=V, seq_len=T, d_model=32, n_head=2, n_layer=3)
    ref = copy.deepcopy(g)
    ref_losses = train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2), steps=2, elixir_=False)
    model, optim = elixir(g, budget=400_000)
    losses = []
    for t in range(2):
        model.reset_stats()
        loss = gpt_step(model, batch(t))
        optim.backward(loss)
        optim.step()
        optim.zero_grad()
        losses.append(loss.detach())
        assert model.stats()["moves"] == model.plan.moves   # the recomputed forward is in the profiled trace
    assert torch.equal(torch.stack(losses), ref_losses)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in plain_state(ref).items())
