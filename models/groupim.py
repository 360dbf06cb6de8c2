"""GroupIM (Sankar et al., SIGIR 2020): group recommendation by mutual-information maximisation between a
group and its members, on the shared trainer (models/trainer.py). Written from the paper and from reading
CrowdDynamicsLab/GroupIM @ 899890e (docs/protocol.md, "Group recommenders", GroupIM: what was kept, what
was decided).

    x_u        the user's visible items (user-train positives, plus Weeplaces' fold-in parts), L2-normalised
    e_u        = tanh(T tanh(W x_u + b) + c)                 user preference encoder (an MLP over items)
    a_{g,u}    = softmax over the members of tanh(w . e_u + d)  attentional aggregator (masked for padding)
    h_g        = sum_u a_{g,u} e_u                           group representation
    s_g        = P h_g                                       group scores over every item (the ranking score)
    D(h, e)    = e~^T M h~ + m,  ~ = tanh(F .)               the bilinear discriminator

    L = L_G + L_MI + lambda_mi * L_UG
    L_G   multinomial log-likelihood of the group's items under softmax(s_g) (target: the items, L1-normalised)
    L_MI  binary cross-entropy of D: the members of g (label 1) against ``negatives`` corrupted users (label 0),
          drawn half uniformly, half in proportion to how many of the group's items they have (eta = 0.5)
    L_UG  the same likelihood against the members' items, each member weighted by sigmoid(D(h_g, e_u)) (no
          gradient through the weight) and averaged over the members

Pre-training (the paper's, and the reference's ``--pretrain_user --pretrain_mi``) is a first phase run through
the same Trainer (``trainer.fixed_epochs`` of a copy of the model's trainer config): the encoder with its own
item predictor U is fitted ``pretrain_epochs`` epochs on the user-train rows (multinomial likelihood of the
user's items under softmax(U tanh(W x_u + b))), once per fit; every network of the fit (early stopping, refit)
starts from those weights, P is initialised to U, and ``pretrain_mi_epochs`` epochs train L_MI alone before
the group epochs. A phase rather than an interleaved user stream: the paper pre-trains, then trains on groups,
and the encoder must be fitted before the discriminator's scores can weight L_UG.

Batches are groups (a ``RowSampler`` over the training groups' rows); a batch's members are a padded
(groups x largest group) index matrix with a mask, every member's item vector an ``embedding_bag`` over its
items (sparse: no users x items matrix is ever dense), and the group's item targets gathered positions in
the (batch x items) log-softmax. Scores of unseen (ephemeral) groups come from their members alone.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import TrainingError
from benchmark.core.schema import INT_POS, NONNEG, Rule, Settings, setting
from benchmark.protocol.group_split import positives, visible_user_items
from models.base import FitContext, Recommender
from models.popularity_user import group_fold_of
from models.samplers import Batch, RowSampler
from models.trainer import Prepared, Trainer, TrainerConfig, ValidationScore, history_frame

CHUNK_CELLS = 1 << 22  # (groups x items) scores computed at a time when scoring


# ---------------------------------------------------------------------------- sparse rows

class Rows:
    """CSR rows of item ids (a user's or a group's items) as tensors, gathered without a Python loop."""

    def __init__(self, ids: np.ndarray, items: np.ndarray, n_rows: int, device: torch.device):
        order = np.lexsort((items, ids))
        ids, items = np.asarray(ids, np.int64)[order], np.asarray(items, np.int64)[order]
        counts = np.bincount(ids, minlength=n_rows)
        self.indptr = torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.long, device=device)
        self.indices = torch.tensor(items, dtype=torch.long, device=device)
        self.counts = torch.tensor(counts, dtype=torch.long, device=device)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items, owner: the position in ``rows`` of each item, offsets: where each row's items start)."""
        counts = self.counts[rows]
        offsets = torch.cumsum(counts, 0) - counts
        owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
        at = self.indptr[rows][owner] + torch.arange(len(owner), device=rows.device) - offsets[owner]
        return self.indices[at], owner, offsets


