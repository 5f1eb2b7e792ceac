"""FedTiny on Flower (1.42 Message API): the server ``Strategy`` and the ``ClientApp``.

Protocol (spec §3; what the client must do is in :func:`reprozoo.fedtiny.client.handle`):

1. ABNS (``FedTinyStrategy.start``, before round 1, only when ``candidates`` are given):
   ``query.bnstats`` sends the C sparse candidates; each client returns per-BN-layer (μ_k, σ²_k, n_k);
   the server merges them exactly (:func:`~reprozoo.fedtiny.bn.merge_bn_stats`) and sends the
   candidates with the merged statistics in ``query.losses``; each client returns its mean loss per
   candidate; the server keeps the argmin of the sample-weighted mean loss.
2. Rounds (``configure_train`` / ``aggregate_train``): the sparse model goes out as kept values plus a
   packed bit mask; clients run masked SGD and return their kept values (masked FedAvg).  In an
   adjustment round (every ΔT rounds while t <= T_end) the config record names the layer(s) and K; the
   clients add a top-K buffer of gradients at pruned positions and the server grows by aggregated
   gradient and drops by magnitude (density unchanged).
3. A client that fails (error reply) is left out of that round's aggregation; the round completes with
   the others and the strategy's ``history`` records which nodes failed.

``run_federated(jobs, n_clients, engine=...)`` runs server jobs on Flower's simulation engine
(``engine="flower"``: ``flwr.simulation.run_simulation`` on Ray) or in process (``engine="local"``: a
:class:`LocalGrid` that calls the same ``ClientApp`` directly, no Ray) for fast tests.  On a real
deployment the same ``client_app`` and a ``ServerApp`` built by :func:`make_server_app` run unchanged
(see the method card for the ``flwr`` commands).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from reprozoo.core.progress import is_quiet
from reprozoo.core.progress import log as progress_log
from reprozoo.fedtiny.bn import merge_bn_stats
from reprozoo.fedtiny.client import Keys, handle
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

__all__ = ["FedTinyStrategy", "client_app", "server_app", "make_server_app", "LocalGrid", "run_federated",
           "spec_from_run_config", "SimulationStopped"]

log = logging.getLogger("reprozoo.fedtiny")


def _report(fmt: str, *args: Any) -> None:
    """A status line about the run (client failures, ...): ``reprozoo.core.progress.log`` (silent under
    ``--quiet`` / pytest) and the ``reprozoo.fedtiny`` logger at INFO (no output unless configured)."""
    from rich.markup import escape

    message = fmt % args if args else fmt
    log.info(message)
    progress_log(f"[yellow]{escape(message)}[/yellow]")
ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"


# -- records <-> numpy ----------------------------------------------------------------------------
def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


# -- client -------------------------------------------------------------------------------------------
client_app = ClientApp()


def _reply(msg: Message, context: Context, action: str) -> Message:
    config = dict(msg.content[CONFIG])
    arrays = from_record(msg.content[ARRAYS]) if ARRAYS in msg.content.array_records else {}
    out, metrics = handle(action, config, arrays, int(context.node_config["partition-id"]))
    return Message(RecordDict({ARRAYS: to_record(out), METRICS: MetricRecord(metrics)}), reply_to=msg)


@client_app.query(Keys.BN_STATS)
def _query_bnstats(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.BN_STATS)


@client_app.query(Keys.LOSSES)
def _query_losses(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.LOSSES)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.TRAIN)


# -- server -------------------------------------------------------------------------------------------
class FedTinyStrategy(FedAvg):
    """FedTiny (Huang et al., ICDCS 2023) as a Flower FedAvg strategy; also runs its baselines.

    Parameters
    ----------
    shapes : dict name -> shape of every exchanged float entry of the model's state dict
    base_config : dict of the client keys in :class:`~reprozoo.fedtiny.client.Keys` (data, model,
        optimiser), sent in every config record
    mask : Mask or None
        Initial (or fixed) mask; None with ``candidates=None`` means dense FedAvg.
    candidates : list of (name, Mask, state dict) or None
        FedTiny's candidate pool; when given, :meth:`start` runs ABNS first and ``mask`` is ignored.
    delta_t, t_end, adjust_alpha : schedule of mask adjustments (ΔT, T_end, α); ``delta_t=0`` fixes the mask
    layer_order : "output_to_input" | "input_to_output"
    whole_model : bool, adjust every layer each adjustment round (FedDST-style) instead of one
    grad_batches : int, batches of the client's growth gradient
    fraction_train, min_train_nodes, min_available_nodes : as in Flower's FedAvg

    Attributes
    ----------
    mask : Mask (current), history : list of dict per round, abns : dict (losses, chosen) after ABNS,
    bytes_down, bytes_up : int, payload bytes sent to / received from clients so far.
    """

    def __init__(self, *, shapes: Mapping[str, tuple[int, ...]], base_config: Mapping[str, Any],
                 mask: Mask | None = None, candidates: Sequence[tuple[str, Mask, dict[str, np.ndarray]]] | None = None,
                 delta_t: int = 0, t_end: int = 0, adjust_alpha: float = 0.2, layer_order: str = "output_to_input",
                 whole_model: bool = False, grad_batches: int = 1, fraction_train: float = 1.0,
                 min_train_nodes: int = 2, min_available_nodes: int = 2) -> None:
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
            _report("FedTinyStrategy: delta_t=0 disables progressive pruning (ABNS + fixed mask only)")
        self.layer_order, self.whole_model, self.grad_batches = layer_order, bool(whole_model), int(grad_batches)
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
        msgs = [Message(RecordDict({ARRAYS: to_record(arrays), CONFIG: config}), dst_node_id=n,
                        message_type=message_type) for n in node_ids]
        self.bytes_down += nbytes(arrays) * len(node_ids)
        replies = list(grid.send_and_receive(msgs, timeout=timeout or 3600))
        return self._split(replies)

    def _split(self, replies: Iterable[Message]) -> tuple[list[Message], list[Message]]:
        ok, bad = [], []
        for r in replies:
            (bad if r.has_error() else ok).append(r)
        # aggregate in partition order: the arrival order varies between runs and float sums depend on it
        ok.sort(key=lambda r: (float(r.content[METRICS].get(Keys.PARTITION, 0.0)), r.metadata.src_node_id))
        for r in ok:
            self.bytes_up += nbytes(from_record(r.content[ARRAYS]))
        for r in bad:
            _report("node %s failed: %s", r.metadata.src_node_id, r.error.reason)
        return ok, bad

    # -- ABNS (spec §3.2) -----------------------------------------------------------------------
    def run_abns(self, grid: Grid, timeout: float | None = None) -> tuple[Mask, dict[str, np.ndarray]]:
        """The two ABNS round trips; returns the chosen (mask, state with merged BN statistics)."""
        cands = self.candidates
        assert cands is not None
        t0, c0 = time.perf_counter(), time.process_time()
        node_ids = self._nodes(grid)
        packet: dict[str, np.ndarray] = {}
        for i, (_, m, st) in enumerate(cands):
            np_mask = {n: t.numpy() for n, t in m.masks.items()}
            packet.update({f"c{i}/{k}": v for k, v in pack_state(st, np_mask).items()})
        cfg = self._config(**{Keys.N_CAND: len(cands), Keys.ROUND: 0})
        # round trip 1: client BN statistics
        ok, bad = self._send(grid, packet, cfg, node_ids, f"query.{Keys.BN_STATS}", timeout)
        if not ok:
            raise RuntimeError(f"ABNS: every one of {len(node_ids)} nodes failed the BN-statistics query")
        merged_states = []
        for i, (_, _m, st) in enumerate(cands):
            st = {k: v.copy() for k, v in st.items()}
            layers = {k[len(f"c{i}/"):-len(".mean")] for k in ok[0].content[ARRAYS] if
                      k.startswith(f"c{i}/") and k.endswith(".mean")}
            for layer in layers:
                per_client = []
                for r in ok:
                    a = r.content[ARRAYS]
                    per_client.append((a[f"c{i}/{layer}.mean"].numpy(), a[f"c{i}/{layer}.var"].numpy(),
                                       int(r.content[METRICS][f"n/{layer}"])))
                mu, var, _ = merge_bn_stats(per_client)
                st[f"{layer}.running_mean"] = mu.astype(np.float32)
                st[f"{layer}.running_var"] = var.astype(np.float32)
            merged_states.append(st)
        # round trip 2: losses under the merged statistics
        packet = {}
        for i, (_, m, _) in enumerate(cands):
            np_mask = {n: t.numpy() for n, t in m.masks.items()}
            packet.update({f"c{i}/{k}": v for k, v in pack_state(merged_states[i], np_mask).items()})
        ok2, bad2 = self._send(grid, packet, cfg, node_ids, f"query.{Keys.LOSSES}", timeout)
        if not ok2:
            raise RuntimeError(f"ABNS: every one of {len(node_ids)} nodes failed the loss query")
        losses = np.array([[float(r.content[METRICS][f"loss-{i}"]) for r in ok2] for i in range(len(cands))])
        weights = np.array([float(r.content[METRICS][Keys.NUM_EXAMPLES]) for r in ok2])
        best = select_candidate(losses, weights)
        self.abns = {"names": [c[0] for c in cands], "losses": (losses @ (weights / weights.sum())).tolist(),
                     "chosen": cands[best][0], "failed": len(bad) + len(bad2),
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        log.info("ABNS: mean losses %s -> %s", self.abns["losses"], cands[best][0])
        return cands[best][1].copy(), merged_states[best]

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None):
        """ABNS (when there are candidates), then Flower's FedAvg loop (``Strategy.start``)."""
        if self.candidates is not None:
            self.mask, state = self.run_abns(grid, timeout)
            initial_arrays = to_record(state)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    # -- rounds (spec §3.3-3.4) -------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        node_ids = self._nodes(grid)
        extra: dict[str, Any] = {Keys.ROUND: server_round, **dict(config)}
        self._pending = {}
        if self.mask is not None and self.delta_t > 0 and is_adjust_round(server_round, self.delta_t, self.t_end):
            alpha_t = cosine_alpha(server_round, self.adjust_alpha, self.t_end)
            layers = adjust_layers(server_round, self.delta_t, self.mask.names, self.layer_order, self.whole_model)
            ks = {n: adjust_count(int(self.mask.masks[n].sum()), alpha_t) for n in layers}
            self._pending = {n: k for n, k in ks.items() if k > 0}
            if self._pending:
                extra[Keys.ADJ_LAYERS] = list(self._pending)
                extra[Keys.ADJ_K] = list(self._pending.values())
                extra[Keys.GRAD_BATCHES] = self.grad_batches
        packet = pack_state(from_record(arrays), self._np_mask)
        self.bytes_down += nbytes(packet) * len(node_ids)
        record = RecordDict({ARRAYS: to_record(packet), CONFIG: self._config(**extra)})
        return [Message(record, dst_node_id=n, message_type="train") for n in node_ids]

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ok, bad = self._split(replies)
        entry: dict[str, Any] = {"round": server_round, "n_ok": len(ok), "n_failed": len(bad),
                                 "failed_nodes": [int(r.metadata.src_node_id) for r in bad],
                                 "seconds": time.perf_counter() - self._t0}
        self.history.append(entry)
        if not ok:
            _report("round %d: every client failed; the global model is unchanged", server_round)
            return None, None
        np_mask = self._np_mask
        weights = [float(r.content[METRICS][Keys.NUM_EXAMPLES]) for r in ok]
        states = []
        for r in ok:
            a = from_record(r.content[ARRAYS])
            state, _ = unpack_state({k: v for k, v in a.items() if not k.startswith("grad/")}, self.shapes, np_mask)
            states.append(state)
        avg = masked_fedavg(states, weights, np_mask)
        grown = 0
        for name, k in self._pending.items():  # adjustment round: grow by aggregated gradient, drop by |w|
            buffers = [(r.content[ARRAYS][f"grad/{name}/idx"].numpy(), r.content[ARRAYS][f"grad/{name}/val"].numpy())
                       for r in ok]
            agg = aggregate_topk(buffers, weights, math.prod(self.shapes[name]))
            before = int(np_mask[name].sum())
            avg[name], new_mask = topk_grow_drop(avg[name], np_mask[name], agg, k)
            grown += int((new_mask & ~np_mask[name]).sum())
            if int(new_mask.sum()) != before:
                raise AssertionError(f"grow/drop changed nnz of {name}: {before} -> {int(new_mask.sum())}")
            self.mask.masks[name] = torch_bool(new_mask)
        w = np.asarray(weights) / sum(weights)
        entry.update(adjusted=list(self._pending), grown=grown,
                     train_loss=float(sum(wi * float(r.content[METRICS][Keys.LOSS])
                                          for wi, r in zip(w, ok, strict=True))),
                     flops=float(np.mean([float(r.content[METRICS][Keys.FLOPS]) for r in ok])),
                     mem_bytes=float(max(float(r.content[METRICS][Keys.MEM]) for r in ok)),
                     mem_state_bytes=float(max(float(r.content[METRICS][Keys.MEM_STATE]) for r in ok)))
        entry["seconds"] = time.perf_counter() - self._t0  # configure + clients + aggregation (+ grow/drop)
        entry["cpu_seconds"] = time.process_time() - self._c0  # this process only (all of it on LocalGrid)
        metrics = MetricRecord({"train-loss": entry["train_loss"], "n-failed": len(bad)})
        return to_record(avg), metrics


