"""The seed paper's authors' protocol, reproduced on purpose, leaks included (docs/protocol.md,
"The authors' protocol").

Read off the authors' public code, lengocluyen/mhamodel at d2992e9 (the same authors and datasets; there
is no ``main.py`` in it: the evaluation is in the notebooks ``movielens_run.ipynb`` and ``itm_run.ipynb``,
cited below as notebook cell index (0-based, markdown cells counted) and line within the cell). Each piece is switchable on its own, so a protocol
ablation is a set of configs:

* ``split=authors`` (:func:`authors_split`): ``MinMaxScaler().fit_transform`` on the WHOLE frame (leak: the
  scaler sees test rows), then ``train_test_split(frame, test_size=0.2, random_state=42)``: a global
  random row split, no per-user stratification (movielens_run cell 6: scaler lines 95-98, split line 108;
  itm_run cell 7: lines 126-129 and 139). The authors scale side features only, never the
  target, and the harness's models read ``user, item, rating`` only, so ``split.scale`` is empty by
  default and the scaling is a no-op for them (kept as a switch, tested on a toy frame).
  ``random_state`` is the run's seed: ``seed=42`` is the authors' split.
* ``grouping=authors`` (:func:`authors_kmeans`): KMeans(n_clusters=min(k, n_users), random_state, n_init=10)
  on UNSCALED [age, label-encoded occupation, the user's mean genre vector over ALL ratings] (leak: test
  ratings shape the groups; ml-100k/preprocessing_movielen_100k.py lines 86-94). Real groups (ITM-Rec)
  are kept as the keys, users in no group are their own group keyed by their user id (itm_run cell 7,
  ``fillna(UserID)``, line 84).
* ``eval.protocol=authors`` (benchmark/evaluation/authors.py): the authors' keys, relevance rule and
  metric formulas (:func:`authors_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

from benchmark.core.errors import require
from benchmark.data import Dataset
from benchmark.protocol.grouping import Groups, size_stats
from benchmark.protocol.split import Split

AUTHORS_RANDOM_STATE = 42     # train_test_split and KMeans in the authors' code
AUTHORS_THRESHOLD = 3.7       # precision_at_k / recall_at_k's relevance_threshold (movielens_run cell 6 l. 237)
AUTHORS_MAX_GROUPS = 250      # n_clusters = min(250, len(user_demo)) (preprocessing_movielen_100k.py:92)
TARGET_COLUMNS = ("user", "item", "rating")


# ---------------------------------------------------------------------------- split

def minmax_before_split(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` min-max scaled by a scaler fitted on ALL its rows (the authors' leak:
    the scaler is fitted before the split, so the test rows set the training rows' scale)."""
    columns = list(columns)
    if not columns:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    require(not missing, f"split.scale={columns}: no column {missing} in the ratings frame; "
                         f"use split.scale=[] (the harness's models read user, item, rating only)")
    target = [c for c in columns if c in TARGET_COLUMNS]
    require(not target, f"split.scale={columns}: {target} is not a side feature; the authors scale side "
                        f"features only, never the ids or the target rating; drop it from split.scale")
    scaled = frame.copy()
    scaled[columns] = MinMaxScaler().fit_transform(frame[columns])
    return scaled


