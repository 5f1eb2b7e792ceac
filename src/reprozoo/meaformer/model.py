"""The MEAformer network: modality encoders and the meta modality hybrid (paper Sec. 3.2-3.3).

For entity ``e`` with modality vectors ``x_1 .. x_M`` (each ``hidden``-dimensional, one per
:data:`~reprozoo.meaformer.features.MODALITIES` in use):

1. Encoders (Sec. 3.2): structure ``g = GAT(E, A)`` on learned entity embeddings ``E``; every feature modality
   a linear map ``x_m = W_m f_m + b_m`` of its input vector.
2. Meta modality hybrid (Sec. 3.3): the ``M`` vectors are ``M`` tokens (no position or type embedding) of one
   transformer layer (multi-head attention, post-LN, optional FFN, as BERT). From the per-head attention
   ``A_h`` (M x M)::

       w = softmax_m( sum_h sum_i A_h[i, m] / sqrt(M * H) )                                   (Eq. 6)

   and the joint embedding uses the *pre*-transformer vectors ``z = concat_m( w_m * x_m / ||x_m|| )`` (Eq. 7).
   The transformer's output tokens feed the second set of per-modality losses (Sec. 3.4).

Absent modalities (ours): an entity's absent modality is masked out of the attention keys and queries and gets
weight 0 and a zero block in ``z``. ``fusion="global"`` replaces step 2 by one learned weight per modality for
the whole graph (EVA/MCLEA style, KG-level fusion) and ``fusion="uniform"`` by equal weights; neither runs the
transformer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.meaformer.features import MODALITIES
from reprozoo.meaformer.layers import GCN, DiagGAT, PyGGAT, SparseGraph

__all__ = ["MEAformer", "MetaModalityHybrid", "MEAformerOutput", "FUSIONS", "STRUCTURE_ENCODERS"]

FUSIONS = ("meta", "global", "uniform")
STRUCTURE_ENCODERS = ("gat", "gcn", "gatconv")


@dataclass
class MEAformerOutput:
    """What :meth:`MEAformer.forward` returns for B entities and M modalities.

    ``tokens`` (B, M, d): the encoders' vectors (zeros where absent); ``hidden`` (B, M, d) or None: the
    transformer's output tokens; ``weights`` (B, M): modality weights (rows sum to 1); ``joint`` (B, M*d);
    ``present`` (B, M) bool.
    """

    tokens: torch.Tensor
    hidden: torch.Tensor | None
    weights: torch.Tensor
    joint: torch.Tensor
    present: torch.Tensor


class MetaModalityHybrid(nn.Module):
    """One BERT-style transformer layer over an entity's modality tokens, returning the tokens and Eq. 6 weights.

    Parameters
    ----------
    dim : int
        Token size.
    heads : int, default 1
    intermediate : int, default 400
        FFN width (reference ``intermediate_size``).
    ffn : bool, default True
        Use the FFN sub-layer (on for DBP15K in the paper's scripts).
    dropout : float, default 0.1
        Dropout on the attention probabilities and the sub-layer outputs (fixed at 0.1 in the reference).
    token_norm : bool, default False
        Ours: LayerNorm the tokens before the layer (False: the authors' layer). The encoders' vectors have
        norms of 0.2 to 0.5, so the attention logits ``q.k / sqrt(d)`` stay near 0 and the weights near
        uniform (the reference's weights have a std of at most 0.004 across entities after training);
        normalised tokens let them move. The joint embedding (Eq. 7) normalises each vector anyway. At hidden
        300 on DBP15K ZH-EN it cost Hits@1 in every run measured (see the card); at hidden 32 on small slices
        it helped.

    Shapes: tokens (B, M, dim), present (B, M) bool -> hidden (B, M, dim), weights (B, M).
    """

    def __init__(self, dim: int, heads: int = 1, intermediate: int = 400, ffn: bool = True,
                 dropout: float = 0.1, token_norm: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.norm0 = nn.LayerNorm(dim) if token_norm else None
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, intermediate), nn.GELU(), nn.Linear(intermediate, dim)) if ffn \
            else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-12) if ffn else None

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.norm0 is not None:
            tokens = self.norm0(tokens)
        out, attn = self.attn(tokens, tokens, tokens, key_padding_mask=~present, need_weights=True,
                              average_attn_weights=False)  # attn: (B, H, M, M)
        h = self.norm1(tokens + self.drop(out))
        if self.ffn is not None:
            h = self.norm2(h + self.drop(self.ffn(h)))
        q = present.to(attn.dtype)
        n_present = q.sum(1, keepdim=True)
        score = (attn.sum(1) * q[:, :, None]).sum(1) / torch.sqrt(n_present * self.heads)  # Eq. 6
        weights = torch.softmax(score.masked_fill(~present, float("-inf")), dim=-1)
        return h, weights


class MEAformer(nn.Module):
    """MEAformer (Chen et al., ACM MM 2023, arXiv:2212.14454): multi-modal entity alignment with per-entity
    modality weights.

    Parameters
    ----------
    n_entities : int
        Entities of both graphs (the structure encoder learns one embedding each).
    input_dims : dict of str to int
        Input size of each feature modality in use (``{"relation": 1000, "char": 1542}``); keys from
        :data:`MODALITIES`.
    structure : bool, default True
        Use the structure modality.
    hidden : int, default 300
        Size of every modality vector.
    structure_encoder : {"gat", "gcn", "gatconv"}, default "gat"
        The reference's diagonal GAT, a GCN (GCN-Align), or PyG's ``GATConv``.
    gat_layers, gat_heads : int, default 2, 2
    fusion : {"meta", "global", "uniform"}, default "meta"
        Per-entity weights from the transformer (MEAformer), one learned weight per modality (KG-level), equal.
    transformer_heads, intermediate, ffn, fusion_dropout, token_norm
        The meta modality hybrid (:class:`MetaModalityHybrid`; ``token_norm`` is ours, see there).

    Examples
    --------
    >>> import numpy as np
    >>> g = SparseGraph(np.array([[0, 1, 2, 3, 0, 1], [1, 0, 3, 2, 0, 1]]), 4)
    >>> m = MEAformer(4, {"relation": 5}, hidden=8, intermediate=16)
    >>> out = m(g, {"relation": torch.rand(4, 5)}, torch.ones(4, 2, dtype=torch.bool))
    >>> out.joint.shape, [round(x, 5) for x in out.weights.sum(1).tolist()]
    (torch.Size([4, 16]), [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, n_entities: int, input_dims: dict[str, int], *, structure: bool = True, hidden: int = 300,
                 structure_encoder: str = "gat", gat_layers: int = 2, gat_heads: int = 2, fusion: str = "meta",
                 transformer_heads: int = 1, intermediate: int = 400, ffn: bool = True,
                 fusion_dropout: float = 0.1, token_norm: bool = False) -> None:
        super().__init__()
        unknown = [m for m in input_dims if m not in MODALITIES or m == "structure"]
        if unknown:
            raise ValueError(f"input_dims has unknown modalities {unknown}; feature modalities are "
                             f"{', '.join(m for m in MODALITIES if m != 'structure')}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} should be one of {', '.join(FUSIONS)}")
        if structure_encoder not in STRUCTURE_ENCODERS:
            raise ValueError(f"structure_encoder={structure_encoder!r} should be one of "
                             f"{', '.join(STRUCTURE_ENCODERS)}")
        self.modalities = tuple(m for m in MODALITIES if (m == "structure" and structure) or m in input_dims)
        if not self.modalities:
            raise ValueError("no modality: give structure=True or at least one input_dims entry")
        self.n_entities, self.hidden, self.fusion = n_entities, hidden, fusion
        if structure:
            self.entity_emb = nn.Embedding(n_entities, hidden)
            if structure_encoder == "gat":
                self.graph_encoder = DiagGAT(hidden, gat_layers, gat_heads)
            elif structure_encoder == "gcn":
                self.graph_encoder = GCN(hidden, gat_layers)
            else:
                self.graph_encoder = PyGGAT(hidden, gat_layers, gat_heads)
        self.encoders = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in input_dims.items()})
        if fusion == "meta":
            self.hybrid = MetaModalityHybrid(hidden, transformer_heads, intermediate, ffn, fusion_dropout, token_norm)
        elif fusion == "global":
            self.global_logits = nn.Parameter(torch.zeros(len(self.modalities)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if hasattr(self, "entity_emb"):
            nn.init.normal_(self.entity_emb.weight, std=1.0 / math.sqrt(self.n_entities))  # reference init

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    def encode(self, graph: SparseGraph | None, features: dict[str, torch.Tensor],
               ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, hidden) modality vectors of ``ids`` (all entities when None). Sparse (CSR) inputs are
        multiplied whole (O(nnz·hidden)) and then indexed; dense ones are indexed first."""
        cols = []
        for m in self.modalities:
            if m == "structure":
                g = self.graph_encoder(self.entity_emb.weight, graph)
                cols.append(g if ids is None else g[ids])
                continue
            x, lin = features[m], self.encoders[m]
            if x.layout != torch.strided:
                y = torch.sparse.mm(x, lin.weight.t()) + lin.bias
                cols.append(y if ids is None else y[ids])
            else:
                cols.append(lin(x if ids is None else x[ids]))
        return torch.stack(cols, dim=1)

    def fuse(self, tokens: torch.Tensor, present: torch.Tensor) -> MEAformerOutput:
        """Weights, transformer tokens and joint embedding from the modality vectors (Eqs. 6-7)."""
        # an entity with no modality at all keeps every token (no row may be fully masked)
        present = present | ~present.any(1, keepdim=True)
        tokens = tokens * present[:, :, None].to(tokens.dtype)
        hidden = None
        if self.fusion == "meta":
            hidden, weights = self.hybrid(tokens, present)
        elif self.fusion == "global":
            weights = torch.softmax(self.global_logits.expand_as(tokens[:, :, 0]).masked_fill(~present, -math.inf),
                                    dim=-1)
        else:
            weights = present.to(tokens.dtype) / present.sum(1, keepdim=True)
        joint = (weights[:, :, None] * F.normalize(tokens, dim=-1)).flatten(1)  # Eq. 7: pre-transformer vectors
        return MEAformerOutput(tokens, hidden, weights, joint, present)

    def forward(self, graph: SparseGraph | None, features: dict[str, torch.Tensor], present: torch.Tensor,
                ids: torch.Tensor | None = None) -> MEAformerOutput:
        """Encode and fuse the entities ``ids`` (all when None); ``present`` is (N, M) bool over all entities."""
        tokens = self.encode(graph, features, ids)
        return self.fuse(tokens, present if ids is None else present[ids])

    def extra_repr(self) -> str:
        return f"n_entities={self.n_entities}, modalities={self.modalities}, fusion={self.fusion!r}"