def padded(group_of_row: np.ndarray, users: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, largest group) user ids, -1 where padded, from ``group row, user`` pairs (one per member)."""
    order = np.lexsort((users, group_of_row))
    rows, users = group_of_row[order], users[order]
    sizes = np.bincount(rows, minlength=n_rows)
    slot = np.arange(len(rows)) - (np.cumsum(sizes) - sizes)[rows]
    out = np.full((n_rows, max(1, int(sizes.max(initial=0)))), -1, dtype=np.int64)
    out[rows, slot] = users
    return out


# ---------------------------------------------------------------------------- the network

class GroupIMNetwork(nn.Module):
    """Encoder, attentional aggregator, group predictor and discriminator (module docstring)."""

    def __init__(self, n_items: int, dim: int, dropout: float):
        super().__init__()
        self.encoder = nn.Parameter(torch.empty(n_items, dim))   # W^T: a row per item, read as an embedding bag
        self.encoder_bias = nn.Parameter(torch.zeros(dim))
        self.transform = nn.Linear(dim, dim)
        self.user_predictor = nn.Linear(dim, n_items, bias=False)   # U: pre-training only
        self.attention = nn.Linear(dim, 1)
        self.group_predictor = nn.Linear(dim, n_items, bias=False)  # P
        self.discriminator_fc = nn.Linear(dim, dim)
        self.discriminator = nn.Bilinear(dim, dim, 1)
        self.dropout = float(dropout)
        for layer in (self.transform, self.attention, self.discriminator_fc):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.encoder.T)
        for layer in (self.user_predictor, self.group_predictor):
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.discriminator.weight)   # the reference's initialisation
        nn.init.zeros_(self.discriminator.bias)

    def hidden(self, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """tanh(W x + b) of each bag (a user's normalised item vector), input dropout while training."""
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout, training=True)
        bag = F.embedding_bag(items, self.encoder, offsets, mode="sum", per_sample_weights=weights)
        return torch.tanh(bag + self.encoder_bias)

    def embed(self, items, offsets, weights) -> torch.Tensor:
        """e_u = tanh(T tanh(W x + b) + c)."""
        return torch.tanh(self.transform(self.hidden(items, offsets, weights)))

    def aggregate(self, members: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(group representation (B, D), attention weights (B, G): zero on padding, summing to one)."""
        logits = torch.tanh(self.attention(members)).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return (weights.unsqueeze(-1) * members).sum(dim=1), weights

    def discriminate(self, group: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """D(h_g, e_u) for every user of ``users`` (B, N, D) against its row's group (B, D) -> (B, N)."""
        g = torch.tanh(self.discriminator_fc(group)).unsqueeze(1).expand(-1, users.shape[1], -1)
        u = torch.tanh(self.discriminator_fc(users))
        return self.discriminator(u.contiguous(), g.contiguous()).squeeze(-1)


@dataclass(frozen=True)
class GroupIMConfig(Settings):
    """conf/model/groupim.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    dim: int = setting(INT_POS, 64)
    dropout: float = setting(Rule(float, low=0, high=1, high_open=True), 0.4)
    lambda_mi: float = setting(NONNEG, 1.0)
    negatives: int = setting(INT_POS, 5)
    eta: float = setting(Rule(float, low=0, high=1), 0.5)
    pretrain_epochs: int = setting(Rule(int, low=0), 100)
    pretrain_lr: float = setting(Rule(float, low=0, low_open=True), 0.01)
    pretrain_mi_epochs: int = setting(Rule(int, low=0), 10)


class GroupIM(Recommender):
    """GroupIM behind the Recommender interface; scores groups itself (models.base.GroupScorer)."""

    def __init__(self, name: str = "groupim", dim: int = 64, dropout: float = 0.4, lambda_mi: float = 1.0,
                 negatives: int = 5, eta: float = 0.5, pretrain_epochs: int = 100, pretrain_lr: float = 0.01,
                 pretrain_mi_epochs: int = 10, trainer: dict[str, Any] | None = None, seed: int = 0):
        self.settings = GroupIMConfig(dim=dim, dropout=dropout, lambda_mi=lambda_mi, negatives=negatives, eta=eta,
                                      pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr,
                                      pretrain_mi_epochs=pretrain_mi_epochs)  # refuses a bad value, naming its key
        self.name, self.seed = name, int(seed)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="groupim"), self.seed, name="GroupIM",
                               divergence_hint=f"or model.lambda_mi (now {lambda_mi})")
        self.device = self.trainer.device
        self.net: GroupIMNetwork | None = None
        self.history: list[dict[str, float]] = []
        self.refit_history: list[dict[str, float]] = []
        self.pretrain_history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.rating_scale = (0.0, 1.0)

    # ------------------------------------------------------------------------ data

    def _user_rows(self, user_items: pd.DataFrame) -> None:
        """The users' visible items as CSR rows and each bag's weights (1 / sqrt(count): L2 per user)."""
        self.n_users = int(max(user_items["user"].max() + 1 if len(user_items) else 0, self.n_users_known))
        # one row more, empty: where a user never seen in training is looked up (its item vector is zero)
        self.users = Rows(user_items["user"].to_numpy(), user_items["item"].to_numpy(), self.n_users + 1, self.device)
        self.user_norm = 1.0 / self.users.counts.clamp(min=1).double().sqrt().float()
        # item -> users (for item-biased corrupted users) and each item's user count
        self.item_users = Rows(user_items["item"].to_numpy(), user_items["user"].to_numpy(), self.n_items, self.device)

    def _bags(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items, owner, offsets = self.users.gather(users.clamp(min=0))
        return items, offsets, self.user_norm[users.clamp(min=0)][owner]

    def _members_embedded(self, net: GroupIMNetwork, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(member embeddings (B, G, D), mask (B, G)) of a padded member matrix (-1: padding)."""
        mask = members >= 0
        flat = members[mask]
        embedded = net.embed(*self._bags(flat))
        out = embedded.new_zeros((*members.shape, embedded.shape[1]))
        out[mask] = embedded
        return out, mask

    def _corrupted(self, rows: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """(B, negatives) users outside each group: with probability eta in proportion to how many of the
        group's items they have (one of the group's items drawn by its user count, then one of its users),
        else uniform over the users (the reference's eta = 0.5 mix)."""
        b, k, gen, device = len(rows), self.settings.negatives, self.generator, rows.device
        counts = self.group_items.counts[rows]
        items, owner, offsets = self.group_items.gather(rows)
        cells = torch.zeros(b, max(1, int(counts.max())), dtype=torch.float64, device=device)
        cells[owner, torch.arange(len(items), device=device) - offsets[owner]] = self.item_users.counts[items].double()
        has = cells.sum(dim=1) > 0
        cells[~has, 0] = 1.0
        # every draw on the CPU from the model's seeded generator (a CUDA run draws the same users)
        slot = torch.multinomial(cells.cpu(), k, replacement=True, generator=gen).to(device)
        at = (self.group_items.indptr[rows][:, None] + slot).clamp(max=max(0, len(self.group_items.indices) - 1))
        item = self.group_items.indices[at]
        deg = self.item_users.counts[item].clamp(min=1)
        pick = (torch.rand(b, k, generator=gen, dtype=torch.float64).to(device) * deg).long().clamp(max=deg - 1)
        biased = self.item_users.indices[(self.item_users.indptr[item] + pick).clamp(
            max=max(0, len(self.item_users.indices) - 1))]
        uniform = torch.randint(0, self.n_users, (b, k), generator=gen).to(device)
        use_biased = (torch.rand(b, k, generator=gen).to(device) < self.settings.eta) & has[:, None]
        users = torch.where(use_biased, biased, uniform)
        for _ in range(4):  # a member drawn is drawn again uniformly (rejection; one left after 4 rounds is rare)
            clash = (users[:, :, None] == members[:, None, :]).any(dim=2)
            if not bool(clash.any()):
                break
            users[clash] = torch.randint(0, self.n_users, (int(clash.sum()),), generator=gen).to(device)
        return users

    # ------------------------------------------------------------------------ losses

    def _likelihood(self, logits: torch.Tensor, row: torch.Tensor, item: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """- mean over the batch of sum_i target[b, i] log softmax(logits)[b, i], target given sparse."""
        log_p = torch.log_softmax(logits, dim=1)
        return -(log_p[row, item] * weight).sum() / logits.shape[0]

    def loss(self, net: GroupIMNetwork, batch: Batch, parts: tuple[str, ...] = ("group", "mi", "user_group")
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_G + L_MI + lambda_mi L_UG on a batch of training-group rows (module docstring)."""
        rows = batch[0]
        members = self.train_members[rows]
        embedded, mask = self._members_embedded(net, members)
        group, _ = net.aggregate(embedded, mask)
        out: dict[str, torch.Tensor] = {}
        # MI: members (1) against corrupted users (0), every real member and negative counted once
        negatives = self._corrupted(rows, members)
        corrupted = net.embed(*self._bags(negatives.reshape(-1))).reshape(*negatives.shape, -1)
        observed = net.discriminate(group, embedded)
        scores = torch.cat([observed[mask], net.discriminate(group, corrupted).reshape(-1)])
        labels = torch.cat([torch.ones_like(observed[mask]), torch.zeros(negatives.numel(), device=scores.device)])
        out["mi"] = F.binary_cross_entropy_with_logits(scores, labels)
        if "group" in parts or "user_group" in parts:
            logits = net.group_predictor(group)
            items, owner, _ = self.group_items.gather(rows)
            counts = self.group_items.counts[rows].clamp(min=1).float()
            out["group"] = self._likelihood(logits, owner, items, 1.0 / counts[owner])
            # members' items, each member weighted by sigmoid(D) (no gradient) / its item count / group size
            member_rows, slots = mask.nonzero(as_tuple=True)
            users = members[member_rows, slots]
            weight = torch.sigmoid(observed.detach()[member_rows, slots]) / mask.sum(dim=1)[member_rows]
            u_items, u_owner, _ = self.users.gather(users)
            weight = weight[u_owner] / self.users.counts[users].clamp(min=1)[u_owner].float()
            out["user_group"] = self._likelihood(logits, member_rows[u_owner], u_items, weight)
        total = sum(out[p] * (self.settings.lambda_mi if p == "user_group" else 1.0) for p in parts)
        return total, {p: out[p] for p in parts}

    def _pretrain_loss(self, net: GroupIMNetwork, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Multinomial likelihood of each user's items under softmax(U tanh(W x_u + b)) (the reference's
        pre-training: the binary item vector as target, not normalised)."""
        users = batch[0]
        items, offsets, weights = self._bags(users)
        logits = net.user_predictor(net.hidden(items, offsets, weights))
        _, owner, _ = self.users.gather(users)
        loss = self._likelihood(logits, owner, items, torch.ones(len(items), device=logits.device))
        return loss, {"user": loss}

    # ------------------------------------------------------------------------ fit

    def fit(self, train: pd.DataFrame, context: FitContext) -> "GroupIM":
        fold = group_fold_of(context, self.name, "a user preference encoder and the members' attention")
        self.fold = fold
        self.rating_scale = context.rating_scale
        self.n_items = int(max(fold.n_items, context.dataset.ratings["item"].max() + 1 if len(train) else 0))
        visible = visible_user_items(train, fold)
        self.n_items = int(max(self.n_items, visible["item"].max() + 1 if len(visible) else 0))
        memberships = context.groups.members[["group", "user"]].drop_duplicates()
        self.n_users_known = int(max(memberships["user"].to_numpy().max(initial=-1), train["user"].max()) + 1)
        self._user_rows(visible)
        self.memberships = memberships
        self.pretrained = self._pretrain(train, context)
        result = self.trainer.train(lambda rows, part: self._setup(rows, part, context), self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        self.net.eval()
        return self

    def _phase_trainer(self, epochs: int, name: str, lr: float | None = None) -> Trainer:
        config = dataclasses.replace(self.trainer.config, fixed_epochs=epochs, lr=lr or self.trainer.config.lr,
                                     progress=False)
        return Trainer(config, self.seed, name=f"GroupIM {name}")

    def _pretrain(self, train: pd.DataFrame, context: FitContext) -> dict[str, torch.Tensor]:
        """The encoder and U fitted on the user-train users' items (once per fit); the weights every network
        of the fit starts from."""
        torch.manual_seed(self.seed)
        net = GroupIMNetwork(self.n_items, self.settings.dim, self.settings.dropout).to(self.device)
        if self.settings.pretrain_epochs == 0:
            return copy.deepcopy(net.state_dict())
        users = torch.tensor(np.unique(positives(train)["user"].to_numpy(np.int64)), device=self.device)
        logged = dataclasses.replace(context, log_metrics=lambda m, s=None: context.log_metrics(
            {f"pretrain_{k}": v for k, v in m.items()}, s))
        result = self._phase_trainer(self.settings.pretrain_epochs, "user pre-training", self.settings.pretrain_lr).train(
            lambda rows, part: Prepared(net, RowSampler([users]), None), self._pretrain_loss, train, logged)
        self.pretrain_history = result.refit_history
        return copy.deepcopy(net.state_dict())

    def _setup(self, rows: pd.DataFrame, part, context: FitContext) -> Prepared:
        """The network of one phase: pre-trained weights, P = U, the MI pre-training, on the fold's group rows
        (``fit`` with early stopping on the group validation cases; ``train`` for the refit)."""
        groups = positives(self.fold.fit if part is not None else self.fold.train)[["group", "item"]]
        ids = np.unique(groups["group"].to_numpy(np.int64))
        self.group_ids = ids
        row_of = np.searchsorted(ids, groups["group"].to_numpy(np.int64))
        self.group_items = Rows(row_of, groups["item"].to_numpy(np.int64), len(ids), self.device)
        members = self.memberships[self.memberships["group"].isin(ids)]
        self.train_members = torch.tensor(padded(np.searchsorted(ids, members["group"].to_numpy(np.int64)),
                                                 members["user"].to_numpy(np.int64), len(ids)), device=self.device)
        torch.manual_seed(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        net = GroupIMNetwork(self.n_items, self.settings.dim, self.settings.dropout).to(self.device)
        net.load_state_dict(self.pretrained)
        with torch.no_grad():
            net.group_predictor.weight.copy_(net.user_predictor.weight)
        sampler = RowSampler([torch.arange(len(ids), device=self.device)], stream="groups")
        if self.settings.pretrain_mi_epochs:
            logged = dataclasses.replace(context, log_metrics=lambda m, s=None: context.log_metrics(
                {f"pretrain_mi_{k}": v for k, v in m.items()}, s))
            self._phase_trainer(self.settings.pretrain_mi_epochs, "MI pre-training").train(
                lambda r, p: Prepared(net, sampler, None), lambda n, b: self.loss(n, b, parts=("mi",)), rows, logged)
        self.net = net
        validation = None
        if part is not None:
            validation = ValidationScore(lambda n: context.group_validation.score(
                lambda m, p: self._score(n, m, p)), context.group_validation.name)
        return Prepared(net, sampler, validation)

    # ------------------------------------------------------------------------ scores

    @torch.no_grad()
    def _group_vectors(self, net: GroupIMNetwork, members: pd.DataFrame, groups: np.ndarray) -> torch.Tensor:
        members = members[members["group"].isin(groups)]
        matrix = padded(np.searchsorted(groups, members["group"].to_numpy(np.int64)),
                        members["user"].to_numpy(np.int64), len(groups))
        matrix = np.where(matrix < self.n_users, matrix, self.n_users)  # a user never seen: the empty row
        tensor = torch.tensor(matrix, device=self.device)
        out = []
        for start in range(0, len(groups), 1024):
            embedded, mask = self._members_embedded(net, tensor[start:start + 1024])
            out.append(net.aggregate(embedded, mask)[0])
        return torch.cat(out) if out else torch.zeros(0, self.settings.dim)

    @torch.no_grad()
    def _score(self, net: GroupIMNetwork, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        was = net.training
        net.eval()
        group_of = pairs["group"].to_numpy(np.int64)
        item = pairs["item"].to_numpy(np.int64)
        if len(group_of) and 0 <= group_of.min() and group_of.max() < 4 * len(group_of) + (1 << 20):
            present = np.bincount(group_of) > 0   # ids are small: a lookup table, no sort of the pairs
            groups, where = np.flatnonzero(present), (np.cumsum(present) - 1)[group_of]
        else:
            groups, where = np.unique(group_of, return_inverse=True)
            where = where.ravel()
        vectors = self._group_vectors(net, members, groups)
        out = np.empty(len(pairs), dtype=np.float64)
        step = max(1, CHUNK_CELLS // self.n_items)
        # the evaluation asks a grid (group after group): already in order
        order = np.arange(len(where)) if bool((where[1:] >= where[:-1]).all()) else np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(0, len(groups) + step, step))
        weight = net.group_predictor.weight
        for chunk, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if lo == hi:
                continue
            start = chunk * step
            logits = vectors[start:start + step] @ weight.T  # (chunk groups, items)
            rows = order[lo:hi]
            inside = item[rows] < self.n_items
            cell = torch.tensor((where[rows] - start) * self.n_items + np.minimum(item[rows], self.n_items - 1))
            out[rows] = np.where(inside, logits.reshape(-1)[cell].double().numpy(), -np.inf)
        net.train(was)
        return out

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """s_g of each (group, item) row: the group's logit (unseen groups from their members); an item outside
        the catalogue scores -inf."""
        if self.net is None:
            raise TrainingError("GroupIM.score_groups called before fit; call fit(train, context) first")
        return self._score(self.net, members[["group", "user"]].drop_duplicates(), pairs)

    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """A user's score of an item: the user as a group of one (P e_u, the reference's user evaluation)."""
        users = pairs["user"].to_numpy(np.int64)
        alone = pd.DataFrame({"group": np.unique(users), "user": np.unique(users)})
        return self.score_groups(alone, pd.DataFrame({"group": users, "item": pairs["item"].to_numpy(np.int64)}))

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, *self.rating_scale)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    def diagnostics(self) -> dict[str, float]:
        epochs = self.history or self.refit_history
        return {"epochs_trained": float(len(self.history)), "best_epoch": float(self.best_epoch),
                "pretrain_epochs": float(len(self.pretrain_history)),
                "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in epochs])) if epochs else 0.0,
                **({"refit_epochs": float(len(self.refit_history))} if self.refit_history else {})}

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
