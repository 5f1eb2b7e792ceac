"""Full-batch transductive training of dense and untrained-ticket node classifiers.

One loop serves the three methods of the paper's comparison (reference
``models/supervised_learning.py``):

* **UGT**: only the scores are optimised (AdamW, lr 0.01, weight decay 0), the masks follow a
  sparsity schedule (linear ramp over the first half by default), validation and test are read
  at the final sparsity;
* **Edge-Popup**: the same with per-layer thresholds and no ramp (``ConstantSparsitySchedule``);
* **dense**: every weight is trained (Adam with weight decay, dropout in the model).

In all three the epoch with the best validation accuracy is kept (its parameters are restored)
and only then is test accuracy read.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprozoo.core.checks import check_float, check_int
from reprozoo.ugt.models import check_graph
from reprozoo.ugt.schedule import ConstantSparsitySchedule, LinearSparsitySchedule, _Schedule
from reprozoo.ugt.sparse import current_sparsity, layer_sparsities, score_parameters, set_sparsity

__all__ = [
    "FitResult", "prepare_inputs", "check_model_dtype", "fit_node_classifier", "fit_node_classifier_minibatch",
    "evaluate_accuracy", "is_ugt_model",
]


@dataclass
class FitResult:
    """What :func:`fit_node_classifier` returns (the model itself is left at its best epoch).

    Attributes: ``best_epoch`` (0-based), ``train_acc``/``val_acc``/``test_acc`` in percent (0-100) at that
    epoch, ``epochs`` run, ``seconds`` of wall time, ``sparsity`` actually reached (fraction of
    scored weights removed; 0 for dense models), ``layer_sparsity`` per masked tensor, and
    ``history`` (per epoch: ``loss``, ``val_acc`` in percent, ``sparsity`` used for the training step).
    """

    best_epoch: int
    train_acc: float
    val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    sparsity: float = 0.0
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


def is_ugt_model(model: nn.Module) -> bool:
    """True if ``model`` was converted by :func:`~reprozoo.ugt.sparse.sparsify_`."""
    return getattr(model, "_ugt_state", None) is not None


def prepare_inputs(x: Tensor, edge_index: Tensor, *, sparse_features: bool | None = None) -> tuple[Tensor, Tensor]:
    """Validate ``(x, edge_index)`` and return the fast forms used in training: ``(x', adj_t)``.

    ``x'`` is ``x`` as a CSR tensor when ``sparse_features`` (default: when under 10 % of the
    entries are non-zero, as for bag-of-words features), else ``x``; ``adj_t`` is the (N, N) CSR
    adjacency with rows = targets (PyG's ``adj_t``), equivalent to ``edge_index`` in every conv.
    ``adj_t`` holds values of ``x.dtype`` (float32, float64, ...), so the models run in any
    floating dtype (a sparse ``edge_index`` given with another dtype is cast to ``x.dtype``).
    """
    check_graph(x, edge_index)
    from torch_geometric.utils import to_torch_csr_tensor

    n = int(x.shape[0])
    if sparse_features is None:
        sparse_features = x.layout == torch.strided and float((x != 0).float().mean()) < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        if sparse_features and x.layout == torch.strided:
            x = x.to_sparse_csr()
        if edge_index.layout == torch.strided:
            ones = torch.ones(edge_index.shape[1], dtype=x.dtype, device=edge_index.device)
            edge_index = to_torch_csr_tensor(edge_index.flip(0), ones, size=(n, n))
        elif edge_index.dtype != x.dtype:
            edge_index = edge_index.to(x.dtype)
    return x, edge_index


def check_model_dtype(model: nn.Module, x: Tensor) -> None:
    """Raise ``TypeError`` naming ``x`` unless it has the floating dtype of ``model``'s parameters.

    Models are dtype-agnostic (``model.double()`` works) but inputs are not cast silently: a
    float32 model given float64 features (or the reverse) is a caller error, fixed by
    ``x.to(dtype)`` or ``model.to(x.dtype)``. Models without floating parameters are not checked.
    """
    p = next((q for q in model.parameters() if q.is_floating_point()), None)
    if p is not None and isinstance(x, Tensor) and x.is_floating_point() and x.dtype != p.dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters are {p.dtype}; pass x with dtype {p.dtype} "
            f"(x.to({p.dtype})) or convert the model with model.to({x.dtype})"
        )


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: Tensor, adj: Tensor, y: Tensor, masks: list[Tensor]) -> list[float]:
    """Accuracy in percent (0-100) of ``model`` (eval mode, current sparsity target) on each boolean node mask."""
    return [100.0 * a for a in _accuracies(model, x, adj, y, masks).tolist()]


@torch.no_grad()
def _accuracies(model: nn.Module, x: Tensor, adj: Tensor, y: Tensor, masks: list[Tensor]) -> Tensor:
    """Accuracies as fractions (len(masks),) float32 on the model's device: no host sync (a boolean index would
    need one)."""
    model.eval()
    hit = model(x, adj).argmax(dim=1) == y
    return torch.stack([(hit & m).sum() / m.sum() for m in masks])


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the trainable parameters (the frozen ones never change, so they are not copied)."""
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _keep_if(snap: dict[str, Tensor], model: nn.Module, better: Tensor) -> None:
    """``snap <- model's parameters`` where the 0-d bool ``better`` is true, on the device (no host sync)."""
    params = dict(model.named_parameters())
    for k, v in snap.items():
        torch.where(better, params[k], v, out=v)


