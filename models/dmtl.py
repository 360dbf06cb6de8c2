"""DMTL (arXiv 2504.06274): joint group profiling and rating prediction, one shared network.
(Over 400 lines on purpose: network, loss, encoding, inference, diagnostics and typed config are one
model's definition, read as one.)

    hu = act(E_u[user] + W_u xu + b_u)          user id embedding + standardized side features
    hi = act(E_i[item] + W_i xi + b_i)          item id embedding + standardized side features
    α  = softmax(W_a [hu ; hi] + b_a)           over hi's di dimensions (ablations: α = 1, α = 1/di)
    zg = dropout(act(W_s [hu ; α ⊙ hi] + b_s))  the shared layer both heads read
    profile logits = W_p zg + b_p               K groups of the grouping step (label: the user's group)
    ŷ  = min + (max - min) · sigmoid(w_r zg + b_r)
    L  = MSE(ŷ, r) + λ · CE(profile logits, group)

Index 0 of both embeddings is "unknown id" (kept at zero): users or items unseen in training
are predicted from their side features alone. Every choice the paper leaves open is listed
in docs/protocol.md ("## DMTL"). ``DMTLNetwork`` and ``DMTL.loss`` are the whole model: it
trains as written, by autograd and Adam in the shared trainer (models/trainer.py), so editing
the network is all a change of architecture takes.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.preprocessing import StandardScaler
from torch import nn

from benchmark.core.errors import TrainingError
from benchmark.core.schema import INT_POS, Rule, Settings, setting
from models.base import FitContext, Recommender
from models.samplers import RowSampler
from models.trainer import Prepared, Trainer, TrainerConfig, history_frame

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def _softmax_attention(layer: nn.Module | None, hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.softmax(layer(torch.cat([hu, hi], dim=1)), dim=1)


def _no_attention(layer: nn.Module | None, hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(hi)


def _uniform_attention(layer: nn.Module | None, hu: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.full_like(hi, 1.0 / hi.shape[1])


# model.attention -> α(hu, hi); only "softmax" has parameters (W_a, b_a)
ATTENTION: dict[str, Callable[[nn.Module | None, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax_attention, "none": _no_attention, "uniform": _uniform_attention,
}

def rating_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_rec; module-level so a test can replace it to force a non-finite loss."""
    return F.mse_loss(prediction, target)


