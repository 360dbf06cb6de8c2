"""Full-catalogue top-N evaluation (docs/protocol.md, "Metrics"), beside the test-items-only metrics.

Per test user, every catalogue item (``dataset.item_features``) that is not in the user's
training part is ranked by predicted rating (ties: lower item id first). Relevant = the user's
test items rated >= ``eval.threshold``. Per user, with binary relevance and k = ``eval.k``:

- ``precision`` = hits in the top k / k; ``recall`` = hits / |relevant|;
- ``ndcg`` = DCG / ideal DCG, gain 1 per hit, discount 1 / log2(rank + 1);
- ``hit_rate`` = 1 if any hit in the top k; ``map`` = sum over hits of P@rank / min(k, |relevant|);
- ``mrr`` = 1 / rank of the first relevant item in the whole ranking (no cut-off).

Metrics are averaged over the test users with at least one relevant item (``full_n_users``);
``full_coverage_at_k`` is the share of the catalogue in at least one test user's top k. Run
metrics are ``full_<metric>_at_<k>`` (``full_mrr`` has no k).

Groups: each group scores every catalogue item by aggregating ALL its members' predictions
(the registry of benchmark/evaluation/groups.py), ranks every item that not every member rated in
training, and is scored against its own relevant items (KMeans: the items whose members' mean
test rating >= threshold, rated by >= ``eval.group.min_raters`` members; real groups: the
group's own ratings >= threshold): ``full_group_<aggregation>_<metric>_at_<k>``.

Scores come from the model's ``score_all`` when it has one (models.base.ScoresAll), else from
``predict`` on the (user, item) pairs, a chunk of users at a time. Ranking is numpy over a
chunk's score matrix: no per-user Python loop.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from benchmark.core.errors import TrainingError
from benchmark.evaluation.base import EvalContext, EvalResult, checked_predictions, evaluator
from benchmark.evaluation.groups import (
    AGGREGATIONS,
    _get,
    aggregations_of,
    group_truth,
    min_raters_of,
    runs_within,
    segment_starts,
    unique_members,
)
from models.base import Recommender, ScoresAll

log = logging.getLogger(__name__)

CHUNK_PAIRS = 1 << 20          # pairs scored per predict call (about 8 MB of float64 per matrix)
MAX_GROUP_MATRIX = 50_000_000  # users x items above which the group-level full ranking is skipped
FULL_METRICS = ("precision", "recall", "ndcg", "hit_rate", "map", "mrr")


def metric_name(metric: str, k: int, prefix: str = "full_") -> str:
    return f"{prefix}{metric}" if metric == "mrr" else f"{prefix}{metric}_at_{k}"


# ---------------------------------------------------------------------------- scoring

def score_matrix(model: Recommender, users: np.ndarray, items: np.ndarray,
                 truth: pd.DataFrame | None = None) -> np.ndarray:
    """Predicted ratings of every (user, item), shape ``(len(users), len(items))``."""
    if isinstance(model, ScoresAll):
        scores = np.asarray(model.score_all(users, items), dtype=float)
        if scores.shape != (len(users), len(items)) or not np.isfinite(scores).all():
            raise TrainingError(f"model {getattr(model, 'name', model)}.score_all returned shape {scores.shape} with "
                                f"{int((~np.isfinite(scores)).sum())} non-finite values for {len(users)} users x "
                                f"{len(items)} items; check the model's training losses")
        return scores
    scores = np.empty((len(users), len(items)))
    rows = max(1, CHUNK_PAIRS // max(1, len(items)))
    for start in range(0, len(users), rows):
        chunk = users[start:start + rows]
        pairs = pd.DataFrame({"user": np.repeat(chunk, len(items)), "item": np.tile(items, len(chunk))})
        scores[start:start + len(chunk)] = checked_predictions(
            model, pairs, what="catalogue pairs", truth=truth).reshape(len(chunk), len(items))
    return scores


class PairIndex:
    """The (row, item) pairs of ``frame`` as positions, sorted by row once: the boolean matrix of any
    range of rows costs only that range (chunked evaluation never rescans the whole frame)."""

    def __init__(self, frame: pd.DataFrame, row_key: str, rows: pd.Index, items: pd.Index):
        r = rows.get_indexer(frame[row_key].to_numpy())
        c = items.get_indexer(frame["item"].to_numpy())
        keep = (r >= 0) & (c >= 0)
        order = np.argsort(r[keep], kind="stable")
        self.rows, self.items, self.n_rows, self.n_items = r[keep][order], c[keep][order], len(rows), len(items)

    def matrix(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Boolean ``(stop - start, n_items)`` matrix, True at the pairs of rows ``start:stop``."""
        stop = self.n_rows if stop is None else stop
        lo, hi = np.searchsorted(self.rows, [start, stop])
        matrix = np.zeros((stop - start, self.n_items), dtype=bool)
        matrix[self.rows[lo:hi] - start, self.items[lo:hi]] = True
        return matrix