def torch_bool(a: np.ndarray):
    import torch

    return torch.from_numpy(np.asarray(a, dtype=bool))


# -- server app -----------------------------------------------------------------------------------------
class SimulationStopped(RuntimeError):
    """Raised in the ServerApp thread by a grid call once :func:`run_federated` was interrupted."""


class _StoppableGrid(Grid):
    """Delegates to ``inner``; ``send_and_receive`` polls in short steps and raises
    :class:`SimulationStopped` once ``stop`` is set, so an interrupted simulation's ServerApp thread (not a
    daemon: the interpreter waits for it at exit) ends within ``poll`` seconds instead of waiting out the
    reply timeout (Flower's in-memory grid does not watch its own stop event)."""

    def __init__(self, inner: Grid, stop: threading.Event, poll: float = 0.1) -> None:
        self.inner, self.stop, self.poll = inner, stop, float(poll)

    def _check(self) -> None:
        if self.stop.is_set():
            raise SimulationStopped("the Flower simulation was interrupted")

    def set_run(self, run_id: int) -> None:  # noqa: D401 - Grid API
        self.inner.set_run(run_id)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check()
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check()
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (end is None or time.monotonic() < end):
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending and self.stop.wait(self.poll):
                self._check()
        return replies


def make_server_app(jobs: Sequence[Callable[[Grid], Any]], results: list, stop: threading.Event | None = None,
                    began: threading.Event | None = None, done: threading.Event | None = None) -> ServerApp:
    """A ``ServerApp`` whose main runs each ``job(grid)`` in turn, appending their returns to ``results``
    (an exception is appended instead and stops the remaining jobs).

    With ``stop``, the jobs see a grid whose calls raise :class:`SimulationStopped` once ``stop`` is set;
    ``began`` / ``done`` (if given) are set when the main starts / returns, however it ends."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        if began is not None:
            began.set()
        if stop is not None:
            grid = _StoppableGrid(grid, stop)
        try:
            for job in jobs:
                try:
                    results.append(job(grid))
                except BaseException as exc:  # surfaced by run_federated
                    results.append(exc)
                    return
        finally:
            if done is not None:
                done.set()

    return app


def spec_from_run_config(run_config: Mapping[str, Any]):
    """A :class:`~reprozoo.fedtiny.server.RunSpec` from a Flower run config (``method``, ``density``,
    ``rounds``, ``n-clients``, ... with dashes for underscores); unknown keys raise ``ValueError``."""
    import dataclasses

    from reprozoo.fedtiny.server import RunSpec

    names = {f.name for f in dataclasses.fields(RunSpec)}
    kw = {}
    for k, v in run_config.items():
        key = k.replace("-", "_")
        if key not in names:
            raise ValueError(f"unknown run-config key {k!r}; valid: {sorted(n.replace('_', '-') for n in names)}")
        kw[key] = tuple(str(v).split(",")) if key == "candidates" else v
    return RunSpec(**kw)


#: The ServerApp of a real deployment (``flwr run``): one run of ``run_config["method"]``.
server_app = ServerApp()


@server_app.main()
def _deployment_main(grid: Grid, context: Context) -> None:
    from reprozoo.fedtiny.server import make_job

    spec = spec_from_run_config(dict(context.run_config))
    out = make_job(spec)(grid)
    log.warning("fedtiny %s: top1=%.2f %% density=%.4f bytes=%d failed rounds=%s", spec.method, 100 * out["top1"],
                out["density"], out["bytes"], out["failed_rounds"])


# -- in-process grid -------------------------------------------------------------------------------------
class LocalGrid(Grid):
    """A ``Grid`` that delivers each message to ``client_app`` in this process (no Ray, no network).

    Node ids are 1..n; node i-1's ``node_config`` is ``{"partition-id": i-1, "num-partitions": n}``, as
    in Flower's simulation engine.  An exception raised by the client becomes an error reply
    (``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``), as on a real deployment.
    """

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        if int(num_nodes) < 1:
            raise ValueError(f"num_nodes={num_nodes} should be >= 1")
        self.app = app
        self.node_ids = list(range(1, int(num_nodes) + 1))
        from flwr.app import RecordDict as _RD

        self.contexts = {n: Context(run_id=0, node_id=n, node_config={"partition-id": n - 1, "num-partitions": len(
            self.node_ids)}, state=_RD(), run_config={}) for n in self.node_ids}
        self._run = None

    def set_run(self, run_id: int) -> None:  # noqa: D401 - Grid API
        self._run = run_id

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def get_nodes(self):
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid delivers synchronously; use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid delivers synchronously; use send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        from flwr.common.constant import ErrorCode

        replies = []
        for m in messages:
            try:
                replies.append(self.app(m, self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # noqa: BLE001 - a failing client is a reply, not a crash
                replies.append(Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(exc)), reply_to=m))
        return replies


@contextlib.contextmanager
def _local_identity():
    """Flower stamps messages with the current task's identity; set one for in-process runs."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id = saved[0] if saved[0] is not None else 0
    TaskIdentity.node_id = saved[1] if saved[1] is not None else 0
    TaskIdentity.task_id = saved[2] if saved[2] is not None else 0
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class _DropRunSimulationDeprecation(logging.Filter):
    """Drops Flower's "DEPRECATED FEATURE: The `run_simulation` function is deprecated" banner."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not ("DEPRECATED FEATURE" in msg and "run_simulation" in record.getMessage())


@contextlib.contextmanager
def _quiet_flower(level: int = logging.WARNING):
    logger = logging.getLogger("flwr")
    old = logger.level
    banner = _DropRunSimulationDeprecation()
    logger.setLevel(level)
    logger.addFilter(banner)
    try:
        yield
    finally:
        logger.removeFilter(banner)
        logger.setLevel(old)


def run_federated(jobs: Sequence[Callable[[Grid], Any]], n_clients: int, engine: str = "flower",
                  num_cpus: int = 2, verbose: bool = False) -> tuple[list[Any], float]:
    """Run server ``jobs`` (each ``job(grid) -> value``) against ``n_clients`` FedTiny clients.

    Parameters
    ----------
    n_clients : number of client nodes; must equal the ``n_clients`` of every job made by
        :func:`~reprozoo.fedtiny.server.make_job` (``ValueError`` naming both otherwise)
    engine : "flower" (Flower's simulation engine, Ray; one actor per CPU) or "local" (:class:`LocalGrid`)
    num_cpus : CPUs given to Ray (each client actor takes one)

    Returns ``(values, seconds)``; re-raises the first job's exception.

    Interrupts (engine "flower"): a KeyboardInterrupt, or whatever the caller's SIGTERM handler raises,
    stops the simulation (the ServerApp thread ends at its next grid call), shuts Ray down when this call
    started it, puts the caller's SIGINT/SIGTERM handlers back (Ray replaces SIGTERM's at init; they are
    also put back right after ``ray.init``) and is re-raised.

    Output: client failures ("node 2 failed: ...") go through :func:`reprozoo.core.progress.log`
    (silent under ``--quiet`` and pytest) and the ``reprozoo.fedtiny`` logger at INFO. Flower's
    own logger is set to WARNING (ERROR when quiet; INFO with ``verbose``) for the run, and its
    "run_simulation is deprecated" banner is filtered out (we call ``run_simulation`` on purpose:
    it is the in-process simulation API; ``flwr run`` needs a project folder and a SuperLink).
    """
    if engine not in ("flower", "local"):
        raise ValueError(f"engine={engine!r} should be 'flower' or 'local'")
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise ValueError(f"n_clients={n_clients!r} should be an int >= 1")
    for i, job in enumerate(jobs):
        spec = getattr(job, "spec", None)  # set by reprozoo.fedtiny.server.make_job
        if spec is not None and int(spec.n_clients) != n_clients:
            raise ValueError(f"jobs[{i}] was made for RunSpec.n_clients={spec.n_clients} but run_federated got "
                             f"n_clients={n_clients}: node i serves data partition i, so the two must match")
    results: list[Any] = []
    t0 = time.perf_counter()
    with _quiet_flower(logging.INFO if verbose else logging.ERROR if is_quiet() else logging.WARNING):
        if engine == "local":
            grid = LocalGrid(client_app, n_clients)
            with _local_identity():
                for job in jobs:
                    results.append(job(grid))
        else:
            _run_flower(jobs, results, n_clients, num_cpus, verbose)
    for r in results:
        if isinstance(r, BaseException):
            raise RuntimeError(f"a server job failed in the Flower simulation: {r!r}") from r
    if len(results) != len(jobs):
        raise RuntimeError(f"the Flower simulation returned {len(results)} of {len(jobs)} job results; "
                           "see the Flower log above (run with verbose=True)")
    return results, time.perf_counter() - t0


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _restore_handlers(saved: Mapping[int, Any]) -> None:
    """Reinstall the caller's Python signal handlers (``signal.signal`` also resets the C-level handler,
    which Ray's core worker replaces at init with a failure handler that aborts on SIGTERM: exit 134)."""
    for sig, handler in saved.items():
        if handler is not None:  # None: not installed from Python, nothing we can restore
            signal.signal(sig, handler)


