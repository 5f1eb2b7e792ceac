"""Score-masked layers with frozen random weights (UGT, Huang et al., LoG 2022, Sec. 3).

A masked weight is ``W ⊙ m`` where ``W`` is frozen at its random initialisation and the binary
mask ``m = 1[S > τ]`` comes from a learnable score tensor ``S`` of the same shape. ``τ`` is
either one **global** threshold over the scores of every masked tensor of the model (UGT) or one
threshold per tensor (Edge-Popup, Ramanujan et al., CVPR 2020). The forward pass uses ``W ⊙ m``;
the backward pass treats the mask as the identity (straight-through estimator), so
``∂L/∂S = ∂L/∂(W ⊙ m) ⊙ W`` (paper Sec. 3.1; reference ``GetSubnet`` in ``sparse_modules.py``).

Sparsity ``s`` is the fraction of weights **removed** (``s = 0`` keeps all, ``s = 0.9`` keeps 10 %).
Exactly ``round(s · n)`` of the ``n`` scored entries are removed; ties at the threshold follow the
project's tie rule (:mod:`reprozoo.sparsity`: the tied entries with the lowest flat index are removed
first). The reference code removes ``round(s · (n − 1))`` via ``kthvalue``: at most one weight of
difference.

The model-level entry point is :func:`sparsify_`, which turns a PyTorch / PyG model into a
UGT model in place: every ``Linear`` (``torch.nn.Linear`` or ``torch_geometric.nn.Linear``)
becomes a :class:`SparseLinear`, bare attention vectors of ``GATConv`` get a :class:`ScoreMask`
parametrisation, every other parameter is frozen, and a forward pre-hook recomputes the masks
whenever the scores or the target sparsity changed.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from reprozoo.core.checks import check_int
from reprozoo.core.versions import version_key
from reprozoo.sparsity import (
    check_sparsity,
    density_report,
    global_topk_keep,
    topk_keep,
    topk_threshold,
    warn_empty_layers,
)

__all__ = [
    "MASK_MODES",
    "WEIGHT_INITS",
    "ScoreMask",
    "SparseLinear",
    "current_sparsity",
    "global_threshold",
    "init_weight_",
    "layer_sparsities",
    "linear_forward",
    "masked_modules",
    "refresh_masks",
    "reset_ticket_",
    "score_parameters",
    "set_sparsity",
    "sparsify_",
]

MASK_MODES = ("global", "layerwise")
#: what the masks rank: the raw scores (UGT reference code, ``GetSubnet(scores, threshold)``) or their absolute
#: values (Edge-Popup, Ramanujan et al. CVPR 2020, ``GetSubnet.apply(self.scores.abs(), k)``)
SCORE_RANKS = ("raw", "abs")
WEIGHT_INITS = ("kaiming_uniform", "kaiming_normal", "signed_constant")


# -- initialisation ------------------------------------------------------------------------------
def init_weight_(tensor: Tensor, mode: str = "kaiming_uniform", *, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place with the reference code's random init (``SparseModule.init_param_``).

    ``kaiming_uniform``: U(-b, b), ``b = sqrt(6 / fan_in)`` (ReLU gain, ``mode="fan_in"``);
    ``kaiming_normal``: N(0, 2 / fan_in); ``signed_constant``: ``±sqrt(2 / fan_in)`` with random
    signs (Ramanujan et al. 2020). ``fan_in`` is ``tensor.shape[1] * prod(shape[2:])`` (torch's rule).
    Raises ``ValueError`` for an unknown ``mode`` or a tensor with fewer than 2 dimensions.
    """
    if mode not in WEIGHT_INITS:
        raise ValueError(f"mode={mode!r} is not a known init; choose one of {list(WEIGHT_INITS)}")
    if tensor.dim() < 2:
        raise ValueError(f"tensor should have at least 2 dimensions to define fan_in, got shape {tuple(tensor.shape)}")
    fan_in = nn.init._calculate_correct_fan(tensor, "fan_in")
    std = math.sqrt(2.0 / fan_in)  # ReLU gain sqrt(2) / sqrt(fan_in)
    with torch.no_grad():
        if mode == "kaiming_uniform":
            bound = math.sqrt(3.0) * std
            tensor.uniform_(-bound, bound, generator=generator)
        elif mode == "kaiming_normal":
            tensor.normal_(0.0, std, generator=generator)
        else:  # signed_constant
            tensor.normal_(0.0, 1.0, generator=generator)
            tensor.copy_(torch.where(tensor >= 0, std, -std))
    return tensor


