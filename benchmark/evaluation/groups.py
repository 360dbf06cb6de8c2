"""Group-level and cold-start evaluation (docs/protocol.md, "Group-level evaluation and cold start").

Every model that predicts user-item ratings gets group metrics the same way: the members'
predicted ratings for an item are turned into one group score by an aggregation strategy
(registry below: mean, least misery = min, most pleasure = max), each group's candidate
items are ranked by that score, and P@k / R@k / NDCG@k are computed per group with the
user-level rules (benchmark.evaluation.metrics, ``key="group"``) and averaged over groups.

* KMeans groups (``grouping=kmeans``): candidates = the fold's test items rated by at least
  ``eval.group.min_raters`` members; the group's true rating = the mean of those members'
  test ratings.
* Real groups (``grouping=real``, ITM-Rec): candidates and truth = the group's own ratings
  (``dataset.group_ratings``), never used in training.

In both cases the group score aggregates the predictions of ALL the group's members (not
only those who rated the item): a group recommender does not know who will rate what.

Cold start: ``eval.cold_threshold=n`` recomputes the user- and group-level metrics on users
(groups) with at most n training ratings (``cold_*``); test users with no training rating
at all (``split.cold_users``) get ``cold_user_*`` metrics and, for profiling models,
``cold_profile_*`` (one prediction per cold user).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import pandas as pd

from benchmark.core.errors import ConfigError, require
from benchmark.core.registry import Registry
from benchmark.evaluation.base import EvalContext, EvalResult, checked_predictions, classification_metrics, evaluator
from benchmark.evaluation.metrics import RANKING_METRICS, per_user_metrics, summarize
from models.base import GroupProfiler, Recommender

log = logging.getLogger(__name__)

# An aggregation reduces contiguous segments along axis 0: ``values[starts[j]:starts[j + 1]]`` are
# the members' predictions for segment j (one group's item: 1-D; one group's members x the whole
# catalogue: 2-D) and row j of the result is the group's score. Segments are never empty. numpy's
# ``ufunc.reduceat`` does the common ones without a Python loop; a new strategy is one function.
Aggregation = Callable[[np.ndarray, np.ndarray], np.ndarray]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")
aggregation = AGGREGATIONS.register

DEFAULT_AGGREGATIONS = ("mean", "least_misery", "most_pleasure")
GROUP_CHUNK_PAIRS = 1 << 21  # member x item pairs predicted at once (~2M: ~100 MB of frames)
DEFAULT_MIN_RATERS = 1


def segment_sizes(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows per segment, shaped to broadcast against the reduced values."""
    sizes = np.diff(np.append(starts, len(values)))
    return sizes.reshape(-1, *([1] * (values.ndim - 1)))


