"""Evaluators: each turns one fold's test predictions into metrics (and optional tables).

The runner calls every registered evaluator on the same predictions, so every model gets
the same metrics. A new evaluation is one function registered with ``@evaluator("name")``;
it returns ``EvalResult`` (metrics dict plus named tables saved as run artifacts).

Evaluators reach the model only through ``ctx.scorer`` (:class:`Scorer`): one object that checks
what the model returns and times the model's calls (:class:`ModelClock`), so the runner can count
the model's share of evaluation as prediction time without touching the model object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from benchmark.core.errors import TrainingError
from benchmark.core.registry import Registry
from benchmark.data import Dataset
from benchmark.evaluation.metrics import per_user_metrics, summarize
from benchmark.protocol.grouping import Groups
from models.base import GroupProfiler, RawScores, Recommender, ScoresAll


@dataclass
class EvalContext:
    dataset: Dataset
    train: pd.DataFrame
    predictions: pd.DataFrame        # user, item, rating, prediction[, score] (one fold's test rows)
    groups: Groups
    model: Recommender               # for isinstance checks and its name; scores come from ``scorer``
    config: Any                      # the ``eval`` config node (k, threshold, ...)
    clock: ModelClock = field(default_factory=lambda: ModelClock())
    shared: dict[str, Any] = field(default_factory=dict)  # built once, read by several evaluators (group truth)
    seed: int = 0                    # the run's seed: it seeds the tie rule (benchmark/protocol/ranking.py)
    group_fold: Any = None           # a group-item split's group stream (protocol/group_split.GroupFold), else None

    @cached_property
    def scorer(self) -> Scorer:
        """The model behind its timed, checked wrapper; the oracle reads the fold's test rows."""
        return Scorer(self.model, truth=self.predictions, clock=self.clock)

    @property
    def k(self) -> int:
        return int(self.config.k)

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)


def setting(node: Any, key: str, default: Any) -> Any:
    """``node.key`` of a config node (DictConfig, dict or object), ``default`` when absent or null."""
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None and default is not None else value


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def checked_predictions(model: Recommender, pairs: pd.DataFrame, what: str = "test pairs",
                        truth: pd.DataFrame | None = None,
                        predict: Callable[[pd.DataFrame], Any] | None = None) -> np.ndarray:
    """``model.predict(pairs)`` as floats, refusing a wrong count or non-finite values in one line.

    A model that reads the truth (the oracle, ``Recommender.reads_truth``) also gets the ``rating``
    column: the pairs' own when they carry one (test pairs), else looked up in ``truth`` (the
    fold's test rows), NaN where the pair has no test rating. ``predict`` replaces ``model.predict``
    (the evaluation passes the model's method timed by its clock: :class:`Scorer`).
    """
    columns = ["user", "item"]
    if getattr(model, "reads_truth", False):
        if "rating" not in pairs:
            known = (truth[["user", "item", "rating"]] if truth is not None
                     else pd.DataFrame(columns=["user", "item", "rating"]))
            # a left merge keeps the pairs' order
            pairs = pairs[columns].merge(known, on=columns, how="left", validate="many_to_one")
        columns.append("rating")
    prediction = np.asarray((predict or model.predict)(pairs[columns]), dtype=float)
    if prediction.shape != (len(pairs),) or not np.isfinite(prediction).all():
        raise TrainingError(f"model {getattr(model, 'name', model)} returned {np.size(prediction)} predictions "
                            f"with {int((~np.isfinite(prediction)).sum())} non-finite values for {len(pairs)} "
                            f"{what}; check the model's training losses and hyperparameters")
    return prediction