def _install_stopping_handlers(saved: Mapping[int, Any], stop: threading.Event) -> None:
    """For the simulation: SIGINT / SIGTERM first set ``stop`` (the ServerApp thread and Flower's error log
    go quiet at once), then run the caller's handler (which raises, e.g. KeyboardInterrupt).  Handlers that
    are not Python callables (SIG_IGN, SIG_DFL, None) are left as they are."""
    for sig, handler in saved.items():
        if callable(handler):
            def _stopping(signum: int, frame: Any, _handler: Callable = handler) -> Any:
                stop.set()
                return _handler(signum, frame)

            signal.signal(sig, _stopping)


class _HushAfterStop(logging.Filter):
    """Drops Flower's records once ``stop`` is set: after an interrupt its Ray workers report the actors
    we (or the signal) ended as errors with tracebacks, which is noise, not a failure of the run."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.stop.is_set()


def _init_ray(num_cpus: int, verbose: bool, saved: Mapping[int, Any]) -> bool:
    """Start Ray as Flower's Ray backend would (``RayBackend.init_ray``: same init args and PYTHONPATH for
    the actors), then give the caller its signal handlers back.  Returns whether we started Ray."""
    import os
    import sys

    import ray

    if ray.is_initialized():
        return False
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    # Ray's daemons (GCS, raylet, and the workers they fork) inherit this thread's signal mask: with SIGTERM
    # blocked they outlive a SIGTERM sent to the whole process group (``timeout``, a job runner), so the
    # driver can still shut Ray down in order; otherwise Ray calls in the driver block on the dead GCS and
    # Ray ends the process after 60 s (exit 1, no cleanup). Ray blocks SIGINT in them itself.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if saved else None
    try:
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, num_cpus=num_cpus,
                     include_dashboard=False, log_to_driver=verbose)
        finally:
            _restore_handlers(saved)  # first: a SIGTERM that came during init goes to the caller's handler
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    except SystemExit as exc:
        # a SIGTERM that reached Ray's own handler (sys.exit(15)); hand it to the caller's handler
        if ray.is_initialized():
            ray.shutdown()
        handler = saved.get(signal.SIGTERM)
        if exc.code == signal.SIGTERM and callable(handler):
            handler(signal.SIGTERM, None)
        raise
    except BaseException:
        if ray.is_initialized():
            ray.shutdown()
        raise
    return True


def _run_flower(jobs: Sequence[Callable[[Grid], Any]], results: list, n_clients: int, num_cpus: int,
                verbose: bool) -> None:
    """``flwr.simulation.run_simulation`` of ``jobs``; on an interrupt (KeyboardInterrupt, or the caller's
    SIGTERM handler raising) it stops the ServerApp thread, shuts Ray down if we started it, restores the
    caller's signal handlers and re-raises, so the caller can clean up and exit (no hang, no abort)."""
    import warnings

    import ray
    from flwr.simulation import run_simulation

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main else {}
    stop, began, done = threading.Event(), threading.Event(), threading.Event()
    started = False
    hush = _HushAfterStop(stop)
    flwr_log = logging.getLogger("flwr")
    flwr_log.addFilter(hush)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = _init_ray(num_cpus, verbose, saved)
            _install_stopping_handlers(saved, stop)
            run_simulation(
                server_app=make_server_app(jobs, results, stop, began, done), client_app=client_app,
                num_supernodes=n_clients,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                "init_args": {"num_cpus": num_cpus, "include_dashboard": False,
                                              "log_to_driver": verbose}},
                verbose_logging=verbose)
    except BaseException:
        stop.set()  # the ServerApp thread raises SimulationStopped at its next grid call
        if began.is_set():
            done.wait(30.0)  # a job between grid calls (e.g. evaluating) finishes that step first
        raise
    finally:
        stop.set()
        if started and ray.is_initialized():
            ray.shutdown()  # Flower's backend shuts Ray down on a normal end; this covers an interrupt
        _restore_handlers(saved)
        flwr_log.removeFilter(hush)