# -- straight-through mask -----------------------------------------------------------------------
class _StraightThrough(torch.autograd.Function):
    """Forward: the precomputed binary mask; backward: the incoming gradient, unchanged, to the scores."""

    @staticmethod
    def forward(ctx, scores: Tensor, mask: Tensor) -> Tensor:  # noqa: ARG004 - scores only carry the gradient
        return mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class ScoreMask(nn.Module):
    """A learnable score tensor and its binary mask; ``forward(w) = w ⊙ m`` with a straight-through gradient.

    Used directly as a :mod:`torch.nn.utils.parametrize` parametrisation for bare weight tensors
    (e.g. ``GATConv.att_src``) and as the base of :class:`SparseLinear`.

    Parameters
    ----------
    shape : tuple of int
        Shape of the masked weight (at least 2-D).
    score_init : str, default "kaiming_uniform"
        Init of the scores (see :func:`init_weight_`); the reference uses Kaiming-uniform.

    Attributes
    ----------
    score : nn.Parameter, shape ``shape``
        The only trainable tensor.
    mask : Tensor (buffer, not saved), float, shape ``shape``
        Current 0/1 mask, set by :func:`refresh_masks` (all ones until then).
    """

    def __init__(self, shape: tuple[int, ...], score_init: str = "kaiming_uniform") -> None:
        super().__init__()
        self.score_init = score_init
        self.score = nn.Parameter(torch.empty(shape))
        self.register_buffer("mask", torch.ones(shape), persistent=False)
        self.rank = "raw"  # "abs" ranks |score| (Edge-Popup); set by sparsify_
        self.reset_scores()

    def reset_scores(self) -> None:
        init_weight_(self.score.data, self.score_init)
        self.mask.fill_(1.0)

    def ranked_score(self) -> Tensor:
        """What the mask ranks: ``score`` (UGT) or ``|score|`` (Edge-Popup, ``rank="abs"``)."""
        return self.score.abs() if self.rank == "abs" else self.score

    def masked(self, weight: Tensor) -> Tensor:
        """``weight ⊙ m``; gradient to ``score`` is ``grad ⊙ weight`` (straight-through; times ``sign(score)``
        when ranking ``|score|``, as the straight-through estimator sits on ``|score|`` in Edge-Popup)."""
        return weight * _StraightThrough.apply(self.ranked_score(), self.mask)

    def forward(self, weight: Tensor) -> Tensor:
        return self.masked(weight)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.score.shape)}"


#: (tag, id of each input) -> (weak references to the inputs, their versions, the derived tensor)
_DERIVED: dict[tuple, tuple[tuple[weakref.ref, ...], tuple[int, ...], Tensor]] = {}


def derived_constant(tag: str, inputs: tuple[Tensor, ...], build: Callable[[], Tensor]) -> Tensor:
    """``build()``, computed once per (``tag``, ``inputs``, the inputs' versions), dropped when an input is freed.

    For tensors derived from the constant inputs of a fit (the transpose of the features, GIN's aggregated
    first-layer input): every epoch reuses them; an in-place change of an input bumps its version and
    rebuilds them. ``build`` must depend on ``inputs`` only.
    """
    key = (tag, *map(id, inputs))
    versions = tuple(t._version for t in inputs)
    hit = _DERIVED.get(key)
    if hit is not None and hit[1] == versions and all(r() is t for r, t in zip(hit[0], inputs, strict=True)):
        return hit[2]
    value = build()
    refs = tuple(weakref.ref(t, lambda _, k=key: _DERIVED.pop(k, None)) for t in inputs)
    _DERIVED[key] = (refs, versions, value)
    return value