def checked_scores(model: Recommender, scores, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``scores`` as floats of ``shape``, refusing another shape or non-finite values in one line."""
    scores = np.asarray(scores, dtype=float)
    if scores.shape != shape or not np.isfinite(scores).all():
        raise TrainingError(f"model {getattr(model, 'name', model)} returned shape {scores.shape} with "
                            f"{int((~np.isfinite(scores)).sum())} non-finite values for {what} (expected "
                            f"{shape}); check the model's training losses")
    return scores


class ModelClock:
    """Seconds spent inside the model's own methods during evaluation (the ``predict`` stage's share).

    The runner counts them in ``predict`` and leaves the harness's work (candidates, ranking,
    aggregation, metrics) in ``evaluate``. Only :class:`Scorer` starts it, around each call of a model
    method; nothing of the model is replaced, so a method calling another (a ``score_all`` built on
    ``predict``) is still one call, and the model is the same object before, during and after.
    """

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0

    def timed(self, method: Callable) -> Callable:
        """``method`` (a bound method of the model) as a function whose calls this clock counts."""

        def call(*args, **kwargs):
            self._depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:  # a nested timed call counts once, in the outer one
                    self.seconds += time.perf_counter() - started

        return call


class Scorer:
    """The evaluation's one handle on the model: every score an evaluator needs comes through here.

    Each method checks what the model returns (count, shape, finite) and times the model's call with
    ``clock``; ``truth`` (the fold's test rows) is what a truth-reading model (the oracle) is given.
    """

    def __init__(self, model: Recommender, truth: pd.DataFrame | None = None, clock: ModelClock | None = None):
        self.model, self.truth, self.clock = model, truth, clock if clock is not None else ModelClock()

    def predict(self, pairs: pd.DataFrame, what: str = "pairs") -> np.ndarray:
        """Predicted ratings of ``user, item`` pairs (``checked_predictions``)."""
        return checked_predictions(self.model, pairs, what=what, truth=self.truth,
                                   predict=self.clock.timed(self.model.predict))

    def scored(self, pairs: pd.DataFrame, what: str = "pairs") -> tuple[np.ndarray, np.ndarray]:
        """(predicted ratings, ranking scores) of ``user, item`` pairs from one model call: a
        models.base.RawScores model's score before its clip and the clipped rating, else
        ``predict`` twice over (the same array)."""
        if not isinstance(self.model, RawScores):
            rating = self.predict(pairs, what)
            return rating, rating
        scores = checked_predictions(self.model, pairs, what=what, truth=self.truth,
                                     predict=self.clock.timed(self.model.raw_scores))
        return np.asarray(self.model.clip_rating(scores), dtype=float), scores

    def ranking_scores(self, pairs: pd.DataFrame, what: str = "pairs") -> np.ndarray:
        """What ``user, item`` pairs are ranked by: the score before clipping, else the rating."""
        if not isinstance(self.model, RawScores):
            return self.predict(pairs, what)
        return checked_predictions(self.model, pairs, what=what, truth=self.truth,
                                   predict=self.clock.timed(self.model.raw_scores))

    def score_matrix(self, users: np.ndarray, items: np.ndarray, chunk_pairs: int = 1 << 20) -> np.ndarray:
        """Ranking scores (:meth:`ranking_scores`) of every (user, item), shape ``(len(users),
        len(items))``: the model's ``score_all`` when it has one (models.base.ScoresAll), else the
        pairs, ``chunk_pairs`` pairs per call."""
        shape = (len(users), len(items))
        if isinstance(self.model, ScoresAll):
            scores = self.clock.timed(self.model.score_all)(users, items)
            return checked_scores(self.model, scores, shape, f"score_all of {shape[0]} users x {shape[1]} items")
        scores = np.empty(shape)
        rows = max(1, chunk_pairs // max(1, len(items)))
        for start in range(0, len(users), rows):
            chunk = users[start:start + rows]
            pairs = pd.DataFrame({"user": np.repeat(chunk, len(items)), "item": np.tile(items, len(chunk))})
            scores[start:start + len(chunk)] = self.ranking_scores(pairs, "catalogue pairs").reshape(len(chunk),
                                                                                                    len(items))
        return scores

    def score_groups(self, members: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """A group model's own scores of ``group, item`` pairs (models.base.GroupScorer)."""
        scores = self.clock.timed(self.model.score_groups)(members, pairs[["group", "item"]])
        return checked_scores(self.model, scores, (len(pairs),), f"score_groups of {len(pairs)} group-item pairs")

    def predict_groups(self, users) -> np.ndarray:
        """A profiling model's group label of each user (models.base.GroupProfiler)."""
        return np.asarray(self.clock.timed(self.model.predict_groups)(users))


@contextmanager
def model_clock(ctx: EvalContext) -> Iterator[ModelClock]:
    """The clock of ``ctx``'s scorer, for the runner: ``seconds`` = the model's share of the block.

    The block's own start is subtracted when it ends, so an earlier evaluation on the same context
    does not count twice.
    """
    before = ctx.clock.seconds
    clock = ModelClock()
    try:
        yield clock
    finally:
        clock.seconds = ctx.clock.seconds - before


Evaluator = Callable[[EvalContext], EvalResult]
EVALUATORS: Registry[Evaluator] = Registry("evaluator")
# evaluator name -> the name patterns (re.fullmatch) of its metrics that do not depend on the grouping
# (``grouping.*``) unless the model's fit reads the groups (``meta.reads_groups``): the report merges
# configurations that differ only in such settings (benchmark/report/merge.py)
GROUPING_FREE: dict[str, tuple[str, ...]] = {}
# the evaluators of group-item splits (benchmark/evaluation/group_item.py): a run with a group split
# (``EvalContext.group_fold``) runs only these, any other run only the others
GROUP_ITEM: set[str] = set()


def evaluator(name: str, grouping_free: tuple[str, ...] = (), group_item: bool = False
              ) -> Callable[[Evaluator], Evaluator]:
    """Register an evaluator; ``grouping_free``: patterns of its metrics the grouping cannot change for a
    model that does not read the groups (default: none, i.e. every metric may depend on the grouping);
    ``group_item``: it evaluates a group-item split's group cases (and runs only on such splits)."""
    GROUPING_FREE[name] = tuple(grouping_free)
    if group_item:
        GROUP_ITEM.add(name)
    return EVALUATORS.register(name)


def grouping_free(metric: str) -> bool:
    """True when an evaluator declares ``metric`` independent of the grouping (for models that do not read it)."""
    return any(re.fullmatch(pattern, metric) for patterns in GROUPING_FREE.values() for pattern in patterns)


@evaluator("user", grouping_free=(r"(user_)?(rmse|mae)", r"prediction_std", r"(?!(group|full|cold)_)[a-z_]*_at_\d+"))
def user_level(ctx: EvalContext) -> EvalResult:
    """RMSE, MAE, and P@k / R@k / NDCG@k averaged over users (metrics.py)."""
    per_user = per_user_metrics(ctx.predictions, ctx.k, ctx.threshold, seed=ctx.seed)
    metrics = summarize(ctx.predictions, ctx.k, ctx.threshold, per_user=per_user)
    # the mean of per-user errors, named apart from the pooled rmse / mae (each user weighs the same)
    metrics["user_rmse"] = float(per_user["user_rmse"].mean())
    metrics["user_mae"] = float(per_user["user_mae"].mean())
    metrics["prediction_std"] = float(ctx.predictions["prediction"].std(ddof=0))
    return EvalResult(metrics, {"per_user_metrics": per_user.reset_index()})


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "profile_") -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (scikit-learn), over the labels present."""
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {f"{prefix}accuracy": float(accuracy_score(y_true, y_pred)),
            f"{prefix}precision_macro": float(precision), f"{prefix}recall_macro": float(recall),
            f"{prefix}f1_macro": float(f1)}


def trivial_groups(ctx: EvalContext, users: np.ndarray) -> np.ndarray:
    """The trivial classifier's group of each user: the user's training group label when the user is seen
    in training (groups are made from the training part and fixed, so this is the truth), else the
    majority group of the training users."""
    seen = set(ctx.train["user"].unique())
    known = ctx.groups.labels[ctx.groups.labels.index.isin(seen)]
    majority = known.mode().iloc[0] if len(known) else ctx.groups.labels.mode().iloc[0]
    labels = ctx.groups.of(users)
    return np.where(pd.Series(users).isin(seen).to_numpy(), labels, majority)


@evaluator("profiling")
def profiling(ctx: EvalContext) -> EvalResult:
    """For models with a profiling head: classify the user of every test row into its group.

    ``profile_trivial_*``: the same scores for the trivial classifier (``trivial_groups``): what a profiling
    head must beat before its accuracy says anything."""
    if not isinstance(ctx.model, GroupProfiler):
        return EvalResult()
    users = ctx.predictions["user"].to_numpy()
    y_true = ctx.groups.of(users)
    y_pred = ctx.scorer.predict_groups(users)
    trivial = classification_metrics(y_true, trivial_groups(ctx, users), prefix="profile_trivial_")
    # one row per test user: what the profiling head said, so the profiling can be audited
    distinct = np.unique(users)
    audit = pd.DataFrame({"user": distinct, "group": ctx.groups.of(distinct),
                          "predicted_group": ctx.scorer.predict_groups(distinct)})
    return EvalResult({**classification_metrics(y_true, y_pred), **trivial}, {"predicted_groups": audit})


def evaluate(ctx: EvalContext) -> EvalResult:
    result = EvalResult()
    group_split = ctx.group_fold is not None
    for name, fn in EVALUATORS.items():
        if (name in GROUP_ITEM) != group_split:
            continue
        part = fn(ctx)
        result.metrics.update(part.metrics)
        result.tables.update(part.tables)
    return result
