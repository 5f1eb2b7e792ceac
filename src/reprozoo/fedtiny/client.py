"""What a FedTiny client does, without Flower: its data partition, local masked SGD, the two ABNS
passes (BN statistics; losses under merged statistics) and the top-K gradient buffer.

:mod:`reprozoo.fedtiny.deployment` wraps :func:`handle` in a Flower ``ClientApp``; every message is a
``(config, arrays)`` pair of plain dicts, whose keys are listed in :class:`~reprozoo.fedtiny.protocol.Keys`.

Device: a client runs on the config record's ``device``; its data partition and its model are moved
there once per process (cached), so a message only copies the received weights in.  The loops over
batches keep their sums on the device (one host sync per message, none per batch).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reprozoo.core.checks import check_float, check_int
from reprozoo.core.device import resolve_device
from reprozoo.fedtiny.bn import client_bn_stats, set_bn_stats
from reprozoo.fedtiny.cost import CostModel
from reprozoo.fedtiny.protocol import Keys
from reprozoo.fedtiny.pruning import topk_pruned_gradient
from reprozoo.fedtiny.sparse import Mask, pack_state, unpack_state

__all__ = ["ARCHS", "DATASETS", "DATASET_INFO", "eval_order", "build_model", "on_device", "pool_before_relu",
           "keep_freed_memory", "dirichlet_split", "FederatedData", "federated_data", "local_train", "mean_loss",
           "layer_gradients", "handle", "state_of", "load_state", "model_shapes"]


ARCHS = {"cnn16": (16, 32, 64), "cnn32": (32, 64, 128)}
#: (classes, input shape C x H x W) of each shipped data set, known without loading it (a server that holds
#: no data builds the model from these; checked against the loaders in tests/fedtiny)
DATASET_INFO: dict[str, tuple[int, tuple[int, int, int]]] = {"MNIST": (10, (1, 28, 28)),
                                                             "CIFAR-10-subset": (10, (3, 32, 32))}
DATASETS = tuple(DATASET_INFO)


def build_model(arch: str, n_classes: int, in_chans: int, seed: int) -> nn.Module:
    """The BN-equipped backbone named ``arch`` (``cnn16``/``cnn32``: SmallCNN; ``resnet8``), seeded."""
    from reprozoo.models import resnet8, small_cnn

    torch.manual_seed(seed)
    if arch in ARCHS:
        return small_cnn(n_classes, in_chans, channels=ARCHS[arch])
    if arch == "resnet8":
        return resnet8(num_classes=n_classes, in_chans=in_chans)
    raise ValueError(f"arch={arch!r} is not valid; choose one of {[*ARCHS, 'resnet8']}")


def on_device(model: nn.Module, device: str | torch.device, channels_last: bool = True) -> nn.Module:
    """``model`` moved to ``device``, in the channels-last layout (NHWC) unless ``channels_last=False``, and
    with every ReLU that feeds a max-pool moved after it; in place, returns it.

    Channels-last computes the same function up to float rounding, and faster on the CPU: oneDNN's
    convolutions run NHWC without reordering, and max-pooling has a vectorised NHWC kernel where NCHW
    takes a slow path.  Measured for ``cnn16`` on MNIST, one thread: a training step (batch 32) costs
    0.6-0.7x the NCHW one and an evaluation pass (batch 512) 0.4x.  Inputs need no conversion: the
    weights' layout propagates.

    Pooling before the ReLU (:func:`pool_before_relu`) gives the same outputs and gradients bit for bit, in
    either layout, and the ReLU and its backward pass then touch a quarter of the elements."""
    pool_before_relu(model)
    return model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def pool_before_relu(model: nn.Module) -> nn.Module:
    """Swap every ``ReLU`` directly followed by a ``MaxPool2d`` in an ``nn.Sequential`` of ``model`` (in place;
    returns it).  ReLU is monotone, so max-pooling commutes with it: ``pool(relu(x)) == relu(pool(x))``
    exactly, and the gradient reaches the same input position (the window's first maximum; none where the
    maximum is <= 0) in either order.  Parameter and state-dict names are unchanged (neither module has
    any).  O(modules)."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        i = 0
        while i < len(seq) - 1:
            relu, pool = seq[i], seq[i + 1]
            if isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d) and not pool.return_indices:
                seq[i], seq[i + 1] = pool, relu
                i += 1
            i += 1
    return model


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_of(model).items()}


