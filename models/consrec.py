"""ConsRec (Wu et al., "ConsRec: Learning Consensus Behind Interactions for Group Recommendation",
WWW 2023): a group's consensus from three views, fused by learned gates, trained with BPR on the
group-item and user-item streams through the one trainer (models/trainer.py).

Views (every graph built once per fit from the fitting rows, as ``torch.sparse`` CSR matrices):

* **member level**: a hypergraph whose nodes are the users and items and whose hyperedges are the
  groups (a group's members and its training items). A layer reads each hyperedge's message
  ``W [mean of members ; mean of items ; (mean of items) * g]`` (``g``: the group-level view), and
  every node becomes the mean of its hyperedges' messages; the view is the sum of the hyperedge
  messages over layers (plus ``g``), and the item vectors the sum of the item nodes over layers.
* **item level**: LightGCN on the group-item bipartite graph (symmetric normalisation, mean over layers).
* **group level**: the overlap graph between groups, weighted by the Jaccard overlap of their
  (members + items) sets, self-loops 1, row-normalised; the sum of the propagated layers.

The group vector is ``σ(w_o·o) o + σ(w_h·h) h + σ(w_l·l) l``; a (group, item) score is the predictor
on ``group ⊙ item`` (``dot``: the sum; ``mlp``: σ(MLP), the reference code's two choices; BPR reads
σ(MLP) as the reference does, and rankings read the MLP's logit (``rank_by_logit``, default): the same
order, but float32's σ rounds every logit above ~17 to exactly 1.0, and on Mafengwo that tied 54 % of
the test positives with a negative; ``rank_by_logit=false`` ranks the σ, ties and all, as the
reference code's evaluation did). A user's
score of an item reads the raw user and item embeddings only (the reference's user branch).

The reference code keeps the hypergraph layers' ``W`` in a plain Python list, so they are never
registered and never trained: ``train_hypergraph_layers=false`` reproduces that (the layers stay at
their seeded initial values), ``true`` (the paper's equations: a learned W per layer) trains them.

Scores do not depend on the order of a group's members: groups are looked up by id, and every
graph is built from sets. ``predict``/``score_groups`` are raw scores (``RawScores``): a clip to the
rating scale gives the rating.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import ConfigError, TrainingError, require
from benchmark.core.schema import INT_POS, Rule, Settings, setting
from benchmark.protocol.group_split import positives
from models.base import FitContext, Recommender
from models.samplers import Interleaved, PairwiseSampler
from models.trainer import Prepared, Trainer, TrainerConfig, ValidationScore, fit_diagnostics, history_frame

PREDICTORS = ("dot", "mlp")
SCHEDULES = Interleaved.SCHEDULES
CHUNK = 1 << 18  # pairs scored at a time


class SparseOperator:
    """A fixed sparse matrix ``A`` as a differentiable linear map ``x -> A @ x`` (x dense): the CSR
    matrix and its transpose are built once, so the backward pass (``A^T @ grad``) never re-sorts the
    matrix, as torch's COO ``sparse.mm`` backward does every step."""

    def __init__(self, matrix: sp.spmatrix, device: torch.device):
        self.shape = matrix.shape
        self.forward_matrix = _csr_tensor(matrix.tocsr(), device)
        self.backward_matrix = _csr_tensor(matrix.T.tocsr(), device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseProduct.apply(x, self.forward_matrix, self.backward_matrix)

    def dense(self) -> np.ndarray:
        return self.forward_matrix.to_dense().cpu().numpy()


def _csr_tensor(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    matrix = matrix.astype(np.float32)
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch calls its CSR support "beta": a UserWarning per tensor
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data), size=matrix.shape, device=device,
                                       check_invariants=False)


class _SparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, matrix, transposed):
        ctx.transposed = transposed
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return ctx.transposed @ grad, None, None


@dataclass(frozen=True)
class Graphs:
    """The three views' graphs over ``n_groups`` groups, ``n_users`` users, ``n_items`` items."""

    member_mean: SparseOperator    # (G, U): row g = the mean over g's members (rows sum to 1)
    item_mean: SparseOperator      # (G, I): row g = the mean over g's training items (0 if none)
    node_mean: SparseOperator      # (U + I, G): row v = the mean over the hyperedges holding v
    overlap: SparseOperator        # (G, G): Jaccard overlap + self-loops, row-normalised
    bipartite: SparseOperator      # (G, I'): D_g^-1/2 R D_i^-1/2 over the group-item catalogue I'


