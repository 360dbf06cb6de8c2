"""AGREE (Cao et al., "Attentive Group Recommendation", SIGIR 2018), on the shared trainer.

    user u, item i:   e_u, e_i (embeddings, size d)
    group g, item i:  a_{g,j,i} = softmax over the members j of g of  w2 · ReLU(W1 [e_j ; e_i] + b1) + b2
                      e_g(i)    = Σ_j a_{g,j,i} e_j  +  q_g          (item-conditioned attention + group embedding)
    score(x, i)       = w4 · ReLU(W3 [e_x ⊙ e_i ; e_x ; e_i] + b3) + b4      (NCF-style interaction layer,
                                                                             shared by users and groups)
    loss (pairwise, per positive i and sampled negative j, on the sigmoid of the score):
                      (σ(score(x, i)) − σ(score(x, j)) − 1)²

Trained jointly on the fold's user–item and group–item positives (rating > 0: the reference loader's
reading), ``negatives`` uniform negatives per positive (``models.samplers.PairwiseSampler``; the two
streams interleaved by ``models.samplers.Interleaved``), early-stopped on the group validation cases
(``FitContext.group_validation``) and refitted on the whole training part (models/trainer.py).

Batched without padding: the members of a batch's (group, item) pairs are one flat index tensor (each
group's member list, CSR-style, ``member_lists``), the attention a softmax per pair by scatter / index_add,
so no Python loop runs over groups or pairs and a group of 48 members costs 48 entries, not the batch's
largest group. Members are sorted by user id within a group and the attention sum is order-free, so a
group's score does not depend on the order its members are listed in. Index 0 of every table is "unknown id" (kept at zero), and
so is every row without training data in the phase (no gradient reaches it): such a member contributes
the zero vector, and a group never seen in training (Weeplaces' test groups) is its attention-weighted
members alone.

Rankings read the score before the sigmoid (``RawScores``): the sigmoid of float32 saturates and would
tie items the model separates. ``predict`` (user–item) maps σ(score) onto the rating scale.
docs/protocol.md, "Group recommenders (AGREE, GroupIM, ConsRec)" has the choices and the reproduction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.core.errors import ConfigError, TrainingError, require
from benchmark.core.schema import INT_POS, Rule, Settings, setting
from benchmark.protocol.group_split import positives
from models.base import FitContext, Recommender
from models.samplers import Batch, Interleaved, PairwiseSampler
from models.trainer import Prepared, Trainer, TrainerConfig, ValidationScore, fit_diagnostics, history_frame

CHUNK = 200_000  # (group or user, item) pairs scored at a time


def member_lists(groups: np.ndarray, members: pd.DataFrame, user_index) -> tuple[np.ndarray, np.ndarray]:
    """The members of ``groups`` (sorted distinct ids) from ``members`` (``group, user``) as one flat
    array of member indices (``user_index(user ids)``) and ``starts`` (len(groups) + 1): group r's
    members are ``flat[starts[r]:starts[r + 1]]``. Distinct and sorted by user id within a group, so
    the lists do not depend on the frame's row order."""
    rows = members[["group", "user"]].drop_duplicates()
    rows = rows[rows["group"].isin(groups)].sort_values(["group", "user"], kind="stable")
    counts = np.bincount(np.searchsorted(groups, rows["group"].to_numpy()), minlength=len(groups))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return starts, np.asarray(user_index(rows["user"].to_numpy()), dtype=np.int64)


def expand(rows: torch.Tensor, starts: torch.Tensor, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the P ``rows`` (indices into ``starts``), its members, flattened: (pair of each entry,
    member index of each entry), T = the sum of the rows' group sizes entries. No padding, no loop."""
    begin, sizes = starts[rows], starts[rows + 1] - starts[rows]
    pair = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), sizes)
    first = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    return pair, flat[begin[pair] + torch.arange(len(pair), device=rows.device) - first]


class AgreeNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_groups: int, embedding: int, attention_hidden: int,
                 predict_hidden: int, dropout: float, starts: torch.Tensor, flat: torch.Tensor):
        super().__init__()
        self.users = nn.Embedding(n_users + 1, embedding, padding_idx=0)
        self.items = nn.Embedding(n_items + 1, embedding, padding_idx=0)
        self.groups = nn.Embedding(n_groups + 1, embedding, padding_idx=0)
        self.attention = nn.Sequential(nn.Linear(2 * embedding, attention_hidden), nn.ReLU(), nn.Dropout(dropout),
                                       nn.Linear(attention_hidden, 1))
        self.predict = nn.Sequential(nn.Linear(3 * embedding, predict_hidden), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(predict_hidden, 1))
        # the reference code's initialisation: N(0, 1) linear weights, Xavier-normal embeddings
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight)
            elif isinstance(module, nn.Embedding):
                nn.init.xavier_normal_(module.weight)
                with torch.no_grad():
                    module.weight[0].zero_()
        # every training group's members (member_lists; row = group index, row 0: unknown group, no members)
        self.register_buffer("member_starts", starts, persistent=False)
        self.register_buffer("member_flat", flat, persistent=False)

    def interaction(self, query: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The score (before the sigmoid) of query vectors (b, d) against item vectors (b, d): (b,)."""
        return self.predict(torch.cat([query * item, query, item], dim=-1)).squeeze(-1)

    def attention_weights(self, pair: torch.Tensor, members: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Each entry's weight (T,): the softmax, over the entries of the same pair (``pair``), of the attention
        logits of [member ; item]. The first layer is split as W [e_j ; e_i] = W_m e_j + W_i e_i, so the
        item's half is computed once per pair (P, not T, rows): the same function, fewer operations."""
        first, d = self.attention[0], item.shape[1]
        hidden = self.users(members) @ first.weight[:, :d].T + (item @ first.weight[:, d:].T + first.bias)[pair]
        logits = self.attention[3](self.attention[2](self.attention[1](hidden))).squeeze(-1)
        top = torch.full((len(item),), float("-inf"), device=item.device, dtype=logits.dtype)
        top = top.scatter_reduce(0, pair, logits.detach(), reduce="amax", include_self=True)
        weight = torch.exp(logits - top[pair])
        total = torch.zeros(len(item), device=item.device, dtype=weight.dtype).index_add(0, pair, weight)
        return weight / total[pair]

    def group_vector(self, group: torch.Tensor, pair: torch.Tensor, members: torch.Tensor,
                     item: torch.Tensor) -> torch.Tensor:
        """Σ_j a_j e_j + q_g per pair (P, d); a pair without members is its group embedding alone."""
        weights = self.attention_weights(pair, members, item)
        pooled = torch.zeros_like(item).index_add(0, pair, weights[:, None] * self.users(members))
        return pooled + self.groups(group)

    def user_scores(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.interaction(self.users(user), self.items(item))

    def group_scores(self, group: torch.Tensor, item: torch.Tensor, rows: torch.Tensor | None = None,
                     starts: torch.Tensor | None = None, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of (group, item) rows (indices). Members: row ``rows[p]`` of (``starts``, ``flat``), by
        default the training groups' lists (row = the group index)."""
        if rows is None:
            rows, starts, flat = group, self.member_starts, self.member_flat
        pair, members = expand(rows, starts, flat)
        vectors = self.items(item)
        return self.interaction(self.group_vector(group, pair, members, vectors), vectors)


@dataclass(frozen=True)
class AgreeConfig(Settings):
    """conf/model/agree.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    embedding: int = setting(INT_POS, 32)
    negatives: int = setting(INT_POS, 6)
    dropout: float = setting(Rule(float, low=0, high=1, high_open=True), 0.2)
    attention_hidden: int = setting(INT_POS, 16)
    predict_hidden: int = setting(INT_POS, 8)
    schedule: str = setting(Rule(str, choices=Interleaved.SCHEDULES), "alternate")


class Agree(Recommender):
    """AGREE behind the Recommender interface: scores groups itself (models.base.GroupScorer)."""

    def __init__(self, name: str = "agree", embedding: int = 32, negatives: int = 6, dropout: float = 0.2,
                 attention_hidden: int = 16, predict_hidden: int = 8, schedule: str = "alternate",
                 trainer: dict[str, Any] | None = None, seed: int = 0):
        self.settings = AgreeConfig(embedding=embedding, negatives=negatives, dropout=dropout,
                                    attention_hidden=attention_hidden, predict_hidden=predict_hidden,
                                    schedule=schedule)  # refuses a bad value, naming its key
        self.name, self.seed = name, int(seed)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="agree"), self.seed, name="AGREE",
                               divergence_hint="or model.embedding")
        self.device = self.trainer.device
        self.net: AgreeNetwork | None = None
        self.history: list[dict[str, float]] = []
        self.refit_history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.rating_scale = (0.0, 1.0)

    # ------------------------------------------------------------------ ids -> table indices (0: unknown)

    @staticmethod
    def _index(ids, size: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return np.where((ids >= 0) & (ids < size), ids + 1, 0)

    def _users(self, ids) -> np.ndarray:
        return self._index(ids, self.n_users)

    def _items(self, ids) -> np.ndarray:
        return self._index(ids, self.n_items)

    def _groups(self, ids) -> np.ndarray:
        return self._index(ids, self.n_groups)

    # ------------------------------------------------------------------ training

    def loss(self, net: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reference's pairwise loss, (σ(pos) − σ(neg) − 1)², averaged over every (positive, negative)
        pair of the batch; ``batch.stream`` says whether the queries are users or groups."""
        query, positive, negative = batch[0], batch[1], batch[2]
        k = negative.shape[1]
        queries = torch.cat([query, query.repeat_interleave(k)])
        items = torch.cat([positive, negative.reshape(-1)])
        scores = torch.sigmoid(net.group_scores(queries, items) if batch.stream == "group"
                               else net.user_scores(queries, items))
        pos, neg = scores[:len(query)], scores[len(query):].view(len(query), k)
        total = ((pos[:, None] - neg - 1.0) ** 2).mean()
        return total, {f"{batch.stream}_loss": total.detach()}

    def fit(self, train: pd.DataFrame, context: FitContext) -> "Agree":
        fold = getattr(context.fold, "group", None)
        if fold is None:
            raise ConfigError(f"model={self.name} learns from group-item interactions: it needs a group split of a "
                              f"group-item dataset (dataset=camra2011 or dataset=mafengwo)")
        require(fold.negatives is not None or fold.heldout,
                f"model={self.name}: the group split has neither negatives nor held-out groups")
        self.rating_scale = context.rating_scale
        members = context.groups.members[["group", "user"]]
        data = getattr(context.dataset, "group_item", None)
        self.n_users = int(max(getattr(data, "n_users", 0), train["user"].max() + 1, members["user"].max() + 1))
        self.n_items = int(max(getattr(data, "n_items", 0), fold.n_items, train["item"].max() + 1,
                               fold.train["item"].max() + 1))
        self.n_groups = int(max(getattr(data, "n_groups", 0), members["group"].max() + 1,
                                fold.train["group"].max() + 1))
        starts, flat = member_lists(np.arange(self.n_groups), members, self._users)
        self._member_starts = torch.tensor(np.concatenate([[0], starts]))  # row 0 (unknown group): no members
        self._member_flat = torch.tensor(flat)
        self._user_items, self._group_items = self.n_items, int(fold.n_items)
        result = self.trainer.train(lambda rows, part: self._setup(rows, part, context), self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        return self

    def _setup(self, rows: pd.DataFrame, part, context: FitContext) -> Prepared:
        """The network and the two streams on ``rows`` (user rows) and the group rows of the same phase:
        the fold's group fitting rows (``part`` given: early stopping on the group validation cases) or its
        whole group train part (``part`` None: the refit, or trainer.fixed_epochs)."""
        fold = context.fold.group
        groups = positives(fold.fit if part is not None else fold.train)
        users = positives(rows)
        require(len(groups) > 0 and len(users) > 0, f"model={self.name}: no positive user or group rows to train on")
        s = self.settings
        torch.manual_seed(self.seed)
        self.net = AgreeNetwork(self.n_users, self.n_items, self.n_groups, s.embedding, s.attention_hidden,
                                s.predict_hidden, s.dropout, self._member_starts, self._member_flat).to(self.device)
        # ids without a row to learn from here (a validation or test group, a user outside every stream) keep
        # the zero vector of "unknown", not their random initialisation: no gradient ever reaches those rows
        trained_groups = np.unique(self._groups(groups["group"]))
        member_rows = context.groups.members[["group", "user"]]
        trained_users = np.union1d(self._users(users["user"]),
                                   self._users(member_rows.loc[member_rows["group"].isin(groups["group"]), "user"]))
        with torch.no_grad():
            for table, keep in ((self.net.groups, trained_groups), (self.net.users, trained_users)):
                unused = np.setdiff1d(np.arange(table.num_embeddings), keep)
                table.weight[torch.as_tensor(unused, device=self.device)] = 0.0
        tensor = lambda values: self.trainer.tensor(values, torch.long)  # noqa: E731
        streams = {
            "user": PairwiseSampler(tensor(self._users(users["user"])), tensor(self._items(users["item"])),
                                    self._user_items, negatives=s.negatives, item_offset=1, stream="user"),
            "group": PairwiseSampler(tensor(self._groups(groups["group"])), tensor(self._items(groups["item"])),
                                     self._group_items, negatives=s.negatives, item_offset=1, stream="group"),
        }
        validation = None
        if part is not None:
            check = context.group_validation
            if check is None:
                raise ConfigError(f"model={self.name} early-stops on the group validation cases and this fold has "
                                  f"none; set trainer.fixed_epochs=N to train N epochs without validation")
            validation = ValidationScore(lambda net: check.score(lambda m, p: self._group_raw(net, m, p)), check.name)
        return Prepared(self.net, Interleaved(streams, schedule=s.schedule), validation)

    # ------------------------------------------------------------------ scores

    def _require_fit(self) -> AgreeNetwork:
        if self.net is None:
            raise TrainingError(f"{self.name}: predict called before fit; call fit(train, context) first")
        return self.net

    @torch.no_grad()
    def _group_raw(self, net: AgreeNetwork, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """Scores (before the sigmoid) of ``pairs`` (``group, item``) with the members of ``members``."""
        net.eval()
        ids = pairs["group"].to_numpy(np.int64)
        groups, row = np.unique(ids, return_inverse=True)
        starts, flat = (torch.tensor(a, device=self.device) for a in member_lists(groups, members, self._users))
        row = torch.tensor(row, device=self.device)
        group = torch.tensor(self._groups(ids), device=self.device)
        item = torch.tensor(self._items(pairs["item"].to_numpy()), device=self.device)
        out = [net.group_scores(group[s:s + CHUNK], item[s:s + CHUNK], row[s:s + CHUNK], starts, flat)
               for s in range(0, len(ids), CHUNK)]
        return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """models.base.GroupScorer: AGREE's group score of each (group, item) row, before the sigmoid."""
        return self._group_raw(self._require_fit(), members, pairs)

    @torch.no_grad()
    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """The user–item score before the sigmoid (models.base.RawScores: rankings read it)."""
        net = self._require_fit()
        net.eval()
        user = torch.tensor(self._users(pairs["user"].to_numpy()), device=self.device)
        item = torch.tensor(self._items(pairs["item"].to_numpy()), device=self.device)
        out = [net.user_scores(user[s:s + CHUNK], item[s:s + CHUNK]) for s in range(0, len(user), CHUNK)]
        return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        """σ(score) on the rating scale (a preference, not a rating estimate: AGREE learns no ratings)."""
        low, high = self.rating_scale
        return low + (high - low) / (1.0 + np.exp(-np.asarray(scores, dtype=float)))

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    # ------------------------------------------------------------------ reports

    def diagnostics(self) -> dict[str, float]:
        return {**fit_diagnostics(self.history, self.refit_history, self.best_epoch, per_epoch=np.median),
                **({"best_val_score": float(max(h[k] for h in self.history for k in h if k.startswith("val_")))}
                   if self.history else {})}

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