def state_of(model: nn.Module) -> dict[str, np.ndarray]:
    """Float entries of the state dict as numpy (``num_batches_tracked`` is not exchanged)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}


def load_state(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            sd[k].copy_(torch.as_tensor(np.asarray(v)).reshape(sd[k].shape))
    return model


def dirichlet_split(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator,
                    min_size: int = 2, max_tries: int = 100) -> list[np.ndarray]:
    """Non-IID label split: for each class, client shares ~ Dirichlet(α · 1) (Hsu et al. 2019).

    Parameters
    ----------
    labels : int array (n,)
    n_clients : int >= 1, at most n / min_size
    alpha : float > 0 (smaller = more skewed)
    rng : numpy Generator
    min_size : every client gets at least this many samples (resampled up to ``max_tries`` times)

    Returns a list of ``n_clients`` sorted int64 index arrays partitioning ``range(n)``.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    n_clients = check_int(n_clients, "n_clients", low=1)
    alpha = check_float(alpha, "alpha", low=0.0, low_inclusive=False)
    if n_clients * min_size > n:
        raise ValueError(f"n_clients={n_clients} needs at least {n_clients * min_size} samples "
                         f"({min_size} each) but only {n} are given; use fewer clients or more data")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha))) * idx.size).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(o.size for o in out) >= min_size:
            return out
    raise ValueError(f"could not give every one of {n_clients} clients >= {min_size} samples with alpha={alpha} "
                     f"in {max_tries} draws; raise alpha or lower n_clients")


@dataclass(frozen=True)
class FederatedData:
    """One federated split: client partitions (tensors), a small server-side public batch, a test set."""

    clients: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    public: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int
    input_shape: tuple[int, int, int]


@functools.lru_cache(maxsize=4)
def federated_data(dataset: str, n_train: int, n_clients: int, alpha: float, seed: int,
                   n_public: int = 128, n_test: int = 0) -> FederatedData:
    """Load ``dataset`` and split ``n_train`` random training images over ``n_clients`` (Dirichlet α).

    Server and every client call this with the same arguments and get the same split (a pure function
    of its arguments, cached per process).  ``n_public`` further training images, disjoint from the
    clients', form the server's public batch (SNIP); ``n_test`` > 0 subsamples the test set.
    """
    from reprozoo.datasets import load_cifar10_subset, load_mnist

    if dataset == "MNIST":
        ds = load_mnist()
    elif dataset == "CIFAR-10-subset":
        ds = load_cifar10_subset()
    else:
        raise ValueError(f"dataset={dataset!r} is not valid; choose one of {DATASETS}")
    x, y = ds.tensors("train")
    xt, yt = ds.tensors("test")
    n_train = check_int(n_train, "n_train", low=1)
    if n_public >= len(y):
        raise ValueError(f"n_public={n_public} should be below the {len(y)} training images of {dataset}")
    n_train = min(n_train, len(y) - n_public)  # e.g. the 10k CIFAR subset: all but the public batch
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    pool, pub = perm[:n_train], perm[n_train:n_train + n_public]
    # normalise with the client pool's statistics (per channel)
    mean = x[pool].mean(dim=(0, 2, 3), keepdim=True)
    std = x[pool].std(dim=(0, 2, 3), keepdim=True)
    x = (x - mean) / std
    xt = (xt - mean) / std
    parts = dirichlet_split(y[pool].numpy(), n_clients, alpha, rng)
    clients = tuple((x[pool[p]].contiguous(), y[pool[p]].contiguous()) for p in parts)
    if n_test and n_test < len(yt):
        sel = rng.permutation(len(yt))[:n_test]
        xt, yt = xt[sel], yt[sel]
    return FederatedData(clients, (x[pub], y[pub]), (xt, yt), ds.n_classes, ds.shape)