def _csr_transpose(x: Tensor) -> Tensor:
    """``xᵀ`` of a CSR ``x`` as CSR, built once per (``x``, version) and dropped when ``x`` is freed."""
    return derived_constant("transpose", (x,), lambda: x.t().to_sparse_csr())


class _ConstSparseMM(torch.autograd.Function):
    """``x @ wᵀ`` for a CSR ``x`` that needs no gradient; backward ``∂L/∂w = (xᵀ g)ᵀ`` with ``xᵀ`` built once
    per feature matrix (autograd's own backward rebuilds it at every step: about a third of the step's cost
    on Cora's bag-of-words features)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.x = x
        return torch.sparse.mm(x, weight.t())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, torch.sparse.mm(_csr_transpose(ctx.x), grad).t()


def linear_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` for a dense or a sparse (CSR/COO) 2-D ``x``.

    Sparse ``x`` (e.g. bag-of-words features, ~1 % non-zero) uses ``torch.sparse.mm``: the cost
    is O(nnz · out) instead of O(N · in · out), with the same result and gradient to ``weight``
    (for a constant CSR ``x``, its transpose is built once and reused by every backward pass).
    """
    if x.layout == torch.sparse_csr and not x.requires_grad:
        out = _ConstSparseMM.apply(x, weight)
        return out if bias is None else out + bias
    if x.layout in (torch.sparse_csr, torch.sparse_coo):
        out = torch.sparse.mm(x, weight.t())
        return out if bias is None else out + bias
    return F.linear(x, weight, bias)


