"""Training, selection and evaluation of MEAformer (paper Sec. 3.4-3.6, 4.1; reference ``main.py``).

:class:`MEAformerTrainer` ``fit`` in steps:

1. Split the gold links (seeded shuffle: train, validation carved from train, sealed test) unless given;
   in the unsupervised mode the seeds are instead the most similar surface (char / name) pairs (Sec. 3.6).
2. Build the modality inputs (:func:`~reprozoo.meaformer.features.build_modalities`) and move them, the graph
   and the model to ``device`` once.
3. Each epoch, for each batch of seed pairs: encode only the batch's entities (the GAT runs over the whole
   graph, the feature encoders and the transformer over the batch), then

       L = icl(z) + MTL({icl(x_m)}_m) + MTL({icl(h_m)}_m)                                    (Sec. 3.4)

   with ``z`` the joint embedding, ``x_m`` the encoders' vectors, ``h_m`` the transformer's output tokens and
   one shared set of uncertainty weights (reference ``CustomMultiLossLayer``); AdamW, cosine schedule with
   warm-up, gradient clipping.
4. Hard entity replay (Sec. 3.5, optional): each entity's hardest in-batch negative of the joint loss is kept;
   once that table stops gaining entries, the kept entities join each batch as extra negatives.
5. Iterative mode (Sec. 3.6, optional): from ``il_start`` the learning rate is divided by 5; every ``il_step``
   epochs the mutual nearest neighbours among entities outside the seeds are found; pairs found at consecutive
   checks join the seeds every ``10 * il_step`` epochs.
6. Every ``eval_every`` epochs the validation links are ranked; with ``select="valid"`` the best-MRR state is
   restored at the end (``"last"`` keeps the last epoch). Test links are read only by :meth:`evaluate`.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from reprozoo.core.checks import check_choice, check_float, check_int
from reprozoo.core.progress import track
from reprozoo.core.seed import seed_everything
from reprozoo.datasets.dbp15k import AlignmentSplit, KGPair, split_links
from reprozoo.meaformer.evaluate import csls_ranks, ranking_metrics
from reprozoo.meaformer.features import MODALITIES, ModalityData, build_modalities
from reprozoo.meaformer.layers import SparseGraph, csr_tensor
from reprozoo.meaformer.losses import MultiTaskLoss, icl_loss
from reprozoo.meaformer.model import FUSIONS, STRUCTURE_ENCODERS, MEAformer

__all__ = ["MEAformerTrainer", "surface_seeds"]


def _to_torch(x: sp.csr_matrix | np.ndarray, device: torch.device) -> torch.Tensor:
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
        return csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)), torch.from_numpy(x.indices.astype(np.int64)),
                          torch.from_numpy(x.data), x.shape).to(device)
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


def surface_seeds(data: ModalityData, left: np.ndarray, right: np.ndarray, k: int = 1000,
                  modality: str = "char", block: int = 2048) -> np.ndarray:
    """Top ``k`` greedy one-to-one pairs by cosine of ``modality`` between ``left`` and ``right`` entities.

    The unsupervised mode's pseudo seeds (the paper uses image similarity, Sec. 3.6; the DBP15K copy here has no
    images, so the surface modalities stand in). Each left entity proposes its 5 best right entities (row
    blocks, no n x n matrix); proposals are taken by decreasing score, each entity at most once.
    """
    if modality not in data.features:
        raise ValueError(f"modality={modality!r} is not available for the surface seeds; built modalities: "
                         f"{', '.join(data.features)}")
    x = data.features[modality]
    x = x.toarray() if sp.issparse(x) and x.shape[1] <= 4096 else x
    L = torch.as_tensor(np.asarray(x[left].todense() if sp.issparse(x) else x[left]), dtype=torch.float32)
    R = torch.as_tensor(np.asarray(x[right].todense() if sp.issparse(x) else x[right]), dtype=torch.float32)
    L, R = F.normalize(L, dim=1), F.normalize(R, dim=1)
    cand_s, cand_l, cand_r = [], [], []
    for s in range(0, len(left), block):
        v, j = (L[s:s + block] @ R.t()).topk(min(5, len(right)), dim=1)
        cand_s.append(v.flatten())
        cand_l.append(torch.arange(s, s + v.shape[0]).repeat_interleave(v.shape[1]))
        cand_r.append(j.flatten())
    scores, ls, rs = torch.cat(cand_s).numpy(), torch.cat(cand_l).numpy(), torch.cat(cand_r).numpy()
    used_l, used_r, out = set(), set(), []
    for i in np.argsort(-scores, kind="stable"):
        if ls[i] in used_l or rs[i] in used_r:
            continue
        used_l.add(ls[i])
        used_r.add(rs[i])
        out.append((left[ls[i]], right[rs[i]]))
        if len(out) == k:
            break
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


class MEAformerTrainer:
    """Fit MEAformer on a :class:`~reprozoo.datasets.KGPair`, evaluate alignments, read per-entity weights.

    Parameters
    ----------
    modalities : tuple of str, default ("structure", "relation", "attribute", "image")
        Modalities to use (from :data:`~reprozoo.meaformer.features.MODALITIES`); one whose data the graph pair
        lacks is skipped. Add ``"name"``, ``"char"`` for the surface setting.
    text_encoder : {"tfidf", "minilm"}
        Name encoder (TF-IDF + LSA stands in for the paper's GloVe).
    hidden, structure_encoder, gat_layers, gat_heads, fusion, transformer_heads, intermediate, ffn,
    fusion_dropout, token_norm
        The network (:class:`~reprozoo.meaformer.model.MEAformer`).
    epochs : int, default 250
    batch_size : int, default 3500
        Seed pairs per step.
    lr, weight_decay, warmup, clip : float
        AdamW (5e-4, 1e-4), cosine schedule with ``warmup`` fraction (0.15), gradient-norm clip (1.0).
    tau : float, default 0.1
        InfoNCE temperature.
    csls_k : int, default 3
        CSLS neighbourhood at evaluation (0: cosine).
    select : {"valid", "last"}
        Keep the best-validation-MRR state, or the last.
    eval_every : int, default 5
        Epochs between validation evaluations.
    replay : bool
        Hard entity replay (Sec. 3.5).
    iterative : bool; il_start, il_step : int
        Iterative mode (Sec. 3.6).
    unsupervised : bool; unsup_k : int; unsup_modality : {"char", "name"}
        Seeds from surface similarity instead of gold links.
    seed : int
        Seeds the model, the batches and (when ``fit`` makes it) the split.
    device : str or torch.device

    Attributes
    ----------
    model_ : MEAformer
    split_ : AlignmentSplit
    data_ : ModalityData
    history_ : list of dict
        Per epoch: loss, wall and CPU seconds of training (and of validation), validation metrics when
        evaluated, seeds added (iterative mode).

    Examples
    --------
    >>> from reprozoo.datasets import load_dbp15k
    >>> kg = load_dbp15k("ZH-EN").subset(200, seed=0)
    >>> tr = MEAformerTrainer(modalities=("structure", "relation"), hidden=32, intermediate=64, epochs=2)
    >>> tr = tr.fit(kg)
    >>> sorted(tr.evaluate("valid"))[:3], list(tr.modality_weights([0, 1]))
    (['Hits@1', 'Hits@10', 'Hits@50'], ['structure', 'relation'])
    """

    def __init__(self, *, modalities: tuple[str, ...] = ("structure", "relation", "attribute", "image"),
                 text_encoder: str = "tfidf", hidden: int = 300, structure_encoder: str = "gat",
                 gat_layers: int = 2, gat_heads: int = 2, fusion: str = "meta", transformer_heads: int = 1,
                 intermediate: int = 400, ffn: bool = True, fusion_dropout: float = 0.1, token_norm: bool = False,
                 epochs: int = 250,
                 batch_size: int = 3500, lr: float = 5e-4, weight_decay: float = 1e-4, warmup: float = 0.15,
                 clip: float = 1.0, tau: float = 0.1, csls_k: int = 3, select: str = "valid",
                 eval_every: int = 5, replay: bool = False, iterative: bool = False, il_start: int = 500,
                 il_step: int = 5, unsupervised: bool = False, unsup_k: int = 1000, unsup_modality: str = "char",
                 seed: int = 42, device: str | torch.device = "cpu", eval_block: int = 2048) -> None:
        self.modalities = modalities
        self.text_encoder = text_encoder
        self.hidden = hidden
        self.structure_encoder = structure_encoder
        self.gat_layers = gat_layers
        self.gat_heads = gat_heads
        self.fusion = fusion
        self.transformer_heads = transformer_heads
        self.intermediate = intermediate
        self.ffn = ffn
        self.fusion_dropout = fusion_dropout
        self.token_norm = token_norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.clip = clip
        self.tau = tau
        self.csls_k = csls_k
        self.select = select
        self.eval_every = eval_every
        self.replay = replay
        self.iterative = iterative
        self.il_start = il_start
        self.il_step = il_step
        self.unsupervised = unsupervised
        self.unsup_k = unsup_k
        self.unsup_modality = unsup_modality
        self.seed = seed
        self.device = device
        self.eval_block = eval_block

    # -- checks ---------------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.modalities, str) or not self.modalities:
            raise ValueError(f"modalities={self.modalities!r} should be a non-empty tuple of names from "
                             f"{', '.join(MODALITIES)}")
        for m in self.modalities:
            check_choice(m, "modalities", MODALITIES)
        check_choice(self.text_encoder, "text_encoder", ("tfidf", "minilm"))
        check_choice(self.fusion, "fusion", FUSIONS)
        check_choice(self.structure_encoder, "structure_encoder", STRUCTURE_ENCODERS)
        check_choice(self.select, "select", ("valid", "last"))
        check_choice(self.unsup_modality, "unsup_modality", ("char", "name"))
        for name in ("hidden", "gat_layers", "gat_heads", "transformer_heads", "intermediate", "epochs",
                     "batch_size", "eval_every", "il_step", "unsup_k", "eval_block"):
            check_int(getattr(self, name), name, low=1)
        check_int(self.csls_k, "csls_k", low=0)
        check_int(self.il_start, "il_start", low=0)
        check_float(self.lr, "lr", low=0.0, low_inclusive=False)
        for name in ("weight_decay", "clip", "tau"):
            check_float(getattr(self, name), name, low=0.0, low_inclusive=name != "tau")
        check_float(self.warmup, "warmup", low=0.0, high=1.0)
        check_float(self.fusion_dropout, "fusion_dropout", low=0.0, high=1.0)
        if self.hidden % self.transformer_heads:
            raise ValueError(f"hidden={self.hidden} should be divisible by transformer_heads="
                             f"{self.transformer_heads}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this MEAformerTrainer is not fitted yet; call fit(kg) first")

    # -- fit ------------------------------------------------------------------------------------------------------
    def fit(self, kg: KGPair, split: AlignmentSplit | None = None, *, data: ModalityData | None = None,
            seed_ratio: float = 0.3, valid_ratio: float = 0.1) -> MEAformerTrainer:
        """Train on ``kg``'s training links (``split``, or a seeded split with ``seed_ratio`` / ``valid_ratio``).

        ``data`` gives prebuilt (e.g. corrupted) modality inputs; by default they are built from ``kg`` with
        :attr:`modalities`. Returns ``self``.
        """
        self._check_params()
        if not isinstance(kg, KGPair):
            raise TypeError(f"kg should be a reprozoo.datasets.KGPair, got {type(kg).__name__}")
        device = torch.device(self.device)
        rng = seed_everything(self.seed)
        # 1. split (test links sealed: only evaluate() reads them)
        self.split_ = split if split is not None else split_links(kg.links, train_ratio=seed_ratio,
                                                                  valid_ratio=valid_ratio, seed=self.seed)
        if not isinstance(self.split_, AlignmentSplit):
            raise TypeError(f"split should be an AlignmentSplit (reprozoo.datasets.split_links), got "
                            f"{type(self.split_).__name__}")
        # 2. inputs, moved once
        ms = set(self.modalities)
        if data is None:
            data = build_modalities(kg, structure="structure" in ms, relation="relation" in ms,
                                    attribute="attribute" in ms, image="image" in ms, name="name" in ms,
                                    char="char" in ms, text_encoder=self.text_encoder)
        data = data.select(self.modalities)  # given data may hold more modalities than this trainer uses
        if not data.modalities:
            raise ValueError(f"data holds none of modalities={self.modalities!r}")
        if data.n_entities != kg.n_entities:
            raise ValueError(f"data has {data.n_entities} entities, kg has {kg.n_entities}")
        self.data_ = data
        self.kg_ = kg
        if self.unsupervised:
            train = surface_seeds(data, kg.left, kg.right, self.unsup_k, self.unsup_modality)
        else:
            train = self.split_.train
        if len(train) == 0:
            raise ValueError("no training links: the split's train part is empty")
        self.graph_ = SparseGraph(data.edges, data.n_entities, device) if "structure" in data.present else None
        self.features_ = {m: _to_torch(x, device) for m, x in data.features.items()}
        self.present_ = torch.as_tensor(data.present_matrix(), device=device)
        self.model_ = MEAformer(
            data.n_entities, data.dims(), structure="structure" in data.present, hidden=self.hidden,
            structure_encoder=self.structure_encoder, gat_layers=self.gat_layers, gat_heads=self.gat_heads,
            fusion=self.fusion, transformer_heads=self.transformer_heads, intermediate=self.intermediate,
            ffn=self.ffn, fusion_dropout=self.fusion_dropout, token_norm=self.token_norm).to(device)
        self.mtl_ = MultiTaskLoss(self.model_.n_modalities).to(device)
        params = list(self.model_.parameters()) + list(self.mtl_.parameters())
        self._optim = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        stage_epochs = min(self.il_start, self.epochs) if self.iterative else self.epochs
        self._sched = _cosine_warmup(self._optim, self.warmup, stage_epochs * steps_per_epoch)
        self._hard = torch.full((data.n_entities,), -1, dtype=torch.long, device=device)
        self._replay_ready, self._last_unset = False, -1
        self.history_: list[dict[str, Any]] = []
        best, best_state = -math.inf, None
        train = np.asarray(train, dtype=np.int64)
        non_train = (np.setdiff1d(kg.left, train[:, 0]), np.setdiff1d(kg.right, train[:, 1]))
        candidates: set[tuple[int, int]] = set()
        for epoch in track(range(self.epochs), "meaformer: epochs"):
            t0, c0 = time.perf_counter(), time.process_time()
            rec: dict[str, Any] = {"epoch": epoch + 1}
            if self.iterative and epoch == self.il_start:  # 5. second stage: lr / 5, a fresh schedule
                for g in self._optim.param_groups:
                    g["lr"] = g["initial_lr"] = self.lr / 5
                rest = (self.epochs - self.il_start) * math.ceil(len(train) / self.batch_size)
                self._sched = _cosine_warmup(self._optim, self.warmup, max(rest, 1))
            # 3. one pass over the seeds
            self.model_.train()
            order = rng.permutation(len(train))
            losses = []
            for s in range(0, len(train), self.batch_size):
                losses.append(self._step(torch.as_tensor(train[order[s:s + self.batch_size]], device=device)))
            rec["loss"] = float(torch.stack(losses).mean())
            rec["train_seconds"] = time.perf_counter() - t0
            rec["train_cpu_seconds"] = time.process_time() - c0  # all threads (wall time is contention-prone)
            # 5. iterative pseudo-seeds
            if self.iterative and epoch >= self.il_start and (epoch + 1) % self.il_step == 0:
                found = self._mutual_neighbours(*non_train)
                fresh = (epoch + 1) % (self.il_step * 10) == self.il_step
                candidates = found if fresh or not candidates else candidates & found
                if (epoch + 1) % (self.il_step * 10) == 0 and candidates:
                    add = np.asarray(sorted(candidates), dtype=np.int64)
                    train = np.concatenate([train, add])
                    non_train = (np.setdiff1d(non_train[0], add[:, 0]), np.setdiff1d(non_train[1], add[:, 1]))
                    rec["seeds_added"] = len(add)
                    candidates = set()
            # 6. validation
            if len(self.split_.valid) and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs):
                t1, c1 = time.perf_counter(), time.process_time()
                scores = self.evaluate("valid")
                rec.update({f"valid_{k}": v for k, v in scores.items()})
                rec["eval_seconds"] = time.perf_counter() - t1
                rec["eval_cpu_seconds"] = time.process_time() - c1
                if self.select == "valid" and scores["MRR"] > best:
                    best = scores["MRR"]
                    best_state = (copy.deepcopy(self.model_.state_dict()), copy.deepcopy(self.mtl_.state_dict()),
                                  epoch + 1)
            self.history_.append(rec)
        self.train_links_ = train
        self.best_epoch_ = self.epochs
        if self.select == "valid" and best_state is not None:
            self.model_.load_state_dict(best_state[0])
            self.mtl_.load_state_dict(best_state[1])
            self.best_epoch_ = best_state[2]
        return self

    def _step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a (B, 2) batch of seed pairs; returns the (detached) loss."""
        B = batch.shape[0]
        ids = torch.cat([batch[:, 0], batch[:, 1]])
        neg = neg_l = neg_r = None
        if self.replay and self._replay_ready:
            neg_l, neg_r = self._hard[batch[:, 0]], self._hard[batch[:, 1]]
            neg = torch.unique(torch.cat([neg_l, neg_r]))
            neg = neg[(neg >= 0) & ~torch.isin(neg, ids)]
            neg_l = neg_l[(neg_l >= 0) & ~torch.isin(neg_l, ids)]
            neg_r = neg_r[(neg_r >= 0) & ~torch.isin(neg_r, ids)]
            ids = torch.cat([ids, neg])
        out = self.model_(self.graph_, self.features_, self.present_, ids)
        z = out.joint
        extra = {}
        if neg is not None:
            extra = {"neg_left": z[2 * B:][torch.searchsorted(neg, torch.unique(neg_l))],
                     "neg_right": z[2 * B:][torch.searchsorted(neg, torch.unique(neg_r))]}
        joint = icl_loss(z[:B], z[B:2 * B], self.tau, return_hardest=self.replay, **extra)
        if self.replay:  # 4. remember each entity's hardest negative
            joint, (hard_a, hard_b) = joint
            with torch.no_grad():
                both = [batch[:, 0], batch[:, 1]]  # candidate order of icl_loss: left, right, extras
                cand_a = torch.cat(both + ([torch.unique(neg_l)] if neg is not None else []))
                cand_b = torch.cat(both + ([torch.unique(neg_r)] if neg is not None else []))
                self._hard[batch[:, 0]] = cand_a[hard_a]
                self._hard[batch[:, 1]] = cand_b[hard_b]
        # every modality's encoder vector and transformer token in one batched loss: (K, B, d), K = M or 2M
        pres = out.present.t()  # (M, 2B)
        stack = out.tokens if out.hidden is None else torch.cat([out.tokens, out.hidden], 1)
        stack = stack[:2 * B].transpose(0, 1)
        if out.hidden is not None:
            pres = torch.cat([pres, pres])
        per = icl_loss(stack[:, :B], stack[:, B:], self.tau, present_left=pres[:, :B], present_right=pres[:, B:])
        M = self.model_.n_modalities
        loss = joint + self.mtl_(per[:M])
        if out.hidden is not None:
            loss = loss + self.mtl_(per[M:])  # one shared set of s_k, as the reference
        self._optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.model_.parameters()) + list(self.mtl_.parameters()), self.clip)
        self._optim.step()
        self._sched.step()
        if self.replay and not self._replay_ready:  # ready once the table stops gaining entries (one sync/step)
            unset = int((self._hard < 0).sum())
            self._replay_ready = unset == self._last_unset
            self._last_unset = unset
        return loss.detach()

    @torch.no_grad()
    def _mutual_neighbours(self, left: np.ndarray, right: np.ndarray) -> set[tuple[int, int]]:
        """Mutual nearest neighbours (cosine of joint embeddings) between ``left`` and ``right`` entities."""
        if len(left) == 0 or len(right) == 0:
            return set()
        emb, _ = self._embed(np.concatenate([left, right]))
        L, R = emb[:len(left)], emb[len(left):]
        best_r = torch.cat([(L[s:s + self.eval_block] @ R.t()).argmax(1) for s in range(0, len(L), self.eval_block)])
        best_l = torch.cat([(R[s:s + self.eval_block] @ L.t()).argmax(1) for s in range(0, len(R), self.eval_block)])
        i = torch.arange(len(left), device=best_r.device)
        mutual = (best_l[best_r] == i).cpu().numpy()
        br = best_r.cpu().numpy()
        return {(int(left[a]), int(right[br[a]])) for a in np.flatnonzero(mutual)}

    # -- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, ids=None, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised joint embeddings (n, M*d) and weights (n, M) of the entities ``ids`` (all when None), in
        eval mode; the GAT runs over the whole graph, the fusion only over ``ids``, in chunks."""
        was = self.model_.training
        self.model_.eval()
        if ids is not None:
            ids = torch.as_tensor(np.asarray(ids), dtype=torch.long, device=self.present_.device)
        tokens = self.model_.encode(self.graph_, self.features_, ids)
        present = self.present_ if ids is None else self.present_[ids]
        joint, weights = [], []
        for s in range(0, tokens.shape[0], chunk):
            out = self.model_.fuse(tokens[s:s + chunk], present[s:s + chunk])
            joint.append(F.normalize(out.joint, dim=1))
            weights.append(out.weights)
        self.model_.train(was)
        return torch.cat(joint), torch.cat(weights)

    def embeddings(self) -> np.ndarray:
        """(N, M*d) L2-normalised joint embeddings of all entities."""
        self._check_fitted()
        return self._embed()[0].cpu().numpy()

    def evaluate(self, split: str | np.ndarray = "test", *, csls_k: int | None = None) -> dict[str, float]:
        """Rank the links of ``split`` (``"test"``, ``"valid"`` or an (n, 2) array of ids) with CSLS.

        Returns Hits@1/10/50 (percent), MR and MRR (fraction) left-to-right (the main numbers), and the same
        right-to-left prefixed ``r2l_``. Candidates are the split's own left / right entities (as the reference).
        """
        self._check_fitted()
        if isinstance(split, str):
            check_choice(split, "split", ("test", "valid"))
            links = self.split_.test if split == "test" else self.split_.valid
        else:
            links = np.asarray(split)
            if links.ndim != 2 or links.shape[1] != 2 or not np.issubdtype(links.dtype, np.integer):
                raise ValueError(f"split should be 'test', 'valid' or an (n, 2) integer array, got shape "
                                 f"{links.shape}")
            if links.size and (links.min() < 0 or links.max() >= self.data_.n_entities):
                raise ValueError(f"split holds entity ids outside [0, {self.data_.n_entities})")
        if len(links) == 0:
            raise ValueError(f"split {split if isinstance(split, str) else 'array'} holds no links")
        k = self.csls_k if csls_k is None else check_int(csls_k, "csls_k", low=0)
        links = np.asarray(links)
        emb, _ = self._embed(links.T.ravel())  # the links' left entities, then their right ones
        l2r, r2l = csls_ranks(emb[:len(links)], emb[len(links):], k=k, block=self.eval_block)
        return {**ranking_metrics(l2r), **ranking_metrics(r2l, "r2l_")}

    def modality_weights(self, entity_ids=None) -> dict[str, np.ndarray]:
        """Per-entity modality weights ``{modality: (n,) array}`` in :data:`MODALITIES` order (rows sum to 1).

        ``entity_ids``: ids to report (all entities when None).
        """
        self._check_fitted()
        if entity_ids is not None:
            ids = np.asarray(entity_ids)
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"entity_ids should be a 1-D integer array, got shape {ids.shape} and dtype "
                                 f"{ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= self.data_.n_entities):
                raise ValueError(f"entity_ids hold ids outside [0, {self.data_.n_entities})")
        w = self._embed(entity_ids)[1].cpu().numpy()
        return {m: w[:, i] for i, m in enumerate(self.model_.modalities)}


def _cosine_warmup(optim: torch.optim.Optimizer, warmup: float, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0 (transformers' schedule)."""
    n_warm = int(warmup * total)

    def factor(step: int) -> float:
        if step < n_warm:
            return step / max(1, n_warm)
        progress = (step - n_warm) / max(1, total - n_warm)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)