@torch.no_grad()
def _restore(model: nn.Module, snap: dict[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    for k, v in snap.items():
        params[k].copy_(v)


def _check_targets(model: nn.Module, y: Tensor, n: int, train_mask: Tensor, val_mask: Tensor,
                   test_mask: Tensor) -> None:
    """``ValueError`` / ``TypeError`` for labels and masks that cannot serve ``n`` nodes (see
    :func:`fit_node_classifier`)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"y should be an int64 tensor of shape ({n},), got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"y should be an int64 tensor of shape ({n},), got dtype {y.dtype} and shape "
                        f"{tuple(y.shape)}; pass y.long()")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"y should be an int64 tensor of shape ({n},), got dtype {y.dtype} and shape "
                         f"{tuple(y.shape)}")
    n_out = getattr(model, "out_channels", None)
    if int(y.min()) < 0 or (n_out is not None and int(y.max()) >= n_out):
        raise ValueError(f"y holds labels in [{int(y.min())}, {int(y.max())}] but the model has {n_out} outputs")
    for name, m in (("train_mask", train_mask), ("val_mask", val_mask), ("test_mask", test_mask)):
        if not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != (n,):
            raise ValueError(f"{name} should be a bool tensor of shape ({n},)")
        if not bool(m.any()):
            raise ValueError(f"{name} selects no node")
    check_distinct_masks(train_mask, val_mask, test_mask)


def check_distinct_masks(train_mask: Tensor, val_mask: Tensor, test_mask: Tensor) -> None:
    """Raise a ValueError naming the two masks when two of train / validation / test select the same nodes."""
    for (a, ma), (b, mb) in ((("train_mask", train_mask), ("val_mask", val_mask)),
                             (("train_mask", train_mask), ("test_mask", test_mask)),
                             (("val_mask", val_mask), ("test_mask", test_mask))):
        if torch.equal(ma, mb):  # model selection or the test would read the training nodes only
            raise ValueError(f"{a} and {b} select the same nodes; give disjoint train / validation / test "
                             "masks (validation picks the epoch, the test is read once)")


def _optimiser(model: nn.Module, epochs: int, lr: float, weight_decay: float | None,
               schedule: _Schedule | None) -> tuple[bool, float, _Schedule | None, torch.optim.Optimizer]:
    """``(is UGT, final sparsity, schedule, optimiser)``: AdamW on the scores (UGT) or Adam on every trainable
    parameter (dense), with the defaults of :func:`fit_node_classifier`."""
    ugt = is_ugt_model(model)
    if ugt:
        final = model._ugt_state.sparsity
        if schedule is None:
            schedule = LinearSparsitySchedule(final, epochs)
        wd = 0.0 if weight_decay is None else check_float(weight_decay, "weight_decay", low=0.0)
        return True, schedule.final, schedule, torch.optim.AdamW(list(score_parameters(model)), lr=lr,
                                                                 weight_decay=wd)
    if schedule is not None and not isinstance(schedule, ConstantSparsitySchedule):
        raise ValueError("schedule is only meaningful for a UGT model (converted with sparsify_)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameter")
    wd = 5e-4 if weight_decay is None else check_float(weight_decay, "weight_decay", low=0.0)
    return False, 0.0, schedule, torch.optim.Adam(params, lr=lr, weight_decay=wd)


def fit_node_classifier(
    model: nn.Module,
    x: Tensor,
    edge_index: Tensor,
    y: Tensor,
    train_mask: Tensor,
    val_mask: Tensor,
    test_mask: Tensor,
    *,
    epochs: int = 400,
    lr: float = 0.01,
    weight_decay: float | None = None,
    schedule: _Schedule | None = None,
    weight_l1: float = 0.0,
) -> FitResult:
    """Train ``model`` full-batch on ``train_mask``, keep the best-validation epoch, then read test accuracy.

    Parameters
    ----------
    model : nn.Module
        A dense model (all trainable parameters are optimised with Adam) or a UGT model from
        :func:`~reprozoo.ugt.sparse.sparsify_` (only scores, AdamW with weight decay 0, as the
        reference ``score_only`` mode).
    x : Tensor (N, F) float, of the model's parameter dtype (float32 by default; float64 after
        ``model.double()``); edge_index : Tensor (2, E) int64 or sparse (N, N) adj_t
    y : Tensor (N,) int64 in [0, C)
    train_mask, val_mask, test_mask : Tensor (N,) bool, each non-empty
    epochs : int, default 400
    lr : float, default 0.01
    weight_decay : float, optional
        Default 0 for UGT models (reference), 5e-4 for dense ones (Kipf & Welling).
    schedule : callable epoch -> sparsity, optional (UGT models only)
        Default :class:`LinearSparsitySchedule` to the model's current target over ``epochs``.
        Validation/test use ``schedule.final``.
    weight_l1 : float, default 0
        Weight of the reference's optional ``Σ_l mean(sigmoid(S_l))`` penalty (UGT only).

    Returns
    -------
    FitResult (``model`` is left holding its best-validation state)

    Raises
    ------
    ValueError / TypeError for inconsistent shapes, empty masks, labels out of range, bad numbers;
    TypeError when ``x``'s dtype differs from the model's parameters (no silent cast) or ``y`` is
    not int64 (the message reports ``y``'s dtype and shape).

    Notes
    -----
    Cost per epoch: one forward + backward at the training sparsity and one forward at the
    final sparsity; mask refresh O(#scores) (``kthvalue``); keeping the best epoch O(#trainable).
    Runs on the device of ``model`` and the tensors (pass them on the same device); the epoch loop
    reads nothing back to the host, the history is read once at the end.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be a torch.nn.Module, got {type(model).__name__}")
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_float(lr, "lr", low=0.0, low_inclusive=False)
    weight_l1 = check_float(weight_l1, "weight_l1", low=0.0)
    x, adj = prepare_inputs(x, edge_index)
    check_model_dtype(model, x)
    n = int(x.shape[0])
    _check_targets(model, y, n, train_mask, val_mask, test_mask)
    ugt, final, schedule, opt = _optimiser(model, epochs, lr, weight_decay, schedule)
    params = list(opt.param_groups[0]["params"])

    # Everything below stays on the data's device: the best epoch is tracked as tensors and the
    # best parameters are kept with torch.where, so the loop never waits for the device.
    train_idx = train_mask.nonzero().flatten()  # indexing by position needs no host sync in the loop
    y_train = y[train_idx]
    best_val = torch.full((), -1.0, device=y.device)
    best_epoch = torch.full((), -1, dtype=torch.int64, device=y.device)
    best_state = _snapshot(model)
    losses: list[Tensor] = []
    val_accs: list[Tensor] = []
    hist: dict[str, list[float]] = {"loss": [], "val_acc": [], "sparsity": []}
    t0 = time.perf_counter()
    for epoch in range(epochs):
        # -- one full-batch step at the scheduled sparsity s_t (UGT Sec. 3.2) ------------------
        model.train()
        s_t = schedule(epoch) if ugt else 0.0
        if ugt:
            set_sparsity(model, s_t)
        out = model(x, adj)
        loss = F.cross_entropy(out[train_idx], y_train)
        if ugt and weight_l1 > 0:
            loss = loss + weight_l1 * sum(torch.sigmoid(s).mean() for s in params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # -- validation at the final sparsity; keep the best (first best) epoch ---------------
        if ugt:
            set_sparsity(model, final)
        val_acc = _accuracies(model, x, adj, y, [val_mask])[0]
        losses.append(loss.detach())
        val_accs.append(val_acc)
        hist["sparsity"].append(s_t)
        better = val_acc > best_val
        best_val = torch.where(better, val_acc, best_val)
        best_epoch = torch.where(better, epoch, best_epoch)
        _keep_if(best_state, model, better)
    hist["loss"] = torch.stack(losses).tolist()  # one read-back per fit (waits for the device)
    hist["val_acc"] = [100.0 * a for a in torch.stack(val_accs).tolist()]  # percent, as evaluate_accuracy
    seconds = time.perf_counter() - t0
    _restore(model, best_state)
    train_acc, val_acc, test_acc = evaluate_accuracy(model, x, adj, y, [train_mask, val_mask, test_mask])
    return FitResult(
        best_epoch=int(best_epoch), train_acc=train_acc, val_acc=val_acc, test_acc=test_acc, epochs=epochs,
        seconds=seconds, sparsity=current_sparsity(model) if ugt else 0.0,
        layer_sparsity=layer_sparsities(model) if ugt else {}, history=hist,
    )


@torch.no_grad()
def _sampled_accuracy(model: nn.Module, loader, device: torch.device) -> Tensor:
    """Accuracy (a 0-d fraction on ``device``) of ``model`` on the seed nodes of every batch of ``loader``."""
    model.eval()
    hits = torch.zeros((), device=device)
    total = 0
    for batch in loader:
        batch = batch.to(device)
        pred = model(batch.x, batch.edge_index)[:batch.batch_size].argmax(dim=1)
        hits += (pred == batch.y[:batch.batch_size]).sum()
        total += batch.batch_size
    return hits / total


def fit_node_classifier_minibatch(
    model: nn.Module,
    x: Tensor,
    edge_index: Tensor,
    y: Tensor,
    train_mask: Tensor,
    val_mask: Tensor,
    test_mask: Tensor,
    *,
    num_neighbors: Sequence[int] = (10, 10),
    batch_size: int = 512,
    epochs: int = 400,
    lr: float = 0.01,
    weight_decay: float | None = None,
    schedule: _Schedule | None = None,
    weight_l1: float = 0.0,
    generator: torch.Generator | None = None,
    sampler: str = "auto",
) -> FitResult:
    """:func:`fit_node_classifier` on sampled neighbourhoods, for graphs too large for full-batch training.

    Each epoch visits the training nodes in shuffled mini-batches of ``batch_size`` seeds; each batch is
    the ``len(num_neighbors)``-hop neighbourhood sampled by PyG's ``NeighborLoader``
    (:func:`~reprozoo.ugt.sampler.neighbor_loader`; the pure-torch sampler when ``pyg-lib`` is absent), and
    the loss is read on the seeds. A UGT model takes its sparsity ``s_t`` from ``schedule`` once per epoch
    and its masks are refreshed after every step (one global threshold over all scores, O(#scores)).
    Validation (every epoch, at the final sparsity) and the final train / validation / test accuracies are
    read on sampled neighbourhoods too (the same fan-outs), each node once; the best-validation epoch is
    kept as in full-batch training. An addition of ours: the paper trains full-batch only.

    Parameters as :func:`fit_node_classifier` (``x`` dense (N, F), ``edge_index`` (2, E)), plus
    ``num_neighbors`` (neighbours per node at each hop, -1 = all; the model should have as many layers),
    ``batch_size`` (seed nodes per batch), ``generator`` (CPU generator of the shuffling and sampling;
    default torch's global one) and ``sampler`` (``"auto"``, ``"torch"``, ``"pyg"``). The model runs on
    its own device; batches are sampled on the CPU and moved there.

    Cost per epoch: O(B · Π fan-outs) sampled nodes per batch of B seeds, one forward/backward each.
    """
    from torch_geometric.data import Data

    from reprozoo.ugt.sampler import neighbor_loader

    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be a torch.nn.Module, got {type(model).__name__}")
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_float(lr, "lr", low=0.0, low_inclusive=False)
    weight_l1 = check_float(weight_l1, "weight_l1", low=0.0)
    check_graph(x, edge_index)
    if x.layout != torch.strided or edge_index.layout != torch.strided:
        raise ValueError("x should be a dense (N, F) tensor and edge_index a (2, E) tensor for mini-batch training")
    check_model_dtype(model, x)
    n = int(x.shape[0])
    _check_targets(model, y, n, train_mask, val_mask, test_mask)
    ugt, final, schedule, opt = _optimiser(model, epochs, lr, weight_decay, schedule)
    params = list(opt.param_groups[0]["params"])
    device = next(model.parameters()).device
    data = Data(x=x.cpu(), edge_index=edge_index.cpu(), y=y.cpu(), num_nodes=n)

    def loader(mask: Tensor, shuffle: bool):
        return neighbor_loader(data, num_neighbors, input_nodes=mask.cpu(), batch_size=batch_size,
                               shuffle=shuffle, generator=generator, sampler=sampler)

    train_loader, val_loader = loader(train_mask, True), loader(val_mask, False)
    n_train = int(train_mask.sum())
    best_val = torch.full((), -1.0, device=device)
    best_epoch = torch.full((), -1, dtype=torch.int64, device=device)
    best_state = _snapshot(model)
    losses: list[Tensor] = []
    val_accs: list[Tensor] = []
    hist: dict[str, list[float]] = {"loss": [], "val_acc": [], "sparsity": []}
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        s_t = schedule(epoch) if ugt else 0.0
        if ugt:
            set_sparsity(model, s_t)
        total = torch.zeros((), device=device)
        for batch in train_loader:  # one step per mini-batch of seed nodes
            batch = batch.to(device)
            out = model(batch.x, batch.edge_index)[:batch.batch_size]
            loss = F.cross_entropy(out, batch.y[:batch.batch_size])
            if ugt and weight_l1 > 0:
                loss = loss + weight_l1 * sum(torch.sigmoid(s).mean() for s in params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * batch.batch_size
        if ugt:
            set_sparsity(model, final)
        val_acc = _sampled_accuracy(model, val_loader, device)
        losses.append(total / n_train)
        val_accs.append(val_acc)
        hist["sparsity"].append(s_t)
        better = val_acc > best_val
        best_val = torch.where(better, val_acc, best_val)
        best_epoch = torch.where(better, epoch, best_epoch)
        _keep_if(best_state, model, better)
    hist["loss"] = torch.stack(losses).tolist()
    hist["val_acc"] = [100.0 * a for a in torch.stack(val_accs).tolist()]
    seconds = time.perf_counter() - t0
    _restore(model, best_state)
    train_acc, val_acc, test_acc = (100.0 * float(_sampled_accuracy(model, loader(m, False), device))
                                    for m in (train_mask, val_mask, test_mask))
    return FitResult(
        best_epoch=int(best_epoch), train_acc=train_acc, val_acc=val_acc, test_acc=test_acc, epochs=epochs,
        seconds=seconds, sparsity=current_sparsity(model) if ugt else 0.0,
        layer_sparsity=layer_sparsities(model) if ugt else {}, history=hist,
    )


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy (UGT state and hooks included)."""
    return copy.deepcopy(model)