@aggregation("mean")
def mean_score(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Average satisfaction: the mean of the members' predicted ratings."""
    return np.add.reduceat(values, starts, axis=0) / segment_sizes(values, starts)


@aggregation("least_misery")
def least_misery(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The group is as happy as its least happy member: the minimum predicted rating."""
    return np.minimum.reduceat(values, starts, axis=0)


@aggregation("most_pleasure")
def most_pleasure(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The group is as happy as its happiest member: the maximum predicted rating."""
    return np.maximum.reduceat(values, starts, axis=0)


def runs_within(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """``(first, last)`` ranges of consecutive entries whose ``sizes`` add up to about ``limit`` (at
    least one entry per range): runs of groups holding a bounded number of rows or pairs."""
    cumulative, runs, first = np.cumsum(sizes), [], 0
    while first < len(sizes):
        before = cumulative[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cumulative, before + limit, side="right")))
        runs.append((first, last))
        first = last
    return runs


def segment_starts(keys: np.ndarray) -> np.ndarray:
    """First row of each run of equal rows in ``keys`` (sorted, shape ``(n,)`` or ``(n, m)``)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.intp)
    differs = keys[1:] != keys[:-1]
    if differs.ndim > 1:
        differs = differs.any(axis=1)
    return np.concatenate([[0], np.flatnonzero(differs) + 1])


# ---------------------------------------------------------------------------- config

def _get(node: Any, key: str, default: Any) -> Any:
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None and default is not None else value


def aggregations_of(config: Any) -> list[str]:
    names = list(_get(_get(config, "group", None), "aggregations", DEFAULT_AGGREGATIONS))
    unknown = [n for n in names if n not in AGGREGATIONS]
    if not names or unknown:
        raise ConfigError(f"eval.group.aggregations={names}: unknown {unknown or 'empty list'}; "
                          f"choose from {sorted(AGGREGATIONS)}")
    return names


def min_raters_of(config: Any) -> int:
    value = _get(_get(config, "group", None), "min_raters", DEFAULT_MIN_RATERS)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"eval.group.min_raters={value} must be an integer >= 1")
    return int(value)


def cold_threshold_of(config: Any) -> int | None:
    value = _get(config, "cold_threshold", None)
    require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
            f"eval.cold_threshold={value} must be null (off) or an integer >= 0")
    return value


# ---------------------------------------------------------------------------- building blocks

def unique_members(members: pd.DataFrame) -> pd.DataFrame:
    """``group, user`` rows without repeats (a user listed twice in a group counts once)."""
    return members[["group", "user"]].drop_duplicates(ignore_index=True)


def group_truth(test: pd.DataFrame, members: pd.DataFrame, min_raters: int = 1) -> pd.DataFrame:
    """KMeans-group ground truth: ``group, item, rating, n_raters`` for items of the test fold
    rated by at least ``min_raters`` members; rating = mean of those members' test ratings."""
    rated = test[["user", "item", "rating"]].merge(unique_members(members), on="user")
    truth = rated.groupby(["group", "item"], as_index=False, sort=True).agg(
        rating=("rating", "mean"), n_raters=("user", "size"))
    return truth[truth["n_raters"] >= min_raters].reset_index(drop=True)


def _sorted_members_items(members: pd.DataFrame, group_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distinct ``group, user`` rows sorted by group; distinct ``group, item`` rows sorted by group, item."""
    members = unique_members(members).sort_values("group", kind="stable", ignore_index=True)
    items = (group_items[["group", "item"]].drop_duplicates()
             .sort_values(["group", "item"], kind="stable", ignore_index=True))
    return members, items


def _pair_rows(members: pd.DataFrame, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item row, member row) of every member x item pair of the same group, item-major (an item's
    members consecutive), and the first pair of each item that has members: the segments the
    aggregations reduce. ``members`` and ``items`` as ``_sorted_members_items`` leaves them."""
    member_groups, item_groups = members["group"].to_numpy(), items["group"].to_numpy()
    first = np.searchsorted(member_groups, item_groups, side="left")
    counts = np.searchsorted(member_groups, item_groups, side="right") - first
    item_rows = np.repeat(np.arange(len(items)), counts)
    starts = np.cumsum(counts) - counts
    # pair p of an item's segment [start, start + count) is that group's (p - start)-th member
    member_rows = np.repeat(first - starts, counts) + np.arange(len(item_rows))
    return item_rows, member_rows, starts[counts > 0]


def member_pairs(members: pd.DataFrame, group_items: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``group, item, user`` for every member of every group and each of its items, sorted by group
    and item (an item's members consecutive), and the first row of each (group, item)."""
    members, items = _sorted_members_items(members, group_items)
    item_rows, member_rows, starts = _pair_rows(members, items)
    pairs = pd.DataFrame({"group": items["group"].to_numpy()[item_rows], "item": items["item"].to_numpy()[item_rows],
                          "user": members["user"].to_numpy()[member_rows]})
    return pairs, starts


def member_predictions(model: Recommender, members: pd.DataFrame, group_items: pd.DataFrame,
                       truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """``group, item, user, prediction`` for every member of every group and each of its items,
    sorted by group and item (``member_pairs``).

    Each distinct (user, item) pair is predicted once, in one ``model.predict`` call, and
    shared by every group the user belongs to.
    """
    pairs, _ = member_pairs(members, group_items)
    one_group_each = not unique_members(members)["user"].duplicated().any()
    return pairs.assign(prediction=_predicted(model, pairs[["user", "item"]], truth, one_group_each))


def _predicted(model: Recommender, pairs: pd.DataFrame, truth: pd.DataFrame | None,
               one_group_each: bool) -> np.ndarray:
    """The model's predictions for ``user, item`` pairs; a pair shared by several groups is predicted once."""
    if one_group_each:  # (KMeans) every pair is distinct
        return checked_predictions(model, pairs, what="group-member pairs", truth=truth)
    pair = pairs.groupby(["user", "item"], sort=False).ngroup().to_numpy()
    _, first = np.unique(pair, return_index=True)  # the first row of each distinct pair, in pair-id order
    distinct = pairs.iloc[first].reset_index(drop=True)
    return checked_predictions(model, distinct, what="group-member pairs", truth=truth)[pair]


def aggregate(member_preds: pd.DataFrame, name: str) -> pd.DataFrame:
    """``group, item, prediction``: the members' predictions turned into one group score (sorted)."""
    ordered = member_preds.sort_values(["group", "item"], kind="stable")
    if ordered.empty:
        return pd.DataFrame({"group": ordered["group"], "item": ordered["item"], "prediction": np.zeros(0)})
    keys = ordered[["group", "item"]].to_numpy()
    starts = segment_starts(keys)
    scores = AGGREGATIONS[name](ordered["prediction"].to_numpy(dtype=float), starts)
    return pd.DataFrame({"group": ordered["group"].to_numpy()[starts], "item": ordered["item"].to_numpy()[starts],
                         "prediction": scores})


def training_counts(train: pd.DataFrame, users) -> pd.Series:
    """Number of training ratings of each user (0 for users without any)."""
    return train.groupby("user").size().reindex(users, fill_value=0)


def group_training_counts(train: pd.DataFrame, members: pd.DataFrame) -> pd.Series:
    """A group's training interactions: the total training ratings of its (distinct) members."""
    members = unique_members(members)
    counts = training_counts(train, members["user"].to_numpy()).to_numpy()
    return pd.Series(counts, index=members["group"].to_numpy()).groupby(level=0).sum()


def score_groups(truth: pd.DataFrame, scores: dict[str, pd.DataFrame], k: int, threshold: float) -> pd.DataFrame:
    """Per-group metrics for each aggregation's ``group, item, prediction`` scores:
    ``aggregation, group, n_test, <ranking metrics>, rmse, mae``."""
    tables = []
    truth = truth[["group", "item", "rating"]]
    for name, aggregated in scores.items():
        same_rows = (len(aggregated) == len(truth) and np.array_equal(aggregated["group"].to_numpy(), truth["group"].to_numpy())
                     and np.array_equal(aggregated["item"].to_numpy(), truth["item"].to_numpy()))
        # KMeans groups: every truth row was scored, in the same (group, item) order: no merge needed
        frame = (truth.assign(prediction=aggregated["prediction"].to_numpy()) if same_rows
                 else truth.merge(aggregated, on=["group", "item"]))
        tables.append(per_user_metrics(frame, k, threshold, key="group").reset_index()
                      .assign(aggregation=name))
    table = pd.concat(tables, ignore_index=True)
    return table[["aggregation", *[c for c in table.columns if c != "aggregation"]]]


def group_scores(model: Recommender, members: pd.DataFrame, group_items: pd.DataFrame, aggregations: list[str],
                 truth: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Each aggregation's ``group, item, prediction`` (sorted by group and item), predicted and
    aggregated a run of groups at a time: at most ~``GROUP_CHUNK_PAIRS`` member x item pairs exist
    at once, at any data size."""
    members, items = _sorted_members_items(members, group_items)
    groups = np.unique(items["group"].to_numpy())
    n_pairs = (items["group"].value_counts().reindex(groups, fill_value=0).to_numpy()
               * members["group"].value_counts().reindex(groups, fill_value=0).to_numpy())
    member_groups, item_groups = members["group"].to_numpy(), items["group"].to_numpy()
    one_group_each = not members["user"].duplicated().any()
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in aggregations}
    for first, last in runs_within(n_pairs, GROUP_CHUNK_PAIRS):
        low, high = groups[first], groups[last - 1]
        chunk_members = members.iloc[np.searchsorted(member_groups, low):np.searchsorted(member_groups, high, "right")]
        chunk_items = items.iloc[np.searchsorted(item_groups, low):np.searchsorted(item_groups, high, "right")]
        item_rows, member_rows, starts = _pair_rows(chunk_members, chunk_items)
        if not len(starts):
            continue
        pairs = pd.DataFrame({"user": chunk_members["user"].to_numpy()[member_rows],
                              "item": chunk_items["item"].to_numpy()[item_rows]})
        values = _predicted(model, pairs, truth, one_group_each)  # floats (checked_predictions)
        keys = {"group": chunk_items["group"].to_numpy()[item_rows[starts]],
                "item": chunk_items["item"].to_numpy()[item_rows[starts]]}
        for name in aggregations:
            parts[name].append(pd.DataFrame({**keys, "prediction": AGGREGATIONS[name](values, starts)}))
    empty = pd.DataFrame({"group": [], "item": [], "prediction": []})
    return {name: pd.concat(frames, ignore_index=True) if frames else empty for name, frames in parts.items()}


def summarize_groups(per_group: pd.DataFrame, k: int, prefix: str = "group_") -> dict[str, float]:
    """``<prefix><aggregation>_<metric>_at_<k>`` averaged over groups, plus the group count."""
    means = per_group.groupby("aggregation", sort=False)[list(RANKING_METRICS)].mean()
    metrics = {f"{prefix}{agg}_{metric}_at_{k}": float(value)
               for agg, row in means.iterrows() for metric, value in row.items()}
    metrics[f"{prefix}n_groups"] = float(per_group["group"].nunique())
    return metrics


def evaluate_groups(ctx: EvalContext, truth: pd.DataFrame) -> EvalResult:
    """Shared by the KMeans and real-group evaluators: score, summarize, and the cold subset."""
    if truth.empty:
        log.warning("group evaluation: no group has a candidate item (eval.group.min_raters too high?)")
        return EvalResult({"group_n_groups": 0.0})
    members = ctx.groups.members
    scores = group_scores(ctx.model, members, truth, aggregations_of(ctx.config), truth=ctx.predictions)
    per_group = score_groups(truth, scores, ctx.k, ctx.threshold)
    n_train = group_training_counts(ctx.train, members)
    per_group["n_train"] = n_train.reindex(per_group["group"].to_numpy(), fill_value=0).to_numpy()
    metrics = summarize_groups(per_group, ctx.k)
    metrics["group_n_items_mean"] = float(truth.groupby("group").size().mean())
    threshold = cold_threshold_of(ctx.config)
    if threshold is not None:
        cold = per_group[per_group["n_train"] <= threshold]
        if cold.empty:
            metrics["cold_group_n_groups"] = 0.0
        else:
            metrics.update(summarize_groups(cold, ctx.k, prefix="cold_group_"))
    return EvalResult(metrics, {"per_group_metrics": per_group})


# ---------------------------------------------------------------------------- evaluators

@evaluator("group_kmeans")
def kmeans_groups(ctx: EvalContext) -> EvalResult:
    """Group metrics for groups made by the harness (KMeans): truth from the members' test ratings."""
    if ctx.groups.method == "real":
        return EvalResult()
    truth = group_truth(ctx.predictions, ctx.groups.members, min_raters_of(ctx.config))
    return evaluate_groups(ctx, truth)


@evaluator("group_real")
def real_groups(ctx: EvalContext) -> EvalResult:
    """Group metrics for real groups: each group's own ratings (never trained on) are the truth."""
    if ctx.groups.method != "real":
        return EvalResult()
    ratings = ctx.dataset.group_ratings
    require(ratings is not None, f"grouping=real: dataset {ctx.dataset.name} has no group ratings; "
                                 f"use dataset=itmrec or grouping=kmeans")
    known = ratings["group"].isin(ctx.groups.members["group"])
    truth = ratings.loc[known, ["group", "item", "rating"]].reset_index(drop=True)
    return evaluate_groups(ctx, truth)


@evaluator("cold")
def cold_users(ctx: EvalContext) -> EvalResult:
    """User-level metrics on cold users.

    ``cold_*``: test users with at most ``eval.cold_threshold`` training ratings.
    ``cold_user_*``: test users with no training rating at all (``split.cold_users``), and
    for profiling models ``cold_profile_*`` on them, one prediction per user.
    """
    metrics: dict[str, float] = {}
    test_users = ctx.predictions["user"].unique()
    n_train = training_counts(ctx.train, test_users)
    threshold = cold_threshold_of(ctx.config)
    if threshold is not None:
        few = n_train.index[n_train.to_numpy() <= threshold]
        subset = ctx.predictions[ctx.predictions["user"].isin(few)]
        metrics["cold_n_users"] = float(len(few))
        if len(subset):
            metrics.update(summarize(subset, ctx.k, ctx.threshold, prefix="cold_"))
    unseen = n_train.index[n_train.to_numpy() == 0].to_numpy()
    if len(unseen):
        subset = ctx.predictions[ctx.predictions["user"].isin(unseen)]
        metrics["cold_user_n_users"] = float(len(unseen))
        metrics.update(summarize(subset, ctx.k, ctx.threshold, prefix="cold_user_"))
        if isinstance(ctx.model, GroupProfiler):
            y_pred = np.asarray(ctx.model.predict_groups(unseen))
            metrics.update(classification_metrics(ctx.groups.of(unseen), y_pred, prefix="cold_profile_"))
    return EvalResult(metrics)


def validate_config(config: Any) -> None:
    """Refuse bad ``eval.group`` / ``eval.cold_threshold`` values before any training."""
    aggregations_of(config)
    min_raters_of(config)
    cold_threshold_of(config)