class SparseLinear(ScoreMask):
    """Drop-in ``Linear`` whose weight is frozen at random init and masked by learned scores.

    ``y = x (W ⊙ m)^T + b`` with ``m = 1[S > τ]`` (UGT Sec. 3.1); ``W`` (and ``b``) never change.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default False
        The reference convolutions have no bias; when True it is frozen at zero.
    weight_init : {"kaiming_uniform", "kaiming_normal", "signed_constant"}
    score_init : str, default "kaiming_uniform"

    Shapes
    ------
    input (*, in_features), dense or sparse 2-D; output (*, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        weight_init: str = "kaiming_uniform",
        score_init: str = "kaiming_uniform",
    ) -> None:
        check_int(in_features, "in_features", low=1)
        check_int(out_features, "out_features", low=1)
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={weight_init!r} is not valid; choose one of {list(WEIGHT_INITS)}")
        self.in_features, self.out_features, self.weight_init = in_features, out_features, weight_init
        super().__init__((out_features, in_features), score_init)
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the frozen weight and the scores; zero the bias; masks back to all ones."""
        init_weight_(self.weight.data, self.weight_init)
        if self.bias is not None:
            self.bias.data.zero_()
        self.reset_scores()

    @classmethod
    def from_linear(cls, linear: nn.Module, *, weight_init: str | None = None, score_init: str = "kaiming_uniform"):
        """A :class:`SparseLinear` holding a copy of ``linear``'s weight and bias (or a fresh init).

        ``linear`` is a ``torch.nn.Linear`` or ``torch_geometric.nn.Linear`` (initialised, not lazy).
        ``weight_init=None`` keeps the original weights, so at sparsity 0 the outputs are identical.
        """
        w = getattr(linear, "weight", None)
        if not isinstance(w, Tensor) or isinstance(w, nn.parameter.UninitializedParameter) or w.dim() != 2:
            raise ValueError(
                f"linear should be an initialised Linear with a 2-D weight, got {type(linear).__name__}; "
                "run one forward pass on a lazy model before converting it"
            )
        out_f, in_f = w.shape
        b = getattr(linear, "bias", None)
        new = cls(int(in_f), int(out_f), bias=b is not None, weight_init=weight_init or "kaiming_uniform",
                  score_init=score_init)
        new.to(device=w.device, dtype=w.dtype)
        if weight_init is None:
            new.weight.data.copy_(w.detach())
            if b is not None:
                new.bias.data.copy_(b.detach())
        return new

    def forward(self, x: Tensor) -> Tensor:
        return linear_forward(x, self.masked(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, weight_init={self.weight_init}"


# -- model-level masking -------------------------------------------------------------------------
@dataclass
class _MaskState:
    sparsity: float
    mode: str
    key: tuple | None = None  # (sparsity, mode, score versions) of the masks now in place
    weight_init: str | None = None  # what reset_ticket_ re-draws the frozen attention vectors with


def _check_mode(mode: str) -> str:
    if mode not in MASK_MODES:
        raise ValueError(f"mode={mode!r} is not valid; choose one of {list(MASK_MODES)}")
    return mode


def masked_modules(model: nn.Module) -> list[tuple[str, ScoreMask]]:
    """``(name, module)`` of every :class:`ScoreMask` / :class:`SparseLinear` in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ScoreMask)]


def score_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The score tensors of ``model`` (what the UGT optimiser updates)."""
    for _, m in masked_modules(model):
        yield m.score


def _masks(modules: list[ScoreMask], sparsity: float, mode: str) -> list[Tensor]:
    """New 0/1 masks for ``modules`` at ``sparsity``: ``round(s·n)`` lowest scores removed (assumes validated
    input). ``global``: one threshold over every score (UGT); ``layerwise``: top-k per tensor (Edge-Popup)."""
    scores = [m.ranked_score().detach() for m in modules]
    if mode == "global":
        n = sum(s.numel() for s in scores)
        keep = global_topk_keep(scores, n - round(sparsity * n))
    else:
        keep = [topk_keep(s, s.numel() - round(sparsity * s.numel())) for s in scores]
    return [k.to(s.dtype) for k, s in zip(keep, scores, strict=True)]


def global_threshold(model: nn.Module, sparsity: float) -> float:
    """τ: the ``round(s·n)``-th smallest of all ``n`` scores of ``model`` (``-inf`` when nothing is removed).

    Weights whose score is above τ are kept (plus deterministic tie-breaking at τ). O(n).
    Raises ``ValueError`` if ``sparsity`` is outside [0, 1) or ``model`` has no scores.
    """
    s = check_sparsity(sparsity)
    mods = [m for _, m in masked_modules(model)]
    if not mods:
        raise ValueError("model has no score-masked layers; convert it with sparsify_(model, sparsity) first")
    flat = torch.cat([m.ranked_score().detach().reshape(-1) for m in mods])
    return topk_threshold(flat, flat.numel() - round(s * flat.numel()))


def refresh_masks(
    model: nn.Module, sparsity: float | None = None, mode: str | None = None, *, force: bool = False
) -> bool:
    """Recompute every mask of ``model`` from its scores (no gradient). Returns True if masks changed.

    ``sparsity`` / ``mode`` default to those set by :func:`sparsify_` / :func:`set_sparsity`.
    The masks are recomputed only when the scores (their version counters, or any optimizer step: see
    :func:`~reprozoo.core.versions.version_key`), the sparsity or the mode changed since the last call,
    unless ``force``. Cost O(n) in the number of scores.
    """
    state: _MaskState | None = getattr(model, "_ugt_state", None)
    s = check_sparsity(sparsity if sparsity is not None else (state.sparsity if state else 0.0))
    mode = _check_mode(mode if mode is not None else (state.mode if state else "global"))
    mods = [m for _, m in masked_modules(model)]
    if not mods:
        return False
    key = (s, mode, version_key(m.score for m in mods))  # fused optimizers bump no version: counted too
    if state is not None and state.key == key and not force:
        return False
    with torch.no_grad():
        masks = _masks(mods, s, mode)
        for m, mask in zip(mods, masks, strict=True):
            m.mask.copy_(mask)
    if state is not None:
        state.key = key
    return True


def set_sparsity(model: nn.Module, sparsity: float, mode: str | None = None) -> None:
    """Set the target sparsity (and optionally the mode) of ``model`` and refresh its masks now."""
    state: _MaskState | None = getattr(model, "_ugt_state", None)
    if state is None:
        raise ValueError("model was not converted; call sparsify_(model, sparsity) first")
    state.sparsity = check_sparsity(sparsity)
    if mode is not None:
        state.mode = _check_mode(mode)
    refresh_masks(model)  # the next forward finds them up to date
    if state.mode == "layerwise":  # from the sizes alone (no host sync: this runs every epoch)
        empty = [n for n, m in masked_modules(model) if round(state.sparsity * m.score.numel()) == m.score.numel()]
        if empty:
            warnings.warn(f"sparsity {state.sparsity} keeps no weight in layer(s) {empty}: the network is "
                          "disconnected there (layer collapse); lower the sparsity", stacklevel=2)


def reset_ticket_(model: nn.Module) -> nn.Module:
    """Re-draw the frozen weights and scores of a converted ``model`` in place (its ``reset_parameters``).

    Every :class:`SparseLinear` re-draws its weight (its ``weight_init``) and scores; masked attention vectors
    re-draw theirs (Kaiming-uniform); GCN caches of the normalised graph are dropped; the masks are refreshed
    at the current target sparsity. Returns ``model``.
    """
    state: _MaskState | None = getattr(model, "_ugt_state", None)
    if state is None:
        raise ValueError("model was not converted; call sparsify_(model, sparsity) first")
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, SparseLinear):
                mod.reset_parameters()
            for attr in ("_cached_edge_index", "_cached_adj_t"):
                if getattr(mod, attr, None) is not None:
                    setattr(mod, attr, None)
            if parametrize.is_parametrized(mod):
                for plist in mod.parametrizations.values():
                    init_weight_(plist.original.data, state.weight_init or "kaiming_uniform")
                    for p in plist:
                        if isinstance(p, ScoreMask):
                            p.reset_scores()
    refresh_masks(model, force=True)
    return model


def _refresh_hook(module: nn.Module, args) -> None:  # forward pre-hook installed by sparsify_
    refresh_masks(module)


def _mask_report(model: nn.Module):
    mods = masked_modules(model)
    if not mods:
        raise ValueError("model has no score-masked layers")
    return density_report({n: m.mask for n, m in mods})


def current_sparsity(model: nn.Module) -> float:
    """Fraction of scored weights whose mask is 0 right now (over all masked tensors of ``model``)."""
    return _mask_report(model).sparsity


def layer_sparsities(model: nn.Module) -> dict[str, float]:
    """``{module name: fraction of its weights masked out}`` for every masked tensor of ``model``."""
    return _mask_report(model).layer_sparsity


def _is_linear(m: nn.Module) -> bool:
    if isinstance(m, SparseLinear):
        return False
    if isinstance(m, nn.Linear):
        return True
    try:
        from torch_geometric.nn.dense.linear import Linear as PygLinear
    except ImportError:  # PyG is optional
        return False
    return isinstance(m, PygLinear)


def sparsify_(
    model: nn.Module,
    sparsity: float,
    *,
    mode: str = "global",
    weight_init: str | None = None,
    score_init: str = "kaiming_uniform",
    mask_attention: bool = True,
    freeze_others: bool = True,
    rank: str | None = None,
) -> nn.Module:
    """Turn ``model`` into an untrained-ticket model **in place** and return it.

    Every ``torch.nn.Linear`` and ``torch_geometric.nn.Linear`` inside ``model`` (e.g. ``GCNConv.lin``,
    ``GATConv.lin``, the MLP of ``GINConv``) is replaced by a :class:`SparseLinear` holding the same
    weights (or fresh ones, ``weight_init``); with ``mask_attention`` the attention vectors
    ``att_src`` / ``att_dst`` / ``att`` of GAT-style convolutions are masked too (reference
    ``SparseParameter``). Every other parameter is frozen when ``freeze_others``. A forward
    pre-hook refreshes the masks, so ``model(x, edge_index)`` always runs at the current target.

    Parameters
    ----------
    model : nn.Module
    sparsity : float in [0, 1)
        Fraction of all scored weights removed.
    mode : {"global", "layerwise"}, default "global"
        One threshold over all scores (UGT) or per tensor (Edge-Popup).
    weight_init : {None, "kaiming_uniform", "kaiming_normal", "signed_constant"}
        None keeps the model's current weights (at sparsity 0 the outputs are unchanged).
    score_init : str, default "kaiming_uniform"
    mask_attention : bool, default True
    freeze_others : bool, default True
    rank : {None, "raw", "abs"}
        What the masks rank: the raw scores (the UGT reference) or ``|score|`` (Edge-Popup, Ramanujan et al.
        2020). None: "raw" for ``mode="global"``, "abs" for ``mode="layerwise"``.

    Raises
    ------
    TypeError if ``model`` is not an ``nn.Module``; ValueError for a bad ``sparsity``/``mode``/init,
    if ``model`` was already converted, or if it holds no ``Linear`` layer. A ``UserWarning`` when the
    sparsity leaves a masked tensor with no weight (also from :func:`set_sparsity` in layerwise mode).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be a torch.nn.Module, got {type(model).__name__}")
    s = check_sparsity(sparsity)
    _check_mode(mode)
    rank = ("abs" if mode == "layerwise" else "raw") if rank is None else rank
    if rank not in SCORE_RANKS:
        raise ValueError(f"rank={rank!r} is not valid; choose None or one of {list(SCORE_RANKS)}")
    if weight_init is not None and weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init={weight_init!r} is not valid; choose None or one of {list(WEIGHT_INITS)}")
    if getattr(model, "_ugt_state", None) is not None:
        raise ValueError("model is already sparsified; use set_sparsity(model, s) to change its sparsity")
    targets = [(n, m) for n, m in model.named_modules() if _is_linear(m)]
    if not targets and not masked_modules(model):
        raise ValueError(f"model ({type(model).__name__}) holds no Linear layer to convert")
    for name, lin in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = SparseLinear.from_linear(lin, weight_init=weight_init, score_init=score_init)
        if name == "":
            raise ValueError("model is itself a Linear; wrap it or use SparseLinear.from_linear")
        setattr(parent, attr, new)
    if mask_attention:
        for _, mod in list(model.named_modules()):
            for attr in ("att_src", "att_dst", "att"):
                p = mod._parameters.get(attr) if hasattr(mod, "_parameters") else None
                if isinstance(p, nn.Parameter) and p.dim() >= 2 and not parametrize.is_parametrized(mod, attr):
                    if weight_init is not None:
                        init_weight_(p.data, weight_init)
                    parametrize.register_parametrization(mod, attr, ScoreMask(tuple(p.shape), score_init))
    if freeze_others:
        score_ids = {id(p) for p in score_parameters(model)}
        for p in model.parameters():
            if id(p) not in score_ids:
                p.requires_grad_(False)
    for _, m in masked_modules(model):
        m.rank = rank
    model._ugt_state = _MaskState(sparsity=s, mode=mode, weight_init=weight_init)
    model.register_forward_pre_hook(_refresh_hook)
    refresh_masks(model)
    warn_empty_layers({n: m.mask for n, m in masked_modules(model)}, f"sparsity {s}")  # one host sync
    return model
