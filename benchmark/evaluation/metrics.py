"""Ranking metrics of scored candidates (benchmark/protocol/candidates.py), for users and groups alike.

Listed candidates (a frame ``user, item, rating, prediction``; ``key="group"`` for groups): rating
metrics come from scikit-learn; ranking metrics rank each query's items by predicted rating and
are computed per query, vectorised over a frame sorted once; the per-query table is saved with
every run so the report can run paired tests on it.

P@k and R@k follow the Surprise FAQ rule: relevant = true rating >= threshold;
recommended = among the top k AND prediction >= threshold; P = |rel & rec| / |rec|,
R = |rel & rec| / |rel|, 0 where the denominator is 0. NDCG@k uses the true rating as a
linear gain (as sklearn.metrics.ndcg_score). A new ranking metric is one function registered
with ``@ranking_metric("name")``.

Catalogue candidates (a score matrix, queries x catalogue items, with excluded and relevant
masks): binary-relevance P@k, R@k, NDCG@k, hit rate, MAP and MRR (:func:`rank_metrics`; the
definitions are in benchmark/evaluation/full_ranking.py's docstring), from the top k and the first
relevant rank, without sorting whole rows.

Both rank a model's scores before any clipping to the rating scale where it has them (a ``score``
column; models.base.RawScores); the rating metrics read the clipped ``prediction``. Ties in the
scores are broken in both by the protocol's one rule (benchmark.protocol.ranking.tie_key, seeded by
the run's seed), and both log the share of queries with a tie across the cut-off (``ties_at_<k>``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error

from benchmark.core.registry import Registry
from benchmark.protocol import ranking

RankingMetric = Callable[[pd.DataFrame, int, float], pd.Series]
RANKING_METRICS: Registry[RankingMetric] = Registry("ranking metric")
ranking_metric = RANKING_METRICS.register


def user_starts(users: np.ndarray) -> np.ndarray:
    """First row of each user's run in ``users`` (sorted by user, as ``rank_by_prediction`` leaves it)."""
    new_user = np.ones(len(users), dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    return np.flatnonzero(new_user)


def per_user_sum(ranked: pd.DataFrame, values) -> pd.Series:
    """``values`` (one per row of ``ranked``) summed per user, indexed by user: ``groupby(user).sum()``
    by one ``np.add.reduceat`` over the user runs of the ranked frame (no hashing of the user key)."""
    users = ranked["user"].to_numpy()
    starts = user_starts(users)
    values = np.asarray(values)
    sums = np.add.reduceat(values, starts) if len(values) else values[:0]
    return pd.Series(sums, index=pd.Index(users[starts], name="user"))


def ranking_scores(predictions: pd.DataFrame) -> np.ndarray:
    """What a frame's rows are ranked by: the model's ``score`` before clipping where the frame has
    one (models.base.RawScores), else its ``prediction``."""
    column = "score" if "score" in predictions else "prediction"
    return predictions[column].to_numpy(dtype=float)


def rank_by_prediction(predictions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Sort by user, then score (descending; :func:`ranking_scores`), then the tie rule seeded by
    ``seed``; add the 0-based ``rank``."""
    # one np.lexsort of the three keys (ranking.order_rows): a multi-key pandas sort factorizes
    # each key first and costs several times more at 10^5-10^6 rows
    order = ranking.order_rows(predictions["user"].to_numpy(), ranking_scores(predictions),
                               predictions["item"].to_numpy(), seed)
    ranked = predictions.take(order).reset_index(drop=True)
    users = ranked["user"].to_numpy()
    starts = user_starts(users)
    ranked["rank"] = np.arange(len(users)) - np.repeat(starts, np.diff(np.append(starts, len(users))))
    return ranked


def tie_at_cutoff(ranked: pd.DataFrame, k: int) -> pd.Series:
    """1.0 for a user whose k-th and (k+1)-th ranked items have equal scores (the tie rule decided
    which of them is in the top k), else 0.0; indexed by user."""
    scores, rank, users = ranking_scores(ranked), ranked["rank"].to_numpy(), ranked["user"].to_numpy()
    kth = np.flatnonzero(rank[:-1] == k - 1)  # the row after a k-th row is its user's (k+1)-th, if any
    crosses = np.zeros(len(ranked), dtype=np.int64)
    crosses[kth] = ((users[kth + 1] == users[kth]) & (scores[kth + 1] == scores[kth])).astype(np.int64)
    return per_user_sum(ranked, crosses).astype(float)


# A ranking metric reads the ranked frame (sorted by user, one run of rows per user) and returns one
# value per user, indexed by user; ``per_user_sum`` is the fast per-user reduction.

def _hits(ranked: pd.DataFrame, k: int, threshold: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    relevant = ranked["rating"].to_numpy() >= threshold
    recommended = (ranked["rank"].to_numpy() < k) & (ranked["prediction"].to_numpy() >= threshold)
    return (per_user_sum(ranked, (relevant & recommended).astype(np.int64)),
            per_user_sum(ranked, recommended.astype(np.int64)), per_user_sum(ranked, relevant.astype(np.int64)))


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).fillna(0.0)


@ranking_metric("precision")
def precision_at_k(ranked: pd.DataFrame, k: int, threshold: float) -> pd.Series:
    hits, recommended, _ = _hits(ranked, k, threshold)
    return _ratio(hits, recommended)


@ranking_metric("recall")
def recall_at_k(ranked: pd.DataFrame, k: int, threshold: float) -> pd.Series:
    hits, _, relevant = _hits(ranked, k, threshold)
    return _ratio(hits, relevant)


@ranking_metric("ndcg")
def ndcg_at_k(ranked: pd.DataFrame, k: int, threshold: float) -> pd.Series:
    rating, rank = ranked["rating"].to_numpy(dtype=float), ranked["rank"].to_numpy()
    dcg = per_user_sum(ranked, np.where(rank < k, rating / np.log2(rank + 2.0), 0.0))
    # the ideal order: each user's ratings, highest first (runs stay in place: the frame is sorted by user)
    run = np.zeros(len(rating), dtype=np.int64)
    run[user_starts(ranked["user"].to_numpy())[1:]] = 1
    run = np.cumsum(run)  # each row's user run
    ideal = rating[np.lexsort((-rating, run))]
    idcg = per_user_sum(ranked, np.where(rank < k, ideal / np.log2(rank + 2.0), 0.0))
    return _ratio(dcg, idcg)


def per_user_metrics(predictions: pd.DataFrame, k: int = 10, threshold: float = 3.5,
                     key: str = "user", rated: bool = True, seed: int = 0) -> pd.DataFrame:
    """One row per ``key`` (user, or group for group-level evaluation): n_test, ranking metrics, the
    key's own error ``<key>_rmse``, ``<key>_mae`` (RMSE over that user's rows; not the pooled ``rmse``)
    and ``tie_at_cutoff``. Rows are ranked by ``score`` where the frame has one (the model's score
    before clipping), else by ``prediction``; ties by the tie rule seeded by ``seed``. ``rated=False``
    (the truth is no rating: implicit relevance) leaves the two errors out."""
    frame = predictions.rename(columns={key: "user"}) if key != "user" else predictions
    columns = ["user", "item", "rating", "prediction", *(["score"] if "score" in frame else [])]
    ranked = rank_by_prediction(frame[columns], seed)
    table = pd.DataFrame({name: fn(ranked, k, threshold) for name, fn in RANKING_METRICS.items()})
    table["tie_at_cutoff"] = tie_at_cutoff(ranked, k)
    n_test = per_user_sum(ranked, np.ones(len(ranked), dtype=np.int64))
    if rated:
        error = ranked["prediction"].to_numpy(dtype=float) - ranked["rating"].to_numpy(dtype=float)
        # per-key errors are named for their unit (user_rmse, group_rmse): the pooled ``rmse`` is another number
        table[f"{key}_rmse"] = np.sqrt(per_user_sum(ranked, error ** 2) / n_test)
        table[f"{key}_mae"] = per_user_sum(ranked, np.abs(error)) / n_test
    table.insert(0, "n_test", n_test)
    table.index.name = key
    return table


def summarize(predictions: pd.DataFrame, k: int = 10, threshold: float = 3.5,
              per_user: pd.DataFrame | None = None, prefix: str = "", seed: int = 0) -> dict[str, float]:
    """The run's headline metrics: rmse, mae over all rows; ranking metrics averaged over users; the
    share of users with a tie across the cut-off (``ties_at_<k>``)."""
    if per_user is None:
        per_user = per_user_metrics(predictions, k, threshold, seed=seed)
    metrics = {
        f"{prefix}rmse": float(np.sqrt(mean_squared_error(predictions["rating"], predictions["prediction"]))),
        f"{prefix}mae": float(mean_absolute_error(predictions["rating"], predictions["prediction"])),
    }
    for name in RANKING_METRICS:
        metrics[f"{prefix}{name}_at_{k}"] = float(per_user[name].mean())
    metrics[f"{prefix}ties_at_{k}"] = float(per_user["tie_at_cutoff"].mean()) if len(per_user) else 0.0
    return metrics


# ---------------------------------------------------------------------------- catalogue candidates

# A catalogue ranking orders a matrix row: scores descending, ties by the protocol's tie key
# (ranking.tie_key: one uint64 per query x item), excluded items last. Only the top k and the rank of
# the first relevant item are needed, so both come from linear passes (a partition, comparisons, a
# partial sort of the tied keys) instead of sorting the whole row.

FULL_METRICS = ("precision", "recall", "ndcg", "hit_rate", "map", "mrr")


def metric_name(metric: str, k: int, prefix: str = "full_") -> str:
    return f"{prefix}{metric}" if metric == "mrr" else f"{prefix}{metric}_at_{k}"


def ranking_key(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Ascending key = ranking order: the negated score, +inf for excluded items (last)."""
    return np.where(excluded, np.inf, -scores)


# A tie key: None (equal scores in column order), a uint64 matrix of the scores' shape, or a function
# ``tie(rows, columns)`` of broadcastable index arrays (the pipeline's: ranking.tie_key of those rows'
# queries and columns' items, so keys are hashed only where a tie has to be broken).
TieKey = "np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray] | None"


def tie_at(tie, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The tie key of the cells (rows, columns) (broadcast index arrays)."""
    if tie is None:
        return np.broadcast_arrays(rows, columns)[1].astype(np.uint64)
    if callable(tie):
        return tie(rows, columns)
    return tie[rows, columns]


def top_k_positions(key: np.ndarray, k: int, tie=None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``min(k, n_items)`` positions in ranking order (equal keys: the smaller tie
    key first, :data:`TieKey`), shape ``(rows, min(k, n_items))``, and whether each row has a tie
    across the cut-off (an item left out of the top k with the k-th item's score)."""
    rows, n_items = key.shape
    kk = min(k, n_items)
    if rows == 0 or kk == 0:
        return np.zeros((rows, kk), dtype=np.intp), np.zeros(rows, dtype=bool)
    kth = np.take_along_axis(key, np.argpartition(key, kk - 1, axis=1)[:, kk - 1:kk], axis=1)
    better = key < kth
    tied = key == kth
    wanted = kk - better.sum(axis=1)  # >= 1: the k-th item itself is tied with kth
    chosen = better | tied
    crowded = tied.sum(axis=1) > wanted  # more tied items than free places: the tie key decides which enter
    if crowded.any():
        index = np.flatnonzero(crowded)
        sub = np.where(tied[index], tie_at(tie, index[:, None], np.arange(n_items)[None, :]),
                       np.iinfo(np.uint64).max)
        top_wanted = int(wanted[index].max())
        smallest = np.partition(sub, np.arange(top_wanted), axis=1)[:, :top_wanted]
        limit = np.take_along_axis(smallest, (wanted[index] - 1)[:, None], axis=1)
        chosen[index] = better[index] | (tied[index] & (sub <= limit))
    positions = np.nonzero(chosen)[1].reshape(rows, kk)  # ascending position within each row
    order = np.lexsort((tie_at(tie, np.arange(rows)[:, None], positions), np.take_along_axis(key, positions, axis=1)),
                       axis=1)
    cut_tie = crowded & np.isfinite(kth[:, 0])  # a tie among excluded items (+inf) decides nothing
    return np.take_along_axis(positions, order, axis=1), cut_tie


def first_relevant_rank(key: np.ndarray, relevant: np.ndarray, tie=None) -> np.ndarray:
    """0-based rank of each row's best-ranked relevant item (rows without one: meaningless, mask them)."""
    best = np.where(relevant, key, np.inf).min(axis=1, keepdims=True)
    at_best = key == best
    rank = (key < best).sum(axis=1)
    shared = np.flatnonzero(at_best.sum(axis=1) > 1)  # rows where the best relevant score is tied
    if len(shared):
        keys = tie_at(tie, shared[:, None], np.arange(key.shape[1])[None, :])
        here = at_best[shared]
        best_tie = np.where(relevant[shared] & here, keys, np.iinfo(np.uint64).max).min(axis=1, keepdims=True)
        rank[shared] += (here & (keys < best_tie)).sum(axis=1)
    return rank


def rank_metrics(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray, k: int,
                 tie=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-row metrics (rows: users or groups) and each row's top-k item positions (-1 = none).

    ``excluded`` items are not candidates (training items); ``relevant`` is never excluded.
    ``tie``: the tie key (:data:`TieKey`: a matrix, a function of cell indices, or None = equal
    scores in column order). ``tie_at_cutoff`` (1.0 / 0.0) marks a row whose top k
    was completed by the tie key.
    """
    candidates = relevant & ~excluded
    key = ranking_key(scores, excluded)
    top_positions, cut_tie = top_k_positions(key, k, tie)
    top = np.take_along_axis(candidates, top_positions, axis=1)
    n_candidates = (~excluded).sum(axis=1)
    top_items = np.where(np.arange(top_positions.shape[1]) < n_candidates[:, None], top_positions, -1)
    n_relevant = candidates.sum(axis=1)
    hits = top.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_relevant, top.shape[1])]
    precision_at = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    first = np.where(n_relevant > 0, first_relevant_rank(key, candidates, tie), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame({
            "n_relevant": n_relevant, "n_candidates": n_candidates,
            "precision": hits / k,
            "recall": np.where(n_relevant > 0, hits / n_relevant, np.nan),
            "ndcg": np.where(n_relevant > 0, (top * discount).sum(axis=1) / ideal, np.nan),
            "hit_rate": np.where(n_relevant > 0, (hits > 0).astype(float), np.nan),
            "map": np.where(n_relevant > 0, (precision_at * top).sum(axis=1) / np.minimum(n_relevant, k), np.nan),
            "mrr": np.where(first >= 0, 1.0 / (first + 1.0), np.nan),
            "tie_at_cutoff": cut_tie.astype(float),
        })
    table.loc[table["n_relevant"] == 0, "precision"] = np.nan
    return table, top_items


def summarize_full(table: pd.DataFrame, top_items: np.ndarray, n_items: int, k: int,
                   prefix: str = "full_") -> dict[str, float]:
    """``<prefix><metric>_at_<k>`` averaged over the rows with a relevant item, the coverage of the
    catalogue by the rows' top k, and the number of rows scored."""
    scored = table[table["n_relevant"] > 0]
    metrics = {metric_name(m, k, prefix): float(scored[m].mean()) if len(scored) else 0.0 for m in FULL_METRICS}
    # the share of those rows whose top k the tie rule completed (docs/protocol.md, "Ties")
    metrics[f"{prefix}ties_at_{k}"] = float(scored["tie_at_cutoff"].mean()) if len(scored) else 0.0
    shown = np.unique(top_items[top_items >= 0])
    metrics[f"{prefix}coverage_at_{k}"] = float(len(shown) / n_items) if n_items else 0.0
    metrics[f"{prefix}n_scored"] = float(len(scored))
    return metrics


# ---------------------------------------------------------------------------- one relevant item per case

def single_positive_ranks(positive: np.ndarray, others: np.ndarray, positive_key: np.ndarray | None,
                          other_keys: np.ndarray | None, valid: np.ndarray | None = None,
                          positive_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rank, tied) of each case's one relevant item among its candidates, vectorised over cases.

    ``positive`` (n,): its score; ``others`` (n, m): the other candidates' scores, ``valid`` (n, m)
    the ones that count (None: all). A candidate ranks ahead when its score is higher, or equal with
    a smaller tie key (benchmark/protocol/ranking.tie_key: the harness's one tie rule);
    ``positive_first`` (legacy, ``eval.ties=positive_first``) puts the positive ahead of every tie.
    ``tied``: the positive shares its score with at least one counted candidate."""
    positive = np.asarray(positive, dtype=float)[:, None]
    above, tied = others > positive, others == positive
    if valid is not None:
        above, tied = above & valid, tied & valid
    ahead = above if positive_first else above | (tied & (other_keys < np.asarray(positive_key)[:, None]))
    return 1 + ahead.sum(axis=1), tied.any(axis=1)


def hit_rate_ndcg(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per case with one relevant item at ``ranks``: HR@k = 1 if rank <= k; NDCG@k = 1 / log2(rank + 1)
    if rank <= k, else 0 (the ideal DCG is 1)."""
    ranks = np.asarray(ranks, dtype=float)
    hit = ranks <= k
    return hit.astype(float), np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
