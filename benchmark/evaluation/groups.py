"""Group-level and cold-start evaluation (docs/protocol.md, "Group-level evaluation and cold start").

Every model gets group metrics through the one path of benchmark/evaluation/pipeline.py: each
group's candidate items (benchmark/protocol/candidates.py) are scored by the model's group scores
(benchmark/evaluation/scoring.py: a GroupScorer's own, else its members' predicted ratings reduced by
an aggregation: mean, least misery = min, most pleasure = max), ranked, and P@k / R@k / NDCG@k are
computed per group with the user-level rules (benchmark.evaluation.metrics, ``key="group"``) and
averaged over groups. The two evaluators below differ only in the candidates' builder:

* KMeans groups (``grouping=kmeans``): candidates = the fold's test items rated by at least
  ``eval.group.min_raters`` members; the group's true rating = the mean of those members' test ratings.
* Real groups (``grouping=real``, ITM-Rec): candidates and truth = the group's own ratings
  (``dataset.group_ratings``), never used in training.

In both cases a user-level model's group score aggregates the predictions of ALL the group's
members (not only those who rated the item): a group recommender does not know who will rate what.
The candidates (and the group truth) are built once per evaluation (:func:`group_candidates`) and
shared with the full-catalogue evaluator.

Cold start: ``eval.cold_threshold=n`` recomputes the user- and group-level metrics on users
(groups) with at most n training ratings (``cold_*``); test users with no training rating
at all (``split.cold_users``) get ``cold_user_*`` metrics and, for profiling models,
``cold_profile_*`` (one prediction per cold user).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from benchmark.core.errors import ConfigError, require
from benchmark.evaluation.base import EvalContext, EvalResult, classification_metrics, evaluator, setting
from benchmark.evaluation.metrics import RANKING_METRICS, summarize
from benchmark.evaluation.pipeline import listed_group_metrics, score_group_items
from benchmark.evaluation.scoring import AGGREGATIONS, group_scores_of
from benchmark.protocol.candidates import ListedCandidates, group_test_items, unique_members
from models.base import GroupProfiler

log = logging.getLogger(__name__)

DEFAULT_AGGREGATIONS = ("mean", "least_misery", "most_pleasure")
DEFAULT_MIN_RATERS = 1


# ---------------------------------------------------------------------------- config

def aggregations_of(config: Any) -> list[str]:
    names = list(setting(setting(config, "group", None), "aggregations", DEFAULT_AGGREGATIONS))
    unknown = [n for n in names if n not in AGGREGATIONS]
    if not names or unknown:
        raise ConfigError(f"eval.group.aggregations={names}: unknown {unknown or 'empty list'}; "
                          f"choose from {sorted(AGGREGATIONS)}")
    return names


def min_raters_of(config: Any) -> int:
    value = setting(setting(config, "group", None), "min_raters", DEFAULT_MIN_RATERS)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"eval.group.min_raters={value} must be an integer >= 1")
    return int(value)


def cold_threshold_of(config: Any) -> int | None:
    value = setting(config, "cold_threshold", None)
    require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
            f"eval.cold_threshold={value} must be null (off) or an integer >= 0")
    return value


def group_candidates(ctx: EvalContext) -> ListedCandidates:
    """The groups' listed candidates and truth, built once per evaluation (the test-items and the
    full-catalogue evaluators both read them)."""
    if "group_candidates" not in ctx.shared:
        ctx.shared["group_candidates"] = group_test_items(ctx.groups, ctx.dataset, ctx.predictions,
                                                          min_raters_of(ctx.config))
    return ctx.shared["group_candidates"]


# ---------------------------------------------------------------------------- building blocks

def training_counts(train: pd.DataFrame, users) -> pd.Series:
    """Number of training ratings of each user (0 for users without any)."""
    return train.groupby("user").size().reindex(users, fill_value=0)


def group_training_counts(train: pd.DataFrame, members: pd.DataFrame) -> pd.Series:
    """A group's training interactions: the total training ratings of its (distinct) members."""
    members = unique_members(members)
    counts = training_counts(train, members["user"].to_numpy()).to_numpy()
    return pd.Series(counts, index=members["group"].to_numpy()).groupby(level=0).sum()


def summarize_groups(per_group: pd.DataFrame, k: int, prefix: str = "group_") -> dict[str, float]:
    """``<prefix><aggregation>_<metric>_at_<k>`` averaged over groups (``ties_at_<k>``: the share of
    groups with a tie across the cut-off), plus the group count."""
    means = (per_group.groupby("aggregation", sort=False)[[*RANKING_METRICS, "tie_at_cutoff"]].mean()
             .rename(columns={"tie_at_cutoff": "ties"}))
    metrics = {f"{prefix}{agg}_{metric}_at_{k}": float(value)
               for agg, row in means.iterrows() for metric, value in row.items()}
    metrics[f"{prefix}n_groups"] = float(per_group["group"].nunique())
    return metrics


def evaluate_groups(ctx: EvalContext, candidates: ListedCandidates) -> EvalResult:
    """Shared by the KMeans and real-group evaluators: score, rank, summarize, and the cold subset."""
    truth = candidates.frame
    if candidates.empty:
        log.warning("group evaluation: no group has a candidate item (eval.group.min_raters too high?)")
        return EvalResult({"group_n_groups": 0.0})
    members = ctx.groups.members
    scores = score_group_items(group_scores_of(ctx.scorer, aggregations_of(ctx.config)), members, truth)
    per_group = listed_group_metrics(candidates, scores, ctx.k, ctx.threshold, ctx.seed)
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
    return evaluate_groups(ctx, group_candidates(ctx))


@evaluator("group_real")
def real_groups(ctx: EvalContext) -> EvalResult:
    """Group metrics for real groups: each group's own ratings (never trained on) are the truth."""
    if ctx.groups.method != "real":
        return EvalResult()
    return evaluate_groups(ctx, group_candidates(ctx))


@evaluator("cold", grouping_free=(r"cold_(?!group_|profile_).*",))
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
            metrics.update(summarize(subset, ctx.k, ctx.threshold, prefix="cold_", seed=ctx.seed))
    unseen = n_train.index[n_train.to_numpy() == 0].to_numpy()
    if len(unseen):
        subset = ctx.predictions[ctx.predictions["user"].isin(unseen)]
        metrics["cold_user_n_users"] = float(len(unseen))
        metrics.update(summarize(subset, ctx.k, ctx.threshold, prefix="cold_user_", seed=ctx.seed))
        if isinstance(ctx.model, GroupProfiler):
            y_pred = ctx.scorer.predict_groups(unseen)
            metrics.update(classification_metrics(ctx.groups.of(unseen), y_pred, prefix="cold_profile_"))
    return EvalResult(metrics)


def validate_config(config: Any) -> None:
    """Refuse bad ``eval.group`` / ``eval.cold_threshold`` values before any training."""
    aggregations_of(config)
    min_raters_of(config)
    cold_threshold_of(config)