def profile_loss(logits: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """L_profile: cross-entropy of the profiling head against the user's group id."""
    return F.cross_entropy(logits, group)


def objective(l_rec: torch.Tensor, l_profile: torch.Tensor, lambda_profile: float) -> torch.Tensor:
    """L = L_rec + λ L_profile. At λ = 0 (the single-task model) the profiling loss is only measured,
    never back-propagated, so it contributes exactly nothing to any gradient."""
    return l_rec + lambda_profile * l_profile if lambda_profile > 0 else l_rec


class _NoFeatures:
    """The scaler of a side with no feature columns (CAMRa2011: neither users nor items have any): the
    side-feature part of h = act(E[id] + W x + b) is then empty and DMTL uses its id embeddings only."""

    mean_ = np.zeros(0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return values


def _scaler(values: np.ndarray) -> StandardScaler | _NoFeatures:
    """StandardScaler fitted on ``values`` (rows x features), or ``_NoFeatures`` for zero columns."""
    return StandardScaler().fit(values) if values.shape[1] else _NoFeatures()


class DMTLNetwork(nn.Module):
    def __init__(self, n_users: int, n_items: int, user_features: int, item_features: int, n_groups: int,
                 user_dim: int, item_dim: int, shared_dim: int, activation: str, dropout: float,
                 attention: str, rating_scale: tuple[float, float], mean_rating: float):
        super().__init__()
        self.user_embedding = nn.Embedding(n_users + 1, user_dim, padding_idx=0)
        self.item_embedding = nn.Embedding(n_items + 1, item_dim, padding_idx=0)
        # small init: the id part starts as a perturbation of the side-feature part
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=0.1)
            with torch.no_grad():
                table.weight[0].zero_()
        self.user_projection = nn.Linear(user_features, user_dim)
        self.item_projection = nn.Linear(item_features, item_dim)
        self.attention_layer = nn.Linear(user_dim + item_dim, item_dim) if attention == "softmax" else None
        self.attention = ATTENTION[attention]
        self.shared = nn.Linear(user_dim + item_dim, shared_dim)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.profile_head = nn.Linear(shared_dim, n_groups)
        self.rating_head = nn.Linear(shared_dim, 1)
        low, high = rating_scale
        self.low, self.span = float(low), float(high - low)
        # start the rating head at the training mean instead of mid-scale
        start = min(max((mean_rating - low) / self.span, 1e-3), 1 - 1e-3)
        nn.init.constant_(self.rating_head.bias, math.log(start / (1 - start)))

    def forward(self, user: torch.Tensor, item: torch.Tensor, xu: torch.Tensor, xi: torch.Tensor,
                profile: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """-> (rating prediction (b,), profile logits (b, K), attention α (b, di)). ``profile=False``
        (rating-only prediction) skips the K-way profiling head and returns None for its logits;
        everything else is the same computation. An edited network whose ``forward`` has no
        ``profile`` argument still works: DMTL then runs its whole forward when predicting."""
        hu = self.act(self.user_embedding(user) + self.user_projection(xu))
        hi = self.act(self.item_embedding(item) + self.item_projection(xi))
        alpha = self.attention(self.attention_layer, hu, hi)
        zg = self.dropout(self.act(self.shared(torch.cat([hu, alpha * hi], dim=1))))
        rating = self.low + self.span * torch.sigmoid(self.rating_head(zg).squeeze(1))
        return rating, self.profile_head(zg) if profile else None, alpha

    def flops_per_sample(self) -> int:
        """Forward FLOPs of one (user, item) row: 2 per multiply-add of every dense layer."""
        layers = [self.user_projection, self.item_projection, self.shared, self.profile_head, self.rating_head]
        if self.attention_layer is not None:
            layers.append(self.attention_layer)
        return sum(2 * layer.in_features * layer.out_features for layer in layers)


@dataclass
class _Encoded:
    """One frame's rows as tensors: id indices (0 = unknown), targets, and the standardized side
    features as per-user / per-item tables with a table row per rating (``xu`` / ``xi`` gather them)."""
    user: torch.Tensor
    item: torch.Tensor
    user_table: torch.Tensor
    user_feature: torch.Tensor
    item_table: torch.Tensor
    item_feature: torch.Tensor
    rating: torch.Tensor | None = None
    group: torch.Tensor | None = None

    @property
    def xu(self) -> torch.Tensor:
        return self.user_table[self.user_feature]

    @property
    def xi(self) -> torch.Tensor:
        return self.item_table[self.item_feature]

    def inputs(self) -> list[torch.Tensor]:
        """The network's inputs, one row per rating: user, item, xu, xi."""
        return [self.user, self.item, self.xu, self.xi]

    def rows(self) -> list[torch.Tensor]:
        """The trainer's tensors, one row per rating: user, item, the rows of xu and xi in the feature
        tables, rating, group. ``DMTL.loss`` gathers xu and xi a batch at a time, so no per-rating
        feature matrix (14 floats a rating) is ever built for the whole training set."""
        return [self.user, self.item, self.user_feature, self.item_feature, self.rating, self.group]

    def take(self, index: torch.Tensor) -> "_Encoded":
        """These rows at ``index`` (same feature tables)."""
        picked = {name: getattr(self, name).index_select(0, index) for name in
                  ("user", "item", "user_feature", "item_feature", "rating", "group") if getattr(self, name) is not None}
        return _Encoded(user_table=self.user_table, item_table=self.item_table, **picked)

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class DMTLSizes(Settings):
    """``model.sizes``: every width is required (conf/model/dmtl.yaml sets them)."""

    PREFIX: ClassVar[str] = "model.sizes"
    FIX: ClassVar[str] = "set it in conf/model/dmtl.yaml"

    user_dim: int = setting(INT_POS)
    item_dim: int = setting(INT_POS)
    shared_dim: int = setting(INT_POS)


@dataclass(frozen=True)
class DMTLConfig(Settings):
    """conf/model/dmtl.yaml's hyperparameters (``model.*``; ``model.trainer`` is TrainerConfig's)."""

    lambda_profile: float = setting(Rule(float, low=0, fix="0 is the single-task model, e.g. model.lambda_profile=0.1"))
    attention: str = setting(Rule(str, choices=tuple(ATTENTION)))
    activation: str = setting(Rule(str, choices=tuple(ACTIVATIONS)))
    dropout: float = setting(Rule(float, low=0, high=1, high_open=True))
    sizes: DMTLSizes | None = None


class DMTL(Recommender):
    """The paper's multi-task network behind the Recommender interface (also a GroupProfiler
    and Diagnosed: see ``predict_groups``, ``diagnostics`` and ``artifacts``)."""

    def __init__(self, name: str = "dmtl", lambda_profile: float = 0.5, attention: str = "softmax",
                 sizes: dict[str, int] | None = None, activation: str = "relu", dropout: float = 0.1,
                 trainer: dict[str, Any] | None = None, seed: int = 0):
        self.name = name
        sizes = dict(sizes or {})
        trainer = dict(trainer or {})
        DMTLConfig(lambda_profile=lambda_profile, attention=attention, activation=activation, dropout=dropout,
                   sizes=DMTLSizes.from_mapping(sizes))  # refuses a bad value, naming its key
        self.lambda_profile = float(lambda_profile)
        self.attention = attention
        self.sizes = sizes
        self.activation = activation
        self.dropout = float(dropout)
        self.seed = int(seed)
        self.trainer = Trainer(TrainerConfig.from_mapping(trainer, model="dmtl"), self.seed, name="DMTL",
                               divergence_hint=f"or model.lambda_profile (now {self.lambda_profile})")
        self.device = self.trainer.device
        self.net: DMTLNetwork | None = None
        self.history: list[dict[str, float]] = []       # the early-stopping epochs
        self.refit_history: list[dict[str, float]] = []  # the refit's epochs (trainer.refit)
        self.best_epoch = 0

    # ---- data -> tensors -------------------------------------------------------------------
    def _prepare_encoders(self, fit: pd.DataFrame, context: FitContext) -> None:
        """Id vocabularies and feature scalers from the fitting rows only (no validation/test data)."""
        self.user_vocab = pd.Index(np.unique(fit["user"].to_numpy()))
        self.item_vocab = pd.Index(np.unique(fit["item"].to_numpy()))
        users, items = context.dataset.user_features, context.dataset.item_features
        self.user_features = users.astype(float)
        self.item_features = items.astype(float)
        self.user_scaler = _scaler(self.user_features.reindex(self.user_vocab).fillna(0.0).to_numpy())
        self.item_scaler = _scaler(self.item_features.reindex(self.item_vocab).fillna(0.0).to_numpy())

    @staticmethod
    def _side(table: pd.DataFrame, scaler: StandardScaler, ids: np.ndarray) -> np.ndarray:
        # ids absent from the side-feature table get the training mean (0 after scaling)
        raw = table.reindex(ids).to_numpy()
        scaled = scaler.transform(np.where(np.isnan(raw), scaler.mean_, raw))
        return scaled.astype(np.float32)

    def _encode(self, frame: pd.DataFrame, groups: np.ndarray | None = None) -> _Encoded:
        users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
        # unique ids first: the feature lookups run per distinct id, then fan out per row
        u_ids, u_row = np.unique(users, return_inverse=True)
        i_ids, i_row = np.unique(items, return_inverse=True)
        as_tensor = self.trainer.tensor
        user_table = self._side(self.user_features, self.user_scaler, u_ids)
        item_table = self._side(self.item_features, self.item_scaler, i_ids)
        encoded = _Encoded(
            user=as_tensor(self.user_vocab.get_indexer(u_ids)[u_row] + 1, torch.long),
            item=as_tensor(self.item_vocab.get_indexer(i_ids)[i_row] + 1, torch.long),
            user_table=as_tensor(user_table, torch.float32), user_feature=as_tensor(u_row, torch.long),
            item_table=as_tensor(item_table, torch.float32), item_feature=as_tensor(i_row, torch.long))
        if "rating" in frame:
            encoded.rating = as_tensor(frame["rating"].to_numpy(), torch.float32)
        if groups is not None:
            encoded.group = as_tensor(groups, torch.long)
        return encoded

    # ---- training ----------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, context: FitContext) -> "DMTL":
        labels = context.groups.labels.reindex(train["user"].to_numpy())
        if labels.isna().any() or (labels < 0).any():  # grouping=members labels a user in no group -1
            raise TrainingError(f"DMTL: {int((labels.isna() | (labels < 0)).sum())} training rows have users without a group "
                                f"label; the grouping must label every user with training ratings")
        self.k = int(context.groups.k)
        labels = labels.to_numpy().astype(np.int64)
        # early stopping on the fold's validation part (carved once), then the refit on the whole training
        # part for the chosen number of epochs (trainer.refit): models/trainer.py, Trainer.train
        result = self.trainer.train(lambda rows, part: self._setup(train, labels, rows, part, context),
                                    self.loss, train, context)
        self.history, self.best_epoch, self.refit_history = result.history, result.best_epoch, result.refit_history
        self._summarize()
        return self

    def _setup(self, train: pd.DataFrame, labels: np.ndarray, rows: pd.DataFrame, part, context: FitContext) -> Prepared:
        """The model built on ``rows``: the fitting rows of ``part`` (early stopping, validation on
        ``part.val``), or the whole training part (``part`` None: the refit). Vocabularies, scalers, the
        network's mean-rating start and the profiling references come from ``rows`` only."""
        self._prepare_encoders(rows, context)
        # every training row encoded once, then split: fitting and validation rows share one side-feature
        # table per side, which the loss reads a batch at a time (_Encoded.rows)
        encoded = self._encode(train[["user", "item", "rating"]], labels)
        if part is not None:
            self.fit_data = encoded.take(self.trainer.tensor(np.flatnonzero(~part.mask), torch.long))
            self.val_data = encoded.take(self.trainer.tensor(np.flatnonzero(part.mask), torch.long))
        else:
            self.fit_data, self.val_data = encoded, None
        self._train_tables = (encoded.user_table, encoded.item_table)
        del encoded
        if part is not None:  # the trivial predictor's MSE on the validation part: the divergence check's yardstick
            truth = self.val_data.rating.double()
            self._mean_val_mse = float(((truth - self.fit_data.rating.double().mean()) ** 2).mean())
        # reference items for users without training rows (profiling of cold users)
        self.popular_items = rows["item"].value_counts().index[:50].to_numpy()
        self.fit_pairs = rows[["user", "item"]].reset_index(drop=True)

        low, high = context.rating_scale
        # no torch.use_deterministic_algorithms: every op used here is deterministic on CPU with one
        # thread, and the call imports torch._inductor (1.4 s, a sixth of a whole ML-100K fit)
        torch.manual_seed(self.seed)  # weights, then dropout masks
        self.net = DMTLNetwork(
            n_users=len(self.user_vocab), n_items=len(self.item_vocab),
            user_features=self.fit_data.user_table.shape[1], item_features=self.fit_data.item_table.shape[1],
            n_groups=self.k,
            user_dim=self.sizes["user_dim"], item_dim=self.sizes["item_dim"], shared_dim=self.sizes["shared_dim"],
            activation=self.activation, dropout=self.dropout, attention=self.attention,
            rating_scale=(low, high), mean_rating=float(rows["rating"].mean())).to(self.device)
        validation = None if part is None else \
            self.trainer.early_stopping(self.loss, self.val_data.rows(), context, part, self.predict)
        return Prepared(self.net, RowSampler(self.fit_data.rows()), validation)

    def loss(self, net: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's loss on a batch of rows (``RowSampler``): (user, item, xu row, xi row, rating, group)
        (``_Encoded.rows``) -> (L, {L_rec, L_profile}); xu and xi are gathered from the feature tables here."""
        user, item, user_row, item_row, target, group = batch
        user_table, item_table = self._train_tables
        rating, logits, _ = net(user, item, user_table.index_select(0, user_row), item_table.index_select(0, item_row))
        l_rec, l_prof = rating_loss(rating, target), profile_loss(logits, group)
        return objective(l_rec, l_prof, self.lambda_profile), {"rating_loss": l_rec, "profile_loss": l_prof}

    # ---- inference ---------------------------------------------------------------------------
    # pairs encoded and scored at a time: inference memory is O(CHUNK) whatever the frame's length
    # (the group-level evaluation asks for ~5 member x item pairs per rating: 50M at 10M ratings).
    # 16,384: a chunk's temporaries (~20 MB) are reused from the heap; at 65,536 the allocator maps
    # fresh pages for every chunk (0.16-0.19 page faults per pair) and a pair costs 0.70-0.75 us
    # instead of 0.46 (1M-rating model, one thread, docs/performance.md "Scaling to 10M ratings")
    CHUNK = 16384
    # with the profiling head, a chunk's logits and probabilities are rows x K: the rows shrink so that
    # they stay ~2M floats (K = 2,666 at 10M ratings: 786 rows, 8 MB, instead of 16,384 rows, 175 MB
    # of fresh pages per chunk)
    PROFILE_CHUNK_VALUES = 1 << 21

    @torch.no_grad()
    def _chunks(self, frame: pd.DataFrame, profile: bool = False,
                ) -> Iterator[tuple[int, pd.DataFrame, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """(start row, the frame's rows, ratings, profile logits or None, α) per chunk of ``frame``'s
        (user, item) pairs, in eval mode; each chunk is encoded on its own (no per-pair feature matrix
        of the whole frame) and the profiling head runs only when ``profile`` is true."""
        self.net.eval()
        # a network edited from an older forward(user, item, xu, xi) computes every head
        heads = {"profile": profile} if "profile" in inspect.signature(self.net.forward).parameters else {}
        size = max(64, min(self.CHUNK, self.PROFILE_CHUNK_VALUES // max(self.k, 1))) if profile else self.CHUNK
        for start in range(0, len(frame), size):
            rows = frame.iloc[start:start + size]
            rating, logits, alpha = self.net(*self._encode(rows).inputs(), **heads)
            yield start, rows, rating, logits, alpha

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise TrainingError("DMTL.predict called before fit; call fit(train, context) first")
        out = np.empty(len(pairs), dtype=float)
        for start, rows, rating, _, _ in self._chunks(pairs[["user", "item"]]):
            out[start:start + len(rows)] = rating.cpu().numpy()
        return out

    @torch.no_grad()
    def predict_groups(self, users) -> np.ndarray:
        """A user's group: the profiling head's probabilities averaged over the items the user rated
        in training (the head reads (user, item) pairs); users without training rows use the 50 most
        rated training items."""
        if self.net is None:
            raise TrainingError("DMTL.predict_groups called before fit; call fit(train, context) first")
        users = np.asarray(users)
        wanted, back = np.unique(users, return_inverse=True)
        known = self.fit_pairs[self.fit_pairs["user"].isin(wanted)]
        cold = np.setdiff1d(wanted, known["user"].unique())
        pairs = pd.concat([known, pd.DataFrame({"user": np.repeat(cold, len(self.popular_items)),
                                                "item": np.tile(self.popular_items, len(cold))})],
                          ignore_index=True)
        owner = torch.as_tensor(np.searchsorted(wanted, pairs["user"].to_numpy()), device=self.device)
        total = torch.zeros(len(wanted), self.k, device=self.device)
        for start, rows, _, logits, _ in self._chunks(pairs, profile=True):
            total.index_add_(0, owner[start:start + len(rows)], torch.softmax(logits, dim=1))
        return total.argmax(dim=1).cpu().numpy()[back]

    def validation_scores(self) -> tuple[float, float]:
        """(rating MSE of the kept (best-epoch) weights on the validation rows, the fitting rows'
        mean rating's MSE there): the runner refuses a fit worse than that trivial predictor. Both are
        the early-stopping phase's (a refit holds nothing out: the refit's epoch count is that phase's)."""
        kept = next(h for h in self.history if h["epoch"] == self.best_epoch)
        return float(kept["val_rating_loss"]), self._mean_val_mse

    # ---- diagnostics -------------------------------------------------------------------------
    def _summarize(self) -> None:
        """Final figures on the fitting rows: the paper's failure signatures (trivial attention,
        collapse to the mean) and what the attention favours per item feature. Accumulated a chunk
        of rows at a time (``_chunks``): no per-row α, score or feature matrix of the whole fit."""
        # Which item features' dims the attention favours: a feature f writes into hidden dim j
        # with share |W_i[j, f]| / sum_j |W_i[j, f]|; the attention a row gives f is di * sum_j α_j share_jf
        # (1 = the same as uniform attention, > 1 = the attention amplifies the dims carrying f).
        w = self.net.item_projection.weight.detach().abs().cpu().numpy()  # (di, F)
        share = w / np.clip(w.sum(axis=0, keepdims=True), 1e-12, None)
        di, n_features = share.shape
        ratings = np.empty(len(self.fit_pairs), dtype=float)
        entropy_sum, count = 0.0, np.zeros(n_features)
        score_present, score_all, entropy_present = np.zeros(n_features), np.zeros(n_features), np.zeros(n_features)
        for start, rows, rating, _, alpha in self._chunks(self.fit_pairs):
            ratings[start:start + len(rows)] = rating.cpu().numpy()
            alpha = alpha.cpu().numpy()
            weights = alpha / alpha.sum(axis=1, keepdims=True)  # α as a distribution (none -> uniform)
            entropy = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(axis=1) / math.log(di) if di > 1 \
                else np.ones(len(weights))
            score = di * weights @ share  # (rows, F)
            present = self.item_features.reindex(rows["item"].to_numpy()).fillna(0.0).to_numpy() > 0
            entropy_sum += float(entropy.sum(dtype=np.float64))
            count += present.sum(axis=0)
            score_present += (score * present).sum(axis=0)
            score_all += score.sum(axis=0)
            entropy_present += (entropy[:, None] * present).sum(axis=0)
        n_rows = len(self.fit_pairs)
        self._diagnostics = {
            "attention_entropy_ratio": entropy_sum / n_rows,
            "train_prediction_std": float(ratings.std()),
            "epochs_trained": float(len(self.history)),
            "best_epoch": float(self.best_epoch),
            **({  # absent under trainer.fixed_epochs: no early-stopping phase
                "best_val_loss": float(min(h["val_loss"] for h in self.history)),
                # the rating RMSE on the early-stopping part at the restored epoch: the report selects configurations by it
                "val_rmse": float(math.sqrt(self.history[self.best_epoch - 1]["val_rating_loss"])),
            } if self.history else {}),
            "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in self.history or self.refit_history])),
            # refitted on the whole training part for this many epochs (absent: trainer.refit=false)
            **({"refit_epochs": float(len(self.refit_history))} if self.refit_history else {}),
        }
        with np.errstate(invalid="ignore", divide="ignore"):
            self._attention_by_feature = pd.DataFrame({
                "feature": self.item_features.columns,
                "rows_with_feature": count.astype(np.int64),
                "attention_when_present": np.where(count > 0, score_present / count, np.nan),
                "attention_all_rows": score_all / n_rows,
                "entropy_ratio_when_present": np.where(count > 0, entropy_present / count, np.nan),
            }).sort_values("attention_when_present", ascending=False, ignore_index=True)

    def __getstate__(self) -> dict[str, Any]:
        # a saved model (model.pkl) keeps what predicting needs, not the encoded training rows
        state = self.__dict__.copy()
        for name in ("fit_data", "val_data", "_train_tables"):
            state.pop(name, None)
        return state

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diagnostics)

    def artifacts(self) -> dict[str, Any]:
        return {"attention_by_feature": self._attention_by_feature,
                "training_history": history_frame(self.history, self.refit_history)}

