"""Metrics on one frame of test predictions (``user, item, rating, prediction``).

Rating metrics come from scikit-learn. Ranking metrics rank each user's test items by
predicted rating and are computed per user, vectorised over a frame sorted once; the
per-user table is saved with every run so the report can run paired tests on it.

P@k and R@k follow the Surprise FAQ rule: relevant = true rating >= threshold;
recommended = among the top k AND prediction >= threshold; P = |rel & rec| / |rec|,
R = |rel & rec| / |rel|, 0 where the denominator is 0. NDCG@k uses the true rating as a
linear gain (as sklearn.metrics.ndcg_score) with ties in the prediction broken by item id.

A new ranking metric is one function registered with ``@ranking_metric("name")``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error

from benchmark.core.registry import Registry

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


def rank_by_prediction(predictions: pd.DataFrame) -> pd.DataFrame:
    """Sort by user, then prediction (descending), then item; add the 0-based ``rank``."""
    # one np.lexsort of the three columns (stable, as the sort it replaces): a multi-key pandas sort
    # factorizes each key first and costs several times more at 10^5-10^6 rows
    order = np.lexsort((predictions["item"].to_numpy(), -predictions["prediction"].to_numpy(dtype=float),
                        predictions["user"].to_numpy()))
    ranked = predictions.take(order).reset_index(drop=True)
    users = ranked["user"].to_numpy()
    starts = user_starts(users)
    ranked["rank"] = np.arange(len(users)) - np.repeat(starts, np.diff(np.append(starts, len(users))))
    return ranked


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
                     key: str = "user") -> pd.DataFrame:
    """One row per ``key`` (user, or group for group-level evaluation): n_test, ranking metrics, and the
    key's own error ``<key>_rmse``, ``<key>_mae`` (RMSE over that user's rows; not the pooled ``rmse``)."""
    frame = predictions.rename(columns={key: "user"}) if key != "user" else predictions
    ranked = rank_by_prediction(frame[["user", "item", "rating", "prediction"]])
    table = pd.DataFrame({name: fn(ranked, k, threshold) for name, fn in RANKING_METRICS.items()})
    error = ranked["prediction"].to_numpy(dtype=float) - ranked["rating"].to_numpy(dtype=float)
    n_test = per_user_sum(ranked, np.ones(len(ranked), dtype=np.int64))
    # per-key errors are named for their unit (user_rmse, group_rmse): the pooled ``rmse`` is another number
    table[f"{key}_rmse"] = np.sqrt(per_user_sum(ranked, error ** 2) / n_test)
    table[f"{key}_mae"] = per_user_sum(ranked, np.abs(error)) / n_test
    table.insert(0, "n_test", n_test)
    table.index.name = key
    return table


def summarize(predictions: pd.DataFrame, k: int = 10, threshold: float = 3.5,
              per_user: pd.DataFrame | None = None, prefix: str = "") -> dict[str, float]:
    """The run's headline metrics: rmse, mae over all rows; ranking metrics averaged over users."""
    if per_user is None:
        per_user = per_user_metrics(predictions, k, threshold)
    metrics = {
        f"{prefix}rmse": float(np.sqrt(mean_squared_error(predictions["rating"], predictions["prediction"]))),
        f"{prefix}mae": float(mean_absolute_error(predictions["rating"], predictions["prediction"])),
    }
    for name in RANKING_METRICS:
        metrics[f"{prefix}{name}_at_{k}"] = float(per_user[name].mean())
    return metrics
