"""User groups: KMeans over standardized user profiles, fit on training data only.

A user's profile is [side features (e.g. age, gender, occupation one-hot), the mean item
feature vector (e.g. genres) over the user's TRAINING ratings]. The scaler and KMeans are
fit on the users that have training ratings; every user (cold ones too) then gets the label
of the nearest centroid. Test ratings are never read here (tested in tests/test_protocol.py).

``grouping.clustering`` picks the clusterer (``CLUSTERINGS``): ``kmeans`` (scikit-learn's KMeans,
Lloyd's algorithm: the paper's) costs users x k per pass, so with k growing with the users (groups
of a fixed size) it grows as users^2; ``bisecting_kmeans`` (scikit-learn's BisectingKMeans: k - 1
two-way splits of the largest cluster) costs users x log k, for data with tens of thousands of users
and more, at a higher inertia (docs/performance.md, "Scaling to 10M ratings").

KMeans runs on one thread (``KMEANS_THREADS``: OpenMP and BLAS), as the torch models train on one thread:
sweeps parallelise by processes, and on this 2-core machine a second thread made KMeans 3-5x
slower whenever anything else ran (1M ratings, k = 266, 10 restarts: 1.1 s on one thread, 3.2-5.4 s
on two, docs/performance.md "Scaling to 10M ratings"). The labels do not depend on it (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.cluster import BisectingKMeans, KMeans
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from benchmark.core.errors import require
from benchmark.core.registry import Registry
from benchmark.data import Dataset

# threads of KMeans' OpenMP and BLAS pools (module docstring); None = the libraries' default (every core)
KMEANS_THREADS: int | None = 1

# grouping.clustering -> a scikit-learn clusterer of k clusters (fit / predict / inertia_)
Clustering = Callable[[int, int, int], Any]
CLUSTERINGS: Registry[Clustering] = Registry("clustering")


@CLUSTERINGS.register("kmeans")
def _kmeans(k: int, n_init: int, seed: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed)


@CLUSTERINGS.register("bisecting_kmeans")
def _bisecting_kmeans(k: int, n_init: int, seed: int) -> BisectingKMeans:
    # n_init restarts of every two-way split; splitting the largest cluster keeps sizes even
    return BisectingKMeans(n_clusters=k, n_init=n_init, random_state=seed, bisecting_strategy="largest_cluster")


@dataclass
class Groups:
    """One group label per user (index = user id, values 0..k-1) and how they were made.

    ``labels`` is the profiling label (one per user, what DMTL's profiling head predicts).
    ``members`` is the membership used by group-level evaluation (``group, user``); it is the
    labels themselves for KMeans, and may differ (many-to-many) for real groups.
    """

    labels: pd.Series
    k: int
    method: str
    stats: dict[str, float] = field(default_factory=dict)
    membership: pd.DataFrame | None = None

    def of(self, users) -> np.ndarray:
        return self.labels.reindex(users).to_numpy()

    @property
    def members(self) -> pd.DataFrame:
        if self.membership is not None:
            return self.membership
        return pd.DataFrame({"group": self.labels.to_numpy(), "user": self.labels.index.to_numpy()})


def size_stats(members: pd.DataFrame, prefix: str = "size_") -> dict[str, float]:
    """Group sizes (distinct members per group): mean, median, max, and the share of singleton groups.

    Logged with every run (``grouping_size_mean`` ...) so a reader sees whether "groups" are groups:
    K = 250 KMeans groups on ML-100K are mostly singletons and pairs.
    """
    sizes = members.drop_duplicates(["group", "user"]).groupby("group").size()
    return {f"{prefix}mean": float(sizes.mean()), f"{prefix}median": float(sizes.median()),
            f"{prefix}max": float(sizes.max()), f"{prefix}singleton_share": float((sizes == 1).mean())}


def user_profiles(dataset: Dataset, train: pd.DataFrame) -> pd.DataFrame:
    """Side features joined with each user's mean item-feature vector over training ratings."""
    items = dataset.item_features
    genre_of_row = items.reindex(train["item"].to_numpy()).to_numpy()
    taste = (pd.DataFrame(genre_of_row, columns=[f"mean_{c}" for c in items.columns])
             .groupby(train["user"].to_numpy()).mean())
    profiles = dataset.user_features.join(taste, how="left")
    # users without training ratings get the mean taste of those with some (no test data read)
    return profiles.fillna(taste.mean())


def kmeans(dataset: Dataset, train: pd.DataFrame, k: int, seed: int = 0, n_init: int = 10,
           standardize: bool = True, clustering: str = "kmeans") -> Groups:
    require(clustering in CLUSTERINGS,
            f"grouping.clustering={clustering!r} is unknown; use one of {', '.join(CLUSTERINGS)}")
    trained_users = np.unique(train["user"].to_numpy())
    require(1 <= k <= len(trained_users),
            f"grouping.k={k} must be between 1 and the number of users with training ratings "
            f"({len(trained_users)}); lower grouping.k")
    profiles = user_profiles(dataset, train)
    fit_rows = profiles.loc[trained_users].to_numpy()
    scaler = StandardScaler().fit(fit_rows) if standardize else None
    transform = scaler.transform if scaler is not None else (lambda x: x)
    with threadpool_limits(limits=KMEANS_THREADS):  # OpenMP and BLAS (scikit-learn's distances use both)
        model = CLUSTERINGS[clustering](k, n_init, seed).fit(transform(fit_rows))
        labels = pd.Series(model.predict(transform(profiles.to_numpy())), index=profiles.index, name="group")
    return Groups(labels=labels, k=k, method="kmeans",
                  stats={"inertia": float(model.inertia_), "n_fit_users": float(len(trained_users)),
                         "n_nonempty_groups": float(labels.nunique()),
                         **size_stats(pd.DataFrame({"group": labels.to_numpy(), "user": labels.index}))})


def real(dataset: Dataset, train: pd.DataFrame, k: int, seed: int = 0, n_init: int = 10,
         standardize: bool = True, clustering: str = "kmeans") -> Groups:
    """Real groups (ITM-Rec's project teams) for group-level evaluation.

    ``membership`` is the dataset's real ``group, user`` table (many-to-many: a user may sit
    in several groups and counts in each). ``labels`` stay the KMeans labels above, so every
    user still has exactly one profiling label (real groups overlap, so they cannot be one).
    """
    require(dataset.groups is not None and dataset.group_ratings is not None,
            f"grouping=real: dataset {dataset.name} has no real groups with group ratings; "
            f"use dataset=itmrec or grouping=kmeans")
    groups = kmeans(dataset, train, k, seed=seed, n_init=n_init, standardize=standardize, clustering=clustering)
    membership = dataset.groups[["group", "user"]].drop_duplicates(ignore_index=True)
    per_user = membership.groupby("user").size()
    trained = np.unique(train["user"].to_numpy())
    stats = {**groups.stats, "n_real_groups": float(membership["group"].nunique()),
             "n_users_in_several_groups": float((per_user > 1).sum()),
             "n_members_without_training": float((~per_user.index.isin(trained)).sum()),
             **size_stats(membership, prefix="real_size_")}
    return Groups(labels=groups.labels, k=k, method="real", stats=stats, membership=membership)


def members(dataset: Dataset, train: pd.DataFrame, seed: int = 0) -> Groups:
    """A group-item dataset's own groups (CAMRa2011, Mafengwo): ``membership`` = the dataset's
    ``group, user`` table; each user's label is the smallest group it belongs to (-1: in none),
    for a model that wants one label per user. Evaluated by the group-item evaluators
    (benchmark/evaluation/group_item.py) against the split's group test cases."""
    require(dataset.groups is not None and dataset.group_item is not None,
            f"grouping=members: dataset {dataset.name} has no group-item data; use grouping=kmeans")
    membership = dataset.groups[["group", "user"]].drop_duplicates(ignore_index=True)
    first = membership.groupby("user")["group"].min()
    labels = first.reindex(pd.RangeIndex(dataset.group_item.n_users, name="user"), fill_value=-1).rename("group")
    per_user = membership.groupby("user").size()
    stats = {"n_real_groups": float(membership["group"].nunique()),
             "n_users_in_several_groups": float((per_user > 1).sum()), **size_stats(membership, prefix="real_size_")}
    return Groups(labels=labels, k=int(dataset.group_item.n_groups), method="members", stats=stats,
                  membership=membership)
