"""The one interface every model implements (DMTL and every Surprise baseline alike).

The runner only ever calls ``fit(train, context)`` and ``predict(pairs)``; optional
capabilities are discovered by ``isinstance`` checks on the small protocols below, so the
runner knows nothing model-specific.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from benchmark.data import Dataset
from benchmark.protocol import ranking
from benchmark.protocol.folds import Fold
from benchmark.protocol.grouping import Groups


def _no_log(metrics: dict[str, float], step: int | None = None) -> None:
    return None


@dataclass(frozen=True)
class RankingMetric:
    """A score to maximise of a model's predictions on the validation candidates, for early stopping
    (``FitContext.ranking_metric``): ``score`` reads the validation rows (``user, item, rating``) with a
    ``prediction`` column; logged as ``val_<name>``. The layer that owns the metric code builds it
    (models do not import evaluation)."""

    name: str
    score: Callable[[pd.DataFrame], float]


# (members ``group, user``, pairs ``group, item``) -> one score per pair: GroupScorer.score_groups's contract
GroupScoreFunction = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class GroupValidation:
    """The fold's group validation cases as a score to maximise (``FitContext.group_validation``): early
    stopping, epoch choice and tuning of a model that scores groups itself read it, never the test part.

    ``score(score_fn)`` ranks every validation case with ``score_fn`` (the contract of
    ``GroupScorer.score_groups``: it gets the validation groups' members and the (group, item) pairs to
    score) under the harness's tie rule and returns the metric ``name`` (logged ``val_<name>``): NDCG@10 of
    each held-out training positive against its sampled negatives (``GroupFold.val`` and
    ``val_negatives``), or, on a split of ephemeral groups (Weeplaces), Recall@20 of the validation groups'
    items over the whole catalogue. The evaluation layer builds it (benchmark/evaluation/group_item.py
    ``group_validation``); models do not import evaluation."""

    name: str
    score: Callable[[GroupScoreFunction], float]
    n_cases: int = 0


@dataclass
class FitContext:
    """What a model may use besides the training ratings: side features, group labels
    (fit on training data only), the seed, a callback for per-epoch metrics, the fold whose training
    part ``fit`` receives (its validation part, carved once, is what a model early-stops on; None
    outside a job: the trainer then makes a fold of the frame), and an optional ranking metric to
    early-stop on instead of the validation loss; on a group split (``fold.group``), the group validation
    cases as a score (:class:`GroupValidation`)."""

    dataset: Dataset
    groups: Groups
    seed: int = 0
    log_metrics: Callable[[dict[str, float], int | None], None] = field(default=_no_log)
    fold: Fold | None = None
    ranking_metric: RankingMetric | None = None
    group_validation: GroupValidation | None = None

    @property
    def rating_scale(self) -> tuple[float, float]:
        return self.dataset.rating_scale


class Recommender(ABC):
    """fit on a training frame (``user, item, rating``); predict ratings for (user, item) pairs."""

    name: str = "recommender"
    # Only reference predictors (models/reference.py: the oracle) set this. The harness then hands
    # ``predict`` the true test rating of each pair as a ``rating`` column (NaN for pairs that have
    # none, e.g. unrated catalogue items); no other model ever sees a test rating.
    reads_truth: bool = False

    @abstractmethod
    def fit(self, train: pd.DataFrame, context: FitContext) -> Recommender:
        ...

    @abstractmethod
    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted ratings for ``pairs[['user', 'item']]``, one float per row, in row order."""

    def rank(self, user, items, k: int = 10, seed: int = 0) -> pd.DataFrame:
        """Top-k of ``items`` for ``user`` (``user, item, prediction``) by the model's score (before
        clipping, :class:`RawScores`), ties by the protocol's tie rule seeded by ``seed``
        (benchmark.protocol.ranking; Cornac's rank, built on predict)."""
        pairs = pd.DataFrame({"user": user, "item": np.asarray(items)})
        scores = self.raw_scores(pairs) if isinstance(self, RawScores) else self.predict(pairs)
        pairs["prediction"] = self.clip_rating(scores) if isinstance(self, RawScores) else scores
        order = ranking.order_rows(pairs["user"].to_numpy(), np.asarray(scores, dtype=float),
                                   pairs["item"].to_numpy(), seed)
        return pairs.take(order[:k]).reset_index(drop=True)