def global_split(frame: pd.DataFrame, test_size: float = 0.2,
                 random_state: int = AUTHORS_RANDOM_STATE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """scikit-learn's ``train_test_split(frame, test_size, random_state)``: a random split of ROWS (a user
    may end up with no training rating; train rows come in the shuffled order, as in the authors' code)."""
    require(0.0 < test_size < 1.0, f"split.test_size={test_size} must be in (0, 1)")
    train, test = train_test_split(frame, test_size=test_size, random_state=int(random_state))
    return train, test


def authors_split(ratings: pd.DataFrame, seed: int = 0, test_size: float = 0.2, random_state: int | None = None,
          scale: Sequence[str] = ()) -> list[Split]:
    """The authors' split: scale ``scale`` on all rows (leak), then the global random row split with
    ``random_state`` (null: the run's seed; the authors' is 42)."""
    frame = minmax_before_split(ratings, scale or ())
    state = seed if random_state is None else random_state
    train, test = global_split(frame, test_size, state)
    return [Split(0, train.reset_index(drop=True), test.reset_index(drop=True))]


# ---------------------------------------------------------------------------- grouping

def profile_columns(features: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The user features named in ``names``, unscaled: a plain column as it is, a one-hot block
    (``<name>_*`` columns) as one integer code (the column's position in the block: LabelEncoder's
    code when the block's columns are in sorted order, as ML-100K's occupations are). Names the
    dataset lacks are skipped."""
    out = {}
    for name in names:
        if name in features.columns:
            out[name] = features[name].astype(float)
            continue
        block = [c for c in features.columns if c.startswith(f"{name}_")]
        if block:
            out[name] = pd.Series(features[block].to_numpy().argmax(axis=1).astype(float), index=features.index)
    return pd.DataFrame(out, index=features.index)


def authors_profiles(dataset: Dataset, ratings: pd.DataFrame, user_features: Sequence[str]) -> pd.DataFrame:
    """[the named user features, unscaled; the mean item-feature vector over ``ratings``], one row per user of
    the dataset, users without ratings 0 (``.fillna(0)``, preprocessing_movielen_100k.py lines 89-90)."""
    items = dataset.item_features
    rows = items.reindex(ratings["item"].to_numpy()).to_numpy()
    taste = (pd.DataFrame(rows, columns=[f"mean_{c}" for c in items.columns])
             .groupby(ratings["user"].to_numpy()).mean())
    return profile_columns(dataset.user_features, user_features).join(taste, how="left").fillna(0.0)


def authors_kmeans(dataset: Dataset, train: pd.DataFrame, k: int = AUTHORS_MAX_GROUPS, seed: int = 0,
                    n_init: int = 10, rows: str = "all", user_features: Sequence[str] = ("age", "occ"),
                    random_state: int | None = None) -> Groups:
    """The authors' groups: KMeans on unscaled profiles built from ALL ratings (``rows=all``: the leak;
    ``rows=train``: the fold's training part only), ``n_clusters = min(k, n_users)``. On a dataset with
    real groups, ``membership`` is the real groups plus one singleton group per user in none, keyed by
    the user's id (the authors' ``GroupID.fillna(UserID)``); ``labels`` stay the KMeans labels (one
    profiling label per user)."""
    require(rows in ("all", "train"), f"grouping.rows={rows!r} must be all (the authors' leak) or train")
    source = dataset.ratings if rows == "all" else train
    profiles = authors_profiles(dataset, source, list(user_features))
    n_clusters = min(int(k), len(profiles))
    require(n_clusters >= 1, f"grouping.k={k} must be >= 1")
    state = seed if random_state is None else random_state
    with threadpool_limits(limits=1):  # as benchmark.protocol.grouping.KMEANS_THREADS: the labels do not depend on it
        model = KMeans(n_clusters=n_clusters, random_state=int(state), n_init=n_init).fit(profiles.to_numpy())
    labels = pd.Series(model.labels_, index=profiles.index, name="group")
    stats = {"inertia": float(model.inertia_), "n_fit_users": float(len(profiles)),
             "n_nonempty_groups": float(labels.nunique()), "leak_all_rows": float(rows == "all")}
    membership = None
    if dataset.groups is not None:
        real = dataset.groups[["group", "user"]].drop_duplicates(ignore_index=True)
        alone = np.setdiff1d(dataset.ratings["user"].unique(), real["user"].unique())
        collisions = np.intersect1d(alone, real["group"].unique())
        require(len(collisions) == 0, f"grouping=authors: user ids {collisions[:5].tolist()} equal real group ids; "
                                      f"the authors' fillna(UserID) keys would merge them; use grouping=real")
        membership = pd.concat([real, pd.DataFrame({"group": alone, "user": alone})], ignore_index=True)
        stats.update({"n_real_groups": float(real["group"].nunique()), "n_singleton_keys": float(len(alone)),
                      **size_stats(membership, prefix="key_size_")})
    else:
        stats.update(size_stats(pd.DataFrame({"group": labels.to_numpy(), "user": labels.index})))
    return Groups(labels=labels, k=n_clusters, method="authors", stats=stats, membership=membership)


# ---------------------------------------------------------------------------- keys and metrics

def key_rows(test: pd.DataFrame, members: pd.DataFrame, group_ratings: pd.DataFrame | None) -> pd.DataFrame:
    """The authors' evaluation rows: each test row once per group of its user (a left merge on the user,
    as ``pd.merge(df_ratings, group_df, on='UserID', how='left')``), users in no group keyed by their own
    id; the truth is the group's rating of the item where the group has one, else the row's own rating
    (``GroupRating.fillna(Rating)``, itm_run cell 7, lines 75 and 84-93). Columns: key, user, item, truth, score."""
    rows = test.merge(members[["group", "user"]].drop_duplicates(), on="user", how="left")
    rows["key"] = rows["group"].fillna(rows["user"]).astype("int64")
    truth = rows["rating"].to_numpy(dtype=float)
    if group_ratings is not None:
        known = rows[["key", "item"]].merge(group_ratings.rename(columns={"group": "key", "rating": "group_rating"}),
                                            on=["key", "item"], how="left")["group_rating"].to_numpy()
        truth = np.where(np.isnan(known), truth, known)
    return pd.DataFrame({"key": rows["key"].to_numpy(), "user": rows["user"].to_numpy(),
                         "item": rows["item"].to_numpy(), "truth": truth, "score": rows["score"].to_numpy()})


def authors_metrics(true: np.ndarray, score: np.ndarray, k: int, threshold: float = AUTHORS_THRESHOLD
                    ) -> tuple[float, float, float]:
    """One key's P@k, R@k and NDCG@k by the authors' formulas (movielens_run cell 6 lines 226-244, itm_run
    cell 7 lines 265-283: ``ndcg_at_k``, ``precision_at_k``, ``recall_at_k``): top k = ``np.argsort(score)[::-1][:k]``; P = hits / k (k even when the
    key has fewer than k rows); R = hits / |relevant|, NaN when nothing is relevant; NDCG with gain
    2**rating - 1, and, as the authors' ``ndcg_at_k(sorted_true, k)`` does, the ideal is the SAME top k
    re-sorted by true rating (not the key's best k rows: their NDCG only measures the order inside the top k)."""
    true = np.asarray(true, dtype=float)
    top = np.argsort(np.asarray(score, dtype=float))[::-1][:k]
    hits = float(np.sum(true[top] >= threshold))
    relevant = float(np.sum(true >= threshold))
    r = true[top]
    dcg = np.sum((2 ** r - 1) / np.log2(np.arange(2, r.size + 2)))
    ideal = np.sort(r)[::-1]
    idcg = np.sum((2 ** ideal - 1) / np.log2(np.arange(2, ideal.size + 2)))
    return hits / k, (hits / relevant if relevant > 0 else np.nan), (float(dcg / idcg) if idcg != 0 else 0.0)


def per_key_metrics(rows: pd.DataFrame, k: int, threshold: float = AUTHORS_THRESHOLD) -> pd.DataFrame:
    """``authors_metrics`` of every key of ``rows`` (columns key, truth, score), one row per key."""
    table = [(key, len(part), *authors_metrics(part["truth"].to_numpy(), part["score"].to_numpy(), k, threshold))
             for key, part in rows.groupby("key", sort=True)]
    return pd.DataFrame(table, columns=["key", "n_rows", "precision", "recall", "ndcg"])


def summarize_keys(table: pd.DataFrame, k: int, prefix: str) -> dict[str, float]:
    """The means over keys: P and NDCG by ``np.mean``, R by ``np.nanmean`` (keys without a relevant item
    skipped; the authors' notebooks define recall_at_k but never average it, docs/protocol.md)."""
    recall = table["recall"].to_numpy(dtype=float)
    return {f"{prefix}precision_at_{k}": float(table["precision"].mean()),
            f"{prefix}recall_at_{k}": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
            f"{prefix}ndcg_at_{k}": float(table["ndcg"].mean()),
            f"{prefix}n_keys": float(len(table)),
            f"{prefix}keys_without_relevant": float(np.isnan(recall).sum())}
