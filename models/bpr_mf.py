"""BPR matrix factorisation (Rendle et al. 2009) on the shared trainer, for implicit feedback.

    s(u, i) = p_u · q_i + b_i
    L = -mean log σ(s(u, i) - s(u, j)) + reg · mean over the batch of (|p_u|² + |q_i|² + |q_j|² + b_i² + b_j²)

for each training pair (u, i) and a negative j drawn uniformly from the items u has no training
pair with (``models.samplers.PairwiseSampler``, seeded by the trainer's generator). Every training
pair is a positive, whatever its rating (implicit data: 1.0; CAMRa2011: any rating).

Early stopping (``Trainer.fit``) maximises the **sampled AUC on the validation part**: each
validation pair (u, i) of the fold's carve (``trainer.val_size`` of each user's pairs) is ranked
against ``val_negatives`` items drawn once, seeded, from the items u has no fitting or validation
pair with; its AUC is the share of those negatives scored below i (a tie counts one half), averaged
over the pairs. The validation BPR loss on the same negatives is logged beside it. Pairs whose user
or item has no fitting row are left out (nothing learned can rank them).

Index 0 of every table is "unknown id" (kept at zero): an unseen user scores items by their bias
(an item prior), an unseen item scores 0. Scores are preferences, not ratings: ``raw_scores`` is
what rankings read; ``predict`` clips them to the rating scale (models.base.RawScores), so the rating
metrics (RMSE, MAE) of this model mean nothing and the group-level ones are the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import TrainingError
from benchmark.core.schema import INT_POS, NONNEG, Rule, Settings, setting
from models.base import FitContext, Recommender
from models.samplers import PairwiseSampler
from models.trainer import (
    Prepared,
    Trainer,
    TrainerConfig,
    ValidationLoss,
    ValidationScore,
    fit_diagnostics,
    history_frame,
)


class BPRNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, init_std: float):
        super().__init__()
        self.user_factors = nn.Embedding(n_users + 1, factors, padding_idx=0)
        self.item_factors = nn.Embedding(n_items + 1, factors, padding_idx=0)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.user_factors.weight[0].zero_()
            self.item_factors.weight[0].zero_()

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """user (b,), item (b,) or (b, k) -> (scores of item's shape, squared norm of the item side read)."""
        p = self.user_factors(user)
        q, b = self.item_factors(item), self.item_bias(item).squeeze(-1)
        if item.dim() == 2:
            p = p.unsqueeze(1)
        return (p * q).sum(dim=-1) + b, (q * q).sum(dim=-1) + b * b


@dataclass(frozen=True)
class BPRMFConfig(Settings):
    """conf/model/bpr_mf.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    factors: int = setting(INT_POS, 64)
    reg: float = setting(NONNEG, 1e-4)
    init_std: float = setting(Rule(float, low=0, low_open=True), 0.1)
    val_negatives: int = setting(INT_POS, 100)


class BPRMF(Recommender):
    """User and item factors plus an item bias, trained by BPR on the shared trainer."""

    def __init__(self, name: str = "bpr_mf", factors: int = 64, reg: float = 1e-4, init_std: float = 0.1,
                 val_negatives: int = 100, trainer: dict[str, Any] | None = None, seed: int = 0):
        BPRMFConfig(factors=factors, reg=reg, init_std=init_std, val_negatives=val_negatives)
        self.name = name
        self.factors, self.reg, self.init_std = int(factors), float(reg), float(init_std)
        self.val_negatives = int(val_negatives)
        self.seed = int(seed)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="bpr_mf"), self.seed, name="BPR-MF",
                               divergence_hint=f"or model.reg (now {self.reg})")
        self.device = self.trainer.device
        self.net: BPRNetwork | None = None
        self.history: list[dict[str, float]] = []
        self.refit_history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.rating_scale = (-np.inf, np.inf)

    def _index(self, vocab: pd.Index, values) -> np.ndarray:
        return vocab.get_indexer(np.asarray(values)) + 1  # 0: unseen

    def loss(self, net: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR on (user, positive, negatives (b, k)) + reg x the L2 of what the batch read."""
        user, positive, negative = batch[0], batch[1], batch[2]
        pos, pos_norm = net(user, positive)
        neg, neg_norm = net(user, negative)
        bpr = -F.logsigmoid(pos.unsqueeze(1) - neg).mean()
        user_norm = (net.user_factors(user) ** 2).sum(dim=1)
        l2 = (user_norm + pos_norm + neg_norm.mean(dim=1)).mean()
        return bpr + self.reg * l2, {"bpr_loss": bpr}

    def fit(self, train: pd.DataFrame, context: FitContext) -> BPRMF:
        self.rating_scale = context.rating_scale
        result = self.trainer.train(lambda rows, part: self._setup(rows, part), self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        return self

    def _pairs(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(user index, item index) of the distinct pairs of ``rows`` in the current vocabularies."""
        pairs = rows[["user", "item"]].drop_duplicates()
        return self._index(self.user_vocab, pairs["user"]), self._index(self.item_vocab, pairs["item"])

    def _setup(self, rows: pd.DataFrame, part) -> Prepared:
        """The model on ``rows`` (the fitting rows of ``part``, or the whole training part for the refit)."""
        self.user_vocab = pd.Index(np.unique(rows["user"].to_numpy()))
        self.item_vocab = pd.Index(np.unique(rows["item"].to_numpy()))
        users, items = self._pairs(rows)
        torch.manual_seed(self.seed)
        n_items = len(self.item_vocab)
        self.net = BPRNetwork(len(self.user_vocab), n_items, self.factors, self.init_std).to(self.device)
        tensor = lambda values: self.trainer.tensor(values, torch.long)  # noqa: E731
        sampler = PairwiseSampler(tensor(users), tensor(items), n_items, item_offset=1)
        validation = None if part is None else self._validation(part.val, users, items, n_items)
        return Prepared(self.net, sampler, validation)

    def _validation(self, val: pd.DataFrame, users: np.ndarray, items: np.ndarray, n_items: int) -> ValidationScore:
        """Sampled AUC of the validation pairs against ``val_negatives`` seeded negatives each (module docstring)."""
        val_users, val_items = self._pairs(val)
        seen = (val_users > 0) & (val_items > 0)
        if not seen.any():
            raise TrainingError(f"{self.name}: no validation pair has a user and an item with fitting rows; "
                                f"raise trainer.val_size or use more data")
        val_users, val_items = val_users[seen], val_items[seen]
        known = (torch.as_tensor(np.r_[users, val_users]), torch.as_tensor(np.r_[items, val_items]))
        drawer = PairwiseSampler(torch.as_tensor(val_users), torch.as_tensor(val_items), n_items,
                                 negatives=self.val_negatives, item_offset=1, known=known)
        negatives = drawer.draw_negatives(torch.as_tensor(val_users), torch.Generator().manual_seed(self.seed))
        tensors = [self.trainer.tensor(val_users, torch.long), self.trainer.tensor(val_items, torch.long),
                   negatives.to(self.device)]

        def auc(net: nn.Module) -> float:
            total = 0.0
            for start in range(0, len(tensors[0]), 4096):
                user, item, negative = (t[start:start + 4096] for t in tensors)
                pos, neg = net(user, item)[0].unsqueeze(1), net(user, negative)[0]
                total += float(((neg < pos).float() + 0.5 * (neg == pos).float()).mean(dim=1).sum())
            return total / len(tensors[0])

        return ValidationScore(auc, "sampled_auc", also=ValidationLoss(self.loss, tensors, monitor="bpr_loss"))

    @torch.no_grad()
    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """p_u · q_i + b_i, before the clip to the rating scale (models.base.RawScores: rankings read it)."""
        if self.net is None:
            raise TrainingError("BPRMF.predict called before fit; call fit(train, context) first")
        self.net.eval()
        user = self.trainer.tensor(self._index(self.user_vocab, pairs["user"]), torch.long)
        item = self.trainer.tensor(self._index(self.item_vocab, pairs["item"]), torch.long)
        scores = [self.net(user[s:s + 65536], item[s:s + 65536])[0] for s in range(0, len(user), 65536)]
        return torch.cat(scores).cpu().numpy().astype(float) if scores else np.zeros(0)

    @torch.no_grad()
    def score_all(self, users, items) -> np.ndarray:
        """``raw_scores`` of every (user, item) as one product (models.base.ScoresAll: full ranking)."""
        if self.net is None:
            raise TrainingError("BPRMF.score_all called before fit; call fit(train, context) first")
        u = self.trainer.tensor(self._index(self.user_vocab, users), torch.long)
        i = self.trainer.tensor(self._index(self.item_vocab, items), torch.long)
        q = self.net.item_factors(i)
        scores = self.net.user_factors(u) @ q.T + self.net.item_bias(i).squeeze(-1)
        return scores.cpu().numpy().astype(float)

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, *self.rating_scale)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    def diagnostics(self) -> dict[str, float]:
        # best_val_sampled_auc only where there was an early-stopping phase (not under trainer.fixed_epochs)
        return fit_diagnostics(self.history, self.refit_history, self.best_epoch, best=("val_sampled_auc", max))

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