@runtime_checkable
class RawScores(Protocol):
    """A model whose predicted rating is its score clipped to the rating scale (Surprise, LensKit,
    neural MF). ``predict(pairs)`` must equal ``clip_rating(raw_scores(pairs))``: one definition,
    the clip on top. Rankings read the score before the clip (benchmark/protocol/ranking.py): a
    clipped score ties every item the model puts above the scale's top (LensKit's item-kNN tied 665
    of 943 ML-100K users at 5.0 beyond their 10th item), and the tie rule would then decide the
    metric. Rating metrics (RMSE, MAE, the P@k threshold) read the clipped rating."""

    def raw_scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """The score of each ``user, item`` row, before any clipping, in row order."""
        ...

    def clip_rating(self, scores: np.ndarray) -> np.ndarray:
        """Scores to predicted ratings (the clip to the rating scale)."""
        ...


@runtime_checkable
class GroupProfiler(Protocol):
    """A model that also classifies users into groups (DMTL's profiling head)."""

    def predict_groups(self, users) -> np.ndarray:
        ...


@runtime_checkable
class ScoresAll(Protocol):
    """A model that scores a whole user x item grid at once, faster than ``predict`` on the pairs.

    Full-catalogue evaluation (benchmark/evaluation/full_ranking.py) uses it when offered, else the
    pairs in chunks. It must equal the model's ranking score on the same pairs: ``raw_scores`` for a
    :class:`RawScores` model, else ``predict`` (one definition per model).
    """

    def score_all(self, users, items) -> np.ndarray:
        """Ranking scores, shape ``(len(users), len(items))``; row u, column i = (users[u], items[i])."""
        ...


@runtime_checkable
class GroupScorer(Protocol):
    """A model that scores groups itself, instead of having its members' ratings aggregated.

    Group recommenders with group embeddings or member attention (AGREE, ConsRec, ...) implement
    it. The evaluation then ranks every group's candidates (test items, the catalogue) by these
    scores, through the same ranking and metrics as users and as the member-aggregated groups of a
    user-level model (benchmark/evaluation/scoring.py); its group metrics are logged under the
    strategy ``model`` (``group_model_ndcg_at_10``, ``full_group_model_ndcg_at_10``) in place of
    ``mean`` / ``least_misery`` / ``most_pleasure``. Such a model is still a Recommender: ``predict``
    gives the user-level metrics.
    """

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """One score per row of ``pairs`` (``group, item``), in row order: the group's predicted rating.

        ``members`` (``group, user``, one row per distinct membership) lists the members of every
        group in ``pairs``: a model with learned group embeddings looks the group up by id (the ids of
        ``FitContext.groups.members`` for harness-made groups, of ``dataset.groups`` for real ones),
        a member-based model reads the members (it then also scores groups it never saw). Scores are
        on the rating scale: the test-items metrics read them as ratings (recommended = in the top k
        and >= ``eval.threshold``; group RMSE). They must be finite, and a (group, item) pair must get
        the same score whatever else the call asks for (the evaluation asks a run of groups at a time).
        """
        ...


@runtime_checkable
class Diagnosed(Protocol):
    """A model that reports extra metrics and artifacts after fitting (losses, attention...)."""

    def diagnostics(self) -> dict[str, float]:
        ...

    def artifacts(self) -> dict[str, Any]:
        """file name -> DataFrame (saved as CSV) or dict (saved as JSON)."""
        ...


@runtime_checkable
class ValidationScored(Protocol):
    """A model that early-stops on the validation part of its fold (benchmark/protocol/folds.py), and reports
    its rating error there, so the runner can refuse a diverged fit (benchmark/evaluation/divergence.py)."""

    def validation_scores(self) -> tuple[float, float]:
        """(rating MSE of the kept weights on the validation part, MSE there of the fitting part's
        mean rating: the trivial predictor)."""
        ...
