"""Evaluators: each turns one fold's test predictions into metrics (and optional tables).

The runner calls every registered evaluator on the same predictions, so every model gets
the same metrics. A new evaluation is one function registered with ``@evaluator("name")``;
it returns ``EvalResult`` (metrics dict plus named tables saved as run artifacts).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from benchmark.core.errors import TrainingError
from benchmark.core.registry import Registry
from benchmark.data import Dataset
from benchmark.evaluation.metrics import per_user_metrics, summarize
from benchmark.protocol.grouping import Groups
from models.base import GroupProfiler, Recommender


@dataclass
class EvalContext:
    dataset: Dataset
    train: pd.DataFrame
    predictions: pd.DataFrame        # user, item, rating, prediction (one fold's test rows)
    groups: Groups
    model: Recommender
    config: Any                      # the ``eval`` config node (k, threshold, ...)

    @property
    def k(self) -> int:
        return int(self.config.k)

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def checked_predictions(model: Recommender, pairs: pd.DataFrame, what: str = "test pairs",
                        truth: pd.DataFrame | None = None) -> np.ndarray:
    """``model.predict(pairs)`` as floats, refusing a wrong count or non-finite values in one line.

    A model that reads the truth (the oracle, ``Recommender.reads_truth``) also gets the ``rating``
    column: the pairs' own when they carry one (test pairs), else looked up in ``truth`` (the
    fold's test rows), NaN where the pair has no test rating.
    """
    columns = ["user", "item"]
    if getattr(model, "reads_truth", False):
        if "rating" not in pairs:
            known = (truth[["user", "item", "rating"]] if truth is not None
                     else pd.DataFrame(columns=["user", "item", "rating"]))
            # a left merge keeps the pairs' order
            pairs = pairs[columns].merge(known, on=columns, how="left", validate="many_to_one")
        columns.append("rating")
    prediction = np.asarray(model.predict(pairs[columns]), dtype=float)
    if prediction.shape != (len(pairs),) or not np.isfinite(prediction).all():
        raise TrainingError(f"model {getattr(model, 'name', model)} returned {np.size(prediction)} predictions "
                            f"with {int((~np.isfinite(prediction)).sum())} non-finite values for {len(pairs)} "
                            f"{what}; check the model's training losses and hyperparameters")
    return prediction


# The model's own prediction methods. Evaluators call them for the predictions they need beyond the
# test pairs (catalogue scores, group members' pairs, profiling labels); that time is the model's.
PREDICTION_METHODS = ("predict", "score_all", "predict_groups")


@contextmanager
def model_clock(model: Recommender) -> Iterator[list[float]]:
    """Seconds spent inside ``model``'s prediction methods while the block runs (``[seconds]``).

    The runner counts them in the ``predict`` stage and leaves the harness's own work (ranking,
    aggregation, metrics) in ``evaluate``. Nested calls (a ``score_all`` that calls ``predict``)
    count once. The methods are shadowed on the instance for the block only.
    """
    spent, depth = [0.0], [0]
    patched: dict[str, Any] = {}
    for name in PREDICTION_METHODS:
        original = getattr(model, name, None)
        if not callable(original):
            continue

        def timed(*args, _original=original, **kwargs):
            depth[0] += 1
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - started

        patched[name] = vars(model).get(name, _UNSET) if hasattr(model, "__dict__") else _UNSET
        setattr(model, name, timed)
    try:
        yield spent
    finally:
        for name, before in patched.items():
            if before is _UNSET:
                delattr(model, name)
            else:
                setattr(model, name, before)


_UNSET = object()

Evaluator = Callable[[EvalContext], EvalResult]
EVALUATORS: Registry[Evaluator] = Registry("evaluator")
evaluator = EVALUATORS.register


@evaluator("user")
def user_level(ctx: EvalContext) -> EvalResult:
    """RMSE, MAE, and P@k / R@k / NDCG@k averaged over users (metrics.py)."""
    per_user = per_user_metrics(ctx.predictions, ctx.k, ctx.threshold)
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


@evaluator("profiling")
def profiling(ctx: EvalContext) -> EvalResult:
    """For models with a profiling head: classify the user of every test row into its group."""
    if not isinstance(ctx.model, GroupProfiler):
        return EvalResult()
    users = ctx.predictions["user"].to_numpy()
    y_true = ctx.groups.of(users)
    y_pred = np.asarray(ctx.model.predict_groups(users))
    # one row per test user: what the profiling head said, so the profiling can be audited
    distinct = np.unique(users)
    audit = pd.DataFrame({"user": distinct, "group": ctx.groups.of(distinct),
                          "predicted_group": np.asarray(ctx.model.predict_groups(distinct))})
    return EvalResult(classification_metrics(y_true, y_pred), {"predicted_groups": audit})


def evaluate(ctx: EvalContext) -> EvalResult:
    result = EvalResult()
    for fn in EVALUATORS.values():
        part = fn(ctx)
        result.metrics.update(part.metrics)
        result.tables.update(part.tables)
    return result