# -- local computations -------------------------------------------------------------------------
def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator | None, shuffle: bool = True):
    """Mini-batches of ``(x, y)``; the order is drawn on the CPU from ``gen`` (the same on every device) and
    moved to the data's device once per pass."""
    n = len(y)
    order = (torch.randperm(n, generator=gen) if shuffle else torch.arange(n)).to(y.device)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def local_train(model: nn.Module, mask: Mask | None, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
                batch_size: int, lr: float, momentum: float, weight_decay: float, gen: torch.Generator) -> float:
    """Masked local SGD (pruned weights stay exactly 0); returns the mean training loss.

    ``model``, ``mask``, ``x`` and ``y`` on one device; the loss sum stays there (float64, one host sync at
    the end).  O(epochs · n) forward and backward passes."""
    model.train()
    # foreach: the same update, bit for bit, in a few C++ loops instead of four Python-dispatched ops per tensor
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)
    handles = mask.attach(model, opt) if mask is not None else ()
    total, count = torch.zeros((), dtype=torch.float64, device=y.device), 0
    try:
        for _ in range(epochs):
            for xb, yb in _batches(x, y, batch_size, gen):
                if len(yb) < 2:  # BN needs > 1 sample per channel
                    continue
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                total += loss.detach().double() * len(yb)
                count += len(yb)
    finally:
        for h in handles:
            h.remove()
    return float(total) / max(count, 1)


@torch.no_grad()
def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy in percent) of ``model`` in eval mode; ``model``, ``x``, ``y`` on one
    device.

    Sums stay on the device (loss in float64, one host sync at the end)."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=y.device)
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for xb, yb in _batches(x, y, batch_size, None, shuffle=False):
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    return float(loss) / len(y), 100.0 * (int(correct) / len(y))


def layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str], *, batch_size: int,
                    n_batches: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Dense gradient of the mean loss over ``n_batches`` random batches w.r.t. the weights ``layers``
    (only these require grad: the transient dense gradient is of the adjusted layer(s) only)."""
    params = dict(model.named_parameters())
    req = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in layers)
        p.grad = None
    model.train()
    try:
        it = _batches(x, y, batch_size, gen)
        used = 0
        for _ in range(n_batches):
            try:
                xb, yb = next(it)
            except StopIteration:
                break
            if len(yb) < 2:
                break
            F.cross_entropy(model(xb), yb).div(n_batches).backward()
            used += 1
        if used == 0:
            raise ValueError("no batch of >= 2 samples to compute the growth gradient on")
        return {n: params[n].grad.detach().clone() for n in layers}
    finally:
        for n, p in params.items():
            p.requires_grad_(req[n])
            p.grad = None


# -- the protocol, one function per message ------------------------------------------------------
def _unprefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


@functools.lru_cache(maxsize=8)
def _working_model(arch: str, n_classes: int, in_chans: int, input_hw: tuple[int, int], device: str,
                   channels_last: bool = True):
    """The model a client process works on, on ``device`` in the given layout (:func:`on_device`; every
    message overwrites all its exchanged entries), the shapes of those entries and the cost model: built
    and moved once per process."""
    keep_freed_memory()
    model = build_model(arch, n_classes, in_chans, 0)
    shapes, cost = model_shapes(model), CostModel.from_model(model, (in_chans, *input_hw))
    return on_device(model, device, channels_last), shapes, cost


@functools.lru_cache(maxsize=1)
def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Let this process's C allocator keep freed memory for reuse (glibc ``mallopt``; once per process, in
    every process that trains clients); returns whether it was applied (False off glibc).

    A training step of ``cnn16`` at batch 32 allocates and frees a few MB of feature maps (1.6 MB per
    28x28x16 map).  With glibc's defaults the freed top of the heap beyond its trim threshold goes back to
    the kernel and the next step faults the same pages in again (about 330 page faults a step, measured):
    blocks below ``mmap_threshold`` now come from the heap and up to ``trim_threshold`` bytes of free heap
    are kept, so a step reuses its memory.  Measured in a loop of training steps: about 330 page faults a
    step fewer and 10-15 % less CPU time (less within a federated run, where other allocations come
    between the steps); no number changes (allocation only).  Blocks of ``mmap_threshold`` and more are still mapped and
    returned when freed, so the process keeps at most ``trim_threshold`` bytes it does not use."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no tunable thresholds)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(mallopt(m_trim_threshold, int(trim_threshold)))


@functools.lru_cache(maxsize=4)
def _partitions(dataset: str, n_train: int, n_clients: int, alpha: float, seed: int,
                device: str) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Every client partition of the split on ``device``, moved once per process (a simulation worker
    serves several partitions)."""
    data = federated_data(dataset, n_train, n_clients, alpha, seed)
    return tuple((x.to(device), y.to(device)) for x, y in data.clients)


