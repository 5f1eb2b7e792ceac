"""The FedTiny wire protocol in one place: message records, actions, config-record and metric keys, and
the config record a client receives (built from the experiment's config itself).

A message carries up to three records: ``arrays`` (an ``ArrayRecord`` of NumPy arrays: packed sparse
weights, BN statistics, top-K gradient buffers), ``config`` (a ``ConfigRecord``: the keys of :class:`Keys`)
and, in a reply, ``metrics`` (a ``MetricRecord``).  Flower message types are ``query.bnstats`` and
``query.losses`` (the two ABNS round trips) and ``train``.

No Flower import at module level (:mod:`reprozoo.fedtiny.client` uses the keys without Flower); the two
record converters import ``flwr.app`` when called.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only
    from flwr.app import ArrayRecord

__all__ = ["Keys", "client_config", "failure_reason", "failed_partition", "to_record", "from_record", "nbytes"]


class Keys:
    """Record names, actions and config / metric keys of the protocol."""

    # records of a message
    ARRAYS = "arrays"
    CONFIG = "config"
    METRICS = "metrics"
    # actions (Flower message types "query.<action>" / "train")
    BN_STATS = "bnstats"      # ABNS round trip 1: per-BN-layer statistics of each candidate
    LOSSES = "losses"         # ABNS round trip 2: each candidate's loss under the merged statistics
    TRAIN = "train"
    EVALUATE = "evaluate"     # federated evaluation (``evaluate_on="clients"``): each client's test shard
    # config record: data split and model (with the node config's partition-id / num-partitions)
    DATASET = "dataset"
    SEED = "seed"
    N_TRAIN = "n-train"
    N_TEST = "n-test"
    ALPHA = "alpha"
    ARCH = "arch"
    EVAL_N = "eval-n"         # federated evaluation: the first eval-n test images (after the run's shuffle)
    # config record: local training
    DEVICE = "device"
    THREADS = "num-threads"
    CHANNELS_LAST = "channels-last"  # the working model's memory layout (NHWC: faster on the CPU)
    LR = "lr"
    MOMENTUM = "momentum"
    WD = "weight-decay"
    EPOCHS = "local-epochs"
    BATCH = "batch-size"
    ABNS_SAMPLES = "abns-samples"
    FAIL_CLIENT = "fail-client"   # test hook: this partition raises in round FAIL_ROUND
    FAIL_ROUND = "fail-round"
    # config record: set per round by the strategy
    ROUND = "server-round"
    DENSE = "dense"
    ADJ_LAYERS = "adjust-layers"
    ADJ_K = "adjust-k"
    GRAD_BATCHES = "grad-batches"
    N_CAND = "n-candidates"
    # metrics of a reply (and of a round, on the server: LOSS and N_FAILED)
    NUM_EXAMPLES = "num-examples"
    LOSS_SUM = "loss-sum"     # evaluate reply: summed cross-entropy and correct predictions on the shard
    CORRECT = "correct"
    PARTITION = "partition-id"
    LOSS = "train-loss"
    FLOPS = "flops"
    MEM = "mem-bytes"
    MEM_STATE = "mem-state-bytes"
    N_FAILED = "n-failed"
    # names built per ABNS candidate i, BN layer or adjusted weight
    GRAD = "grad/"  # prefix of the top-K gradient buffers in a train reply

    @staticmethod
    def candidate(i: int) -> str:
        """Prefix of candidate ``i``'s packed state in the ABNS messages."""
        return f"c{i}/"

    @staticmethod
    def bn_mean(i: int, layer: str) -> str:
        """Array: the client's mean of BN layer ``layer``'s input under candidate ``i`` (``bnstats`` reply)."""
        return f"c{i}/{layer}.mean"

    @staticmethod
    def bn_var(i: int, layer: str) -> str:
        """Array: the matching population variance (``bnstats`` reply)."""
        return f"c{i}/{layer}.var"

    @staticmethod
    def bn_layers(i: int, names) -> list[str]:
        """The BN layers of candidate ``i`` that a ``bnstats`` reply with array ``names`` reports on."""
        head, tail = f"c{i}/", ".mean"
        return sorted(k[len(head):-len(tail)] for k in names if k.startswith(head) and k.endswith(tail))

    @staticmethod
    def bn_count(layer: str) -> str:
        """Metric: the positions per channel behind a client's statistics of ``layer`` (``bnstats`` reply)."""
        return f"n/{layer}"

    @staticmethod
    def candidate_loss(i: int) -> str:
        """Metric: the client's mean loss of candidate ``i`` under the merged statistics (``losses`` reply)."""
        return f"loss-{i}"

    @staticmethod
    def grad_idx(name: str) -> str:
        """Array: flat indices of the top-K pruned-position gradients of weight ``name`` (``train`` reply)."""
        return f"grad/{name}/idx"

    @staticmethod
    def grad_val(name: str) -> str:
        """Array: the matching gradient values."""
        return f"grad/{name}/val"