def indicator(frame: pd.DataFrame, row_key: str, rows: pd.Index, items: pd.Index) -> np.ndarray:
    """Boolean ``(len(rows), len(items))`` matrix, True at the (row, item) pairs of ``frame``."""
    return PairIndex(frame, row_key, rows, items).matrix()


def row_chunks(n_rows: int, n_items: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of about ``CHUNK_PAIRS`` matrix elements each (at least one row)."""
    step = max(1, CHUNK_PAIRS // max(1, n_items))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


# ---------------------------------------------------------------------------- ranking

# The ranking of a row: scores descending, ties by catalogue position (lower item id first), excluded
# items last. Only the top k and the rank of the first relevant item are needed, so both come from
# linear passes (a partition, comparisons, a cumulative sum) instead of sorting the whole row.

def ranking_key(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Ascending key = ranking order: the negated score, +inf for excluded items (last)."""
    return np.where(excluded, np.inf, -scores)


def top_k_positions(key: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``min(k, n_items)`` positions in ranking order, shape ``(rows, min(k, n_items))``."""
    rows, n_items = key.shape
    kk = min(k, n_items)
    if rows == 0 or kk == 0:
        return np.zeros((rows, kk), dtype=np.intp)
    kth = np.take_along_axis(key, np.argpartition(key, kk - 1, axis=1)[:, kk - 1:kk], axis=1)
    better = key < kth
    tied = key == kth
    # all strictly better items, then the lowest-positioned tied items until the row holds kk
    wanted = kk - better.sum(axis=1, keepdims=True)
    chosen = better | (tied & (np.cumsum(tied, axis=1) <= wanted))
    positions = np.nonzero(chosen)[1].reshape(rows, kk)  # ascending position within each row
    order = np.argsort(np.take_along_axis(key, positions, axis=1), axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)


def first_relevant_rank(key: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based rank of each row's best-ranked relevant item (rows without one: meaningless, mask them)."""
    best = np.where(relevant, key, np.inf).min(axis=1, keepdims=True)
    best_position = (relevant & (key == best)).argmax(axis=1)[:, None]
    ahead_on_tie = (key == best) & (np.arange(key.shape[1]) < best_position)
    return (key < best).sum(axis=1) + ahead_on_tie.sum(axis=1)


def rank_metrics(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray, k: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-row metrics (rows: users or groups) and each row's top-k item positions (-1 = none).

    ``excluded`` items are not candidates (training items); ``relevant`` is never excluded.
    """
    candidates = relevant & ~excluded
    key = ranking_key(scores, excluded)
    top_positions = top_k_positions(key, k)
    top = np.take_along_axis(candidates, top_positions, axis=1)
    n_candidates = (~excluded).sum(axis=1)
    top_items = np.where(np.arange(top_positions.shape[1]) < n_candidates[:, None], top_positions, -1)
    n_relevant = candidates.sum(axis=1)
    hits = top.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_relevant, top.shape[1])]
    precision_at = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    first = np.where(n_relevant > 0, first_relevant_rank(key, candidates), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame({
            "n_relevant": n_relevant, "n_candidates": n_candidates,
            "precision": hits / k,
            "recall": np.where(n_relevant > 0, hits / n_relevant, np.nan),
            "ndcg": np.where(n_relevant > 0, (top * discount).sum(axis=1) / ideal, np.nan),
            "hit_rate": np.where(n_relevant > 0, (hits > 0).astype(float), np.nan),
            "map": np.where(n_relevant > 0, (precision_at * top).sum(axis=1) / np.minimum(n_relevant, k), np.nan),
            "mrr": np.where(first >= 0, 1.0 / (first + 1.0), np.nan),
        })
    table.loc[table["n_relevant"] == 0, "precision"] = np.nan
    return table, top_items


def rank_in_chunks(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray, k: int,
                   rows: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`rank_metrics` over ``rows`` (default all) a chunk at a time: the sort's temporaries
    stay about ``CHUNK_PAIRS`` elements however large the catalogue."""
    rows = np.arange(len(scores)) if rows is None else rows
    parts = [rank_metrics(scores[chunk], excluded[chunk], relevant[chunk], k)
             for chunk in (rows[start:stop] for start, stop in row_chunks(len(rows), scores.shape[1]))]
    if not parts:
        return rank_metrics(scores[:0], excluded[:0], relevant[:0], k)
    return pd.concat([p[0] for p in parts], ignore_index=True), np.concatenate([p[1] for p in parts])


def summarize_full(table: pd.DataFrame, top_items: np.ndarray, n_items: int, k: int,
                   prefix: str = "full_") -> dict[str, float]:
    scored = table[table["n_relevant"] > 0]
    metrics = {metric_name(m, k, prefix): float(scored[m].mean()) if len(scored) else 0.0 for m in FULL_METRICS}
    shown = np.unique(top_items[top_items >= 0])
    metrics[f"{prefix}coverage_at_{k}"] = float(len(shown) / n_items) if n_items else 0.0
    metrics[f"{prefix}n_scored"] = float(len(scored))
    return metrics


# ---------------------------------------------------------------------------- groups

def member_blocks(users: pd.Index, members: pd.DataFrame) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """``(groups, rows, starts)``: the score-matrix rows of every group's members, group after group
    (groups sorted); ``starts`` = each group's first position in ``rows`` (AGGREGATIONS' segments)."""
    members = unique_members(members)
    members = members[users.get_indexer(members["user"].to_numpy()) >= 0].sort_values("group", kind="stable")
    rows = users.get_indexer(members["user"].to_numpy())
    group_ids = members["group"].to_numpy()
    starts = segment_starts(group_ids)
    return pd.Index(group_ids[starts]), rows, starts


def group_relevant(ctx: EvalContext) -> pd.DataFrame:
    """``group, item, rating`` of each group's truth (as the test-items-only group evaluation)."""
    if ctx.groups.method == "real":
        ratings = ctx.dataset.group_ratings
        if ratings is None:
            return pd.DataFrame(columns=["group", "item", "rating"])
        return ratings.loc[ratings["group"].isin(ctx.groups.members["group"]), ["group", "item", "rating"]]
    return group_truth(ctx.predictions, ctx.groups.members, min_raters_of(ctx.config))


def evaluate_groups_full(ctx: EvalContext, scores: np.ndarray, users: pd.Index, items: pd.Index,
                         trained: np.ndarray) -> EvalResult:
    groups, rows, starts = member_blocks(users, ctx.groups.members)
    if not len(groups):
        return EvalResult()
    truth = group_relevant(ctx)
    relevant = PairIndex(truth[truth["rating"] >= ctx.threshold], "group", groups, items)
    names = aggregations_of(ctx.config)
    parts: dict[str, list] = {name: [] for name in names}
    # groups a chunk at a time, so the members' score rows copied for aggregation stay ~CHUNK_PAIRS
    ends = np.append(starts[1:], len(rows))
    for first, last in runs_within(ends - starts, max(1, CHUNK_PAIRS // max(1, len(items)))):
        block = rows[starts[first]:ends[last - 1]]
        local = starts[first:last] - starts[first]
        member_scores = scores[block]
        # an item is a candidate unless every member rated it in training
        excluded = np.logical_and.reduceat(trained[block], local, axis=0)
        relevant_items = relevant.matrix(first, last)
        for name in names:
            matrix = AGGREGATIONS[name](member_scores, local)  # one row per group: its score of every item
            parts[name].append(rank_metrics(matrix, excluded, relevant_items, ctx.k))
    metrics, tables = {}, []
    for name in names:
        table = pd.concat([t for t, _ in parts[name]], ignore_index=True)
        top_items = np.concatenate([top for _, top in parts[name]])
        metrics.update(summarize_full(table, top_items, len(items), ctx.k, prefix=f"full_group_{name}_"))
        tables.append(table.assign(group=groups.to_numpy(), aggregation=name))
    per_group = pd.concat(tables, ignore_index=True)
    front = ["aggregation", "group"]
    return EvalResult(metrics, {"per_group_full_metrics": per_group[front + [c for c in per_group if c not in front]]})


# ---------------------------------------------------------------------------- the evaluator

def catalogue(ctx: EvalContext) -> pd.Index:
    items = ctx.dataset.item_features.index
    return pd.Index(np.sort(items.to_numpy())) if len(items) else pd.Index(np.sort(ctx.dataset.ratings["item"].unique()))


@evaluator("full_catalogue")
def full_catalogue(ctx: EvalContext) -> EvalResult:
    """``full_*`` metrics: every test user ranks the whole catalogue minus their training items."""
    if not bool(_get(ctx.config, "full_catalogue", True)):
        return EvalResult()
    started = time.perf_counter()
    items = catalogue(ctx)
    test_users = np.unique(ctx.predictions["user"].to_numpy())
    relevant_rows = ctx.predictions[ctx.predictions["rating"] >= ctx.threshold]
    members = unique_members(ctx.groups.members)["user"].to_numpy() if ctx.groups.members is not None else None
    users = pd.Index(np.union1d(test_users, members)) if members is not None else pd.Index(test_users)
    if members is not None and len(users) * len(items) <= MAX_GROUP_MATRIX:
        # groups aggregate their members' rows: every member's scores are kept for both levels
        scores = score_matrix(ctx.model, users.to_numpy(), items.to_numpy(), truth=ctx.predictions)
        trained = indicator(ctx.train, "user", users, items)
        relevant = indicator(relevant_rows, "user", users, items)
        table, top_items = rank_in_chunks(scores, trained, relevant, ctx.k, rows=users.get_indexer(test_users))
        group_part = evaluate_groups_full(ctx, scores, users, items, trained)
    else:
        # users only, scored and ranked a chunk at a time: memory stays ~CHUNK_PAIRS scores at any size
        if members is not None:
            log.warning("full-catalogue group ranking skipped: %d users x %d items is above %d scores",
                        len(users), len(items), MAX_GROUP_MATRIX)
        users = pd.Index(test_users)
        trained_pairs = PairIndex(ctx.train, "user", users, items)
        relevant_pairs = PairIndex(relevant_rows, "user", users, items)
        parts = [rank_metrics(score_matrix(ctx.model, test_users[start:stop], items.to_numpy(), truth=ctx.predictions),
                              trained_pairs.matrix(start, stop), relevant_pairs.matrix(start, stop), ctx.k)
                 for start, stop in row_chunks(len(users), len(items))]
        table = pd.concat([t for t, _ in parts], ignore_index=True)
        top_items = np.concatenate([top for _, top in parts])
        group_part = EvalResult()
    metrics = summarize_full(table, top_items, len(items), ctx.k)
    result = EvalResult(metrics, {"per_user_full_metrics": table.assign(user=test_users)[
        ["user", *[c for c in table.columns]]]})
    result.metrics.update(group_part.metrics)
    result.tables.update(group_part.tables)
    result.metrics["full_seconds"] = time.perf_counter() - started
    return result
