"""FedTiny's server side as a Flower ``Strategy`` (1.42 Message API); also runs the baselines.

Protocol (what the client does is in :func:`reprozoo.fedtiny.client.handle`; keys in
:class:`reprozoo.fedtiny.protocol.Keys`):

1. ABNS (:meth:`FedTinyStrategy.start`, before round 1, only when ``candidates`` are given):
   ``query.bnstats`` sends the C sparse candidates; each client returns per-BN-layer (μ_k, σ²_k, n_k);
   the server merges them exactly (:func:`~reprozoo.fedtiny.bn.merge_bn_stats`) and sends the
   candidates with the merged statistics in ``query.losses``; each client returns its mean loss per
   candidate; the server keeps the argmin of the sample-weighted mean loss (the paper's adaptive BN
   selection module).
2. Rounds (``configure_train`` / ``aggregate_train``): the sparse model goes out as kept values plus a
   packed bit mask; clients run masked SGD and return their kept values (masked FedAvg).  In an
   adjustment round (every ΔT rounds while t <= T_end) the config record names the layer(s) and K; the
   clients add a top-K buffer of gradients at pruned positions and the server grows by aggregated
   gradient and drops by magnitude, density unchanged (the paper's progressive pruning module).
3. A client that fails (error reply) is left out of that round's aggregation; the round completes with
   the others and the strategy's ``history`` records which nodes failed.

Aggregation and grow/drop run in NumPy on the server's CPU (the arrays come off the wire as NumPy).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from reprozoo.core.progress import log as progress_log
from reprozoo.fedtiny.bn import merge_bn_stats
from reprozoo.fedtiny.protocol import Keys, failed_partition, from_record, nbytes, to_record
from reprozoo.fedtiny.pruning import (
    adjust_count,
    adjust_layers,
    aggregate_topk,
    cosine_alpha,
    is_adjust_round,
    select_candidate,
    topk_grow_drop,
)
from reprozoo.fedtiny.sparse import Mask, masked_fedavg, pack_state, unpack_state

__all__ = ["FedTinyStrategy"]

log = logging.getLogger("reprozoo.fedtiny")


def report(fmt: str, *args: Any) -> None:
    """A status line about the run (client failures, ...): ``reprozoo.core.progress.log`` (silent under
    ``--quiet`` / pytest) and the ``reprozoo.fedtiny`` logger at INFO (no output unless configured)."""
    from rich.markup import escape

    message = fmt % args if args else fmt
    log.info(message)
    progress_log(f"[yellow]{escape(message)}[/yellow]")


class FedTinyStrategy(FedAvg):
    """FedTiny (Huang et al., ICDCS 2023) as a Flower FedAvg strategy; also runs its baselines.

    Parameters
    ----------
    shapes : dict name -> shape of every exchanged float entry of the model's state dict
    base_config : dict of protocol keys (:func:`~reprozoo.fedtiny.protocol.client_config`: data split,
        model, device, optimiser), sent in every config record
    mask : Mask or None
        Initial (or fixed) mask; None with ``candidates=None`` means dense FedAvg.
    candidates : list of (name, Mask, state dict) or None
        FedTiny's candidate pool; when given, :meth:`start` runs ABNS first and ``mask`` is ignored.
    warmup_rounds : int >= 0, rounds of masked FedAvg of every candidate before ABNS (an addition of ours,
        :meth:`warm_up`; 0 = the paper's selection at initialisation). They count as rounds of the run:
        ``start(num_rounds=R)`` then trains the chosen candidate R - warmup_rounds more rounds.
    delta_t, t_end, adjust_alpha : schedule of mask adjustments (ΔT, T_end, α); ``delta_t=0`` fixes the mask
    layer_order : "output_to_input" | "input_to_output"
    whole_model : bool, adjust every layer each adjustment round (FedDST-style) instead of one
    grad_batches : int, batches of the client's growth gradient
    fraction_train, min_train_nodes, min_available_nodes : as in Flower's FedAvg
    client_eval : callable ``round -> n`` or None
        Federated evaluation (a server without a test set): after round t with ``n = client_eval(t) > 0``
        every node evaluates the global model on its shard of the first n test images
        (:func:`~reprozoo.fedtiny.client.eval_order`) and ``client_evals[t]`` gets the pooled
        ``(loss, top1 %, images)``; None = no client evaluation (the server evaluates, ``evaluate_fn``).

    Attributes
    ----------
    mask : Mask (current), history : list of dict per round, abns : dict (losses, chosen) after ABNS,
    client_evals : dict round -> (loss, top1 %, images) of the federated evaluation,
    bytes_down, bytes_up : int, payload bytes sent to / received from clients so far.
    """

    def __init__(self, *, shapes: Mapping[str, tuple[int, ...]], base_config: Mapping[str, Any],
                 mask: Mask | None = None, candidates: Sequence[tuple[str, Mask, dict[str, np.ndarray]]] | None = None,
                 delta_t: int = 0, t_end: int = 0, adjust_alpha: float = 0.2, layer_order: str = "output_to_input",
                 whole_model: bool = False, grad_batches: int = 1, fraction_train: float = 1.0,
                 min_train_nodes: int = 2, min_available_nodes: int = 2, warmup_rounds: int = 0,
                 client_eval: Callable[[int], int] | None = None) -> None:
        super().__init__(fraction_train=fraction_train, min_train_nodes=min_train_nodes,
                         min_available_nodes=min_available_nodes)
        # evaluation is centralised (evaluate_fn on the server's test set): no client evaluate round
        self.fraction_evaluate, self.min_evaluate_nodes = 0.0, 0
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.base_config = dict(base_config)
        self.candidates = list(candidates) if candidates else None
        self.mask = mask.copy() if mask is not None else None
        if self.mask is None and self.candidates is None:
            self.base_config[Keys.DENSE] = True
        for m in ([self.mask] if self.mask is not None else []) + [c[1] for c in self.candidates or []]:
            for n, t in m.masks.items():
                if n not in self.shapes or tuple(t.shape) != self.shapes[n]:
                    raise ValueError(f"mask entry {n!r} of shape {tuple(t.shape)} does not match the model's "
                                     f"{self.shapes.get(n)}")
        self.delta_t, self.t_end, self.adjust_alpha = int(delta_t), int(t_end), float(adjust_alpha)
        if self.delta_t < 0 or (self.delta_t > 0 and self.t_end < 1):
            raise ValueError(f"delta_t={delta_t} should be >= 0 and t_end={t_end} >= 1 when adjusting")
        if self.delta_t > 0 and self.mask is None and self.candidates is None:
            raise ValueError("mask adjustment (delta_t > 0) needs a mask or candidates; dense FedAvg has none")
        if self.candidates is not None and self.delta_t == 0:
            report("FedTinyStrategy: delta_t=0 disables progressive pruning (ABNS + fixed mask only)")
        self.layer_order, self.whole_model, self.grad_batches = layer_order, bool(whole_model), int(grad_batches)
        self.warmup_rounds = int(warmup_rounds)
        if self.warmup_rounds < 0 or (self.warmup_rounds and self.candidates is None):
            raise ValueError(f"warmup_rounds={warmup_rounds} should be >= 0, and 0 without candidates")
        self.client_eval = client_eval
        self.client_evals: dict[int, tuple[float, float, int]] = {}
        self.round_offset = 0  # rounds already run (warm-up) before Flower's loop counts from 1 again
        self._warming = False
        self._n_adjusted = 0  # adjustment rounds so far (FedTiny cycles through the layers with it)
        self.history: list[dict[str, Any]] = []
        self.abns: dict[str, Any] = {}
        self.bytes_down = 0
        self.bytes_up = 0
        self._pending: dict[str, int] = {}
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    # -- helpers --------------------------------------------------------------------------------
    @property
    def _np_mask(self) -> dict[str, np.ndarray] | None:
        return None if self.mask is None else {n: m.numpy() for n, m in self.mask.masks.items()}

    def _config(self, **extra: Any) -> ConfigRecord:
        return ConfigRecord({**self.base_config, **extra})

    def _nodes(self, grid: Grid) -> list[int]:
        num = int(len(list(grid.get_node_ids())) * self.fraction_train)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, max(num, self.min_train_nodes))
        return node_ids

    def _send(self, grid: Grid, arrays: Mapping[str, np.ndarray], config: ConfigRecord, node_ids: list[int],
              message_type: str, timeout: float | None = None) -> tuple[list[Message], list[Message]]:
        msgs = [Message(RecordDict({Keys.ARRAYS: to_record(arrays), Keys.CONFIG: config}), dst_node_id=n,
                        message_type=message_type) for n in node_ids]
        self.bytes_down += nbytes(arrays) * len(node_ids)
        replies = list(grid.send_and_receive(msgs, timeout=timeout or 3600))
        return self._split(replies)

    def _split(self, replies: Iterable[Message], count_bytes: bool = True) -> tuple[list[Message], list[Message]]:
        ok, bad = [], []
        for r in replies:
            (bad if r.has_error() else ok).append(r)
        # aggregate in partition order: the arrival order varies between runs and float sums depend on it
        ok.sort(key=lambda r: (float(r.content[Keys.METRICS].get(Keys.PARTITION, 0.0)), r.metadata.src_node_id))
        for r in ok if count_bytes else ():  # evaluation traffic is not the method's cost
            self.bytes_up += nbytes(from_record(r.content[Keys.ARRAYS]))
        for r in bad:
            report("%s failed: %s", *self.failure(r))
        return ok, bad

    @staticmethod
    def failure(reply: Message) -> tuple[str, str]:
        """(who, why) of an error reply: ``"client <partition>"`` (read from the reason, see
        :func:`~reprozoo.fedtiny.protocol.failed_partition`; ``"node <Flower node id>"`` for an error that
        did not come from a client handler) and the reason's first line without that prefix."""
        reason = (reply.error.reason or f"error code {reply.error.code}").strip()
        first = reason.splitlines()[0] if reason else ""
        partition = failed_partition(first)
        if partition is None:
            return f"node {reply.metadata.src_node_id}", first
        return f"client {partition}", first.split(":", 1)[1].strip()

    # -- ABNS (adaptive BN selection) ---------------------------------------------------------------
    def warm_up(self, grid: Grid, timeout: float | None = None) -> None:
        """Masked FedAvg of every candidate for ``warmup_rounds`` rounds before ABNS (an addition of ours:
        at the random initialisation every candidate's loss is about ln(#classes) and the selection is
        blind).  Round r trains every candidate once on the sampled clients, masks fixed (no grow/drop);
        its messages, bytes, FLOPs and memory go into ``history`` / ``bytes_*`` like any round's, each
        entry tagged ``warmup=<candidate>``.  Replaces each candidate's state with its warmed-up one.
        Costs C times a sparse round per warm-up round (C candidates); clients never hold a dense model."""
        cands = self.candidates
        assert cands is not None
        arrays = [to_record(st) for _, _, st in cands]
        self._warming = True
        try:
            for rnd in range(1, self.warmup_rounds + 1):
                for i, (name, mask, _) in enumerate(cands):
                    self.mask = mask
                    replies = grid.send_and_receive(self.configure_train(rnd, arrays[i], ConfigRecord(), grid),
                                                    timeout=timeout or 3600)
                    agg, _ = self.aggregate_train(rnd, replies)
                    self.history[-1]["warmup"] = name
                    if agg is not None:
                        arrays[i] = agg
        finally:
            self._warming, self.mask = False, None
        self.candidates = [(name, mask, from_record(a)) for (name, mask, _), a in zip(cands, arrays, strict=True)]
        self.round_offset = self.warmup_rounds

    def run_abns(self, grid: Grid, timeout: float | None = None) -> tuple[Mask, dict[str, np.ndarray]]:
        """The two ABNS round trips; returns the chosen (mask, state with merged BN statistics)."""
        cands = self.candidates
        assert cands is not None
        t0, c0 = time.perf_counter(), time.process_time()
        node_ids = self._nodes(grid)
        packet: dict[str, np.ndarray] = {}
        for i, (_, m, st) in enumerate(cands):
            np_mask = {n: t.numpy() for n, t in m.masks.items()}
            packet.update({Keys.candidate(i) + k: v for k, v in pack_state(st, np_mask).items()})
        cfg = self._config(**{Keys.N_CAND: len(cands), Keys.ROUND: 0})
        # round trip 1: client BN statistics
        ok, bad = self._send(grid, packet, cfg, node_ids, f"query.{Keys.BN_STATS}", timeout)
        if not ok:
            raise RuntimeError(f"ABNS: every one of {len(node_ids)} nodes failed the BN-statistics query")
        merged_states = []
        for i, (_, _m, st) in enumerate(cands):
            st = {k: v.copy() for k, v in st.items()}
            layers = Keys.bn_layers(i, ok[0].content[Keys.ARRAYS])
            for layer in layers:
                per_client = []
                for r in ok:
                    a = r.content[Keys.ARRAYS]
                    per_client.append((a[Keys.bn_mean(i, layer)].numpy(), a[Keys.bn_var(i, layer)].numpy(),
                                       int(r.content[Keys.METRICS][Keys.bn_count(layer)])))
                mu, var, _ = merge_bn_stats(per_client)
                st[f"{layer}.running_mean"] = mu.astype(np.float32)
                st[f"{layer}.running_var"] = var.astype(np.float32)
            merged_states.append(st)
        # round trip 2: losses under the merged statistics
        packet = {}
        for i, (_, m, _) in enumerate(cands):
            np_mask = {n: t.numpy() for n, t in m.masks.items()}
            packet.update({Keys.candidate(i) + k: v for k, v in pack_state(merged_states[i], np_mask).items()})
        ok2, bad2 = self._send(grid, packet, cfg, node_ids, f"query.{Keys.LOSSES}", timeout)
        if not ok2:
            raise RuntimeError(f"ABNS: every one of {len(node_ids)} nodes failed the loss query")
        losses = np.array([[float(r.content[Keys.METRICS][Keys.candidate_loss(i)]) for r in ok2]
                           for i in range(len(cands))])
        weights = np.array([float(r.content[Keys.METRICS][Keys.NUM_EXAMPLES]) for r in ok2])
        best = select_candidate(losses, weights)
        self.abns = {"names": [c[0] for c in cands], "losses": (losses @ (weights / weights.sum())).tolist(),
                     "chosen": cands[best][0], "failed": len(bad) + len(bad2), "after_round": self.round_offset,
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        self.abns["failures"] = [self.failure(r) for r in bad + bad2]
        log.info("ABNS: mean losses %s -> %s", self.abns["losses"], cands[best][0])
        return cands[best][1].copy(), merged_states[best]

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None):
        """Warm-up and ABNS (when there are candidates), then Flower's FedAvg loop (``Strategy.start``) for the
        remaining ``num_rounds - warmup_rounds`` rounds; rounds (history, ``evaluate_fn``, the schedule) are
        numbered from the first warm-up round."""
        if self.candidates is not None:
            if self.warmup_rounds:
                if self.warmup_rounds >= num_rounds:
                    raise ValueError(f"warmup_rounds={self.warmup_rounds} should be below num_rounds={num_rounds}")
                self.warm_up(grid, timeout)
            self.mask, state = self.run_abns(grid, timeout)
            initial_arrays = to_record(state)
        offset = self.round_offset
        if evaluate_fn is not None and offset:
            inner = evaluate_fn

            def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
                return inner(rnd + offset, arrays)
        return super().start(grid, initial_arrays, num_rounds - offset, timeout, train_config, evaluate_config,
                             evaluate_fn)

    # -- rounds: masked FedAvg and progressive pruning ----------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        node_ids = self._nodes(grid)
        t = server_round + self.round_offset  # the run's round (after any warm-up rounds)
        extra: dict[str, Any] = {Keys.ROUND: t, **dict(config)}
        self._pending = {}
        if (self.mask is not None and self.delta_t > 0 and not self._warming
                and is_adjust_round(t, self.delta_t, self.t_end)):
            alpha_t = cosine_alpha(t, self.adjust_alpha, self.t_end)
            # the n-th adjustment round adjusts the n-th layer in order (from the output after a warm-up too)
            self._n_adjusted += 1
            layers = adjust_layers(self._n_adjusted * self.delta_t, self.delta_t, self.mask.names, self.layer_order,
                                   self.whole_model)
            ks = {n: adjust_count(int(self.mask.masks[n].sum()), alpha_t) for n in layers}
            self._pending = {n: k for n, k in ks.items() if k > 0}
            if self._pending:
                extra[Keys.ADJ_LAYERS] = list(self._pending)
                extra[Keys.ADJ_K] = list(self._pending.values())
                extra[Keys.GRAD_BATCHES] = self.grad_batches
        packet = pack_state(from_record(arrays), self._np_mask)
        self.bytes_down += nbytes(packet) * len(node_ids)
        record = RecordDict({Keys.ARRAYS: to_record(packet), Keys.CONFIG: self._config(**extra)})
        return [Message(record, dst_node_id=n, message_type="train") for n in node_ids]

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Federated evaluation (``client_eval``): the global model to every node (the union of their test
        shards is the whole evaluation set), only in the rounds ``client_eval`` names; else no message."""
        t = server_round + self.round_offset
        n = self.client_eval(t) if self.client_eval is not None else 0
        if n <= 0:
            return []
        self._eval_round = t
        packet = to_record(pack_state(from_record(arrays), self._np_mask))
        cfg = self._config(**{Keys.ROUND: t, Keys.EVAL_N: int(n), **dict(config)})
        return [Message(RecordDict({Keys.ARRAYS: packet, Keys.CONFIG: cfg}), dst_node_id=node, message_type="evaluate")
                for node in grid.get_node_ids()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Pooled loss and top-1 (percent) over the clients' shards; ``client_evals[round]`` records them."""
        ok, _ = self._split(replies, count_bytes=False)
        if not ok:
            return None
        m = [r.content[Keys.METRICS] for r in ok]
        n = sum(float(x[Keys.NUM_EXAMPLES]) for x in m)
        loss = sum(float(x[Keys.LOSS_SUM]) for x in m) / max(n, 1.0)
        top1 = 100.0 * sum(float(x[Keys.CORRECT]) for x in m) / max(n, 1.0)
        self.client_evals[self._eval_round] = (loss, top1, int(n))
        return MetricRecord({"top1": top1, "loss": loss})

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ok, bad = self._split(replies)
        entry: dict[str, Any] = {"round": server_round + self.round_offset, "n_ok": len(ok), "n_failed": len(bad),
                                 "failed": [self.failure(r) for r in bad],
                                 "seconds": time.perf_counter() - self._t0}
        self.history.append(entry)
        if not ok:
            report("round %d: every client failed; the global model is unchanged", server_round + self.round_offset)
            return None, None
        np_mask = self._np_mask
        weights = [float(r.content[Keys.METRICS][Keys.NUM_EXAMPLES]) for r in ok]
        states = []
        for r in ok:
            a = from_record(r.content[Keys.ARRAYS])
            state, _ = unpack_state({k: v for k, v in a.items() if not k.startswith(Keys.GRAD)}, self.shapes, np_mask)
            states.append(state)
        avg = masked_fedavg(states, weights, np_mask)
        grown = 0
        for name, k in self._pending.items():  # adjustment round: grow by aggregated gradient, drop by |w|
            buffers = [(r.content[Keys.ARRAYS][Keys.grad_idx(name)].numpy(),
                        r.content[Keys.ARRAYS][Keys.grad_val(name)].numpy()) for r in ok]
            agg = aggregate_topk(buffers, weights, math.prod(self.shapes[name]))
            before = int(np_mask[name].sum())
            avg[name], new_mask = topk_grow_drop(avg[name], np_mask[name], agg, k)
            grown += int((new_mask & ~np_mask[name]).sum())
            if int(new_mask.sum()) != before:
                raise AssertionError(f"grow/drop changed nnz of {name}: {before} -> {int(new_mask.sum())}")
            self.mask.masks[name] = torch.from_numpy(np.asarray(new_mask, dtype=bool))
        w = np.asarray(weights) / sum(weights)
        entry.update(adjusted=list(self._pending), grown=grown,
                     train_loss=float(sum(wi * float(r.content[Keys.METRICS][Keys.LOSS])
                                          for wi, r in zip(w, ok, strict=True))),
                     flops=float(np.mean([float(r.content[Keys.METRICS][Keys.FLOPS]) for r in ok])),
                     mem_bytes=float(max(float(r.content[Keys.METRICS][Keys.MEM]) for r in ok)),
                     mem_state_bytes=float(max(float(r.content[Keys.METRICS][Keys.MEM_STATE]) for r in ok)))
        entry["seconds"] = time.perf_counter() - self._t0  # configure + clients + aggregation (+ grow/drop)
        entry["cpu_seconds"] = time.process_time() - self._c0  # this process only (all of it on LocalGrid)
        metrics = MetricRecord({Keys.LOSS: entry["train_loss"], Keys.N_FAILED: len(bad)})
        return to_record(avg), metrics