#: (key, config field, type) of the experiment-config fields every client needs, sent in every message
_FROM_CONFIG: tuple[tuple[str, str, type], ...] = (
    (Keys.N_TRAIN, "n_train", int), (Keys.N_TEST, "n_test", int), (Keys.ALPHA, "alpha", float),
    (Keys.ARCH, "arch", str), (Keys.DEVICE, "device", str), (Keys.LR, "lr", float),
    (Keys.MOMENTUM, "momentum", float), (Keys.WD, "weight_decay", float), (Keys.EPOCHS, "local_epochs", int),
    (Keys.BATCH, "batch_size", int), (Keys.ABNS_SAMPLES, "abns_samples", int),
    (Keys.FAIL_CLIENT, "fail_client", int), (Keys.FAIL_ROUND, "fail_round", int),
    (Keys.CHANNELS_LAST, "channels_last", bool),
)


def client_config(config: Any, dataset: str, seed: int, threads: int = 1) -> dict[str, Any]:
    """The config record of one run: the client fields of ``config`` (a
    :class:`~reprozoo.fedtiny.experiment.FedTinyConfig`) plus the run's ``dataset``, ``seed`` and the
    clients' torch thread count."""
    record = {key: kind(getattr(config, name)) for key, name, kind in _FROM_CONFIG}
    record.update({Keys.DATASET: str(dataset), Keys.SEED: int(seed), Keys.THREADS: int(threads)})
    return record


def failure_reason(partition_id: int, exc: BaseException) -> str:
    """The one-line reason of an error reply: ``"client <partition>: <ExceptionType>: <first line>"`` (the
    client's data partition index, not the Flower node id; no traceback)."""
    text = str(exc).strip().splitlines()
    return f"client {int(partition_id)}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def failed_partition(reason: str) -> int | None:
    """The partition index that :func:`failure_reason` put in an error reply's ``reason`` (None for an error
    that did not come from a FedTiny client handler, e.g. a node that went away)."""
    head = str(reason).split(":", 1)[0].split()
    return int(head[1]) if len(head) == 2 and head[0] == "client" and head[1].isdigit() else None


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """NumPy arrays -> a Flower ``ArrayRecord`` (C-contiguous copies).

    Each ``Array`` holds the bytes ``np.save`` writes (``Array(ndarray)``'s, tested byte for byte), with the
    .npy header of each (dtype, shape) built once per process: a round's messages repeat the same few."""
    from flwr.app import Array, ArrayRecord
    from flwr.common.constant import SType

    out = {}
    for k, v in arrays.items():
        v = np.ascontiguousarray(v)
        if v.dtype.hasobject:
            out[k] = Array(v)  # Flower's own path (it refuses object arrays)
            continue
        out[k] = Array(dtype=str(v.dtype), shape=tuple(v.shape), stype=SType.NUMPY,
                       data=_npy_header(np.lib.format.dtype_to_descr(v.dtype), tuple(v.shape)) + v.tobytes())
    return ArrayRecord(out)


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """A Flower ``ArrayRecord`` -> NumPy arrays (writable copies, equal to ``Array.numpy()``'s).

    A version-1.0 .npy payload in C order is read with its header parsed once per distinct header
    (``np.load`` parses every header with ``ast``: about 25 us an array, a few seconds a run); anything
    else goes through ``Array.numpy()``."""
    out = {}
    for k, a in record.items():
        data = a.data
        if isinstance(data, bytes) and data[:8] == _NPY_V1 and len(data) >= 10:
            start = 10 + int.from_bytes(data[8:10], "little")
            shape, fortran, dtype = _npy_layout(data[:start])
            if not fortran and not dtype.hasobject:
                count = math.prod(shape)
                if len(data) - start == count * dtype.itemsize:
                    out[k] = np.frombuffer(data, dtype, count=count, offset=start).reshape(shape).copy()
                    continue
        out[k] = a.numpy()
    return out


_NPY_V1 = b"\x93NUMPY\x01\x00"  # .npy magic, format version 1.0 (what np.save writes for small headers)


@functools.lru_cache(maxsize=4096)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The .npy header (magic, version, length, padded dict) that ``np.save`` writes for a C-order array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@functools.lru_cache(maxsize=4096)
def _npy_layout(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a version-1.0 .npy header, parsed by NumPy's own reader."""
    fp = io.BytesIO(header)
    np.lib.format.read_magic(fp)
    return np.lib.format.read_array_header_1_0(fp)


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Payload bytes of ``arrays`` (what crosses the wire, counted in both directions)."""
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))
