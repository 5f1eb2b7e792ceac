"""ExpertKnowledgeAssigner: assign firms to industries with definitions, hierarchy and dated expert assignments.

Zhao, Fang, He, Huang, 'Exploiting Expert Knowledge for Assigning Firms to Industries: A Novel Deep Learning
Method', arXiv:2209.05943 (2022). Only the abstract is public: every step below is OUR RECONSTRUCTION of what
the abstract names (definitions, hierarchy, dated assignments, dynamic industry representations, hierarchical
assignment); the concrete layers, sizes and losses are our design choices.

Algorithm (firms c, industry nodes k of an L-level tree, periods t = 1..T)::

    1  f_c      = MLP(enc(text_c))                                  firm representation
    2  d_{k,t}  = W_d enc(definition of k in force at t)            definition knowledge (0 if k absent at t)
    3  a_{k,t}  = mean{ f_c : experts assigned c to k or below, in period t }      assignment knowledge
    4  h_{k,t}  = GRU_t( [a_{k,t}, m^a_{k,t}, d_{k,t}, m^d_{k,t}] )  temporal aggregation, causal (periods <= t)
    5  u_{k,t}  = h_{k,t} + ELU(GAT(h_{.,t}))                       spatial aggregation: parent, child, sibling edges
    6  p(k | parent(k), c, t) = softmax_{siblings}( s · cos(f_c, u_{k,t}) )       top-down assignment
       p(path to leaf) = prod over levels;  predict = argmax (exact), greedy, or beam search
    7  loss = - sum_levels log p(gold node at that level | gold parent)           (summed over levels)

Training (our choice): full batch; each step splits the training assignments at random into two halves and
pools the knowledge a_{k,t} of one half to classify the other (both ways), so that a firm never sees its own
label in the pooled knowledge. Prediction at time t pools all stored assignments dated in periods <= t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from reprozoo.core.checks import check_choice, check_float, check_int
from reprozoo.core.device import resolve_device
from reprozoo.core.progress import track
from reprozoo.core.seed import seed_everything
from reprozoo.datasets.industry import ICS, decimal_year
from reprozoo.industry.hierarchy import (
    TreeIndex,
    beam_decode,
    conditional_log_probs,
    greedy_decode,
    path_log_probs,
)
from reprozoo.text import ENCODERS, check_texts, make_encoder

__all__ = ["ExpertKnowledgeAssigner", "KnowledgeNet", "node_texts"]


def node_texts(ics: ICS, definitions: dict[str, str] | None = None) -> list[str]:
    """The text that describes each node (``ics.codes`` order): title, definition (``definitions`` overrides
    ``ics.definition``) and, for an upper node, the titles of the nodes below it (our choice: GICS and SIC give
    upper nodes a name only)."""
    defs = ics.definition if definitions is None else definitions
    below: dict[str, list[str]] = {c: [] for c in ics.codes}
    for c in reversed(ics.codes):  # children before parents
        p = ics.parent[c]
        if p is not None:
            below[p] += [ics.title[c]] + below[c]
    out = []
    for c in ics.codes:
        d = defs.get(c, ics.title[c])
        text = ics.title[c] if d == ics.title[c] else f"{ics.title[c]}. {d}"
        if below[c]:
            text += ". Includes: " + "; ".join(below[c])
        out.append(text)
    return out


class KnowledgeNet(nn.Module):
    """Steps 1-6: firm encoder, knowledge pooling, temporal GRU, hierarchy GAT, cosine scores.

    Parameters
    ----------
    in_dim : int
        Text-encoder dimension. dim : int, hidden size d (128).
    tree : TreeIndex
    use_definitions, use_time, use_hierarchy : bool
        Ablation switches (see :class:`ExpertKnowledgeAssigner`).
    heads : int, GAT heads (averaged). dropout : float.

    Shapes: ``firm(X)``: (n, in_dim) -> (n, d); ``industries(A, ma, D, md)``: (T, K, d), (T, K), (T, K, in_dim),
    (T, K) -> (T, K, d); ``scores(F, U, period)``: (n, d), (T, K, d), (n,) -> (n, K).
    """

    def __init__(self, in_dim: int, dim: int, tree: TreeIndex, *, use_definitions: bool = True,
                 use_time: bool = True, use_hierarchy: bool = True, heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.use_definitions, self.use_time, self.use_hierarchy = use_definitions, use_time, use_hierarchy
        self.firm_mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.def_proj = nn.Linear(in_dim, dim)
        self.gru = nn.GRU(2 * dim + 2, dim, batch_first=True)
        self.no_knowledge = nn.Parameter(torch.zeros(dim))  # a node with nothing known yet
        self.register_buffer("edge_index", tree.edge_index.clone(), persistent=False)
        if use_hierarchy:
            from torch_geometric.nn import GATConv

            self.gat = GATConv(dim, dim, heads=heads, concat=False, dropout=dropout, add_self_loops=True)
        else:
            self.gat = None
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.gru.reset_parameters()
        nn.init.normal_(self.no_knowledge, std=0.02)
        if self.gat is not None:
            self.gat.reset_parameters()
        with torch.no_grad():
            self.log_scale.fill_(math.log(10.0))

    def firm(self, X: torch.Tensor) -> torch.Tensor:
        """Step 1: f_c."""
        return self.firm_mlp(X)

    def industries(self, A: torch.Tensor, ma: torch.Tensor, D: torch.Tensor, md: torch.Tensor) -> torch.Tensor:
        """Steps 2, 4, 5: u_{k,t} for every period from pooled knowledge A (T, K, d) and definitions D."""
        T, K, _ = A.shape
        if self.use_definitions:
            Dp = self.def_proj(D) * md.unsqueeze(-1)  # step 2, zero where k has no definition at t
        else:
            Dp, md = torch.zeros_like(A), torch.zeros_like(md)
        A = A * ma.unsqueeze(-1)
        x = torch.cat([A, ma.unsqueeze(-1), Dp, md.unsqueeze(-1)], dim=-1)  # (T, K, 2d+2)
        # step 4: the GRU runs over periods, one sequence per node; output t depends on periods <= t only
        h, _ = self.gru(x.transpose(0, 1))  # (K, T, d)
        h = h.transpose(0, 1)
        known = ((ma + md) > 0).float().cumsum(0).clamp(max=1.0).unsqueeze(-1)  # anything known by t
        h = known * h + (1 - known) * self.no_knowledge
        if self.gat is not None:  # step 5: one GAT layer on each period's copy of the tree (disjoint union)
            offs = (torch.arange(T, device=h.device) * K).view(T, 1, 1)
            ei = (self.edge_index.unsqueeze(0) + offs).permute(1, 0, 2).reshape(2, -1)
            h = h + nn.functional.elu(self.gat(h.reshape(T * K, -1), ei)).reshape(T, K, -1)
        return h

    def scores(self, F: torch.Tensor, U: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
        """Step 6: s · cos(f_c, u_{k,t_c}), (n, K), for firm c scored against the industries of its period.

        One matmul against every period's industries, then a gather: O(n·T·K·d), no (n, K, d) tensor.
        """
        T, K, _ = U.shape
        Fn = nn.functional.normalize(F, dim=-1)
        Un = nn.functional.normalize(U, dim=-1).reshape(T * K, -1)
        S = (Fn @ Un.T).view(-1, T, K)
        return self.log_scale.exp() * S[torch.arange(F.shape[0], device=F.device), period]


class ExpertKnowledgeAssigner(BaseEstimator):
    """Assign firms to the leaves of an industry classification system from their business descriptions.

    Parameters
    ----------
    ics : ICS
        The classification (one version; ``classes_`` are its leaves). Its ``history`` (dated definitions of
        earlier versions) is definition knowledge of earlier periods.
    encoder : {"tfidf", "minilm"}, default "tfidf"
        Text encoder (:mod:`reprozoo.text`) for firm texts and definitions, fitted on both.
    encoder_dim : int, default 512
        TF-IDF reduced by LSA to this many dimensions (ignored by "minilm", 384-d).
    dim : int, default 128
        Hidden size d of the firm and industry representations.
    periods : sequence of float or None, default None
        Start times (decimal years) of the periods t. None: the version dates of ``ics`` and its history plus
        the calendar years of the assignment times.
    use_definitions, use_time, use_hierarchy : bool, default True
        Ablations: without definitions (no d_k), without time (one pooled a_k and the current definitions), without
        hierarchy (no GAT and one flat softmax over the leaves).
    persist_labels : bool, default False
        Our addition: at each training step, a firm assigned in period p is scored against the industries of a
        random period p' >= p (its assignment still holds later: most firms keep their code), so that the
        representations of later periods, built with later definitions, are trained too. False scores it in p
        only.
    knowledge_dropout : float, default 0.0
        Our addition: at each training step, hide the assignment knowledge of this share of the leaves, so that
        their firms must be matched through definitions and the hierarchy alone, as firms of an industry that
        no expert has assigned yet (a new industry). 0 is the reconstruction without it.
    beam_width : int or None, default None
        Decoding of ``predict``: None picks the most probable leaf exactly, 1 is greedy, B a beam of width B.
    epochs : int, default 200
        Full-batch AdamW steps. lr : float, 1e-3. weight_decay : float, 1e-2. dropout : float, 0.1.
    heads : int, default 2
        GAT heads. random_state : int, default 0. device : str, default "cpu" ("auto", "cpu", "cuda[:N]").

    Attributes
    ----------
    classes_ : ndarray of str, the leaf codes (columns of ``predict_proba``).
    nodes_ : tuple of str, every node (``ics.codes`` order). periods_ : ndarray (T,), period starts.
    industry_embeddings_ : ndarray (T, K, dim), u_{k,t} of node ``nodes_[k]`` in period ``periods_[t]``.
    encoder_ : fitted text encoder. net_ : KnowledgeNet. loss_curve_ : list of float.

    Notes
    -----
    A reconstruction from the paper's abstract (arXiv:2209.05943): see the module docstring. Cost per training
    step: O(N·in_dim·d) for the firm MLP, O(T·K·d²) for the GRU and GAT, O(N·K·d) for the scores.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from reprozoo.datasets.industry import ICS
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tree.csv"
    >>> _ = path.write_text("code,parent,title\\nF,,Finance\\nM,,Materials\\nF1,F,Banks\\nF2,F,Insurers\\n"
    ...                     "M1,M,Steel\\nM2,M,Mining\\n")
    >>> ics = ICS.from_csv(path)
    >>> texts = ["bank loans", "bank deposits", "insurance premiums", "insurance policies", "steel mills",
    ...          "steel plants", "gold mining", "copper mining"]
    >>> codes = ["F1", "F1", "F2", "F2", "M1", "M1", "M2", "M2"]
    >>> model = ExpertKnowledgeAssigner(ics, encoder_dim=8, dim=8, epochs=60, lr=1e-2).fit(texts, codes, 2020)
    >>> model.predict(["regional bank loans", "copper and gold mining"], 2021)
    array(['F1', 'M2'], dtype=object)
    >>> model.predict_proba(["steel"], 2021, level=1).round(2).sum()
    np.float32(1.0)
    """

    def __init__(self, ics: ICS, encoder: str = "tfidf", encoder_dim: int = 512, dim: int = 128,
                 periods: Sequence[float] | None = None, use_definitions: bool = True, use_time: bool = True,
                 use_hierarchy: bool = True, persist_labels: bool = False, knowledge_dropout: float = 0.0,
                 beam_width: int | None = None,
                 epochs: int = 200, lr: float = 1e-3,
                 weight_decay: float = 1e-2, dropout: float = 0.1, heads: int = 2, random_state: int = 0,
                 device: str = "cpu") -> None:
        self.ics = ics
        self.encoder = encoder
        self.encoder_dim = encoder_dim
        self.dim = dim
        self.periods = periods
        self.use_definitions = use_definitions
        self.use_time = use_time
        self.use_hierarchy = use_hierarchy
        self.persist_labels = persist_labels
        self.knowledge_dropout = knowledge_dropout
        self.beam_width = beam_width
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.heads = heads
        self.random_state = random_state
        self.device = device

    # -- checks ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.ics, ICS):
            raise TypeError(f"ics should be an ICS (reprozoo.datasets.industry.ICS), got {type(self.ics).__name__}")
        check_choice(self.encoder, "encoder", ENCODERS)
        check_int(self.encoder_dim, "encoder_dim", low=2)
        check_int(self.dim, "dim", low=2)
        check_int(self.epochs, "epochs", low=1)
        check_int(self.heads, "heads", low=1)
        check_int(self.random_state, "random_state", low=0)
        check_float(self.lr, "lr", low=0, low_inclusive=False)
        check_float(self.weight_decay, "weight_decay", low=0)
        check_float(self.dropout, "dropout", low=0, high=1, high_inclusive=False)
        check_float(self.knowledge_dropout, "knowledge_dropout", low=0, high=1, high_inclusive=False)
        if self.beam_width is not None:
            check_int(self.beam_width, "beam_width", low=1)
        p = self.periods
        if p is not None and (isinstance(p, (str, bytes)) or not hasattr(p, "__iter__")):
            raise TypeError(f"periods should be a sequence of years or dates (or None), got "
                            f"{type(self.periods).__name__} {self.periods!r}")
        for flag in ("use_definitions", "use_time", "use_hierarchy", "persist_labels"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} should be a bool, got {getattr(self, flag)!r}")

    def _check_times(self, times: Any, n: int, name: str) -> np.ndarray:
        """Times as decimal years, one per row (a scalar is broadcast); the error names ``name``."""
        if isinstance(times, (str, int, float, np.integer, np.floating, np.datetime64)) or not hasattr(times,
                                                                                                       "__len__"):
            return np.full(n, decimal_year(times, name))
        if len(times) != n:
            raise ValueError(f"{name} has {len(times)} entries but texts has {n}; give one time per text or one "
                             "time for all")
        return np.array([decimal_year(t, f"{name}[{i}]") for i, t in enumerate(times)], dtype=float)

    def _period_of(self, t: np.ndarray, name: str) -> np.ndarray:
        idx = np.searchsorted(self.periods_, t, side="right") - 1
        if np.any(idx < 0):
            bad = float(t[idx < 0][0])
            raise ValueError(f"{name}={bad:.2f} is before the first period ({self.periods_[0]:.2f}); nothing is "
                             "known then")
        return idx if self.use_time else np.zeros_like(idx)

    # -- knowledge ---------------------------------------------------------------------------
    def _definitions(self) -> tuple[np.ndarray, np.ndarray]:
        """D (T, K, in_dim) and mask (T, K): the encoded definition of each node in force at each period."""
        ics, periods = self.ics, self.periods_
        versions = [(t, defs) for t, defs in ics.history]
        versions.append((ics.effective if ics.effective is not None else -np.inf, dict(ics.definition)))
        cur = node_texts(ics)
        texts_by_version = []
        for _, defs in versions:
            full = node_texts(ics, {c: defs.get(c, ics.title[c]) for c in ics.codes})
            texts_by_version.append((full, defs))
        T, K = len(periods), len(ics.codes)
        D = np.zeros((T, K, self.in_dim_), dtype=np.float32)
        M = np.zeros((T, K), dtype=np.float32)
        encoded = [self.encoder_.transform(txt) for txt, _ in texts_by_version]
        cur_enc = self.encoder_.transform(cur)
        for p, start in enumerate(periods):
            live = [i for i, (t, _) in enumerate(versions) if t <= start]
            if not live or not self.use_time:  # without time: the current definitions everywhere
                if not self.use_time:
                    D[p], M[p] = cur_enc, 1.0
                continue
            v = live[-1]
            have = np.array([c in versions[v][1] for c in ics.codes])
            D[p, have], M[p, have] = encoded[v][have], 1.0
        return D, M

    def _pool(self, F: torch.Tensor, nodes: torch.Tensor, period: torch.Tensor, weight: torch.Tensor) -> tuple:
        """Step 3: mean of F over the assignments of each (period, node) and its ancestors; (T, K, d), (T, K).

        ``weight`` (n,) selects the rows to pool (0/1). Assumes validated input.
        """
        T, K = len(self.periods_), self.tree_.n_nodes
        anc = self.tree_.ancestors[nodes]  # (n, L): the node and its ancestors
        valid = (anc >= 0).float() * weight.unsqueeze(1)
        slot = (period.unsqueeze(1) * K + anc.clamp(min=0)).reshape(-1)
        w = valid.reshape(-1)
        L = anc.shape[1]
        S = torch.zeros(T * K, F.shape[1], device=F.device, dtype=F.dtype)
        S = S.index_add(0, slot, F.repeat_interleave(L, dim=0) * w.unsqueeze(1))
        cnt = torch.zeros(T * K, device=F.device, dtype=F.dtype).index_add(0, slot, w)
        A = S / cnt.clamp(min=1.0).unsqueeze(1)
        return A.view(T, K, -1), (cnt > 0).float().view(T, K)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return torch.as_tensor(self.encoder_.transform(texts), device=self._device)

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, texts: Any, codes: Any, times: Any) -> ExpertKnowledgeAssigner:
        """Learn from dated expert assignments: firm ``texts[i]`` was assigned to node ``codes[i]`` (a leaf or an
        upper node of ``ics``) at ``times[i]`` (decimal year or date; a scalar applies to all).

        Returns ``self``. Raises ``TypeError``/``ValueError`` naming ``texts``, ``codes`` or ``times``.
        """
        self._check_params()
        texts = check_texts(texts)
        if isinstance(codes, str) or not hasattr(codes, "__len__"):
            raise TypeError(f"codes should be a list of codes of {self.ics.name}, got {type(codes).__name__}")
        if len(codes) != len(texts):
            raise ValueError(f"codes has {len(codes)} entries but texts has {len(texts)}; give one code per text")
        codes = self.ics.check_codes(list(codes), "codes")
        t = self._check_times(times, len(texts), "times")
        seed_everything(self.random_state)
        self._device = resolve_device(self.device)

        # 0. periods: version dates of the ICS and its history, and the calendar years of the assignments
        if self.periods is not None:
            periods = np.array(sorted({decimal_year(p, "periods") for p in self.periods}), dtype=float)
        else:
            stamps = [h for h, _ in self.ics.history] + ([self.ics.effective] if self.ics.effective else [])
            periods = np.array(sorted(set(stamps) | set(np.floor(t).tolist())), dtype=float)
        self.periods_ = periods
        self.nodes_ = tuple(self.ics.codes)
        self.classes_ = np.array(self.ics.leaves, dtype=object)
        self.tree_ = TreeIndex.from_ics(self.ics).to(self._device)
        anc = self.tree_.ancestors[self.tree_.leaves]  # (n_leaves, L): node k is above leaf j
        rows, lv = torch.nonzero(anc >= 0, as_tuple=True)
        self._leaf_member = torch.zeros(self.tree_.n_nodes, len(self.tree_.leaves), device=self._device)
        self._leaf_member[anc[rows, lv], rows] = 1.0  # (K, n_leaves): node k is leaf j or above it

        # 1-2. encoders: fit the text encoder on firm texts and node texts together
        kwargs = {"dim": self.encoder_dim, "random_state": self.random_state} if self.encoder == "tfidf" else \
            {"device": str(self._device)}
        self.encoder_ = make_encoder(self.encoder, **kwargs).fit(texts + node_texts(self.ics))
        self.in_dim_ = int(self.encoder_.dim_)
        D, MD = self._definitions()
        self._D = torch.as_tensor(D, device=self._device)
        self._MD = torch.as_tensor(MD, device=self._device)
        X = self._encode(texts)
        if not bool((X != 0).any()):  # the encoder also saw the definitions, so its own check cannot tell
            raise ValueError("texts contain no usable word (after English stop words): every firm text encodes "
                             "to a zero vector, so nothing can be learnt from them")
        pos = {c: i for i, c in enumerate(self.nodes_)}
        nodes = torch.tensor([pos[c] for c in codes], device=self._device)
        period_np = self._period_of(t, "times")
        period = torch.as_tensor(period_np, device=self._device)
        # the loss scores firms against the industries of their period (or a later one): keep the periods in use
        last = len(self.periods_) - 1 if (self.persist_labels and self.use_time) else int(period_np.max())
        used = np.arange(int(period_np.min()), last + 1)
        used_t = torch.as_tensor(used, device=self._device)
        first_local = torch.as_tensor(period_np - used[0], device=self._device)
        span = float(len(used)) - first_local.float()  # periods from the item's own to the last in use

        self.net_ = KnowledgeNet(self.in_dim_, self.dim, self.tree_, use_definitions=self.use_definitions,
                                 use_time=self.use_time, use_hierarchy=self.use_hierarchy, heads=self.heads,
                                 dropout=self.dropout).to(self._device)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator(device="cpu").manual_seed(self.random_state)
        losses = []
        for _ in track(range(self.epochs), "industry: training"):
            self.net_.train()
            half = (torch.rand(len(texts), generator=gen) < 0.5).to(self._device).float()
            F = self.net_.firm(X)
            # our addition: leaves whose assignment knowledge is hidden in this step (as if new industries)
            hide = (torch.rand(self.tree_.n_nodes, generator=gen) < self.knowledge_dropout).to(self._device)
            keep = (~(hide & self.tree_.is_leaf)).float()
            local_t = first_local
            if self.persist_labels:  # a random period from the assignment's own on (our addition)
                u = torch.rand(len(texts), generator=gen).to(self._device)
                local_t = first_local + (u * span).long().clamp(max=len(used) - 1)
            loss = 0.0
            for support in (half, 1.0 - half):  # pool one half, classify the other (step 3, our choice)
                A, MA = self._pool(F, nodes, period, support)
                MA = MA * keep
                U = self.net_.industries(A, MA, self._D, self._MD)[used_t]  # (T_used, K, d)
                q = (1.0 - support).bool()
                loss = loss + self._loss(F[q], U, local_t[q], nodes[q]) * q.float().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        self.loss_curve_ = [float(v) for v in torch.stack(losses).cpu()]

        # store the knowledge (all assignments) and the industry representations u_{k,t}
        self.net_.eval()
        self._memory = (X, nodes, period)
        self._refresh()
        return self

    def _loss(self, F: torch.Tensor, U: torch.Tensor, period: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Step 7: - sum over levels of log p(gold node | gold parent), mean over firms."""
        logp = self._path_log_probs(self.net_.scores(F, U, period))
        return -logp.gather(1, nodes.unsqueeze(1)).mean()

    def _path_log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        if self.use_hierarchy:
            return path_log_probs(conditional_log_probs(scores, self.tree_), self.tree_)
        # flat: one softmax over the leaves; an upper node's probability is the sum over its leaves
        p_leaf = torch.softmax(scores[:, self.tree_.leaves], dim=1)
        return (p_leaf @ self._leaf_member.T).clamp(min=1e-30).log()

    @torch.no_grad()
    def _refresh(self) -> None:
        X, nodes, period = self._memory
        F = self.net_.firm(X)
        A, MA = self._pool(F, nodes, period, torch.ones(len(nodes), device=self._device))
        self._U = self.net_.industries(A, MA, self._D, self._MD)
        self.industry_embeddings_ = self._U.cpu().numpy()

    def refresh_knowledge(self, texts: Any, codes: Any, times: Any) -> ExpertKnowledgeAssigner:
        """Replace the stored assignment knowledge by these dated assignments, without retraining (experts made
        new assignments); ``industry_embeddings_`` is recomputed. Same checks as :meth:`fit`."""
        check_is_fitted(self)
        texts = check_texts(texts)
        if isinstance(codes, str) or not hasattr(codes, "__len__") or len(codes) != len(texts):
            raise ValueError(f"codes should hold one code per text ({len(texts)})")
        codes = self.ics.check_codes(list(codes), "codes")
        t = self._check_times(times, len(texts), "times")
        pos = {c: i for i, c in enumerate(self.nodes_)}
        self._memory = (self._encode(texts), torch.tensor([pos[c] for c in codes], device=self._device),
                        torch.as_tensor(self._period_of(t, "times"), device=self._device))
        self._refresh()
        return self

    # -- predict -----------------------------------------------------------------------------
    @torch.no_grad()
    def _node_log_probs(self, texts: Any, time: Any) -> tuple[torch.Tensor, torch.Tensor]:
        check_is_fitted(self)
        texts = check_texts(texts)
        p = torch.as_tensor(self._period_of(self._check_times(time, len(texts), "time"), "time"), device=self._device)
        F = self.net_.firm(self._encode(texts))
        scores = self.net_.scores(F, self._U, p)
        cond = conditional_log_probs(scores, self.tree_) if self.use_hierarchy else None
        return self._path_log_probs(scores), cond

    def predict_proba(self, texts: Any, time: Any, level: int | None = None) -> np.ndarray:
        """Path probabilities at ``time``: (n, n_leaves) over ``classes_`` (rows sum to 1), or with ``level``
        (n, n_nodes_at_level) over ``ics.codes_at(level)``."""
        logp, _ = self._node_log_probs(texts, time)
        cols = self._columns(level)
        return logp[:, cols].exp().cpu().numpy()

    def _columns(self, level: int | None) -> torch.Tensor:
        if level is None:
            return self.tree_.leaves
        check_int(level, "level", low=1, high=self.ics.n_levels)
        return torch.nonzero(self.tree_.level == level).flatten()

    def predict(self, texts: Any, time: Any) -> np.ndarray:
        """Leaf code of each firm at ``time`` (decoding by ``beam_width``)."""
        logp, cond = self._node_log_probs(texts, time)
        if self.beam_width is None or cond is None:
            leaf = self.tree_.leaves[logp[:, self.tree_.leaves].argmax(1)]
        elif self.beam_width == 1:
            leaf = greedy_decode(cond, self.tree_)
        else:
            leaf = beam_decode(cond, self.tree_, self.beam_width)[0][:, 0]
        return np.array([self.nodes_[i] for i in leaf.cpu().tolist()], dtype=object)

    def predict_topk(self, texts: Any, time: Any, k: int = 5, level: int | None = None) -> np.ndarray:
        """The ``k`` most probable codes (n, k) at ``time``, most probable first (leaves, or ``level``)."""
        check_int(k, "k", low=1)
        logp, _ = self._node_log_probs(texts, time)
        cols = self._columns(level)
        k = min(k, len(cols))
        top = logp[:, cols].topk(k, dim=1).indices
        idx = cols[top].cpu().numpy()
        return np.array(self.nodes_, dtype=object)[idx]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "net_")
