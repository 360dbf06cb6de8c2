"""Neural biased matrix factorisation: DMTL's control, trained exactly like DMTL (models/trainer.py).

    ŷ = μ + b_u + b_i + p_u · q_i          μ: the fitting rows' mean rating (fixed)
    L = MSE(ŷ, r) + reg · mean over the batch of (|p_u|² + |q_i|² + b_u² + b_i²)

No side features, no attention, no profiling head: the question it answers is whether DMTL's
architecture beats a plain model given the same optimiser, batches, budget and early stopping.
Index 0 of every table is "unknown id" (kept at zero), so unseen users or items get μ (+ the
known side's bias); predictions are clipped to the rating scale, as Surprise does.
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
from models.samplers import RowSampler
from models.trainer import Prepared, Trainer, TrainerConfig, history_frame


class NeuralMFNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, mean_rating: float, init_std: float):
        super().__init__()
        self.user_factors = nn.Embedding(n_users + 1, factors, padding_idx=0)
        self.item_factors = nn.Embedding(n_items + 1, factors, padding_idx=0)
        self.user_bias = nn.Embedding(n_users + 1, 1, padding_idx=0)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=init_std)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        with torch.no_grad():
            self.user_factors.weight[0].zero_()
            self.item_factors.weight[0].zero_()
        self.register_buffer("mean_rating", torch.tensor(float(mean_rating)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (rating prediction (b,), per-row squared norm of the parameters it read (b,))."""
        p, q = self.user_factors(user), self.item_factors(item)
        bu, bi = self.user_bias(user).squeeze(1), self.item_bias(item).squeeze(1)
        rating = self.mean_rating + bu + bi + (p * q).sum(dim=1)
        return rating, (p * p).sum(dim=1) + (q * q).sum(dim=1) + bu * bu + bi * bi


@dataclass(frozen=True)
class NeuralMFConfig(Settings):
    """conf/model/neural_mf.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    factors: int = setting(INT_POS, 64)
    reg: float = setting(NONNEG, 0.1)
    init_std: float = setting(Rule(float, low=0, low_open=True), 0.1)


class NeuralMF(Recommender):
    """Biased MF behind the Recommender interface, fitted by the shared trainer."""

    def __init__(self, name: str = "neural_mf", factors: int = 64, reg: float = 0.1, init_std: float = 0.1,
                 trainer: dict[str, Any] | None = None, seed: int = 0):
        NeuralMFConfig(factors=factors, reg=reg, init_std=init_std)  # refuses a bad value, naming its key
        self.name = name
        self.factors, self.reg, self.init_std = int(factors), float(reg), float(init_std)
        self.seed = int(seed)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="neural_mf"), self.seed, name="NeuralMF",
                               divergence_hint=f"or model.reg (now {self.reg})")
        self.device = self.trainer.device
        self.net: NeuralMFNetwork | None = None
        self.history: list[dict[str, float]] = []       # the early-stopping epochs
        self.refit_history: list[dict[str, float]] = []  # the refit's epochs (trainer.refit)
        self.best_epoch = 0

    def _encode(self, frame: pd.DataFrame) -> list[torch.Tensor]:
        """(user index, item index[, rating]) tensors; index 0 = an id unseen in the fitting rows."""
        tensors = [self.trainer.tensor(self.user_vocab.get_indexer(frame["user"].to_numpy()) + 1, torch.long),
                   self.trainer.tensor(self.item_vocab.get_indexer(frame["item"].to_numpy()) + 1, torch.long)]
        if "rating" in frame:
            tensors.append(self.trainer.tensor(frame["rating"].to_numpy(), torch.float32))
        return tensors

    def loss(self, net: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's loss on a batch of rows (user, item, rating): MSE + reg x the L2 of what it read."""
        rating, norms = net(batch[0], batch[1])
        mse = F.mse_loss(rating, batch[2])
        return mse + self.reg * norms.mean(), {"rating_loss": mse}

    def fit(self, train: pd.DataFrame, context: FitContext) -> NeuralMF:
        # early stopping on the fold's validation part (carved once), then the refit on the whole training
        # part for the chosen number of epochs (trainer.refit): models/trainer.py, Trainer.train
        result = self.trainer.train(lambda rows, part: self._setup(rows, part, context), self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        return self

    def _setup(self, rows: pd.DataFrame, part, context: FitContext) -> Prepared:
        """The model built on ``rows``: the fitting rows of ``part`` (early stopping on ``part.val``), or
        the whole training part (``part`` None: the refit). Vocabularies and μ come from ``rows`` only."""
        self.user_vocab = pd.Index(np.unique(rows["user"].to_numpy()))
        self.item_vocab = pd.Index(np.unique(rows["item"].to_numpy()))
        self.rating_scale = context.rating_scale
        torch.manual_seed(self.seed)
        self.net = NeuralMFNetwork(len(self.user_vocab), len(self.item_vocab), self.factors,
                                   float(rows["rating"].mean()), self.init_std).to(self.device)
        validation = None
        if part is not None:
            # early stopping on the validation MSE: the L2 term is a training device, not the target
            validation = self.trainer.early_stopping(self.loss, self._encode(part.val), context, part, self.raw_scores,
                                                     monitor="rating_loss")
            # the trivial predictor's validation MSE (the fitting rows' mean): the runner's divergence check
            self._mean_val_mse = float(((part.val["rating"].to_numpy() - rows["rating"].mean()) ** 2).mean())
        return Prepared(self.net, RowSampler(self._encode(rows)), validation)

    def validation_scores(self) -> tuple[float, float]:
        """(validation rating MSE of the kept weights, the fitting mean's MSE there): models.base.ValidationScored."""
        kept = next(h for h in self.history if h["epoch"] == self.best_epoch)
        return float(kept["val_rating_loss"]), self._mean_val_mse

    @torch.no_grad()
    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """The network's output before the clip to the rating scale (models.base.RawScores: ranking reads it)."""
        if self.net is None:
            raise TrainingError("NeuralMF.predict called before fit; call fit(train, context) first")
        self.net.eval()
        user, item = self._encode(pairs[["user", "item"]])
        rating = torch.cat([self.net(user[s:s + 65536], item[s:s + 65536])[0] for s in range(0, len(user), 65536)])
        return rating.cpu().numpy().astype(float)

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, *self.rating_scale)

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.clip_rating(self.raw_scores(pairs))

    def diagnostics(self) -> dict[str, float]:
        return {"epochs_trained": float(len(self.history)), "best_epoch": float(self.best_epoch),
                **({"best_val_loss": float(min(h["val_rating_loss"] for h in self.history))}
                   if self.history else {}),  # no early-stopping phase under trainer.fixed_epochs
                "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in self.history or self.refit_history])),
                # refitted on the whole training part for this many epochs (absent: trainer.refit=false)
                **({"refit_epochs": float(len(self.refit_history))} if self.refit_history else {})}

    def artifacts(self) -> dict[str, Any]:
        return {"training_history": history_frame(self.history, self.refit_history)}