def eval_order(n_test_total: int, n_test: int, seed: int) -> torch.Tensor:
    """The run's evaluation order of the test set: a seeded permutation, cut to ``n_test`` (0 = all).  The
    server evaluates on it; with federated evaluation, client k of K evaluates rows ``order[k::K]``, so the
    clients' shards together are the server's test set."""
    order = torch.randperm(n_test_total, generator=torch.Generator().manual_seed(seed))
    return order[:n_test] if n_test else order


def handle(action: str, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
           partition_id: int, num_partitions: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run one protocol step on client ``partition_id`` of ``num_partitions`` (a node's own settings: its
    node config in a deployment); returns ``(arrays, metrics)`` to send back.

    Actions
    -------
    ``bnstats``: for each of ``n-candidates`` packed candidates ``c{i}/...``, the per-BN-layer
        (mean, var) of its inputs on up to ``abns-samples`` local samples (forward only, BN in train mode).
    ``losses``: for each candidate, with the merged statistics ``c{i}/<bn>.running_mean/var`` written in,
        the mean loss on the same samples (eval mode); metric ``loss-{i}``.
    ``train``: unpack the sparse model, masked local SGD, and in an adjustment round the top-K buffer of
        the pruned positions of each layer in ``adjust-layers`` (``grad/<name>/idx`` and ``.../val``).
    ``evaluate``: the received model's summed loss and correct predictions on this client's shard of the
        first ``eval-n`` test images (:func:`eval_order`); metrics ``loss-sum``, ``correct``, ``num-examples``.

    The data split is the Dirichlet split of ``n-train`` images over ``num_partitions`` clients (seeded by
    the run's ``seed``): a pure function of them, so every node computes its own shard.
    """
    c = config
    fail_here = int(c.get(Keys.FAIL_CLIENT, -1)) == partition_id
    if fail_here and int(c.get(Keys.FAIL_ROUND, -1)) == int(c.get(Keys.ROUND, 0)):
        raise RuntimeError(f"injected failure in round {c.get(Keys.ROUND)}")
    if int(c.get(Keys.THREADS, 0)) > 0:
        torch.set_num_threads(int(c[Keys.THREADS]))
    device = str(resolve_device(str(c.get(Keys.DEVICE, "cpu"))))  # "auto": this client's own choice
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id={partition_id} outside [0, num_partitions={num_partitions})")
    split = (str(c[Keys.DATASET]), int(c[Keys.N_TRAIN]), int(num_partitions), float(c[Keys.ALPHA]),
             int(c[Keys.SEED]))
    data = federated_data(*split)
    x, y = _partitions(*split, device)[partition_id]
    in_chans, h, w = data.input_shape
    model, shapes, cost = _working_model(str(c[Keys.ARCH]), data.n_classes, in_chans, (h, w), device,
                                         bool(c.get(Keys.CHANNELS_LAST, True)))
    gen = torch.Generator().manual_seed(int(c[Keys.SEED]) * 100_003 + int(c.get(Keys.ROUND, 0)) * 101 + partition_id)
    n_abns = min(len(y), int(c.get(Keys.ABNS_SAMPLES, len(y))))
    metrics: dict[str, float] = {Keys.NUM_EXAMPLES: float(len(y)), Keys.PARTITION: float(partition_id)}
    out: dict[str, np.ndarray] = {}

    if action in (Keys.BN_STATS, Keys.LOSSES):
        xs, ys = x[:n_abns], y[:n_abns]
        batch = int(c[Keys.BATCH])
        metrics[Keys.NUM_EXAMPLES] = float(n_abns)
        flops = 0.0
        for i in range(int(c[Keys.N_CAND])):
            state, masks = unpack_state(_unprefix(arrays, Keys.candidate(i)), shapes)
            load_state(model, state)
            nnz = {n: int(m.sum()) for n, m in masks.items()}
            flops += cost.forward_flops(nnz) * n_abns
            if action == Keys.BN_STATS:
                stats = client_bn_stats(model, (xb for xb, _ in _batches(xs, ys, batch, None, shuffle=False)))
                for layer, (mu, var, n) in stats.items():
                    out[Keys.bn_mean(i, layer)] = mu
                    out[Keys.bn_var(i, layer)] = var
                    metrics[Keys.bn_count(layer)] = float(n)
            else:
                metrics[Keys.candidate_loss(i)] = mean_loss(model, xs, ys, batch)[0]
        metrics[Keys.FLOPS] = flops
        return out, metrics

    if action == Keys.EVALUATE:
        state, _ = unpack_state(arrays, shapes)
        load_state(model, state)
        xt, yt = data.test
        rows = eval_order(len(yt), int(c.get(Keys.N_TEST, 0)), int(c[Keys.SEED]))
        rows = rows[:int(c.get(Keys.EVAL_N, len(rows)))][partition_id::num_partitions]
        xs, ys = xt[rows].to(device), yt[rows].to(device)
        loss, acc = mean_loss(model, xs, ys) if len(ys) else (0.0, 0.0)
        return {}, {Keys.NUM_EXAMPLES: float(len(ys)), Keys.LOSS_SUM: loss * len(ys),
                    Keys.CORRECT: float(round(acc * len(ys) / 100.0)), Keys.PARTITION: float(partition_id)}

    if action != Keys.TRAIN:
        raise ValueError(f"unknown action {action!r}; valid: {Keys.BN_STATS}, {Keys.LOSSES}, {Keys.TRAIN}, "
                         f"{Keys.EVALUATE}")
    dense = bool(c.get(Keys.DENSE, False))
    state, masks = unpack_state(arrays, shapes)
    load_state(model, state)
    mask = None if dense else Mask({n: torch.from_numpy(m).to(device) for n, m in masks.items()})
    epochs, batch = int(c[Keys.EPOCHS]), int(c[Keys.BATCH])
    metrics[Keys.LOSS] = local_train(model, mask, x, y, epochs=epochs, batch_size=batch, lr=float(c[Keys.LR]),
                                     momentum=float(c[Keys.MOMENTUM]), weight_decay=float(c[Keys.WD]), gen=gen)
    nnz = None if dense else {n: int(m.sum()) for n, m in masks.items()}
    flops = cost.train_flops(nnz, len(y), epochs)
    trained = state_of(model)  # sent back; the growth-gradient passes below must not touch BN running stats
    layers = [str(s) for s in c.get(Keys.ADJ_LAYERS, [])]
    ks = [int(k) for k in c.get(Keys.ADJ_K, [])]
    adjust = {}
    if layers and not dense:
        n_gb = int(c.get(Keys.GRAD_BATCHES, 1))
        grads = layer_gradients(model, x, y, layers, batch_size=batch, n_batches=n_gb, gen=gen)
        for name, k in zip(layers, ks, strict=True):
            idx, val = topk_pruned_gradient(grads[name], mask.masks[name], k)
            out[Keys.grad_idx(name)] = idx
            out[Keys.grad_val(name)] = val
            adjust[name] = k
        del grads
        n_gs = min(len(y), n_gb * batch)
        flops += 2.0 * cost.forward_flops(nnz) * n_gs + cost.dense_grad_flops(layers, n_gs)
    metrics[Keys.FLOPS] = flops
    mem = cost.memory_bytes(nnz, batch, adjust or None)
    metrics[Keys.MEM] = mem["total"]
    metrics[Keys.MEM_STATE] = mem["params"] + mem["grads"] + mem["optimizer"] + mem["adjust_buffer"]
    out.update(pack_state(trained, None if dense else masks, send_mask=False))
    return out, metrics


def apply_merged_stats(model: nn.Module, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> nn.Module:
    """Server helper: write merged (mean, var) per BN layer into ``model`` (see :func:`set_bn_stats`)."""
    return set_bn_stats(model, stats)