def _mean_rows(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary incidence (deduplicated), each nonempty row divided by its count."""
    incidence = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    incidence.data[:] = 1.0  # duplicates summed by the constructor: back to 0/1
    counts = np.asarray(incidence.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(counts, 1.0)) @ incidence


def build_graphs(members: pd.DataFrame, group_items: pd.DataFrame, n_groups: int, n_users: int, n_items: int,
                 n_group_items: int, device: torch.device) -> Graphs:
    """Every graph from the sets of members (``group, user``) and training items (``group, item``),
    vectorised (scipy sparse products; no loop over groups)."""
    g_u, u = members["group"].to_numpy(np.int64), members["user"].to_numpy(np.int64)
    g_i, i = group_items["group"].to_numpy(np.int64), group_items["item"].to_numpy(np.int64)
    # hypergraph incidence: hyperedge g holds its members (node u) and its items (node U + i)
    edge = np.concatenate([g_u, g_i])
    node = np.concatenate([u, n_users + i])
    incidence = sp.csr_matrix((np.ones(len(edge), np.float32), (edge, node)), shape=(n_groups, n_users + n_items))
    incidence.data[:] = 1.0
    node_mean = _mean_rows(node, edge, (n_users + n_items, n_groups))
    # overlap graph: |A ∩ B| / |A ∪ B| for distinct groups, 1 on the diagonal, then D^-1 W
    inter = (incidence @ incidence.T).tocoo()
    size = np.asarray(incidence.sum(axis=1)).ravel()
    off = inter.row != inter.col
    jaccard = inter.data[off] / (size[inter.row[off]] + size[inter.col[off]] - inter.data[off])
    weights = sp.csr_matrix((np.concatenate([jaccard, np.ones(n_groups)]),
                             (np.concatenate([inter.row[off], np.arange(n_groups)]),
                              np.concatenate([inter.col[off], np.arange(n_groups)]))), shape=(n_groups, n_groups))
    overlap = sp.diags(1.0 / np.asarray(weights.sum(axis=1)).ravel()) @ weights
    # item-level bipartite graph over the group-item catalogue, symmetric normalisation
    rated = sp.csr_matrix((np.ones(len(g_i), np.float32), (g_i, i)), shape=(n_groups, n_group_items))
    rated.data[:] = 1.0
    d_g = np.asarray(rated.sum(axis=1)).ravel()
    d_i = np.asarray(rated.sum(axis=0)).ravel()
    inv = lambda d: np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1.0)), 0.0)  # noqa: E731
    bipartite = sp.diags(inv(d_g)) @ rated @ sp.diags(inv(d_i))
    op = lambda m: SparseOperator(sp.csr_matrix(m), device)  # noqa: E731
    return Graphs(member_mean=op(_mean_rows(g_u, u, (n_groups, n_users))),
                  item_mean=op(_mean_rows(g_i, i, (n_groups, n_items))),
                  node_mean=op(node_mean), overlap=op(overlap), bipartite=op(bipartite))


class ConsRecNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_groups: int, graphs: Graphs, dim: int, layers: int,
                 predictor: str, train_hypergraph_layers: bool):
        super().__init__()
        self.n_users, self.n_items, self.n_groups, self.layers = n_users, n_items, n_groups, layers
        self.n_group_items = graphs.bipartite.shape[1]
        self.graphs, self.predictor = graphs, predictor
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.group_embedding = nn.Embedding(n_groups, dim)
        for table in (self.user_embedding, self.item_embedding, self.group_embedding):
            nn.init.xavier_uniform_(table.weight)
        self.gates = nn.ModuleList([nn.Linear(dim, 1) for _ in range(3)])  # overlap, hypergraph, LightGCN
        self.hypergraph_layers = nn.ModuleList([nn.Linear(3 * dim, dim) for _ in range(layers)])
        self.hypergraph_layers.requires_grad_(train_hypergraph_layers)  # false: the reference code's frozen W
        self.mlp = nn.Sequential(nn.Linear(dim, 8), nn.ReLU(), nn.Linear(8, 1))

    def views(self) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """(fused group vectors (G, d), item vectors of the member-level view (I, d), the three views)."""
        g = self.graphs
        group0 = self.group_embedding.weight
        # group level: the overlap graph, layers summed
        overlap, layer = group0, group0
        for _ in range(self.layers):
            layer = g.overlap(layer)
            overlap = overlap + layer
        # member level: hypergraph convolution (hyperedges = groups)
        users, items = self.user_embedding.weight, self.item_embedding.weight
        item_sum, edges = items, overlap
        for linear in self.hypergraph_layers:
            item_msg = g.item_mean(items)
            message = linear(torch.cat([g.member_mean(users), item_msg, item_msg * overlap], dim=1))
            nodes = g.node_mean(message)
            users, items = nodes[:self.n_users], nodes[self.n_users:]
            item_sum, edges = item_sum + items, edges + message
        # item level: LightGCN on the group-item graph, mean over layers (groups' rows only)
        lg_groups, lg_items = group0, self.item_embedding.weight[:self.n_group_items]
        lg_sum = lg_groups
        for _ in range(self.layers):
            lg_groups, lg_items = g.bipartite(lg_items), _transposed(g.bipartite, lg_groups)
            lg_sum = lg_sum + lg_groups
        light = lg_sum / (self.layers + 1)
        weights = [torch.sigmoid(gate(view)) for gate, view in zip(self.gates, (overlap, edges, light))]
        fused = weights[0] * overlap + weights[1] * edges + weights[2] * light
        return fused, item_sum, (overlap, edges, light)

    def predict(self, left: torch.Tensor, right: torch.Tensor, logit: bool = False) -> torch.Tensor:
        """The predictor on ``left ⊙ right`` (any leading shape): dot, or σ(MLP) (``logit``: the MLP's
        output before the σ, the same order without float32's saturation at 1.0)."""
        product = left * right
        if self.predictor == "dot":
            return product.sum(dim=-1)
        out = self.mlp(product).squeeze(-1)
        return out if logit else torch.sigmoid(out)

    def group_scores(self, group: torch.Tensor, items: torch.Tensor, fused=None, item_vectors=None,
                     logit: bool = False) -> torch.Tensor:
        """Scores of ``items`` ((b,) or (b, k)) for ``group`` (b,)."""
        if fused is None:
            fused, item_vectors, _ = self.views()
        g = fused[group]
        return self.predict(g if items.dim() == 1 else g[:, None, :], item_vectors[items], logit)

    def user_scores(self, user: torch.Tensor, items: torch.Tensor, logit: bool = False) -> torch.Tensor:
        u = self.user_embedding(user)
        return self.predict(u if items.dim() == 1 else u[:, None, :], self.item_embedding(items), logit)


def _transposed(op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
    return _SparseProduct.apply(x, op.backward_matrix, op.forward_matrix)


@dataclass(frozen=True)
class ConsRecConfig(Settings):
    """conf/model/consrec.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    embedding_dim: int = setting(INT_POS, 32)
    layers: int = setting(INT_POS, 3)
    negatives: int = setting(INT_POS, 8)
    predictor: str = setting(Rule(str, choices=PREDICTORS), "mlp")
    train_hypergraph_layers: bool = setting(Rule(bool), True)
    schedule: str = setting(Rule(str, choices=SCHEDULES), "sequential")
    rank_by_logit: bool = setting(Rule(bool), True)


class ConsRec(Recommender):
    """ConsRec behind the Recommender interface; a GroupScorer (``score_groups``) and RawScores."""

    def __init__(self, name: str = "consrec", embedding_dim: int = 32, layers: int = 3, negatives: int = 8,
                 predictor: str = "mlp", train_hypergraph_layers: bool = True, schedule: str = "sequential",
                 rank_by_logit: bool = True, trainer: dict[str, Any] | None = None, seed: int = 0):
        ConsRecConfig(embedding_dim=embedding_dim, layers=layers, negatives=negatives, predictor=predictor,
                      train_hypergraph_layers=train_hypergraph_layers, schedule=schedule, rank_by_logit=rank_by_logit)
        self.name, self.seed = name, int(seed)
        self.dim, self.layers, self.negatives = int(embedding_dim), int(layers), int(negatives)
        self.predictor, self.train_hypergraph_layers, self.schedule = predictor, bool(train_hypergraph_layers), schedule
        self.logit = bool(rank_by_logit)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="consrec"), self.seed, name="ConsRec")
        self.device = self.trainer.device
        self.net: ConsRecNetwork | None = None
        self.history: list[dict[str, float]] = []
        self.refit_history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.low, self.high = 0.0, 1.0

    # ------------------------------------------------------------------ training

    def loss(self, net: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR over (query, positive, k negatives): mean of softplus(s_neg - s_pos) over the b x k pairs."""
        query, positive, negative = batch[0], batch[1], batch[2]
        if batch.stream == "group":
            fused, item_vectors, _ = net.views()
            pos = net.group_scores(query, positive, fused, item_vectors)
            neg = net.group_scores(query, negative, fused, item_vectors)
        else:
            pos, neg = net.user_scores(query, positive), net.user_scores(query, negative)
        value = F.softplus(neg - pos[:, None]).mean()
        return value, {f"{batch.stream}_bpr": value}

    def fit(self, train: pd.DataFrame, context: FitContext) -> "ConsRec":
        fold = getattr(context.fold, "group", None)
        data = getattr(context.dataset, "group_item", None)
        if fold is None or data is None:
            raise ConfigError(f"model={self.name} learns from group-item interactions: it needs a group split of a "
                              f"group-item dataset (dataset=camra2011, mafengwo or mafengwos)")
        require(not fold.heldout, f"model={self.name} looks groups up by id: split={fold.label} tests groups it never "
                                  f"trains on; use dataset=camra2011, mafengwo or mafengwos")
        self.low, self.high = map(float, context.rating_scale)
        self.members = data.members[["group", "user"]].drop_duplicates()
        self.n_users = int(max(data.n_users, self.members["user"].max() + 1, train["user"].max() + 1))
        self.n_groups = int(max(data.n_groups, self.members["group"].max() + 1))
        self.n_group_items = int(fold.n_items)
        self.n_items = int(max(data.n_items, fold.n_items, train["item"].max() + 1))
        result = self.trainer.train(lambda rows, part: self._setup(rows, part, context), self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        return self

    def _setup(self, rows: pd.DataFrame, part, context: FitContext) -> Prepared:
        """The graphs, network and samplers on the fitting rows (``part``: early stopping on the group
        validation cases) or on the whole training part (``part`` None: refit, fixed epochs)."""
        fold = context.fold.group
        group_rows = positives(fold.fit if part is not None else fold.train)[["group", "item"]].drop_duplicates()
        user_rows = positives(rows)[["user", "item"]].drop_duplicates()
        graphs = build_graphs(self.members, group_rows, self.n_groups, self.n_users, self.n_items,
                              self.n_group_items, self.device)
        torch.manual_seed(self.seed)
        self.net = ConsRecNetwork(self.n_users, self.n_items, self.n_groups, graphs, self.dim, self.layers,
                                  self.predictor, self.train_hypergraph_layers).to(self.device)
        tensor = lambda values: self.trainer.tensor(values, torch.long)  # noqa: E731
        streams = {"group": PairwiseSampler(tensor(group_rows["group"]), tensor(group_rows["item"]),
                                            self.n_group_items, negatives=self.negatives),
                   "user": PairwiseSampler(tensor(user_rows["user"]), tensor(user_rows["item"]), self.n_items,
                                           negatives=self.negatives)}
        validation = None
        if part is not None:
            check = context.group_validation
            require(check is not None, f"model={self.name}: the group split has no validation case to early-stop on; "
                                       f"use trainer.fixed_epochs=N")
            validation = ValidationScore(lambda net: check.score(lambda m, p: self._group_scores(net, p)), check.name)
        return Prepared(self.net, Interleaved(streams, schedule=self.schedule), validation)

    # ------------------------------------------------------------------ scoring

    def _ids(self, values, n: int, what: str) -> torch.Tensor:
        ids = np.asarray(values, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise TrainingError(f"ConsRec: {what} id {int(ids.max() if ids.max() >= n else ids.min())} is outside "
                                f"the {n} it was trained on; score groups, users and items of its own dataset")
        return torch.from_numpy(ids).to(self.device)

    @torch.no_grad()
    def _group_scores(self, net: ConsRecNetwork, pairs: pd.DataFrame) -> np.ndarray:
        net.eval()
        fused, item_vectors, _ = net.views()
        group = self._ids(pairs["group"], self.n_groups, "group")
        item = self._ids(pairs["item"], self.n_items, "item")
        out = [net.group_scores(group[s:s + CHUNK], item[s:s + CHUNK], fused, item_vectors, self.logit)
               for s in range(0, len(group), CHUNK)]
        return torch.cat(out).cpu().numpy().astype(float) if out else np.zeros(0)

    def _require_fit(self) -> ConsRecNetwork:
        if self.net is None:
            raise TrainingError("ConsRec scored before fit; call fit(train, context) first")
        return self.net

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        return self._group_scores(self._require_fit(), pairs)

    @torch.no_grad()
    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        net = self._require_fit()
        net.eval()
        user = self._ids(pairs["user"], self.n_users, "user")
        item = self._ids(pairs["item"], self.n_items, "item")
        out = [net.user_scores(user[s:s + CHUNK], item[s:s + CHUNK], self.logit) for s in range(0, len(user), CHUNK)]
        return torch.cat(out).cpu().numpy().astype(float) if out else np.zeros(0)

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, self.low, self.high)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    # ------------------------------------------------------------------ reporting

    def diagnostics(self) -> dict[str, float]:
        return {**fit_diagnostics(self.history, self.refit_history, self.best_epoch),
                **({"best_val_score": float(max(h[k] for h in self.history for k in h if k.startswith("val_")))}
                   if self.history else {})}

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
