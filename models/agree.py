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

Batched: a group's members are a padded (groups × largest group) index table with a mask; the
attention is one masked softmax over that table, so no Python loop runs over groups or pairs. Members
are sorted by user id within a group and the attention sum is order-free, so a group's score does not
depend on the order its members are listed in. Index 0 of every table is "unknown id" (kept at zero): a
member or item without an embedding contributes the zero vector; a group without a learned embedding
(one never seen in training) is its attention-weighted members alone.

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
from models.trainer import Prepared, Trainer, TrainerConfig, ValidationScore, history_frame

CHUNK = 200_000  # (group or user, item) pairs scored at a time


def padded_members(groups: np.ndarray, members: pd.DataFrame, user_index) -> tuple[np.ndarray, np.ndarray]:
    """(len(groups), largest group) member indices (``user_index(user ids)``; 0 pads) and the mask of
    real members, for ``groups`` (sorted distinct ids) from ``members`` (``group, user``). Members are
    distinct and sorted by user id within a group: the table does not depend on the frame's row order."""
    rows = members[["group", "user"]].drop_duplicates()
    rows = rows[rows["group"].isin(groups)].sort_values(["group", "user"], kind="stable")
    where = np.searchsorted(groups, rows["group"].to_numpy())
    slot = rows.groupby("group", sort=False).cumcount().to_numpy()
    width = int(slot.max(initial=-1)) + 1
    table = np.zeros((len(groups), max(width, 1)), dtype=np.int64)
    table[where, slot] = user_index(rows["user"].to_numpy())
    mask = np.zeros(table.shape, dtype=bool)
    mask[where, slot] = True
    return table, mask


class AgreeNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_groups: int, embedding: int, attention_hidden: int,
                 predict_hidden: int, dropout: float, members: torch.Tensor, mask: torch.Tensor):
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
        # every training group's members (row = group index; row 0: unknown group, no members)
        self.register_buffer("member_table", members, persistent=False)
        self.register_buffer("member_mask", mask, persistent=False)

    def interaction(self, query: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The score (before the sigmoid) of query vectors (b, d) against item vectors (b, d): (b,)."""
        return self.predict(torch.cat([query * item, query, item], dim=-1)).squeeze(-1)

    def attention_weights(self, members: torch.Tensor, mask: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Softmax over each row's real members (b, m) of the attention logits given the item vectors (b, d)."""
        vectors = self.users(members)                                      # (b, m, d)
        paired = torch.cat([vectors, item[:, None, :].expand_as(vectors)], dim=-1)
        logits = self.attention(paired).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=1).nan_to_num(0.0)               # a row without members: all 0

    def group_vector(self, group: torch.Tensor, members: torch.Tensor, mask: torch.Tensor,
                     item: torch.Tensor) -> torch.Tensor:
        weights = self.attention_weights(members, mask, item)
        return torch.einsum("bm,bmd->bd", weights, self.users(members)) + self.groups(group)

    def user_scores(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.interaction(self.users(user), self.items(item))

    def group_scores(self, group: torch.Tensor, item: torch.Tensor, members: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of (group, item) rows (indices); members (b, m) default to the training groups' table."""
        if members is None:
            members, mask = self.member_table[group], self.member_mask[group]
        vectors = self.items(item)
        return self.interaction(self.group_vector(group, members, mask, vectors), vectors)


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
        table, mask = padded_members(np.arange(self.n_groups), members, self._users)
        # row 0 (unknown group): no members
        self._member_table = torch.tensor(np.vstack([np.zeros((1, table.shape[1]), np.int64), table]))
        self._member_mask = torch.tensor(np.vstack([np.zeros((1, mask.shape[1]), bool), mask]))
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
                                s.predict_hidden, s.dropout, self._member_table, self._member_mask).to(self.device)
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
        table, mask = padded_members(groups, members, self._users)
        table, mask = torch.tensor(table, device=self.device), torch.tensor(mask, device=self.device)
        row = torch.tensor(row, device=self.device)
        group = torch.tensor(self._groups(ids), device=self.device)
        item = torch.tensor(self._items(pairs["item"].to_numpy()), device=self.device)
        out = [net.group_scores(group[s:s + CHUNK], item[s:s + CHUNK], table[row[s:s + CHUNK]], mask[row[s:s + CHUNK]])
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
        epochs = self.history or self.refit_history
        return {"epochs_trained": float(len(self.history)), "best_epoch": float(self.best_epoch),
                **({"best_val_score": float(max(h[k] for h in self.history for k in h if k.startswith("val_")))}
                   if self.history else {}),
                "seconds_per_epoch": float(np.median([h["epoch_seconds"] for h in epochs])) if epochs else 0.0,
                **({"refit_epochs": float(len(self.refit_history))} if self.refit_history else {})}

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
